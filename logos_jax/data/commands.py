"""Build a tokenized ArrayRecord corpus from raw sources (`build`), or summarise a built one (`info`)."""

from __future__ import annotations

import argparse
import json

from logos_jax.errors import LogosError
from logos_jax.validate import number


def _overrides(pairs: list[str]) -> dict:
    from logos_jax.config import parse_overrides

    return dict(parse_overrides(pairs, " (e.g. eval_fraction=0.1)"))


def _build(args: argparse.Namespace) -> int:
    from logos_jax.data.builder import build_corpus, load_build_config

    config = load_build_config(args.config, _overrides(args.overrides))
    out = args.out or f"runs/corpus/{config.name}"
    manifest = build_corpus(config, out, workers=args.workers)
    _print_summary(manifest, out)
    documents = sum(
        s[split]["documents"]
        for s in manifest["modalities"].values()
        for split in ("train", "eval")
    )
    if not documents:
        raise LogosError(
            f"no documents: every record was rejected (reasons in {out}/rejects.jsonl); "
            "fix the sources or the layouts, then rebuild into a new folder"
        )
    return 0


def _print_summary(manifest: dict, where: str) -> None:
    print(
        f"corpus {manifest['name']} in {where} (tokenizer {manifest['tokenizer']['spec']}, "
        f"vocab {manifest['tokenizer']['vocab_size']}, hash {manifest['tokenizer']['hash'][:12]})"
    )
    print(
        f"{'modality':<16}{'train docs':>12}{'train tokens':>14}{'eval docs':>11}{'eval tokens':>13}{'rejects':>9}"
    )
    for name, s in manifest["modalities"].items():
        if s["train"]["documents"] or s["eval"]["documents"] or s["rejects"]:
            print(
                f"{name:<16}{s['train']['documents']:>12}{s['train']['tokens']:>14}"
                f"{s['eval']['documents']:>11}{s['eval']['tokens']:>13}{s['rejects']:>9}"
            )
    if manifest["reject_reasons"]:
        print("rejects by reason: " + json.dumps(manifest["reject_reasons"]))


def _info(args: argparse.Namespace) -> int:
    from logos_jax.data.corpus import read_manifest, verify_shards

    manifest = read_manifest(args.corpus)
    _print_summary(manifest, args.corpus)
    verify_shards(args.corpus, manifest)
    print(f"{len(manifest['shards'])} shards verified against the manifest's sha256")
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    build = sub.add_parser(
        "build",
        help="build (or resume) a corpus from a data config",
        description="Read the config's sources, encode them with the grammar, tokenize and write "
        "ArrayRecord shards, manifest.json, rejects.jsonl and heldout/*.jsonl. Rerunning after an "
        "interruption resumes: finished shards are kept.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    build.add_argument(
        "--config",
        required=True,
        help="data preset name under configs/data (e.g. mini) or a YAML path",
    )
    build.add_argument("--out", help="output corpus folder (default: runs/corpus/<config name>)")
    build.add_argument(
        "--workers",
        type=number(int, low=0),
        help="worker processes (default: the config's 'workers')",
    )
    build.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="top-level config overrides, e.g. seed=1"
    )
    build.set_defaults(func=_build)
    info = sub.add_parser("info", help="summarise a built corpus (documents, tokens, rejects)")
    info.add_argument("corpus", help="a corpus folder written by `logos data build`")
    info.set_defaults(func=_info)

"""`logos tokenizer`: train a SentencePiece tokenizer, add the grammar tags to one, check one.

Subcommands: ``train`` (text files → a ``tokenizer.json`` folder), ``add-tags`` (copy a tokenizer folder
with every grammar tag as one id), ``check`` (which tags are single ids, which are missing).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from logos_jax.validate import number


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="tokenizer_command", metavar="SUBCOMMAND")
    fmt = argparse.ArgumentDefaultsHelpFormatter

    train = sub.add_parser(
        "train",
        help="train a SentencePiece tokenizer (grammar tags as single ids) -> tokenizer.json folder",
        description="Train a SentencePiece BPE or unigram model on text files (one text per line, "
        "e.g. the output of `logos grammar encode`) with the grammar tags as user-defined symbols and "
        "byte fallback, and write it as a Hugging Face tokenizer.json folder.",
        formatter_class=fmt,
    )
    train.add_argument(
        "--input", nargs="+", type=Path, required=True, metavar="FILE", help="text files"
    )
    train.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    train.add_argument(
        "--force",
        action="store_true",
        help="write into a model folder (replacing the tokenizer its embeddings were trained with)",
    )
    train.add_argument(
        "--vocab-size", type=number(int, low=1), required=True, metavar="N", help="vocabulary size"
    )
    train.add_argument("--model-type", choices=("bpe", "unigram"), default="bpe", help="model type")
    train.add_argument(
        "--per-residue",
        action="store_true",
        help="no token spans two residues: every upper-case letter (Cl, Br whole) is its own pre-token",
    )
    train.set_defaults(func=run_train)

    add = sub.add_parser(
        "add-tags",
        help="copy a tokenizer folder, adding the grammar tags as single (non-special) tokens",
        description="Load SRC_DIR (tokenizer.json + configs), add every grammar tag that is not yet one "
        "id (in the fixed ALL_TAGS order) and save the result to OUT_DIR. Prints the tags added.",
        formatter_class=fmt,
    )
    add.add_argument("src", type=Path, metavar="SRC_DIR", help="tokenizer folder or tokenizer.json")
    add.add_argument("out", type=Path, metavar="OUT_DIR", help="output folder")
    add.add_argument(
        "--force",
        action="store_true",
        help="write into a model folder (replacing the tokenizer its embeddings were trained with)",
    )
    add.set_defaults(func=run_add_tags)

    check = sub.add_parser(
        "check",
        help="show which grammar tags are single ids and which are missing",
        description="Print every grammar tag with its id (or MISSING), the BOS/EOS/PAD ids and the "
        "tokenizer hash. Exit status 1 when a tag is missing.",
        formatter_class=fmt,
    )
    check.add_argument("dir", type=Path, metavar="DIR", help="tokenizer folder or tokenizer.json")
    check.set_defaults(func=run_check)

    parser.set_defaults(func=None)


# Files that make a folder a model (converted, HF or a training run): its tokenizer must stay.
MODEL_MARKERS = ("model_config.yaml", "params", "config.json", "checkpoints", "model.safetensors")


def _check_out(out: Path, force: bool, inputs: list[Path]) -> None:
    """Refuse an output folder that is a file, an input, or (without ``--force``) a model folder."""
    from logos_jax.errors import LogosError

    if out.exists() and not out.is_dir():
        raise LogosError(f"{out} is a file; the output must be a folder")
    for path in inputs:
        if Path(path).absolute() in (out.absolute(), (out / "tokenizer.json").absolute()):
            raise LogosError(f"the output {out} is an input; choose another output folder")
    markers = [m for m in MODEL_MARKERS if (out / m).exists()]
    markers += [p.name for p in out.glob("*.safetensors")] if out.is_dir() else []
    if markers and not force:
        raise LogosError(
            f"{out} is a model folder ({', '.join(sorted(set(markers)))}); replacing its tokenizer "
            "would no longer fit its embeddings. fix: write to a new folder, or pass --force"
        )


def run_train(args: argparse.Namespace) -> int:
    from logos_jax.tokenizer import LogosTokenizer, train_sentencepiece

    _check_out(args.out, args.force, list(args.input))

    out = train_sentencepiece(
        args.input,
        args.out,
        vocab_size=args.vocab_size,
        model_type=args.model_type,
        per_residue=args.per_residue,
    )
    tok = LogosTokenizer.load(out)
    print(
        f"wrote {out / 'tokenizer.json'}: {tok.vocab_size} ids, {len(tok.tag_ids())} grammar tags"
    )
    return 0


def run_add_tags(args: argparse.Namespace) -> int:
    from logos_jax.tokenizer import LogosTokenizer, add_grammar_tags

    _check_out(args.out, args.force, [args.src])
    tok, added = add_grammar_tags(LogosTokenizer.load(args.src))
    tok.save(args.out)
    ids = tok.tag_ids()
    for tag in added:
        print(f"added {tag} = {ids[tag]}")
    print(f"{len(added)} tag(s) added; vocab size {tok.vocab_size}; wrote {args.out}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from logos_jax.grammar.tags import ALL_TAGS
    from logos_jax.tokenizer import LogosTokenizer

    tok = LogosTokenizer.load(args.dir)
    ids = tok.tag_ids()
    for tag in ALL_TAGS:
        print(f"{tag:<16}{ids.get(tag, 'MISSING')}")
    print(
        f"vocab_size {tok.vocab_size}; bos {tok.bos_id}; eos {list(tok.eos_ids)}; pad {tok.pad_id}"
    )
    print(f"hash {tok.hash()}")
    missing = tok.missing_tags()
    if missing:
        print(
            f"missing {len(missing)} tag(s): fix with `logos tokenizer add-tags {args.dir} OUT_DIR`"
        )
        return 1
    return 0

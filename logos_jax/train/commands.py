"""``logos train``: pretrain, continue pretraining (``init_from``) or fine-tune (``mode=sft``).

    logos train --config tiny run_dir=runs/tiny steps=200 model.num_layers=2 mesh.fsdp=8

Keys (YAML or ``key=value``): run_dir, steps, seed, checkpoint_every, eval_every, log_every, batch_size
(global, sequences), seq_len, grad_accum, mesh.{data,fsdp,tensor}, init_from, model (preset or YAML),
model.<field>, data (synthetic | corpus dir | data config | SFT JSONL), mode (pretrain | sft),
optimizer.*, distributed.*, ... (``logos train --keys`` lists them all). Re-running on an existing
run_dir resumes from its last committed checkpoint.
"""

from __future__ import annotations

import argparse
import sys

import yaml


def _run(args: argparse.Namespace) -> int:
    from logos_jax.train.config import load_train_config, valid_keys

    if args.keys:
        print("\n".join(valid_keys()))
        return 0
    config = load_train_config(args.config, args.overrides)
    print(
        "# resolved train config\n" + yaml.safe_dump(config.to_dict(), sort_keys=False),
        file=sys.stderr,
    )
    if args.print_config:
        return 0
    from logos_jax.files import make_dir

    check_run_dir(config)
    make_dir(config.run_dir)
    check_resume_shape(config)
    check_init_from_tokenizer(config)
    from logos_jax import compile_cache
    from logos_jax.train.loop import run_training

    compile_cache.enable()

    summary = run_training(config)
    print(
        f"trained {summary.run_dir}: steps {summary.start_step} -> {summary.final_step}, "
        f"final loss {summary.losses.get(summary.final_step)}, tokens/s {summary.tokens_per_s}, "
        f"mfu {summary.mfu}",
        file=sys.stderr,
    )
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        help="train config: a preset name under configs/train (tiny, logos-1b, ...) or a YAML path",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. run_dir=runs/x steps=100 model.num_layers=2 mesh.fsdp=4",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    parser.add_argument("--keys", action="store_true", help="list every valid config key and exit")
    parser.set_defaults(func=_run)


# Model fields that fix the parameters' shapes (the vocabulary follows the data's tokenizer).
SHAPE_FIELDS = (
    "hidden_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "intermediate_size",
    "qk_norm",
    "tie_embeddings",
)


def check_run_dir(config) -> None:
    """run_dir must be a new folder or a run: training writes model_config.yaml and the tokenizer
    files there, which would replace a converted model's or a corpus's own."""
    from pathlib import Path

    from logos_jax.errors import LogosError

    run_dir = Path(config.run_dir)
    if (run_dir / "checkpoints").is_dir():
        return
    for marker, what in (("params", "a model folder"), ("manifest.json", "a built corpus")):
        if (run_dir / marker).exists():
            hint = f"init_from={run_dir}" if marker == "params" else f"data={run_dir}"
            raise LogosError(
                f"run_dir={run_dir} is {what}; training would overwrite its files. "
                f"fix: choose a new run_dir (and {hint})"
            )


def check_resume_shape(config) -> None:
    """A run_dir that holds checkpoints resumes its own model: a config asking for another shape
    (``model.num_layers=4`` on a 2-layer run) is refused instead of silently ignored."""
    from pathlib import Path

    from logos_jax.checkpoint_steps import committed_steps
    from logos_jax.config import load_model_config
    from logos_jax.errors import LogosError

    run_dir = Path(config.run_dir)
    if not (run_dir / "model_config.yaml").is_file() or not committed_steps(
        run_dir / "checkpoints"
    ):
        return
    saved = load_model_config(run_dir / "model_config.yaml")
    if config.init_from:
        wanted = {k: v for k, v in config.model_overrides.items() if k in SHAPE_FIELDS}
    else:
        model = config.model_config()
        wanted = {k: getattr(model, k) for k in SHAPE_FIELDS}
    changed = [
        f"{k}={getattr(saved, k)} -> {v}" for k, v in wanted.items() if getattr(saved, k) != v
    ]
    vocab = _data_vocab(config)
    if vocab is not None and vocab > saved.vocab_size:
        changed.append(f"vocab_size={saved.vocab_size} -> the data's tokenizer has {vocab} ids")
    if changed:
        raise LogosError(
            f"{run_dir} holds checkpoints of another model shape ({', '.join(changed)}); "
            "fix: resume with the run's model settings, or start a new run_dir "
            f"(init_from={run_dir} to start from its weights)"
        )


def _data_vocab(config) -> int | None:
    """The number of ids of the data's tokenizer (a built corpus, or the SFT tokenizer), if known."""
    from pathlib import Path

    from logos_jax.tokenizer import LogosTokenizer

    if config.mode == "sft":
        folder = config.tokenizer or config.init_from
        if folder and (Path(folder) / "tokenizer.json").is_file():
            return LogosTokenizer.load(folder).vocab_size
        return None
    corpus = Path(config.data)
    if (corpus / "manifest.json").is_file():
        from logos_jax.data.corpus import read_manifest

        return int(read_manifest(corpus)["tokenizer"]["vocab_size"])
    return None


def check_init_from_tokenizer(config) -> None:
    """``init_from`` weights and the data must share token ids: every token the two tokenizers both
    hold has the same id (the data may add new ids past the model's; those rows are grown).
    Otherwise training would silently learn from scrambled ids. The data is a built corpus."""
    from pathlib import Path

    from logos_jax.errors import LogosError
    from logos_jax.tokenizer import LogosTokenizer

    if not config.init_from or config.mode != "pretrain" or config.data == "synthetic":
        return
    init = Path(config.init_from)
    if not (init / "tokenizer.json").is_file():
        return
    data_tokenizer = _data_tokenizer(config)
    if data_tokenizer is None:
        return
    model_vocab = LogosTokenizer.load(init).tokenizer.get_vocab(with_added_tokens=True)
    data_vocab = data_tokenizer.tokenizer.get_vocab(with_added_tokens=True)
    moved = [t for t, i in data_vocab.items() if t in model_vocab and model_vocab[t] != i]
    if moved:
        raise LogosError(
            f"data={config.data} is tokenized with another tokenizer than init_from={init}: "
            f"{len(moved)} shared tokens have other ids (e.g. {moved[0]!r}); fix: build the corpus "
            f"with tokenizer: {init} in the data config"
        )


def _data_tokenizer(config):
    """The tokenizer the data's token ids belong to (a built corpus's), or None."""
    from pathlib import Path

    from logos_jax.data.corpus import read_manifest
    from logos_jax.tokenizer import LogosTokenizer

    corpus = Path(config.data)
    if not (corpus / "manifest.json").is_file():
        return None  # synthetic, or not a corpus (the run itself says so)
    tok_dir = corpus / read_manifest(corpus)["tokenizer"].get("dir", "tokenizer")
    return LogosTokenizer.load(tok_dir) if (tok_dir / "tokenizer.json").is_file() else None

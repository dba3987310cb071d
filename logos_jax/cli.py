"""The ``logos`` command line: a thin dispatcher over subcommand modules.

Each subcommand module exposes ``register(parser)`` (adds its arguments or nested subcommands) and
sets ``parser.set_defaults(func=...)``; ``func(args) -> int`` does the work. Heavy imports (jax, torch)
happen inside ``func`` so that ``logos --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from logos_jax.errors import LogosError

# name -> (module, one-line help). Order is the order shown in ``logos --help``.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("logos_jax.demo", "run the whole system end to end on the bundled mini corpus"),
    "grammar": (
        "logos_jax.grammar.commands",
        "encode raw records to grammar sequences, parse them back",
    ),
    "tokenizer": (
        "logos_jax.tokenizer_commands",
        "train a tokenizer or add the grammar tags to one",
    ),
    "data": ("logos_jax.data.commands", "build a tokenized ArrayRecord corpus from raw sources"),
    "train": ("logos_jax.train.commands", "pretrain, continue pretraining or fine-tune (SFT)"),
    "convert": ("logos_jax.convert.commands", "convert checkpoints between Hugging Face and JAX"),
    "sample": ("logos_jax.sample.commands", "batch sampling for the LOGOS tasks (resumable JSONL)"),
    "eval": ("logos_jax.eval.commands", "score sampling outputs (top-k, validity, pocket F1...)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``logos`` parser; only ``command``'s module is imported (top-level help needs none)."""
    parser = argparse.ArgumentParser(
        prog="logos",
        description="LOGOS in JAX: build the grammar corpus, train, convert HF <-> JAX, sample, evaluate.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            cmd.description = (module.__doc__ or help_text).strip()
            cmd.formatter_class = argparse.RawDescriptionHelpFormatter
            module.register(cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Grain 0.2.18 worker processes read an absl flag before flags are parsed (google/grain#1355).
    from absl import flags

    flags.FLAGS.mark_as_parsed()
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        # A command group called without its subcommand: show that group's help.
        parser.parse_args([*argv, "--help"])
        return 2
    try:
        return int(func(args) or 0)
    except LogosError as err:
        print(f"logos {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"logos {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``logos eval``: score a sampling output file (top-k, validity/uniqueness/novelty, pocket F1...)."""

from __future__ import annotations

import argparse
import json
import sys

from logos_jax.sample.commands import TASK_CHOICES


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, choices=TASK_CHOICES, help="task of the file")
    parser.add_argument("results", help="output JSONL of `logos sample` (one row per sample)")
    parser.add_argument(
        "--reference",
        default=None,
        help="training set for novelty (ligand/material): .smi or .jsonl (smiles / nodes+linkers / text)",
    )
    parser.add_argument(
        "--truth",
        default=None,
        help="JSONL of {id, groundtruth|pocket} when the result rows carry no ground truth",
    )
    parser.add_argument(
        "--rank-by",
        default="logprob",
        choices=("logprob", "perplexity", "frequency"),
        help="retro: how an input's distinct answers are ranked for top-k",
    )
    parser.add_argument("--summary", default=None, help="write the summary JSON here (atomically)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="let --summary replace an existing file that is not a summary JSON",
    )
    parser.set_defaults(func=run)


def format_table(summary: dict) -> str:
    """Two aligned columns: metric, value (fractions as percentages)."""
    lines = []
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        if isinstance(value, float):
            shown = (
                f"{100 * value:.2f}%"
                if 0.0 <= value <= 1.0 and key != "mean_perplexity"
                else f"{value:.4g}"
            )
        else:
            shown = str(value)
        lines.append(f"{key:<{width}}  {shown}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from logos_jax.errors import LogosError
    from logos_jax.eval.metrics import evaluate
    from logos_jax.files import atomic_write_text
    from logos_jax.sample.jsonl import read_rows

    path = Path(args.results)
    if not path.is_file():
        raise LogosError(f"{path}: results file not found")
    if args.summary:
        _check_summary_target(Path(args.summary), args)
    rows = []
    for line, row, _ in read_rows(path):
        if not isinstance(row, dict):
            print(f"{path}:{line}: skipped: not a JSON object", file=sys.stderr)
            continue
        rows.append(row)
    if not rows:
        raise LogosError(f"{path}: no result rows to score (empty, or every line was rejected)")
    summary = evaluate(
        args.task, rows, reference=args.reference, truth=args.truth, rank_by=args.rank_by
    )
    print(format_table(summary))
    if args.summary:
        atomic_write_text(Path(args.summary), json.dumps(summary, indent=2) + "\n")
    return 0


def _check_summary_target(out, args: argparse.Namespace) -> None:
    """--summary must not be an input, nor (without --force) a file that is not a summary JSON."""
    from logos_jax.errors import LogosError
    from logos_jax.files import refuse_overwrite_input

    refuse_overwrite_input(
        out, {"results": args.results, "--reference": args.reference, "--truth": args.truth}
    )
    if out.is_dir():
        raise LogosError(f"--summary {out}: is a folder; give a file path")
    if out.exists() and not args.force:
        try:  # a summary is exactly what this command writes (a results row is one compact line)
            text = out.read_text(encoding="utf-8")
            old = json.loads(text)
            ok = isinstance(old, dict) and text == json.dumps(old, indent=2) + "\n"
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            ok = False
        if not ok:
            raise LogosError(
                f"--summary {out} exists and is not a summary JSON (a results file?); "
                "fix: choose another path, or pass --force to replace it"
            )

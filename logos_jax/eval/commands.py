"""``logos eval``: score a sampling output file (top-k, validity/uniqueness/novelty, pocket F1, DCA,
Vina docking) and write the summary JSON plus a Markdown table beside the published figures."""

from __future__ import annotations

import argparse
import json
import sys

from logos_jax.tasks import TASK_CHOICES


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
        help="JSONL of {id, groundtruth|pocket, ligand} (e.g. the sampling input file) for what the "
        "result rows lack: ground truth, and with --structures the ligand's residue name",
    )
    parser.add_argument(
        "--rank-by",
        default="logprob",
        choices=("logprob", "perplexity", "frequency"),
        help="retro: how an input's distinct answers are ranked for top-k",
    )
    parser.add_argument(
        "--structures",
        default=None,
        help="folder of holo structures named by row id (PDB/mmCIF): pocket-search → DCA/DCC "
        "success of top-n pockets; ligand → re-dock every valid molecule with AutoDock Vina",
    )
    dock = parser.add_argument_group("docking (--task ligand --structures; needs the dock extra)")
    dock.add_argument(
        "--dock-dir",
        default=None,
        help="resumable docking folder (receptors, docked.jsonl); default: RESULTS.dock/",
    )
    dock.add_argument("--exhaustiveness", type=int, default=8, help="Vina exhaustiveness (8)")
    dock.add_argument("--seed", type=int, default=1, help="Vina and conformer seed (1)")
    dock.add_argument(
        "--box",
        default="ligand",
        choices=("ligand", "pocket"),
        help="search box around the reference ligand or the prompt's pocket residues",
    )
    dock.add_argument("--box-margin", type=float, default=4.0, help="Å added on every side (4)")
    dock.add_argument("--workers", type=int, default=None, help="docking processes (all cores)")
    dock.add_argument(
        "--threads", type=int, default=1, help="Vina threads per molecule (1; scores do not change)"
    )
    parser.add_argument("--summary", default=None, help="write the summary JSON here (atomically)")
    parser.add_argument(
        "--table",
        default=None,
        help="write the Markdown table (ours beside published figures) here; "
        "default: the --summary path with .md",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="let --summary (and the table) replace an existing file that is not a summary JSON "
        "(a `logos eval` table)",
    )
    parser.set_defaults(func=run)


def format_table(summary: dict) -> str:
    """Two aligned columns: metric, value (fractions as percentages)."""
    lines = []
    summary = {k: v for k, v in summary.items() if not isinstance(v, list | dict)}
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        if isinstance(value, float) and "mcc" in key:
            shown = f"{value:.4f}"
        elif isinstance(value, float) and ("cutoff" in key or "threshold" in key):
            shown = f"{value:g} Å"
        elif isinstance(value, float) and key.startswith(("vina", "reference_vina")):
            shown = f"{value:.2f} kcal/mol"
        elif isinstance(value, float) and key in ("sa_score", "reference_rmsd_mean"):
            shown = f"{value:.2f}"
        elif isinstance(value, float):
            shown = (
                f"{100 * value:.2f}%"
                if 0.0 <= value <= 1.0 and key not in ("mean_perplexity", "qed", "sa")
                else f"{value:.4g}"
            )
        else:
            shown = str(value)
        lines.append(f"{key:<{width}}  {shown}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from logos_jax.errors import LogosError
    from logos_jax.eval.metrics import check_result_row, evaluate
    from logos_jax.files import atomic_write_text
    from logos_jax.jsonl_io import read_rows

    path = Path(args.results)
    if not path.is_file():
        raise LogosError(f"{path}: results file not found")
    if args.summary:
        _check_summary_target(Path(args.summary), args)
    table = _table_target(args)
    rows = []
    for line, row, _ in read_rows(path):
        where = f"{path}:{line}: skipped"
        try:  # a JSON list, "completion": 5, "sample": null...: that row is left out
            check_result_row(row, where)
        except LogosError as err:
            print(err, file=sys.stderr)
            continue
        rows.append(row)
    if not rows:
        raise LogosError(f"{path}: no result rows to score (empty, or every line was rejected)")
    if args.task == "ligand" and args.structures:
        summary = _dock(args, rows, path)
    else:
        summary = evaluate(
            args.task,
            rows,
            reference=args.reference,
            truth=args.truth,
            rank_by=args.rank_by,
            structures=args.structures,
        )
    for skipped in summary.get("skipped", []):
        print(f"skipped {skipped['id']}: {skipped['reason']}", file=sys.stderr)
    print(format_table(summary))
    if args.summary:
        atomic_write_text(Path(args.summary), json.dumps(summary, indent=2) + "\n")
    if table:
        from logos_jax.eval.published import markdown_table

        atomic_write_text(Path(table), markdown_table(summary))
        print(f"table: {table}", file=sys.stderr)
    return 0


def _dock(args: argparse.Namespace, rows: list[dict], path) -> dict:
    """``--task ligand --structures``: validity / uniqueness / novelty plus Vina re-docking."""
    from pathlib import Path

    from logos_jax.errors import LogosError
    from logos_jax.eval.design import design_metrics
    from logos_jax.eval.docking import Protocol
    from logos_jax.eval.metrics import load_input_rows, load_reference, require_rdkit

    require_rdkit("ligand")
    if args.workers is not None and args.workers < 1:
        raise LogosError("--workers must be at least 1")
    if args.threads < 1:
        raise LogosError("--threads must be at least 1")
    protocol = Protocol(args.exhaustiveness, args.seed, args.box, args.box_margin)
    reference = load_reference(args.reference, "ligand") if args.reference else None
    inputs = load_input_rows(args.truth) if args.truth else None
    work_dir = Path(args.dock_dir) if args.dock_dir else path.with_name(path.name + ".dock")
    summary = design_metrics(
        rows,
        args.structures,
        work_dir,
        protocol=protocol,
        reference=reference,
        workers=args.workers,
        inputs=inputs,
        threads=args.threads,
    )
    return {"task": "ligand", **summary}


def _table_target(args: argparse.Namespace):
    """The Markdown table's path (``--table``, else beside ``--summary``), or None. Never an input;
    a file that is not one of our tables is replaced only with ``--force``."""
    from pathlib import Path

    from logos_jax.errors import LogosError
    from logos_jax.eval.published import TABLE_TITLE
    from logos_jax.files import refuse_overwrite_input

    if not args.table and not args.summary:
        return None
    table = Path(args.table) if args.table else Path(args.summary).with_suffix(".md")
    refuse_overwrite_input(
        table, {"results": args.results, "--reference": args.reference, "--truth": args.truth}
    )
    if table.is_dir():
        raise LogosError(f"table {table}: is a folder; give a file path with --table")
    if table.exists() and not args.force:
        try:
            ours = table.read_text(encoding="utf-8").startswith(TABLE_TITLE)
        except (OSError, UnicodeDecodeError):
            ours = False
        if not ours:
            raise LogosError(
                f"table {table} exists and is not a `logos eval` table; "
                "fix: choose another path with --table, or pass --force to replace it"
            )
    return table


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

"""``eval/`` scores sampling outputs without importing ``sample/``: the task presets and the JSONL
reader it shares with sampling live outside both (``logos_jax.tasks``, ``logos_jax.jsonl_io``)."""

from pathlib import Path

from imports import imported_modules

from logos_jax.tasks import TASK_CHOICES, TASKS

EVAL_DIR = Path(__file__).resolve().parent.parent / "logos_jax" / "eval"


def test_eval_does_not_import_sample():
    paths = sorted(EVAL_DIR.glob("*.py"))
    assert paths
    for path in paths:
        wrong = {m for m in imported_modules(path) if m.split(".")[:2] == ["logos_jax", "sample"]}
        assert not wrong, f"{path.name} imports {wrong}"


def test_the_scan_sees_the_shared_modules():
    """Not vacuous: eval's imports of the shared modules (a lazy one among them) are found."""
    assert "logos_jax.tasks" in imported_modules(EVAL_DIR / "metrics.py")
    assert "logos_jax.jsonl_io" in imported_modules(EVAL_DIR / "commands.py")


def test_sample_and_eval_offer_the_same_tasks():
    from logos_jax.sample.commands import TASK_CHOICES as sample_choices

    assert TASK_CHOICES == tuple(TASKS) == sample_choices

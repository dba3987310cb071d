"""The one checkpoint commit rule (``logos_jax.checkpoint_steps``), used by training, resume and loading."""

import re
from pathlib import Path

from logos_jax.checkpoint_steps import (
    COMMIT_MARKERS,
    committed_steps,
    is_committed,
    uncommitted_step_dirs,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_a_step_is_committed_when_it_holds_a_marker(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    for step, marker in [(1, COMMIT_MARKERS[0]), (10, COMMIT_MARKERS[1]), (2, None), (30, None)]:
        (checkpoints / str(step) / "params").mkdir(parents=True)
        if marker:
            (checkpoints / str(step) / marker).write_text("")
    (checkpoints / "5.corrupt").mkdir()
    (checkpoints / "5.corrupt" / COMMIT_MARKERS[0]).write_text("")
    assert committed_steps(checkpoints) == [1, 10]
    assert uncommitted_step_dirs(checkpoints) == [checkpoints / "2", checkpoints / "30"]
    assert is_committed(checkpoints / "10") and not is_committed(checkpoints / "2")
    assert committed_steps(tmp_path / "missing") == [] == uncommitted_step_dirs(tmp_path / "nope")


def test_the_marker_names_are_written_once():
    """No other module spells a marker as a string (docstrings may name them in ``backticks``)."""
    pattern = re.compile("|".join(re.escape(f'"{m}"') for m in COMMIT_MARKERS))
    found = [
        path.relative_to(REPO_ROOT).as_posix()
        for path in (REPO_ROOT / "logos_jax").rglob("*.py")
        if pattern.search(path.read_text())
    ]
    assert found == ["logos_jax/checkpoint_steps.py"]

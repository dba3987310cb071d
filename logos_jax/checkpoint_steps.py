"""The one rule for which training checkpoint steps exist (no JAX or Orbax here: listing is cheap).

A run's ``checkpoints/`` folder holds one folder per saved step, named by the step number. Orbax
marks a step complete by writing a commit marker last (``_CHECKPOINT_METADATA``; ``commit_success.txt``
on some file systems and older Orbax): **a step folder is committed when it holds one of them**. Only
committed steps are restored, resumed from or exported; an uncommitted one is a save that was killed
midway and is removed on the next start (``uncommitted_step_dirs``).
"""

from __future__ import annotations

from pathlib import Path

COMMIT_MARKERS = ("_CHECKPOINT_METADATA", "commit_success.txt")


def is_committed(step_dir: Path) -> bool:
    """Whether the step folder ``step_dir`` is a finished save (holds a commit marker)."""
    return any((Path(step_dir) / marker).exists() for marker in COMMIT_MARKERS)


def _step_dirs(directory: Path) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return [p for p in directory.iterdir() if p.name.isdigit()]


def committed_steps(directory: Path) -> list[int]:
    """Steps under ``directory`` (a run's ``checkpoints/``) whose save committed, ascending."""
    return sorted(int(p.name) for p in _step_dirs(directory) if is_committed(p))


def uncommitted_step_dirs(directory: Path) -> list[Path]:
    """Step folders under ``directory`` whose save never committed (a kill mid-save)."""
    return sorted(
        (p for p in _step_dirs(directory) if not is_committed(p)), key=lambda p: int(p.name)
    )

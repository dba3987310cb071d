"""Training checkpoints: Orbax ``CheckpointManager`` under ``<run_dir>/checkpoints/<step>/``.

Items of one step: ``params`` (the model params in their param dtype, the form ``load_model`` and
``logos convert jax2hf`` read), ``opt_state``, ``meta`` (JSON: step, RNG key, skipped-step count, the
train config) and ``data`` (the batch source's state, one JSON file per process, Grain's handler).
Saves are asynchronous and keep the last N steps. Only committed steps (``checkpoint_steps``: the
one commit rule) are ever restored; restores go through an explicit sharded target, so a run saved
on one mesh resumes on another.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import grain.checkpoint as grain_ckpt
import jax
import numpy as np
import orbax.checkpoint as ocp

from logos_jax.checkpoint_steps import committed_steps
from logos_jax.errors import LogosError, quiet_closed_loop_reports
from logos_jax.train.step import StatePlacement, TrainState

ITEMS = ("params", "opt_state", "meta", "data")


class _DataState:
    """Adapter for Grain's checkpoint handler: a JSON snapshot taken when the save is requested."""

    def __init__(self, source: Any, snapshot: bytes | None = None):
        self.source = source
        self.snapshot = snapshot

    def get_state(self) -> bytes:
        return self.snapshot

    def set_state(self, state: bytes) -> None:
        self.source.set_state(json.loads(state))

    def start_prefetch(self) -> None:
        pass


def _unreadable(step_dir: Path) -> str | None:
    """Why a committed step folder cannot be a checkpoint (missing or garbled metadata), or None."""
    for item in ITEMS:
        if not (step_dir / item).is_dir():
            return f"no {item}/"
    files = [step_dir / "meta" / "metadata", step_dir / "params" / "_METADATA"]
    files.append(step_dir / "opt_state" / "_METADATA")
    for path in files:
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            return f"{path.relative_to(step_dir)}: {type(err).__name__}"
    from logos_jax.checkpoint import params_metadata

    for item in ("params", "opt_state"):
        try:
            params_metadata(step_dir / item)
        except Exception as err:  # any reader failure on a damaged file
            return f"{item}: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
    return None


class TrainCheckpointer:
    """Save / restore ``TrainState`` + data-source state for one run directory."""

    def __init__(self, run_dir: Path, *, keep: int, async_save: bool = True):
        self.directory = (Path(run_dir) / "checkpoints").absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, item_names=ITEMS, options=options)
        # Orbax cleans old temporary folders in a background thread; an error raised before the
        # first save (init_from=/nope) would end the interpreter under it and print its traceback
        # after the one-line error. Finish that clean-up now (a directory listing).
        await_cleanup = getattr(self.manager, "_maybe_await_cleanup_tmp_directory", None)
        if await_cleanup is not None:
            await_cleanup()

    def latest_step(self) -> int | None:
        """The newest committed step whose metadata reads back (a corrupt one is skipped, warned)."""
        for step in reversed(committed_steps(self.directory)):
            problem = _unreadable(self.directory / str(step))
            if problem is None:
                return step
            print(
                f"warning: checkpoint {self.directory / str(step)} is corrupt ({problem}); "
                f"using the previous committed one{self._set_aside(step)}",
                file=sys.stderr,
            )
        return None

    def _set_aside(self, step: int) -> str:
        """Rename a corrupt step folder (kept for inspection) so this run can save that step again
        (Orbax never overwrites an existing step). Returns the note for the warning."""
        if jax.process_index() != 0:
            return ""
        target = self.directory / f"{step}.corrupt"
        n = 1
        while target.exists():
            target, n = self.directory / f"{step}.corrupt-{n}", n + 1
        (self.directory / str(step)).rename(target)
        self.manager.reload()
        return f"; moved to {target.name}"

    def save(self, state: TrainState, source: Any, config: dict[str, Any]) -> None:
        """Start saving ``state`` at its step (returns once the arrays are copied off the devices)."""
        step = int(jax.device_get(state.step))
        meta = {
            "step": step,
            "rng": np.asarray(jax.device_get(state.rng)).tolist(),
            "skipped": int(jax.device_get(state.skipped)),
            "config": config,
        }
        snapshot = json.dumps(source.get_state()).encode()
        self.manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(state.params),
                opt_state=ocp.args.StandardSave(state.opt_state),
                meta=ocp.args.JsonSave(meta),
                data=grain_ckpt.CheckpointSave(_DataState(source, snapshot)),
            ),
        )

    def restore(self, step: int, placement: StatePlacement, source: Any) -> TrainState:
        """Restore ``step`` onto ``placement`` (any mesh) and rewind ``source`` to its saved state.

        A step that fails to restore (a corrupt file) falls back to the previous committed step,
        with a warning; the returned state's ``step`` says which one was restored."""
        candidates = [s for s in reversed(committed_steps(self.directory)) if s <= step] or [step]
        errors = []
        for candidate in candidates:
            try:
                return self._restore(candidate, placement, source)
            except Exception as err:  # any reader failure on a damaged file: try an older step
                reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                errors.append(f"step {candidate}: {reason[:300]}")
                note = (
                    self._set_aside(candidate) if (self.directory / str(candidate)).is_dir() else ""
                )
                print(
                    f"warning: checkpoint {self.directory / str(candidate)} cannot be restored "
                    f"({reason[:300]}); trying the previous committed one{note}",
                    file=sys.stderr,
                )
        raise LogosError(
            f"no checkpoint in {self.directory} can be restored ({'; '.join(errors)}); "
            "fix: delete the damaged step folders, or start a new run_dir"
        )

    def _restore(self, step: int, placement: StatePlacement, source: Any) -> TrainState:
        quiet_closed_loop_reports()
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(placement.abstract.params),
                opt_state=ocp.args.StandardRestore(placement.abstract.opt_state),
                meta=ocp.args.JsonRestore(),
                data=grain_ckpt.CheckpointRestore(_DataState(source)),
            ),
        )
        meta = restored["meta"]

        def put(value, dtype):
            return jax.device_put(np.asarray(value, dtype), placement.replicated)

        return TrainState(
            step=put(meta["step"], np.int32),
            params=restored["params"],
            opt_state=restored["opt_state"],
            rng=put(meta["rng"], np.uint32),
            bad_step=put(-1, np.int32),
            skipped=put(meta["skipped"], np.int32),
        )

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

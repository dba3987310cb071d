"""Training checkpoints: Orbax ``CheckpointManager`` under ``<run_dir>/checkpoints/<step>/``.

Items of one step: ``params`` (the model params in their param dtype, the layout ``load_model`` and
``logos convert jax2hf`` read), ``opt_state``, ``meta`` (JSON: step, RNG key, skipped-step count, the
train config) and ``data`` (the batch source's state, one JSON file per process, Grain's handler).
Saves are asynchronous and keep the last N steps. Only committed steps (Orbax's
``_CHECKPOINT_METADATA`` marker, written last) are ever restored; restores go through an explicit
sharded target, so a run saved on one mesh resumes on another.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grain.checkpoint as grain_ckpt
import jax
import numpy as np
import orbax.checkpoint as ocp

from logos_jax.train.step import StateLayout, TrainState

COMMIT_MARKERS = ("_CHECKPOINT_METADATA", "commit_success.txt")
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


def committed_steps(directory: Path) -> list[int]:
    """Steps under ``directory`` whose checkpoint finished (commit marker present), ascending."""
    if not directory.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in directory.iterdir()
        if p.name.isdigit() and any((p / m).exists() for m in COMMIT_MARKERS)
    )


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

    def latest_step(self) -> int | None:
        steps = committed_steps(self.directory)
        return steps[-1] if steps else None

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

    def restore(self, step: int, layout: StateLayout, source: Any) -> TrainState:
        """Restore ``step`` onto ``layout`` (any mesh) and rewind ``source`` to its saved state."""
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(layout.abstract.params),
                opt_state=ocp.args.StandardRestore(layout.abstract.opt_state),
                meta=ocp.args.JsonRestore(),
                data=grain_ckpt.CheckpointRestore(_DataState(source)),
            ),
        )
        meta = restored["meta"]

        def put(value, dtype):
            return jax.device_put(np.asarray(value, dtype), layout.replicated)

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

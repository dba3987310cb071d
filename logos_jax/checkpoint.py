"""Model checkpoints on disk: ``model_config.yaml`` + an Orbax ``params/`` tree (+ tokenizer files).

The same layout is written by ``logos convert hf2jax`` (through ``convert.orbax_format``, without JAX)
and by ``save_model``, and read by training (``init_from``), sampling and
``jax2hf``. A training run directory is accepted too: its latest committed step's ``params`` item is used.
Restores always go through an explicit abstract target, so a checkpoint saved on one mesh loads onto
any other (each device reads only its shards).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from logos_jax.checkpoint_steps import committed_steps
from logos_jax.config import ModelConfig, load_model_config, save_model_config
from logos_jax.errors import LogosError
from logos_jax.model import abstract_params, to_layer_layout
from logos_jax.model_folder import (
    MODEL_CONFIG,
    PARAMS,
    atomic_folder,
    copy_tokenizer_files,
)
from logos_jax.sharding import DEFAULT_RULES, Rules


def save_params(path: Path, params: Any) -> None:
    """Write a params tree (jax or numpy arrays) as an Orbax checkpoint at ``path`` (must not exist).

    Uncompressed (weights barely compress; zstd made saving ~5x slower than the disk) and with at most
    1 GB in flight, so saving a large tree does not hold extra copies of it in host memory.
    """
    handler = ocp.PyTreeCheckpointHandler(use_compression=False, save_concurrent_gb=1)
    with ocp.Checkpointer(handler) as checkpointer:
        checkpointer.save(Path(path).absolute(), args=ocp.args.PyTreeSave(params))


def _read_tree(path: Path, read: Any) -> Any:
    """``read(handler, absolute path)`` with Orbax's tree handler. The handler, not a
    ``Checkpointer``: a training step's ``params`` item has no ``_CHECKPOINT_METADATA`` of its own
    (the step folder holds it), and a ``Checkpointer`` warns about that on every load."""
    handler = ocp.StandardCheckpointHandler()
    try:
        return read(handler, Path(path).absolute())
    except FileNotFoundError:
        raise LogosError(f"{path}: no Orbax checkpoint here") from None
    finally:
        handler.close()


def restore_params(path: Path, target: Any) -> Any:
    """Restore ``path`` onto ``target`` (a tree of ShapeDtypeStruct with shardings)."""
    return _read_tree(path, lambda h, p: h.restore(p, args=ocp.args.StandardRestore(target)))


def params_metadata(path: Path) -> Any:
    """The stored tree at ``path``: its keys, and per array ``shape`` / ``dtype``."""
    return _read_tree(path, lambda h, p: h.metadata(p))


def stores_scanned_layers(path: Path) -> bool:
    """Whether the params tree at ``path`` stacks its blocks under ``layers`` (``scan_layers=True``)
    rather than holding one ``layers_{i}`` subtree per block (a run trained with ``scan_layers=False``)."""
    return "layers_0" not in params_metadata(path)


def save_model(
    out_dir: Path, config: ModelConfig, params: dict, tokenizer_dir: Path | None = None
) -> Path:
    """Write a complete model folder atomically (temp dir in the same parent, then rename);
    tokenizer files are copied from ``tokenizer_dir``."""
    with atomic_folder(out_dir) as tmp:
        save_params(tmp / PARAMS, params)
        save_model_config(config, tmp / MODEL_CONFIG)
        if tokenizer_dir is not None:
            copy_tokenizer_files(tokenizer_dir, tmp)
    return Path(out_dir).absolute()


def _latest_step_dir(checkpoints: Path) -> Path:
    steps = [s for s in committed_steps(checkpoints) if (checkpoints / str(s) / PARAMS).is_dir()]
    if not steps:
        raise LogosError(f"{checkpoints}: no complete checkpoint step")
    return checkpoints / str(steps[-1])


def resolve_model_dir(path: str | Path) -> tuple[Path, Path]:
    """(folder holding ``model_config.yaml``, Orbax params dir) for a model folder or a run dir."""
    path = Path(path)
    if not path.exists():
        raise LogosError(f"{path}: no such checkpoint folder")
    if (path / PARAMS).is_dir() and (path / MODEL_CONFIG).is_file():
        return path, path / PARAMS
    if (path / "checkpoints").is_dir() and (path / MODEL_CONFIG).is_file():
        return path, _latest_step_dir(path / "checkpoints") / PARAMS
    if (path / PARAMS).is_dir() and (path.parent.parent / MODEL_CONFIG).is_file():
        return path.parent.parent, path / PARAMS  # a step dir inside <run>/checkpoints/
    raise LogosError(
        f"{path}: not a logos_jax checkpoint (expected {MODEL_CONFIG} and {PARAMS}/, or a training "
        "run dir); convert a Hugging Face folder first with `logos convert hf2jax`"
    )


def load_model(
    path: str | Path,
    mesh: Mesh | None = None,
    rules: Rules = DEFAULT_RULES,
    param_dtype: str | None = None,
) -> tuple[ModelConfig, Any]:
    """Load (config, params) directly sharded onto ``mesh`` (default: a 1-device mesh on device 0).

    Params come in the stacked (scanned) layout whichever layout the checkpoint holds.
    """
    from logos_jax.sharding import MeshConfig, make_mesh

    model_dir, params_dir = resolve_model_dir(path)
    config = load_model_config(model_dir / MODEL_CONFIG)
    mesh = mesh or make_mesh(MeshConfig(1, 1, 1), jax.devices()[:1])
    scanned = stores_scanned_layers(params_dir)
    target = abstract_params(config, mesh, rules, scan_layers=scanned)
    if param_dtype is not None:
        config = config.replace(param_dtype=param_dtype)
        target = jax.tree.map(
            lambda t: jax.ShapeDtypeStruct(t.shape, param_dtype, sharding=t.sharding), target
        )
    params = restore_params(params_dir, target)
    return config, to_layer_layout(params, config, mesh, scan_layers=True, rules=rules)

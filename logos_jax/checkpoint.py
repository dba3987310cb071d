"""Model checkpoints on disk: ``model_config.yaml`` + an Orbax ``params/`` tree (+ tokenizer files),
or a Hugging Face folder read directly.

The Orbax format is written by ``logos convert hf2jax`` (through ``convert.orbax_format``, without
JAX) and by ``save_model``, and read by training (``init_from``), sampling and ``jax2hf``. A training
run directory is accepted too: its latest committed step's ``params`` item is used. Restores always
go through an explicit abstract target from the parameter table, so a checkpoint saved on one mesh
loads onto any other (each device reads only its shards).

An HF folder (``config.json`` + safetensors) loads without converting: every tensor is memory-mapped
and each device's shard is read from it and placed on its device, one shard at a time (never the
whole model on one device or in host memory). Its tensors are in the table's axis order, so the result is
bit-identical to loading its ``hf2jax`` conversion.

Checkpoints written before the table adopted the HF axis order (``FORMAT_VERSION`` 1: Linear ``kernel``
leaves ``[in, out]``) are recognised by those leaves and transposed on the device when loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from logos_jax.checkpoint_steps import committed_steps
from logos_jax.config import ModelConfig, load_model_config, save_model_config
from logos_jax.convert.hf_folder import checked_tensors, hf_config, is_hf_folder
from logos_jax.convert.safetensors_io import map_tensor
from logos_jax.errors import LogosError, quiet_closed_loop_reports
from logos_jax.model import abstract_params, to_layer_stacking
from logos_jax.model_folder import (
    MODEL_CONFIG,
    PARAMS,
    atomic_folder,
    copy_tokenizer_files,
)
from logos_jax.params import layer_path, param_table, role_of, set_path
from logos_jax.sharding import DEFAULT_RULES, Rules

# 2: Linear weights ``[out, in]`` (HF's axis order) named ``weight``; 1: ``kernel`` leaves ``[in, out]``.
FORMAT_VERSION = 2
_LEGACY_LEAF = "kernel"


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
    quiet_closed_loop_reports()
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


def format_version(path: Path) -> int:
    """``FORMAT_VERSION`` of the params tree at ``path`` (1: ``kernel`` leaves ``[in, out]``)."""
    leaves = jax.tree_util.tree_flatten_with_path(params_metadata(path))[0]
    legacy = any(getattr(keys[-1], "key", None) == _LEGACY_LEAF for keys, _ in leaves)
    return 1 if legacy else FORMAT_VERSION


def _transposed(struct: jax.ShapeDtypeStruct) -> jax.ShapeDtypeStruct:
    spec = struct.sharding.spec
    spec = PartitionSpec(*spec, *[None] * (len(struct.shape) - len(spec)))
    swapped = NamedSharding(struct.sharding.mesh, PartitionSpec(*spec[:-2], spec[-1], spec[-2]))
    shape = (*struct.shape[:-2], struct.shape[-1], struct.shape[-2])
    return jax.ShapeDtypeStruct(shape, struct.dtype, sharding=swapped)


def _restore_legacy(path: Path, target: Any) -> Any:
    """Restore a format-1 tree (``kernel`` leaves ``[in, out]``) onto ``target`` (format 2): each
    such leaf is read in its stored axis order and transposed on its devices, one at a time."""
    flat = jax.tree_util.tree_flatten_with_path(target)[0]
    legacy: dict = {}
    renamed = {}
    for keys, struct in flat:
        names = tuple(k.key for k in keys)
        if role_of(names) in ("kernel", "head"):
            old = (*names[:-1], _LEGACY_LEAF)
            renamed[names] = old
            set_path(legacy, old, _transposed(struct))
        else:
            set_path(legacy, names, struct)
    stored = restore_params(path, legacy)
    out: dict = {}
    for keys, struct in flat:
        names = tuple(k.key for k in keys)
        if names not in renamed:
            set_path(out, names, _get(stored, names))
            continue
        old = _get(stored, renamed[names])
        set_path(
            out, names, jax.jit(lambda x: x.swapaxes(-1, -2), out_shardings=struct.sharding)(old)
        )
        old.delete()
    return out


def _get(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


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
    """(folder holding ``model_config.yaml``, Orbax params dir) for a model folder or a run dir;
    (the folder, the folder) for a Hugging Face folder (its config and tokenizer are there too)."""
    path = Path(path)
    if not path.exists():
        raise LogosError(f"{path}: no such checkpoint folder")
    if is_hf_folder(path):
        return path, path
    if (path / PARAMS).is_dir() and (path / MODEL_CONFIG).is_file():
        return path, path / PARAMS
    if (path / "checkpoints").is_dir() and (path / MODEL_CONFIG).is_file():
        return path, _latest_step_dir(path / "checkpoints") / PARAMS
    if (path / PARAMS).is_dir() and (path.parent.parent / MODEL_CONFIG).is_file():
        return path.parent.parent, path / PARAMS  # a step dir inside <run>/checkpoints/
    raise LogosError(
        f"{path}: not a logos_jax checkpoint (expected {MODEL_CONFIG} and {PARAMS}/, a training "
        "run dir, or a Hugging Face folder with config.json and safetensors files)"
    )


def load_config(path: str | Path) -> ModelConfig:
    """The model config of any checkpoint ``load_model`` accepts."""
    model_dir, _ = resolve_model_dir(path)
    if is_hf_folder(model_dir):
        return hf_config(model_dir)
    return load_model_config(model_dir / MODEL_CONFIG)


def load_hf_params(
    hf_dir: Path,
    config: ModelConfig,
    mesh: Mesh,
    rules: Rules = DEFAULT_RULES,
    scan_layers: bool = True,
) -> Any:
    """The parameters of an HF folder, in ``config.param_dtype``, placed on ``mesh`` shard by shard
    straight from the memory-mapped files (see the module docstring)."""
    tensors = checked_tensors(config, hf_dir)
    target = abstract_params(config, mesh, rules, scan_layers)
    params: dict = {}

    def place(struct: jax.ShapeDtypeStruct, read: Any) -> jax.Array:
        def shard(index: tuple[slice, ...]) -> np.ndarray:
            return np.asarray(read(index), dtype=struct.dtype)

        return jax.make_array_from_callback(struct.shape, struct.sharding, shard)

    for path, info in param_table(config).items():
        sources = [map_tensor(tensors[name]) for name in _hf_names(info, config.num_layers)]
        if not info.per_layer:
            set_path(params, path, place(_get(target, path), lambda i, m=sources[0]: m[i]))
        elif scan_layers:
            stacked = lambda i, ms=sources: np.stack([ms[k][i[1:]] for k in range(len(ms))[i[0]]])  # noqa: E731
            set_path(params, path, place(_get(target, path), stacked))
        else:
            for k, source in enumerate(sources):
                leaf = layer_path(path, k)
                set_path(params, leaf, place(_get(target, leaf), lambda i, m=source: m[i]))
    return params


def _hf_names(info: Any, num_layers: int) -> list[str]:
    return (
        [info.hf_tensor(k) for k in range(num_layers)] if info.per_layer else [info.hf_tensor(None)]
    )


def load_model(
    path: str | Path,
    mesh: Mesh | None = None,
    rules: Rules = DEFAULT_RULES,
    param_dtype: str | None = None,
    scan_layers: bool = True,
) -> tuple[ModelConfig, Any]:
    """Load (config, params) directly sharded onto ``mesh`` (default: a 1-device mesh on device 0)
    from a model folder, a run dir or a Hugging Face folder.

    Params come stacked (``scan_layers``) or per layer, whichever the checkpoint holds (restacked
    by ``to_layer_stacking`` if need be); ``param_dtype`` overrides the stored dtype.
    """
    from logos_jax.sharding import MeshConfig, make_mesh

    model_dir, params_dir = resolve_model_dir(path)
    config = load_config(model_dir)
    if param_dtype is not None:
        config = config.replace(param_dtype=param_dtype)
    mesh = mesh or make_mesh(MeshConfig(1, 1, 1), jax.devices()[:1])
    if is_hf_folder(model_dir):
        return config, load_hf_params(model_dir, config, mesh, rules, scan_layers)
    scanned = stores_scanned_layers(params_dir)
    target = abstract_params(config, mesh, rules, scan_layers=scanned)
    if format_version(params_dir) == 1:
        params = _restore_legacy(params_dir, target)
    else:
        params = restore_params(params_dir, target)
    return config, to_layer_stacking(params, config, mesh, scan_layers=scan_layers, rules=rules)

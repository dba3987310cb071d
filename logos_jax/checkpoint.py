"""Model checkpoints on disk: ``model_config.yaml`` + an Orbax ``params/`` tree (+ tokenizer files).

The same layout is written by ``logos convert hf2jax`` and read by training (``init_from``), sampling and
``jax2hf``. A training run directory is accepted too: its latest committed step's ``params`` item is used.
Restores always go through an explicit abstract target, so a checkpoint saved on one mesh loads onto
any other (each device reads only its shards).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from logos_jax.config import ModelConfig, load_model_config, save_model_config
from logos_jax.errors import LogosError
from logos_jax.model import abstract_params, to_layer_layout
from logos_jax.sharding import DEFAULT_RULES, Rules

MODEL_CONFIG = "model_config.yaml"
PARAMS = "params"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
)


def copy_tokenizer_files(src: Path, dst: Path) -> list[str]:
    """Copy the tokenizer files present in ``src`` to ``dst``; returns their names."""
    copied = []
    for name in TOKENIZER_FILES:
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, Path(dst) / name)
            copied.append(name)
    return copied


def save_params(path: Path, params: Any) -> None:
    """Write a params tree (jax or numpy arrays) as an Orbax checkpoint at ``path`` (must not exist).

    Uncompressed (weights barely compress; zstd made saving ~5x slower than the disk) and with at most
    1 GB in flight, so saving a converted model does not hold extra copies of it in host memory.
    """
    handler = ocp.PyTreeCheckpointHandler(use_compression=False, save_concurrent_gb=1)
    with ocp.Checkpointer(handler) as checkpointer:
        checkpointer.save(Path(path).absolute(), args=ocp.args.PyTreeSave(params))


def save_params_incrementally(
    path: Path, leaves: Iterable[tuple[tuple[str, ...], Any]], group_bytes: int = 256 << 20
) -> None:
    """Write params as they are produced, in groups of about ``group_bytes`` (Orbax partial saves).

    Orbax copies every array it saves; saving the whole tree at once holds a second copy of the model
    in host memory (orbax#1640). Saving each group as soon as it is complete keeps the peak at about
    one group plus its copy, which is what lets ``hf2jax`` stay within ~1.25x the checkpoint size;
    grouping small leaves keeps the number of (fixed-cost) partial saves low. The result is read back
    like any params checkpoint (see ``restore_params``).
    """
    path = Path(path).absolute()

    def save(tree: dict) -> None:
        context = ocp.v1.Context()
        context.array.saving.use_compression = False  # weights barely compress; zstd is 2-3x slower
        with context:
            ocp.v1.partial.save(path, tree)

    # Produce the next group while the previous one is written (partial saves stay sequential).
    with ThreadPoolExecutor(max_workers=1) as writer:
        pending, group, size = None, {}, 0
        for key, value in leaves:
            node = group
            for part in key[:-1]:
                node = node.setdefault(part, {})
            node[key[-1]] = value
            size += value.nbytes
            if size >= group_bytes:
                if pending is not None:
                    pending.result()
                pending, group, size = writer.submit(save, group), {}, 0
        if pending is not None:
            pending.result()
        if group:
            save(group)
    ocp.v1.partial.finalize(path)


def _pytree_dir(path: Path) -> Path:
    """Partial saves put the tree under ``state/``; whole-tree saves at the top."""
    return path / "state" if (path / "state" / "_METADATA").is_file() else path


def restore_params(path: Path, target: Any) -> Any:
    """Restore ``path`` onto ``target`` (a tree of ShapeDtypeStruct with shardings)."""
    path = _pytree_dir(Path(path))
    checkpointer = ocp.StandardCheckpointer()
    try:
        return checkpointer.restore(Path(path).absolute(), target)
    except FileNotFoundError:
        raise LogosError(f"{path}: no Orbax checkpoint here") from None
    finally:
        checkpointer.close()


def stores_scanned_layers(path: Path) -> bool:
    """Whether the params tree at ``path`` stacks its blocks under ``layers`` (``scan_layers=True``)
    rather than holding one ``layers_{i}`` subtree per block (a run trained with ``scan_layers=False``)."""
    path = _pytree_dir(Path(path))
    checkpointer = ocp.StandardCheckpointer()
    try:
        keys = checkpointer.metadata(path.absolute()).item_metadata.keys()
    except FileNotFoundError:
        raise LogosError(f"{path}: no Orbax checkpoint here") from None
    finally:
        checkpointer.close()
    return "layers_0" not in keys


def save_model(
    out_dir: Path,
    config: ModelConfig,
    params: dict | Iterable[tuple[tuple[str, ...], Any]],
    tokenizer_dir: Path | None = None,
    tokenizer: Any = None,
) -> Path:
    """Write a complete model folder atomically (temp dir in the same parent, then rename).

    ``params`` is a tree, or an iterable of ``(path, array)`` leaves written as they come (bounded
    memory). Tokenizer files are copied from ``tokenizer_dir``; a ``tokenizer`` object (``LogosTokenizer``),
    when given, is saved over them (e.g. after adding the grammar tags).
    """
    out_dir = Path(out_dir).absolute()
    if out_dir.exists():
        raise LogosError(f"{out_dir} already exists; choose a new output folder or delete it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        if isinstance(params, dict):
            save_params(tmp / PARAMS, params)
        else:
            save_params_incrementally(tmp / PARAMS, params)
        save_model_config(config, tmp / MODEL_CONFIG)
        if tokenizer_dir is not None:
            copy_tokenizer_files(tokenizer_dir, tmp)
        if tokenizer is not None:
            tokenizer.save(tmp)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _latest_step_dir(checkpoints: Path) -> Path:
    steps = sorted(
        (int(p.name), p)
        for p in checkpoints.iterdir()
        if p.name.isdigit()
        and (p / PARAMS).is_dir()
        # Orbax writes a commit marker only once a step is complete.
        and ((p / "_CHECKPOINT_METADATA").exists() or (p / "commit_success.txt").exists())
    )
    if not steps:
        raise LogosError(f"{checkpoints}: no complete checkpoint step")
    return steps[-1][1]


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

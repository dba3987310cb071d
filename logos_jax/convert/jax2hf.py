"""logos model folder (or training run) -> Hugging Face folder loadable by transformers 5.

Writes ``config.json`` (transformers-5 format), safetensors shards + ``model.safetensors.index.json``
(a single ``model.safetensors`` when it fits one shard), and the tokenizer files. Bytes are copied
unchanged, so HF -> JAX -> HF is bit-identical.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from logos_jax.checkpoint import load_model, resolve_model_dir
from logos_jax.errors import LogosError
from logos_jax.model_folder import atomic_folder, copy_tokenizer_files
from logos_jax.params import get_path, hf_tensors, hf_view

DEFAULT_SHARD_BYTES = 2 * 1024**3


def _plan_shards(sizes: list[int], max_bytes: int) -> list[list[int]]:
    """Greedy split of tensor indices into shards of at most ``max_bytes`` (one tensor may exceed)."""
    shards: list[list[int]] = [[]]
    used = 0
    for i, size in enumerate(sizes):
        if shards[-1] and used + size > max_bytes:
            shards.append([])
            used = 0
        shards[-1].append(i)
        used += size
    return shards


def jax_to_hf(
    ckpt: str | Path,
    out_dir: str | Path,
    *,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    progress: bool = True,
) -> Path:
    """Export ``ckpt`` (a model folder or a training run dir) to an HF folder at ``out_dir``."""
    from logos_jax.convert.safetensors_io import write_safetensors

    out_dir = Path(out_dir).absolute()
    if out_dir.exists():
        raise LogosError(f"{out_dir} already exists; choose a new output folder or delete it")
    model_dir, _ = resolve_model_dir(ckpt)
    config, params = load_model(ckpt)

    names = list(hf_tensors(config))
    sizes = [
        math.prod(info.shape) * get_path(params, info.path).dtype.itemsize for _, info, _ in names
    ]
    shards = _plan_shards(sizes, max_shard_bytes)
    with atomic_folder(out_dir) as tmp:
        weight_map = {}
        bar = tqdm(total=len(names), desc="jax2hf", unit="tensor", disable=not progress)
        for k, shard in enumerate(shards):
            file = (
                "model.safetensors"
                if len(shards) == 1
                else f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
            )
            tensors = []
            for idx in shard:
                name, entry, layer = names[idx]
                tensors.append((name, np.ascontiguousarray(hf_view(params, entry, layer))))
                weight_map[name] = file
            write_safetensors(tmp / file, tensors)
            bar.update(len(shard))
        bar.close()
        if len(shards) > 1:
            index = {"metadata": {"total_size": sum(sizes)}, "weight_map": weight_map}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        (tmp / "config.json").write_text(json.dumps(config.to_hf(), indent=2))
        copy_tokenizer_files(model_dir, tmp)
        if not (tmp / "generation_config.json").exists():
            generation = {
                k: v
                for k, v in config.to_hf().items()
                if k in ("bos_token_id", "eos_token_id", "pad_token_id") and v is not None
            }
            (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2))
    return out_dir

"""Hugging Face folder -> logos model folder (Orbax params + model config + tokenizer files).

Reads tensor by tensor straight into the stacked destination arrays in the checkpoint's own dtype
(bf16 stays bf16), so peak memory is about one copy of the model plus one tensor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from logos_jax.checkpoint import save_model
from logos_jax.config import ModelConfig, read_json
from logos_jax.convert.name_map import IGNORED_SUFFIXES, get_path, hf_shape, hf_tensors, set_path
from logos_jax.convert.safetensors_io import DTYPES, HF_DTYPE, TensorInfo, index_tensors, read_into
from logos_jax.errors import LogosError


def _check_names(config: ModelConfig, tensors: dict[str, TensorInfo], hf_dir: Path) -> None:
    expected = {name for name, _, _ in hf_tensors(config)}
    missing = sorted(expected - set(tensors))
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise LogosError(
            f"{hf_dir}: missing tensor(s) {missing[:5]}{more} required by config.json "
            f"({config.architecture}, {config.num_layers} layers)"
        )
    ignorable = {"lm_head.weight"} if config.tie_embeddings else set()
    extra = sorted(
        n
        for n in set(tensors) - expected - ignorable
        if not n.endswith(IGNORED_SUFFIXES)
    )
    if extra:
        raise LogosError(
            f"{tensors[extra[0]].file}: unexpected tensor(s) {extra[:5]} not part of a "
            f"{config.architecture} with this config.json (wrong config, or an unsupported variant)"
        )


def load_hf_params(
    hf_dir: Path, config: ModelConfig, progress: bool = True
) -> dict[str, dict]:
    """Read every tensor of ``hf_dir`` into a params tree of numpy arrays (dtype: param_dtype)."""
    from logos_jax.model import abstract_params

    tensors = index_tensors(hf_dir)
    _check_names(config, tensors, hf_dir)
    dtype = np.dtype(DTYPES[{v: k for k, v in HF_DTYPE.items()}[config.param_dtype]])
    shapes = abstract_params(config)
    params: dict = {}
    names = list(hf_tensors(config))
    for name, entry, layer in tqdm(
        names, desc="hf2jax", unit="tensor", disable=not progress, dynamic_ncols=True
    ):
        info = tensors[name]
        jax_shape = get_path(shapes, entry.path).shape
        want = hf_shape(entry, jax_shape)
        if info.shape != want:
            raise LogosError(
                f"{info.file}: tensor {name!r} has shape {list(info.shape)} but config.json "
                f"implies {list(want)}"
            )
        try:
            dest = get_path(params, entry.path)
        except KeyError:
            dest = np.empty(jax_shape, dtype)
            set_path(params, entry.path, dest)
        target = dest[layer] if layer is not None else dest
        if entry.transpose or DTYPES[info.dtype] != dtype:
            buffer = read_into(info, np.empty(info.shape, DTYPES[info.dtype]))
            target[...] = (buffer.T if entry.transpose else buffer).astype(dtype, copy=False)
        else:
            read_into(info, target)
    return params


def hf_to_jax(hf_dir: str | Path, out_dir: str | Path, *, progress: bool = True) -> Path:
    """Convert an HF Llama/Qwen3 folder into a logos model folder at ``out_dir`` (atomic)."""
    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise LogosError(f"{hf_dir}: no such folder")
    config = ModelConfig.from_hf(read_json(hf_dir / "config.json"), source=str(hf_dir / "config.json"))
    generation = hf_dir / "generation_config.json"
    if generation.is_file():
        eos = read_json(generation).get("eos_token_id")
        if eos is not None:
            config = config.replace(eos_token_id=tuple(eos) if isinstance(eos, list) else eos)
    params = load_hf_params(hf_dir, config, progress)
    return save_model(Path(out_dir), config, params, tokenizer_dir=hf_dir)

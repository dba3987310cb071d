"""Hugging Face folder -> logos model folder (Orbax params + model config + tokenizer files).

Reads tensor by tensor straight into the stacked destination arrays in the checkpoint's own dtype
(bf16 stays bf16), so peak memory is about one copy of the model plus one tensor.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from logos_jax.checkpoint import save_model
from logos_jax.config import ModelConfig, read_json
from logos_jax.convert.name_map import (
    IGNORED_SUFFIXES,
    get_path,
    hf_shape,
    hf_tensors,
    param_table,
)
from logos_jax.convert.resize import check_growth, resize_rows
from logos_jax.convert.safetensors_io import DTYPES, HF_DTYPE, TensorInfo, index_tensors, map_tensor
from logos_jax.errors import LogosError

_POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="transpose")


def _bits(array: np.ndarray) -> np.ndarray:
    """Same-size unsigned-int view: numpy's fast strided copy (bf16 has no fast path of its own)."""
    return array.view(np.dtype(f"u{array.dtype.itemsize}"))


def transpose_into(dst: np.ndarray, src: np.ndarray, tile: int = 256) -> None:
    """``dst[...] = src.T`` for 2-D arrays, tile by tile (5x faster than numpy's strided copy),
    bands of rows spread over the CPU cores (numpy releases the GIL while copying)."""
    rows, cols = src.shape

    def band(i: int) -> None:
        for j in range(0, cols, tile):
            dst[j : j + tile, i : i + tile] = src[i : i + tile, j : j + tile].T

    list(_POOL.map(band, range(0, rows, tile)))


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
        n for n in set(tensors) - expected - ignorable if not n.endswith(IGNORED_SUFFIXES)
    )
    if extra:
        raise LogosError(
            f"{tensors[extra[0]].file}: unexpected tensor(s) {extra[:5]} not part of a "
            f"{config.architecture} with this config.json (wrong config, or an unsupported variant)"
        )


def iter_hf_params(
    hf_dir: Path, config: ModelConfig, progress: bool = True
) -> Iterator[tuple[tuple[str, ...], np.ndarray]]:
    """Yield ``(path, array)`` for each JAX parameter of ``hf_dir`` as soon as it is complete.

    Per-layer tensors are read straight into their slice of the stacked array (transposed through
    a one-tensor buffer), in the dtype of ``config.param_dtype``. Only one parameter is alive at a time.
    """
    from logos_jax.model import abstract_params

    tensors = index_tensors(hf_dir)
    _check_names(config, tensors, hf_dir)
    dtype = np.dtype(DTYPES[{v: k for k, v in HF_DTYPE.items()}[config.param_dtype]])
    shapes = abstract_params(config)
    bar = tqdm(
        total=sum(1 for _ in hf_tensors(config)),
        desc="hf2jax",
        unit="tensor",
        disable=not progress,
        dynamic_ncols=True,
    )
    for entry in param_table(config):
        jax_shape = get_path(shapes, entry.path).shape
        want = hf_shape(entry, jax_shape)
        dest = np.empty(jax_shape, dtype)
        layers = range(config.num_layers) if entry.per_layer else [None]
        for layer in layers:
            name = entry.hf_name.format(i=layer)
            info = tensors[name]
            if info.shape != want:
                raise LogosError(
                    f"{info.file}: tensor {name!r} has shape {list(info.shape)} but config.json "
                    f"implies {list(want)}"
                )
            target = dest[layer] if layer is not None else dest
            source = map_tensor(info)
            if DTYPES[info.dtype] != dtype:
                target[...] = (source.T if entry.transpose else source).astype(dtype)
            elif entry.transpose:
                transpose_into(_bits(target), _bits(source))
            else:
                target[...] = source
            del source
            bar.update()
        yield entry.path, dest
    bar.close()


def _with_resized_vocab(
    leaves: Iterator[tuple[tuple[str, ...], np.ndarray]],
    old_vocab: int,
    new_vocab: int,
    new_ids: list[int],
) -> Iterator[tuple[tuple[str, ...], np.ndarray]]:
    """Pass leaves through, growing the embedding (and untied LM head) for added tokens."""
    reset = [i for i in new_ids if i < old_vocab]
    for path, value in leaves:
        if path[0] == "embed_tokens":
            value = resize_rows(value, new_vocab, reset, old_vocab)
        elif path[0] == "lm_head":
            value = np.ascontiguousarray(resize_rows(value.T, new_vocab, reset, old_vocab).T)
        yield path, value


def hf_to_jax(
    hf_dir: str | Path, out_dir: str | Path, *, add_tags: bool = False, progress: bool = True
) -> Path:
    """Convert an HF Llama/Qwen3 folder into a logos model folder at ``out_dir`` (atomic).

    ``add_tags`` adds the grammar tags to the tokenizer and mean-initialises their embeddings.
    """
    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise LogosError(f"{hf_dir}: no such folder")
    config = ModelConfig.from_hf(
        read_json(hf_dir / "config.json"), source=str(hf_dir / "config.json")
    )
    generation = hf_dir / "generation_config.json"
    if generation.is_file():
        eos = read_json(generation).get("eos_token_id")
        if eos is not None:
            config = config.replace(eos_token_id=tuple(eos) if isinstance(eos, list) else eos)
    if Path(out_dir).exists():
        raise LogosError(f"{out_dir} already exists; choose a new output folder or delete it")
    leaves = iter_hf_params(hf_dir, config, progress)
    tokenizer = None
    if add_tags:
        from logos_jax.tokenizer import LogosTokenizer, add_grammar_tags

        tokenizer, added = add_grammar_tags(LogosTokenizer.load(hf_dir))
        new_ids = [tokenizer.token_id(tag) for tag in added]
        vocab = max(config.vocab_size, tokenizer.vocab_size)
        check_growth(config, vocab)
        leaves = _with_resized_vocab(leaves, config.vocab_size, vocab, new_ids)
        config = config.replace(vocab_size=vocab)
        if progress:
            print(f"adding {len(added)} grammar tags; vocabulary {vocab} rows")
    return save_model(Path(out_dir), config, leaves, tokenizer_dir=hf_dir, tokenizer=tokenizer)

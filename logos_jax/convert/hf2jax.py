"""Hugging Face folder -> logos model folder (Orbax params + model config + tokenizer files).

Each parameter goes straight from the (memory-mapped) safetensors files into its checkpoint file
(``convert.orbax_format``), one cache-sized band of rows at a time in a reused buffer, transposed
for kernels, on all cores, written with ``O_DIRECT``. Nothing is upcast (bf16 stays bf16) and no copy
of the model is held in memory. JAX is never imported, so the conversion starts in a fraction of a
second.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from logos_jax.config import ModelConfig, read_json, save_model_config
from logos_jax.convert.name_map import (
    IGNORED_SUFFIXES,
    ParamEntry,
    hf_shape,
    hf_tensors,
    jax_shape,
    param_table,
)
from logos_jax.convert.orbax_format import ArrayFile, CheckpointWriter, aligned_buffer
from logos_jax.convert.resize import check_growth, resize_rows
from logos_jax.convert.safetensors_io import DTYPES, HF_DTYPE, TensorInfo, index_tensors, map_tensor
from logos_jax.errors import LogosError
from logos_jax.model_folder import MODEL_CONFIG, PARAMS, atomic_folder, copy_tokenizer_files

# Twice the cores: while one band waits on its (direct) write, another is being transposed.
_POOL = ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 1), thread_name_prefix="hf2jax")
_BAND = 256  # destination rows per written band
_TILE = 128  # columns per transposed tile: 256 x 128 tiles are ~5x faster than numpy's strided copy
_BUFFERS = threading.local()  # one reusable band buffer per worker thread
_HEAD, _EMBED = "lm_head.weight", "model.embed_tokens.weight"


@dataclass(frozen=True)
class VocabResize:
    """Grow the vocabulary from ``old`` to ``new`` rows; ``reset`` rows (and the new ones) = the mean."""

    old: int
    new: int
    reset: tuple[int, ...]


def _bits(array: np.ndarray) -> np.ndarray:
    """Same-size unsigned-int view: numpy's fast strided copy (bf16 has no fast path of its own)."""
    return array.view(np.dtype(f"u{array.dtype.itemsize}"))


def _band_buffer(rows: int, cols: int, dtype: np.dtype) -> np.ndarray:
    size = rows * cols * dtype.itemsize
    buffer = getattr(_BUFFERS, "bytes", None)
    if buffer is None or buffer.nbytes < size:
        buffer = _BUFFERS.bytes = aligned_buffer(size)
    return buffer[:size].view(dtype).reshape(rows, cols)


def submit_rows(
    out: ArrayFile,
    offset: int,
    source: np.ndarray,
    transpose: bool,
    done: Callable[[int], None],
) -> list[Future]:
    """Queue the write of ``source.T if transpose else source``, in ``out``'s dtype, at byte
    ``offset`` of ``out``; ``done(nbytes)`` is called as each part lands.

    A band of ``_BAND`` destination rows per task, on all cores (numpy and ``pwrite`` release the
    GIL); transposed bands are filled tile by tile so reads stay in cache.
    """
    view = source.T if transpose else source
    if view.ndim < 2:
        out.write(view.astype(out.dtype), offset)
        done(view.size * out.dtype.itemsize)
        return []
    rows, cols = view.shape
    dtype = out.dtype
    if view.dtype == dtype:
        view = _bits(view)
        dtype = view.dtype
    row_bytes = cols * dtype.itemsize

    def band(r: int) -> None:
        buf = _band_buffer(min(_BAND, rows - r), cols, dtype)
        if transpose:
            for c in range(0, cols, _TILE):
                buf[:, c : c + _TILE] = view[r : r + _BAND, c : c + _TILE]
        else:
            buf[...] = view[r : r + _BAND]
        out.write(buf, offset + r * row_bytes)
        done(buf.nbytes)

    return [_POOL.submit(band, r) for r in range(0, rows, _BAND)]


def _wait(futures: list[Future]) -> None:
    """Wait for every task, then raise the first error."""
    wait(futures)
    for future in futures:
        future.result()


def _wait_quietly(futures: list[Future]) -> None:
    """After an error: cancel queued tasks, wait for running ones (none left writing into a folder
    about to be deleted)."""
    for future in futures:
        future.cancel()
    wait(futures)


def _same_bits(a: np.ndarray, b: np.ndarray, rows: int = 4096) -> bool:
    """Whether two (memory-mapped) arrays are bit-identical, compared ``rows`` rows at a time."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return all(
        np.array_equal(_bits(a[r : r + rows]), _bits(b[r : r + rows]))
        for r in range(0, a.shape[0], rows)
    )


def _check_tied_head(tensors: dict[str, TensorInfo]) -> None:
    """A tied config's file may still carry ``lm_head.weight``, but only as a copy of the embedding;
    anything else is an untied model, which would load wrong."""
    head, embed = tensors[_HEAD], tensors[_EMBED]
    if not _same_bits(map_tensor(head), map_tensor(embed)):
        raise LogosError(
            f"{head.file}: tensor {_HEAD!r} differs from {_EMBED!r} but config.json says "
            "tie_word_embeddings: true; if the model is untied, set it to false in config.json"
        )


def _check_names(config: ModelConfig, tensors: dict[str, TensorInfo], hf_dir: Path) -> None:
    expected = {name for name, _, _ in hf_tensors(config)}
    missing = sorted(expected - set(tensors))
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise LogosError(
            f"{hf_dir}: missing tensor(s) {missing[:5]}{more} required by config.json "
            f"({config.architecture}, {config.num_layers} layers)"
        )
    ignorable = {_HEAD} if config.tie_embeddings else set()
    if config.tie_embeddings and _HEAD in tensors:
        _check_tied_head(tensors)
    extra = sorted(
        n for n in set(tensors) - expected - ignorable if not n.endswith(IGNORED_SUFFIXES)
    )
    if extra:
        raise LogosError(
            f"{tensors[extra[0]].file}: unexpected tensor(s) {extra[:5]} not part of a "
            f"{config.architecture} with this config.json (wrong config, or an unsupported variant)"
        )


def _fill(
    out: ArrayFile,
    offset: int,
    entry: ParamEntry,
    info: TensorInfo,
    resize: VocabResize | None,
    done: Callable[[int], None],
) -> list[Future]:
    """Queue one HF tensor's write into ``out`` at byte ``offset`` (its slice of a stacked parameter)."""
    source = map_tensor(info)
    if resize is not None and entry.hf_dims[0] == "vocab":
        source = resize_rows(source, resize.new, resize.reset, resize.old)
    return submit_rows(out, offset, source, entry.transpose, done)


def write_params(
    hf_dir: Path,
    config: ModelConfig,
    path: Path,
    resize: VocabResize | None = None,
    progress: bool = True,
    direct_io: bool = True,
) -> None:
    """Write the parameters of ``hf_dir`` as an Orbax checkpoint at ``path``, in the dtype of
    ``config.param_dtype``, the vocabulary grown by ``resize`` when given; ``direct_io``: bypass the
    page cache (``orbax_format.ArrayFile``)."""
    tensors = index_tensors(hf_dir)
    _check_names(config, tensors, hf_dir)
    dtype = np.dtype(DTYPES[{v: k for k, v in HF_DTYPE.items()}[config.param_dtype]])
    out_config = config if resize is None else config.replace(vocab_size=resize.new)
    writer = CheckpointWriter(path)
    entries = param_table(config)
    bar = tqdm(
        total=sum(math.prod(jax_shape(e, out_config)) for e in entries) * dtype.itemsize,
        desc="hf2jax",
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not progress,
        dynamic_ncols=True,
    )
    lock = threading.Lock()

    def done(nbytes: int) -> None:
        with lock:
            bar.update(nbytes)

    pending: list[Future] = []
    outs: list[ArrayFile] = []
    try:
        for entry in entries:
            shape = jax_shape(entry, out_config)
            outs.append(writer.array(entry.path, shape, dtype, entry.per_layer, direct_io))
            want = hf_shape(entry, config)
            layers = range(config.num_layers) if entry.per_layer else [None]
            for layer in layers:
                name = entry.hf_name.format(i=layer)
                info = tensors[name]
                if info.shape != want:
                    raise LogosError(
                        f"{info.file}: tensor {name!r} has shape {list(info.shape)} but "
                        f"config.json implies {list(want)}"
                    )
                offset = (layer or 0) * (outs[-1].nbytes // outs[-1].chunks)
                pending += _fill(outs[-1], offset, entry, info, resize, done)
        # Every band is queued before waiting: no idle cores between parameters. Sources are
        # mapped, not read, until their band runs, so memory stays at the bands in flight.
        _wait(pending)
        pending = []
        for out in outs:
            out.close()
        writer.finish()
    except OSError as err:
        raise LogosError(f"{path}: cannot write the checkpoint ({err})") from None
    finally:
        _wait_quietly(pending)
        for out in outs:
            out.release()
        bar.close()


def hf_to_jax(
    hf_dir: str | Path,
    out_dir: str | Path,
    *,
    add_tags: bool = False,
    progress: bool = True,
    direct_io: bool = True,
) -> Path:
    """Convert an HF Llama/Qwen3 folder into a logos model folder at ``out_dir`` (atomic).

    ``add_tags`` adds the grammar tags to the tokenizer and mean-initialises their embeddings;
    ``direct_io=False`` writes through the page cache.
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
    tokenizer, resize = None, None
    if add_tags:
        from logos_jax.tokenizer import LogosTokenizer, add_grammar_tags

        tokenizer, added = add_grammar_tags(LogosTokenizer.load(hf_dir))
        vocab = max(config.vocab_size, tokenizer.vocab_size)
        check_growth(config, vocab)
        new_ids = (tokenizer.token_id(tag) for tag in added)
        resize = VocabResize(
            config.vocab_size, vocab, tuple(i for i in new_ids if i < config.vocab_size)
        )
        if progress:
            print(f"adding {len(added)} grammar tags; vocabulary {vocab} rows")
    with atomic_folder(out_dir) as tmp:
        write_params(hf_dir, config, tmp / PARAMS, resize, progress, direct_io)
        if resize is not None:
            config = config.replace(vocab_size=resize.new)
        save_model_config(config, tmp / MODEL_CONFIG)
        copy_tokenizer_files(hf_dir, tmp)
        if tokenizer is not None:
            tokenizer.save(tmp)
    return Path(out_dir).absolute()

"""Hugging Face folder -> logos model folder (Orbax params + model config + tokenizer files).

The parameter table (``logos_jax.params``) keeps every tensor in the HF files' axis order, so
converting is a copy: each tensor goes straight from the safetensors files to its place in its
checkpoint file (``convert.orbax_format``; a layer's tensor is one chunk of its stacked parameter),
one in-kernel ``copy_file_range`` per tensor on all cores, as ``cp`` copies files. With
``direct_io`` the page cache is bypassed instead: one band at a time, ``pread`` into a reused aligned
buffer, then an ``O_DIRECT`` write (slower on a machine with free RAM, but converting LOGOS-8B then
neither evicts the page cache nor waits on dirty-page throttling). Only a dtype change (or a grown
vocabulary) goes through numpy. Nothing is upcast (bf16 stays bf16) and no copy of the model is held in memory. JAX is
never imported, so the conversion starts in a fraction of a second. (Converting is optional: every
command that takes a checkpoint also loads an HF folder directly.)
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

from logos_jax.config import ModelConfig, save_model_config
from logos_jax.convert.hf_folder import bits, checked_tensors, hf_config
from logos_jax.convert.orbax_format import ArrayFile, CheckpointWriter, aligned_buffer
from logos_jax.convert.safetensors_io import DTYPE_CODES, ITEMSIZE, TensorInfo, map_tensor
from logos_jax.embedding_resize import check_growth, resize_rows
from logos_jax.errors import LogosError
from logos_jax.model_folder import MODEL_CONFIG, PARAMS, atomic_folder, copy_tokenizer_files
from logos_jax.params import ParamInfo, param_table

# Twice the cores: while one band waits on its (direct) write, another is being copied.
_POOL = ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 1), thread_name_prefix="hf2jax")
# In-kernel copies through the page cache: one per core (more only contend for the page cache).
_COPY_POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="hf2jax-copy")
_BAND_BYTES = 4 << 20  # bytes per written band (about)
_BUFFERS = threading.local()  # one reusable band buffer per worker thread


@dataclass(frozen=True)
class VocabResize:
    """Grow the vocabulary from ``old`` to ``new`` rows; ``reset`` rows (and the new ones) = the mean."""

    old: int
    new: int
    reset: tuple[int, ...]


def _buffer(size: int) -> np.ndarray:
    """This thread's reused page-aligned buffer, ``size`` bytes of it (uint8)."""
    buffer = getattr(_BUFFERS, "bytes", None)
    if buffer is None or buffer.nbytes < size:
        buffer = _BUFFERS.bytes = aligned_buffer(max(size, _BAND_BYTES))
    return buffer[:size]


def _band_buffer(rows: int, cols: int, dtype: np.dtype) -> np.ndarray:
    return _buffer(rows * cols * dtype.itemsize).view(dtype).reshape(rows, cols)


def submit_copies(
    out: ArrayFile, parts: list[tuple[int, TensorInfo, int]], done: Callable[[int], None]
) -> list[Future]:
    """Queue the byte copy of each ``(offset, tensor, fd)`` of ``parts`` (the tensor read from
    ``fd``, its open file) to byte ``offset`` of ``out``. Through the page cache: one task copies
    them all in order, in the kernel (``copy_file_range``), so each file is written front to back as
    ``cp`` writes it (interleaving writes to many files is ~1.7x slower on ext4). With ``O_DIRECT``:
    bands of ``_BAND_BYTES`` on all cores, each ``pread`` into an aligned buffer and written from it."""
    if not out.direct:

        def copy_all() -> None:
            for offset, tensor, fd in parts:
                out.copy_from(fd, tensor.start, tensor.nbytes, offset)
                done(tensor.nbytes)

        return [_COPY_POOL.submit(copy_all)]

    def copy(offset: int, tensor: TensorInfo, fd: int, start: int) -> None:
        buf = _buffer(min(_BAND_BYTES, tensor.nbytes - start))
        view, at = memoryview(buf), tensor.start + start
        while view:
            n = os.preadv(fd, [view], at)
            if n == 0:
                raise LogosError(f"{tensor.file}: truncated while reading tensor {tensor.name!r}")
            view, at = view[n:], at + n
        out.write(buf, offset + start)
        done(buf.nbytes)

    return [
        _POOL.submit(copy, offset, tensor, fd, start)
        for offset, tensor, fd in parts
        for start in range(0, tensor.nbytes, _BAND_BYTES)
    ]


def submit_rows(
    out: ArrayFile, offset: int, source: np.ndarray, done: Callable[[int], None]
) -> list[Future]:
    """Queue the write of ``source`` (cast to ``out``'s dtype) at byte ``offset`` of ``out``;
    ``done(nbytes)`` is called as each part lands. A band of rows per task, on all cores (numpy
    and ``pwrite`` release the GIL)."""
    if source.ndim < 2:
        out.write(source.astype(out.dtype), offset)
        done(source.size * out.dtype.itemsize)
        return []
    source = source.reshape(source.shape[0], -1)
    rows, cols = source.shape
    dtype = out.dtype
    if source.dtype == dtype:
        source = bits(source)
        dtype = source.dtype
    row_bytes = cols * dtype.itemsize
    band = max(1, _BAND_BYTES // row_bytes)

    def copy(r: int) -> None:
        buf = _band_buffer(min(band, rows - r), cols, dtype)
        buf[...] = source[r : r + band]
        out.write(buf, offset + r * row_bytes)
        done(buf.nbytes)

    return [_POOL.submit(copy, r) for r in range(0, rows, band)]


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


def _fill(
    out: ArrayFile,
    info: ParamInfo,
    parts: list[tuple[int, TensorInfo, int]],
    resize: VocabResize | None,
    done: Callable[[int], None],
) -> list[Future]:
    """Queue the writes of ``info``'s HF tensors into ``out``, each ``(offset, tensor, fd)`` of
    ``parts`` at byte ``offset`` (a layer's slice of a stacked parameter): byte copies, except the
    tensors whose dtype changes or whose vocabulary grows."""
    grows = resize is not None and info.dims[0] == "vocab"
    same = lambda tensor: tensor.dtype == DTYPE_CODES[out.dtype_name] and not grows  # noqa: E731
    pending = submit_copies(out, [part for part in parts if same(part[1])], done)
    for offset, tensor, _ in parts:
        if not same(tensor):
            source = map_tensor(tensor)
            if grows:
                source = resize_rows(source, resize.new, resize.reset, resize.old)
            pending += submit_rows(out, offset, source, done)
    return pending


def write_params(
    hf_dir: Path,
    config: ModelConfig,
    path: Path,
    resize: VocabResize | None = None,
    progress: bool = True,
    direct_io: bool = False,
) -> None:
    """Write the parameters of ``hf_dir`` as an Orbax checkpoint at ``path``, in the dtype of
    ``config.param_dtype``, the vocabulary grown by ``resize`` when given; ``direct_io``: bypass the
    page cache (``orbax_format.ArrayFile``)."""
    tensors = checked_tensors(config, hf_dir)
    out_config = config if resize is None else config.replace(vocab_size=resize.new)
    writer = CheckpointWriter(path)
    table = param_table(out_config)
    dtype = config.param_dtype  # a name: no ml_dtypes unless a tensor is cast
    bar = tqdm(
        total=sum(math.prod(i.stacked_shape(config.num_layers)) for i in table.values())
        * ITEMSIZE[DTYPE_CODES[dtype]],
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
    fds: dict[Path, int] = {}
    try:
        for tensor in tensors.values():
            if tensor.file not in fds:
                fds[tensor.file] = os.open(tensor.file, os.O_RDONLY)
        # Largest first: the in-kernel copies (one task per array) then share the cores evenly.
        by_size = sorted(
            table.values(), key=lambda i: -math.prod(i.stacked_shape(config.num_layers))
        )
        for info in by_size:
            shape = info.stacked_shape(config.num_layers)
            outs.append(writer.array(info.path, shape, dtype, info.per_layer, direct_io))
            layers = range(config.num_layers) if info.per_layer else [None]
            chunk = outs[-1].nbytes // outs[-1].chunks
            parts = []
            for layer in layers:
                tensor = tensors[info.hf_tensor(layer)]
                parts.append(((layer or 0) * chunk, tensor, fds[tensor.file]))
            pending += _fill(outs[-1], info, parts, resize, done)
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
        for fd in fds.values():
            os.close(fd)
        bar.close()


def hf_to_jax(
    hf_dir: str | Path,
    out_dir: str | Path,
    *,
    add_tags: bool = False,
    progress: bool = True,
    direct_io: bool = False,
) -> Path:
    """Convert an HF Llama/Qwen3 folder into a logos model folder at ``out_dir`` (atomic).

    ``add_tags`` adds the grammar tags to the tokenizer and mean-initialises their embeddings;
    ``direct_io`` bypasses the page cache (``O_DIRECT``).
    """
    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise LogosError(f"{hf_dir}: no such folder")
    config = hf_config(hf_dir)
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

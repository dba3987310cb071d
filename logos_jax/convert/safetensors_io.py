"""Streaming safetensors reader/writer: one tensor at a time, bf16 via ml_dtypes, precise errors.

``ml_dtypes`` (about 1 s to import: it registers every cast between its types) is imported only when a
bf16 tensor is viewed as numbers; copying bytes (``hf2jax`` without a dtype change) never needs it.

We parse the format ourselves (8-byte header length, JSON header, raw little-endian data) so that a
tensor is read straight into its destination buffer (no framework copy, no bf16 -> fp32 upcast), and
so that a truncated or corrupt file is reported with its name and the tensor concerned.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from logos_jax.errors import LogosError
from logos_jax.files import atomic_open

ITEMSIZE = {"F32": 4, "BF16": 2, "F16": 2}  # the supported safetensors dtypes
HF_DTYPE = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
DTYPE_CODES = {v: k for k, v in HF_DTYPE.items()}


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype of a safetensors code (``BF16``) or a dtype name (``bfloat16``)."""
    name = HF_DTYPE.get(name, name)
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: file, dtype code, shape, byte range in the data section."""

    file: Path
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Parse one file's header; LogosError for a truncated/corrupt file or an unsupported dtype."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise LogosError(
                f"{path}: truncated or corrupt safetensors file (shorter than 8 bytes)"
            )
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > MAX_HEADER or 8 + header_len > size:
            raise LogosError(
                f"{path}: truncated or corrupt safetensors file (header of {header_len} bytes "
                f"does not fit in a {size}-byte file)"
            )
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise LogosError(
                f"{path}: truncated or corrupt safetensors file (bad header: {err})"
            ) from None
    base = 8 + header_len
    if not isinstance(header, dict):
        raise LogosError(f"{path}: corrupt safetensors file (the header is not a JSON object)")
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise LogosError(f"{path}: corrupt safetensors file: tensor {name!r} has no entry")
        dtype = entry.get("dtype")
        if dtype not in ITEMSIZE:
            raise LogosError(
                f"{path}: tensor {name!r} has dtype {dtype}; supported: {', '.join(ITEMSIZE)}"
            )
        offsets, shape = entry.get("data_offsets"), entry.get("shape")
        if not (_ints(offsets) and len(offsets) == 2 and _ints(shape)):
            raise LogosError(
                f"{path}: corrupt safetensors file: tensor {name!r} has data_offsets {offsets!r} "
                f"and shape {shape!r} (expected two integers and a list of integers)"
            )
        start, end = offsets
        shape = tuple(shape)
        if start < 0 or end < start or min(shape, default=0) < 0:
            raise LogosError(
                f"{path}: corrupt safetensors file: tensor {name!r} has data_offsets "
                f"[{start}, {end}] and shape {list(shape)}"
            )
        info = TensorInfo(path, name, dtype, shape, base + start, base + end)
        expected = int(np.prod(shape, dtype=np.int64)) * ITEMSIZE[dtype]
        if info.nbytes != expected:
            raise LogosError(
                f"{path}: corrupt safetensors file: tensor {name!r} has {info.nbytes} bytes, "
                f"expected {expected} for shape {list(shape)} {dtype}"
            )
        if info.end > size:
            raise LogosError(
                f"{path}: truncated safetensors file: tensor {name!r} ends at byte {info.end} "
                f"but the file has {size} bytes"
            )
        tensors[name] = info
    _check_no_overlap(path, tensors)
    return tensors


def _ints(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    )


def _check_no_overlap(path: Path, tensors: dict[str, TensorInfo]) -> None:
    """Every tensor's bytes are its own: sorted by offset, each starts at or after the previous end."""
    ordered = sorted(tensors.values(), key=lambda t: (t.start, t.end))
    for before, after in zip(ordered, ordered[1:]):
        if after.start < before.end:
            raise LogosError(
                f"{path}: corrupt safetensors file: tensors {before.name!r} and {after.name!r} "
                f"overlap (bytes {before.start}-{before.end} and {after.start}-{after.end})"
            )


def checkpoint_files(hf_dir: Path) -> list[Path]:
    """The safetensors files of an HF folder (single file, or the shards named by the index)."""
    hf_dir = Path(hf_dir)
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
            raise LogosError(f"{index}: not a valid safetensors index ({err})") from None
        if not isinstance(weight_map, dict) or not all(
            isinstance(f, str) for f in weight_map.values()
        ):
            raise LogosError(f"{index}: weight_map must map tensor names to file names")
        files = sorted({hf_dir / f for f in weight_map.values()})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise LogosError(f"{index}: names shard files that are missing: {missing}")
        return files
    single = hf_dir / "model.safetensors"
    if single.is_file():
        return [single]
    found = sorted(hf_dir.glob("*.safetensors"))
    if found:
        return found
    raise LogosError(
        f"{hf_dir}: no model.safetensors or model.safetensors.index.json (PyTorch .bin "
        "checkpoints are not supported: re-save with safe_serialization=True)"
    )


def index_tensors(hf_dir: Path) -> dict[str, TensorInfo]:
    """Every tensor of an HF folder, by name, across all shards."""
    tensors: dict[str, TensorInfo] = {}
    for file in checkpoint_files(hf_dir):
        for name, info in read_header(file).items():
            if name in tensors:
                raise LogosError(f"{file}: tensor {name!r} also appears in {tensors[name].file}")
            tensors[name] = info
    return tensors


def map_tensor(info: TensorInfo, raw: bool = False) -> np.ndarray:
    """A read-only view of ``info``'s bytes, memory-mapped (pages come straight from the page cache,
    no read() copy); ``raw``: as unsigned ints of the same size (bits, no ml_dtypes)."""
    if info.file.stat().st_size < info.start + info.nbytes:
        raise LogosError(f"{info.file}: truncated while reading tensor {info.name!r}")
    dtype = np.dtype(f"u{ITEMSIZE[info.dtype]}") if raw else numpy_dtype(info.dtype)
    if info.nbytes == 0:
        return np.empty(info.shape, dtype)
    return np.memmap(info.file, dtype, mode="r", offset=info.start, shape=tuple(info.shape))


def read_tensor(info: TensorInfo) -> np.ndarray:
    return np.array(map_tensor(info))


def write_safetensors(path: Path, tensors: Iterator[tuple[str, np.ndarray]] | list) -> None:
    """Write named arrays as one safetensors file, streaming data tensor by tensor."""
    tensors = list(tensors)
    header: dict[str, dict] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, arr in tensors:
        header[name] = {
            "dtype": DTYPE_CODES[arr.dtype.name],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # align the data section like the reference writer
    with atomic_open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, arr in tensors:
            f.write(memoryview(np.ascontiguousarray(arr).reshape(-1).view(np.uint8)))

"""The training batch: one schema, one padding convention, one way onto the mesh.

A ``Batch`` is a dict of ``[rows, seq_len]`` arrays, made by the corpus pipeline (train and held-out
batches), the synthetic source and the SFT source alike, and read by the train step:

* ``tokens`` int32: token ids (``pad_id`` on padding, 0 unless the caller names one);
* ``segment_ids`` int32: 0 on padding, ``1..`` numbers the documents packed into a row;
* ``positions`` int32: restart at 0 for every document (0 on padding);
* ``modality`` int32: index into ``data.corpus.MODALITIES``, ``MODALITY_PAD`` (-1) on padding;
* ``target_mask`` float32: 1 where the token is a training target (a whole document in pretraining,
  the completion in SFT), 0 on padding.

``on_mesh`` places a host batch as global ``jax.Array``s (JAX is imported only there, so Grain
workers that build batches never load it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np

MODALITY_PAD = -1


class Batch(TypedDict):
    tokens: np.ndarray  # int32 [rows, seq_len]
    segment_ids: np.ndarray  # int32 [rows, seq_len]
    positions: np.ndarray  # int32 [rows, seq_len]
    modality: np.ndarray  # int32 [rows, seq_len]
    target_mask: np.ndarray  # float32 [rows, seq_len]


DTYPES: dict[str, Any] = {
    "tokens": np.int32,
    "segment_ids": np.int32,
    "positions": np.int32,
    "modality": np.int32,
    "target_mask": np.float32,
}
KEYS = tuple(DTYPES)


def empty_batch(rows: int, seq_len: int, *, pad_id: int = 0) -> Batch:
    """All-padding batch arrays, each ``[rows, seq_len]``."""
    shape = (rows, seq_len)
    return Batch(
        tokens=np.full(shape, pad_id, np.int32),
        segment_ids=np.zeros(shape, np.int32),
        positions=np.zeros(shape, np.int32),
        modality=np.full(shape, MODALITY_PAD, np.int32),
        target_mask=np.zeros(shape, np.float32),
    )


def put_document(
    batch: Batch,
    row: int,
    start: int,
    segment: int,
    ids: Sequence[int] | np.ndarray,
    modality: int,
    *,
    targets_from: int = 0,
) -> int:
    """Write document ``ids`` ``[length]`` into ``row`` from ``start`` as segment ``segment``; its
    tokens from ``targets_from`` on (all by default) are targets. Returns where the document ends."""
    end = start + len(ids)
    batch["tokens"][row, start:end] = ids
    batch["segment_ids"][row, start:end] = segment
    batch["positions"][row, start:end] = np.arange(len(ids), dtype=np.int32)
    batch["modality"][row, start:end] = modality
    batch["target_mask"][row, start + targets_from : end] = 1.0
    return end


def abstract_batch(rows: int, seq_len: int, sharding: Any) -> dict[str, Any]:
    """``jax.ShapeDtypeStruct``s of one global batch, for lowering the train step ahead of time."""
    import jax

    return {
        k: jax.ShapeDtypeStruct((rows, seq_len), d, sharding=sharding) for k, d in DTYPES.items()
    }


def on_mesh(
    batch: Mapping[str, np.ndarray], sharding: Any, global_rows: int | None = None
) -> dict[str, Any]:
    """Place a host batch as global ``[global_rows, seq_len]`` arrays with ``sharding``; each process
    fills only its own shards.

    ``batch`` is either the whole global batch, the same on every process (synthetic, SFT and held-out
    batches: ``global_rows`` left out), or this process's rows of it (the corpus pipeline: its
    ``global_rows`` is larger, and ``jax.make_array_from_process_local_data`` assembles the rows).
    """
    import jax

    placed = {}
    for k, v in batch.items():
        shape = (global_rows or v.shape[0], *v.shape[1:])
        if v.shape == shape:
            placed[k] = jax.make_array_from_callback(shape, sharding, lambda idx, v=v: v[idx])
        else:
            placed[k] = jax.make_array_from_process_local_data(sharding, v, shape)
    return placed

"""The Grain input pipeline: ArrayRecord shards -> shuffle -> modality mixture -> packing -> host batches.

Every global batch is a pure function of its step number (and the corpus, seed, weights, ``seq_len``
and ``global_batch_size``), never of the number of hosts or workers:

* **shuffle**: document ``o`` of modality ``m`` (counting over all epochs) is record ``perm_e(o mod N_m)``
  of that modality's train shards, ``perm_e`` a seeded permutation drawn afresh for each epoch ``e``
  (Grain's ``index_shuffle``, so no index table is held; small modalities use a cached numpy one).
* **mixture**: steps are grouped in *chunks* of ``C`` global batches (``R = C * global_batch_size`` rows).
  Each chunk takes a fixed number of documents from every modality, ``n_m ~ w_m * 0.97 * R * seq_len /
  mean_len_m`` (at least one), so ``weights`` are **token** shares (the LOGOS corpus breakdown by
  default), met exactly up to rounding and packing losses.
* **packing**: the chunk's documents are packed first-fit-decreasing into its ``R`` rows of ``seq_len``
  tokens (lengths come from the ``.lengths.npy`` files; no record is read to plan). A document longer
  than ``seq_len`` is cut to ``seq_len`` tokens; a document that fits no row (rare with the 3% slack) is
  skipped for this chunk. Rows are then shuffled and dealt out to the chunk's ``C`` batches.
* **host slice**: process ``p`` of ``P`` reads rows ``[p * G/P, (p + 1) * G/P)`` of each global batch, so it
  only reads its own records. Grain worker processes (``num_workers``) assemble host batches in parallel.

The iterator state is ``{"step": next_global_step, ...}`` plus a fingerprint of the settings above: it is
topology-independent, so **a resume may change the number of hosts, devices or workers** and still
continues with exactly the global batches an uninterrupted run would have produced. Changing
``seq_len``, ``global_batch_size``, ``seed``, ``weights`` or the corpus is refused (the stream would differ).

Batches are ``logos_jax.batch.Batch`` dicts (``[rows, seq_len]`` arrays: ``tokens``, ``segment_ids``,
``positions``, ``modality``, ``target_mask``; that module says what each holds and how padding reads).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from logos_jax.batch import empty_batch, on_mesh, put_document
from logos_jax.child_processes import grain_worker_init
from logos_jax.data.corpus import (
    DEFAULT_WEIGHTS,
    MODALITIES,
    decode_document,
    lengths_path,
    read_manifest,
    split_shards,
    verify_shards,
)
from logos_jax.errors import LogosError

__all__ = ["MODALITIES", "make_eval_batches", "make_train_iterator", "read_manifest"]

FILL = 0.97  # planned tokens per chunk / chunk capacity: the slack that makes packing losses rare
MIN_ROWS_PER_CHUNK = 256
# Modalities with at most this many documents are shuffled with a cached numpy permutation.
SMALL_MODALITY = 1 << 16
STATE_VERSION = 1
PREFETCH = 2  # host batches buffered per worker process (or by the reading thread without workers)


class _ModalityShards:
    """One modality's shards of one split: random access to documents and their lengths."""

    def __init__(self, corpus_dir: Path, shards: list[dict[str, Any]]):
        import grain

        paths = [str(corpus_dir / s["path"]) for s in shards]
        self.lengths = np.concatenate([np.load(lengths_path(Path(p))) for p in paths]).astype(
            np.int64
        )
        self.source = grain.sources.ArrayRecordDataSource(paths)

    def __len__(self) -> int:
        return len(self.lengths)

    def read(self, indices: list[int]) -> list[np.ndarray]:
        return [decode_document(r) for r in self.source.__getitems__(indices)]


def _normalised_weights(
    weights: dict[str, float] | None, present: dict[str, int]
) -> dict[str, float]:
    weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
    unknown = sorted(set(weights) - set(MODALITIES))
    if unknown:
        raise LogosError(f"unknown modalities in weights: {unknown}; known: {list(MODALITIES)}")
    if any(w < 0 for w in weights.values()):
        raise LogosError(f"mixture weights must be >= 0, got {weights}")
    kept = {m: float(weights.get(m, 0.0)) for m in MODALITIES if present.get(m, 0) > 0}
    total = sum(kept.values())
    if total <= 0:
        raise LogosError(
            f"no train documents for any weighted modality (weights {weights}, corpus has {present}); "
            "fix: give a positive weight to a modality the corpus holds"
        )
    return {m: w / total for m, w in kept.items() if w > 0}


class _HostBatches:
    """Global step -> this host's rows of that global batch (runs inside Grain workers)."""

    def __init__(
        self,
        corpus_dir: Path,
        *,
        seq_len: int,
        global_batch_size: int,
        weights: dict[str, float] | None,
        seed: int,
        process_index: int,
        process_count: int,
    ):
        manifest = read_manifest(corpus_dir)
        self.shards = {
            m: _ModalityShards(corpus_dir, split_shards(manifest, "train", m))
            for m in MODALITIES
            if split_shards(manifest, "train", m)
        }
        present = {m: len(s) for m, s in self.shards.items()}
        self.weights = _normalised_weights(weights, present)
        self.seq_len = seq_len
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.host_rows = global_batch_size // process_count
        self.row_offset = process_index * self.host_rows
        self.batches_per_chunk = max(1, math.ceil(MIN_ROWS_PER_CHUNK / global_batch_size))
        self.rows_per_chunk = self.batches_per_chunk * global_batch_size
        budget = FILL * self.rows_per_chunk * seq_len
        self.docs_per_chunk = {}
        for m, w in self.weights.items():
            mean_len = float(np.minimum(self.shards[m].lengths, seq_len).mean())
            self.docs_per_chunk[m] = max(1, round(w * budget / mean_len))
        self._plans: dict[int, list[list[tuple[str, int]]]] = {}
        self._permutation: tuple[tuple[str, int] | None, np.ndarray | None] = (None, None)

    def _record(self, modality: str, ordinal: int) -> int:
        """The shuffled record index of a modality's ``ordinal``-th document (over all epochs)."""
        import grain

        n = len(self.shards[modality])
        epoch, position = divmod(ordinal, n)
        key = f"{self.seed}/{modality}/{epoch}".encode()
        seed = int.from_bytes(hashlib.sha256(key).digest()[:4], "little") >> 1
        if n > SMALL_MODALITY:
            return grain.experimental.index_shuffle(position, n - 1, seed, 4)
        # Grain's index_shuffle costs ~0.2 ms a call on small ranges: permute small modalities at once.
        if self._permutation[0] != (modality, epoch):
            self._permutation = ((modality, epoch), np.random.default_rng(seed).permutation(n))
        return int(self._permutation[1][position])

    def plan(self, chunk: int) -> list[list[tuple[str, int]]]:
        """The chunk's rows, each a list of ``(modality, record)`` documents in row order."""
        if chunk in self._plans:
            return self._plans[chunk]
        docs = [
            (m, self._record(m, chunk * n + j))
            for m, n in self.docs_per_chunk.items()
            for j in range(n)
        ]
        lengths = np.array([min(self.shards[m].lengths[r], self.seq_len) for m, r in docs])
        rng = np.random.default_rng([self.seed, chunk])
        order = rng.permutation(len(docs))
        order = order[np.argsort(-lengths[order], kind="stable")]
        free = np.full(self.rows_per_chunk, self.seq_len, np.int64)
        rows: list[list[tuple[str, int]]] = [[] for _ in range(self.rows_per_chunk)]
        for i in order:
            fits = free >= lengths[i]
            if fits.any():
                row = int(np.argmax(fits))
                free[row] -= lengths[i]
                rows[row].append(docs[i])
        rows = [rows[i] for i in rng.permutation(self.rows_per_chunk)]
        self._plans = {chunk: rows}  # workers walk steps in order: keep only the current chunk
        return rows

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        chunk, batch_in_chunk = divmod(step, self.batches_per_chunk)
        first = batch_in_chunk * self.global_batch_size + self.row_offset
        rows = self.plan(chunk)[first : first + self.host_rows]
        batch = empty_batch(self.host_rows, self.seq_len)
        wanted: dict[str, list[int]] = {}
        for row in rows:
            for m, r in row:
                wanted.setdefault(m, []).append(r)
        read = {m: iter(self.shards[m].read(recs)) for m, recs in wanted.items()}
        for i, row in enumerate(rows):
            start = 0
            for segment, (m, _) in enumerate(row, start=1):
                ids = next(read[m])[: self.seq_len]
                start = put_document(batch, i, start, segment, ids, MODALITIES.index(m))
        batch["step"] = np.int64(step)
        return batch


def _close_all(iterators: list[Any]) -> None:
    while iterators:
        iterators.pop().close()


class TrainIterator(Iterator[dict[str, Any]]):
    """An endless, checkpointable iterator of training batches; see the module docstring."""

    def __init__(
        self,
        batches: _HostBatches,
        fingerprint: dict[str, Any],
        *,
        num_workers: int,
        mesh: Any,
        batch_axes: tuple[str, ...],
    ):
        self._batches = batches
        self._fingerprint = fingerprint
        self._num_workers = num_workers
        self._sharding = None
        if mesh is not None:
            from jax.sharding import NamedSharding, PartitionSpec

            axes = tuple(a for a in batch_axes if a in mesh.axis_names)
            self._sharding = NamedSharding(mesh, PartitionSpec(axes or None, None))
        self._step = 0
        self._live: list[Any] = []
        self._finalizer = None

    def _start(self) -> None:
        import grain

        # One thread and a short buffer: batches are CPU-bound Python, more threads only contend.
        read = grain.ReadOptions(num_threads=1, prefetch_buffer_size=PREFETCH)
        ds = grain.MapDataset.range(self._step, sys.maxsize).map(self._batches)
        ds = ds.to_iter_dataset(read)
        if self._num_workers > 0:
            from absl import flags

            if not flags.FLAGS.is_parsed():  # Grain 0.2.18 workers read an absl flag (grain#1355)
                flags.FLAGS.mark_as_parsed()
            ds = ds.mp_prefetch(
                grain.MultiprocessingOptions(
                    num_workers=self._num_workers, per_worker_buffer_size=PREFETCH
                ),
                # Workers outlive a parent killed by SIGKILL unless they watch for it.
                worker_init_fn=functools.partial(grain_worker_init, os.getpid()),
            )
        # The Grain iterator lives only in this list, so that closing it (on close(), garbage
        # collection or interpreter exit, before module teardown) also frees it.
        self._live = [iter(ds)]
        self._finalizer = weakref.finalize(self, _close_all, self._live)

    def __next__(self) -> dict[str, Any]:
        if not self._live:
            self._start()
        # Plain copies: Grain's shared-memory arrays are then released at once, not at exit.
        batch = {k: np.array(v) for k, v in next(self._live[0]).items()}
        step = int(batch.pop("step"))
        if step != self._step:
            raise RuntimeError(f"pipeline out of order: expected step {self._step}, got {step}")
        self._step = step + 1
        if self._sharding is None:
            return batch
        return on_mesh(batch, self._sharding, self._batches.global_batch_size)

    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable; valid for any number of hosts, devices or workers."""
        return {"version": STATE_VERSION, "step": self._step, **self._fingerprint}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue exactly after the batch at which ``state`` was taken."""
        if state.get("version") != STATE_VERSION:
            raise LogosError(
                f"data iterator state version {state.get('version')} is not {STATE_VERSION}"
            )
        changed = {k: (state.get(k), v) for k, v in self._fingerprint.items() if state.get(k) != v}
        if changed:
            raise LogosError(
                f"the saved data state was made with other settings ({changed}: saved, now); "
                "fix: resume with the same corpus, seq_len, global_batch_size, seed and weights"
            )
        self.close()
        self._step = int(state["step"])

    @property
    def weights(self) -> dict[str, float]:
        """The normalised token shares in use, by modality."""
        return dict(self._batches.weights)

    def close(self) -> None:
        """Stop the Grain worker processes (also done on garbage collection and at exit)."""
        if self._finalizer is not None:
            self._finalizer()
        self._finalizer = None


def make_train_iterator(
    corpus_dir: str | Path,
    *,
    seq_len: int,
    global_batch_size: int,
    weights: dict[str, float] | None = None,
    seed: int = 0,
    num_workers: int = 1,
    mesh: Any = None,
    batch_axes: tuple[str, ...] = ("data", "fsdp"),
    process_index: int | None = None,
    process_count: int | None = None,
) -> TrainIterator:
    """Endless packed training batches from a built corpus's train split.

    Without ``mesh`` each batch is this host's numpy slice ``[global_batch_size / process_count, seq_len]``;
    with ``mesh`` every array is a global ``jax.Array`` ``[global_batch_size, seq_len]`` sharded
    ``P(batch_axes, None)`` (axes missing from the mesh are dropped). ``weights`` are token shares by
    modality (default: the LOGOS corpus proportions), renormalised over the modalities present.
    ``process_index`` / ``process_count`` default to ``jax.process_index()`` / ``jax.process_count()``.
    With a mesh, ``jax.make_array_from_process_local_data`` places each host's rows on that host's
    devices; if the mesh does not order hosts by process index the global rows are permuted (each row
    is still present exactly once).
    """
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if seq_len < 2 or global_batch_size < 1:
        raise LogosError(
            f"seq_len ({seq_len}) must be >= 2 and global_batch_size ({global_batch_size}) >= 1"
        )
    if global_batch_size % process_count:
        raise LogosError(
            f"global_batch_size {global_batch_size} is not divisible by the {process_count} processes; "
            "fix: use a multiple of the process count"
        )
    if not 0 <= process_index < process_count:
        raise LogosError(f"process_index {process_index} is outside [0, {process_count})")
    corpus_dir = Path(corpus_dir)
    verify_shards(corpus_dir, read_manifest(corpus_dir))
    batches = _HostBatches(
        corpus_dir,
        seq_len=seq_len,
        global_batch_size=global_batch_size,
        weights=weights,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
    )
    fingerprint = {
        "corpus": read_manifest(corpus_dir)["fingerprint"],
        "seq_len": seq_len,
        "global_batch_size": global_batch_size,
        "seed": seed,
        "weights": json.loads(json.dumps(batches.weights)),
    }
    return TrainIterator(
        batches, fingerprint, num_workers=num_workers, mesh=mesh, batch_axes=batch_axes
    )


def make_eval_batches(
    corpus_dir: str | Path,
    *,
    seq_len: int,
    batch_size: int,
    modality: str | None = None,
    max_batches: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Finite, deterministic packed batches ``[batch_size, seq_len]`` of the held-out split.

    Documents are packed in manifest order (next-fit: a row is closed when the next document does not
    fit); documents longer than ``seq_len`` are cut. The last batch is padded with empty rows. With
    ``modality`` only that modality's held-out documents are used.
    """
    corpus_dir = Path(corpus_dir)
    manifest = read_manifest(corpus_dir)
    verify_shards(corpus_dir, manifest)
    if modality is not None and modality not in MODALITIES:
        raise LogosError(f"unknown modality {modality!r}; known: {list(MODALITIES)}")
    wanted = MODALITIES if modality is None else (modality,)

    def documents():
        for m in wanted:
            shards = split_shards(manifest, "eval", m)
            if shards:
                source = _ModalityShards(corpus_dir, shards)
                for start in range(0, len(source), 256):
                    for ids in source.read(list(range(start, min(start + 256, len(source))))):
                        yield MODALITIES.index(m), ids[:seq_len]

    batch, row, start, segment, produced = empty_batch(batch_size, seq_len), 0, 0, 0, 0
    for m, ids in documents():
        if start + len(ids) > seq_len:
            row, start, segment = row + 1, 0, 0
            if row == batch_size:
                yield batch
                produced += 1
                if max_batches is not None and produced >= max_batches:
                    return
                batch, row = empty_batch(batch_size, seq_len), 0
        segment += 1
        start = put_document(batch, row, start, segment, ids, m)
    if row or start:
        yield batch

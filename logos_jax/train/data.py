"""Batch sources for training: the Grain corpus pipeline, synthetic random tokens, and SFT task pairs.

Every source yields ``logos_jax.batch.Batch`` dicts of ``[global_batch, seq_len]`` global ``jax.Array``s
(placed by ``batch.on_mesh``) sharded over the batch axes, and has a
JSON-serialisable ``get_state()`` / ``set_state()`` so a checkpoint resumes the exact batch sequence.
Host-built sources (synthetic, SFT) compute the whole global batch on every process (it is small) and
each process places only its own shards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import jax
import numpy as np

from logos_jax.batch import empty_batch, on_mesh, put_document
from logos_jax.errors import LogosError
from logos_jax.jsonl_io import NOT_AN_OBJECT, json_objects
from logos_jax.validate import row_value

# SFT field pairs: (prompt key, completion key), tried in order. the released task formats + generic.
SFT_FIELDS = (
    ("prompt", "completion"),
    ("test_input", "groundtruth"),  # retrosynthesis
    ("protein_pocket_ligand", "groundtruth"),  # pocket ligand design
    ("text", "groundtruth"),  # binding-site search
)


class BatchSource(Protocol):
    def __next__(self) -> dict[str, jax.Array]: ...
    def get_state(self) -> dict[str, Any]: ...
    def set_state(self, state: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class SyntheticSource:
    """Uniform random tokens, one document per row: batch ``i`` depends only on (seed, i)."""

    def __init__(self, vocab_size: int, batch_size: int, seq_len: int, seed: int, sharding):
        self.vocab_size, self.batch_size, self.seq_len = vocab_size, batch_size, seq_len
        self.seed, self.sharding, self.index = seed, sharding, 0

    def __next__(self) -> dict[str, jax.Array]:
        rng = np.random.default_rng([self.seed, self.index])
        self.index += 1
        tokens = rng.integers(0, self.vocab_size, (self.batch_size, self.seq_len), dtype=np.int32)
        batch = empty_batch(self.batch_size, self.seq_len)
        for row, ids in enumerate(tokens):  # one whole-row document each, modality 0
            put_document(batch, row, 0, 1, ids, 0)
        return on_mesh(batch, self.sharding)

    def get_state(self) -> dict[str, Any]:
        return {"index": self.index}

    def set_state(self, state: dict[str, Any]) -> None:
        self.index = int(state["index"])

    def close(self) -> None:
        pass


def read_sft_pairs(path: Path) -> list[tuple[str, str]]:
    """(prompt, completion) strings from a JSONL file with one of the ``SFT_FIELDS`` field pairs.

    Both fields must be non-empty strings (``null`` or a number is an error naming the line, never
    turned into the text "None"); a line that is not UTF-8 text or not JSON is an error too."""
    return [pair for _, pair in _numbered_sft_pairs(path)]


def _numbered_sft_pairs(path: Path) -> list[tuple[int, tuple[str, str]]]:
    pairs = []
    if not Path(path).is_file():
        raise LogosError(f"SFT data {path}: file not found")
    pairs_text = ", ".join(f"{p}+{c}" for p, c in SFT_FIELDS)
    for number, row, problem in json_objects(path):
        where = f"{path}:{number}"
        if problem == NOT_AN_OBJECT:
            raise LogosError(
                f"{where}: expected a JSON object with one of the SFT field pairs ({pairs_text})"
            )
        if problem:
            raise LogosError(f"{where}: {problem}")
        for prompt_key, completion_key in SFT_FIELDS:
            if prompt_key in row and completion_key in row:
                prompt = row_value(row, prompt_key, str, where)
                completion = row_value(row, completion_key, str, where)
                if not prompt or not completion:
                    raise LogosError(
                        f"{where}: {prompt_key} and {completion_key} must not be empty"
                    )
                pairs.append((number, (prompt, completion)))
                break
        else:
            raise LogosError(f"{where}: row has none of the SFT field pairs ({pairs_text})")
    if not pairs:
        raise LogosError(f"SFT data {path}: no rows")
    return pairs


def encode_sft_pair(
    tokenizer: Any, prompt: str, completion: str, seq_len: int
) -> dict[str, np.ndarray]:
    """One padded row ``[seq_len]``: BOS prompt completion EOS; target_mask is 1 on completion + EOS."""
    p = list(tokenizer.encode(prompt, add_bos=True))
    c = list(tokenizer.encode(completion, add_bos=False)) + list(tokenizer.eos_ids[:1])
    batch = empty_batch(1, seq_len, pad_id=tokenizer.pad_id or 0)
    put_document(batch, 0, 0, 1, (p + c)[:seq_len], 0, targets_from=len(p))
    return {k: v[0] for k, v in batch.items()}


class SFTSource:
    """Prompt -> completion rows, shuffled per epoch (seeded), one example per row, padded."""

    def __init__(self, rows: list[dict[str, np.ndarray]], batch_size: int, seed: int, sharding):
        self.rows, self.batch_size, self.seed, self.sharding = rows, batch_size, seed, sharding
        self.position = 0  # examples consumed so far, across epochs

    def _example(self, k: int) -> dict[str, np.ndarray]:
        epoch, i = divmod(k, len(self.rows))
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))
        return self.rows[order[i]]

    def __next__(self) -> dict[str, jax.Array]:
        examples = [self._example(self.position + j) for j in range(self.batch_size)]
        self.position += self.batch_size
        batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
        return on_mesh(batch, self.sharding)

    def get_state(self) -> dict[str, Any]:
        return {"position": self.position}

    def set_state(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])

    def close(self) -> None:
        pass


def make_sft_source(
    path: Path, tokenizer: Any, batch_size: int, seq_len: int, seed: int, sharding
) -> SFTSource:
    rows = []
    for number, (prompt, completion) in _numbered_sft_pairs(path):
        row = encode_sft_pair(tokenizer, prompt, completion, seq_len)
        if not row["target_mask"].any():
            raise LogosError(
                f"{path}:{number}: the prompt fills all {seq_len} positions (seq_len), so no "
                "completion token would be trained; fix: raise seq_len or shorten the prompt"
            )
        rows.append(row)
    return SFTSource(rows, batch_size, seed, sharding)


class CorpusSource:
    """The Grain pipeline over a built corpus (``logos_jax.data.pipeline``); this process reads only its
    slice of each global batch and the slices are assembled into global arrays."""

    def __init__(
        self,
        corpus_dir: Path,
        *,
        batch_size: int,
        seq_len: int,
        weights,
        seed: int,
        workers: int,
        sharding,
    ):
        from logos_jax.data.pipeline import make_train_iterator

        self.sharding, self.batch_size = sharding, batch_size
        self.iterator = make_train_iterator(
            corpus_dir,
            seq_len=seq_len,
            global_batch_size=batch_size,
            weights=weights,
            seed=seed,
            num_workers=workers,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )

    def __next__(self) -> dict[str, jax.Array]:
        return on_mesh(next(self.iterator), self.sharding, self.batch_size)

    def get_state(self) -> dict[str, Any]:
        return self.iterator.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.iterator.set_state(state)

    def close(self) -> None:
        self.iterator.close()


def eval_batches(
    corpus_dir: Path, batch_size: int, seq_len: int, max_batches: int, sharding
) -> list:
    """Held-out batches (global arrays) from the corpus ``eval`` split; empty if it has none."""
    from logos_jax.data.pipeline import make_eval_batches

    batches = make_eval_batches(
        corpus_dir, seq_len=seq_len, batch_size=batch_size, max_batches=max_batches
    )
    return [on_mesh(b, sharding) for b in batches]

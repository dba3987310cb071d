"""Embedding resize for added vocabulary (grammar tags): the start of continued pretraining.

Shared by conversion (``hf2jax --add-tags``) and training (``init_from`` with a larger data
tokenizer), so neither imports the other.

New rows (and LM-head columns when untied) are the mean of the original rows, so a new tag starts as
an "average token" rather than noise. Rows inside an existing padded matrix (Qwen3 has 151,936 rows
for 151,669 ids) that become real tokens are reset the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from logos_jax.config import ModelConfig
from logos_jax.errors import LogosError
from logos_jax.params import get_path, vocab_paths


def resize_rows(table: Any, new_rows: int, reset: Sequence[int], old_rows: int) -> Any:
    """``table [rows, d]`` -> ``[new_rows, d]`` with appended and ``reset`` rows = mean of the old."""
    if isinstance(table, np.ndarray):
        xp = np
    else:
        import jax.numpy as xp  # only for device arrays: hf2jax resizes numpy without JAX
    keep = [i for i in range(min(old_rows, table.shape[0])) if i not in set(reset)]
    mean = xp.mean(table[np.asarray(keep)].astype(np.float32), axis=0).astype(table.dtype)
    if new_rows > table.shape[0]:
        pad = xp.broadcast_to(mean, (new_rows - table.shape[0], table.shape[1]))
        table = xp.concatenate([table, pad], axis=0)
    if reset:
        idx = np.asarray(sorted(reset))
        if xp is np:
            table = np.array(table)
            table[idx] = mean
        else:
            table = table.at[idx].set(mean)
    return table


def check_growth(config: ModelConfig, new_vocab_size: int) -> None:
    if new_vocab_size < config.vocab_size:
        raise LogosError(
            f"cannot shrink the vocabulary from {config.vocab_size} to {new_vocab_size} rows"
        )


def resize_embeddings(
    params: dict, config: ModelConfig, new_vocab_size: int, new_token_ids: Sequence[int] = ()
) -> tuple[dict, ModelConfig]:
    """Grow the vocabulary to ``new_vocab_size`` rows and mean-initialise ``new_token_ids``.

    ``new_token_ids`` are ids of tokens just added to the tokenizer; ids at or beyond the current
    vocab are initialised anyway. Shrinking is refused.
    """
    check_growth(config, new_vocab_size)
    reset = [i for i in new_token_ids if i < config.vocab_size]
    out = dict(params)
    for path in vocab_paths(config):  # the embedding, and the LM head when untied: [vocab, hidden]
        out[path[0]] = {
            **params[path[0]],
            path[1]: resize_rows(get_path(params, path), new_vocab_size, reset, config.vocab_size),
        }
    return out, config.replace(vocab_size=new_vocab_size)

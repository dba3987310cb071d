"""The one training-batch schema (``logos_jax.batch``): every source makes the same arrays, padded alike."""

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from logos_jax.batch import DTYPES, KEYS, MODALITY_PAD, Batch, empty_batch, on_mesh, put_document
from logos_jax.train.data import SyntheticSource, encode_sft_pair


def check_schema(batch, rows, seq_len):
    assert tuple(batch) == KEYS == tuple(Batch.__annotations__)
    for k, v in batch.items():
        assert v.shape == (rows, seq_len) and v.dtype == DTYPES[k], k


def test_padding_reads_the_same_everywhere():
    batch = empty_batch(2, 8, pad_id=3)
    check_schema(batch, 2, 8)
    end = put_document(batch, 0, 0, 1, [5, 6, 7], 2)
    end = put_document(batch, 0, end, 2, [8, 9], 4, targets_from=1)
    assert end == 5
    assert batch["tokens"][0].tolist() == [5, 6, 7, 8, 9, 3, 3, 3]
    assert batch["segment_ids"][0].tolist() == [1, 1, 1, 2, 2, 0, 0, 0]
    assert batch["positions"][0].tolist() == [0, 1, 2, 0, 1, 0, 0, 0]
    assert batch["modality"][0].tolist() == [2, 2, 2, 4, 4, *[MODALITY_PAD] * 3]
    assert batch["target_mask"][0].tolist() == [1, 1, 1, 0, 1, 0, 0, 0]
    assert (batch["modality"][1] == MODALITY_PAD).all() and not batch["segment_ids"][1].any()


class _Tokenizer:
    pad_id, eos_ids = 0, (2,)

    def encode(self, text, add_bos):
        return [1] * add_bos + [10 + len(w) for w in text.split()]


def test_sft_rows_and_synthetic_batches_share_the_schema():
    row = encode_sft_pair(_Tokenizer(), "a bb", "ccc", seq_len=8)
    check_schema({k: v[None] for k, v in row.items()}, 1, 8)
    assert row["tokens"].tolist() == [1, 11, 12, 13, 2, 0, 0, 0]
    assert row["target_mask"].tolist() == [0, 0, 0, 1, 1, 0, 0, 0]
    assert row["modality"].tolist() == [0] * 5 + [MODALITY_PAD] * 3
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    sharding = NamedSharding(mesh, PartitionSpec("data", None))
    batch = next(SyntheticSource(100, 8, 4, seed=0, sharding=sharding))
    check_schema({k: np.asarray(v) for k, v in batch.items()}, 8, 4)
    assert all(v.sharding == sharding for v in batch.values())


def test_on_mesh_places_a_whole_batch():
    mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2)
    sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp"), None))
    host = empty_batch(8, 4)
    put_document(host, 5, 0, 1, [1, 2, 3, 4], 1)
    placed = on_mesh(host, sharding)
    assert placed.keys() == host.keys()
    for k, v in placed.items():
        assert v.sharding == sharding and len(v.addressable_shards) == 8
        np.testing.assert_array_equal(np.asarray(v), host[k])

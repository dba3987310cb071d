"""The Grain pipeline: packing without leaks, mixture proportions, exact resume, host slicing, mesh."""

import json

import jax
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec

from logos_jax.data.builder import build_corpus, load_build_config
from logos_jax.data.pipeline import (
    MODALITIES,
    make_eval_batches,
    make_train_iterator,
    read_manifest,
)
from logos_jax.errors import LogosError
from logos_jax.tokenizer import LogosTokenizer

SEQ, BATCH = 128, 8


@pytest.fixture(scope="module")
def corpus(fixtures, tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline") / "small"
    build_corpus(load_build_config(fixtures / "data" / "small.yaml"), out, workers=1)
    return out


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(np.asarray(x[k]), np.asarray(y[k]), err_msg=k)


def test_packing_keeps_documents_apart(corpus):
    tokenizer = LogosTokenizer.load(corpus / "tokenizer")
    it = make_train_iterator(
        corpus,
        seq_len=SEQ,
        global_batch_size=BATCH,
        num_workers=0,
        process_count=1,
        process_index=0,
    )
    batches = _take(it, 4)
    it.close()
    for b in batches:
        assert {k: (v.shape, v.dtype) for k, v in b.items()} == {
            "tokens": ((BATCH, SEQ), np.int32),
            "segment_ids": ((BATCH, SEQ), np.int32),
            "positions": ((BATCH, SEQ), np.int32),
            "modality": ((BATCH, SEQ), np.int32),
            "target_mask": ((BATCH, SEQ), np.float32),
        }
        seg, pos = b["segment_ids"], b["positions"]
        # Ground truth for "which document is this token in": a new one starts wherever positions restart.
        doc = np.cumsum(pos == 0, axis=1) * (seg > 0)
        mask = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] > 0)
        mask &= np.tril(np.ones((SEQ, SEQ), bool))
        same_doc = doc[:, :, None] == doc[:, None, :]
        assert not (mask & ~same_doc).any(), "attention would cross a document boundary"
        assert (
            mask == (same_doc & (seg[:, :, None] > 0) & np.tril(np.ones((SEQ, SEQ), bool)))
        ).all()
        # Every segment starts at position 0 with BOS, counts up by one, and pads are fully masked.
        for r in range(BATCH):
            for s in np.unique(seg[r][seg[r] > 0]):
                idx = np.flatnonzero(seg[r] == s)
                assert (np.diff(idx) == 1).all() and (pos[r, idx] == np.arange(len(idx))).all()
                assert b["tokens"][r, idx[0]] == tokenizer.bos_id
                assert len(set(b["modality"][r, idx])) == 1 and b["modality"][r, idx[0]] >= 0
        pad = seg == 0
        assert (b["target_mask"][pad] == 0).all() and (b["target_mask"][~pad] == 1).all()
        assert (b["modality"][pad] == -1).all()
        assert (~pad).mean() > 0.8  # packed, not one document per row


def test_mixture_matches_the_token_weights(corpus):
    weights = {"protein": 0.5, "molecule": 0.2, "reaction": 0.2, "antibody": 0.1}
    it = make_train_iterator(
        corpus,
        seq_len=SEQ,
        global_batch_size=BATCH,
        weights=weights,
        num_workers=0,
        process_count=1,
        process_index=0,
    )
    tokens = np.zeros(len(MODALITIES))
    for b in _take(it, 64):  # two chunks
        tokens += np.bincount(b["modality"][b["modality"] >= 0], minlength=len(MODALITIES))
    it.close()
    share = dict(zip(MODALITIES, tokens / tokens.sum()))
    for m in MODALITIES:
        assert share[m] == pytest.approx(weights.get(m, 0.0), abs=0.03), (m, share)


def test_default_weights_renormalise_over_present_modalities(corpus):
    it = make_train_iterator(
        corpus,
        seq_len=SEQ,
        global_batch_size=BATCH,
        num_workers=0,
        process_count=1,
        process_index=0,
    )
    manifest = read_manifest(corpus)
    present = {m for m, s in manifest["modalities"].items() if s["train"]["documents"]}
    assert set(it.weights) == present
    assert sum(it.weights.values()) == pytest.approx(1.0)
    assert it.weights["protein"] / it.weights["molecule"] == pytest.approx(64.4 / 4.7)
    with pytest.raises(LogosError, match="unknown modalities"):
        make_train_iterator(
            corpus,
            seq_len=SEQ,
            global_batch_size=BATCH,
            weights={"dna": 1.0},
            process_count=1,
            process_index=0,
        )


def test_resume_continues_exactly_with_real_workers(corpus):
    settings = dict(seq_len=SEQ, global_batch_size=BATCH, seed=3)
    it = make_train_iterator(corpus, num_workers=2, process_index=0, process_count=1, **settings)
    _take(it, 5)
    state = json.loads(json.dumps(it.get_state()))
    expected = _take(it, 6)
    it.close()

    resumed = make_train_iterator(
        corpus, num_workers=1, process_index=0, process_count=1, **settings
    )
    resumed.set_state(state)
    _assert_same(_take(resumed, 6), expected)
    resumed.close()

    # The state is topology-independent: two hosts (and no workers) resumed from it give the same batches.
    halves = []
    for p in range(2):
        host = make_train_iterator(
            corpus, num_workers=0, process_index=p, process_count=2, **settings
        )
        host.set_state(state)
        halves.append(_take(host, 6))
        host.close()
    joined = [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(*halves)]
    _assert_same(joined, expected)

    other = make_train_iterator(
        corpus,
        num_workers=0,
        process_index=0,
        process_count=1,
        seq_len=SEQ * 2,
        global_batch_size=BATCH,
    )
    with pytest.raises(LogosError, match="other settings"):
        other.set_state(state)


def test_two_processes_get_disjoint_rows_that_complete_the_global_batch(corpus):
    whole = make_train_iterator(
        corpus,
        seq_len=SEQ,
        global_batch_size=BATCH,
        num_workers=0,
        process_index=0,
        process_count=1,
    )
    hosts = [
        make_train_iterator(
            corpus,
            seq_len=SEQ,
            global_batch_size=BATCH,
            num_workers=0,
            process_index=p,
            process_count=2,
        )
        for p in range(2)
    ]
    for _ in range(3):
        g = next(whole)
        a, b = (next(h) for h in hosts)
        assert a["tokens"].shape == (BATCH // 2, SEQ)
        np.testing.assert_array_equal(np.concatenate([a["tokens"], b["tokens"]]), g["tokens"])
        rows_a = {r.tobytes() for r in a["tokens"]}
        rows_b = {r.tobytes() for r in b["tokens"]}
        assert not rows_a & rows_b
    for h in (whole, *hosts):
        h.close()
    with pytest.raises(LogosError, match="not divisible"):
        make_train_iterator(
            corpus, seq_len=SEQ, global_batch_size=3, process_index=0, process_count=2
        )


def test_mesh_gives_global_arrays_with_the_batch_sharding(corpus):
    mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2)
    it = make_train_iterator(corpus, seq_len=SEQ, global_batch_size=BATCH, num_workers=0, mesh=mesh)
    plain = make_train_iterator(corpus, seq_len=SEQ, global_batch_size=BATCH, num_workers=0)
    batch, reference = next(it), next(plain)
    for k, v in batch.items():
        assert isinstance(v, jax.Array) and v.shape == (BATCH, SEQ)
        assert v.sharding.spec == PartitionSpec(("data", "fsdp"), None)
        assert len(v.addressable_shards) == 8
        np.testing.assert_array_equal(np.asarray(v), reference[k])
    it.close()
    plain.close()


def test_eval_batches_are_finite_deterministic_and_filtered(corpus):
    manifest = read_manifest(corpus)
    first = list(make_eval_batches(corpus, seq_len=SEQ, batch_size=4))
    _assert_same(first, list(make_eval_batches(corpus, seq_len=SEQ, batch_size=4)))
    starts = sum(int(((b["positions"] == 0) & (b["segment_ids"] > 0)).sum()) for b in first)
    assert starts == sum(s["eval"]["documents"] for s in manifest["modalities"].values())
    molecule = list(make_eval_batches(corpus, seq_len=SEQ, batch_size=4, modality="molecule"))
    values = np.unique(np.concatenate([b["modality"].ravel() for b in molecule]))
    assert set(values) <= {-1, MODALITIES.index("molecule")}
    assert len(list(make_eval_batches(corpus, seq_len=SEQ, batch_size=4, max_batches=2))) == 2

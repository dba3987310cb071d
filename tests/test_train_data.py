"""Training on real data: a built corpus (Grain pipeline, eval, per-modality metrics), continued
pretraining from a converted checkpoint with embedding resize, and SFT on task pairs."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from test_train import TINY, read_metrics, tiny_config

from logos_jax.checkpoint import load_model, save_model
from logos_jax.config import load_model_config
from logos_jax.data.builder import build_corpus, load_build_config
from logos_jax.model import init_params
from logos_jax.sharding import MeshConfig, make_mesh
from logos_jax.tokenizer import LogosTokenizer
from logos_jax.train import run_training
from logos_jax.train.data import encode_sft_pair, read_sft_pairs
from logos_jax.train.init import load_initial


@pytest.fixture(scope="module")
def corpus(fixtures, tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "small"
    build_corpus(load_build_config(fixtures / "data" / "small.yaml"), out, workers=1)
    return out


@pytest.fixture(scope="module")
def small_model(corpus, tmp_path_factory):
    """A converted-style model folder with vocab 64 (< the corpus tokenizer's 119 ids)."""
    cfg = load_model_config("tiny").replace(**TINY)
    out = tmp_path_factory.mktemp("model") / "tiny64"
    save_model(
        out, cfg, init_params(cfg, jax.random.PRNGKey(1)), tokenizer_dir=corpus / "tokenizer"
    )
    return out


def test_corpus_run_logs_modalities_and_eval(corpus, tmp_path):
    run = tmp_path / "run"
    summary = run_training(
        tiny_config(
            run,
            data=str(corpus),
            steps=2,
            seq_len=64,
            eval_every=2,
            eval_batches=2,
            tensorboard=True,
        )
    )
    records = read_metrics(run)
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval/loss" in r]
    assert [r["step"] for r in train] == [1, 2] and [r["step"] for r in evals] == [2]
    assert any(k.startswith("loss/") for k in train[0])
    assert any(k.startswith("eval/ppl/") for k in evals[0])
    assert summary.eval["eval/ppl"] == pytest.approx(np.exp(summary.eval["eval/loss"]))
    cfg, _ = load_model(run)
    assert cfg.vocab_size == LogosTokenizer.load(corpus / "tokenizer").vocab_size
    assert (run / "tokenizer.json").is_file() and list((run / "tensorboard").iterdir())


def test_init_from_resizes_embeddings_with_the_mean(small_model):
    mesh = make_mesh(MeshConfig(1, -1, 1))
    _, before = load_model(small_model)
    cfg, params = load_initial(str(small_model), {"compute_dtype": "float32"}, 119, mesh)
    table = np.asarray(params["embed_tokens"]["embedding"])
    old = np.asarray(before["embed_tokens"]["embedding"])
    assert cfg.vocab_size == 119 and table.shape == (119, TINY["hidden_size"])
    np.testing.assert_array_equal(table[:64], old)
    np.testing.assert_allclose(
        table[64:], np.broadcast_to(old.mean(0), (55, old.shape[1])), atol=1e-8
    )
    with pytest.raises(Exception, match="fixed by the checkpoint"):
        load_initial(str(small_model), {"num_layers": 3}, 119, mesh)


def test_sft_pairs_mask_the_prompt(corpus, small_model, tmp_path):
    tok = LogosTokenizer.load(corpus / "tokenizer")
    data = tmp_path / "retro.jsonl"
    rows = [
        {
            "test_input": "<MoleculeS>CCO<MoleculeE><ReverseReact>",
            "groundtruth": "<MoleculeS>CC=O<MoleculeE>",
        },
        {"prompt": "<MoleculeS>c1ccccc1", "completion": "<MoleculeE>"},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = read_sft_pairs(data)
    assert pairs[0] == (rows[0]["test_input"], rows[0]["groundtruth"])
    row = encode_sft_pair(tok, *pairs[0], seq_len=32)
    n_prompt = len(tok.encode(pairs[0][0]))
    n_total = n_prompt + len(tok.encode(pairs[0][1], add_bos=False)) + 1
    assert row["target_mask"][:n_prompt].sum() == 0 and row["target_mask"][n_prompt:n_total].all()
    assert row["tokens"][n_total - 1] == tok.eos_ids[0] and row["segment_ids"][n_total:].sum() == 0
    run = tmp_path / "sft"
    summary = run_training(
        tiny_config(
            run,
            mode="sft",
            data=str(data),
            init_from=str(small_model),
            model_overrides={},
            steps=3,
            batch_size=8,
            seq_len=32,
        )
    )
    assert summary.final_step == 3 and summary.losses[3] < summary.losses[1]
    cfg, _ = load_model(run)
    assert cfg.vocab_size == tok.vocab_size  # grown from 64 for the tokenizer's ids

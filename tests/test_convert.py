"""Conversion: HF -> JAX -> HF bit identity, sharded/bf16/fp16 inputs, precise errors, resize, CLI."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from logos_jax.cli import main
from logos_jax.config import ModelConfig, load_model_config
from logos_jax.convert.hf2jax import hf_to_jax
from logos_jax.convert.jax2hf import jax_to_hf
from logos_jax.convert.safetensors_io import index_tensors, read_tensor, write_safetensors
from logos_jax.embedding_resize import resize_embeddings
from logos_jax.errors import LogosError
from tests.hf_models import make_hf_model


def all_tensors(folder):
    return {name: read_tensor(info) for name, info in index_tensors(folder).items()}


@pytest.mark.parametrize(
    ("kind", "dtype"), [("llama", "bfloat16"), ("qwen3", "float16"), ("qwen3", "float32")]
)
def test_round_trip_bit_identical_sharded(kind, dtype, tmp_path):
    make_hf_model(kind, tmp_path / "hf", dtype=dtype, max_shard_size="40KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    hf_to_jax(tmp_path / "hf", tmp_path / "jax", progress=False)
    jax_to_hf(tmp_path / "jax", tmp_path / "back", max_shard_bytes=50_000, progress=False)
    src, back = all_tensors(tmp_path / "hf"), all_tensors(tmp_path / "back")
    assert sorted(src) == sorted(back)
    for name, arr in src.items():
        assert arr.dtype == back[name].dtype, name
        assert arr.tobytes() == back[name].tobytes(), name
    assert (tmp_path / "back" / "model.safetensors.index.json").is_file()
    assert json.loads((tmp_path / "back" / "config.json").read_text())["dtype"] == dtype


def _rewrite(path, drop=(), add=()):
    tensors = {n: read_tensor(i) for n, i in index_tensors(path.parent).items()}
    for name in drop:
        tensors.pop(name)
    tensors.update(dict(add))
    write_safetensors(path, list(tensors.items()))


@pytest.fixture
def hf_dir(tmp_path):
    make_hf_model("qwen3", tmp_path / "hf")
    return tmp_path / "hf"


def _assert_fails(hf_dir, out, *fragments):
    with pytest.raises(LogosError) as err:
        hf_to_jax(hf_dir, out, progress=False)
    for fragment in fragments:
        assert fragment in str(err.value)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp")]


def test_missing_tensor(hf_dir, tmp_path):
    _rewrite(hf_dir / "model.safetensors", drop=["model.layers.1.mlp.up_proj.weight"])
    _assert_fails(hf_dir, tmp_path / "out", "missing tensor", "model.layers.1.mlp.up_proj.weight")


def test_extra_tensor(hf_dir, tmp_path):
    extra = ("model.layers.0.self_attn.extra.weight", np.zeros((2, 2), np.float32))
    _rewrite(hf_dir / "model.safetensors", add=[extra])
    _assert_fails(hf_dir, tmp_path / "out", "model.safetensors", "unexpected tensor", extra[0])


def test_shape_mismatch(hf_dir, tmp_path):
    config = json.loads((hf_dir / "config.json").read_text())
    config["intermediate_size"] = 96
    (hf_dir / "config.json").write_text(json.dumps(config))
    _assert_fails(
        hf_dir, tmp_path / "out", "model.safetensors", "gate_proj.weight", "[128, 64]", "[96, 64]"
    )


def test_truncated_file(hf_dir, tmp_path):
    path = hf_dir / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])
    _assert_fails(hf_dir, tmp_path / "out", "model.safetensors", "truncated")


def test_corrupt_header(hf_dir, tmp_path):
    path = hf_dir / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:12] = b"\xff\xfe{]"
    path.write_bytes(bytes(data))
    _assert_fails(hf_dir, tmp_path / "out", "model.safetensors", "corrupt")


def test_unsupported_dtype(hf_dir, tmp_path):
    header = {"model.norm.weight": {"dtype": "I8", "shape": [64], "data_offsets": [0, 64]}}
    blob = json.dumps(header).encode()
    (hf_dir / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + bytes(64))
    _assert_fails(hf_dir, tmp_path / "out", "model.safetensors", "model.norm.weight", "I8")


def _edit_config(hf_dir, **changes):
    """Rewrite config.json with ``changes`` (a value of None deletes the key)."""
    config = json.loads((hf_dir / "config.json").read_text())
    config.update(changes)
    config = {k: v for k, v in config.items() if v is not None}
    (hf_dir / "config.json").write_text(json.dumps(config))


def test_llama_without_tie_key_is_untied(tmp_path):
    """transformers' Llama (and Qwen3) default is untied: a config.json without the key keeps its
    lm_head, and the round trip is bit-identical."""
    model = make_hf_model("llama", tmp_path / "hf")
    tensors = all_tensors(tmp_path / "hf")
    head = model.get_input_embeddings().weight.detach().numpy()[::-1].copy()
    _rewrite(tmp_path / "hf" / "model.safetensors", add=[("lm_head.weight", head)])
    _edit_config(tmp_path / "hf", tie_word_embeddings=None)
    hf_to_jax(tmp_path / "hf", tmp_path / "jax", progress=False)
    assert not load_model_config(tmp_path / "jax").tie_embeddings
    jax_to_hf(tmp_path / "jax", tmp_path / "back", progress=False)
    back = all_tensors(tmp_path / "back")
    assert back["lm_head.weight"].tobytes() == head.tobytes()
    assert sorted(back) == sorted([*tensors, "lm_head.weight"])


def test_tied_config_with_a_different_lm_head_is_an_error(tmp_path):
    model = make_hf_model("llama", tmp_path / "hf")  # tie_word_embeddings: true
    embed = model.get_input_embeddings().weight.detach().numpy()
    path = tmp_path / "hf" / "model.safetensors"
    _rewrite(path, add=[("lm_head.weight", embed.copy())])
    hf_to_jax(tmp_path / "hf", tmp_path / "same", progress=False)  # a saved copy is fine
    _rewrite(path, add=[("lm_head.weight", embed * 2)])
    _assert_fails(
        tmp_path / "hf", tmp_path / "out", "'lm_head.weight' differs", "tie_word_embeddings"
    )


def test_tie_key_must_be_a_boolean(tmp_path):
    make_hf_model("llama", tmp_path / "hf")
    _edit_config(tmp_path / "hf", tie_word_embeddings="false")
    _assert_fails(tmp_path / "hf", tmp_path / "out", "tie_word_embeddings", "'false'")


def test_unsupported_architecture():
    mistral = {"architectures": ["MistralForCausalLM"], "sliding_window": 4096}
    with pytest.raises(LogosError, match="MistralForCausalLM.*supported: LlamaForCausalLM"):
        ModelConfig.from_hf(mistral)
    qwen_moe = {
        "architectures": ["Qwen3ForCausalLM"],
        "num_experts": 8,
        "num_attention_heads": 4,
    }
    with pytest.raises(LogosError, match="mixture of experts"):
        ModelConfig.from_hf(qwen_moe)


def test_transformers4_and_5_config_formats():
    base = {
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": 128256,
        "hidden_size": 2048,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 8192,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
        "max_position_embeddings": 131072,
    }
    scaling = {
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    v4 = {
        **base,
        "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", **scaling},
        "torch_dtype": "bfloat16",
    }
    v5 = {
        **base,
        "rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3", **scaling},
        "dtype": "bfloat16",
    }
    a, b = ModelConfig.from_hf(v4), ModelConfig.from_hf(v5)
    assert a == b
    assert a.rope_scaling.factor == 32.0 and a.param_dtype == "bfloat16" and a.head_dim == 64
    assert ModelConfig.from_hf(a.to_hf()) == a
    preset = load_model_config("logos-1b")
    assert preset.replace(param_dtype="bfloat16", compute_dtype="bfloat16") == a.replace(
        bos_token_id=128000, eos_token_id=(128001, 128008, 128009), pad_token_id=128009
    )


def test_presets_load():
    assert load_model_config("logos-8b").qk_norm
    assert load_model_config("logos-3b").num_layers == 28
    with pytest.raises(LogosError, match="available: .*tiny"):
        load_model_config("logos-70b")


def test_resize_embeddings_mean_rows():
    rng = np.random.default_rng(0)
    config = load_model_config("tiny").replace(vocab_size=10, tie_embeddings=False)
    params = {
        "embed_tokens": {"embedding": rng.normal(size=(10, 128)).astype(np.float32)},
        "lm_head": {"weight": rng.normal(size=(10, 128)).astype(np.float32)},
    }
    new, new_config = resize_embeddings(params, config, 13, new_token_ids=[9, 10, 11, 12])
    emb, head = new["embed_tokens"]["embedding"], new["lm_head"]["weight"]
    assert emb.shape == (13, 128) and head.shape == (13, 128) and new_config.vocab_size == 13
    mean = params["embed_tokens"]["embedding"][:9].mean(axis=0)
    for row in (9, 10, 11, 12):
        np.testing.assert_allclose(emb[row], mean, atol=1e-6)
        np.testing.assert_allclose(head[row], params["lm_head"]["weight"][:9].mean(0), atol=1e-6)
    np.testing.assert_array_equal(emb[:9], params["embed_tokens"]["embedding"][:9])
    with pytest.raises(LogosError, match="cannot shrink"):
        resize_embeddings(params, config, 5)


def test_cli_round_trip_and_errors(hf_dir, tmp_path, capsys):
    assert main(["convert", "hf2jax", str(hf_dir), str(tmp_path / "jax")]) == 0
    assert main(["convert", "jax2hf", str(tmp_path / "jax"), str(tmp_path / "back")]) == 0
    assert (tmp_path / "back" / "model.safetensors").is_file()
    direct = ["convert", "hf2jax", str(hf_dir), str(tmp_path / "direct"), "--direct-io"]
    assert main(direct) == 0  # the same files, bypassing the page cache
    for buffered in (tmp_path / "jax" / "params").rglob("*"):
        if buffered.is_file():
            same = tmp_path / "direct" / buffered.relative_to(tmp_path / "jax")
            assert buffered.read_bytes() == same.read_bytes(), buffered
    capsys.readouterr()
    assert main(["convert", "hf2jax", str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["convert", "jax2hf", str(tmp_path / "empty"), str(tmp_path / "y")]) == 2
    assert "not a logos_jax checkpoint" in capsys.readouterr().err
    # An HF folder is a checkpoint too (loaded directly): re-exporting it is bit-identical.
    assert main(["convert", "jax2hf", str(hf_dir), str(tmp_path / "again")]) == 0
    for name in ("model.safetensors",):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "back" / name).read_bytes()


def _word_tokenizer(folder, size):
    """A small word-level tokenizer with no grammar tags (a 'base model' tokenizer)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, size)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))


def test_hf2jax_add_tags_resizes_embeddings(tmp_path):
    """Continued-pretraining start: a base checkpoint without tags gains them, rows = mean."""
    from logos_jax.checkpoint import load_model
    from logos_jax.grammar.tags import ALL_TAGS
    from logos_jax.tokenizer import LogosTokenizer

    model = make_hf_model("qwen3", tmp_path / "hf")  # vocab 256, untied
    _word_tokenizer(tmp_path / "hf", 250)
    hf_to_jax(tmp_path / "hf", tmp_path / "jax", add_tags=True, progress=False)
    tokenizer = LogosTokenizer.load(tmp_path / "jax")
    tokenizer.require_tags()
    ids = sorted(tokenizer.tag_ids().values())
    assert ids == list(range(250, 250 + len(ALL_TAGS)))
    config, params = load_model(tmp_path / "jax")
    assert config.vocab_size == 250 + len(ALL_TAGS)
    emb = np.asarray(params["embed_tokens"]["embedding"])
    head = np.asarray(params["lm_head"]["weight"])
    original = model.model.embed_tokens.weight.detach().numpy()
    np.testing.assert_array_equal(emb[:250], original[:250])
    for row in ids:  # rows 250..255 existed (unused ids) and are reset too
        np.testing.assert_allclose(emb[row], original[:250].mean(0), atol=1e-6)
        np.testing.assert_allclose(
            head[row], model.lm_head.weight.detach().numpy()[:250].mean(0), atol=1e-6
        )
    decoded = tokenizer.decode(tokenizer.encode("<MoleculeS> w5 <MoleculeE>", add_bos=False))
    assert "<MoleculeS>" in decoded and "<MoleculeE>" in decoded


def test_plain_base_checkpoint_converts_and_samples_free_text(tmp_path):
    """A base model whose tokenizer has no grammar tags is still usable: convert, then `--task free`."""
    from logos_jax.sample.jobs import run_sampling
    from logos_jax.sample.sampler import SamplingConfig

    make_hf_model("llama", tmp_path / "hf")  # vocab 256, tied
    _word_tokenizer(tmp_path / "hf", 250)
    hf_to_jax(tmp_path / "hf", tmp_path / "jax", progress=False)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "a", "prompt": "w5 w6 w7"}\n{"id": "b", "prompt": "w9"}\n')
    out = tmp_path / "out.jsonl"
    report = run_sampling(
        "free",
        out,
        ckpt=tmp_path / "jax",
        input_path=prompts,
        num_samples=2,
        sampling=SamplingConfig(max_new_tokens=8),
        progress=False,
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert report.written == 2 and len(rows) == 4
    assert {r["id"] for r in rows} == {"a", "b"}
    assert all(r["num_tokens"] >= 1 and r["perplexity"] > 0 for r in rows)

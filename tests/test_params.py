"""The parameter table (``logos_jax.params``): it covers every tensor of the presets, its HF map
round-trips, everything derived from it agrees, and HF folders load directly (bit-identical to
their conversion; old-format checkpoints still load)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from logos_jax.checkpoint import FORMAT_VERSION, format_version, load_model, save_params
from logos_jax.config import load_model_config
from logos_jax.convert.hf2jax import hf_to_jax
from logos_jax.errors import LogosError
from logos_jax.model import Decoder, abstract_params, init_params, logical_axes
from logos_jax.model.attention import KVLayout
from logos_jax.params import (
    from_hf_name,
    get_path,
    head_path,
    hf_tensors,
    param_table,
    role_of,
    vocab_paths,
)
from logos_jax.sharding import MeshConfig, make_mesh
from logos_jax.train.optim import decay_mask

CONFIGS = [(preset, tied) for preset in ("tiny", "logos-1b", "logos-8b") for tied in (True, False)]


def _config(preset, tied):
    return load_model_config(preset).replace(tie_embeddings=tied)


@pytest.mark.parametrize(("preset", "tied"), CONFIGS)
def test_table_is_every_tensor_of_the_hf_model(preset, tied):
    """Names and shapes of the table = those of the transformers model of the same config (built on
    the meta device: no memory), but the tied head, which the files do not carry."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = _config(preset, tied)
    hf = config.to_hf()
    hf_config = transformers.AutoConfig.for_model(hf.pop("model_type"), **hf)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(hf_config)
    theirs = {n: tuple(p.shape) for n, p in model.named_parameters(remove_duplicate=False)}
    if tied:
        theirs.pop("lm_head.weight")
    ours = {name: info.shape for name, info, _ in hf_tensors(config)}
    assert ours == theirs


@pytest.mark.parametrize(("preset", "tied"), CONFIGS)
def test_hf_map_round_trips_and_derived_trees_agree(preset, tied):
    config = _config(preset, tied)
    table = param_table(config)
    names = list(hf_tensors(config))
    assert len({n for n, _, _ in names}) == len(names)
    for name, info, layer in names:
        assert from_hf_name(config, name) == (info.path, layer)
        assert info.hf_tensor(layer) == name
    for scan in (True, False):
        shapes = abstract_params(config, scan_layers=scan)
        axes = logical_axes(config, scan_layers=scan)
        flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
        expected = config.num_layers * sum(i.per_layer for i in table.values())
        assert len(flat) == len(table) + (
            0 if scan else expected - sum(i.per_layer for i in table.values())
        )
        for keys, struct in flat:
            path = tuple(k.key for k in keys)
            assert len(get_path(axes, path)) == len(struct.shape)
            assert struct.dtype == jnp.dtype(config.param_dtype)
    assert head_path(config) == (("embed_tokens", "embedding") if tied else ("lm_head", "weight"))
    assert vocab_paths(config) == [("embed_tokens", "embedding")] + (
        [] if tied else [("lm_head", "weight")]
    )
    mask = decay_mask(abstract_params(config, scan_layers=False), decay_embeddings=False)
    assert mask["layers_0"]["self_attn"]["q_proj"]["weight"] and not mask["norm"]["scale"]
    assert not mask["embed_tokens"]["embedding"]
    assert role_of(("layers_3", "mlp", "down_proj", "weight")) == "kernel"
    kv_heads = table[("layers", "self_attn", "k_proj", "weight")].axes[0]
    for layout in (KVLayout.for_kernel("xla"), KVLayout.for_kernel("pallas")):
        for pages in (layout.k, layout.v):
            assert pages.axes[1 - pages.page_axis] == kv_heads


def test_model_reads_only_table_parameters():
    config = load_model_config("tiny")
    tokens = jnp.zeros((1, 4), jnp.int32)
    with pytest.raises(LogosError, match="init_params"):
        Decoder(config).init(jax.random.key(0), tokens, tokens)
    shapes = abstract_params(config)
    logits, _ = jax.eval_shape(Decoder(config).apply, {"params": shapes}, tokens, tokens)
    assert logits.shape == (1, 4, config.vocab_size)


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def hf_and_converted(request, tmp_path_factory):
    from tests.hf_models import make_hf_model

    root = tmp_path_factory.mktemp(request.param)
    make_hf_model(request.param, root / "hf", dtype="bfloat16")
    hf_to_jax(root / "hf", root / "jax", progress=False)
    return root


def _logits(config, params, scan):
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 200, (2, 11)), jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(11), tokens.shape)
    model = Decoder(config, scan_layers=scan)
    return np.asarray(jax.jit(model.apply)({"params": params}, tokens, positions)[0])


@pytest.mark.parametrize("scan", [True, False])
def test_hf_folder_loads_like_its_conversion(hf_and_converted, scan):
    """Direct loading (memory-mapped, shard by shard on an 8-device mesh) = the converted
    checkpoint, bit for bit: params and logits; with the requested layer stacking."""
    root = hf_and_converted
    mesh = make_mesh(MeshConfig(1, 4, 2))
    hf_config, direct = load_model(root / "hf", mesh, scan_layers=scan)
    config, converted = load_model(root / "jax", mesh, scan_layers=scan)
    assert hf_config == config and config.param_dtype == "bfloat16"
    assert ("layers" in direct) == scan
    for a, b in zip(jax.tree.leaves(direct), jax.tree.leaves(converted), strict=True):
        assert a.sharding == b.sharding and a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a).view(np.uint16), np.asarray(b).view(np.uint16))
    np.testing.assert_array_equal(_logits(config, direct, scan), _logits(config, converted, scan))
    # a dtype override casts on the host, as restoring the conversion does
    _, up = load_model(root / "hf", mesh, param_dtype="float32")
    _, up_ref = load_model(root / "jax", mesh, param_dtype="float32")
    jax.tree.map(np.testing.assert_array_equal, up, up_ref)


def test_legacy_kernel_format_still_loads(tmp_path):
    """A checkpoint written before the HF axis order (``kernel`` leaves ``[in, out]``) loads transposed;
    a training run holding one is refused for resume with a clear message."""
    from logos_jax.config import save_model_config
    from logos_jax.model_folder import MODEL_CONFIG
    from logos_jax.train.loop import _check_layer_stacking

    config = load_model_config("tiny").replace(tie_embeddings=False, qk_norm=True)
    params = jax.device_get(init_params(config, jax.random.key(3)))

    def legacy(tree):
        if not isinstance(tree, dict):
            return tree
        out = {}
        for key, value in tree.items():
            if key == "weight":
                out["kernel"] = np.swapaxes(value, -1, -2)
            else:
                out[key] = legacy(value)
        return out

    folder = tmp_path / "old"
    folder.mkdir()
    save_params(folder / "params", legacy(params))
    save_model_config(config, folder / MODEL_CONFIG)
    assert format_version(folder / "params") == 1
    for mesh in (None, make_mesh(MeshConfig(1, 4, 2))):
        _, loaded = load_model(folder, mesh)
        jax.tree.map(np.testing.assert_array_equal, loaded, params)
    with pytest.raises(LogosError, match="init_from=<this run>"):
        _check_layer_stacking(folder, scan_layers=True)
    assert FORMAT_VERSION == 2


def test_sample_and_init_from_accept_an_hf_folder(hf_and_converted, tmp_path):
    """``logos sample --ckpt HF_DIR`` and ``init_from: HF_DIR`` load the folder without converting."""
    from logos_jax.cli import main
    from logos_jax.train.init import load_initial

    root = hf_and_converted
    mesh = make_mesh(MeshConfig(1, -1, 1))
    config, params = load_initial(
        str(root / "hf"), {"param_dtype": "float32"}, 300, mesh, scan_layers=False
    )
    assert config.vocab_size == 300 and "layers_1" in params
    assert params["embed_tokens"]["embedding"].shape[0] == 300
    if not (root / "hf" / "tokenizer.json").is_file():
        from tests.test_convert import _word_tokenizer

        _word_tokenizer(root / "hf", 250)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "a", "prompt": "w5 w6"}) + "\n")
    out = tmp_path / "out.jsonl"
    argv = ["sample", "--task", "free", "--ckpt", str(root / "hf"), "--input", str(prompts)]
    argv += ["--out", str(out), "--num-samples", "1", "--max-new-tokens", "4", "--no-progress"]
    assert main(argv) == 0
    assert json.loads(out.read_text().splitlines()[0])["id"] == "a"

"""Sharded forward equals unsharded; Orbax checkpoints restore onto other device counts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from logos_jax.checkpoint import load_model, save_model
from logos_jax.config import load_model_config
from logos_jax.errors import LogosError
from logos_jax.model import Decoder, init_params, stack_layers, unstack_layers
from logos_jax.sharding import MeshConfig, batch_sharding, logical_to_spec, make_mesh

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")


@pytest.fixture(scope="module")
def qwen_like():
    """A Qwen3-flavoured tiny config (qk norm, untied) so every parameter kind is sharded."""
    return load_model_config("tiny").replace(qk_norm=True, tie_embeddings=False, num_kv_heads=2)


def test_mesh_from_config():
    mesh = make_mesh(MeshConfig(data=1, fsdp=-1, tensor=2))
    assert dict(mesh.shape) == {"data": 1, "fsdp": 4, "tensor": 2}
    with pytest.raises(LogosError, match="needs 16 devices but 8"):
        make_mesh(MeshConfig(data=2, fsdp=4, tensor=2))
    with pytest.raises(LogosError, match="at most one axis may be -1"):
        make_mesh(MeshConfig(data=-1, fsdp=-1))


def test_indivisible_dimension_stays_replicated():
    mesh = make_mesh(MeshConfig(1, 4, 2))
    assert logical_to_spec(("vocab", "embed"), (151669, 64), mesh, (("vocab", "tensor"),)) == (
        PartitionSpec(None, None)
    )


def test_sharded_forward_equals_unsharded(qwen_like):
    cfg = qwen_like
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, (8, 24)), jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(24, dtype=jnp.int32), tokens.shape)
    segments = jnp.asarray(np.repeat([[1] * 10 + [2] * 14], 8, axis=0), jnp.int32)

    params = init_params(cfg, jax.random.key(0))
    ref, _ = jax.jit(Decoder(cfg).apply)({"params": params}, tokens, positions, segments)

    mesh = make_mesh(MeshConfig(data=1, fsdp=4, tensor=2))
    sharded = init_params(cfg, jax.random.key(0), mesh)
    q = sharded["layers"]["self_attn"]["q_proj"]["weight"]  # [layers, q, hidden]
    assert q.sharding.spec == PartitionSpec(None, "tensor", "fsdp")
    assert len(q.addressable_shards) == 8 and q.addressable_shards[0].data.shape == (4, 64, 32)
    batch = batch_sharding(mesh)
    fwd = jax.jit(
        Decoder(cfg, mesh=mesh).apply,
        in_shardings=(jax.tree.map(lambda a: a.sharding, {"params": sharded}), batch, batch, batch),
        out_shardings=(NamedSharding(mesh, PartitionSpec("fsdp", None, "tensor")), None),
    )
    out, _ = fwd({"params": sharded}, tokens, positions, segments)
    assert out.sharding.spec == PartitionSpec("fsdp", None, "tensor")
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)


def test_unscanned_layers_compute_the_same_sharded(qwen_like):
    """scan_layers=False: per-layer params (no ``layers`` axis), same values, same forward;
    stack/unstack are exact inverses."""
    cfg = qwen_like
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, cfg.vocab_size, (8, 12)), jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(12, dtype=jnp.int32), tokens.shape)
    params = init_params(cfg, jax.random.key(0))
    ref, _ = jax.jit(Decoder(cfg).apply)({"params": params}, tokens, positions)

    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    per_layer = init_params(cfg, jax.random.key(0), mesh, scan_layers=False)
    assert "layers" not in per_layer and f"layers_{cfg.num_layers - 1}" in per_layer
    q = per_layer["layers_0"]["self_attn"]["q_proj"]["weight"]
    assert q.sharding.spec == PartitionSpec("tensor", "fsdp")
    restacked = stack_layers(per_layer, cfg.num_layers)
    jax.tree.map(np.testing.assert_array_equal, restacked, params)
    jax.tree.map(
        np.testing.assert_array_equal, unstack_layers(restacked, cfg.num_layers), per_layer
    )
    model = Decoder(cfg, mesh=mesh, scan_layers=False)
    out, _ = jax.jit(model.apply)({"params": per_layer}, tokens, positions)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)


def test_checkpoint_saved_on_8_restores_on_1_and_4(qwen_like, tmp_path):
    mesh8 = make_mesh(MeshConfig(data=1, fsdp=4, tensor=2))
    params = init_params(qwen_like, jax.random.key(1), mesh8)
    save_model(tmp_path / "ckpt", qwen_like, params)
    expected = jax.tree.map(np.asarray, params)
    for devices in (jax.devices()[:1], jax.devices()[:4]):
        mesh = make_mesh(MeshConfig(data=1, fsdp=-1, tensor=1), devices)
        config, restored = load_model(tmp_path / "ckpt", mesh)
        assert config == qwen_like
        for (path, got), want in zip(
            jax.tree_util.tree_leaves_with_path(restored), jax.tree.leaves(expected), strict=True
        ):
            assert got.sharding.mesh.devices.size == len(devices), path
            np.testing.assert_array_equal(np.asarray(got), want)
    with pytest.raises(LogosError, match="already exists"):
        save_model(tmp_path / "ckpt", qwen_like, params)

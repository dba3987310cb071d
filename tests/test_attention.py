"""Attention kernels: the Pallas splash kernel (interpret mode on CPU) and the jax.nn / cuDNN
argument path equal the XLA math in values and gradients on packed, grouped-query inputs; the
implementation table; the flash kernel through the decoder's loss on a sharded mesh."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from logos_jax.errors import LogosError
from logos_jax.model.attention import (
    AttentionKernel,
    nn_attention,
    resolve_implementation,
    splash_attention,
)
from logos_jax.sharding import MeshConfig, make_mesh

XLA = AttentionKernel("xla")


def packed_inputs(batch=2, seq=384, heads=4, kv_heads=2, hd=32, seed=0):
    """q ``[b, s, h, d]``, k/v ``[b, kvh, s, d]`` and segment ids: row 0 packs three documents
    (one crossing the 128-position block boundaries) and trailing padding, row 1 is one document."""
    keys = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(keys[0], (batch, seq, heads, hd), jnp.float32)
    k = jax.random.normal(keys[1], (batch, kv_heads, seq, hd), jnp.float32)
    v = jax.random.normal(keys[2], (batch, kv_heads, seq, hd), jnp.float32)
    seg = np.ones((batch, seq), np.int32)
    seg[0, 100:300], seg[0, 300:350], seg[0, 350:] = 2, 3, 0
    return q, k, v, jnp.asarray(seg)


def values_and_grads(fn, q, k, v, seg):
    """fn's output and the gradients of a weighted sum of it with respect to q, k and v."""
    weights = jax.random.normal(
        jax.random.key(9), (q.shape[0], q.shape[1], q.shape[2] * q.shape[3])
    )

    def loss(q, k, v):
        out = fn(q, k, v, seg)
        return jnp.sum(out * weights), out

    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
    return out, grads


def assert_same(a, b, atol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


def test_splash_kernel_equals_xla_in_values_and_gradients():
    q, k, v, seg = packed_inputs()
    ref = values_and_grads(lambda *a: XLA(*a, jnp.float32), q, k, v, seg)
    got = values_and_grads(
        lambda *a: splash_attention(*a, jnp.float32, interpret=True), q, k, v, seg
    )
    assert_same(got, ref, atol=2e-4)


def test_cudnn_argument_path_equals_xla():
    """The GPU path's call (GQA in the [b, s, h, d] axis order, causal flag + segment mask) with
    jax.nn's XLA implementation, the same arguments cuDNN receives on a GPU."""
    q, k, v, seg = packed_inputs(seq=128)
    ref = values_and_grads(lambda *a: XLA(*a, jnp.float32), q, k, v, seg)
    got = values_and_grads(
        lambda *a: nn_attention(*a, jnp.float32, implementation="xla"), q, k, v, seg
    )
    assert_same(got, ref, atol=2e-5)


def test_flash_through_the_sharded_decoder_loss():
    """attention=flash on a data x fsdp x tensor mesh (the kernel under shard_map, heads split over
    tensor) gives the XLA loss and gradients on a packed batch."""
    from logos_jax.config import load_model_config
    from logos_jax.model import Decoder, init_params
    from logos_jax.train.step import LossConfig, loss_sums

    cfg = load_model_config("tiny").replace(num_layers=2, num_heads=4, num_kv_heads=2, head_dim=32)
    mesh = make_mesh(MeshConfig(2, 2, 2))
    params = init_params(cfg, jax.random.key(0), mesh)
    seq = 128
    rng = np.random.default_rng(0)
    seg = np.repeat(np.array([[1] * 50 + [2] * 60 + [0] * 18]), 4, axis=0).astype(np.int32)
    pos = np.concatenate([np.arange(50), np.arange(60), np.zeros(18, int)])[None].repeat(4, 0)
    batch = {
        "tokens": rng.integers(1, cfg.vocab_size, (4, seq)).astype(np.int32),
        "segment_ids": seg,
        "positions": pos.astype(np.int32),
        "modality": np.zeros((4, seq), np.int32),
        "target_mask": (seg > 0).astype(np.float32),
    }

    def loss(attention):
        model = Decoder(cfg, mesh=mesh, attention=attention)
        fn = lambda p: loss_sums(p, batch, model, LossConfig())["ce"]  # noqa: E731
        return jax.jit(jax.value_and_grad(fn))(params)

    assert_same(loss("flash"), loss("xla"), atol=2e-4)


def test_implementation_table():
    f32, bf16 = jnp.float32, jnp.bfloat16
    assert resolve_implementation("auto", "cpu", bf16, 4096) == "xla"
    assert resolve_implementation("auto", "tpu", bf16, 4096) == "splash"
    assert resolve_implementation("auto", "tpu", bf16, 4000) == "xla"
    assert resolve_implementation("auto", "gpu", bf16, 4096) == "cudnn"
    assert resolve_implementation("auto", "gpu", f32, 4096) == "xla"
    assert resolve_implementation("flash", "cpu", f32, 256) == "splash"  # interpret mode
    assert resolve_implementation("xla", "tpu", bf16, 4096) == "xla"
    with pytest.raises(LogosError, match="bfloat16"):
        resolve_implementation("flash", "gpu", f32, 4096)
    with pytest.raises(LogosError, match="multiple of 128"):
        resolve_implementation("flash", "tpu", bf16, 4000)
    assert resolve_implementation("auto", "rocm", bf16, 4096) == "xla"
    with pytest.raises(LogosError, match="no kernel on rocm"):
        resolve_implementation("flash", "rocm", bf16, 4096)
    with pytest.raises(LogosError, match="one of"):
        resolve_implementation("pallas", "tpu", bf16, 4096)
    from logos_jax.train.config import from_dict

    assert from_dict({"run_dir": "r"}).attention == "auto"
    with pytest.raises(LogosError, match="attention='pallas' is not one of"):
        from_dict({"run_dir": "r", "attention": "pallas"})

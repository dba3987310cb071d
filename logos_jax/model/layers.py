"""Decoder building blocks: RMSNorm, GQA attention (segment ids, KV cache, optional q/k norm), SwiGLU MLP.

Parameters keep the Hugging Face layout: ``q_proj.kernel`` is HF ``q_proj.weight`` transposed
(``[hidden, heads * head_dim]``), the query is unscaled, RoPE is the half rotation. Every parameter
is created with logical axis names (see ``logos_jax.sharding``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from logos_jax.config import ModelConfig
from logos_jax.model.rope import apply_rope

KERNEL_INIT = nn.initializers.normal(stddev=0.02)
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def dtype_of(name: str) -> Any:
    return jnp.dtype(name)


class RMSNorm(nn.Module):
    """RMSNorm over the last axis, computed in float32 like transformers, output in ``dtype``."""

    eps: float
    dtype: Any
    param_dtype: Any
    axis_name: str = "norm"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones, (self.axis_name,)),
            (x.shape[-1],),
            self.param_dtype,
        )
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return scale.astype(self.dtype) * normed.astype(self.dtype)


def matmul(x: jnp.ndarray, kernel: jnp.ndarray, **kwargs: Any) -> jnp.ndarray:
    """``x [..., in] @ kernel [in, out] -> [..., out]`` as one 2-D matmul (leading axes flattened)."""
    out = jnp.dot(x.reshape(-1, x.shape[-1]), kernel, **kwargs)
    return out.reshape(*x.shape[:-1], kernel.shape[-1])


class Dense(nn.Module):
    """``y = x @ kernel`` with ``kernel [in, out]`` (HF ``weight`` transposed), no bias."""

    features: int
    axes: tuple[str, str]
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(KERNEL_INIT, self.axes),
            (x.shape[-1], self.features),
            self.param_dtype,
        )
        return matmul(x.astype(self.dtype), kernel.astype(self.dtype))


def attention_mask(
    q_segment: jnp.ndarray, kv_segment: jnp.ndarray, q_index: jnp.ndarray, kv_index: jnp.ndarray
) -> jnp.ndarray:
    """``[batch, 1, 1, q, kv]`` bool: same segment and causal (packed documents never see each other).

    q_segment ``[batch, q]``, kv_segment ``[batch, kv]`` (0 = padding / empty cache slot),
    q_index ``[q]`` and kv_index ``[kv]`` are slot indices in the (cached) sequence.
    """
    same = q_segment[:, :, None] == kv_segment[:, None, :]
    causal = kv_index[None, None, :] <= q_index[None, :, None]
    return (same & causal)[:, None, None, :, :]


class Attention(nn.Module):
    """Grouped-query attention. With ``cache=(k, v)`` (each ``[batch, kv_heads, max_len, head_dim]``)
    the new keys/values are written at ``cache_index``."""

    config: ModelConfig

    @nn.compact
    def __call__(
        self,
        x: jnp.ndarray,
        cos: jnp.ndarray,
        sin: jnp.ndarray,
        mask: jnp.ndarray,
        cache: tuple[jnp.ndarray, jnp.ndarray] | None,
        cache_index: jnp.ndarray | None,
    ) -> tuple[jnp.ndarray, tuple[jnp.ndarray, jnp.ndarray] | None]:
        cfg = self.config
        dtype, pdtype = dtype_of(cfg.compute_dtype), dtype_of(cfg.param_dtype)
        batch, seq, _ = x.shape
        heads, kv_heads, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim

        def proj(name: str, n: int, axis: str) -> jnp.ndarray:
            out = Dense(n * hd, ("embed", axis), dtype, pdtype, name=name)(x)
            return out.reshape(batch, seq, n, hd)

        q = proj("q_proj", heads, "q_heads")
        k = proj("k_proj", kv_heads, "kv_heads")
        v = proj("v_proj", kv_heads, "kv_heads")
        if cfg.qk_norm:
            q = RMSNorm(cfg.norm_eps, dtype, pdtype, "head_dim", name="q_norm")(q)
            k = RMSNorm(cfg.norm_eps, dtype, pdtype, "head_dim", name="k_norm")(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        # Head-major operands (XLA's batched matmuls take them without extra copies), and the
        # cache keeps that layout: [batch, kv_heads, group * q, head_dim] x [batch, kv_heads, kv, head_dim]
        k, v = (t.transpose(0, 2, 1, 3) for t in (k, v))
        new_cache = None
        if cache is not None:
            k_cache, v_cache = cache
            start = (0, 0, cache_index, 0)
            k = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), start)
            v = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), start)
            new_cache = (k, v)
        group, kv_len = heads // kv_heads, k.shape[2]
        q = q.reshape(batch, seq, kv_heads, group, hd).transpose(0, 2, 3, 1, 4)
        q = q.reshape(batch, kv_heads, group * seq, hd)
        k, v = k.astype(dtype), v.astype(dtype)
        scores = jnp.einsum("bkqd,bktd->bkqt", q, k, preferred_element_type=jnp.float32)
        scores = scores.reshape(batch, kv_heads, group, seq, kv_len) * (hd**-0.5)
        scores = jnp.where(mask, scores, MASK_VALUE)
        # Softmax with the normalisation after the PV matmul: [.., q, head_dim] divides instead
        # of [.., q, kv] (the max is a constant shift, so it carries no gradient).
        shift = jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True))
        weights = jnp.exp(scores - shift)
        total = jnp.sum(weights, axis=-1).reshape(batch, kv_heads, group * seq, 1)
        weights = weights.astype(dtype).reshape(batch, kv_heads, group * seq, kv_len)
        out = jnp.einsum("bkqt,bktd->bkqd", weights, v, preferred_element_type=jnp.float32)
        out = (out / total).astype(dtype)
        out = out.reshape(batch, kv_heads, group, seq, hd).transpose(0, 3, 1, 2, 4)
        out = out.reshape(batch, seq, heads * hd)
        return Dense(cfg.hidden_size, ("q_heads", "embed"), dtype, pdtype, name="o_proj")(
            out
        ), new_cache


@jax.checkpoint
def swiglu(gate: jnp.ndarray, up: jnp.ndarray) -> jnp.ndarray:
    """``silu(gate) * up``; rematerialised, so the backward pass keeps only ``gate`` and ``up``."""
    return nn.silu(gate) * up


class MLP(nn.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        cfg = self.config
        dtype, pdtype = dtype_of(cfg.compute_dtype), dtype_of(cfg.param_dtype)
        gate = Dense(cfg.intermediate_size, ("embed", "mlp"), dtype, pdtype, name="gate_proj")(x)
        up = Dense(cfg.intermediate_size, ("embed", "mlp"), dtype, pdtype, name="up_proj")(x)
        return Dense(cfg.hidden_size, ("mlp", "embed"), dtype, pdtype, name="down_proj")(
            swiglu(gate, up)
        )

"""Decoder building blocks: RMSNorm, GQA attention (segment ids or KV pages, optional q/k norm), SwiGLU MLP.

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
from logos_jax.model.attention import AttentionKernel, PagedKV
from logos_jax.model.rope import apply_rope

KERNEL_INIT = nn.initializers.normal(stddev=0.02)


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


class Attention(nn.Module):
    """Grouped-query attention. Without ``kv`` the queries attend over this call's keys within
    their ``segment_ids`` (training, full forwards; computed by ``kernel``); with a ``PagedKV`` the
    new keys/values are written into ``layer``'s pages and the queries read the pages (decode,
    chunked prefill)."""

    config: ModelConfig
    kernel: AttentionKernel = AttentionKernel()

    @nn.compact
    def __call__(
        self,
        x: jnp.ndarray,
        cos: jnp.ndarray,
        sin: jnp.ndarray,
        segment_ids: jnp.ndarray | None,
        kv: PagedKV | None,
        layer: jnp.ndarray | int,
    ) -> tuple[jnp.ndarray, PagedKV | None]:
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
        if kv is None:
            k, v = (t.transpose(0, 2, 1, 3) for t in (k, v))  # [batch, kv_heads, seq, head_dim]
            out = self.kernel(q, k, v, segment_ids, dtype)
        else:
            out, kv = kv.attend(layer, q, k, v, dtype)
        return Dense(cfg.hidden_size, ("q_heads", "embed"), dtype, pdtype, name="o_proj")(out), kv


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

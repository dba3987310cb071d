"""Decoder building blocks: RMSNorm, GQA attention (segment ids or KV pages, optional q/k norm), SwiGLU MLP.

Parameters are those of the table in ``logos_jax.params`` (which also creates them): the Hugging Face
axis order, so ``q_proj.weight`` is HF's ``[heads * head_dim, hidden]`` (``y = x @ weight.T``), the query
is unscaled, RoPE is the half rotation. Modules only read their parameters (``table_param``). With
``kernels_in_out`` the linear kernels are read as ``[in, out]`` instead (``y = x @ weight``): the decode
engine lays them out so once (``kernels_to_in_out``), because XLA:CPU multiplies a few rows by an
``[in, out]`` matrix ~25% faster than by its transpose.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from logos_jax.config import ModelConfig
from logos_jax.errors import LogosError
from logos_jax.model.attention import AttentionKernel, PagedKV
from logos_jax.model.rope import apply_rope


def dtype_of(name: str) -> Any:
    return jnp.dtype(name)


def table_param(module: nn.Module, name: str) -> jnp.ndarray:
    """The module's parameter ``name``, created by ``init_params`` from the parameter table
    (``logos_jax.params``) or loaded: modules only read parameters (``Decoder.init`` has none to
    create)."""
    value = module.get_variable("params", name)
    if value is None:
        raise LogosError(
            f"no parameter {'/'.join((*module.path, name))}: create parameters with "
            "logos_jax.model.init_params (from the parameter table) or load a checkpoint"
        )
    return value


class RMSNorm(nn.Module):
    """RMSNorm over the last axis, computed in float32 like transformers, output in ``dtype``."""

    eps: float
    dtype: Any

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        scale = table_param(self, "scale")
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return scale.astype(self.dtype) * normed.astype(self.dtype)


def linear(x: jnp.ndarray, weight: jnp.ndarray, **kwargs: Any) -> jnp.ndarray:
    """``x [..., in] @ weight.T`` for ``weight [out, in]`` (HF's axis order) -> ``[..., out]``, as one
    2-D dot contracting both operands' last axes (no transposed copy of the weight)."""
    dims = (((1,), (1,)), ((), ()))
    out = jax.lax.dot_general(x.reshape(-1, x.shape[-1]), weight, dims, **kwargs)
    return out.reshape(*x.shape[:-1], weight.shape[0])


class Linear(nn.Module):
    """``y = x @ weight.T`` with ``weight [out, in]`` (HF's ``nn.Linear``), no bias; ``y = x @ weight``
    with ``in_out`` (``weight [in, out]``)."""

    dtype: Any
    in_out: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        weight = table_param(self, "weight").astype(self.dtype)
        if self.in_out:
            return x.astype(self.dtype) @ weight
        return linear(x.astype(self.dtype), weight)


class Attention(nn.Module):
    """Grouped-query attention. Without ``kv`` the queries attend over this call's keys within
    their ``segment_ids`` (training, full forwards; computed by ``kernel``); with a ``PagedKV`` the
    new keys/values are written into ``layer``'s pages and the queries read the pages (decode,
    chunked prefill)."""

    config: ModelConfig
    kernel: AttentionKernel = AttentionKernel()
    kernels_in_out: bool = False

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
        dtype = dtype_of(cfg.compute_dtype)
        batch, seq, _ = x.shape
        heads, kv_heads, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim

        def proj(name: str, n: int) -> jnp.ndarray:
            return Linear(dtype, self.kernels_in_out, name=name)(x).reshape(batch, seq, n, hd)

        q = proj("q_proj", heads)
        k = proj("k_proj", kv_heads)
        v = proj("v_proj", kv_heads)
        if cfg.qk_norm:
            q = RMSNorm(cfg.norm_eps, dtype, name="q_norm")(q)
            k = RMSNorm(cfg.norm_eps, dtype, name="k_norm")(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv is None:
            k, v = (t.transpose(0, 2, 1, 3) for t in (k, v))  # [batch, kv_heads, seq, head_dim]
            out = self.kernel(q, k, v, segment_ids, dtype)
        else:
            out, kv = kv.attend(layer, q, k, v, dtype)
        return Linear(dtype, self.kernels_in_out, name="o_proj")(out), kv


@jax.checkpoint
def swiglu(gate: jnp.ndarray, up: jnp.ndarray) -> jnp.ndarray:
    """``silu(gate) * up``; rematerialised, so the backward pass keeps only ``gate`` and ``up``."""
    return nn.silu(gate) * up


class MLP(nn.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

    config: ModelConfig
    kernels_in_out: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        dtype = dtype_of(self.config.compute_dtype)
        gate = Linear(dtype, self.kernels_in_out, name="gate_proj")(x)
        up = Linear(dtype, self.kernels_in_out, name="up_proj")(x)
        return Linear(dtype, self.kernels_in_out, name="down_proj")(swiglu(gate, up))

"""The decoder: embedding, scanned blocks (stacked params, optional remat), final norm, LM head.

One module for Llama-3 and Qwen3 (flags in ``ModelConfig``). ``Decoder.__call__`` serves training
(``segment_ids`` for packed documents), prefill and one-token decode steps (``cache``).
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding

from logos_jax.config import ModelConfig
from logos_jax.model.layers import MLP, Attention, Dense, RMSNorm, attention_mask, dtype_of
from logos_jax.model.rope import cos_sin
from logos_jax.sharding import DEFAULT_RULES, Rules, logical_to_spec

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@flax.struct.dataclass
class KVCache:
    """Decode cache. k/v ``[layers, batch, kv_heads, max_len, head_dim]``; segment_ids ``[batch, max_len]``
    (0 = empty slot or padding); ``index`` is the next slot to write (shared by all rows)."""

    k: jax.Array
    v: jax.Array
    segment_ids: jax.Array
    index: jax.Array

    @property
    def max_len(self) -> int:
        return self.k.shape[3]


def init_cache(config: ModelConfig, batch: int, max_len: int, dtype: Any = None) -> KVCache:
    """An empty cache for ``batch`` rows of up to ``max_len`` tokens (prompt + new tokens)."""
    shape = (config.num_layers, batch, config.num_kv_heads, max_len, config.head_dim)
    dtype = dtype or dtype_of(config.compute_dtype)
    return KVCache(
        k=jnp.zeros(shape, dtype),
        v=jnp.zeros(shape, dtype),
        segment_ids=jnp.zeros((batch, max_len), jnp.int32),
        index=jnp.zeros((), jnp.int32),
    )


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x, cos, sin, mask, cache_index, layer_cache):
        cfg = self.config
        dtype, pdtype = dtype_of(cfg.compute_dtype), dtype_of(cfg.param_dtype)
        h = RMSNorm(cfg.norm_eps, dtype, pdtype, name="input_layernorm")(x)
        attn, new_cache = Attention(cfg, name="self_attn")(
            h, cos, sin, mask, layer_cache, cache_index
        )
        x = x + attn
        h = RMSNorm(cfg.norm_eps, dtype, pdtype, name="post_attention_layernorm")(x)
        return x + MLP(cfg, name="mlp")(h), new_cache


class Decoder(nn.Module):
    """Causal LM. ``mesh`` (optional) adds activation sharding constraints from ``rules``."""

    config: ModelConfig
    remat_policy: str = "none"
    mesh: Mesh | None = None
    rules: Rules = DEFAULT_RULES
    scan_layers: bool = True

    def _constrain(self, x: jnp.ndarray, axes: tuple[str | None, ...]) -> jnp.ndarray:
        if self.mesh is None:
            return x
        spec = logical_to_spec(axes, x.shape, self.mesh, self.rules)
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))

    @nn.compact
    def __call__(
        self,
        tokens: jnp.ndarray,
        positions: jnp.ndarray,
        segment_ids: jnp.ndarray | None = None,
        cache: KVCache | None = None,
        return_hidden: bool = False,
    ) -> tuple[jnp.ndarray, KVCache | None]:
        """tokens, positions, segment_ids ``[batch, seq]`` int32 -> logits ``[batch, seq, vocab]``
        float32 (or the final hidden states ``[batch, seq, hidden]`` with ``return_hidden``), new cache.
        """
        cfg = self.config
        dtype, pdtype = dtype_of(cfg.compute_dtype), dtype_of(cfg.param_dtype)
        if segment_ids is None:
            segment_ids = jnp.ones_like(tokens)
        embed = nn.Embed(
            cfg.vocab_size,
            cfg.hidden_size,
            dtype=dtype,
            param_dtype=pdtype,
            embedding_init=nn.with_logical_partitioning(
                nn.initializers.normal(stddev=0.02), ("vocab", "embed")
            ),
            name="embed_tokens",
        )
        x = self._constrain(embed(tokens), ("batch", "seq", "embed"))
        cos, sin = cos_sin(cfg, positions)

        seq = tokens.shape[1]
        if cache is None:
            index = jnp.arange(seq)
            mask = attention_mask(segment_ids, segment_ids, index, index)
            cache_index, layer_caches, kv_segments = None, None, None
        else:
            cache_index = cache.index
            kv_segments = jax.lax.dynamic_update_slice(
                cache.segment_ids, segment_ids.astype(jnp.int32), (0, cache_index)
            )
            mask = attention_mask(
                segment_ids, kv_segments, cache_index + jnp.arange(seq), jnp.arange(cache.max_len)
            )
            layer_caches = (cache.k, cache.v)

        block = Block
        if self.remat_policy != "none":
            block = nn.remat(Block, policy=REMAT_POLICIES[self.remat_policy], prevent_cse=False)
        if self.scan_layers:
            blocks = nn.scan(
                block,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast, 0),
                length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(cfg, name="layers")
            x, new_layer_caches = blocks(x, cos, sin, mask, cache_index, layer_caches)
        else:
            new_caches = []
            for i in range(cfg.num_layers):
                layer_cache = (
                    None if layer_caches is None else (layer_caches[0][i], layer_caches[1][i])
                )
                x, c = block(cfg, name=f"layers_{i}")(x, cos, sin, mask, cache_index, layer_cache)
                new_caches.append(c)
            new_layer_caches = None
            if layer_caches is not None:
                new_layer_caches = tuple(jnp.stack([c[j] for c in new_caches]) for j in (0, 1))
        x = RMSNorm(cfg.norm_eps, dtype, pdtype, name="norm")(x)

        new_cache = None
        if cache is not None:
            k, v = new_layer_caches
            new_cache = KVCache(k=k, v=v, segment_ids=kv_segments, index=cache_index + seq)
        if return_hidden:
            return x, new_cache
        if cfg.tie_embeddings:
            logits = embed.attend(x)
        else:
            logits = Dense(cfg.vocab_size, ("embed", "vocab"), dtype, pdtype, name="lm_head")(x)
        logits = self._constrain(logits, ("batch", "seq", "vocab"))
        return logits.astype(jnp.float32), new_cache

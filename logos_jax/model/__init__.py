"""The LOGOS decoder and the helpers that create its parameters directly sharded on a mesh."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from logos_jax.config import ModelConfig
from logos_jax.model.decoder import REMAT_POLICIES, Decoder, KVCache, init_cache
from logos_jax.sharding import DEFAULT_RULES, Rules, tree_shardings

__all__ = [
    "REMAT_POLICIES",
    "Decoder",
    "KVCache",
    "abstract_params",
    "head_kernel",
    "init_cache",
    "init_params",
    "logical_axes",
    "param_shardings",
]


def _boxed_shapes(config: ModelConfig) -> Any:
    dummy = jnp.zeros((1, 1), jnp.int32)
    return jax.eval_shape(lambda: Decoder(config).init(jax.random.key(0), dummy, dummy)["params"])


def logical_axes(config: ModelConfig) -> Any:
    """Tree (like params) of logical-axis tuples, e.g. ``("layers", "embed", "q_heads")``."""
    specs = nn.get_partition_spec(_boxed_shapes(config))
    return jax.tree.map(tuple, specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))


def abstract_params(
    config: ModelConfig, mesh: Mesh | None = None, rules: Rules = DEFAULT_RULES
) -> Any:
    """Tree of ``jax.ShapeDtypeStruct`` (with shardings when ``mesh`` is given): a restore target."""
    shapes = nn.meta.unbox(_boxed_shapes(config))
    if mesh is None:
        return shapes
    shardings = tree_shardings(logical_axes(config), shapes, mesh, rules)
    return jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings
    )


def param_shardings(config: ModelConfig, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """NamedSharding for every parameter."""
    shapes = nn.meta.unbox(_boxed_shapes(config))
    return tree_shardings(logical_axes(config), shapes, mesh, rules)


def init_params(
    config: ModelConfig, rng: jax.Array, mesh: Mesh | None = None, rules: Rules = DEFAULT_RULES
) -> Any:
    """Random parameters, created directly in their shards (never whole on one device)."""
    dummy = jnp.zeros((1, 1), jnp.int32)

    def init(key):
        return nn.meta.unbox(Decoder(config).init(key, dummy, dummy)["params"])

    out_shardings = None if mesh is None else param_shardings(config, mesh, rules)
    return jax.jit(init, out_shardings=out_shardings)(rng)


def head_kernel(config: ModelConfig, params: Any) -> jax.Array:
    """The output projection ``[hidden, vocab]``: the embedding transposed when tied.

    For code that computes logits from ``Decoder(..., return_hidden=True)`` states itself (chunked
    losses, last-position-only logits in the sampler); ``Decoder`` applies the same projection.
    """
    if config.tie_embeddings:
        return params["embed_tokens"]["embedding"].T
    return params["lm_head"]["kernel"]

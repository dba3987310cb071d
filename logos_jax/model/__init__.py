"""The LOGOS decoder and the helpers that create its parameters directly sharded on a mesh."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from logos_jax.config import ModelConfig
from logos_jax.model.attention import PagedKV
from logos_jax.model.decoder import REMAT_POLICIES, Decoder
from logos_jax.sharding import DEFAULT_RULES, Rules, tree_shardings

__all__ = [
    "REMAT_POLICIES",
    "Decoder",
    "PagedKV",
    "abstract_params",
    "head_kernel",
    "init_params",
    "logical_axes",
    "param_shardings",
    "stack_layers",
    "to_layer_layout",
    "unstack_layers",
]


def _boxed_shapes(config: ModelConfig, scan_layers: bool) -> Any:
    dummy = jnp.zeros((1, 1), jnp.int32)
    model = Decoder(config, scan_layers=scan_layers)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), dummy, dummy)["params"])


def logical_axes(config: ModelConfig, scan_layers: bool = True) -> Any:
    """Tree (like params) of logical-axis tuples, e.g. ``("layers", "embed", "q_heads")``."""
    specs = nn.get_partition_spec(_boxed_shapes(config, scan_layers))
    return jax.tree.map(tuple, specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))


def abstract_params(
    config: ModelConfig,
    mesh: Mesh | None = None,
    rules: Rules = DEFAULT_RULES,
    scan_layers: bool = True,
) -> Any:
    """Tree of ``jax.ShapeDtypeStruct`` (with shardings when ``mesh`` is given): a restore target."""
    shapes = nn.meta.unbox(_boxed_shapes(config, scan_layers))
    if mesh is None:
        return shapes
    shardings = tree_shardings(logical_axes(config, scan_layers), shapes, mesh, rules)
    return jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings
    )


def param_shardings(
    config: ModelConfig, mesh: Mesh, rules: Rules = DEFAULT_RULES, scan_layers: bool = True
) -> Any:
    """NamedSharding for every parameter."""
    shapes = nn.meta.unbox(_boxed_shapes(config, scan_layers))
    return tree_shardings(logical_axes(config, scan_layers), shapes, mesh, rules)


def init_params(
    config: ModelConfig,
    rng: jax.Array,
    mesh: Mesh | None = None,
    rules: Rules = DEFAULT_RULES,
    scan_layers: bool = True,
) -> Any:
    """Random parameters, created directly in their shards (never whole on one device).

    The values do not depend on ``scan_layers`` (only the tree layout does; see ``unstack_layers``).
    """
    dummy = jnp.zeros((1, 1), jnp.int32)

    def init(key):
        params = nn.meta.unbox(Decoder(config).init(key, dummy, dummy)["params"])
        return params if scan_layers else unstack_layers(params, config.num_layers)

    out_shardings = None if mesh is None else param_shardings(config, mesh, rules, scan_layers)
    return jax.jit(init, out_shardings=out_shardings)(rng)


def unstack_layers(params: dict, num_layers: int) -> dict:
    """Stacked ``layers`` (leaves ``[layers, ...]``) -> one ``layers_{i}`` subtree per block."""
    out = {k: v for k, v in params.items() if k != "layers"}
    for i in range(num_layers):
        out[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], params["layers"])
    return out


def stack_layers(params: dict, num_layers: int) -> dict:
    """Inverse of ``unstack_layers``: per-block ``layers_{i}`` subtrees -> stacked ``layers``."""
    blocks = [params[f"layers_{i}"] for i in range(num_layers)]
    out = {k: v for k, v in params.items() if not k.startswith("layers_")}
    out["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
    return out


def to_layer_layout(
    params: dict,
    config: ModelConfig,
    mesh: Mesh,
    scan_layers: bool,
    rules: Rules = DEFAULT_RULES,
) -> dict:
    """``params`` (either layout) in the stacked (``scan_layers``) or per-layer one, sharded on
    ``mesh``. Only the blocks are copied into the new layout; the other leaves pass through as
    they are (no buffer is donated: stacked and per-layer leaves differ in shape, so XLA could
    reuse none of them)."""
    if ("layers" in params) == scan_layers:
        return params
    convert = stack_layers if scan_layers else unstack_layers
    rest = {k: v for k, v in params.items() if k != "layers" and not k.startswith("layers_")}
    blocks = {k: v for k, v in params.items() if k not in rest}
    shardings = param_shardings(config, mesh, rules, scan_layers)
    converted = jax.jit(
        lambda b: convert(b, config.num_layers),
        out_shardings={k: v for k, v in shardings.items() if k not in rest},
    )(blocks)
    return {**rest, **converted}


def head_kernel(config: ModelConfig, params: Any) -> jax.Array:
    """The output projection ``[hidden, vocab]``: the embedding transposed when tied.

    For code that computes logits from ``Decoder(..., return_hidden=True)`` states itself (chunked
    losses, last-position-only logits in the sampler); ``Decoder`` applies the same projection.
    """
    if config.tie_embeddings:
        return params["embed_tokens"]["embedding"].T
    return params["lm_head"]["kernel"]

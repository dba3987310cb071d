"""The LOGOS decoder and its parameters (created directly sharded on a mesh), all derived from the
parameter table (``logos_jax.params``): nothing traces the model to learn its shapes."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding

from logos_jax.config import ModelConfig
from logos_jax.model.attention import PagedKV
from logos_jax.model.decoder import REMAT_POLICIES, Decoder
from logos_jax.params import INIT_STDDEV, build_tree, param_table, role_of, set_path
from logos_jax.sharding import DEFAULT_RULES, Rules, logical_to_spec

__all__ = [
    "REMAT_POLICIES",
    "Decoder",
    "PagedKV",
    "abstract_params",
    "init_params",
    "kernels_to_in_out",
    "logical_axes",
    "param_shardings",
    "stack_layers",
    "to_layer_stacking",
    "unstack_layers",
]


def logical_axes(config: ModelConfig, scan_layers: bool = True) -> Any:
    """Tree (like params) of logical-axis tuples, e.g. ``("layers", "q_heads", "embed")``."""
    return build_tree(config, lambda info, shape, axes: axes, scan_layers)


def param_shardings(
    config: ModelConfig, mesh: Mesh, rules: Rules = DEFAULT_RULES, scan_layers: bool = True
) -> Any:
    """NamedSharding for every parameter."""

    def leaf(info, shape, axes):
        return NamedSharding(mesh, logical_to_spec(axes, shape, mesh, rules))

    return build_tree(config, leaf, scan_layers)


def abstract_params(
    config: ModelConfig,
    mesh: Mesh | None = None,
    rules: Rules = DEFAULT_RULES,
    scan_layers: bool = True,
) -> Any:
    """Tree of ``jax.ShapeDtypeStruct`` (with shardings when ``mesh`` is given): a restore target."""

    def leaf(info, shape, axes):
        sharding = None
        if mesh is not None:
            sharding = NamedSharding(mesh, logical_to_spec(axes, shape, mesh, rules))
        return jax.ShapeDtypeStruct(shape, jnp.dtype(info.dtype), sharding=sharding)

    return build_tree(config, leaf, scan_layers)


def init_params(
    config: ModelConfig,
    rng: jax.Array,
    mesh: Mesh | None = None,
    rules: Rules = DEFAULT_RULES,
    scan_layers: bool = True,
) -> Any:
    """Random parameters from the table's initialisers, created directly in their shards (never
    whole on one device). The values do not depend on ``scan_layers`` (only the tree's stacking does)."""

    def init(key):
        params: dict = {}
        for n, (path, info) in enumerate(param_table(config).items()):
            shape, dtype = info.stacked_shape(config.num_layers), jnp.dtype(info.dtype)
            if info.init == "ones":
                value = jnp.ones(shape, dtype)
            else:
                value = INIT_STDDEV * jax.random.normal(jax.random.fold_in(key, n), shape, dtype)
            set_path(params, path, value)
        return params if scan_layers else unstack_layers(params, config.num_layers)

    out_shardings = None if mesh is None else param_shardings(config, mesh, rules, scan_layers)
    return jax.jit(init, out_shardings=out_shardings)(rng)


def unstack_layers(params: dict, num_layers: int) -> dict:
    """Stacked ``layers`` (leaves ``[layers, ...]``) -> one ``layers_{i}`` subtree per block."""
    out = {k: v for k, v in params.items() if k != "layers"}
    for i in range(num_layers):
        out[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], params["layers"])
    return out


def kernels_to_in_out(params: dict) -> dict:
    """The blocks' linear kernels (table role ``kernel``) from ``[..., out, in]`` to ``[..., in, out]``,
    every other leaf as it is: the tree ``Decoder(kernels_in_out=True)`` reads."""

    def relayout(path: tuple, leaf: jax.Array) -> jax.Array:
        kernel = role_of(tuple(key.key for key in path)) == "kernel"
        return jnp.swapaxes(leaf, -1, -2) if kernel else leaf

    return jax.tree_util.tree_map_with_path(relayout, params)


def stack_layers(params: dict, num_layers: int) -> dict:
    """Inverse of ``unstack_layers``: per-block ``layers_{i}`` subtrees -> stacked ``layers``."""
    blocks = [params[f"layers_{i}"] for i in range(num_layers)]
    out = {k: v for k, v in params.items() if not k.startswith("layers_")}
    out["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
    return out


def to_layer_stacking(
    params: dict,
    config: ModelConfig,
    mesh: Mesh,
    scan_layers: bool,
    rules: Rules = DEFAULT_RULES,
) -> dict:
    """``params`` (stacked or per-layer) restacked into the stacked (``scan_layers``) or per-layer
    tree, sharded on ``mesh``. Only the blocks are copied into the new stacking; the other leaves pass through as
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

"""The one HF <-> JAX parameter table, used in both directions.

Each entry names an HF tensor (``{i}`` = layer index for per-layer tensors), its shape in config sizes,
the path of the JAX parameter, and whether the kernel is transposed. Per-layer tensors are stacked along
axis 0 of the JAX parameter. Nothing else happens in conversion: no permutations, no query scaling.
Shapes come from the config alone (no JAX), so ``hf2jax`` never needs to build the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from logos_jax.config import ModelConfig


@dataclass(frozen=True)
class ParamEntry:
    hf_name: str  # may contain "{i}"
    hf_dims: tuple[str, ...]  # HF tensor shape, as keys of ``sizes(config)``
    path: tuple[str, ...]  # path in the params tree
    transpose: bool = False

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.hf_name


def sizes(config: ModelConfig) -> dict[str, int]:
    """The dimensions HF tensor shapes are made of."""
    return {
        "vocab": config.vocab_size,
        "hidden": config.hidden_size,
        "q": config.num_heads * config.head_dim,
        "kv": config.num_kv_heads * config.head_dim,
        "mlp": config.intermediate_size,
        "head_dim": config.head_dim,
    }


_LAYER = "model.layers.{i}."
_ATTN_DIMS = {
    "q_proj": ("q", "hidden"),
    "k_proj": ("kv", "hidden"),
    "v_proj": ("kv", "hidden"),
    "o_proj": ("hidden", "q"),
}
_MLP_DIMS = {
    "gate_proj": ("mlp", "hidden"),
    "up_proj": ("mlp", "hidden"),
    "down_proj": ("hidden", "mlp"),
}
_TABLE = (
    ParamEntry("model.embed_tokens.weight", ("vocab", "hidden"), ("embed_tokens", "embedding")),
    ParamEntry("model.norm.weight", ("hidden",), ("norm", "scale")),
    *(
        ParamEntry(_LAYER + f"{p}.weight", ("hidden",), ("layers", p, "scale"))
        for p in ("input_layernorm", "post_attention_layernorm")
    ),
    *(
        ParamEntry(_LAYER + f"self_attn.{p}.weight", d, ("layers", "self_attn", p, "kernel"), True)
        for p, d in _ATTN_DIMS.items()
    ),
    *(
        ParamEntry(_LAYER + f"mlp.{p}.weight", d, ("layers", "mlp", p, "kernel"), True)
        for p, d in _MLP_DIMS.items()
    ),
)
_QK_NORM = tuple(
    ParamEntry(_LAYER + f"self_attn.{p}.weight", ("head_dim",), ("layers", "self_attn", p, "scale"))
    for p in ("q_norm", "k_norm")
)
_LM_HEAD = ParamEntry("lm_head.weight", ("vocab", "hidden"), ("lm_head", "kernel"), True)

# Tensors some HF files carry that are not parameters (recomputed buffers).
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def param_table(config: ModelConfig) -> tuple[ParamEntry, ...]:
    """The entries that exist for this config."""
    entries = _TABLE + (_QK_NORM if config.qk_norm else ())
    return entries + (() if config.tie_embeddings else (_LM_HEAD,))


def hf_tensors(config: ModelConfig) -> Iterator[tuple[str, ParamEntry, int | None]]:
    """Every HF tensor name with its entry and layer index (None for whole tensors)."""
    for entry in param_table(config):
        if entry.per_layer:
            for i in range(config.num_layers):
                yield entry.hf_name.format(i=i), entry, i
        else:
            yield entry.hf_name, entry, None


def hf_shape(entry: ParamEntry, config: ModelConfig) -> tuple[int, ...]:
    """The shape of one HF tensor of ``entry`` (one layer's, for per-layer entries)."""
    dims = sizes(config)
    return tuple(dims[d] for d in entry.hf_dims)


def jax_shape(entry: ParamEntry, config: ModelConfig) -> tuple[int, ...]:
    """The shape of ``entry``'s JAX parameter: the HF shape transposed, stacked over layers."""
    shape = hf_shape(entry, config)
    shape = tuple(reversed(shape)) if entry.transpose else shape
    return (config.num_layers, *shape) if entry.per_layer else shape


def get_path(tree: dict, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def hf_view(tree: dict, entry: ParamEntry, layer: int | None) -> np.ndarray:
    """One HF tensor of ``entry`` read from a params-shaped ``tree`` (params, grads): its layer's
    slice of the stacked leaf, transposed back for kernels (a view; host copy of that slice only)."""
    leaf = get_path(tree, entry.path)
    value = np.asarray(leaf[layer] if layer is not None else leaf)
    return value.T if entry.transpose else value

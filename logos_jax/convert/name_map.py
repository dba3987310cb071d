"""The one HF <-> JAX parameter table, used in both directions.

Each entry names an HF tensor (``{i}`` = layer index for per-layer tensors), the path of the JAX
parameter, and whether the kernel is transposed. Per-layer tensors are stacked along axis 0 of the JAX
parameter. Nothing else happens in conversion: no permutations, no query scaling.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from logos_jax.config import ModelConfig


@dataclass(frozen=True)
class ParamEntry:
    hf_name: str  # may contain "{i}"
    path: tuple[str, ...]  # path in the params tree
    transpose: bool = False

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.hf_name


_LAYER = "model.layers.{i}."
_TABLE = (
    ParamEntry("model.embed_tokens.weight", ("embed_tokens", "embedding")),
    ParamEntry("model.norm.weight", ("norm", "scale")),
    ParamEntry(_LAYER + "input_layernorm.weight", ("layers", "input_layernorm", "scale")),
    ParamEntry(
        _LAYER + "post_attention_layernorm.weight", ("layers", "post_attention_layernorm", "scale")
    ),
    *(
        ParamEntry(_LAYER + f"self_attn.{p}.weight", ("layers", "self_attn", p, "kernel"), True)
        for p in ("q_proj", "k_proj", "v_proj", "o_proj")
    ),
    *(
        ParamEntry(_LAYER + f"mlp.{p}.weight", ("layers", "mlp", p, "kernel"), True)
        for p in ("gate_proj", "up_proj", "down_proj")
    ),
)
_QK_NORM = tuple(
    ParamEntry(_LAYER + f"self_attn.{p}.weight", ("layers", "self_attn", p, "scale"))
    for p in ("q_norm", "k_norm")
)
_LM_HEAD = ParamEntry("lm_head.weight", ("lm_head", "kernel"), True)

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


def hf_shape(entry: ParamEntry, jax_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The HF tensor shape for a JAX parameter shape (one layer's slice, transposed back)."""
    shape = jax_shape[1:] if entry.per_layer else jax_shape
    return tuple(reversed(shape)) if entry.transpose else tuple(shape)


def get_path(tree: dict, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree

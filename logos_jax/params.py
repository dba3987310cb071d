"""The parameter table: the one place the model's parameters are described (no JAX here).

One ``ParamInfo`` per tensor: its path in the params tree, its Hugging Face name, its shape (from the
config), dtype, logical axes (see ``logos_jax.sharding``), initialiser and role. Tensors are stored
in the HF files' axis order (Linear weights ``[out, in]``), so a checkpoint converts by copying
bytes. Everything else is derived from this table: the abstract restore target and the shardings
(``logos_jax.model``), ``init_params``, the HF name map in both directions (``hf_tensors``,
``from_hf_name``), the weight-decay mask (``decays``), the LM head (``head_path``), the vocabulary
resize (``vocab_paths``) and the stacked / per-layer restacking (``per_layer``).

Per-layer tensors are stacked along a leading ``layers`` axis under ``layers`` (``scan_layers``), or
held as one ``layers_{i}`` subtree per block; ``ParamInfo.shape`` is one layer's shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from logos_jax.config import ModelConfig

LAYERS = "layers"  # the stacked subtree (and the logical axis of its leading dimension)
INIT_STDDEV = 0.02  # ``normal`` initialiser
# Tensors some HF files carry that are not parameters (recomputed buffers).
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
# Tensor roles: ``kernel`` (decays), ``embedding`` / ``head`` (decay only with decay_embeddings),
# ``norm`` (never decays; initialised to ones).
ROLES = ("kernel", "embedding", "head", "norm")


@dataclass(frozen=True)
class ParamInfo:
    """One tensor. ``dims`` name its dimensions (keys of ``sizes``), in the order of both the HF
    file and the params tree; ``axes`` are their logical axes; ``shape`` is one layer's."""

    path: tuple[str, ...]  # stacked tree: ("layers", "self_attn", "q_proj", "weight")
    hf_name: str  # "model.layers.{i}.self_attn.q_proj.weight" ({i}: layer index)
    dims: tuple[str, ...]
    axes: tuple[str | None, ...]
    role: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def per_layer(self) -> bool:
        return self.path[0] == LAYERS

    @property
    def init(self) -> str:
        """``ones`` for norm scales, ``normal`` (stddev ``INIT_STDDEV``) for the rest."""
        return "ones" if self.role == "norm" else "normal"

    def stacked_shape(self, num_layers: int) -> tuple[int, ...]:
        return (num_layers, *self.shape) if self.per_layer else self.shape

    def stacked_axes(self) -> tuple[str | None, ...]:
        return (LAYERS, *self.axes) if self.per_layer else self.axes

    def hf_tensor(self, layer: int | None) -> str:
        return self.hf_name.format(i=layer)


def sizes(config: ModelConfig) -> dict[str, int]:
    """The dimensions tensor shapes are made of."""
    return {
        "vocab": config.vocab_size,
        "hidden": config.hidden_size,
        "q": config.num_heads * config.head_dim,
        "kv": config.num_kv_heads * config.head_dim,
        "mlp": config.intermediate_size,
        "head_dim": config.head_dim,
    }


# dims -> logical axes
_AXES = {
    "vocab": "vocab",
    "hidden": "embed",
    "q": "q_heads",
    "kv": "kv_heads",
    "mlp": "mlp",
    "head_dim": "head_dim",
}
_LAYER = "model.layers.{i}."
# (path, HF name, dims, role); norms' axes are "norm" (or "head_dim"), not their dims' axes.
_ENTRIES: tuple[tuple[tuple[str, ...], str, tuple[str, ...], str], ...] = (
    (("embed_tokens", "embedding"), "model.embed_tokens.weight", ("vocab", "hidden"), "embedding"),
    (("norm", "scale"), "model.norm.weight", ("hidden",), "norm"),
    *(
        ((LAYERS, n, "scale"), f"{_LAYER}{n}.weight", ("hidden",), "norm")
        for n in ("input_layernorm", "post_attention_layernorm")
    ),
    *(
        ((LAYERS, "self_attn", n, "weight"), f"{_LAYER}self_attn.{n}.weight", d, "kernel")
        for n, d in (
            ("q_proj", ("q", "hidden")),
            ("k_proj", ("kv", "hidden")),
            ("v_proj", ("kv", "hidden")),
            ("o_proj", ("hidden", "q")),
        )
    ),
    *(
        ((LAYERS, "mlp", n, "weight"), f"{_LAYER}mlp.{n}.weight", d, "kernel")
        for n, d in (
            ("gate_proj", ("mlp", "hidden")),
            ("up_proj", ("mlp", "hidden")),
            ("down_proj", ("hidden", "mlp")),
        )
    ),
)
_QK_NORM = tuple(
    ((LAYERS, "self_attn", n, "scale"), f"{_LAYER}self_attn.{n}.weight", ("head_dim",), "norm")
    for n in ("q_norm", "k_norm")
)
_LM_HEAD = (("lm_head", "weight"), "lm_head.weight", ("vocab", "hidden"), "head")


def _axes(dims: tuple[str, ...], role: str) -> tuple[str, ...]:
    if role == "norm":
        return ("head_dim",) if dims == ("head_dim",) else ("norm",)
    return tuple(_AXES[d] for d in dims)


@lru_cache(maxsize=64)
def param_table(config: ModelConfig) -> dict[tuple[str, ...], ParamInfo]:
    """Every tensor of ``config``'s model, by path (stacked tree), in a fixed order."""
    entries = _ENTRIES + (_QK_NORM if config.qk_norm else ())
    entries += () if config.tie_embeddings else (_LM_HEAD,)
    dims = sizes(config)
    return {
        path: ParamInfo(
            path,
            hf_name,
            names,
            _axes(names, role),
            role,
            tuple(dims[d] for d in names),
            config.param_dtype,
        )
        for path, hf_name, names, role in entries
    }


def layer_path(path: tuple[str, ...], layer: int | None) -> tuple[str, ...]:
    """``path`` (stacked) in the per-layer tree: ``layers`` -> ``layers_{layer}``."""
    return path if layer is None else (f"{LAYERS}_{layer}", *path[1:])


def stacked_path(path: tuple[str, ...]) -> tuple[str, ...]:
    """Inverse of ``layer_path``: any tree path (stacked or per-layer) -> its table key."""
    head = path[0]
    if head.startswith(f"{LAYERS}_") and head[len(LAYERS) + 1 :].isdigit():
        return (LAYERS, *path[1:])
    return tuple(path)


def info_at(config_or_table: Any, path: tuple[str, ...]) -> ParamInfo:
    """The entry of a tree path (stacked or per-layer)."""
    table = config_or_table
    if isinstance(config_or_table, ModelConfig):
        table = param_table(config_or_table)
    return table[stacked_path(path)]


def hf_tensors(config: ModelConfig) -> Iterator[tuple[str, ParamInfo, int | None]]:
    """Every HF tensor name with its entry and layer index (None for whole tensors)."""
    for info in param_table(config).values():
        layers = range(config.num_layers) if info.per_layer else (None,)
        for layer in layers:
            yield info.hf_tensor(layer), info, layer


def hf_names(config: ModelConfig) -> dict[str, tuple[ParamInfo, int | None]]:
    """HF tensor name -> (entry, layer): the map from HF to the params tree."""
    return {name: (info, layer) for name, info, layer in hf_tensors(config)}


def from_hf_name(config: ModelConfig, name: str) -> tuple[tuple[str, ...], int | None]:
    """HF tensor name -> (path in the stacked tree, layer index or None); KeyError if unknown."""
    info, layer = hf_names(config)[name]
    return info.path, layer


def head_path(config: ModelConfig) -> tuple[str, ...]:
    """The tensor logits are computed with (``[vocab, hidden]``): the embedding when tied."""
    return ("embed_tokens", "embedding") if config.tie_embeddings else _LM_HEAD[0]


def vocab_paths(config: ModelConfig) -> list[tuple[str, ...]]:
    """The tensors with a vocabulary axis (axis 0), which a vocabulary resize grows."""
    return [p for p, info in param_table(config).items() if info.dims[0] == "vocab"]


_ROLES = {path: role for path, _, _, role in (*_ENTRIES, *_QK_NORM, _LM_HEAD)}


def role_of(path: tuple[str, ...]) -> str:
    """The role of the tensor at a tree path (stacked or per-layer; any config: roles follow paths)."""
    return _ROLES[stacked_path(path)]


def decays(role: str, decay_embeddings: bool) -> bool:
    """Whether weight decay applies to a tensor of ``role``."""
    if role == "kernel":
        return True
    return decay_embeddings and role in ("embedding", "head")


def get_path(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def set_path(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def build_tree(config: ModelConfig, leaf: Any, scan_layers: bool = True) -> dict:
    """A params-shaped tree of ``leaf(info, shape, axes)``, stacked or per-layer (the one builder every
    derived tree goes through: abstract params, shardings, logical axes)."""
    tree: dict = {}
    for path, info in param_table(config).items():
        if info.per_layer and not scan_layers:
            for i in range(config.num_layers):
                set_path(tree, layer_path(path, i), leaf(info, info.shape, info.axes))
        else:
            shape = info.stacked_shape(config.num_layers)
            set_path(tree, path, leaf(info, shape, info.stacked_axes()))
    return tree


def hf_view(tree: dict, info: ParamInfo, layer: int | None) -> Any:
    """One HF tensor of ``info`` read from a stacked params-shaped ``tree`` (params, grads): its
    layer's slice of the stacked leaf, as a host array (no transpose: the axis orders are the same)."""
    import numpy as np

    leaf = get_path(tree, info.path)
    return np.asarray(leaf[layer] if layer is not None else leaf)

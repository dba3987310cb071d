"""The decode engine's device state: the KV page pool and a fixed table of sample slots.

Everything here is a pytree of arrays with a leading slot axis (``[slots, ...]``) or the page
pool (per layer, laid out as the decode kernel's ``KVLayout`` says); the jitted programs in
``logos_jax.engine.programs`` take it donated and return it updated in place.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp

from logos_jax.config import ModelConfig
from logos_jax.model.attention import KVLayout
from logos_jax.model.layers import dtype_of

__all__ = ["EngineState", "Slots", "init_state", "page_shapes", "select_slots"]


@flax.struct.dataclass
class Slots:
    """One row per sample being decoded (``[slots, ...]``).

    ``logits`` predict the row's next token; ``seq_len`` counts the tokens already in its pages
    (prompt + generated so far: the next token goes at that position); ``step`` counts generated
    tokens. ``active`` rows decode; a row that stops sets ``finished`` (and ``stopped`` when a stop
    id ended it) and goes idle until the driver admits a new sample into it.
    """

    logits: jax.Array  # [slots, vocab] float32
    seq_len: jax.Array  # [slots] int32
    step: jax.Array  # [slots] int32
    active: jax.Array  # [slots] bool
    finished: jax.Array  # [slots] bool
    stopped: jax.Array  # [slots] bool
    keys: jax.Array  # [slots] PRNG keys (one per sample: seed and sample index folded in)
    out_tokens: jax.Array  # [slots, max_new] int32
    out_logprobs: jax.Array  # [slots, max_new] float32
    seen: jax.Array | None  # [slots, vocab] bool (repetition penalty only)
    constraint_state: Any  # pytree with leading dim slots, or None
    drafted: jax.Array  # [slots] int32: speculative drafts offered so far (see Programs)
    accepted: jax.Array  # [slots] int32: ...and accepted


@flax.struct.dataclass
class EngineState:
    k: tuple[jax.Array, ...]  # per layer, ``KVLayout.k.shape`` (v: ``KVLayout.v.shape``)
    v: tuple[jax.Array, ...]
    slots: Slots


def page_shapes(
    config: ModelConfig, layout: KVLayout, num_pages: int, page_size: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """One layer's key pages' shape and value pages' shape, as ``layout`` lays them out."""
    sizes = (num_pages, config.num_kv_heads, page_size, config.head_dim)
    return layout.k.shape(*sizes), layout.v.shape(*sizes)


def init_state(
    config: ModelConfig,
    *,
    num_slots: int,
    num_pages: int,
    page_size: int,
    layout: KVLayout,
    max_new_tokens: int,
    track_seen: bool,
    constraint_state: Any = None,
) -> EngineState:
    """Empty pages and idle slots. ``constraint_state``: one row's start state (broadcast to all)."""
    k_shape, v_shape = page_shapes(config, layout, num_pages, page_size)
    dtype = dtype_of(config.compute_dtype)
    vocab = config.vocab_size

    def zeros(dtype: Any) -> jax.Array:  # a new buffer each (the programs donate every leaf)
        return jnp.zeros((num_slots,), dtype)

    cstate = None
    if constraint_state is not None:
        cstate = jax.tree.map(
            lambda x: jnp.broadcast_to(jnp.asarray(x), (num_slots, *jnp.shape(x))),
            constraint_state,
        )
    slots = Slots(
        logits=jnp.zeros((num_slots, vocab), jnp.float32),
        seq_len=zeros(jnp.int32),
        step=zeros(jnp.int32),
        active=zeros(bool),
        finished=zeros(bool),
        stopped=zeros(bool),
        keys=jax.random.split(jax.random.key(0), num_slots),
        out_tokens=jnp.zeros((num_slots, max_new_tokens), jnp.int32),
        out_logprobs=jnp.zeros((num_slots, max_new_tokens), jnp.float32),
        seen=jnp.zeros((num_slots, vocab), bool) if track_seen else None,
        constraint_state=cstate,
        drafted=zeros(jnp.int32),
        accepted=zeros(jnp.int32),
    )
    layers = range(config.num_layers)
    return EngineState(
        k=tuple(jnp.zeros(k_shape, dtype) for _ in layers),
        v=tuple(jnp.zeros(v_shape, dtype) for _ in layers),
        slots=slots,
    )


def select_slots(slots: Slots, order: jax.Array, active: jax.Array) -> Slots:
    """The slots ``order`` ``[width]`` (a new table of ``width`` rows, in that order), with
    ``active`` ``[width]`` bool: rows keep everything they carry (keys, steps, tokens), so a row
    decodes the same wherever it sits."""
    picked = jax.tree.map(lambda x: jnp.take(x, order, axis=0), slots)
    return picked.replace(active=active)

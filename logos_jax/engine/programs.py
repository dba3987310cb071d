"""The engine's jitted programs, pure functions of (params, state, small host arrays).

- ``prefill``: one chunk of one prompt into its pages; returns the last position's logits and
  (for ``full_perplexity``) the chunk's prompt log-prob.
- ``admit``: put samples of a prefilled prompt into idle slots (their page tables reference the
  prompt's pages; the prompt's partly filled last page is copied into each sample's first page).
- ``decode``: a ``while_loop`` of up to ``steps`` decode steps over all slots; it stops early once
  ``refill_at`` rows have finished, so the driver can give their slots to pending samples.

The state is donated to every program: KV pages and slot arrays are updated in place, and no step
copies a cache-sized buffer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from logos_jax.config import ModelConfig
from logos_jax.engine.state import PAGE_AXES, EngineState
from logos_jax.model import Decoder, PagedKV, head_kernel
from logos_jax.model.layers import dtype_of
from logos_jax.sample.constraints import Constraint
from logos_jax.sample.processors import NEG_INF, SamplingConfig, sample_token
from logos_jax.sharding import DEFAULT_RULES, Rules, constrain

PROMPT_LOGPROB_CHUNK = 16
Pages = tuple[jax.Array, ...]  # one [kv_heads, pages, page_size, head_dim] array per layer


def copy_pages(pages: Pages, src: jax.Array, dst: jax.Array) -> Pages:
    """Page ``src[i]`` copied to page ``dst[i]`` in every layer (``[n]`` each)."""
    return tuple(x.at[:, dst].set(x[:, src]) for x in pages)


def lm_head(config: ModelConfig, params: Any, hidden: jax.Array) -> jax.Array:
    """The decoder's output projection: hidden ``[..., hidden]`` -> logits ``[..., vocab]`` float32."""
    dtype = dtype_of(config.compute_dtype)
    weight = head_kernel(config, params).astype(dtype)
    return jnp.dot(hidden.astype(dtype), weight).astype(jnp.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class Programs:
    """What the programs close over: model, sampling settings, stop ids, vocabulary limit, mesh,
    and the paged-attention kernel for decode steps (``"xla"``, ``"pallas"``, ``"pallas_interpret"``)."""

    config: ModelConfig
    sampling: SamplingConfig
    stop_ids: tuple[int, ...]
    pad_id: int
    vocab_limit: int | None = None
    full_perplexity: bool = False
    mesh: Mesh | None = None
    rules: Rules = DEFAULT_RULES
    block_pages: int = 8
    paged_kernel: str = "xla"

    @property
    def model(self) -> Decoder:
        return Decoder(self.config, mesh=self.mesh, rules=self.rules, scan_layers=False)

    # ----- sharding (no-ops without a mesh) -----
    def constrain(self, x: jax.Array, axes: tuple[str | None, ...]) -> jax.Array:
        return constrain(x, axes, self.mesh, self.rules)

    def constrain_pages(self, k: Pages, v: Pages) -> tuple[Pages, Pages]:
        return tuple(self.constrain(x, PAGE_AXES) for x in k), tuple(
            self.constrain(x, PAGE_AXES) for x in v
        )

    def paged(
        self,
        k: Pages,
        v: Pages,
        write_page: jax.Array,
        positions: jax.Array,
        page_table: jax.Array,
        last_position: jax.Array,
    ) -> PagedKV:
        """Page addressing for tokens at ``positions`` ``[rows, seq]``; attention reads the page
        blocks up to ``last_position`` [], the furthest position any row reaches in this call."""
        page_size = k[0].shape[2]
        block = self.block_pages * page_size
        return PagedKV(
            k,
            v,
            write_page,
            positions % page_size,
            positions,
            page_table,
            last_position // block + 1,
            self.block_pages,
            self.paged_kernel,
        )

    # ----- prefill -----
    def prefill(
        self,
        params: Any,
        k: Pages,
        v: Pages,
        tokens: jax.Array,
        positions: jax.Array,
        write_page: jax.Array,
        page_table: jax.Array,
        last: jax.Array,
        targets: jax.Array,
    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """One prompt chunk: tokens, positions, write_page ``[1, chunk]`` (padding writes to the
        scratch page), page_table ``[1, max_pages]``, ``last`` [] index of the chunk's last real
        token, targets ``[1, chunk]`` the next prompt token of each position (-1 = none).

        Returns (k, v, logits at ``last`` ``[vocab]``, summed log-prob of the targets [])."""
        kv = self.paged(k, v, write_page, positions, page_table, positions[0, last])
        hidden, kv = self.model.apply(
            {"params": params}, tokens, positions, kv=kv, return_hidden=True
        )
        logits = lm_head(self.config, params, hidden[0, last])
        prompt_lp = jnp.zeros((), jnp.float32)
        if self.full_perplexity:
            prompt_lp = self._target_logprob(params, hidden[0], targets[0])
        k, v = self.constrain_pages(kv.k, kv.v)
        return k, v, logits, prompt_lp

    def _target_logprob(self, params: Any, hidden: jax.Array, targets: jax.Array) -> jax.Array:
        """Sum over positions of log p(target) for hidden ``[chunk, hidden]``, targets ``[chunk]``
        (-1 = skip), in sub-chunks so ``[chunk, vocab]`` logits never exist whole."""
        n = hidden.shape[0] // PROMPT_LOGPROB_CHUNK

        def part(args):
            h, t = args
            lp = jax.nn.log_softmax(lm_head(self.config, params, h), axis=-1)
            picked = jnp.take_along_axis(lp, jnp.maximum(t, 0)[:, None], axis=-1)[:, 0]
            return jnp.sum(jnp.where(t >= 0, picked, 0.0))

        split = (
            hidden.reshape(n, PROMPT_LOGPROB_CHUNK, -1),
            targets.reshape(n, PROMPT_LOGPROB_CHUNK),
        )
        return jnp.sum(jax.lax.map(part, split))

    # ----- admission -----
    def admit(
        self,
        state: EngineState,
        mask: jax.Array,
        logits: jax.Array,
        seen: jax.Array | None,
        seq_len: jax.Array,
        keys: jax.Array,
        constraint_state: Any,
        copy_src: jax.Array,
        copy_dst: jax.Array,
    ) -> EngineState:
        """Start the samples of one prompt in the slots where ``mask`` ``[slots]`` is set.

        logits ``[vocab]`` (the prompt's last), seen ``[vocab]`` bool (its tokens), seq_len [] (its
        length), keys ``[slots]``, constraint_state one row's state; page ``copy_src[i]`` is copied
        to ``copy_dst[i]`` ``[slots]`` in every layer (scratch to scratch where nothing is copied).
        """
        s = state.slots

        def put(old: jax.Array, new: jax.Array) -> jax.Array:
            m = mask.reshape(mask.shape + (1,) * (old.ndim - 1))
            return jnp.where(m, jnp.broadcast_to(new, old.shape).astype(old.dtype), old)

        cstate = s.constraint_state
        if cstate is not None:
            cstate = jax.tree.map(put, cstate, constraint_state)
        slots = s.replace(
            logits=put(s.logits, logits),
            seq_len=put(s.seq_len, seq_len),
            step=put(s.step, 0),
            active=s.active | mask,
            finished=s.finished & ~mask,
            stopped=s.stopped & ~mask,
            keys=jnp.where(mask, keys, s.keys),
            out_tokens=put(s.out_tokens, self.pad_id),
            out_logprobs=put(s.out_logprobs, 0.0),
            seen=None if s.seen is None else put(s.seen, seen),
            constraint_state=cstate,
        )
        k, v = copy_pages(state.k, copy_src, copy_dst), copy_pages(state.v, copy_src, copy_dst)
        return EngineState(*self.constrain_pages(k, v), slots=slots)

    # ----- decode -----
    def pick(
        self,
        logits: jax.Array,
        seen: jax.Array | None,
        allowed: jax.Array | None,
        keys: jax.Array,
        step: jax.Array,
    ) -> jax.Array:
        """Next token ``[rows]`` from raw ``logits`` ``[rows, vocab]``; ``step`` ``[rows]`` is each
        sample's own step, so a sample's randomness does not depend on its slot or neighbours."""
        if self.vocab_limit is not None:
            logits = logits.at[:, self.vocab_limit :].set(NEG_INF)
        if allowed is not None:
            allowed = allowed | ~jnp.any(allowed, axis=-1, keepdims=True)  # never mask a row empty
            logits = jnp.where(allowed, logits, NEG_INF)
        step_keys = jax.vmap(jax.random.fold_in)(keys, step)
        tiny = jnp.finfo(jnp.float32).tiny
        uniform = jax.vmap(lambda key: jax.random.uniform(key, minval=tiny))(step_keys)
        return sample_token(logits, self.sampling, seen, uniform)

    def step_model(
        self,
        params: Any,
        k: Pages,
        v: Pages,
        token: jax.Array,
        pos: jax.Array,
        page_table: jax.Array,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Run one token per row: token, pos ``[rows]``; page_table ``[rows, max_pages]`` (idle rows:
        all scratch). Returns (k, v, logits ``[rows, vocab]``), the token's key/value written at
        ``pos`` in its row's pages."""
        page_size = k[0].shape[2]
        page = jnp.take_along_axis(page_table, (pos // page_size)[:, None], axis=1)
        live = jnp.any(page_table != 0, axis=1)
        kv = self.paged(k, v, page, pos[:, None], page_table, jnp.max(jnp.where(live, pos, 0)))
        hidden, kv = self.model.apply(
            {"params": params}, token[:, None], pos[:, None], kv=kv, return_hidden=True
        )
        logits = self.constrain(lm_head(self.config, params, hidden[:, 0]), ("batch", "vocab"))
        k, v = self.constrain_pages(kv.k, kv.v)
        return k, v, logits

    def decode(
        self,
        params: Any,
        state: EngineState,
        page_table: jax.Array,
        refill_at: jax.Array,
        constraint: Constraint | None,
        *,
        steps: int,
    ) -> EngineState:
        """Up to ``steps`` decode steps of every active slot (page_table ``[slots, max_pages]``, with
        room for ``steps`` more tokens per row); returns early once ``refill_at`` [] rows have
        finished or none is active."""
        max_new = self.sampling.max_new_tokens
        stop_ids = jnp.asarray(self.stop_ids or (-1,), jnp.int32)
        rows = page_table.shape[0]
        idle_page = jnp.zeros_like(page_table)

        def body(carry):
            i, finished_now, st = carry
            s = st.slots
            allowed = None
            if constraint is not None:
                allowed = constraint.allowed(s.constraint_state, max_new - s.step)
            token = self.pick(s.logits, s.seen, allowed, s.keys, s.step)
            live = s.active
            token = jnp.where(live, token, self.pad_id)
            logp = jax.nn.log_softmax(s.logits, axis=-1)
            token_lp = jnp.take_along_axis(logp, token[:, None], axis=1)[:, 0]
            column = jnp.where(live, s.step, max_new)  # idle rows write out of range: dropped
            stop = live & jnp.any(token[:, None] == stop_ids[None, :], axis=1)
            ends = live & (stop | (s.step + 1 >= max_new))
            seen = s.seen
            if seen is not None:
                seen = seen.at[jnp.arange(rows), token].set(True)
            cstate = s.constraint_state
            if constraint is not None:
                cstate = constraint.advance(cstate, token)
            s = s.replace(
                out_tokens=s.out_tokens.at[jnp.arange(rows), column].set(token, mode="drop"),
                out_logprobs=s.out_logprobs.at[jnp.arange(rows), column].set(token_lp, mode="drop"),
                seen=seen,
                constraint_state=cstate,
            )
            # Idle rows run too (fixed shapes) but write to the scratch page.
            table = jnp.where(live[:, None], page_table, idle_page)
            k, v, logits = self.step_model(params, st.k, st.v, token, s.seq_len, table)
            add = live.astype(jnp.int32)
            s = s.replace(
                logits=logits,
                seq_len=s.seq_len + add,
                step=s.step + add,
                active=live & ~ends,
                finished=s.finished | ends,
                stopped=s.stopped | stop,
            )
            return i + 1, finished_now + jnp.sum(ends), EngineState(k, v, s)

        def cond(carry):
            i, finished_now, st = carry
            return (i < steps) & (finished_now < refill_at) & jnp.any(st.slots.active)

        _, _, state = jax.lax.while_loop(cond, body, (jnp.int32(0), jnp.int32(0), state))
        return state

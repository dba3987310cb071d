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
from logos_jax.engine.state import EngineState
from logos_jax.model import Decoder, PagedKV
from logos_jax.model.attention import KVLayout
from logos_jax.model.layers import dtype_of
from logos_jax.sample.constraints import Constraint
from logos_jax.sample.processors import NEG_INF, SamplingConfig, repetition_penalty, sample_token
from logos_jax.sharding import DEFAULT_RULES, Rules, constrain

PROMPT_LOGPROB_CHUNK = 16
Pages = tuple[jax.Array, ...]  # one array per layer, laid out as ``Programs.layout`` says

DECODE_HEAD = "decode_head"  # the engine's LM head, laid out [hidden, vocab] (``DecodeWeights``)


def lm_head(config: ModelConfig, params: Any, hidden: jax.Array) -> jax.Array:
    """The decoder's output projection: hidden ``[..., hidden]`` -> logits ``[..., vocab]`` float32,
    with the engine's ``DECODE_HEAD``."""
    dtype = dtype_of(config.compute_dtype)
    return (hidden.astype(dtype) @ params[DECODE_HEAD].astype(dtype)).astype(jnp.float32)


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
        return Decoder(
            self.config, mesh=self.mesh, rules=self.rules, scan_layers=False, kernels_in_out=True
        )

    @property
    def layout(self) -> KVLayout:
        return KVLayout.for_kernel(self.paged_kernel)

    def page_size(self, v: Pages) -> int:
        return self.layout.v.page_size(v[0])

    def copy_pages(self, k: Pages, v: Pages, src: jax.Array, dst: jax.Array) -> tuple[Pages, Pages]:
        """Page ``src[i]`` copied to page ``dst[i]`` (``[n]`` each) in every layer's keys and values."""
        layout = self.layout
        return (
            tuple(layout.k.copy(x, src, dst) for x in k),
            tuple(layout.v.copy(x, src, dst) for x in v),
        )

    # ----- sharding (no-ops without a mesh) -----
    def constrain(self, x: jax.Array, axes: tuple[str | None, ...]) -> jax.Array:
        return constrain(x, axes, self.mesh, self.rules)

    def constrain_pages(self, k: Pages, v: Pages) -> tuple[Pages, Pages]:
        layout = self.layout
        return (
            tuple(self.constrain(x, layout.k.axes) for x in k),
            tuple(self.constrain(x, layout.v.axes) for x in v),
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
        page_size = self.page_size(v)
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
        seed: jax.Array,
        sample_ids: jax.Array,
        constraint_state: Any,
        copy_src: jax.Array,
        copy_dst: jax.Array,
    ) -> EngineState:
        """Start the samples of one prompt in the slots where ``mask`` ``[slots]`` is set.

        logits ``[vocab]`` (the prompt's last), seen ``[vocab]`` bool (its tokens), seq_len [] (its
        length), seed [] uint32 (the request's) and sample_ids ``[slots]`` uint32 (a row's key is
        the seed's with its sample index folded in), constraint_state one row's state; page
        ``copy_src[i]`` is copied to ``copy_dst[i]`` ``[slots]`` in every layer (scratch to scratch
        where nothing is copied).
        """
        s = state.slots
        keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.key(seed), sample_ids)

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
        k, v = self.copy_pages(state.k, state.v, copy_src, copy_dst)
        return EngineState(*self.constrain_pages(k, v), slots=slots)

    # ----- decode -----
    def pick(
        self,
        logits: jax.Array,
        seen: jax.Array | None,
        allowed: jax.Array | None,
        keys: jax.Array,
        step: jax.Array,
        *,
        penalized: bool = False,
    ) -> jax.Array:
        """Next token ``[rows]`` from raw ``logits`` ``[rows, vocab]``; ``step`` ``[rows]`` is each
        sample's own step, so a sample's randomness does not depend on its slot or neighbours.
        ``penalized``: the logits already carry the repetition penalty (``seen`` is unused)."""
        if self.vocab_limit is not None:
            logits = logits.at[:, self.vocab_limit :].set(NEG_INF)
        if allowed is not None:
            allowed = allowed | ~jnp.any(allowed, axis=-1, keepdims=True)  # never mask a row empty
            logits = jnp.where(allowed, logits, NEG_INF)
        step_keys = jax.vmap(jax.random.fold_in)(keys, step)
        tiny = jnp.finfo(jnp.float32).tiny
        uniform = jax.vmap(lambda key: jax.random.uniform(key, minval=tiny))(step_keys)
        sampling = self.sampling
        if penalized:
            sampling, seen = dataclasses.replace(sampling, repetition_penalty=1.0), None
        return sample_token(logits, sampling, seen, uniform)

    def step_model(
        self,
        params: Any,
        k: Pages,
        v: Pages,
        tokens: jax.Array,
        positions: jax.Array,
        page_table: jax.Array,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Run ``t`` tokens per row: tokens, positions ``[rows, t]``; page_table ``[rows, max_pages]``
        (idle rows: all scratch). Returns (k, v, logits ``[rows, t, vocab]``), each token's key/value
        written at its position in its row's pages."""
        page_size = self.page_size(v)
        page = jnp.take_along_axis(page_table, positions // page_size, axis=1)
        live = jnp.any(page_table != 0, axis=1)
        last = jnp.max(jnp.where(live, positions[:, -1], 0))
        kv = self.paged(k, v, page, positions, page_table, last)
        hidden, kv = self.model.apply(
            {"params": params}, tokens, positions, kv=kv, return_hidden=True
        )
        logits = self.constrain(lm_head(self.config, params, hidden), ("batch", None, "vocab"))
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
        draft_len: int = 0,
    ) -> EngineState:
        """Up to ``steps`` decode steps of every active slot (page_table ``[slots, max_pages]``, with
        room for ``steps * (draft_len + 1)`` more tokens per row); returns early once ``refill_at``
        [] rows have finished or none is active. ``draft_len > 0``: each step also verifies up to
        ``draft_len`` tokens drafted by the constraint (see ``speculative_step``)."""
        idle_page = jnp.zeros_like(page_table)
        step = self.speculative_step if draft_len else self.plain_step

        def body(carry):
            i, finished_now, st = carry
            # Idle rows run too (fixed shapes) but write to the scratch page.
            table = jnp.where(st.slots.active[:, None], page_table, idle_page)
            st, ends = step(params, st, table, constraint, draft_len)
            return i + 1, finished_now + jnp.sum(ends), st

        def cond(carry):
            i, finished_now, st = carry
            return (i < steps) & (finished_now < refill_at) & jnp.any(st.slots.active)

        _, _, state = jax.lax.while_loop(cond, body, (jnp.int32(0), jnp.int32(0), state))
        return state

    def _is_stop(self, token: jax.Array) -> jax.Array:
        stop_ids = jnp.asarray(self.stop_ids or (-1,), jnp.int32)
        return jnp.any(token[..., None] == stop_ids, axis=-1)

    def plain_step(
        self,
        params: Any,
        st: EngineState,
        table: jax.Array,
        constraint: Constraint | None,
        draft_len: int = 0,
    ) -> tuple[EngineState, jax.Array]:
        """One token per active row: pick it from the row's logits, write it out, run the model on
        it. Returns the new state and ``[rows]`` the rows that ended."""
        del draft_len
        max_new = self.sampling.max_new_tokens
        s = st.slots
        rows = s.seq_len.shape[0]
        allowed = None
        if constraint is not None:
            allowed = constraint.allowed(s.constraint_state, max_new - s.step)
        live = s.active
        token = jnp.where(live, self.pick(s.logits, s.seen, allowed, s.keys, s.step), self.pad_id)
        token_lp = _token_logprob(s.logits, token)
        column = jnp.where(live, s.step, max_new)  # idle rows write out of range: dropped
        stop = live & self._is_stop(token)
        ends = live & (stop | (s.step + 1 >= max_new))
        seen = s.seen
        if seen is not None:
            seen = seen.at[jnp.arange(rows), token].set(True)
        cstate = s.constraint_state
        if constraint is not None:
            cstate = constraint.advance(cstate, token)
        k, v, logits = self.step_model(
            params, st.k, st.v, token[:, None], s.seq_len[:, None], table
        )
        add = live.astype(jnp.int32)
        s = s.replace(
            out_tokens=s.out_tokens.at[jnp.arange(rows), column].set(token, mode="drop"),
            out_logprobs=s.out_logprobs.at[jnp.arange(rows), column].set(token_lp, mode="drop"),
            seen=seen,
            constraint_state=cstate,
            logits=logits[:, 0],
            seq_len=s.seq_len + add,
            step=s.step + add,
            active=live & ~ends,
            finished=s.finished | ends,
            stopped=s.stopped | stop,
        )
        return EngineState(k, v, s), ends

    def speculative_step(
        self,
        params: Any,
        st: EngineState,
        table: jax.Array,
        constraint: Any,
        draft_len: int,
    ) -> tuple[EngineState, jax.Array]:
        """Copy-speculation: one model call emits 1 to ``draft_len + 1`` tokens per active row.

        The row's first token ``x0`` is picked from its logits exactly as in ``plain_step``; the
        constraint then drafts the ``draft_len`` tokens that would follow if the answer keeps
        copying (``constraint.draft``), and the model runs on ``[x0, drafts]`` in one call. Draft
        ``j`` is accepted while the token the sampler picks at that position, with that position's
        own random number, penalty and constraint mask, *is* the draft. For a drafted token this is
        the exact speculative-sampling rule (accept with probability p(draft); on rejection the
        token comes from p without the draft), and it emits exactly the tokens ``plain_step`` would:
        greedy and sampled outputs do not depend on speculation or on ``draft_len``. The first
        rejected position's token is not emitted: the next step picks it again from the logits
        kept here (same random number, same token). All positions are picked in one batched call.
        """
        max_new = self.sampling.max_new_tokens
        s = st.slots
        rows, k = s.seq_len.shape[0], draft_len
        ids = jnp.arange(rows)
        live = s.active
        x0 = self.pick(
            s.logits,
            s.seen,
            constraint.allowed(s.constraint_state, max_new - s.step),
            s.keys,
            s.step,
        )
        x0 = jnp.where(live, x0, self.pad_id)
        after_x0 = constraint.advance(s.constraint_state, x0)
        draft = constraint.draft(after_x0, k)  # [rows, k], -1 = none
        safe = jnp.where(draft >= 0, draft, self.pad_id)
        tokens = jnp.concatenate([x0[:, None], safe], axis=1)  # [rows, k + 1]
        positions = s.seq_len[:, None] + jnp.arange(k + 1)
        k_pages, v_pages, logits = self.step_model(params, st.k, st.v, tokens, positions, table)

        # The constraint state before each drafted position and after the last: [rows, k + 1, ..].
        def advance(state: Any, token: jax.Array) -> tuple[Any, Any]:
            return constraint.advance(state, token), state

        final, before_each = jax.lax.scan(advance, after_x0, safe.T)
        states = jax.tree.map(
            lambda xs, x: jnp.concatenate([jnp.moveaxis(xs, 0, 1), x[:, None]], axis=1),
            before_each,
            final,
        )
        # Pick every drafted position at once: [rows * k] with its own state, mask and penalty.
        flat = jax.tree.map(lambda x: x[:, :k].reshape(rows * k, *x.shape[2:]), states)
        offsets = jnp.arange(1, k + 1)
        step_at = s.step[:, None] + offsets  # [rows, k]
        allowed = constraint.allowed(flat, (max_new - step_at).reshape(-1))
        seen = None if s.seen is None else s.seen.at[ids, x0].set(True)
        picked_logits = logits[:, :k]
        if seen is not None:  # the penalty sees x0 and the drafts before each position
            picked_logits = _penalize_drafts(picked_logits, seen, draft, self.sampling)
        picked = self.pick(
            picked_logits.reshape(rows * k, -1),
            None,
            allowed,
            jnp.repeat(s.keys, k),
            step_at.reshape(-1),
            penalized=True,
        ).reshape(rows, k)

        # Accepted drafts: a prefix of positions where the pick is the draft and nothing stopped.
        going = live & ~self._is_stop(x0) & (s.step + 1 < max_new)  # may emit after x0
        match = (picked == draft) & (draft >= 0)
        continues = match & ~self._is_stop(draft) & (step_at + 1 < max_new)
        before = jnp.cumprod(
            jnp.concatenate([going[:, None], continues[:, :-1]], axis=1).astype(jnp.int32), axis=1
        ).astype(bool)  # [rows, k]: every earlier position was emitted and may continue
        accepted = before & match
        emitted = jnp.concatenate([live[:, None], accepted], axis=1)  # [rows, k + 1]
        count = jnp.sum(emitted, axis=1).astype(jnp.int32)  # tokens emitted (0 for idle rows)
        last = jnp.maximum(count - 1, 0)
        last_token = jnp.take_along_axis(tokens, last[:, None], axis=1)[:, 0]
        stop = live & self._is_stop(last_token)
        ends = live & (stop | (s.step + count >= max_new))
        if seen is not None:
            seen = seen.at[ids[:, None], jnp.where(accepted, draft, x0[:, None])].set(True)
        cstate = jax.tree.map(
            lambda x: jnp.take_along_axis(x, last.reshape((rows, 1) + (1,) * (x.ndim - 2)), 1)[
                :, 0
            ],
            states,
        )

        lp = jnp.concatenate([s.logits[:, None], logits[:, :-1]], axis=1)  # predicts each token
        token_lp = _token_logprob(lp, tokens)
        columns = jnp.where(emitted, s.step[:, None] + jnp.arange(k + 1), max_new)
        s = s.replace(
            out_tokens=s.out_tokens.at[ids[:, None], columns].set(tokens, mode="drop"),
            out_logprobs=s.out_logprobs.at[ids[:, None], columns].set(token_lp, mode="drop"),
            seen=seen,
            constraint_state=_where_rows(live, cstate, s.constraint_state),
            logits=jnp.take_along_axis(logits, last[:, None, None], axis=1)[:, 0],
            seq_len=s.seq_len + count,
            step=s.step + count,
            active=live & ~ends,
            finished=s.finished | ends,
            stopped=s.stopped | stop,
            drafted=s.drafted + jnp.sum(before & (draft >= 0), axis=1).astype(jnp.int32),
            accepted=s.accepted + count - live.astype(jnp.int32),
        )
        return EngineState(k_pages, v_pages, s), ends


def _penalize_drafts(
    logits: jax.Array, seen: jax.Array, draft: jax.Array, sampling: SamplingConfig
) -> jax.Array:
    """The repetition penalty for drafted positions: logits ``[rows, k, vocab]`` (position ``j``
    predicts draft ``j``) penalised for ``seen`` ``[rows, vocab]`` and for drafts ``[rows, k]``
    before ``j``, without a ``[rows, k, vocab]`` mask."""
    rows, k, vocab = logits.shape
    out = repetition_penalty(logits, seen[:, None], sampling.repetition_penalty)
    j = jnp.arange(k)
    earlier = (j[None, :, None] > j[None, None, :]) & (draft[:, None, :] >= 0)  # [rows, k, k]
    token = jnp.broadcast_to(draft[:, None, :], (rows, k, k))
    r = jnp.broadcast_to(jnp.arange(rows)[:, None, None], (rows, k, k))
    p = jnp.broadcast_to(j[None, :, None], (rows, k, k))
    index = jnp.where(earlier, token, vocab)  # out of range: dropped
    original = logits[r, p, jnp.minimum(index, vocab - 1)]
    penalized = repetition_penalty(original, jnp.ones_like(earlier), sampling.repetition_penalty)
    return out.at[r, p, index].set(penalized, mode="drop")


def _token_logprob(logits: jax.Array, token: jax.Array) -> jax.Array:
    """log p(token) under raw ``logits`` ``[..., vocab]`` for ``token`` ``[...]``, without
    materialising the log-softmax of the whole vocabulary twice."""
    picked = jnp.take_along_axis(logits, token[..., None], axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)


def _where_rows(mask: jax.Array, new: Any, old: Any) -> Any:
    """Per row (``mask`` ``[rows]``), ``new``'s leaves where set, else ``old``'s."""

    def pick(a: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, new, old)

"""Beam search on the engine's KV pages.

The beams of one prompt advance in lockstep. Each beam owns a region of pages for its generated
tokens; its page table is the prompt's pages, then pages of the beams it descends from, then its
own. When beam ``r`` continues beam ``s``, it takes ``s``'s table for the pages already full (no one
writes those again) and copies only ``s``'s current, partly filled page into its own: a reorder
costs one page per beam and layer, not a copy of the cache.

Scores are sums of processed log-probs (repetition penalty and constraint masks apply; temperature
and truncation do not). A finished beam stays in the beam with its score (it can only be extended
by padding at no cost), so the result is the ``num_beams`` best sequences found, best first,
without length normalisation.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from logos_jax.engine.pages import SCRATCH_PAGE, pages_for
from logos_jax.engine.programs import Programs
from logos_jax.sample.constraints import Constraint
from logos_jax.sample.processors import NEG_INF, process_logits

if TYPE_CHECKING:
    from logos_jax.engine.engine import Completion, Engine


def beam_loop(
    programs: Programs,
    params: Any,
    k: tuple[jax.Array, ...],
    v: tuple[jax.Array, ...],
    logits: jax.Array,
    seen: jax.Array | None,
    constraint: Constraint | None,
    constraint_state: Any,
    table: jax.Array,
    prompt_len: jax.Array,
    partial_page: jax.Array,
    *,
    num_beams: int,
):
    """Beam search from a prefilled prompt (its last logits ``[vocab]``, seen ``[vocab]``).

    table ``[beams, n]``: each beam's page table, the prompt's full pages then the beam's own region
    (its first page takes a copy of ``partial_page``, the prompt's partly filled last page, or
    scratch). Returns (k, v, tokens, logprobs ``[beams, max_new]``, lengths, stopped, scores
    ``[beams]``).
    """
    sampling = programs.sampling
    max_new = sampling.max_new_tokens
    vocab = logits.shape[-1]
    page_size = programs.page_size(v)
    beams = num_beams
    own = table
    first = prompt_len // page_size
    partial = jnp.full((beams,), partial_page)
    k, v = programs.copy_pages(k, v, partial, own[:, first])
    stop_ids = jnp.asarray(programs.stop_ids or (-1,), jnp.int32)
    pad_only = jnp.where(jnp.arange(vocab) == programs.pad_id, 0.0, NEG_INF)

    def rows(x):
        return None if x is None else jnp.broadcast_to(x, (beams, *jnp.shape(x)))

    carry = dict(
        step=jnp.int32(0),
        k=k,
        v=v,
        table=table,
        logits=rows(logits),
        seen=rows(seen),
        cstate=jax.tree.map(rows, constraint_state),
        scores=jnp.where(jnp.arange(beams) == 0, 0.0, NEG_INF),
        done=jnp.zeros((beams,), bool),
        stopped=jnp.zeros((beams,), bool),
        lengths=jnp.zeros((beams,), jnp.int32),
        tokens=jnp.full((beams, max_new), programs.pad_id, jnp.int32),
        logprobs=jnp.zeros((beams, max_new), jnp.float32),
    )

    def body(c):
        step = c["step"]
        lg = c["logits"]
        if programs.vocab_limit is not None:
            lg = lg.at[:, programs.vocab_limit :].set(NEG_INF)
        if constraint is not None:
            remaining = jnp.full((beams,), max_new - step)
            allowed = constraint.allowed(c["cstate"], remaining)
            allowed = allowed | ~jnp.any(allowed, axis=-1, keepdims=True)
            lg = jnp.where(allowed, lg, NEG_INF)
        if c["seen"] is not None:
            lg = process_logits(lg, dataclasses.replace(sampling, temperature=0), c["seen"])
        step_lp = jnp.where(c["done"][:, None], pad_only, jax.nn.log_softmax(lg, axis=-1))
        scores, flat = jax.lax.top_k((c["scores"][:, None] + step_lp).reshape(-1), beams)
        source = flat // vocab
        token = (flat % vocab).astype(jnp.int32)
        take = functools.partial(jnp.take, indices=source, axis=0)
        pos = prompt_len + step
        current = pos // page_size
        cols = jnp.arange(table.shape[1])[None, :]
        new_table = jnp.where(cols < current, take(c["table"]), own)
        src_page = jnp.take_along_axis(take(c["table"]), current[None, None], axis=1)[:, 0]
        dst_page = own[:, current]
        k, v = programs.copy_pages(c["k"], c["v"], src_page, dst_page)
        done, lengths = take(c["done"]), take(c["lengths"])
        raw = jax.nn.log_softmax(take(c["logits"]), axis=-1)
        token_lp = jnp.where(done, 0.0, jnp.take_along_axis(raw, token[:, None], axis=1)[:, 0])
        token = jnp.where(done, programs.pad_id, token)
        stop = ~done & jnp.any(token[:, None] == stop_ids[None, :], axis=1)
        seen = c["seen"]
        if seen is not None:
            seen = take(seen).at[jnp.arange(beams), token].set(True)
        cstate = jax.tree.map(take, c["cstate"])
        if constraint is not None:
            cstate = constraint.advance(cstate, token)
        positions = jnp.full((beams, 1), pos)
        k, v, logits = programs.step_model(params, k, v, token[:, None], positions, new_table)
        return dict(
            step=step + 1,
            k=k,
            v=v,
            table=new_table,
            logits=logits[:, 0],
            seen=seen,
            cstate=cstate,
            scores=scores,
            done=done | stop,
            stopped=take(c["stopped"]) | stop,
            lengths=lengths + (~done).astype(jnp.int32),
            tokens=take(c["tokens"]).at[:, step].set(token),
            logprobs=take(c["logprobs"]).at[:, step].set(token_lp),
        )

    def cond(c):
        return (c["step"] < max_new) & ~jnp.all(c["done"])

    c = jax.lax.while_loop(cond, body, carry)
    return c["k"], c["v"], c["tokens"], c["logprobs"], c["lengths"], c["stopped"], c["scores"]


def beam_search(
    engine: Engine, prompt: list[int], num_beams: int, constraint_state: Any = None
) -> list[Completion]:
    """The ``num_beams`` best beams of ``prompt`` (finite scores only), best first."""
    from logos_jax.engine.engine import Completion, Request

    request = Request(list(prompt), num_beams, 0, constraint_state)
    engine._check([request])
    prefilled = engine._prefill_prompt(0, request)
    if prefilled is None:
        raise RuntimeError("the KV page pool is too small for this prompt")
    page_size = engine.page_size
    n = len(prompt)
    max_new = engine.sampling.max_new_tokens
    shared = prefilled.pages[:-1] if n % page_size else prefilled.pages
    region = pages_for(max_new + page_size, page_size)
    own = engine.pool.take(num_beams * region)
    if own is None:
        engine.pool.give_back(prefilled.pages)
        raise RuntimeError("the KV page pool is too small for this many beams")
    width = engine.max_pages
    table = np.full((num_beams, width), SCRATCH_PAGE, np.int32)
    for b in range(num_beams):
        pages = shared + own[b * region : (b + 1) * region]
        table[b, : len(pages)] = pages[:width]
    partial = prefilled.pages[-1] if n % page_size else SCRATCH_PAGE
    seen = None
    if engine.state.slots.seen is not None:
        seen = np.zeros((engine.config.vocab_size,), bool)
        seen[np.asarray(prompt, np.int64)] = True
    run = engine.program(
        ("beam", num_beams, width),
        lambda: jax.jit(
            functools.partial(beam_loop, engine.programs, num_beams=num_beams),
            donate_argnums=(1, 2),
        ),
    )
    k, v, tokens, logprobs, lengths, stopped, scores = run(
        engine.params,
        engine.state.k,
        engine.state.v,
        prefilled.logits,
        None if seen is None else jnp.asarray(seen),
        engine.constraint,
        None if constraint_state is None else jax.tree.map(jnp.asarray, constraint_state),
        jnp.asarray(table),
        jnp.int32(n),
        jnp.int32(partial),
    )
    engine.state = engine.state.replace(k=k, v=v)
    engine.pool.give_back(prefilled.pages + own)
    tokens, logprobs, lengths, stopped, scores = jax.device_get(
        (tokens, logprobs, lengths, stopped, scores)
    )
    return [
        Completion(
            tokens=tokens[b, : lengths[b]].copy(),
            logprobs=logprobs[b, : lengths[b]].copy(),
            stopped=bool(stopped[b]),
            prompt_tokens=n,
            prompt_logprob=prefilled.prompt_logprob,
            score=float(scores[b]),
        )
        for b in range(num_beams)
        if np.isfinite(scores[b])
    ]

"""The batch sampler: one prefill per prompt, then a jit-compiled KV-cache decode loop.

A batch of prompts is padded to a bucketed length (left padding; right padding works too), prefilled
once, and its cache is repeated ``num_samples`` times along the batch axis, so the samples of a
prompt share one prefill. A ``lax.while_loop`` then decodes one token per step for all
``prompts x samples`` rows until every row has emitted a stop token or ``max_new_tokens`` is reached.
Each step records the chosen token's log-probability under the model's raw distribution (T = 1, no
processors), so perplexities come out of the loop for free.

Shapes are static per (prompt bucket, batch size, samples, max new tokens), so a job compiles once
per prompt-length bucket. With a mesh, rows are split over the batch axes (``data``/``fsdp``) and the
weights stay sharded as loaded (``fsdp``/``tensor``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from logos_jax.config import ModelConfig
from logos_jax.model import Decoder, KVCache, head_kernel, init_cache
from logos_jax.model.layers import dtype_of
from logos_jax.sample.constraints import Constraint
from logos_jax.sample.processors import NEG_INF, SamplingConfig, process_logits, sample_token
from logos_jax.sharding import DEFAULT_RULES, Rules, batch_shards, logical_to_spec

MIN_BUCKET = 16
PROMPT_LOGPROB_CHUNK = 16


def bucket_length(n: int) -> int:
    """Padded prompt length: the next power of two, at least ``MIN_BUCKET``."""
    return max(MIN_BUCKET, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


@dataclasses.dataclass(frozen=True)
class Completion:
    """One sampled continuation.

    ``tokens`` ``[n]`` are the generated ids (the stop token included when ``stopped``), ``logprobs``
    ``[n]`` their log-probabilities under the raw model; ``prompt_logprob`` is the summed log-prob of
    the prompt tokens after the first (only with ``full_perplexity``), over ``prompt_tokens - 1``
    predictions.
    """

    tokens: np.ndarray
    logprobs: np.ndarray
    stopped: bool
    prompt_tokens: int
    prompt_logprob: float | None = None
    score: float | None = None  # beam search: the beam's score (sum of processed log-probs)

    @property
    def sum_logprob(self) -> float:
        return float(np.sum(self.logprobs, dtype=np.float64))

    @property
    def perplexity(self) -> float:
        """exp(-mean log-prob) of the completion tokens, stop token included (inf when empty)."""
        n = len(self.tokens)
        return math.exp(-self.sum_logprob / n) if n else math.inf

    @property
    def full_perplexity(self) -> float | None:
        """The released scripts' figure: perplexity of prompt + completion (tokens after the first)."""
        if self.prompt_logprob is None:
            return None
        n = self.prompt_tokens - 1 + len(self.tokens)
        total = self.prompt_logprob + self.sum_logprob
        return math.exp(-total / n) if n else math.inf


@flax.struct.dataclass
class _LoopState:
    step: jax.Array  # [] int32
    logits: jax.Array  # [rows, vocab] float32, predicting the token of this step
    positions: jax.Array  # [rows] int32, position of the token of this step
    cache: KVCache
    done: jax.Array  # [rows] bool
    lengths: jax.Array  # [rows] int32
    out_tokens: jax.Array  # [rows, max_new] int32
    out_logprobs: jax.Array  # [rows, max_new] float32
    seen: jax.Array | None  # [rows, vocab] bool (repetition penalty only)
    constraint_state: Any  # pytree with leading dim rows, or None


def lm_head(config: ModelConfig, params: Any, hidden: jax.Array) -> jax.Array:
    """The decoder's output projection: hidden ``[..., hidden]`` -> logits ``[..., vocab]`` float32."""
    dtype = dtype_of(config.compute_dtype)
    weight = head_kernel(config, params).astype(dtype)
    return jnp.dot(hidden.astype(dtype), weight).astype(jnp.float32)


def pad_prompts(
    prompts: Sequence[Sequence[int]], length: int, pad_id: int, side: str = "left"
) -> tuple[np.ndarray, np.ndarray]:
    """tokens, segment ids ``[len(prompts), length]`` int32; padding (segment 0) on ``side``."""
    tokens = np.full((len(prompts), length), pad_id, np.int32)
    segments = np.zeros((len(prompts), length), np.int32)
    for i, prompt in enumerate(prompts):
        if prompt:
            span = slice(length - len(prompt), length) if side == "left" else slice(0, len(prompt))
            tokens[i, span] = prompt
            segments[i, span] = 1
    return tokens, segments


class Sampler:
    """Samples continuations of token prompts from a decoder (see the module docstring).

    ``stop_ids``: a set of token ids that end a row (all EOS ids, task tags such as ``<MoleculeE>``).
    ``full_perplexity`` also scores the prompt tokens (the released scripts' prompt + completion
    perplexity). ``vocab_limit``: ids at or above it (embedding rows the tokenizer has no token for)
    are never sampled. ``padding_side``: prompts are left-padded by default; right padding gives the
    same samples (positions and masks are per row; new tokens go after the padded block).
    """

    def __init__(
        self,
        config: ModelConfig,
        params: Any,
        *,
        stop_ids: Sequence[int],
        pad_id: int,
        sampling: SamplingConfig | None = None,
        mesh: Mesh | None = None,
        rules: Rules = DEFAULT_RULES,
        full_perplexity: bool = False,
        vocab_limit: int | None = None,
        padding_side: str = "left",
    ):
        self.config = config
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.padding_side = padding_side
        self.vocab_limit = vocab_limit if vocab_limit and vocab_limit < config.vocab_size else None
        self.params = params
        self.stop_ids = tuple(sorted({int(i) for i in stop_ids}))
        self.pad_id = int(pad_id)
        self.sampling = sampling or SamplingConfig()
        self.mesh = mesh
        self.rules = rules
        self.full_perplexity = full_perplexity
        self.model = Decoder(config, mesh=mesh, rules=rules)
        self._compiled: dict[tuple, Any] = {}
        self.compilations = 0

    @property
    def shards(self) -> int:
        return 1 if self.mesh is None else batch_shards(self.mesh, self.rules)

    # ----- sharding helpers (no-ops without a mesh) -----
    def _constrain(self, x: jax.Array, axes: tuple[str | None, ...]) -> jax.Array:
        if self.mesh is None:
            return x
        spec = logical_to_spec(axes, x.shape, self.mesh, self.rules)
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))

    def _constrain_cache(self, cache: KVCache) -> KVCache:
        kv_axes = ("layers", "batch", "kv_heads", "cache_len", "head_dim")
        return KVCache(
            k=self._constrain(cache.k, kv_axes),
            v=self._constrain(cache.v, kv_axes),
            segment_ids=self._constrain(cache.segment_ids, ("batch", "cache_len")),
            index=cache.index,
        )

    def _put(self, x: np.ndarray) -> jax.Array:
        if self.mesh is None:
            return jnp.asarray(x)
        spec = logical_to_spec(("batch",) + (None,) * (x.ndim - 1), x.shape, self.mesh, self.rules)
        return jax.device_put(x, NamedSharding(self.mesh, spec))

    # ----- the pieces of the jitted program -----
    def prefill(
        self, params: Any, tokens: jax.Array, segments: jax.Array, cache_len: int
    ) -> tuple[jax.Array, jax.Array, KVCache, jax.Array]:
        """tokens/segments ``[batch, prompt]`` -> (last logits ``[batch, vocab]``, last position
        ``[batch]``, cache, prompt log-prob sum ``[batch]`` (zeros unless full_perplexity))."""
        batch, length = tokens.shape
        positions = jnp.maximum(jnp.cumsum(segments, axis=1) - 1, 0)
        cache = self._constrain_cache(init_cache(self.config, batch, cache_len))
        hidden, cache = self.model.apply(
            {"params": params}, tokens, positions, segments, cache, return_hidden=True
        )
        # The last real token of each row, whichever side the padding is on.
        last = length - 1 - jnp.argmax(segments[:, ::-1], axis=1)
        h_last = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
        logits = lm_head(self.config, params, h_last)
        last_pos = jnp.take_along_axis(positions, last[:, None], axis=1)[:, 0]
        prompt_lp = jnp.zeros((batch,), jnp.float32)
        if self.full_perplexity:
            prompt_lp = self._prompt_logprob(params, hidden, tokens, segments)
        return logits, last_pos, cache, prompt_lp

    def _prompt_logprob(self, params, hidden, tokens, segments) -> jax.Array:
        """Sum over prompt positions of log p(next prompt token), chunked over the sequence so that
        ``[batch, seq, vocab]`` logits are never materialised whole."""
        batch, length, _ = hidden.shape
        targets = jnp.pad(tokens[:, 1:], ((0, 0), (0, 1)))
        valid = jnp.pad((segments[:, 1:] > 0) & (segments[:, :-1] > 0), ((0, 0), (0, 1)))
        chunks = length // PROMPT_LOGPROB_CHUNK

        def chunk_lp(args):
            h, t, v = args  # [batch, chunk, hidden], [batch, chunk], [batch, chunk]
            lp = jax.nn.log_softmax(lm_head(self.config, params, h), axis=-1)
            picked = jnp.take_along_axis(lp, t[..., None], axis=-1)[..., 0]
            return jnp.sum(jnp.where(v, picked, 0.0), axis=-1)

        def split(x):
            return jnp.moveaxis(x.reshape(batch, chunks, PROMPT_LOGPROB_CHUNK, *x.shape[2:]), 1, 0)

        per_chunk = jax.lax.map(chunk_lp, (split(hidden), split(targets), split(valid)))
        return jnp.sum(per_chunk, axis=0)

    def pick(
        self,
        logits: jax.Array,
        seen: jax.Array | None,
        allowed: jax.Array | None,
        keys: jax.Array,
        step: jax.Array,
    ) -> jax.Array:
        """Choose the next token ``[rows]`` from raw ``logits`` ``[rows, vocab]``."""
        if self.vocab_limit is not None:
            logits = logits.at[:, self.vocab_limit :].set(NEG_INF)
        if allowed is not None:
            allowed = allowed | ~jnp.any(allowed, axis=-1, keepdims=True)  # never mask a row empty
            logits = jnp.where(allowed, logits, NEG_INF)
        step_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, step)
        tiny = jnp.finfo(jnp.float32).tiny
        uniform = jax.vmap(lambda k: jax.random.uniform(k, minval=tiny))(step_keys)
        return sample_token(logits, self.sampling, seen, uniform)

    def _expand(self, params, tokens, segments, constraint_state, copies: int):
        """Prefill once, then repeat every per-prompt array ``copies`` times along the batch."""
        max_new = self.sampling.max_new_tokens
        batch, length = tokens.shape
        vocab = self.config.vocab_size
        logits, last_pos, cache, prompt_lp = self.prefill(
            params, tokens, segments, length + max_new
        )

        def repeat(x):
            return jnp.repeat(x, copies, axis=0)

        cache = self._constrain_cache(
            KVCache(
                k=jnp.repeat(cache.k, copies, axis=1),
                v=jnp.repeat(cache.v, copies, axis=1),
                segment_ids=repeat(cache.segment_ids),
                index=cache.index,
            )
        )
        seen = None
        if self.sampling.repetition_penalty != 1.0:
            ids = jnp.where(segments > 0, tokens, vocab)  # padding scatters out of range: dropped
            seen = (
                jnp.zeros((batch, vocab), bool)
                .at[jnp.arange(batch)[:, None], ids]
                .set(True, mode="drop")
            )
            seen = repeat(seen)
        if constraint_state is not None:
            constraint_state = jax.tree.map(repeat, constraint_state)
        rows = batch * copies
        state = _LoopState(
            step=jnp.zeros((), jnp.int32),
            logits=self._constrain(repeat(logits), ("batch", "vocab")),
            positions=repeat(last_pos) + 1,
            cache=cache,
            done=jnp.zeros((rows,), bool),
            lengths=jnp.zeros((rows,), jnp.int32),
            out_tokens=jnp.full((rows, max_new), self.pad_id, jnp.int32),
            out_logprobs=jnp.zeros((rows, max_new), jnp.float32),
            seen=seen,
            constraint_state=constraint_state,
        )
        return state, prompt_lp

    def _advance(self, params, s: _LoopState, token, token_lp, constraint) -> _LoopState:
        """Record ``token`` ``[rows]`` (pad for finished rows) and run the model one step on it."""
        rows = token.shape[0]
        stop_ids = jnp.asarray(self.stop_ids, jnp.int32)
        stops = jnp.any(token[:, None] == stop_ids[None, :], axis=1)
        seen = s.seen
        if seen is not None:
            seen = seen.at[jnp.arange(rows), token].set(True)
        cstate = s.constraint_state
        if constraint is not None:
            cstate = constraint.advance(cstate, token)
        next_logits, cache = self.model.apply(
            {"params": params},
            token[:, None],
            s.positions[:, None],
            jnp.ones((rows, 1), jnp.int32),
            s.cache,
        )
        return _LoopState(
            step=s.step + 1,
            logits=self._constrain(next_logits[:, 0], ("batch", "vocab")),
            positions=s.positions + 1,
            cache=self._constrain_cache(cache),
            done=s.done | stops,
            lengths=s.lengths + (~s.done).astype(jnp.int32),
            out_tokens=s.out_tokens.at[:, s.step].set(token),
            out_logprobs=s.out_logprobs.at[:, s.step].set(token_lp),
            seen=seen,
            constraint_state=cstate,
        )

    def _not_finished(self, s: _LoopState) -> jax.Array:
        return (s.step < self.sampling.max_new_tokens) & ~jnp.all(s.done)

    def _generate(
        self, params, tokens, segments, keys, constraint, constraint_state, *, num_samples
    ):
        max_new = self.sampling.max_new_tokens
        state, prompt_lp = self._expand(params, tokens, segments, constraint_state, num_samples)

        def body(s: _LoopState) -> _LoopState:
            allowed = None
            if constraint is not None:
                allowed = constraint.allowed(s.constraint_state, max_new - s.step)
            token = self.pick(s.logits, s.seen, allowed, keys, s.step)
            token = jnp.where(s.done, self.pad_id, token)
            logp = jax.nn.log_softmax(s.logits, axis=-1)
            token_lp = jnp.take_along_axis(logp, token[:, None], axis=1)[:, 0]
            return self._advance(params, s, token, jnp.where(s.done, 0.0, token_lp), constraint)

        final = jax.lax.while_loop(self._not_finished, body, state)
        scores = jnp.zeros(final.done.shape, jnp.float32)
        return final.out_tokens, final.out_logprobs, final.lengths, final.done, prompt_lp, scores

    def _beam_search(
        self, params, tokens, segments, keys, constraint, constraint_state, *, num_beams
    ):
        """Beam search on the sum of processed log-probs (repetition penalty and constraint masks
        apply; temperature and truncation do not). A finished beam stays in the beam with its score
        (it can only be extended by padding at no cost), so the result is the ``num_beams`` best
        sequences found, best first, without length normalisation."""
        del keys
        max_new = self.sampling.max_new_tokens
        batch = tokens.shape[0]
        rows = batch * num_beams
        vocab = self.config.vocab_size
        state, prompt_lp = self._expand(params, tokens, segments, constraint_state, num_beams)
        first = jnp.where(jnp.arange(num_beams) == 0, 0.0, NEG_INF)
        scores = jnp.broadcast_to(first, (batch, num_beams))
        pad_only = jnp.where(jnp.arange(vocab) == self.pad_id, 0.0, NEG_INF)

        def body(carry):
            s, scores = carry
            logits = s.logits
            if self.vocab_limit is not None:
                logits = logits.at[:, self.vocab_limit :].set(NEG_INF)
            if constraint is not None:
                allowed = constraint.allowed(s.constraint_state, max_new - s.step)
                allowed = allowed | ~jnp.any(allowed, axis=-1, keepdims=True)
                logits = jnp.where(allowed, logits, NEG_INF)
            if s.seen is not None:
                logits = process_logits(
                    logits, dataclasses.replace(self.sampling, temperature=0), s.seen
                )
            step_lp = jnp.where(s.done[:, None], pad_only, jax.nn.log_softmax(logits, axis=-1))
            cand = (scores[:, :, None] + step_lp.reshape(batch, num_beams, vocab)).reshape(
                batch, -1
            )
            new_scores, flat = jax.lax.top_k(cand, num_beams)  # [batch, beams], best first
            source = (jnp.arange(batch)[:, None] * num_beams + flat // vocab).reshape(rows)
            token = (flat % vocab).reshape(rows).astype(jnp.int32)
            take = lambda x: jnp.take(x, source, axis=0)  # noqa: E731
            s = _LoopState(
                step=s.step,
                logits=take(s.logits),
                positions=take(s.positions),
                cache=KVCache(
                    k=jnp.take(s.cache.k, source, axis=1),
                    v=jnp.take(s.cache.v, source, axis=1),
                    segment_ids=take(s.cache.segment_ids),
                    index=s.cache.index,
                ),
                done=take(s.done),
                lengths=take(s.lengths),
                out_tokens=take(s.out_tokens),
                out_logprobs=take(s.out_logprobs),
                seen=None if s.seen is None else take(s.seen),
                constraint_state=jax.tree.map(take, s.constraint_state),
            )
            raw_lp = jnp.take_along_axis(
                jax.nn.log_softmax(s.logits, axis=-1), token[:, None], axis=1
            )
            token = jnp.where(s.done, self.pad_id, token)
            token_lp = jnp.where(s.done, 0.0, raw_lp[:, 0])
            return self._advance(params, s, token, token_lp, constraint), new_scores

        final, scores = jax.lax.while_loop(
            lambda c: self._not_finished(c[0]), body, (state, scores)
        )
        return (
            final.out_tokens,
            final.out_logprobs,
            final.lengths,
            final.done,
            prompt_lp,
            scores.reshape(rows),
        )

    # ----- host side -----
    def _program(self, copies: int, beam: bool):
        key = (copies, beam)
        if key not in self._compiled:
            impl = self._beam_search if beam else self._generate
            name = "num_beams" if beam else "num_samples"

            def fn(params, tokens, segments, keys, constraint, constraint_state):
                self.compilations += 1  # runs at trace time only
                return impl(
                    params, tokens, segments, keys, constraint, constraint_state, **{name: copies}
                )

            self._compiled[key] = jax.jit(fn)
        return self._compiled[key]

    def batch_size_for(self, prompts_per_batch: int) -> int:
        """``prompts_per_batch`` rounded up to a multiple of the mesh's batch shards."""
        return -(-max(1, prompts_per_batch) // self.shards) * self.shards

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        num_samples: int = 1,
        seeds: Sequence[int] | None = None,
        constraint: Constraint | None = None,
        constraint_states: Sequence[Any] | None = None,
        batch_size: int | None = None,
        num_beams: int = 0,
    ) -> list[list[Completion]]:
        """``num_samples`` completions for each prompt (token ids, BOS included if wanted).

        With ``num_beams > 0``, beam search instead: the ``num_beams`` best beams, best first
        (``num_samples`` is ignored).

        ``seeds`` (one int per prompt) make each prompt's samples independent of how prompts are
        batched (default: the prompt's index). ``constraint_states``: one initial constraint state per
        prompt (``constraint.start(...)``). ``batch_size``: prompts per decode batch (default all,
        padded with copies so that every batch has the same shape).
        """
        if not prompts:
            return []
        seeds = list(range(len(prompts))) if seeds is None else list(seeds)
        per_batch = self.batch_size_for(batch_size or len(prompts))
        results: list[list[Completion]] = []
        for start in range(0, len(prompts), per_batch):
            chunk = list(prompts[start : start + per_batch])
            chunk_states = None
            if constraint is not None:
                if constraint_states is None:
                    raise ValueError("a constraint needs one start state per prompt")
                chunk_states = list(constraint_states[start : start + per_batch])
            results.extend(
                self._generate_batch(
                    chunk,
                    seeds[start : start + per_batch],
                    num_samples,
                    per_batch,
                    constraint,
                    chunk_states,
                    num_beams,
                )
            )
        return results

    def _generate_batch(
        self,
        prompts,
        seeds,
        num_samples,
        per_batch,
        constraint,
        constraint_states,
        num_beams,
    ) -> list[list[Completion]]:
        if num_beams:
            num_samples = num_beams
        real = len(prompts)
        filler = per_batch - real
        prompts = prompts + [prompts[0]] * filler
        seeds = list(seeds) + [seeds[0]] * filler
        length = bucket_length(max(len(p) for p in prompts))
        tokens, segments = pad_prompts(prompts, length, self.pad_id, self.padding_side)
        row_seeds = np.repeat(np.asarray(seeds, np.uint32), num_samples)
        sample_index = np.tile(np.arange(num_samples, dtype=np.uint32), len(seeds))
        keys = jax.vmap(jax.random.fold_in)(jax.vmap(jax.random.key)(row_seeds), sample_index)
        cstate = None
        if constraint is not None:
            states = list(constraint_states) + [constraint_states[0]] * filler
            cstate = jax.tree.map(lambda *xs: self._put(np.stack(xs)), *states)
        out = self._program(num_samples, bool(num_beams))(
            self.params, self._put(tokens), self._put(segments), keys, constraint, cstate
        )
        out_tokens, out_lp, lengths, done, prompt_lp, scores = jax.device_get(out)
        results = []
        for i in range(real):
            samples = []
            for j in range(num_samples):
                r = i * num_samples + j
                n = int(lengths[r])
                samples.append(
                    Completion(
                        tokens=out_tokens[r, :n].copy(),
                        logprobs=out_lp[r, :n].copy(),
                        stopped=bool(done[r]),
                        prompt_tokens=len(prompts[i]),
                        prompt_logprob=float(prompt_lp[i]) if self.full_perplexity else None,
                        score=float(scores[r]) if num_beams else None,
                    )
                )
            if num_beams:  # beams that never had a finite score are not answers
                samples = [c for c in samples if np.isfinite(c.score)]
            results.append(samples)
        return results

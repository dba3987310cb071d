"""The host-side driver: continuous batching over a fixed table of slots and a paged KV pool.

``Engine.run`` takes requests (a prompt, how many samples, a seed, an optional constraint start
state) and yields each request's completions as soon as its last sample finishes:

1. **Admission.** While slots are idle and requests wait, the next prompt is prefilled into its own
   pages (in chunks of at most ``prefill_chunk`` tokens) and its samples enter idle slots. Every
   sample's page table starts with the prompt's pages: the samples of one prompt share them (only
   a partly filled last page is copied, once per sample), so memory per prompt is the prompt plus
   its completions.
2. **Decode.** ``Programs.decode`` runs up to ``steps_per_call`` steps over all slots and returns
   early once enough rows have finished to be worth refilling. Before each call the driver gives
   every active row the pages it may fill; attention loops over page blocks only up to the
   longest live row, so it costs what is in the cache, not ``max_new_tokens``.
3. **Collection.** Finished rows are read back, their pages freed, their slots reused.
4. **Narrowing.** Once no request waits, idle slots would still cost a full step each (the step
   has fixed shapes): when the live rows fit in a quarter of the slots, they can move to the front
   of a table a quarter as wide (down to 1/16) and later calls decode only those. A narrower table
   is one more program to prepare, so it happens once the idle slots have wasted what that costs
   (``engine.narrowing``: ski rental). Outputs are unchanged (a row carries its own random key,
   step and tokens); the full width returns with the next run.

The number of compiled programs is fixed per job: one admission program, one decode program per
slot width (at most three: ``num_slots``, a quarter, a sixteenth) and its row selection, one
prefill program per prompt-chunk length (``MIN_CHUNK`` times a power of four, at most
``prefill_chunk``). A sample's tokens depend only on its prompt, seed and sample index, never on
which slot it ran in or what ran beside it.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from logos_jax.config import ModelConfig
from logos_jax.engine.narrowing import NarrowingRent, narrower_width
from logos_jax.engine.pages import SCRATCH_PAGE, PagePool, bucket, pages_for
from logos_jax.engine.programs import DECODE_HEAD, Programs
from logos_jax.engine.state import EngineState, init_state, page_shapes, select_slots
from logos_jax.model import kernels_to_in_out, unstack_layers
from logos_jax.params import get_path, head_path
from logos_jax.sample.constraints import Constraint
from logos_jax.sample.processors import SamplingConfig
from logos_jax.sharding import DEFAULT_RULES, Rules, batch_shards, logical_to_spec

MIN_CHUNK = 16
FIRST_DRAFT = 4  # speculation starts with drafts this long, then adapts (``SpeculationStats``)


class DecodeWeights(NamedTuple):
    """The engine's copy of the weights (``Engine.weights``; pass it to another engine to share it):
    per-layer blocks (no per-step slicing of stacked arrays) with the linear kernels ``[in, out]``
    (``kernels_to_in_out``) and the LM head as ``DECODE_HEAD`` ``[hidden, vocab]``: XLA:CPU
    multiplies a few rows by an ``[in, out]`` matrix 8-25% faster than by the table's ``[out, in]``.
    A tied head is a copy (``vocab x hidden`` more memory: 0.5 GB for LOGOS-1B in bf16); an untied
    one moves."""

    tree: dict

    @classmethod
    def of(cls, params: Any, config: ModelConfig) -> DecodeWeights:
        """``params`` (stacked or per-layer, the table's axis order), laid out for decoding in one
        device program (stacked params: no more memory than the per-layer copy alone)."""
        if isinstance(params, cls):
            return params

        def relayout(tree: dict) -> dict:
            if "layers" in tree:
                tree = unstack_layers(tree, config.num_layers)
            tree = kernels_to_in_out(tree)
            head = get_path(tree, head_path(config))
            if not config.tie_embeddings:
                tree = {k: v for k, v in tree.items() if k != head_path(config)[0]}
            return {**tree, DECODE_HEAD: head.T}

        return cls(jax.jit(relayout)(params))


@dataclasses.dataclass(frozen=True)
class Request:
    """``num_samples`` samples of ``prompt`` (token ids). ``seed`` and the sample index fix each
    sample's randomness; ``constraint_state`` is the constraint's start state for this prompt."""

    prompt: Sequence[int]
    num_samples: int
    seed: int
    constraint_state: Any = None


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


@dataclasses.dataclass
class _Prompt:
    """A prefilled request: its pages, last logits, and which samples are still out."""

    index: int
    request: Request
    pages: list[int]
    logits: jax.Array
    prompt_logprob: float | None
    next_sample: int = 0
    done: dict[int, Completion] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Row:
    """What the driver knows of an occupied slot."""

    prompt: _Prompt
    sample: int
    pages: list[int]  # the row's page table (prompt pages first, then its own)
    own: list[int]  # the pages only this row uses (freed when it finishes)
    seq_len: int


def tokens_per_call(acceptance: float, draft_len: int) -> float:
    """Expected tokens one speculative step emits when each draft is accepted with probability
    ``acceptance`` until the first rejection: 1 + a + a^2 + ... + a^draft_len."""
    return sum(acceptance**i for i in range(draft_len + 1))


@dataclasses.dataclass
class SpeculationStats:
    """Drafted and accepted tokens so far (totals over the engine's slots), and the rule that adapts
    the draft length.

    From the acceptance rate ``a`` (a running mean over calls with at least ``MIN_DRAFTS`` drafts):
    double the length while doubling adds ``RAISE_GAIN`` more expected tokens per step, halve it
    while halving loses less than ``LOWER_LOSS``. A longer draft also costs more per step (on a
    CPU nearly in proportion, on a GPU hardly): the measured tokens/s of each length (calls that
    compiled left out) decide, and a doubling that came out slower is undone and not tried again.
    Each length is one compiled program, so the rule moves rarely; outputs never depend on it.
    """

    RAISE_GAIN = 1.3
    LOWER_LOSS = 1.1
    MIN_DRAFTS = 64
    drafted: int = 0
    accepted: int = 0
    rate: float | None = None
    speed: dict[int, float] = dataclasses.field(default_factory=dict)  # tokens/s by length
    too_long: int | None = None  # the shortest length that measured slower than its half

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    def update(
        self,
        drafted: int,
        accepted: int,
        draft_len: int,
        max_draft: int,
        speed: float | None = None,
    ) -> int:
        """Record the slots' running totals and the last call's tokens/s (None: it compiled);
        returns the next call's draft length."""
        if speed is not None:
            old = self.speed.get(draft_len)
            self.speed[draft_len] = speed if old is None else 0.5 * (old + speed)
        half = self.speed.get(draft_len // 2)
        if (
            draft_len > 1
            and speed is not None
            and half is not None
            and self.speed[draft_len] < half
        ):
            self.too_long = draft_len
            return draft_len // 2
        new_drafted, new_accepted = drafted - self.drafted, accepted - self.accepted
        if new_drafted < self.MIN_DRAFTS:
            return draft_len
        self.drafted, self.accepted = drafted, accepted
        rate = new_accepted / new_drafted
        self.rate = rate if self.rate is None else 0.5 * (self.rate + rate)
        longer = 2 * draft_len
        gain = tokens_per_call(self.rate, longer) / tokens_per_call(self.rate, draft_len)
        if longer <= max_draft and longer != self.too_long and gain >= self.RAISE_GAIN:
            return longer
        loss = tokens_per_call(self.rate, draft_len) / tokens_per_call(self.rate, draft_len // 2)
        if draft_len > 1 and loss < self.LOWER_LOSS:
            return draft_len // 2
        return draft_len


PAGED_KERNELS = ("auto", "xla", "pallas", "pallas_interpret")


# Tokens per page and per attention block, per decode kernel. The XLA loop reads one whole page per
# row each step; on a 2-core CPU (one layer, 32 rows x 512 tokens, 4 kv heads / 64 rows x 512, 2
# kv heads) 128-token pages beat 64-token ones (2.6 vs 3.0 ms, 1.3 vs 1.8 ms: fewer loop steps),
# 32-token pages lose (3.3, 2.3 ms), and 256-token ones gain nothing more at 512 tokens while
# doubling what a row's last page wastes. The Pallas kernels keep the pages and blocks they are
# tuned for.
PAGING = {"xla": (128, 128), "pallas": (16, 128), "pallas_interpret": (16, 128)}


def resolve_paged_kernel(kernel: str, mesh: Mesh | None) -> str:
    """The decode attention kernel ``kernel`` means on this platform (see ``Engine``)."""
    if kernel not in PAGED_KERNELS:
        raise ValueError(f"paged_kernel must be one of {PAGED_KERNELS}, got {kernel!r}")
    if kernel != "auto":
        return kernel
    platform = jax.default_backend() if mesh is None else mesh.devices.flat[0].platform
    return "pallas" if platform in ("gpu", "tpu") else "xla"


class Engine:
    """Continuous-batching decode engine (see the module docstring).

    ``params``: the model's parameters (stacked or per-layer) or another engine's ``weights``
    (shared, not copied). ``num_slots``: rows decoded together. ``page_size``: tokens per KV page
    (default: the kernel's, ``PAGING``). ``num_pages``: the
    pool's size (default: enough for every slot's longest possible sequence plus the prompts in
    flight, so no row ever waits for memory). ``steps_per_call``: decode steps per device call.
    ``block_pages``: pages attention reads per loop step (see ``paged_attention``; default: the
    kernel's block of tokens, ``PAGING``).
    ``paged_kernel``: decode attention, ``"xla"``, ``"pallas"`` (the Pallas paged-attention kernel
    shipped with JAX), ``"pallas_interpret"`` (the same on CPU, for tests) or ``"auto"`` (Pallas on
    GPU and TPU, XLA on CPU). ``speculate``: the most tokens a step may draft and verify when the
    constraint can draft (``ProteinCopy``: answers that copy the prompt); 0 = off. The draft length
    starts at ``FIRST_DRAFT`` and adapts to the acceptance rate and measured speed (powers of two up
    to ``speculate``); outputs do not depend on it (see ``Programs.speculative_step``).
    ``narrow_after``: seconds of decode time the idle slots of a job's tail may waste before the
    slot table narrows (see ``engine.narrowing``); default: what preparing a decode program took
    in this job; 0 = narrow as soon as the live rows fit.
    """

    def __init__(
        self,
        config: ModelConfig,
        params: Any,
        *,
        stop_ids: Sequence[int],
        pad_id: int,
        sampling: SamplingConfig | None = None,
        num_slots: int = 64,
        page_size: int | None = None,
        max_prompt_len: int = 1024,
        num_pages: int | None = None,
        steps_per_call: int = 16,
        block_pages: int | None = None,
        paged_kernel: str = "auto",
        prefill_chunk: int = 256,
        constraint: Constraint | None = None,
        full_perplexity: bool = False,
        vocab_limit: int | None = None,
        mesh: Mesh | None = None,
        rules: Rules = DEFAULT_RULES,
        speculate: int = 0,
        narrow_after: float | None = None,
    ):
        self.config = config
        kernel = resolve_paged_kernel(paged_kernel, mesh)
        page_size = page_size or PAGING[kernel][0]
        block_pages = block_pages or max(1, PAGING[kernel][1] // page_size)
        self.sampling = sampling or SamplingConfig()
        self.weights = DecodeWeights.of(params, config)
        shards = 1 if mesh is None else batch_shards(mesh, rules)
        self.num_slots = -(-num_slots // shards) * shards
        self.slot_shards = shards  # a narrowed slot table stays a multiple of this
        self.page_size = page_size
        self.steps_per_call = steps_per_call
        self.prefill_chunk = max(MIN_CHUNK, bucket(prefill_chunk, prefill_chunk))
        self.constraint = constraint
        self.full_perplexity = full_perplexity
        if speculate < 0:
            raise ValueError(f"speculate must be >= 0, got {speculate}")
        self.max_draft = speculate if hasattr(constraint, "draft") else 0
        self.draft_len = min(FIRST_DRAFT, self.max_draft)  # adapted after every decode call
        self.speculation = SpeculationStats()
        max_new = self.sampling.max_new_tokens
        # A row may run one call past its last token before the driver sees it stop; page tables
        # are whole blocks of ``block_pages`` (the unit attention reads).
        call_tokens = steps_per_call * (self.max_draft + 1)
        self.max_pages = pages_for(max_prompt_len + max_new + call_tokens, page_size)
        self.max_pages = -(-self.max_pages // block_pages) * block_pages
        if num_pages is None:
            per_row = pages_for(max_new + call_tokens, page_size) + 1
            num_pages = 1 + self.num_slots * (per_row + pages_for(max_prompt_len, page_size))
        self.pool = PagePool(num_pages)
        limit = vocab_limit if vocab_limit and vocab_limit < config.vocab_size else None
        self.programs = Programs(
            config,
            self.sampling,
            tuple(sorted({int(i) for i in stop_ids})),
            int(pad_id),
            limit,
            full_perplexity,
            mesh,
            rules,
            block_pages,
            kernel,
        )
        self.max_prompt_len = max_prompt_len
        self._num_pages = num_pages
        self.state: EngineState | None = None  # made by the first run (constraint state shapes)
        p = self.programs
        self._prefill_program = jax.jit(p.prefill, donate_argnums=(1, 2))
        self._admit_program = jax.jit(p.admit, donate_argnums=0)
        self._decode_program = jax.jit(
            p.decode, donate_argnums=1, static_argnames=("steps", "draft_len")
        )
        self._select_program = jax.jit(select_slots)  # a new width: nothing to donate into
        self.compiled_shapes: set[tuple] = set()
        self._programs: dict[tuple, Any] = {}
        self.narrowing = NarrowingRent(narrow_after)

    @property
    def params(self) -> dict:
        """The decode weights' tree (``weights.tree``), as the programs take it."""
        return self.weights.tree

    def program(self, key: tuple, make: Any) -> Any:
        """The jitted program ``key``, made by ``make()`` the first time."""
        if key not in self._programs:
            self._programs[key] = make()
        self.compiled_shapes.add(key)
        return self._programs[key]

    @property
    def compilations(self) -> int:
        """Distinct program shapes this engine has run (each compiled once)."""
        return len(self.compiled_shapes)

    # ----- prefill -----
    def _prefill_prompt(self, index: int, request: Request) -> _Prompt | None:
        """Prefill a prompt into new pages; None when the pool cannot hold it now."""
        prompt = list(request.prompt)
        n = len(prompt)
        pages = self.pool.take(pages_for(n, self.page_size))
        if pages is None:
            return None
        page_size = self.page_size
        chunk = MIN_CHUNK * bucket(-(-n // MIN_CHUNK), self.prefill_chunk // MIN_CHUNK, base=4)
        table = np.asarray(pages, np.int32)
        read = np.zeros((1, self.max_pages), np.int32)  # the prompt's page table, scratch after
        read[0, : len(table)] = table
        logits, total = None, 0.0
        for start in range(0, n, chunk):
            real = min(chunk, n - start)
            positions = np.arange(start, start + chunk, dtype=np.int32)
            tokens = np.full((chunk,), self.programs.pad_id, np.int32)
            tokens[:real] = prompt[start : start + real]
            write = np.full((chunk,), SCRATCH_PAGE, np.int32)
            write[:real] = table[positions[:real] // page_size]
            targets = np.full((chunk,), -1, np.int32)
            nxt = prompt[start + 1 : start + real + 1]
            targets[: len(nxt)] = nxt
            self.compiled_shapes.add(("prefill", chunk))
            k, v, logits, lp = self._prefill_program(
                self.params,
                self.state.k,
                self.state.v,
                tokens[None],
                positions[None],
                write[None],
                read,
                np.int32(real - 1),
                targets[None],
            )
            self.state = self.state.replace(k=k, v=v)
            total += float(lp) if self.full_perplexity else 0.0
        prompt_lp = total if self.full_perplexity else None
        return _Prompt(index, request, pages, logits, prompt_lp)

    # ----- admission -----
    def _admit(self, prompt: _Prompt, slots: list[int], rows: list[_Row | None]) -> bool:
        """Start as many of ``prompt``'s remaining samples as ``slots`` and the pool allow."""
        n = len(prompt.request.prompt)
        partial = n % self.page_size != 0
        shared = prompt.pages[:-1] if partial else prompt.pages
        count = min(len(slots), prompt.request.num_samples - prompt.next_sample)
        width = len(rows)
        mask = np.zeros((width,), bool)
        src = np.full((width,), SCRATCH_PAGE, np.int32)
        dst = np.full((width,), SCRATCH_PAGE, np.int32)
        sample_ids = np.zeros((width,), np.uint32)
        admitted = 0
        for slot in slots[:count]:
            own = self.pool.take(1) if partial else []
            if own is None:
                break
            if partial:
                src[slot], dst[slot] = prompt.pages[-1], own[0]
            mask[slot] = True
            sample_ids[slot] = prompt.next_sample
            rows[slot] = _Row(prompt, prompt.next_sample, shared + own, list(own), n)
            prompt.next_sample += 1
            admitted += 1
        if not admitted:
            return False
        seen = None
        if self.state.slots.seen is not None:
            seen = np.zeros((self.config.vocab_size,), bool)
            seen[np.asarray(prompt.request.prompt, np.int64)] = True
        cstate = prompt.request.constraint_state
        self.compiled_shapes.add(("admit",))
        self.state = self._admit_program(
            self.state,
            mask,
            prompt.logits,
            seen,
            np.int32(n),
            np.uint32(prompt.request.seed),
            sample_ids,
            None if self.constraint is None else jax.tree.map(jnp.asarray, cstate),
            src,
            dst,
        )
        return True

    # ----- the loop -----
    def _check(self, requests: list[Request]) -> None:
        for request in requests:
            if not 0 < len(request.prompt) <= self.max_prompt_len:
                raise ValueError(
                    f"prompts must have 1 to {self.max_prompt_len} tokens, got {len(request.prompt)}"
                )
            if (self.constraint is None) != (request.constraint_state is None):
                raise ValueError("give a constraint start state with every request, and only then")
        if self.state is None:
            make = functools.partial(  # one program, not a compiled fill per buffer
                init_state,
                self.config,
                num_slots=self.num_slots,
                num_pages=self._num_pages,
                page_size=self.page_size,
                layout=self.programs.layout,
                max_new_tokens=self.sampling.max_new_tokens,
                track_seen=self.sampling.repetition_penalty != 1.0,
            )
            start = requests[0].constraint_state if requests else None
            self.state = jax.jit(make, out_shardings=self._state_shardings())(
                constraint_state=start
            )
        elif self.state.slots.active.shape[0] < self.num_slots:  # narrowed by the last run
            width = self.state.slots.active.shape[0]
            self._select_slots(np.arange(self.num_slots) % width, np.zeros(self.num_slots, bool))

    def _state_shardings(self) -> Any:
        """Where the programs leave the state, so that the first program is given the state it
        returns and compiles once: on the engine's mesh, pages split as their layout says and
        slots whole; without one, whole on the weights' mesh (computations follow their inputs);
        None when the weights have no mesh."""
        mesh = self.programs.mesh
        if mesh is None:
            weights = getattr(jax.tree.leaves(self.weights.tree)[0], "sharding", None)
            if not isinstance(weights, NamedSharding):
                return None
            return NamedSharding(weights.mesh, PartitionSpec())
        layout, rules = self.programs.layout, self.programs.rules
        shapes = page_shapes(self.config, layout, self._num_pages, self.page_size)
        k, v = (
            NamedSharding(mesh, logical_to_spec(pages.axes, shape, mesh, rules))
            for pages, shape in zip((layout.k, layout.v), shapes, strict=True)
        )
        return EngineState(k=k, v=v, slots=NamedSharding(mesh, PartitionSpec()))

    def run(self, requests: Iterable[Request]) -> Iterator[tuple[int, list[Completion]]]:
        """Yield ``(request index, completions in sample order)`` as each request finishes."""
        requests = list(requests)
        self._check(requests)
        self.narrowing.waste = 0.0
        waiting = collections.deque(enumerate(requests))
        open_prompts: collections.deque[_Prompt] = collections.deque()
        rows: list[_Row | None] = [None] * self.num_slots
        max_new = self.sampling.max_new_tokens
        while waiting or open_prompts or any(r is not None for r in rows):
            free = [i for i, r in enumerate(rows) if r is None]
            while free and (open_prompts or waiting):
                if not open_prompts:
                    index, request = waiting[0]
                    if request.num_samples < 1:
                        waiting.popleft()
                        yield index, []
                        continue
                    prompt = self._prefill_prompt(index, request)
                    if prompt is None:
                        break  # the pool is full: wait for rows to finish
                    waiting.popleft()
                    open_prompts.append(prompt)
                prompt = open_prompts[0]
                if not self._admit(prompt, free, rows):
                    break
                if prompt.next_sample == prompt.request.num_samples:
                    open_prompts.popleft()
                free = [i for i, r in enumerate(rows) if r is None]
            if all(r is None for r in rows):
                if waiting or open_prompts:
                    raise RuntimeError("the KV page pool is too small for one prompt and sample")
                break
            pending = bool(waiting or open_prompts)
            idle_share = 0.0
            if not pending:
                rows, idle_share = self._narrow(rows)
            self._grow_pages(rows)
            table = self._page_table(rows)
            refill_at = max(1, len(rows) // 8) if pending else len(rows) + 1
            shape = ("decode", self.draft_len, len(rows))
            compiles = shape not in self.compiled_shapes
            self.compiled_shapes.add(shape)
            started = time.perf_counter()
            self.state = self._decode_program(
                self.params,
                self.state,
                table,
                np.int32(refill_at),
                self.constraint,
                steps=self.steps_per_call,
                draft_len=self.draft_len,
            )
            yield from self._collect(rows, max_new, started, compiles, idle_share)

    def _narrow(self, rows: list[_Row | None]) -> tuple[list[_Row | None], float]:
        """``rows`` moved to the narrower slot table they fit in (``narrower_width``) when
        ``self.narrowing`` says it is due, with 0; else the same list and the share of its slots
        the narrower table would drop (0 when none fits)."""
        live = [i for i, r in enumerate(rows) if r is not None]
        width = narrower_width(len(rows), len(live), self.num_slots, self.slot_shards)
        if width == len(rows):
            return rows, 0.0
        if not self.narrowing.due(("decode", self.draft_len, width) in self.compiled_shapes):
            return rows, 1 - width / len(rows)
        self.narrowing.waste = 0.0
        idle = [i for i, r in enumerate(rows) if r is None]
        order = np.asarray(live + idle[: width - len(live)], np.int32)
        self._select_slots(order, np.arange(width) < len(live))
        return [rows[i] for i in order], 0.0

    def _select_slots(self, order: np.ndarray, active: np.ndarray) -> None:
        """The slot table becomes the slots ``order`` ``[width]`` (in that order); ``active`` ``[width]``
        says which stay active."""
        self.compiled_shapes.add(("select", self.state.slots.active.shape[0], len(order)))
        slots = self._select_program(self.state.slots, order, active)
        self.state = self.state.replace(slots=slots)

    def _grow_pages(self, rows: list[_Row | None]) -> None:
        """Give every active row the pages its next decode call may fill."""
        call_tokens = self.steps_per_call * (self.draft_len + 1)
        for row in rows:
            if row is None:
                continue
            need = pages_for(row.seq_len + call_tokens, self.page_size) - len(row.pages)
            if need > 0:
                pages = self.pool.take(need)
                if pages is None:
                    raise RuntimeError(
                        f"the KV page pool ({self.pool.num_pages} pages) ran out; "
                        "give the engine more pages or fewer slots"
                    )
                row.pages.extend(pages)
                row.own.extend(pages)

    def _page_table(self, rows: list[_Row | None]) -> np.ndarray:
        """``[slots, max_pages]`` page tables (scratch where a row has no page)."""
        table = np.full((len(rows), self.max_pages), SCRATCH_PAGE, np.int32)
        for slot, row in enumerate(rows):
            if row is not None:
                table[slot, : len(row.pages)] = row.pages
        return table

    def _collect(
        self,
        rows: list[_Row | None],
        max_new: int,
        started: float,
        compiled: bool,
        idle_share: float,
    ) -> Iterator[tuple[int, list[Completion]]]:
        """Read back the rows that finished, free their pages and slots, yield finished requests.
        ``started``: when the decode call began; ``compiled``: it prepared its program first;
        ``idle_share``: the share of its slots a narrower table would have dropped."""
        s = self.state.slots
        finished, stopped, seq_len, drafted, accepted = jax.device_get(
            (s.finished, s.stopped, s.seq_len, s.drafted, s.accepted)
        )
        seconds = time.perf_counter() - started
        advanced = [int(seq_len[i]) - r.seq_len for i, r in enumerate(rows) if r is not None]
        self.narrowing.record(seconds, max(advanced, default=0), compiled, idle_share)
        if self.max_draft:
            speed = None if compiled else sum(advanced) / seconds
            self.draft_len = self.speculation.update(
                int(drafted.sum()), int(accepted.sum()), self.draft_len, self.max_draft, speed
            )
        ended = [i for i, r in enumerate(rows) if r is not None and finished[i]]
        for i, row in enumerate(rows):
            if row is not None:
                row.seq_len = int(seq_len[i])
        if not ended:
            return
        tokens, logprobs, steps = jax.device_get((s.out_tokens, s.out_logprobs, s.step))
        for i in ended:
            row = rows[i]
            rows[i] = None
            n = int(min(steps[i], max_new))
            prompt = row.prompt
            prompt.done[row.sample] = Completion(
                tokens=tokens[i, :n].copy(),
                logprobs=logprobs[i, :n].copy(),
                stopped=bool(stopped[i]),
                prompt_tokens=len(prompt.request.prompt),
                prompt_logprob=prompt.prompt_logprob,
            )
            self.pool.give_back(row.own)
            if len(prompt.done) == prompt.request.num_samples:
                self.pool.give_back(prompt.pages)
                yield prompt.index, [prompt.done[j] for j in range(len(prompt.done))]

"""The batch sampler: lists of prompts in, lists of completions out, on the decode engine.

``Sampler`` keeps one ``Engine`` per constraint (so a job compiles its programs once) and returns
completions in prompt order; ``logos_jax.sample.jobs`` uses ``Sampler.stream`` to write each input's
rows as soon as its samples finish. Beam search runs on the same pages (``logos_jax.engine.beam``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from jax.sharding import Mesh

from logos_jax.config import ModelConfig
from logos_jax.engine import Completion, Engine, Request, beam_search
from logos_jax.sample.constraints import Constraint
from logos_jax.sample.processors import SamplingConfig
from logos_jax.sharding import DEFAULT_RULES, Rules

__all__ = ["Completion", "Sampler"]


class Sampler:
    """Samples continuations of token prompts from a decoder.

    ``stop_ids``: a set of token ids that end a row (all EOS ids, task tags such as ``<MoleculeE>``).
    ``full_perplexity`` also scores the prompt tokens (the released scripts' prompt + completion
    perplexity). ``vocab_limit``: ids at or above it (embedding rows the tokenizer has no token for)
    are never sampled. ``num_slots``: rows decoded together; ``max_prompt_len``: the longest prompt
    the engine accepts. ``engine_options`` go to ``Engine`` (page size, pool size, steps per call).
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
        num_slots: int = 64,
        max_prompt_len: int = 1024,
        **engine_options: Any,
    ):
        self.config = config
        self.params = params
        self.sampling = sampling or SamplingConfig()
        self.options = dict(
            stop_ids=stop_ids,
            pad_id=pad_id,
            sampling=self.sampling,
            mesh=mesh,
            rules=rules,
            full_perplexity=full_perplexity,
            vocab_limit=vocab_limit,
            num_slots=num_slots,
            max_prompt_len=max_prompt_len,
            **engine_options,
        )
        self._engines: dict[int, Engine] = {}

    def engine(self, constraint: Constraint | None = None) -> Engine:
        """The engine for ``constraint`` (made once; its weights are shared with ``params``)."""
        key = id(constraint)
        if key not in self._engines:
            engine = Engine(self.config, self.params, constraint=constraint, **self.options)
            self.params = engine.weights  # one copy of the decode weights, shared by every engine
            self._engines[key] = engine
        return self._engines[key]

    @property
    def compilations(self) -> int:
        return sum(e.compilations for e in self._engines.values())

    def stream(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        num_samples: int | Sequence[int] = 1,
        seeds: Sequence[int] | None = None,
        constraint: Constraint | None = None,
        constraint_states: Sequence[Any] | None = None,
        num_beams: int = 0,
    ) -> Iterator[tuple[int, list[Completion]]]:
        """``(prompt index, completions)`` in the order prompts finish (see ``generate``)."""
        seeds = list(range(len(prompts))) if seeds is None else list(seeds)
        counts = [num_samples] * len(prompts) if isinstance(num_samples, int) else list(num_samples)
        if constraint is not None and constraint_states is None:
            raise ValueError("a constraint needs one start state per prompt")
        states = constraint_states or [None] * len(prompts)
        if num_beams:
            engine = self.engine(constraint)
            for i, (prompt, state) in enumerate(zip(prompts, states, strict=True)):
                yield i, beam_search(engine, prompt, num_beams, state)
            return
        requests = [
            Request(list(p), n, s, c)
            for p, n, s, c in zip(prompts, counts, seeds, states, strict=True)
        ]
        yield from self.engine(constraint).run(requests)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        num_samples: int = 1,
        seeds: Sequence[int] | None = None,
        constraint: Constraint | None = None,
        constraint_states: Sequence[Any] | None = None,
        num_beams: int = 0,
    ) -> list[list[Completion]]:
        """``num_samples`` completions for each prompt (token ids, BOS included if wanted).

        With ``num_beams > 0``, beam search instead: the ``num_beams`` best beams, best first
        (``num_samples`` is ignored). ``seeds`` (one int per prompt, default the prompt's index)
        and the sample index fix each sample, whatever else is decoded beside it.
        ``constraint_states``: one start state per prompt (``constraint.start(...)``).
        """
        out: list[list[Completion]] = [[] for _ in prompts]
        for i, completions in self.stream(
            prompts,
            num_samples=num_samples,
            seeds=seeds,
            constraint=constraint,
            constraint_states=constraint_states,
            num_beams=num_beams,
        ):
            out[i] = completions
        return out

"""When and how far the decode engine narrows its slot table as rows finish.

Every decode step runs all ``width`` slots (fixed shapes), so once no request waits, the idle
slots of a job's tail cost time each step. A narrower table (the live rows moved to its front)
makes each step cheaper, but it is one more decode program to prepare: traced and compiled, or
traced and loaded from the compilation cache; on a small model that is more than a short tail costs.

``narrower_width`` says how far the live rows allow: a ``NARROWING``-th at a time, down to
``num_slots // NARROWEST``. ``NarrowingRent`` says when it pays, by ski rental: nobody knows how
long the live rows will run, so keep the wide table until the time its idle slots have wasted since
narrowing became possible reaches what preparing the narrower program costs (measured on the job's
first decode program), then narrow. Whatever the tail's length, that spends at most twice what the
better of "narrow at once" and "never narrow" would. A program already prepared costs nothing:
the engine narrows at once.
"""

from __future__ import annotations

import dataclasses

NARROWING = 4
NARROWEST = 16


def narrower_width(width: int, live: int, num_slots: int, shards: int) -> int:
    """The narrowest table ``live`` rows fit in from ``width`` slots: ``width`` divided by powers of
    ``NARROWING``, at least ``num_slots // NARROWEST``, a multiple of ``shards``."""
    floor = num_slots // NARROWEST
    while (
        width % NARROWING == 0
        and (width // NARROWING) % shards == 0
        and width // NARROWING >= floor
        and live <= width // NARROWING
    ):
        width //= NARROWING
    return width


@dataclasses.dataclass
class NarrowingRent:
    """Ski rental for the slot table (see the module docstring). ``cost``: seconds one more decode
    program costs, or None to measure it: the first decode call that prepared its program, less
    what its steps take in the next call that did not."""

    cost: float | None = None
    waste: float = 0.0  # seconds idle slots have cost since narrowing became possible
    _prepared_call: tuple[float, int] | None = None  # (seconds, steps) of a call that prepared

    def record(self, seconds: float, steps: int, prepared: bool, idle_share: float) -> None:
        """One decode call took ``seconds`` for ``steps`` steps (``prepared``: it prepared its
        program first); ``idle_share``: the share of its slots a narrower table would have
        dropped (0 when none could)."""
        if prepared:
            self._prepared_call = self._prepared_call or (seconds, steps)
            return
        if self.cost is None and self._prepared_call is not None:
            first_seconds, first_steps = self._prepared_call
            self.cost = max(0.0, first_seconds - first_steps * seconds / max(steps, 1))
        self.waste += seconds * idle_share

    def due(self, ready: bool) -> bool:
        """Narrow now? At once when the narrower program is ``ready``; otherwise once the idle
        slots have wasted what preparing it costs (never before that cost is known)."""
        return ready or (self.cost is not None and self.waste >= self.cost)

"""Host-side bookkeeping of the KV page pool: which pages are free, and page arithmetic.

Page 0 is scratch: idle rows, padding tokens and unused page-table entries point at it, and
attention masks everything it holds. The device never allocates; the engine's driver asks this
pool for pages before each call and gives them back when a sample (or a prompt) is done.
"""

from __future__ import annotations

SCRATCH_PAGE = 0


def pages_for(tokens: int, page_size: int) -> int:
    """How many pages hold ``tokens`` tokens."""
    return -(-tokens // page_size)


def bucket(n: int, cap: int, base: int = 2) -> int:
    """``n`` rounded up to a power of ``base`` (at least 1), at most ``cap``: the few static sizes
    that bound how many programs a job compiles."""
    size = 1
    while size < n:
        size *= base
    return min(size, cap)


class PagePool:
    """Free list over pages ``1 .. num_pages - 1`` (0 is scratch)."""

    def __init__(self, num_pages: int):
        if num_pages < 2:
            raise ValueError(f"a page pool needs at least 2 pages, got {num_pages}")
        self.num_pages = num_pages
        self._free = list(range(num_pages - 1, 0, -1))

    @property
    def free(self) -> int:
        return len(self._free)

    def take(self, n: int) -> list[int] | None:
        """``n`` pages, or None (and nothing taken) when fewer are free."""
        if n > len(self._free):
            return None
        return [self._free.pop() for _ in range(n)]

    def give_back(self, pages: list[int]) -> None:
        self._free.extend(pages)

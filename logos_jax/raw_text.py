"""The one reader per raw text format (FASTA, CSV), shared by the corpus builder (``data.sources``)
and ``logos grammar encode``.

Both read ``(line number, text or None)`` pairs as ``validate.text_lines`` gives them (None: a line of
bytes that are not UTF-8 text) and never raise for one bad line: it comes back as a problem of that
record, so the caller decides whether it is a reject, a skipped line or an error.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator

Lines = Iterable[tuple[int, str | None]]

NOT_TEXT = "not UTF-8 text (invalid or binary bytes)"


def fasta_records(lines: Lines) -> Iterator[tuple[int, str | None]]:
    """``(header line number, sequence)`` per ``>header`` record: the sequence lines joined, stripped.

    The sequence is None when a line of the record is not UTF-8 text (the record is rejected whole).
    Lines before the first header are ignored.
    """
    header, parts, bad = 0, [], False
    for number, line in lines:
        if line is not None and line.startswith(">"):
            if header:
                yield header, None if bad else "".join(parts)
            header, parts, bad = number, [], False
        elif line is None:
            bad = True
        elif line.strip():
            parts.append(line.strip())
    if header:
        yield header, None if bad else "".join(parts)


class CsvRows:
    """``csv.DictReader`` over ``(line number, text or None)`` pairs.

    Iterating gives ``(line number, row, problem)``: ``row`` a dict of the header's columns, or None
    with ``problem`` saying why (``NOT_TEXT``, or ``csv row cannot be read: ...`` for a row csv
    rejects, e.g. a field over its size limit). A line of bad bytes is reported before the next row.
    A row's number is that of its last line (a quoted field may span lines).
    """

    def __init__(self, lines: Lines):
        self._bad: list[int] = []
        self._last = (
            0  # the number of the last line csv read: the row it ends, or the one it failed on
        )
        self._reader = csv.DictReader(self._text(lines))

    def _text(self, lines: Lines) -> Iterator[str]:  # bad lines become blank ones (csv skips them)
        for number, line in lines:
            self._last = number
            if line is None:
                self._bad.append(number)
            yield line or "\n"

    @property
    def fieldnames(self) -> list[str] | None:
        """The header's column names (reads the header; raises ``csv.Error`` when it cannot)."""
        return self._reader.fieldnames

    def __iter__(self) -> Iterator[tuple[int, dict[str, str] | None, str | None]]:
        reader = self._reader
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                yield self._last, None, f"csv row cannot be read: {err}"
                continue
            while self._bad:
                yield self._bad.pop(0), None, NOT_TEXT
            yield self._last, row, None
        while self._bad:
            yield self._bad.pop(0), None, NOT_TEXT

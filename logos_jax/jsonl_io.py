"""JSON lines: the one reader of JSONL files (``json_objects``, ``read_rows``), and resumable JSONL
output: whole inputs appended at once, torn or partial inputs dropped on resume.

All rows of one input (its samples) are written with one ``write`` + ``fsync``; each row carries
``group_size``, the number of rows of its input. A job killed mid-write can leave a torn last line or
an input with fewer rows than that; ``resume`` rewrites the file without them (temp file +
``os.replace``), so a re-run redoes exactly those inputs and the file never holds duplicates or a
broken line. ``complete_inputs`` reads a file the same way without changing it (multi-host parts).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from logos_jax.errors import LogosError
from logos_jax.files import atomic_open
from logos_jax.raw_text import NOT_TEXT
from logos_jax.validate import text_lines

NOT_AN_OBJECT = "not a JSON object"


def _decoded(path: Path) -> Iterator[tuple[int, Any | None, str, str | None]]:
    """``(line number, value, raw line, problem)`` for every non-blank line of ``path``: the
    decoded JSON value, or None and why (``NOT_TEXT``, or ``not valid JSON (...)``)."""
    for number, line in text_lines(path):
        if line is None:
            yield number, None, "", NOT_TEXT
            continue
        if not line.strip():
            continue
        try:
            yield number, json.loads(line), line, None
        except json.JSONDecodeError as err:
            yield number, None, line, f"not valid JSON ({err})"
        except RecursionError:
            yield number, None, line, "not valid JSON (nested too deeply)"


def json_objects(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """``(line number, object, None)`` for every non-blank line of ``path`` holding a JSON object;
    ``(line number, None, problem)`` for the others: ``NOT_TEXT``, ``not valid JSON (...)`` or
    ``NOT_AN_OBJECT``. A missing or unreadable file is a LogosError naming it."""
    for number, value, _, problem in _decoded(path):
        if problem is None and not isinstance(value, dict):
            problem = NOT_AN_OBJECT
        yield number, None if problem else value, problem


def read_rows(path: Path) -> Iterator[tuple[int, Any | None, str]]:
    """``(line number, decoded JSON or None, raw line)`` for every non-blank line of ``path``.

    A line that is not JSON, or not UTF-8 text (binary data, or a write torn inside a multi-byte
    character by a full disk: its raw line is then ``""``), gives None.
    """
    for number, value, line, _ in _decoded(path):
        yield number, value, line


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _scan(path: Path) -> tuple[dict[str, dict[int, str]], set[str], int]:
    """``(rows by id and sample, ids of complete inputs, lines dropped)`` of an output file."""
    groups: dict[str, dict[int, str]] = defaultdict(dict)
    sizes: dict[str, set[int]] = defaultdict(set)
    dropped = 0
    entries = list(read_rows(path))
    for number, row, line in entries:
        sample = size = None
        if isinstance(row, dict) and "id" in row and "group_size" in row:
            sample, size = _int(row.get("sample", 0)), _int(row["group_size"])
        if not line.endswith("\n") and number == entries[-1][0]:
            dropped += 1  # the torn tail of a killed write (or a full disk)
            continue
        if sample is None or size is None:
            raise LogosError(
                f"{path}:{number}: not a row of a `logos sample` output; this file was not "
                "written by this command (nothing was changed). fix: choose a new --out path"
            )
        rows = groups[str(row["id"])]
        if sample in rows:
            dropped += 1
        rows[sample] = line
        sizes[str(row["id"])].add(size)
    finished = {i for i, rows in groups.items() if sizes[i] == {len(rows)}}
    return groups, finished, dropped


def resume(path: Path) -> set[str]:
    """Ids of the inputs already complete in ``path``: all ``group_size`` rows of the input present.

    Rows of incomplete inputs, duplicates and a torn last line are removed from the file. A whole
    line that is not a row of this format (``--out`` names some other file) is a LogosError and the
    file is left as it is: resuming never deletes what this command did not write.
    """
    path = Path(path)
    if not path.exists():
        return set()
    groups, finished, dropped = _scan(path)
    kept = sum(len(groups[i]) for i in finished)
    total = sum(len(rows) for rows in groups.values()) + dropped
    if kept != total:
        write_atomic(
            path,
            (line for i in groups if i in finished for line in groups[i].values()),
            why="drop the torn rows of",
        )
    return finished


def complete_inputs(path: Path) -> dict[str, list[str]]:
    """The raw lines of every complete input in ``path``, by id, in sample order; read-only.

    For files other processes may read at the same time (multi-host parts and merged outputs):
    incomplete inputs and a torn last line are ignored, not removed.
    """
    path = Path(path)
    if not path.exists():
        return {}
    groups, finished, _ = _scan(path)
    return {i: [groups[i][s] for s in sorted(groups[i])] for i in groups if i in finished}


def write_atomic(path: Path, lines: Iterable[str], why: str = "write") -> None:
    """Replace ``path`` with ``lines`` at once (``files.atomic_open``: temp sibling + rename); a
    folder that cannot hold the temporary is a LogosError ``cannot {why} {path}: ...``."""
    with atomic_open(path, why=why) as f:
        f.writelines(lines)


class Appender:
    """Appends groups of rows to a JSONL file, one ``write`` + ``fsync`` per group."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as err:
            raise LogosError(f"cannot write {self.path}: {err}") from None

    def write(self, rows: list[dict[str, Any]]) -> None:
        blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        view = memoryview(blob)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> Appender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

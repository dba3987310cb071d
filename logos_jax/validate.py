"""Input validation shared by every command: typed config fields, CLI numbers, JSONL rows, text lines.

* ``check_fields(obj, where)``: every field of a dataclass instance against its annotation (``int``,
  ``float``, ``bool``, ``str``, ``X | None``, ``dict[str, float]``, ``tuple[int, ...]``...), with the
  key in the message (``invalid train config: steps=2.5: expected an integer``). Booleans accept only
  booleans (``"false"`` or ``maybe`` are errors, never true); integers accept integral numbers only;
  floats must be finite. Called from the config dataclasses' ``__post_init__`` (``TrainConfig``,
  ``ModelConfig``), the train config sections' ``check(where)`` (``MeshConfig``,
  ``OptimizerConfig``, ``DistributedConfig``, each in the module that uses it) and the data-config
  reader; ``check_value`` checks one value the same way.
* ``number(kind, ...)``: an argparse ``type=`` for CLI numbers with a range (``--num-samples 0``,
  ``--temperature nan``, ``--cutoff inf`` are one-line usage errors).
* ``row_value(row, field, kind, where)``: one typed field of a decoded JSONL row (``null`` or a number
  where a string belongs is a ``LogosError`` naming the file and line).
* ``text_lines(path)``: a text file's lines decoded one by one; a line that is not UTF-8 (or holds NUL
  bytes: a binary file) is reported as ``None`` so readers reject that line instead of crashing.
* ``MAX_SMILES_LENGTH``, ``MAX_STRUCTURE_BYTES``, ``MAX_LIGAND_ATOMS``: the documented input sizes
  beyond which RDKit / biotite are never called (the input is rejected with the limit in the reason).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from logos_jax.errors import LogosError

# Size guards before third-party parsers that crash (not raise) on huge inputs: RDKit's SMILES writer
# overflows the stack (segfault) near 20,000 atoms (10,000 still works); 4,096 characters is far
# above the molecules of the LOGOS tasks (drug-like ligands and MOF linkers: a few hundred at most).
MAX_SMILES_LENGTH = 4096
# biotite reads a whole structure file into memory; the largest PDB entries are ~150 MB as mmCIF.
MAX_STRUCTURE_BYTES = 512 * 1024 * 1024
# A ligand's SMILES is built with RDKit from its atoms (same stack limit as above).
MAX_LIGAND_ATOMS = 1000


# What encoding a JSON record of the wrong type or shape raises (``{"chains": [1]}`` where a mapping
# belongs): readers catch these with ``GrammarError`` and reject the record, naming the reason.
MALFORMED_RECORD = (TypeError, ValueError, KeyError, AttributeError, IndexError)


class _Invalid(Exception):
    """A value that does not fit a type (the message says what was expected)."""


def _describe(value: Any) -> str:
    return "null" if value is None else repr(value)


def _coerce(value: Any, annotation: Any) -> Any:
    """``value`` as ``annotation`` (int-valued floats -> int, ints -> float); ``_Invalid`` if not."""
    if annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option)
            except _Invalid as err:
                errors.append(str(err))
        expected = [e.removeprefix("expected ") for e in errors]
        if type(None) in options:
            expected.append("null")
        raise _Invalid("expected " + " or ".join(dict.fromkeys(expected)))
    if annotation is bool:
        if not isinstance(value, bool):
            raise _Invalid("expected true or false")
        return value
    if annotation is int:
        if isinstance(value, bool):
            raise _Invalid("expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        raise _Invalid("expected an integer")
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid("expected a number")
        if not math.isfinite(value):
            raise _Invalid("expected a finite number")
        return float(value)
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # YAML reads ``name: 2024`` as a number
        raise _Invalid("expected a string")
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise _Invalid("expected a mapping")
        args = typing.get_args(annotation)
        if not args:
            return dict(value)
        key_type, value_type = args
        return {_coerce(k, key_type): _coerce(v, value_type) for k, v in value.items()}
    if origin in (tuple, list) or annotation in (tuple, list):
        if not isinstance(value, list | tuple):
            raise _Invalid("expected a list")
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        items = [_coerce(v, args[0]) for v in value] if args else list(value)
        return tuple(items) if (origin or annotation) is tuple else items
    if isinstance(annotation, type):
        if dataclasses.is_dataclass(annotation) and isinstance(value, dict):
            return value  # a nested section given as a mapping; its own class checks the fields
        if isinstance(value, annotation):
            return value
        raise _Invalid(f"expected a {annotation.__name__}")
    return value


def check_fields(obj: Any, where: str, prefix: str = "") -> None:
    """Check (and normalise in place) every field of dataclass ``obj`` against its annotation.

    Raises ``LogosError("<where>: <prefix><field>=<value>: expected ...")`` for the first bad field.
    """
    hints = typing.get_type_hints(type(obj))
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        try:
            coerced = _coerce(value, hints[field.name])
        except _Invalid as err:
            raise LogosError(f"{where}: {prefix}{field.name}={_describe(value)}: {err}") from None
        if coerced is not value:
            object.__setattr__(obj, field.name, coerced)


def check_value(key: str, value: Any, annotation: Any, where: str) -> Any:
    """``value`` checked (and normalised) against ``annotation``; LogosError naming ``key`` if not."""
    try:
        return _coerce(value, annotation)
    except _Invalid as err:
        raise LogosError(f"{where}: {key}={_describe(value)}: {err}") from None


def check_ranges(where: str, checks: list[tuple[bool, str]]) -> None:
    """``LogosError("<where>: a; b")`` listing every failed ``(ok, message)`` check."""
    problems = [message for ok, message in checks if not ok]
    if problems:
        raise LogosError(f"{where}: " + "; ".join(problems))


def number(
    kind: type = float,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> Callable[[str], Any]:
    """An argparse ``type=`` for an int or a finite float in ``[low, high]`` (``low_open``: ``(low``)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            name = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            span = (
                f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
            )
            raise argparse.ArgumentTypeError(f"{text} is out of range {span}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


_KIND_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    list: "a list",
    dict: "an object",
}


def row_value(row: dict, field: str, kind: type, where: str, *, required: bool = True) -> Any:
    """``row[field]`` checked to be a ``kind`` (``str``, ``int``, ``float``, ``list``, ``dict``).

    A missing field is None when not ``required``; a wrong type (``null`` included) is a LogosError
    ``"<where>: field 'x' must be a string, got null"``.
    """
    if field not in row:
        if required:
            raise LogosError(f"{where}: missing field {field!r}")
        return None
    value = row[field]
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind in (int, float))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        name = _KIND_NAMES.get(kind, kind.__name__)
        raise LogosError(f"{where}: field {field!r} must be {name}, got {_describe(value)[:60]}")
    return value


def decode_line(raw: bytes) -> str | None:
    """One line's text, or None when it is not UTF-8 text (invalid bytes, or NUL: binary data)."""
    if b"\0" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def text_lines(path: str | Path) -> Iterator[tuple[int, str | None]]:
    """``(line number, text or None)`` for every line of ``path``; None marks a line of bad bytes.

    The text keeps its newline (a last line without one was cut short). A missing or unreadable file
    is a LogosError naming it.
    """
    path = Path(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below; open errors become LogosErrors)
    except FileNotFoundError:
        raise LogosError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise LogosError(f"{path}: is a folder, expected a file") from None
    except OSError as err:
        raise LogosError(f"cannot read {path}: {err.strerror}") from None
    with f:
        for number, raw in enumerate(f, start=1):
            yield number, decode_line(raw)


def bad_bytes(path: str | Path, line: int) -> str:
    """The reject reason for a line of ``text_lines`` that is None."""
    return f"{path}:{line}: not UTF-8 text (invalid or binary bytes)"

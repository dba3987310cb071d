"""What a valid part of a grammar sequence is (residue strings, SMILES-like strings, pockets).

The checks here are syntactic and pure Python: a SMILES is accepted when it is non-empty, has no
whitespace and no ``<``/``>`` (so no grammar tag can hide inside); whether RDKit can parse it is a
chemistry question for ``grammar.chem``. Every check raises ``GrammarError`` with the reason, and the
parser reuses the same functions (via ``first_bad_residue`` / ``smiles_problem``) so that encoder
and parser agree on what is valid.
"""

from __future__ import annotations

from collections.abc import Iterable

from logos_jax.errors import LogosError
from logos_jax.grammar.tags import PROTEIN_ALPHABET, STANDARD_AMINO_ACIDS


class GrammarError(LogosError):
    """A record or object that cannot be written in the grammar; the message is the reason."""


_RESIDUE_NAMES = {"B": "ambiguous D/N", "Z": "ambiguous E/Q", "J": "ambiguous I/L"}
_RESIDUE_NAMES.update({"U": "selenocysteine", "O": "pyrrolysine"})


def first_bad_residue(sequence: str, alphabet: str = PROTEIN_ALPHABET) -> tuple[int, str] | None:
    """``(index, reason)`` of the first character of ``sequence`` outside ``alphabet``, else None."""
    for i, ch in enumerate(sequence):
        if ch not in alphabet:
            if ch in _RESIDUE_NAMES:
                what = f"non-standard residue {ch!r} ({_RESIDUE_NAMES[ch]})"
            elif ch == "X":
                what = "unknown residue 'X' (it has no SMILES)"
            elif ch.isalpha():
                what = f"non-standard residue {ch!r}"
            else:
                what = f"character {ch!r} is not a residue"
            return i, f"{what} at residue {i}"
    return None


def check_sequence(sequence: str, what: str = "protein") -> str:
    """Return ``sequence`` if it is a non-empty string of allowed residue letters."""
    if not isinstance(sequence, str) or not sequence:
        raise GrammarError(f"empty {what} sequence")
    bad = first_bad_residue(sequence)
    if bad is not None:
        raise GrammarError(f"{what} sequence: {bad[1]}")
    return sequence


def smiles_problem(smiles: str) -> tuple[int, str] | None:
    """``(offset, reason)`` when ``smiles`` cannot sit inside a block, else None."""
    if not smiles:
        return 0, "empty SMILES"
    for i, ch in enumerate(smiles):
        if ch.isspace():
            return i, f"whitespace in SMILES at offset {i}"
        if ch in "<>":
            return (
                i,
                f"{ch!r} in SMILES at offset {i} (grammar tags and reaction arrows are not SMILES)",
            )
        if not ch.isascii() or not ch.isprintable():
            return i, f"character {ch!r} in SMILES at offset {i}"
    return None


def check_smiles(smiles: str, what: str = "molecule") -> str:
    """Return ``smiles`` if it can be written inside a block (see the module docstring)."""
    if not isinstance(smiles, str):
        raise GrammarError(f"{what} SMILES must be a string, got {type(smiles).__name__}")
    problem = smiles_problem(smiles)
    if problem is not None:
        raise GrammarError(f"{what}: {problem[1]}")
    return smiles


def check_pocket(pocket: Iterable[int], sequence: str, *, expanded: bool) -> tuple[int, ...]:
    """Sorted, de-duplicated pocket indices, each a valid 0-based index into ``sequence``.

    With ``expanded`` each wrapped residue must be one of the 20 standard amino acids (it is
    written as that amino acid's SMILES).
    """
    try:
        indices = sorted({int(i) for i in pocket})
    except (TypeError, ValueError) as err:
        raise GrammarError(f"pocket indices must be integers: {err}") from None
    for i in indices:
        if not 0 <= i < len(sequence):
            raise GrammarError(f"pocket index {i} is outside the sequence (length {len(sequence)})")
        if expanded and sequence[i] not in STANDARD_AMINO_ACIDS:
            raise GrammarError(
                f"pocket residue {i} is {sequence[i]!r}: only the 20 standard amino acids "
                "can be written as SMILES"
            )
    return tuple(indices)

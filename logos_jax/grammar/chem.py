"""Small-molecule chemistry helpers (RDKit, imported lazily) and the amino-acid SMILES table.

``AMINO_ACID_SMILES`` is plain data (no RDKit needed): the residue → SMILES table used by the
SMILES-expanded pocket layouts. Each entry is the free L-amino acid in its **neutral** form
(``N[C@@H](R)C(=O)O``, not the zwitterion ``[NH3+]…C(=O)[O-]``), written as RDKit's canonical
isomeric SMILES so that canonicalising a model's output maps back onto the table. Neutral forms keep
the strings short and charge-free; LOGOS's own choice was not published.

Imports within ``grammar``: only ``tags`` and ``validate`` (both leaves), so ``layouts`` and ``parse``
can import this module without a circle.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

from logos_jax.errors import missing_extra
from logos_jax.grammar import tags
from logos_jax.grammar.validate import smiles_problem
from logos_jax.validate import MAX_SMILES_LENGTH

AMINO_ACID_SMILES: dict[str, str] = {
    "A": "C[C@H](N)C(=O)O",
    "C": "N[C@@H](CS)C(=O)O",
    "D": "N[C@@H](CC(=O)O)C(=O)O",
    "E": "N[C@@H](CCC(=O)O)C(=O)O",
    "F": "N[C@@H](Cc1ccccc1)C(=O)O",
    "G": "NCC(=O)O",
    "H": "N[C@@H](Cc1c[nH]cn1)C(=O)O",
    "I": "CC[C@H](C)[C@H](N)C(=O)O",
    "K": "NCCCC[C@H](N)C(=O)O",
    "L": "CC(C)C[C@H](N)C(=O)O",
    "M": "CSCC[C@H](N)C(=O)O",
    "N": "NC(=O)C[C@H](N)C(=O)O",
    "P": "O=C(O)[C@@H]1CCCN1",
    "Q": "NC(=O)CC[C@H](N)C(=O)O",
    "R": "N=C(N)NCCC[C@H](N)C(=O)O",
    "S": "N[C@@H](CO)C(=O)O",
    "T": "C[C@@H](O)[C@H](N)C(=O)O",
    "V": "CC(C)[C@H](N)C(=O)O",
    "W": "N[C@@H](Cc1c[nH]c2ccccc12)C(=O)O",
    "Y": "N[C@@H](Cc1ccc(O)cc1)C(=O)O",
}
SMILES_TO_AMINO_ACID: dict[str, str] = {smiles: aa for aa, smiles in AMINO_ACID_SMILES.items()}

# ``[CH3:12]`` -> ``[CH3]``: the regex fallback of ``strip_atom_maps`` when RDKit is absent. It keeps
# brackets that RDKit would drop (``[CH3]`` instead of ``C``); canonicalise later if that matters.
_ATOM_MAP = re.compile(r":\d+\]")
_MOLECULE = re.compile(re.escape(tags.MOLECULE_S) + r"([^<]*)" + re.escape(tags.MOLECULE_E))


def rdkit_chem() -> Any:
    """RDKit's ``Chem`` module (its logging silenced), or the missing-extra error."""
    try:
        from rdkit import Chem, RDLogger
    except ImportError as err:
        raise missing_extra("rdkit", "chem") from err
    RDLogger.DisableLog("rdApp.*")
    return Chem


def has_rdkit() -> bool:
    """Whether RDKit can be imported (callers that only *prefer* canonical SMILES check this)."""
    try:
        rdkit_chem()
    except Exception:
        return False
    return True


def too_long(smiles: str) -> bool:
    """Whether ``smiles`` is over ``MAX_SMILES_LENGTH`` characters: such strings never reach RDKit,
    whose SMILES writer overflows the stack (a segfault, not an exception) near 20,000 atoms."""
    return len(smiles) > MAX_SMILES_LENGTH


def _mol(chem: Any, smiles: str, **kwargs: Any) -> Any:
    """``MolFromSmiles``, or None for an empty or over-long string."""
    return chem.MolFromSmiles(smiles, **kwargs) if smiles and not too_long(smiles) else None


def canonical_smiles(smiles: str, keep_stereo: bool = True) -> str | None:
    """RDKit canonical SMILES, or None when RDKit cannot parse ``smiles`` (or it is over-long)."""
    chem = rdkit_chem()
    mol = _mol(chem, smiles)
    if mol is None:
        return None
    return chem.MolToSmiles(mol, isomericSmiles=keep_stereo)


def is_valid_smiles(smiles: str) -> bool:
    """True when RDKit parses and sanitises ``smiles`` into a molecule with at least one atom."""
    chem = rdkit_chem()
    mol = _mol(chem, smiles)
    return mol is not None and mol.GetNumAtoms() > 0


def randomized_smiles(smiles: str, rng: random.Random) -> str:
    """A random (non-canonical) SMILES of the same molecule, reproducible from ``rng``.

    The atoms are renumbered by a permutation drawn from ``rng`` and written without
    canonicalisation, so the same seed gives the same string (RDKit's ``doRandom`` has its own RNG).
    Raises ValueError when RDKit cannot parse ``smiles``.
    """
    chem = rdkit_chem()
    if too_long(smiles):
        raise ValueError(f"SMILES of {len(smiles)} characters is over {MAX_SMILES_LENGTH}")
    mol = chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"RDKit cannot parse SMILES {smiles!r}")
    order = list(range(mol.GetNumAtoms()))
    rng.shuffle(order)
    return chem.MolToSmiles(chem.RenumberAtoms(mol, order), canonical=False)


def strip_atom_maps(rxn_smiles: str) -> tuple[list[str], list[str], list[str]]:
    """Split ``reactants>reagents>products`` into molecule lists with atom-map numbers removed.

    Each side is split on ``.``. With RDKit each molecule is rewritten canonically without its map
    numbers; without RDKit the ``:N]`` suffixes are stripped by regex (the string is otherwise kept).
    ``>>`` (empty reagents) is accepted. Raises ValueError for a string that is not three fields or
    a molecule RDKit cannot parse.
    """
    fields = rxn_smiles.strip().split(">")
    if len(fields) != 3:
        raise ValueError(f"expected 'reactants>reagents>products', got {len(fields)} field(s)")
    try:
        chem = rdkit_chem()
    except Exception:
        chem = None
    sides: list[list[str]] = []
    for field in fields:
        molecules = [m for m in field.split(".") if m]
        if chem is None:
            sides.append([_ATOM_MAP.sub("]", m) for m in molecules])
            continue
        cleaned = []
        for m in molecules:
            if too_long(m):
                raise ValueError(f"SMILES of {len(m)} characters is over {MAX_SMILES_LENGTH}")
            mol = chem.MolFromSmiles(m)
            if mol is None:
                raise ValueError(f"RDKit cannot parse {m!r}")
            for atom in mol.GetAtoms():
                atom.SetAtomMapNum(0)
            cleaned.append(chem.MolToSmiles(mol))
        sides.append(cleaned)
    return sides[0], sides[1], sides[2]


def molecule_blocks(text: str) -> list[str]:
    """The SMILES of every complete ``<MoleculeS>…<MoleculeE>`` in ``text`` (also inside materials)."""
    return [m.group(1) for m in _MOLECULE.finditer(text) if smiles_problem(m.group(1)) is None]


SMILES_CHECKS = ("sanitize", "parse", "off")


def smiles_checker(mode: str = "sanitize") -> Callable[[str], str | None]:
    """``text -> reason | None``: checks every molecule block of a grammar sequence with RDKit.

    ``sanitize`` (full RDKit sanitisation), ``parse`` (syntax only: for MOF nodes, which often do not
    sanitise) or ``off``. Results are cached per SMILES.
    """
    if mode == "off":
        return lambda text: None
    chem = rdkit_chem()
    seen: dict[str, bool] = {}

    def valid(smiles: str) -> bool:
        if smiles not in seen:
            mol = _mol(chem, smiles, sanitize=mode == "sanitize")
            seen[smiles] = mol is not None and mol.GetNumAtoms() > 0
        return seen[smiles]

    def problem(text: str) -> str | None:
        bad = [s for s in molecule_blocks(text) if not valid(s)]
        if bad and too_long(bad[0]):
            return (
                f"invalid SMILES: {len(bad[0])} characters, over the limit of {MAX_SMILES_LENGTH}"
            )
        return f"invalid SMILES (RDKit cannot {mode} it): {bad[0]}" if bad else None

    return problem

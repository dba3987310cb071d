"""Holo structures for evaluation: protein residues in sequence order, and the ligands that define sites.

Read with biotite (the ``chem`` extra): model 1, first altloc, hydrogens dropped, element columns that
are not letters repaired from the atom name (1hpv's ligand has ``17``). A chain's residues are its
amino-acid residues in file order, so index *i* of ``Structure.chains[c]`` is index *i* of
``grammar.structure.chain_sequences(path)[c]``, the sequence the prompts were built from.

Which HETATM groups are ligands follows P2Rank's evaluation defaults (``Params.groovy``):

* never a ligand: amino acids and nucleotides (polymer), and the names in ``IGNORED_HET_GROUPS``
  (water, and the usual crystallisation additives / glycans: P2Rank's ``ignore_het_groups``);
* groups closer than ``LIGAND_CLUSTERING_DISTANCE`` (1.7 Å, about a covalent bond) are one ligand;
* a ligand needs at least ``MIN_LIGAND_ATOMS`` (5) heavy atoms: ions and other single atoms drop out;
* a ligand whose centre is farther than ``LIGAND_CENTRE_PROTEIN_DISTANCE`` (5.5 Å) from every protein
  atom is a floating one and is dropped.

When a row names its ligand (``ligand`` field: a residue name), only groups of that name count, with
the same merging and size rules.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from logos_jax.errors import LogosError, missing_extra

IGNORED_HET_GROUPS = frozenset(
    {"HOH", "DOD", "WAT", "NAG", "MAN", "UNK", "GLC", "ABA", "MPD", "GOL", "SO4", "PO4"}
)
LIGAND_CLUSTERING_DISTANCE = 1.7
MIN_LIGAND_ATOMS = 5
LIGAND_CENTRE_PROTEIN_DISTANCE = 5.5
STRUCTURE_SUFFIXES = ("", ".pdb", ".cif", ".mmcif", ".ent", ".bcif")


@dataclasses.dataclass(frozen=True)
class Residue:
    """One amino-acid residue: its chain, number, name, Cα and heavy-atom coordinates ``[atoms, 3]``."""

    chain: str
    res_id: int
    ins_code: str
    name: str
    ca: np.ndarray
    atoms: np.ndarray


@dataclasses.dataclass(frozen=True)
class Ligand:
    """One ligand site: its residue names (``+``-joined when merged) and heavy-atom coordinates."""

    name: str
    coords: np.ndarray

    @property
    def centre(self) -> np.ndarray:
        return self.coords.mean(axis=0)


@dataclasses.dataclass(frozen=True)
class Structure:
    """A holo structure: protein residues per chain (file order) and all heavy atoms."""

    path: Path
    chains: dict[str, list[Residue]]
    atoms: Any  # biotite AtomArray, heavy atoms only

    def residues_for(self, sequence: str, sequences: dict[str, str]) -> list[Residue]:
        """The residues a prompt's protein ``sequence`` stands for: the first chain whose sequence
        equals it, else all chains in file order when their concatenation equals it."""
        for chain, seq in sequences.items():
            if len(self.chains.get(chain, ())) != len(seq):
                raise LogosError(
                    f"{self.path.name}: chain {chain} has {len(self.chains.get(chain, ()))} "
                    f"residues but a {len(seq)}-letter sequence"
                )
        for chain, seq in sequences.items():
            if seq == sequence:
                return self.chains[chain]
        if "".join(sequences.values()) == sequence:
            return [r for chain in sequences for r in self.chains[chain]]
        shown = ", ".join(f"{c} ({len(s)} aa)" for c, s in sequences.items())
        raise LogosError(
            f"{self.path.name}: the prompt's protein ({len(sequence)} aa) matches no chain "
            f"and not all chains together; chains: {shown}"
        )


def _biotite() -> tuple[Any, Any]:
    try:
        import biotite.structure as struc
        import biotite.structure.io as strucio
    except ImportError as err:
        raise missing_extra("biotite", "chem") from err
    return struc, strucio


def find_structure(directory: str | Path, row_id: str) -> Path:
    """The structure file of a row id in ``directory`` (the id as it is, or with a usual suffix)."""
    directory = Path(directory)
    for suffix in STRUCTURE_SUFFIXES:
        path = directory / f"{row_id}{suffix}"
        if path.is_file():
            return path
    raise LogosError(f"no structure file for id {row_id!r} in {directory}")


def _heavy_atoms(path: Path) -> Any:
    struc, strucio = _biotite()
    try:
        atoms = strucio.load_structure(str(path), model=1, altloc="first")
    except Exception as err:
        raise LogosError(f"cannot read structure {path}: {err}") from None
    for i in np.flatnonzero([not str(e).isalpha() for e in atoms.element]):
        letters = [ch for ch in str(atoms.atom_name[i]) if ch.isalpha()]
        atoms.element[i] = letters[0].upper() if letters else "X"
    return atoms[(atoms.element != "H") & (atoms.element != "D")]


def load_structure(path: str | Path) -> Structure:
    """Read ``path`` (PDB / mmCIF / BinaryCIF) into a ``Structure``."""
    struc, _ = _biotite()
    path = Path(path)
    if not path.is_file():
        raise LogosError(f"structure file not found: {path}")
    atoms = _heavy_atoms(path)
    protein = atoms[struc.filter_amino_acids(atoms)]
    chains: dict[str, list[Residue]] = {}
    starts = struc.get_residue_starts(protein, add_exclusive_stop=True)
    for start, stop in zip(starts[:-1], starts[1:]):
        res = protein[start:stop]
        ca = res.coord[res.atom_name == "CA"]
        chains.setdefault(str(res.chain_id[0]), []).append(
            Residue(
                str(res.chain_id[0]),
                int(res.res_id[0]),
                str(res.ins_code[0]),
                str(res.res_name[0]),
                ca[0] if len(ca) else res.coord.mean(axis=0),
                res.coord,
            )
        )
    return Structure(path, chains, atoms)


def single_linkage(coords: np.ndarray, cutoff: float) -> list[list[int]]:
    """Single-linkage clusters of points (linked when within ``cutoff`` Å): lists of indices into
    ``coords``, each sorted, in order of their first point."""
    coords = np.asarray(coords, dtype=float).reshape(-1, 3)
    return _components(np.linalg.norm(coords[:, None] - coords[None, :], axis=-1) <= cutoff)


def _atom_groups(structure: Structure, ligand_name: str | None) -> list[tuple[str, np.ndarray]]:
    """Candidate HETATM groups (residue name, coords [atoms, 3]) before merging and filtering."""
    struc, _ = _biotite()
    atoms = structure.atoms
    polymer = struc.filter_amino_acids(atoms) | struc.filter_nucleotides(atoms)
    het = atoms[atoms.hetero & ~polymer]
    groups = []
    starts = struc.get_residue_starts(het, add_exclusive_stop=True)
    for start, stop in zip(starts[:-1], starts[1:]):
        name = str(het.res_name[start])
        if ligand_name is not None and name != ligand_name:
            continue
        if ligand_name is None and name in IGNORED_HET_GROUPS:
            continue
        groups.append((name, het.coord[start:stop]))
    return groups


def find_ligands(structure: Structure, ligand_name: str | None = None) -> list[Ligand]:
    """The ligand sites of a structure (see the module docstring), in file order."""
    groups = _atom_groups(structure, ligand_name)
    if not groups:
        return []
    # Merge groups that touch (any atom pair within the clustering distance).
    centres = np.array([g[1].mean(axis=0) for g in groups])
    n = len(groups)
    touching = np.zeros((n, n), dtype=bool)
    for i in range(n):
        for j in range(i, n):
            if np.linalg.norm(centres[i] - centres[j]) > 40.0:
                continue
            gap = np.linalg.norm(groups[i][1][:, None] - groups[j][1][None, :], axis=-1).min()
            touching[i, j] = touching[j, i] = gap <= LIGAND_CLUSTERING_DISTANCE
    protein = np.concatenate(
        [r.atoms for residues in structure.chains.values() for r in residues] or [np.zeros((0, 3))]
    )
    ligands = []
    for members in _components(touching):
        coords = np.concatenate([groups[i][1] for i in members])
        if len(coords) < MIN_LIGAND_ATOMS:
            continue
        centre = coords.mean(axis=0)
        if len(protein) and np.linalg.norm(protein - centre, axis=-1).min() > (
            LIGAND_CENTRE_PROTEIN_DISTANCE
        ):
            continue
        name = "+".join(dict.fromkeys(groups[i][0] for i in members))
        ligands.append(Ligand(name, coords))
    return ligands


def _components(adjacent: np.ndarray) -> list[list[int]]:
    """Connected components of a boolean adjacency matrix, in order of their first member."""
    seen: set[int] = set()
    out = []
    for seed in range(len(adjacent)):
        if seed in seen:
            continue
        members, stack = [], [seed]
        seen.add(seed)
        while stack:
            i = stack.pop()
            members.append(i)
            for j in np.flatnonzero(adjacent[i]):
                if int(j) not in seen:
                    seen.add(int(j))
                    stack.append(int(j))
        out.append(sorted(members))
    return out


def contact_residues(residues: list[Residue], ligands: list[Ligand], cutoff: float) -> set[int]:
    """Indices into ``residues`` of those with a heavy atom within ``cutoff`` Å of a ligand atom."""
    if not ligands:
        return set()
    ligand = np.concatenate([lig.coords for lig in ligands])
    return {
        i
        for i, r in enumerate(residues)
        if np.linalg.norm(r.atoms[:, None] - ligand[None, :], axis=-1).min() <= cutoff
    }

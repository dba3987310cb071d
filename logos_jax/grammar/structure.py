"""Protein–ligand structures → contact residues, chain sequences, ligand SMILES, grammar objects.

biotite is imported lazily (``missing_extra("biotite", "chem")`` when absent). Conventions, matching
``shared/data/complexes/pockets.jsonl``: model 1, first altloc only, hydrogens ignored, a chain's
sequence is its amino-acid residues in file order (modified residues mapped to their parent amino acid
via the Chemical Component Dictionary, e.g. CSO→C, MSE→M; unknown ones → ``X``), and ``seq_index`` is
the 0-based position in that sequence. The ligand is the *first* residue with the given name.

The contact rule is a parameter (``ContactRule``), since LOGOS's was not published:

* ``distance``: a residue is a contact when any of its heavy atoms is within ``cutoff`` Å of a ligand
  heavy atom (default 4.5 Å);
* ``vdw``: when some atom pair is closer than the sum of their van der Waals radii plus ``cutoff``
  (default tolerance 0.5 Å, the COACH420 binding-residue convention).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from logos_jax.errors import LogosError, missing_extra
from logos_jax.grammar.layouts import Complex, PocketProtein
from logos_jax.grammar.validate import GrammarError
from logos_jax.validate import MAX_LIGAND_ATOMS, MAX_STRUCTURE_BYTES

VDW_TOLERANCE = 0.5


@dataclasses.dataclass(frozen=True)
class ContactRule:
    """Which residues touch the ligand: ``rule`` "distance" (cutoff in Å) or "vdw" (cutoff = tolerance
    in Å added to the vdW radii sum; None → 0.5)."""

    rule: str = "distance"
    cutoff: float | None = 4.5

    def __post_init__(self) -> None:
        if self.rule not in ("distance", "vdw"):
            raise LogosError(f"unknown contact rule {self.rule!r}; use 'distance' or 'vdw'")
        if self.rule == "distance" and self.cutoff is None:
            raise LogosError("the distance contact rule needs a cutoff in Å")


DEFAULT_CONTACT_RULE = ContactRule()


@dataclasses.dataclass(frozen=True)
class Contact:
    """One protein residue in contact with the ligand."""

    chain: str
    res_num: int
    icode: str
    resname: str
    aa: str
    seq_index: int
    min_dist: float


def _biotite() -> tuple[Any, Any, Any]:
    try:
        import biotite.structure as struc
        import biotite.structure.info as info
        import biotite.structure.io as strucio
    except ImportError as err:
        raise missing_extra("biotite", "chem") from err
    return struc, info, strucio


def _read(path: str | Path) -> Any:
    """Model 1, first altloc, all atoms (elements repaired): ``AtomArray`` of ``[atoms]``."""
    _, _, strucio = _biotite()
    path = Path(path)
    if not path.is_file():
        raise LogosError(f"structure file not found: {path}")
    if path.stat().st_size > MAX_STRUCTURE_BYTES:
        raise LogosError(
            f"structure {path} is {path.stat().st_size} bytes, over the limit of "
            f"{MAX_STRUCTURE_BYTES} (logos_jax.validate.MAX_STRUCTURE_BYTES)"
        )
    try:
        atoms = strucio.load_structure(str(path), model=1, altloc="first")
    except Exception as err:
        raise LogosError(f"cannot read structure {path}: {err}") from None
    _repair_elements(atoms)
    return atoms


def _load(path: str | Path) -> Any:
    """``_read`` without hydrogens."""
    atoms = _read(path)
    return atoms[(atoms.element != "H") & (atoms.element != "D")]


def _repair_elements(atoms: Any) -> None:
    """Some PDB files carry junk in the element column (1hpv's ligand has ``17``): take the element of
    such atoms from the first letter of the atom name (``C12`` → C, ``HN1`` → H)."""
    for i in [i for i, e in enumerate(atoms.element) if not str(e).isalpha()]:
        letters = [ch for ch in str(atoms.atom_name[i]) if ch.isalpha()]
        atoms.element[i] = letters[0].upper() if letters else "X"


def _one_letter(resname: str) -> str:
    _, info, _ = _biotite()
    code = info.one_letter_code(resname)
    return code if code and len(code) == 1 and code.isalpha() else "X"


def _protein_residues(atoms: Any) -> dict[str, list[tuple[int, str, str]]]:
    """chain → [(res_num, icode, resname)] of its amino-acid residues, in file order."""
    struc, _, _ = _biotite()
    protein = atoms[struc.filter_amino_acids(atoms)]
    chains: dict[str, list[tuple[int, str, str]]] = {}
    for start in struc.get_residue_starts(protein):
        chain = str(protein.chain_id[start])
        key = (
            int(protein.res_id[start]),
            str(protein.ins_code[start]),
            str(protein.res_name[start]),
        )
        chains.setdefault(chain, []).append(key)
    return chains


def chain_sequences(path: str | Path) -> dict[str, str]:
    """One-letter sequence of every protein chain of a structure file (see the module docstring)."""
    residues = _protein_residues(_load(path))
    return {chain: "".join(_one_letter(r[2]) for r in res) for chain, res in residues.items()}


def _ligand_atoms(atoms: Any, resname: str) -> Any:
    struc, _, _ = _biotite()
    mask = atoms.res_name == resname
    if not mask.any():
        present = sorted({str(r) for r in atoms.res_name[atoms.hetero]} - {"HOH"})
        raise LogosError(
            f"no residue named {resname!r} in the structure; hetero residues present: "
            f"{', '.join(present) or 'none'}"
        )
    ligand = atoms[mask]
    first = struc.get_residue_starts(ligand)
    end = first[1] if len(first) > 1 else ligand.array_length()
    return ligand[:end]


def ligand_contacts(
    path: str | Path,
    ligand_resname: str,
    *,
    cutoff: float | None = 4.5,
    rule: str = "distance",
    chain: str | None = None,
) -> list[Contact]:
    """Protein residues in contact with the ligand, ordered by chain then sequence position.

    ``chain`` restricts the result to one protein chain. Heavy atoms only (see ``ContactRule``).
    """
    import numpy as np

    struc, info, _ = _biotite()
    contact_rule = ContactRule(rule, cutoff)
    atoms = _load(path)
    ligand = _ligand_atoms(atoms, ligand_resname)
    protein = atoms[struc.filter_amino_acids(atoms)]
    if chain is not None:
        protein = protein[protein.chain_id == chain]
        if protein.array_length() == 0:
            raise LogosError(f"no protein chain {chain!r} in {path}")
    # [protein_atoms, ligand_atoms]
    dist = np.linalg.norm(protein.coord[:, None, :] - ligand.coord[None, :, :], axis=-1)
    if contact_rule.rule == "vdw":
        tolerance = VDW_TOLERANCE if contact_rule.cutoff is None else contact_rule.cutoff
        radius = np.vectorize(lambda e: info.vdw_radius_single(str(e).capitalize()) or 1.7)
        limit = radius(protein.element)[:, None] + radius(ligand.element)[None, :] + tolerance
    else:
        limit = np.full(dist.shape, contact_rule.cutoff)
    touching = (dist <= limit).any(axis=1)  # [protein_atoms]

    index = {
        (c, r[0], r[1]): i for c, res in _protein_residues(atoms).items() for i, r in enumerate(res)
    }
    starts = struc.get_residue_starts(protein, add_exclusive_stop=True)
    contacts = []
    for start, stop in zip(starts[:-1], starts[1:]):
        if not touching[start:stop].any():
            continue
        key = (
            str(protein.chain_id[start]),
            int(protein.res_id[start]),
            str(protein.ins_code[start]),
        )
        resname = str(protein.res_name[start])
        min_dist = float(dist[start:stop].min())
        contacts.append(Contact(*key, resname, _one_letter(resname), index[key], min_dist))
    return sorted(contacts, key=lambda k: (k.chain, k.seq_index))


def _same_component(ligand: Any, component: Any) -> bool:
    """Whether the file's ligand heavy atoms are (a subset of) the CCD component's, by name and element:
    a residue name can be reused for another molecule (``LIG`` is a real CCD entry)."""
    known = {(str(n), str(e).upper()) for n, e in zip(component.atom_name, component.element)}
    heavy = [(str(n), str(e).upper()) for n, e in zip(ligand.atom_name, ligand.element) if e != "H"]
    return bool(heavy) and all(atom in known for atom in heavy)


def ligand_smiles(path: str | Path, resname: str) -> str:
    """Isomeric SMILES of a ligand: from biotite's bundled Chemical Component Dictionary (bond orders,
    charges; stereo from the CCD ideal coordinates) when the file's atoms match the component, else by
    bond perception on the file's atoms (needs the hydrogens in the file to assign bond orders; the
    net charge is the first of 0, +1, -1, +2, -2 that gives a valid molecule)."""
    from logos_jax.grammar.chem import rdkit_chem

    chem = rdkit_chem()
    _, info, _ = _biotite()
    from biotite.interface import rdkit as biotite_rdkit

    ligand = _ligand_atoms(_read(path), resname)
    if ligand.array_length() > MAX_LIGAND_ATOMS:
        raise GrammarError(
            f"ligand {resname} has {ligand.array_length()} atoms, over the limit of "
            f"{MAX_LIGAND_ATOMS}; pass its SMILES explicitly"
        )
    try:
        component = info.residue(resname)
    except KeyError:
        component = None
    if component is not None and _same_component(ligand, component):
        mol = biotite_rdkit.to_mol(component)
        chem.AssignStereochemistryFrom3D(mol)
        return chem.MolToSmiles(chem.RemoveHs(mol))

    from rdkit.Chem import rdDetermineBonds

    if not (ligand.element == "H").any():
        raise GrammarError(
            f"{resname} is not in the Chemical Component Dictionary and the file has no hydrogens "
            "to perceive its bond orders from; pass the SMILES explicitly"
        )
    errors = []
    for charge in (0, 1, -1, 2, -2):  # the net charge is not in a PDB file: first one that works
        mol = chem.RWMol()
        conformer = chem.Conformer(ligand.array_length())
        for i, (element, xyz) in enumerate(zip(ligand.element, ligand.coord)):
            mol.AddAtom(chem.Atom(str(element).capitalize()))
            conformer.SetAtomPosition(i, [float(v) for v in xyz])
        mol.AddConformer(conformer)
        try:
            rdDetermineBonds.DetermineBonds(mol, charge=charge)
            chem.SanitizeMol(mol)
        except Exception as err:
            errors.append(f"charge {charge}: {err}")
            continue
        chem.AssignStereochemistryFrom3D(mol)
        return chem.MolToSmiles(chem.RemoveHs(mol))
    raise GrammarError(f"bond perception failed for {resname}: {'; '.join(errors)}")


def _pick_chain(contacts: list[Contact], sequences: dict[str, str], chain: str | None) -> str:
    if not sequences:
        raise LogosError("the structure has no protein chain")
    if chain is not None:
        if chain not in sequences:
            raise LogosError(f"no protein chain {chain!r}; chains: {', '.join(sequences)}")
        return chain
    counts = {c: sum(k.chain == c for k in contacts) for c in sequences}
    return max(counts, key=lambda c: counts[c])


def complex_from_structure(
    path: str | Path,
    ligand_resname: str,
    *,
    level: int = 2,
    chain: str | None = None,
    rule: ContactRule = DEFAULT_CONTACT_RULE,
    smiles: str | None = None,
) -> Complex:
    """A ``Complex`` of one protein chain (``chain``, else the one with the most contacts) and the
    ligand (``smiles``, else ``ligand_smiles``), its contact residues wrapped for levels 2 and 3."""
    sequences = chain_sequences(path)
    contacts = ligand_contacts(path, ligand_resname, cutoff=rule.cutoff, rule=rule.rule)
    chain = _pick_chain(contacts, sequences, chain)
    pocket = tuple(k.seq_index for k in contacts if k.chain == chain) if level > 1 else ()
    ligand = smiles if smiles is not None else ligand_smiles(path, ligand_resname)
    return Complex(sequences[chain], ligand, pocket, level=level)


def pocket_from_structure(
    path: str | Path,
    ligand_resname: str,
    *,
    expanded: bool = False,
    chain: str | None = None,
    rule: ContactRule = DEFAULT_CONTACT_RULE,
) -> PocketProtein:
    """A ``PocketProtein`` of one chain with the ligand's contact residues wrapped."""
    sequences = chain_sequences(path)
    contacts = ligand_contacts(path, ligand_resname, cutoff=rule.cutoff, rule=rule.rule)
    chain = _pick_chain(contacts, sequences, chain)
    pocket = tuple(k.seq_index for k in contacts if k.chain == chain)
    return PocketProtein(sequences[chain], pocket, expanded=expanded)

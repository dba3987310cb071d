"""AutoDock Vina for pocket ligand design: prepare a receptor and ligands, dock one molecule.

Needs the ``dock`` extra (``vina``, ``meeko``, ``gemmi``, ``scipy``) plus RDKit and biotite (the
``chem`` extra); without them ``require_docking`` names the extra to install. The protocol (every
number lands in the summary):

* **receptor**: the structure's standard amino-acid residues only (waters, ions, ligands, cofactors
  and modified residues such as CSO / MSE removed), model 1, first altloc; hydrogens are dropped and
  re-added by meeko's residue templates (``Polymer.from_pdb_string``; a residue no template matches
  is deleted), Gasteiger charges, written as rigid PDBQT. Tautomers and protonation are meeko's template defaults (neutral His as HID).
* **generated ligand**: RDKit SMILES → explicit hydrogens → one ETKDGv3 conformer (the docking seed)
  → MMFF94 minimisation → meeko ``MoleculePreparation`` → PDBQT (all rotatable bonds free).
* **reference ligand**: the crystal ligand's heavy atoms with bond orders from a template SMILES,
  hydrogens added on the crystal coordinates, then the same meeko preparation; it is re-docked with
  the generated ligands' settings (its crystal pose is only used for the box and the RMSD check).
* **box**: the reference ligand's bounding box plus ``margin`` Å on every side (default 4), or the
  pocket residues' heavy atoms plus the margin.
* **Vina**: scoring function ``vina`` (Vina 1.2), grid spacing 0.375 Å, fixed ``seed`` and
  ``exhaustiveness``, one CPU per molecule; the score is the best pose's energy in kcal/mol.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import numpy as np

from logos_jax.errors import LogosError, missing_extra

# Residue names meeko's default templates know. Anything else (modified residues such as CSO or MSE)
# is left out of the receptor: meeko would try to download its template from the PDB.
STANDARD_RESIDUES = frozenset(
    "ALA ARG ASN ASP CYS GLN GLU GLY HIS ILE LEU LYS MET PHE PRO SER THR TRP TYR VAL "  # noqa: SIM905
    "HID HIE HIP CYX ASH GLH LYN".split()
)
DOCK_PACKAGES = ("vina", "meeko", "gemmi", "scipy")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Vina settings shared by every molecule of a run (part of the resume key)."""

    exhaustiveness: int = 8
    seed: int = 1
    box: str = "ligand"  # "ligand" (reference ligand) or "pocket" (the prompt's pocket residues)
    margin: float = 4.0
    n_poses: int = 1

    def __post_init__(self) -> None:
        if self.box not in ("ligand", "pocket"):
            raise LogosError(f"unknown docking box {self.box!r}; use 'ligand' or 'pocket'")
        if self.exhaustiveness < 1:
            raise LogosError("--exhaustiveness must be at least 1")
        if self.margin < 0:
            raise LogosError("--box-margin must be >= 0")


@dataclasses.dataclass(frozen=True)
class Box:
    """A Vina search box (Å)."""

    center: tuple[float, float, float]
    size: tuple[float, float, float]


def require_docking() -> None:
    """Raise the missing-extra error unless Vina, meeko, gemmi and RDKit import."""
    import importlib.util

    for package in DOCK_PACKAGES:
        if importlib.util.find_spec(package) is None:
            raise missing_extra(package, "dock")
    if importlib.util.find_spec("rdkit") is None:
        raise missing_extra("rdkit", "chem")


def box_around(coords: np.ndarray, margin: float) -> Box:
    """The axis-aligned box around ``coords`` [n, 3] plus ``margin`` Å on every side."""
    coords = np.asarray(coords, dtype=float).reshape(-1, 3)
    low, high = coords.min(axis=0), coords.max(axis=0)
    center = (low + high) / 2
    size = high - low + 2 * margin
    return Box(tuple(float(v) for v in center), tuple(float(v) for v in size))


def receptor_pdbqt(atoms: Any) -> str:
    """Rigid receptor PDBQT of a structure's standard amino-acid residues (module docstring)."""
    import biotite.structure.io.pdb as pdbio
    from meeko import MoleculePreparation, PDBQTWriterLegacy, Polymer, ResidueChemTemplates

    protein = atoms[np.isin(atoms.res_name, sorted(STANDARD_RESIDUES))]
    protein = protein[(protein.element != "H") & (protein.element != "D")]
    protein.hetero[:] = False
    pdb = pdbio.PDBFile()
    pdb.set_structure(protein)
    text = io.StringIO()
    pdb.write(text)
    try:
        polymer = Polymer.from_pdb_string(
            text.getvalue(),
            ResidueChemTemplates.create_from_defaults(),
            MoleculePreparation(),
            allow_bad_res=True,
        )
        rigid, _ = PDBQTWriterLegacy.write_from_polymer(polymer)
    except Exception as err:  # meeko raises many types; the user needs the reason only
        raise LogosError(f"receptor preparation failed: {err}") from None
    return rigid


def _pdbqt_of(mol: Any) -> str:
    from meeko import MoleculePreparation, PDBQTWriterLegacy

    setups = MoleculePreparation().prepare(mol)
    text, ok, error = PDBQTWriterLegacy.write_string(setups[0])
    if not ok:
        raise LogosError(f"ligand preparation failed: {error}")
    return text


def ligand_pdbqt(smiles: str, seed: int) -> str:
    """PDBQT of a SMILES: explicit H, one ETKDGv3 conformer (``seed``), MMFF94, meeko."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise LogosError(f"RDKit cannot read {smiles!r}")
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise LogosError("no 3D conformer (ETKDG failed)")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=500)
    return _pdbqt_of(mol)


def crystal_ligand(atoms: Any, template_smiles: str) -> Any:
    """RDKit molecule of crystal ligand heavy ``atoms`` (biotite) with ``template_smiles``'s bond
    orders, hydrogens not added."""
    import biotite.structure.io.pdb as pdbio
    from rdkit import Chem
    from rdkit.Chem import AllChem

    heavy = atoms[(atoms.element != "H") & (atoms.element != "D")]
    pdb = pdbio.PDBFile()
    pdb.set_structure(heavy)
    text = io.StringIO()
    pdb.write(text)
    raw = Chem.MolFromPDBBlock(text.getvalue(), removeHs=True, sanitize=False)
    template = Chem.MolFromSmiles(template_smiles)
    if raw is None or template is None:
        raise LogosError("cannot build the reference ligand (unreadable atoms or template SMILES)")
    if template.GetNumHeavyAtoms() != raw.GetNumAtoms():
        raise LogosError(
            f"the template SMILES has {template.GetNumHeavyAtoms()} heavy atoms, the crystal "
            f"ligand {raw.GetNumAtoms()}"
        )
    try:
        mol = AllChem.AssignBondOrdersFromTemplate(template, raw)
    except ValueError as err:
        raise LogosError(
            f"the reference ligand does not match its template SMILES: {err}"
        ) from None
    Chem.AssignStereochemistryFrom3D(mol)
    return mol


def crystal_pdbqt(mol: Any) -> str:
    """PDBQT of a crystal ligand (``crystal_ligand``) with hydrogens placed on its coordinates."""
    from rdkit import Chem

    return _pdbqt_of(Chem.AddHs(mol, addCoords=True))


_VINA: dict[tuple, Any] = {}  # one Vina object with computed maps per worker process


def _vina(receptor: str, box: Box, protocol: Protocol, cpu: int) -> Any:
    from vina import Vina

    key = (receptor, box, protocol.seed, cpu)
    if key not in _VINA:
        _VINA.clear()
        v = Vina(sf_name="vina", seed=protocol.seed, cpu=cpu, verbosity=0)
        v.set_receptor(receptor)
        v.compute_vina_maps(center=list(box.center), box_size=list(box.size))
        _VINA[key] = v
    return _VINA[key]


def dock(
    receptor: str, ligand: str, box: Box, protocol: Protocol, cpu: int = 1
) -> tuple[float, str]:
    """Dock a ligand PDBQT into a receptor PDBQT file: (best score in kcal/mol, best pose PDBQT).

    ``cpu`` threads share the ``exhaustiveness`` Monte Carlo runs; each run has its own seed derived
    from ``protocol.seed``, so the result does not depend on ``cpu``."""
    v = _vina(receptor, box, protocol, cpu)
    v.set_ligand_from_string(ligand)
    v.dock(exhaustiveness=protocol.exhaustiveness, n_poses=protocol.n_poses)
    return float(v.energies(n_poses=1)[0][0]), v.poses(n_poses=1)


def dock_smiles(job: dict[str, Any]) -> dict[str, Any]:
    """Worker entry point: prepare and dock one job, never raising (errors become ``error``).

    ``job``: ``key``, ``receptor`` (PDBQT path), ``box`` (Box), ``protocol`` (Protocol), either
    ``smiles`` or a prepared ``pdbqt``, and optionally ``cpu`` (Vina threads, 1). Returns the key
    with ``score`` and ``pose``, or ``error``."""
    protocol: Protocol = job["protocol"]
    try:
        ligand = job.get("pdbqt") or ligand_pdbqt(job["smiles"], protocol.seed)
        score, pose = dock(job["receptor"], ligand, job["box"], protocol, job.get("cpu", 1))
        return {**job["key"], "score": score, "pose": pose}
    except Exception as err:  # one bad molecule must not stop a long run
        return {**job["key"], "error": f"{type(err).__name__}: {err}"}


def pose_rmsd(pose_pdbqt: str, reference: Any) -> float:
    """Symmetry-aware heavy-atom RMSD (Å, no alignment) of a docked pose against ``reference``."""
    from meeko import PDBQTMolecule, RDKitMolCreate
    from rdkit import Chem
    from rdkit.Chem import rdMolAlign

    mols = RDKitMolCreate.from_pdbqt_mol(PDBQTMolecule(pose_pdbqt, skip_typing=True))
    if not mols or mols[0] is None:
        raise LogosError("cannot rebuild the docked pose")
    return float(rdMolAlign.CalcRMS(Chem.RemoveHs(mols[0]), Chem.RemoveHs(reference)))

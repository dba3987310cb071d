"""Pocket ligand design scored by re-docking: −Vina, HF%, QED, SA next to validity / uniqueness / novelty.

For each input (a row id naming a holo structure in the structures folder) the reference ligand is the
row's ``ligand`` residue name, else the first ligand site of ``structures.find_ligands``; its bond
orders come from the row's ``groundtruth`` SMILES, else the Chemical Component Dictionary. Every
distinct valid generated SMILES of the input is docked once, and so is the reference when the
input has a valid molecule (protocol: ``eval.docking``). Figures:

* ``vina_mean`` / ``vina_median``: −score (kcal/mol, higher is better) over docked (input, molecule)
  pairs;
* ``hf``: per input, the fraction of its docked molecules scoring better (lower) than its re-docked
  reference, averaged over inputs with a reference score (TargetDiff's "High Affinity");
* ``qed`` (RDKit) and ``sa`` ((10 − SA score) / 9, the normalised form TargetDiff reports; the raw
  Ertl–Schuffenhauer score is ``sa_score``) over the same molecules;
* ``reference_rmsd_mean``: the re-docked reference's heavy-atom RMSD to its crystal pose (a check of
  the protocol on each target).

Docking runs in a process pool with a progress bar. Each result is appended as one line to
``<work_dir>/docked.jsonl`` (and receptors are cached as ``<work_dir>/receptors/*.pdbqt``), so a
killed evaluation re-run with the same folder and protocol docks only what is missing. Delete the
folder when the structures change (results are keyed by row id, molecule and protocol).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import statistics
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from logos_jax.errors import LogosError
from logos_jax.eval import docking
from logos_jax.eval.structures import Structure, find_ligands, find_structure, load_structure
from logos_jax.files import atomic_write_text

REFERENCE = "<reference>"
_MOLECULE_BLOCK = re.compile(r"<MoleculeS>(.*?)<MoleculeE>")


class DockStore:
    """Append-only JSONL of finished docking jobs; a torn last line (a killed run) is cut off and a
    line that is not a job's JSON is ignored (its job is docked again)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: dict[str, dict[str, Any]] = {}
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            with self.path.open("r+b") as f:
                f.truncate(end)
        for line in data[:end].decode("utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("job"), str):
                self.rows[row["job"]] = row

    def add(self, row: dict[str, Any]) -> None:
        """Append one finished job (a single write of a whole line, then fsync)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(row) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.rows[row["job"]] = row


def job_id(target: str, smiles: str, protocol: docking.Protocol) -> str:
    """Resume key of one docking job: target, molecule and every protocol setting."""
    text = json.dumps([target, smiles, dataclasses.asdict(protocol)], sort_keys=True)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def reference_smiles(row: dict[str, Any]) -> str | None:
    """The ground-truth ligand SMILES of a row (a ``<MoleculeS>`` block or a bare SMILES), if any."""
    truth = row.get("groundtruth")
    if not isinstance(truth, str) or not truth.strip():
        return None
    block = _MOLECULE_BLOCK.search(truth)
    return block.group(1) if block else truth.strip()


def reference_atoms(structure: Structure, name: str | None) -> Any:
    """Heavy atoms of the reference ligand: the first residue called ``name`` (else the first site's
    first residue name)."""
    import biotite.structure as struc

    if name is None:
        sites = find_ligands(structure)
        if not sites:
            raise LogosError("no ligand site in the structure to take as the reference")
        name = sites[0].name.split("+")[0]
    atoms = structure.atoms[structure.atoms.res_name == name]
    if atoms.array_length() == 0:
        raise LogosError(f"no residue named {name!r} in the structure")
    starts = struc.get_residue_starts(atoms, add_exclusive_stop=True)
    return atoms[starts[0] : starts[1]]


def pocket_coords(structure: Structure, row: dict[str, Any]) -> Any:
    """Heavy-atom coordinates of the prompt's ``<PocketS>`` residues in the structure."""
    import numpy as np

    from logos_jax.grammar import annotated_protein
    from logos_jax.grammar.structure import chain_sequences

    found = annotated_protein(str(row.get("prompt") or row.get("protein_pocket_ligand") or ""))
    if not found or not found[1]:
        raise LogosError("the prompt has no <PocketS> residues for a pocket box")
    residues = structure.residues_for(found[0], chain_sequences(structure.path))
    return np.concatenate([residues[i].atoms for i in found[1]])


def _safe_name(target: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", target)


def _crystal(ligand: Any, truth_smiles: str | None, path: Path) -> Any:
    """The crystal ligand with bond orders from the row's SMILES, else from the CCD entry."""
    from logos_jax.grammar.structure import ligand_smiles

    errors = []
    if truth_smiles:
        try:
            return docking.crystal_ligand(ligand, truth_smiles)
        except LogosError as err:
            errors.append(f"ground truth: {err}")
    try:
        return docking.crystal_ligand(ligand, ligand_smiles(path, str(ligand.res_name[0])))
    except LogosError as err:  # GrammarError too
        errors.append(f"CCD: {err}")
    raise LogosError("no bond orders for the reference ligand (" + "; ".join(errors) + ")")


def prepare_target(
    row: dict[str, Any], structures: Path, protocol: docking.Protocol, work_dir: Path
) -> dict[str, Any]:
    """Receptor file, box, reference PDBQT and crystal molecule of one input (``LogosError`` when
    the structure cannot be used)."""
    row_id = str(row.get("id"))
    structure = load_structure(find_structure(structures, row_id))
    receptor = work_dir / "receptors" / f"{_safe_name(row_id)}.pdbqt"
    if not receptor.is_file():
        atomic_write_text(receptor, docking.receptor_pdbqt(structure.atoms))
    target: dict[str, Any] = {"id": row_id, "receptor": str(receptor), "reference": None}
    ligand = None
    try:
        ligand = reference_atoms(structure, row.get("ligand"))
        crystal = _crystal(ligand, reference_smiles(row), structure.path)
        target.update(crystal=crystal, reference=docking.crystal_pdbqt(crystal))
    except LogosError as err:
        target["reference_error"] = str(err)
    if protocol.box == "pocket":
        target["box"] = docking.box_around(pocket_coords(structure, row), protocol.margin)
    elif ligand is not None:
        target["box"] = docking.box_around(ligand.coord, protocol.margin)
    else:
        raise LogosError(f"no reference ligand for a ligand box ({target['reference_error']})")
    return target


def run_jobs(
    jobs: list[dict[str, Any]], store: DockStore, workers: int, progress: bool = True
) -> None:
    """Dock the jobs not in ``store`` in a process pool, appending each result as it finishes."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    from tqdm import tqdm

    todo = [job for job in jobs if job["key"]["job"] not in store.rows]
    if not todo:
        return
    bar = tqdm(total=len(todo), desc="docking", unit="mol", disable=not progress, file=sys.stderr)
    if workers <= 1:
        for job in todo:
            store.add(docking.dock_smiles(job))
            bar.update()
    else:
        # spawn, not fork: the caller may hold threads (JAX, tqdm) whose locks a fork would copy
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=spawn) as pool:
            try:
                for future in as_completed([pool.submit(docking.dock_smiles, j) for j in todo]):
                    store.add(future.result())
                    bar.update()
            except BrokenProcessPool as err:
                raise LogosError(
                    f"a docking process died ({err}); finished molecules are kept in "
                    f"{store.path}: re-run the same command to resume"
                ) from None
    bar.close()


def _qed_sa(smiles: str) -> tuple[float, float]:
    from rdkit import Chem
    from rdkit.Chem import QED
    from rdkit.Contrib.SA_Score import sascorer

    mol = Chem.MolFromSmiles(smiles)
    return QED.qed(mol), sascorer.calculateScore(mol)


def design_metrics(
    rows: Iterable[dict[str, Any]],
    structures: str | Path,
    work_dir: str | Path,
    *,
    protocol: docking.Protocol = docking.Protocol(),  # noqa: B008 (frozen dataclass)
    reference: set | None = None,
    workers: int | None = None,
    progress: bool = True,
    inputs: dict[str, dict[str, Any]] | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """Docking figures of ligand-design output rows plus validity / uniqueness / novelty.

    ``inputs``: ``id -> input row`` supplying ``ligand`` / ``groundtruth`` fields the output rows
    lack (``--truth`` with the sampling input file). ``workers`` processes dock one molecule each
    with ``threads`` Vina threads (results do not depend on either)."""
    from logos_jax.eval.metrics import _group, _validity, generation_metrics

    docking.require_docking()
    structures, work_dir = Path(structures), Path(work_dir)
    if not structures.is_dir():
        raise LogosError(f"{structures}: structures directory not found")
    rows = list(rows)
    out = generation_metrics("ligand", rows, reference)
    groups = _group(rows)
    answers, _ = _validity(groups, "ligand")
    molecules: dict[str, list[str]] = {}
    for row_id, _, objects, _, valid in answers:
        if valid and objects["smiles_canonical"] not in molecules.setdefault(row_id, []):
            molecules[row_id].append(objects["smiles_canonical"])

    store = DockStore(work_dir / "docked.jsonl")
    targets, skipped, jobs = {}, [], []
    for row_id, rows_ in groups.items():
        try:
            row = {**(inputs or {}).get(row_id, {}), **rows_[0]}
            target = prepare_target(row, structures, protocol, work_dir)
        except LogosError as err:
            skipped.append({"id": row_id, "reason": str(err)})
            continue
        targets[row_id] = target
        common = {
            "receptor": target["receptor"],
            "box": target["box"],
            "protocol": protocol,
            "cpu": threads,
        }
        if target["reference"] is not None and molecules.get(row_id):  # else no HF% to compare
            key = {
                "job": job_id(row_id, REFERENCE, protocol),
                "target": row_id,
                "smiles": REFERENCE,
            }
            jobs.append({**common, "key": key, "pdbqt": target["reference"]})
        for smiles in molecules.get(row_id, []):
            key = {"job": job_id(row_id, smiles, protocol), "target": row_id, "smiles": smiles}
            jobs.append({**common, "key": key, "smiles": smiles})
    run_jobs(jobs, store, workers or os.cpu_count() or 1, progress)
    out.update(_summarise(targets, molecules, store, protocol))
    out.update(skipped_inputs=len(skipped), skipped=skipped)
    return out


def _summarise(
    targets: dict[str, dict[str, Any]],
    molecules: dict[str, list[str]],
    store: DockStore,
    protocol: docking.Protocol,
) -> dict[str, Any]:
    scores, qeds, sas, hfs, rmsds, failed, per_target = [], [], [], [], [], 0, []
    for row_id, target in targets.items():
        ref = store.rows.get(job_id(row_id, REFERENCE, protocol), {})
        ref_score = ref.get("score")
        rmsd = None
        if ref_score is not None:
            rmsd = docking.pose_rmsd(ref["pose"], target["crystal"])
            rmsds.append(rmsd)
        own = []
        for smiles in molecules.get(row_id, []):
            result = store.rows.get(job_id(row_id, smiles, protocol), {})
            if result.get("score") is None:
                failed += 1
                continue
            own.append(result["score"])
            qed, sa = _qed_sa(smiles)
            qeds.append(qed)
            sas.append(sa)
        scores += own
        hf = sum(s < ref_score for s in own) / len(own) if own and ref_score is not None else None
        if hf is not None:
            hfs.append(hf)
        per_target.append(
            {
                "id": row_id,
                "docked": len(own),
                "reference_score": ref_score,
                "reference_rmsd": rmsd,
                "reference_error": target.get("reference_error") or ref.get("error"),
                "hf": hf,
            }
        )
    mean = statistics.fmean
    ref_scores = [t["reference_score"] for t in per_target if t["reference_score"] is not None]
    return {
        "docked_count": len(scores),
        "dock_failed_count": failed,
        "vina_mean": -mean(scores) if scores else None,
        "vina_median": -statistics.median(scores) if scores else None,
        "hf": mean(hfs) if hfs else None,
        "qed": mean(qeds) if qeds else None,
        "sa": mean((10 - s) / 9 for s in sas) if sas else None,
        "sa_score": mean(sas) if sas else None,
        "reference_vina_mean": -mean(ref_scores) if ref_scores else None,
        "reference_rmsd_mean": mean(rmsds) if rmsds else None,
        "protocol": {**dataclasses.asdict(protocol), "scoring": "vina", "cpu_per_molecule": 1},
        "targets": per_target,
    }

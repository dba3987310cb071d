"""Pocket ligand design by re-docking (AutoDock Vina) on the real HIV-1 protease / amprenavir complex
1hpv, resumability of the docking folder, and clear refusals when an extra is missing."""

import json
from pathlib import Path

import pytest

from logos_jax.cli import main
from logos_jax.errors import LogosError
from logos_jax.eval import evaluate

FIXTURES = Path(__file__).parent / "fixtures" / "complexes"
HIV_PR = (
    "PQITLWQRPLVTIKIGGQLKEALLDTGADDTVLEEMNLPGRWKPKMIGGIGGFIKVRQYDQILIEICGHKAIGTVLVGPTPVNII"
    "GRNLLTQIGCTLNF"
)
PROMPT = f"<ProteinS>{HIV_PR}<ProteinE><MoleculeS>"


def _rows(*completions):
    return [
        {"id": "1hpv", "sample": i, "prompt": PROMPT, "completion": c}
        for i, c in enumerate(completions)
    ]


def test_chemistry_metrics_refuse_without_rdkit(monkeypatch):
    import logos_jax.eval.metrics as metrics

    monkeypatch.setattr(metrics, "has_rdkit", lambda: False)
    for task in ("ligand", "material", "retro"):
        with pytest.raises(LogosError, match=r"logos_jax\[chem\]"):
            evaluate(task, [{"id": "a", "completion": "CCO<MoleculeE>"}])


def test_missing_dock_extra_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    import importlib.util

    pytest.importorskip("rdkit")  # without it the chem extra is named first

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "vina" else real(name, *a)
    )
    results = tmp_path / "out.jsonl"
    results.write_text(json.dumps(_rows("CCO<MoleculeE>")[0]) + "\n")
    code = main(["eval", "--task", "ligand", str(results), "--structures", str(FIXTURES)])
    assert code == 2
    err = capsys.readouterr().err
    assert "logos_jax[dock]" in err and "Traceback" not in err


def test_dock_store_cuts_a_torn_last_line(tmp_path):
    pytest.importorskip("rdkit")
    from logos_jax.eval.design import DockStore

    path = tmp_path / "docked.jsonl"
    good = json.dumps({"job": "a", "score": -7.0})
    path.write_text(good + "\nnot json\n[1]\n" + '{"job": "b", "sco')
    store = DockStore(path)
    assert list(store.rows) == ["a"]
    store.add({"job": "b", "score": -6.0})
    assert path.read_text().splitlines()[-1] == json.dumps({"job": "b", "score": -6.0})
    assert list(DockStore(path).rows) == ["a", "b"]


@pytest.fixture(scope="module")
def docked(tmp_path_factory):
    """One real docking run: the crystal ligand re-docked plus two small generated molecules."""
    pytest.importorskip("rdkit")
    for package in ("vina", "meeko", "gemmi"):
        pytest.importorskip(package, reason="docking needs the dock extra: pip install '.[dock]'")
    from logos_jax.eval.design import design_metrics
    from logos_jax.eval.docking import Protocol

    work = tmp_path_factory.mktemp("dock")
    rows = _rows("c1ccccc1CCO<MoleculeE>", "OC(=O)c1ccccc1<MoleculeE>", "C1CC(<MoleculeE>")
    # exhaustiveness 2: seeds 1-3 all re-dock amprenavir within 1.8 Å (at 1, seeds 3 and 4 miss)
    protocol = Protocol(exhaustiveness=2, seed=1)
    summary = design_metrics(
        rows, FIXTURES, work, protocol=protocol, workers=1, threads=2, progress=False
    )
    return rows, work, protocol, summary


def test_redocked_crystal_ligand_scores_in_vinas_range_and_finds_its_pose(docked):
    _, _, _, summary = docked
    target = summary["targets"][0]
    # amprenavir in HIV-1 protease: Vina gives about -9 to -12 kcal/mol
    assert -12.5 <= target["reference_score"] <= -9.0, target
    assert target["reference_rmsd"] < 2.0, target
    assert summary["reference_vina_mean"] == -target["reference_score"]


def test_design_figures(docked):
    _, _, _, summary = docked
    assert summary["valid_count"] == 2 and summary["samples"] == 3 and summary["unique"] == 1.0
    assert summary["docked_count"] == 2 and summary["dock_failed_count"] == 0
    # two small fragments bind far worse than the optimised drug: none beats the reference
    assert 3.0 < summary["vina_median"] < 8.0 and summary["hf"] == 0.0
    assert 0.0 < summary["qed"] < 1.0 and 1.0 <= summary["sa_score"] <= 10.0
    assert summary["sa"] == pytest.approx((10 - summary["sa_score"]) / 9)
    assert summary["protocol"]["exhaustiveness"] == 2 and summary["skipped_inputs"] == 0


def test_a_rerun_docks_only_what_is_missing(docked, monkeypatch):
    from logos_jax.eval import design, docking

    rows, work, protocol, first = docked
    calls = []
    real = docking.dock_smiles

    def counting(job):
        calls.append(job["key"]["smiles"])
        return real(job)

    monkeypatch.setattr(docking, "dock_smiles", counting)
    again = design.design_metrics(
        rows, FIXTURES, work, protocol=protocol, workers=1, progress=False
    )
    assert calls == [] and again == first
    # a run killed while writing: one finished molecule lost, a torn line left behind
    store = work / "docked.jsonl"
    lines = store.read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["smiles"] != "O=C(O)c1ccccc1"]
    store.write_text("\n".join(kept) + "\n" + lines[0][:20])
    # resumed in a pool of spawned processes (a patch would not reach them: read the file)
    monkeypatch.undo()
    third = design.design_metrics(
        rows, FIXTURES, work, protocol=protocol, workers=2, progress=False
    )
    now = store.read_text().splitlines()
    assert now[: len(kept)] == kept and len(now) == len(kept) + 1
    assert json.loads(now[-1])["smiles"] == "O=C(O)c1ccccc1"
    assert third["docked_count"] == 2 and third["vina_mean"] == pytest.approx(first["vina_mean"])


def test_reference_bond_orders_from_the_truth_else_the_ccd():
    pytest.importorskip("rdkit")
    from rdkit import Chem

    from logos_jax.eval.design import _crystal, reference_atoms, reference_smiles
    from logos_jax.eval.structures import load_structure

    structure = load_structure(FIXTURES / "1hpv.pdb")
    ligand = reference_atoms(structure, None)  # the first site: amprenavir (478)
    amprenavir = "CC(C)CN(C[C@@H](O)[C@H](Cc1ccccc1)NC(=O)O[C@H]1CCOC1)S(=O)(=O)c1ccc(N)cc1"
    truth = reference_smiles({"groundtruth": f"<MoleculeS>{amprenavir}<MoleculeE>"})
    assert truth == amprenavir
    expected = Chem.CanonSmiles(amprenavir)
    assert Chem.MolToSmiles(_crystal(ligand, truth, structure.path)) == expected
    # a ground truth that is not this ligand: the CCD entry gives the bond orders
    assert Chem.MolToSmiles(_crystal(ligand, "CCO", structure.path)) == expected
    with pytest.raises(LogosError, match="no bond orders"):
        _crystal(ligand[:10], "CCO", structure.path)


def test_receptor_leaves_out_waters_ligands_and_modified_residues():
    pytest.importorskip("meeko", reason="docking needs the dock extra: pip install '.[dock]'")
    from logos_jax.eval.docking import receptor_pdbqt
    from logos_jax.eval.structures import load_structure

    # 1hvr has CSO (a modified Cys, whose meeko template would be downloaded), XK2 and waters
    pdbqt = receptor_pdbqt(load_structure(FIXTURES / "1hvr.pdb").atoms)
    names = {line[17:20] for line in pdbqt.splitlines() if line.startswith("ATOM")}
    assert names and not names & {"CSO", "XK2", "HOH"}
    assert " HD" in pdbqt  # polar hydrogens were added for Vina's donors


def test_pocket_box_surrounds_the_crystal_ligand():
    import numpy as np

    pytest.importorskip("biotite")

    from logos_jax.eval.design import pocket_coords, reference_atoms
    from logos_jax.eval.docking import box_around
    from logos_jax.eval.structures import load_structure
    from logos_jax.grammar.structure import pocket_from_structure

    structure = load_structure(FIXTURES / "1hpv.pdb")
    prompt = pocket_from_structure(FIXTURES / "1hpv.pdb", "478", chain="A").encode() + "<MoleculeS>"
    coords = pocket_coords(structure, {"prompt": prompt})
    box = box_around(coords, 4.0)
    assert np.allclose(box.size, coords.max(0) - coords.min(0) + 8.0)
    ligand = reference_atoms(structure, "478").coord
    low = np.array(box.center) - np.array(box.size) / 2
    assert (ligand.mean(0) > low).all() and (ligand.mean(0) < low + box.size).all()
    with pytest.raises(LogosError, match="no <PocketS> residues"):
        pocket_coords(structure, {"prompt": PROMPT})


def test_cli_resumes_from_the_docking_folder_and_writes_the_table(docked, tmp_path, capsys):
    rows, work, protocol, summary = docked
    results = tmp_path / "designs.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "designs.json"
    argv = ["eval", "--task", "ligand", str(results), "--structures", str(FIXTURES)]
    argv += ["--dock-dir", str(work), "--exhaustiveness", str(protocol.exhaustiveness)]
    argv += ["--seed", str(protocol.seed), "--workers", "1", "--summary", str(out)]
    assert main(argv) == 0  # every job is in the folder already: nothing is docked again
    written = json.loads(out.read_text())
    assert written["vina_mean"] == summary["vina_mean"] and written["task"] == "ligand"
    table = out.with_suffix(".md").read_text()
    assert f"| pocket ligand design, mean −Vina (kcal/mol) | {summary['vina_mean']:.2f} |" in table
    assert "vina_mean" in capsys.readouterr().out
    assert main([*argv[:-2], "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err

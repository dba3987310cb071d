"""Structure helpers on real HIV-1 protease complexes (1hvr + XK263, 1hpv + amprenavir) and a docked
ligand, cross-checked against the independent ``pockets.jsonl`` reference."""

from __future__ import annotations

import json

import pytest

from logos_jax import cli
from logos_jax.errors import LogosError
from logos_jax.grammar import Complex, PocketProtein, parse

pytest.importorskip("biotite")
Chem = pytest.importorskip("rdkit.Chem")

from logos_jax.grammar import structure  # noqa: E402

CASES = [("1hvr.pdb", "XK2"), ("1hpv.pdb", "478")]
AMPRENAVIR = "CC(C)CN(C[C@H]([C@H](CC1=CC=CC=C1)NC(=O)O[C@H]2CCOC2)O)S(=O)(=O)C3=CC=C(C=C3)N"


@pytest.fixture(scope="module")
def reference(fixtures):
    rows = [
        json.loads(x) for x in (fixtures / "complexes" / "pockets.jsonl").read_text().splitlines()
    ]
    return {row["file"]: row for row in rows}


@pytest.mark.parametrize(("file", "ligand"), CASES)
def test_chain_sequences_match_reference(fixtures, reference, file, ligand):
    sequences = structure.chain_sequences(fixtures / "complexes" / file)
    assert sequences == reference[file]["chains"]
    assert set(sequences) == {"A", "B"} and all(len(s) == 99 for s in sequences.values())


def test_modified_residue_maps_to_parent(fixtures):
    # 1hvr has S-hydroxycysteine (CSO) at residue 67 of both chains
    atoms = structure._load(fixtures / "complexes" / "1hvr.pdb")
    assert "CSO" in set(atoms.res_name)
    assert structure.chain_sequences(fixtures / "complexes" / "1hvr.pdb")["A"][66] == "C"


@pytest.mark.parametrize(("file", "ligand"), CASES)
def test_contacts_match_reference_distances(fixtures, reference, file, ligand):
    contacts = structure.ligand_contacts(fixtures / "complexes" / file, ligand, cutoff=8.0)
    mine = {(c.chain, c.res_num, c.icode): c for c in contacts}
    ref = {(p["chain"], p["resnum"], p["icode"]): p for p in reference[file]["pocket_le8A"]}
    assert set(mine) == set(ref)
    for key, p in ref.items():
        c = mine[key]
        assert (c.resname, c.aa, c.seq_index) == (p["resname"], p["aa"], p["seq_index"])
        assert c.min_dist == pytest.approx(p["min_dist"], abs=0.006)
        assert reference[file]["chains"][c.chain][c.seq_index] == c.aa


@pytest.mark.parametrize(("file", "ligand"), CASES)
def test_known_binding_residues(fixtures, file, ligand):
    """Catalytic Asp25 of both monomers and the flap Ile50 touch the inhibitor (4.5 Å)."""
    contacts = structure.ligand_contacts(fixtures / "complexes" / file, ligand)
    by_key = {(c.chain, c.res_num): c for c in contacts}
    for chain in "AB":
        assert by_key[(chain, 25)].resname == "ASP" and by_key[(chain, 25)].seq_index == 24
        assert (
            by_key[(chain, 25)].min_dist < 3.0
        )  # the catalytic aspartates bind the central hydroxyl
    assert by_key[("A", 50)].resname == "ILE" or by_key[("B", 50)].resname == "ILE"
    assert all(c.min_dist <= 4.5 for c in contacts)
    assert not any(c.resname == "HOH" for c in contacts)


def test_vdw_rule(fixtures):
    path = fixtures / "complexes" / "1hpv.pdb"
    vdw = structure.ligand_contacts(path, "478", rule="vdw", cutoff=None)
    dist = {
        (c.chain, c.res_num): c.min_dist for c in structure.ligand_contacts(path, "478", cutoff=8.0)
    }
    keys = {(c.chain, c.res_num) for c in vdw}
    # largest heavy-atom radii sum here is S-S 1.8 + 1.8, plus 0.5 tolerance; the smallest O-O 1.52*2 + 0.5
    assert all(dist[k] <= 1.8 + 1.8 + 0.5 for k in keys)
    assert {k for k, d in dist.items() if d <= 1.52 * 2 + 0.5} <= keys
    assert ("A", 25) in keys and ("B", 25) in keys
    wider = structure.ligand_contacts(path, "478", rule="vdw", cutoff=1.5)
    assert keys < {(c.chain, c.res_num) for c in wider}
    only_a = structure.ligand_contacts(path, "478", rule="vdw", cutoff=None, chain="A")
    assert {c.chain for c in only_a} == {"A"} and len(only_a) == sum(k[0] == "A" for k in keys)


def test_ligand_smiles_from_the_ccd(fixtures):
    amprenavir = structure.ligand_smiles(fixtures / "complexes" / "1hpv.pdb", "478")
    assert amprenavir == Chem.CanonSmiles(AMPRENAVIR)
    xk263 = Chem.MolFromSmiles(structure.ligand_smiles(fixtures / "complexes" / "1hvr.pdb", "XK2"))
    assert xk263.GetNumAtoms() == 46  # n_heavy in pockets.jsonl
    assert len(Chem.FindMolChiralCenters(xk263)) == 4  # the cyclic urea's four stereocentres


def test_ligand_smiles_by_bond_perception(fixtures, shared_data):
    # "LIG" is a real (different) CCD entry: the atom names do not match, so bonds are perceived.
    smiles = structure.ligand_smiles(fixtures / "complexes" / "prolif_vina_lig.pdb", "LIG")
    assert Chem.MolFromSmiles(smiles).GetNumAtoms() == 43
    pose = Chem.MolFromMolFile(str(shared_data / "complexes" / "prolif_vina_output.sdf"))
    assert smiles == Chem.MolToSmiles(pose)


def test_objects_from_structure(fixtures):
    path = fixtures / "complexes" / "1hpv.pdb"
    c2 = structure.complex_from_structure(path, "478", level=2, chain="A")
    assert isinstance(c2, Complex) and {24, 49} <= set(c2.pocket)
    assert parse(c2.encode()).objects == c2
    c3 = structure.complex_from_structure(path, "478", level=3, chain="A", smiles="CCO")
    assert (
        c3.pocket == c2.pocket
        and c3.ligand_smiles == "CCO"
        and parse(c3.encode()).layout == "complex3"
    )
    c1 = structure.complex_from_structure(path, "478", level=1, smiles="CCO")
    assert c1.pocket == ()
    pocket = structure.pocket_from_structure(path, "478", expanded=True, chain="B")
    assert isinstance(pocket, PocketProtein) and parse(pocket.encode()).layout == "pocket-smiles"


def test_structure_errors(fixtures, tmp_path):
    path = fixtures / "complexes" / "1hvr.pdb"
    with pytest.raises(LogosError, match="hetero residues present: .*XK2"):
        structure.ligand_contacts(path, "ABC")
    with pytest.raises(LogosError, match="not found"):
        structure.chain_sequences(tmp_path / "missing.pdb")
    with pytest.raises(LogosError, match="no protein chain 'Z'"):
        structure.ligand_contacts(path, "XK2", chain="Z")
    with pytest.raises(LogosError, match="unknown contact rule"):
        structure.ContactRule("closest")


def test_cli_contacts(fixtures, capsys):
    path = str(fixtures / "complexes" / "1hvr.pdb")
    assert (
        cli.main(
            ["grammar", "contacts", path, "--ligand", "XK2", "--cutoff", "4.0", "--chain", "A"]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in out if line.startswith("A ")]
    assert ["A", "25", "ASP", "D", "24", "2.86"] in rows
    assert all(float(r[-1]) <= 4.0 for r in rows)
    encoded = parse(out[-1])
    assert encoded.layout == "complex2" and len(encoded.objects.pocket) == len(rows)
    assert (
        cli.main(
            ["grammar", "contacts", path, "--ligand", "XK2", "--rule", "vdw", "--layout", "pocket"]
        )
        == 0
    )
    assert parse(capsys.readouterr().out.splitlines()[-1]).layout == "pocket"
    assert cli.main(["grammar", "contacts", path, "--ligand", "NOPE"]) == 2
    assert "no residue named 'NOPE'" in capsys.readouterr().err

"""Structure-level binding-site scores (DCA / DCC, top-n and top-(n+2)) on hand-built structures whose
answers are worked out by hand, and on the real 1hpv complex."""

import json
from pathlib import Path

import numpy as np
import pytest

from logos_jax.cli import main
from logos_jax.errors import LogosError
from logos_jax.eval import evaluate
from logos_jax.eval.sites import Pocket, leader_clusters, rank_pockets
from logos_jax.eval.structures import find_ligands, load_structure

struc = pytest.importorskip("biotite.structure")
pdbio = pytest.importorskip("biotite.structure.io.pdb")

FIXTURES = Path(__file__).parent / "fixtures" / "complexes"
RING = 5.0  # Cα ring radius around a ligand (Å): residue atoms 3.6 Å from the ligand's atoms
HEX = 1.4  # ligand hexagon radius (Å)


def _atom(chain, res_id, res_name, name, element, xyz, hetero=False):
    atom = struc.Atom(
        xyz, chain_id=chain, res_id=res_id, res_name=res_name, atom_name=name, element=element
    )
    atom.hetero = hetero
    return atom


def _alanine(chain, res_id, ca):
    """ALA whose heavy-atom centroid is exactly its Cα."""
    ca = np.asarray(ca, dtype=float)
    offsets = {"N": (-1.2, 0, 0), "CA": (0, 0, 0), "C": (1.2, 0, 0), "O": (0, 0, 1.2)}
    offsets["CB"] = (0, 0, -1.2)
    element = {"N": "N", "CA": "C", "C": "C", "O": "O", "CB": "C"}
    return [_atom(chain, res_id, "ALA", n, element[n], ca + o) for n, o in offsets.items()]


def _hexagon(res_name, res_id, centre, element="C"):
    centre = np.asarray(centre, dtype=float)
    angles = np.pi / 2 + np.arange(6) * np.pi / 3  # a vertex at +y
    return [
        _atom(
            "A",
            res_id,
            res_name,
            f"C{i + 1}",
            element,
            centre + HEX * np.array([np.cos(a), np.sin(a), 0.0]),
            hetero=True,
        )
        for i, a in enumerate(angles)
    ]


def _ring(centre):
    """Six Cα positions on a circle of radius RING around ``centre`` (z = 0 plane)."""
    angles = np.arange(6) * np.pi / 3
    return [np.asarray(centre) + RING * np.array([np.cos(a), np.sin(a), 0.0]) for a in angles]


SITE_1 = (0.0, 0.0, 0.0)
SITE_2 = (40.0, 0.0, 0.0)
FAR = [(-2.0, HEX + 10.0, 0.0), (0.0, HEX + 10.0, 0.0), (2.0, HEX + 10.0, 0.0)]  # centre 10 Å away


def write_structure(
    path: Path, *, two_sites: bool, extras: bool = True, chain_b: tuple = ()
) -> str:
    """Residues 0-5 ring site 1, 6-11 ring site 2 (if ``two_sites``), then the 3 FAR residues (chain
    A); ``chain_b``: Cα positions of a chain B. Returns chain A's sequence."""
    cas = _ring(SITE_1) + (_ring(SITE_2) if two_sites else []) + FAR
    atoms = [a for i, ca in enumerate(cas) for a in _alanine("A", i + 1, ca)]
    atoms += [a for i, ca in enumerate(chain_b) for a in _alanine("B", i + 1, ca)]
    atoms += _hexagon("LG1", 901, SITE_1)
    if two_sites:
        atoms += _hexagon("LG2", 902, SITE_2)
    if extras:  # none of these is a ligand site: water, an ignored additive, an ion
        atoms += [_atom("A", 950, "HOH", "O", "O", (0.0, 0.0, 3.0), hetero=True)]
        atoms += _hexagon("SO4", 951, (20.0, 0.0, 0.0), element="O")[:5]
        atoms += [_atom("A", 952, "ZN", "ZN", "ZN", (20.0, 5.0, 0.0), hetero=True)]
    array = struc.array(atoms)
    pdb = pdbio.PDBFile()
    pdb.set_structure(array)
    pdb.write(str(path))
    return "A" * len(cas)


def annotated(sequence, pocket):
    return "".join(
        f"<PocketS>{aa}<PocketE>" if i in pocket else aa for i, aa in enumerate(sequence)
    )


def rows_for(row_id, sequence, samples):
    """Output rows: one per (pocket residue indices, sum_logprob)."""
    prompt = f"<ProteinS>{sequence}<ProteinE><Search><ProteinS>"
    return [
        {
            "id": row_id,
            "sample": i,
            "prompt": prompt,
            "completion": annotated(sequence, set(pocket)) + "<ProteinE>",
            "sum_logprob": logprob,
        }
        for i, (pocket, logprob) in enumerate(samples)
    ]


SITE_1_RES = list(range(6))
SITE_2_RES = list(range(6, 12))


def test_ligands_follow_p2rank_rules(tmp_path):
    write_structure(tmp_path / "two.pdb", two_sites=True)
    structure = load_structure(tmp_path / "two.pdb")
    ligands = find_ligands(structure)
    assert [lig.name for lig in ligands] == ["LG1", "LG2"]  # water, SO4 and the ion are not sites
    assert np.allclose(ligands[0].centre, SITE_1, atol=1e-3)
    assert [lig.name for lig in find_ligands(structure, "LG2")] == ["LG2"]


def test_touching_groups_are_one_ligand(tmp_path):
    write_structure(tmp_path / "one.pdb", two_sites=False, extras=False)
    atoms = pdbio.PDBFile.read(str(tmp_path / "one.pdb")).get_structure(model=1)
    # a second group whose first atom is bonded (1.5 Å) to LG1: one site "LG1+LG3"
    extra = struc.array(_hexagon("LG3", 903, (0.0, 2 * HEX + 1.5, 0.0)))
    merged = atoms + extra
    pdb = pdbio.PDBFile()
    pdb.set_structure(merged)
    pdb.write(str(tmp_path / "merged.pdb"))
    ligands = find_ligands(load_structure(tmp_path / "merged.pdb"))
    assert [(lig.name, len(lig.coords)) for lig in ligands] == [("LG1+LG3", 12)]


def test_pocket_on_the_ligand_scores_1_and_one_10_angstrom_away_scores_0(tmp_path):
    sequence = write_structure(tmp_path / "one.pdb", two_sites=False)
    hit = evaluate(
        "pocket-search", rows_for("one", sequence, [(SITE_1_RES, -1.0)]), structures=tmp_path
    )
    assert hit["ligand_sites"] == 1 and hit["scored_inputs"] == 1
    assert hit["dca_top_n"] == 1.0 and hit["dcc_top_n"] == 1.0
    # the pocket's residues are exactly the ligand's 4 Å contacts
    assert hit["residue_precision"] == hit["residue_recall"] == hit["residue_f1"] == 1.0
    far = list(range(6, 9))
    miss = evaluate("pocket-search", rows_for("one", sequence, [(far, -1.0)]), structures=tmp_path)
    assert miss["dca_top_n"] == 0.0 and miss["dcc_top_n"] == 0.0
    assert miss["dca_top_n+2"] == 0.0 and miss["residue_f1"] == 0.0


def test_two_sites_need_two_pockets_at_top_n(tmp_path):
    sequence = write_structure(tmp_path / "two.pdb", two_sites=True)
    one_pocket = rows_for("two", sequence, [(SITE_1_RES, -1.0)] * 3)
    only_one = evaluate("pocket-search", one_pocket, structures=tmp_path)
    assert only_one["ligand_sites"] == 2
    assert only_one["dca_top_n"] == 0.5 and only_one["dca_top_n_count"] == 1
    # one sample naming both sites: two pockets after clustering, both found
    both = evaluate(
        "pocket-search",
        rows_for("two", sequence, [(SITE_1_RES + SITE_2_RES, -1.0)]),
        structures=tmp_path,
    )
    assert both["dca_top_n"] == 1.0 and both["dcc_top_n"] == 1.0


def test_pockets_rank_by_support_then_logprob_and_top_n_plus_2_reaches_further(tmp_path):
    sequence = write_structure(tmp_path / "two.pdb", two_sites=True)
    far = [12, 13, 14]
    samples = [(far, -5.0)] * 3 + [(SITE_1_RES, -1.0)] * 2 + [(SITE_2_RES, -0.5)]
    out = evaluate("pocket-search", rows_for("two", sequence, samples), structures=tmp_path)
    # ranking: FAR (3 samples), site 1 (2), site 2 (1); top-2 finds site 1 only, top-4 both
    assert out["dca_top_n"] == 0.5 and out["dca_top_n+2"] == 1.0
    structure = load_structure(tmp_path / "two.pdb")
    residues = structure.chains["A"]
    ranked = rank_pockets([(SITE_1_RES, -3.0), (SITE_2_RES, -1.0)], residues)
    assert [p.residues for p in ranked] == [tuple(SITE_2_RES), tuple(SITE_1_RES)]  # tie: log-prob
    assert all(isinstance(p, Pocket) and p.support == 1 for p in ranked)


def test_a_ligand_bound_to_another_chain_is_not_a_site_of_this_prompt(tmp_path):
    # site 2's ligand is lined by chain B only; the prompt is chain A
    ring_b = _ring(SITE_2)
    sequence = write_structure(tmp_path / "ab.pdb", two_sites=False, chain_b=ring_b)
    with_ligand = tmp_path / "ab.pdb"
    atoms = pdbio.PDBFile.read(str(with_ligand)).get_structure(model=1)
    pdb = pdbio.PDBFile()
    pdb.set_structure(atoms + struc.array(_hexagon("LG2", 902, SITE_2)))
    pdb.write(str(with_ligand))
    assert len(find_ligands(load_structure(with_ligand))) == 2
    out = evaluate(
        "pocket-search", rows_for("ab", sequence, [(SITE_1_RES, -1.0)]), structures=tmp_path
    )
    assert out["ligand_sites"] == 1 and out["dca_top_n"] == 1.0


def test_the_ligand_named_in_the_input_row_is_the_only_site(tmp_path):
    structures = tmp_path / "s"
    structures.mkdir()
    sequence = write_structure(structures / "two.pdb", two_sites=True)
    inputs = (
        tmp_path / "inputs.jsonl"
    )  # the sampling input file: output rows do not repeat `ligand`
    inputs.write_text(json.dumps({"id": "two", "text": "...", "ligand": "LG2"}) + "\n")
    rows = rows_for("two", sequence, [(SITE_2_RES, -1.0)])
    out = evaluate("pocket-search", rows, structures=structures, truth=inputs)
    assert out["ligand_sites"] == 1 and out["dca_top_n"] == 1.0
    assert out["per_input"][0]["ligands"] == ["LG2"]
    named_in_row = [{**r, "ligand": "LG1"} for r in rows]
    assert evaluate("pocket-search", named_in_row, structures=structures)["dca_top_n"] == 0.0


def test_pocket_merging_does_not_chain():
    centres = [np.array([x, 0.0, 0.0]) for x in (0.0, 7.0, 14.0)]
    # the best pocket (at 0) leads; 7 Å joins it; 14 Å is 14 Å from that leader: a new pocket
    assert leader_clusters(centres, [-1.0, -2.0, -3.0], 8.0) == [[0, 1], [2]]
    # led from the middle, both neighbours join
    assert leader_clusters(centres, [-2.0, -1.0, -3.0], 8.0) == [[1, 0, 2]]


def test_invalid_samples_predict_nothing_and_unusable_inputs_are_skipped(tmp_path):
    sequence = write_structure(tmp_path / "one.pdb", two_sites=False)
    rows = rows_for("one", sequence, [(SITE_1_RES, -1.0)])
    rows.append({**rows[0], "sample": 1, "completion": "AAA<ProteinE>"})  # not the input protein
    rows += rows_for("missing", sequence, [(SITE_1_RES, -1.0)])
    rows += rows_for("one.pdb", "MKV", [([0], -1.0)])  # the protein matches no chain
    out = evaluate("pocket-search", rows, structures=tmp_path)
    assert out["valid_count"] == 3 and out["samples"] == 4
    assert out["scored_inputs"] == 1 and out["skipped_inputs"] == 2
    reasons = {s["id"]: s["reason"] for s in out["skipped"]}
    assert "no structure file" in reasons["missing"]
    assert "matches no chain" in reasons["one.pdb"]
    assert out["dca_top_n"] == 1.0  # the invalid sample adds no pocket
    assert out["residue_recall"] == 0.5  # averaged over both samples


def test_real_complex_1hpv_chain_a_contacts_find_the_site():
    sequence = load_structure(FIXTURES / "1hpv.pdb")
    from logos_jax.grammar.structure import chain_sequences

    chain_a = chain_sequences(FIXTURES / "1hpv.pdb")["A"]
    residues = sequence.residues_for(chain_a, chain_sequences(FIXTURES / "1hpv.pdb"))
    from logos_jax.eval.structures import contact_residues

    ligands = find_ligands(sequence)
    assert [lig.name for lig in ligands] == ["478"]
    contacts = sorted(contact_residues(residues, ligands, 4.0))
    out = evaluate(
        "pocket-search", rows_for("1hpv", chain_a, [(contacts, -1.0)]), structures=FIXTURES
    )
    # chain A lines half of the dimer's site: its centre is 1.8 Å from the nearest ligand atom
    # but 4.7 Å from the ligand's centre
    assert out["dca_top_n"] == 1.0 and out["dcc_top_n"] == 0.0
    assert out["per_input"] == [
        {"id": "1hpv", "ligands": ["478"], "pockets": 1, "top_n_dca": [1.81]}
    ]


def test_cli_writes_summary_and_markdown_table(tmp_path, capsys):
    structures = tmp_path / "structures"
    structures.mkdir()
    sequence = write_structure(structures / "one.pdb", two_sites=False)
    results = tmp_path / "out.jsonl"
    rows = rows_for("one", sequence, [(SITE_1_RES, -1.0)])
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = tmp_path / "summary.json"
    code = main(
        [
            "eval",
            "--task",
            "pocket-search",
            str(results),
            "--structures",
            str(structures),
            "--summary",
            str(summary),
        ]
    )
    assert code == 0
    assert json.loads(summary.read_text())["dca_top_n"] == 1.0
    table = summary.with_suffix(".md").read_text()
    assert "| binding site, DCA success top-n | 100.0 |" in table
    assert "65.2 (COACH420) / 58.5 (HOLO4K)" in table and "P2Rank 72.0" in table
    assert "dca_top_n" in capsys.readouterr().out
    # a second run replaces its own table; a Markdown file of someone else's needs --force
    assert main(["eval", "--task", "pocket-search", str(results), "--summary", str(summary)]) == 0
    notes = tmp_path / "notes.md"
    notes.write_text("my notes\n")
    argv = [
        "eval",
        "--task",
        "pocket-search",
        str(results),
        "--summary",
        str(notes.with_suffix(".json")),
    ]
    assert main(argv) == 2
    assert "not a `logos eval` table" in capsys.readouterr().err
    assert notes.read_text() == "my notes\n"
    assert main([*argv, "--force"]) == 0 and notes.read_text().startswith("# `logos eval")


def test_structures_folder_must_exist(tmp_path):
    with pytest.raises(LogosError, match="structures directory not found"):
        evaluate("pocket-search", rows_for("x", "AAA", [([0], -1.0)]), structures=tmp_path / "no")


def test_rows_of_the_released_scripts_score_the_same(tmp_path):
    # the full decoded sequence in `text`, a perplexity, the structure file name as id
    sequence = write_structure(tmp_path / "one.pdb", two_sites=False)
    answer = annotated(sequence, set(SITE_1_RES))
    text = f"<ProteinS>{sequence}<ProteinE><Search><ProteinS>{answer}<ProteinE>"
    out = evaluate(
        "pocket-search", [{"id": "one.pdb", "text": text, "perplexity": 1.3}], structures=tmp_path
    )
    assert out["valid_count"] == 1 and out["dca_top_n"] == 1.0 and out["skipped"] == []


def test_mmcif_structures_score_like_pdb(tmp_path):
    pdbx = pytest.importorskip("biotite.structure.io.pdbx")
    sequence = write_structure(tmp_path / "one.pdb", two_sites=True)
    atoms = pdbio.PDBFile.read(str(tmp_path / "one.pdb")).get_structure(model=1)
    cif = pdbx.CIFFile()
    pdbx.set_structure(cif, atoms)
    (tmp_path / "one.pdb").unlink()
    cif.write(str(tmp_path / "one.cif"))  # found as id "one" + ".cif"
    rows = rows_for("one", sequence, [(SITE_1_RES + SITE_2_RES, -1.0)])
    out = evaluate("pocket-search", rows, structures=tmp_path)
    assert out["skipped"] == [] and out["ligand_sites"] == 2 and out["dca_top_n"] == 1.0

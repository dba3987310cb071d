"""Grammar: tags, layouts, encode -> parse round trips, parser errors, record encoding, `logos grammar`."""

from __future__ import annotations

import ast
import csv
import io
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logos_jax import cli
from logos_jax import grammar as grammar_package
from logos_jax.errors import LogosError
from logos_jax.grammar import (
    ALL_TAGS,
    LAYOUT_NAMES,
    LAYOUTS,
    OPEN_TO_CLOSE,
    Antibody,
    BindingSiteSearch,
    Complex,
    ForwardReaction,
    GrammarError,
    Material,
    Molecule,
    PocketProtein,
    Protein,
    Retrosynthesis,
    Transformation,
    allowed_next_tags,
    annotated_protein,
    completion_smiles,
    encode_record,
    material_parts,
    molecule_blocks,
    parse,
    parse_blocks,
    retro_reactants,
    tags,
)
from logos_jax.grammar.tags import PROTEIN_ALPHABET, STANDARD_AMINO_ACIDS

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture
def grammar_cli():
    return cli.main


def read_smiles(fixtures, n=60):
    return [
        line.split()[0]
        for line in (fixtures / "grammar" / "moses_sample.smi").read_text().splitlines()
    ][:n]


# ----------------------------------------------------------------------------------------------
# Tags


def test_tags_inventory():
    assert len(ALL_TAGS) == len(set(ALL_TAGS)) == 16
    assert ALL_TAGS[:2] == (tags.PROTEIN_S, tags.PROTEIN_E)
    for open_tag, close_tag in OPEN_TO_CLOSE.items():
        assert open_tag.endswith("S>") and close_tag == open_tag[:-2] + "E>"
        assert {open_tag, close_tag} <= set(ALL_TAGS)
    assert set(ALL_TAGS) == set(OPEN_TO_CLOSE) | set(OPEN_TO_CLOSE.values()) | set(tags.OPERATORS)
    assert tags.REVERSE_REACT == "<ReverseReact>" and tags.SEARCH == "<Search>"


# ----------------------------------------------------------------------------------------------
# Strategies: one per layout

residues = st.text(alphabet=PROTEIN_ALPHABET, min_size=1, max_size=40)
standard = st.text(alphabet=STANDARD_AMINO_ACIDS, min_size=1, max_size=40)
smiles = st.text(alphabet="CNOSPFIBrcnos()[]=#@+-/\\.123456789%H", min_size=1, max_size=25)
smiles_list = st.lists(smiles, min_size=1, max_size=4).map(tuple)


@st.composite
def with_pocket(draw, sequences=residues, min_size=1):
    seq = draw(sequences)
    pocket = draw(st.sets(st.integers(0, len(seq) - 1), min_size=min_size, max_size=len(seq)))
    return seq, tuple(sorted(pocket))


LAYOUT_STRATEGIES = {
    "protein": residues.map(Protein),
    "antibody": residues.map(Antibody),
    "molecule": smiles.map(Molecule),
    "reaction": st.builds(ForwardReaction, smiles_list, smiles),
    "retro": st.builds(Retrosynthesis, smiles, smiles_list),
    "material": st.builds(Material, smiles, smiles_list),
    "pocket": with_pocket().map(lambda sp: PocketProtein(*sp)),
    "pocket-smiles": with_pocket(standard).map(lambda sp: PocketProtein(*sp, expanded=True)),
    "transformation": with_pocket(standard).map(lambda sp: Transformation(*sp)),
    "search": with_pocket(min_size=0).map(lambda sp: BindingSiteSearch(*sp)),
    "complex1": st.builds(Complex, residues, smiles),
    "complex2": st.tuples(with_pocket(), smiles).map(lambda t: Complex(t[0][0], t[1], t[0][1], 2)),
    "complex3": st.tuples(with_pocket(standard), smiles).map(
        lambda t: Complex(t[0][0], t[1], t[0][1], 3)
    ),
}


def test_every_layout_has_a_strategy():
    assert set(LAYOUT_STRATEGIES) == set(LAYOUT_NAMES) == set(LAYOUTS)


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_roundtrip_every_layout(name):
    @SETTINGS
    @given(LAYOUT_STRATEGIES[name])
    def check(obj):
        text = obj.encode()
        assert obj.name == name
        assert obj.prompt() + obj.answer() == text
        parsed = parse(text)
        assert parsed.error is None, parsed.error
        assert parsed.complete and parsed.layout == name
        assert parsed.objects == obj
        assert parsed.to_json()["layout"] == name
        json.dumps(parsed.to_json())

    check()


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_every_prefix_is_valid_or_truncated(name):
    """What a sampler sees mid-generation: never a hard error, always 'truncated' or complete."""

    @settings(max_examples=5, deadline=None)
    @given(LAYOUT_STRATEGIES[name])
    def check(obj):
        text = obj.encode()
        for cut in range(len(text)):
            result = parse(text[:cut])
            assert result.error is None or result.error.truncated, (text[:cut], result.error)
            if result.error is not None:
                assert result.error.position <= cut

    check()


PIECES = [
    *ALL_TAGS,
    "<",
    ">",
    "<Foo>",
    "C",
    "O",
    "c1",
    "(",
    ")",
    "M",
    "K",
    "X",
    "B",
    " ",
    "NCC(=O)O",
]


@SETTINGS
@given(st.lists(st.sampled_from(PIECES), max_size=14).map("".join))
def test_parse_never_raises(text):
    result = parse(text)
    if result.error is None:
        assert result.objects.encode() == text
    else:
        assert 0 <= result.error.position <= len(text)
        assert result.error.reason
        assert set(result.to_json()) == {"error", "position", "truncated"}


# ----------------------------------------------------------------------------------------------
# Exact layouts (docs/grammar.md)


def test_layout_strings_match_the_spec():
    assert Protein("MKT").encode() == "<ProteinS>MKT<ProteinE>"
    assert (
        Retrosynthesis("CCO", ("CC", "O")).encode()
        == "<MoleculeS>CCO<MoleculeE><ReverseReact><MoleculeS>CC<MoleculeE><MoleculeS>O<MoleculeE>"
    )
    assert Retrosynthesis("CCO", ("CC",)).prompt() == "<MoleculeS>CCO<MoleculeE><ReverseReact>"
    assert BindingSiteSearch("MKT", (1,)).prompt() == "<ProteinS>MKT<ProteinE><Search>"
    assert BindingSiteSearch("MKT", (1,)).answer() == "<ProteinS>M<PocketS>K<PocketE>T<ProteinE>"
    assert Material("[Zn]", ("CC",)).prompt() == "<MaterialS>"
    assert (
        Material("[Zn]", ("CC", "O")).encode()
        == "<MaterialS><MetalS>[Zn]<MetalE><MoleculeS>CC<MoleculeE><MoleculeS>O<MoleculeE><MaterialE>"
    )
    assert (
        PocketProtein("JFDSSKJEFKKSD".replace("J", "A"), (4, 9)).encode()
        == "<ProteinS>AFDS<PocketS>S<PocketE>KAEF<PocketS>K<PocketE>KSD<ProteinE>"
    )
    assert PocketProtein("GK", (0,), expanded=True).encode() == (
        "<ProteinS><PocketS>NCC(=O)O<PocketE>K<ProteinE>"
    )
    t = Transformation("GK", (0,))
    assert t.prompt() == "<ProteinS><PocketS>G<PocketE>K<ProteinE><Trans>"
    assert t.answer() == "<ProteinS><PocketS>NCC(=O)O<PocketE>K<ProteinE>"
    c = Complex("MKT", "CCO", (2,), level=2)
    assert c.prompt() == "<ProteinS>MK<PocketS>T<PocketE><ProteinE><MoleculeS>"
    assert c.answer() == "CCO<MoleculeE>"
    assert ForwardReaction(("CC", "O"), "CCO").prompt().endswith("<React>")


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: Protein(""), "empty"),
        (lambda: Protein("MKUT"), "selenocysteine"),
        (lambda: Protein("MK T"), "not a residue"),
        (lambda: Antibody("EVQLB"), "non-standard residue 'B'"),
        (lambda: Molecule(""), "empty SMILES"),
        (lambda: Molecule("CC O"), "whitespace"),
        (lambda: Molecule("C<MoleculeE>C"), "grammar tags"),
        (lambda: Retrosynthesis("CCO", ()), "at least one"),
        (lambda: Retrosynthesis("CCO", "CC"), "not one string"),
        (lambda: Material("[Zn]", ()), "at least one"),
        (lambda: PocketProtein("MKT", ()), "at least one pocket residue"),
        (lambda: PocketProtein("MKT", (3,)), "outside the sequence"),
        (lambda: PocketProtein("MXT", (1,), expanded=True), "20 standard"),
        (lambda: Complex("MKT", "CCO", (1,), level=1), "level-1"),
        (lambda: Complex("MKT", "CCO", (), level=2), "at least one contact"),
        (lambda: Complex("MKT", "CCO", (), level=4), "level must be"),
    ],
)
def test_layout_validation(make, reason):
    with pytest.raises(GrammarError, match=re.escape(reason)) as info:
        make()
    assert isinstance(info.value, LogosError)


def test_pocket_is_normalised():
    assert PocketProtein("MKTAY", [3, 1, 3]).pocket == (1, 3)


def test_x_is_an_allowed_plain_residue():
    assert parse(Protein("MXK").encode()).objects == Protein("MXK")


# ----------------------------------------------------------------------------------------------
# Parser errors


@pytest.mark.parametrize(
    ("text", "position", "reason", "truncated"),
    [
        ("", 0, "empty sequence", True),
        ("<ProteinS>MKT", 13, "text ends before <ProteinE>", True),
        ("<MoleculeS>CCO<Molec", 14, "text ends inside a tag", True),
        ("<MoleculeS>CCO<MoleculeE><ReverseReact>", 39, "text ends after <ReverseReact>", True),
        ("<MoleculeS>C<MoleculeE><MoleculeS>O<MoleculeE>", 46, "need <React>", True),
        ("<ProteinS>M<PocketS>N[C@@H](C", 29, "inside a pocket block", True),
        ("<ProteinS>MK<Foo>T<ProteinE>", 12, "unknown tag <Foo>", False),
        (
            "<ProteinS>MK<MoleculeS>C<MoleculeE><ProteinE>",
            12,
            "unexpected <MoleculeS> inside",
            False,
        ),
        ("<ProteinS>MK<PocketS>K<ProteinE>", 22, "expected <PocketE>", False),
        ("<MoleculeS>CCO<ProteinE>", 14, "expected <MoleculeE>", False),
        ("<MoleculeE>", 0, "with no open block", False),
        ("<PocketS>K<PocketE>", 0, "outside its enclosing block", False),
        ("<React><MoleculeS>C<MoleculeE>", 0, "operator <React> with no object", False),
        ("<MoleculeS><MoleculeE>", 11, "empty <MoleculeS> block", False),
        ("<ProteinS><ProteinE>", 10, "empty <ProteinS> block", False),
        ("<ProteinS>M<PocketS><PocketE>K<ProteinE>", 20, "empty pocket block", False),
        ("<ProteinS>MKZT<ProteinE>", 12, "non-standard residue 'Z'", False),
        ("<AntibodyS>EV1<AntibodyE>", 13, "'1' is not a residue", False),
        ("<MoleculeS>CC O<MoleculeE>", 13, "whitespace", False),
        ("<MoleculeS>CC>O<MoleculeE>", 13, "reaction arrows", False),
        ("CCO", 0, "text outside any block", False),
        ("<MoleculeS>CCO<MoleculeE>junk", 25, "after a molecule block", False),
        (
            "<ProteinS>MK<ProteinE><MoleculeS>C<MoleculeE><React>",
            45,
            "after the end of the complex1",
            False,
        ),
        (
            "<ProteinS>M<PocketS>CCCC<PocketE><ProteinE>",
            20,
            "not one residue or amino-acid SMILES",
            False,
        ),
        ("<ProteinS>M<PocketS>K<PocketE><PocketS>NCC(=O)O<PocketE><ProteinE>", 30, "mix", False),
        ("<MaterialS><MoleculeS>CC<MoleculeE><MaterialE>", 11, "starts with a <MetalS>", False),
        ("<MaterialS><MetalS>[Zn]<MetalE><MaterialE>", 31, "needs a linker", False),
        (
            "<MoleculeS>C<MoleculeE><MoleculeS>O<MoleculeE><ReverseReact>",
            46,
            "exactly one product",
            False,
        ),
        (
            "<ProteinS>MKT<ProteinE><Search><ProteinS>MKA<ProteinE>",
            31,
            "differs from the first at residue 2",
            False,
        ),
        (
            "<ProteinS>M<PocketS>K<PocketE><ProteinE><Search><ProteinS>MK<ProteinE>",
            0,
            "no pocket blocks",
            False,
        ),
        (
            "<ProteinS>MK<ProteinE><Search><MoleculeS>C<MoleculeE>",
            30,
            "expected <ProteinS> after <Search>",
            False,
        ),
        (
            "<ProteinS>M<PocketS>K<PocketE><ProteinE><Trans><ProteinS>M<PocketS>K<PocketE><ProteinE>",
            47,
            "same residues as SMILES",
            False,
        ),
        (
            "<ProteinS>MK<ProteinE><MoleculeS>C<MoleculeE><MoleculeS>C<MoleculeE>",
            45,
            "after the end",
            False,
        ),
        ("<ProteinS>MK<ProteinE>x", 22, "after a protein block", False),
        ("<MoleculeS>C<C<MoleculeE>", 12, "unclosed '<'", False),
        ("<ProteinS>MZ<Foo>", 11, "non-standard residue 'Z'", False),  # the earliest error wins
    ],
)
def test_parse_errors(text, position, reason, truncated):
    result = parse(text)
    assert result.objects is None and result.layout is None and not result.complete
    assert result.error.position == position, result.error
    assert reason in result.error.reason, result.error
    assert result.error.truncated is truncated
    assert result.to_json() == {
        "error": result.error.reason,
        "position": position,
        "truncated": truncated,
    }


def test_pocket_smiles_are_matched_after_canonicalisation():
    pytest.importorskip("rdkit")
    # glycine written non-canonically by a model
    result = parse("<ProteinS>M<PocketS>OC(=O)CN<PocketE>K<ProteinE>")
    assert result.objects == PocketProtein("MGK", (1,), expanded=True)


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", ("<ProteinS>", "<AntibodyS>", "<MoleculeS>", "<MaterialS>")),
        ("<ProteinS>", ("<PocketS>",)),
        ("<ProteinS>MK", ("<ProteinE>", "<PocketS>")),
        ("<ProteinS>MK<PocketS>K", ("<PocketE>",)),
        ("<ProteinS>MK<ProteinE>", ("<MoleculeS>", "<Search>")),
        ("<ProteinS>M<PocketS>K<PocketE><ProteinE>", ("<MoleculeS>", "<Trans>")),
        ("<MoleculeS>CCO<MoleculeE>", ("<MoleculeS>", "<React>", "<ReverseReact>")),
        ("<MoleculeS>CCO<MoleculeE><ReverseReact>", ("<MoleculeS>",)),
        ("<MaterialS>", ("<MetalS>",)),
        ("<ProteinS>MK<ProteinE><MoleculeS>C<MoleculeE>", ()),
        ("<Foo>", ()),
    ],
)
def test_allowed_next_tags(prefix, expected):
    assert allowed_next_tags(prefix) == expected


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_allowed_next_tags_admit_every_layout(name):
    @settings(max_examples=5, deadline=None)
    @given(LAYOUT_STRATEGIES[name])
    def check(obj):
        text = obj.encode()
        for match in re.finditer(r"<[A-Za-z]+>", text):
            assert match.group() in allowed_next_tags(text[: match.start()])

    check()


# ----------------------------------------------------------------------------------------------
# Extraction helpers for completions


def test_completion_helpers():
    completion = "<MoleculeS>CC(=O)Cl<MoleculeE><MoleculeS>OCC<MoleculeE><MoleculeS>CC("
    assert retro_reactants(completion) == ["CC(=O)Cl", "OCC"]
    assert retro_reactants("<MoleculeS>P<MoleculeE><ReverseReact><MoleculeS>A<MoleculeE>") == ["A"]
    assert molecule_blocks("<MoleculeS>C C<MoleculeE><MoleculeS>N<MoleculeE>") == ["N"]

    search = "<ProteinS>MKTA<ProteinE><Search><ProteinS>M<PocketS>K<PocketE>T<PocketS>A<PocketE><ProteinE>"
    assert annotated_protein(search) == ("MKTA", (1, 3))
    assert annotated_protein("M<PocketS>K<PocketE>TA<ProteinE>") == ("MKTA", (1,))
    assert annotated_protein("M<PocketS>K<PocketE>TA") is None
    assert annotated_protein("M<PocketS>Z<PocketE>TA<ProteinE>") is None

    assert material_parts("<MetalS>[Zn]<MetalE><MoleculeS>CC<MoleculeE><MaterialE>") == (
        "[Zn]",
        ("CC",),
    )
    assert material_parts("<MaterialS><MetalS>[Zn]<MetalE><MaterialE>") is None
    assert completion_smiles("CCO<MoleculeE>") == "CCO"
    assert completion_smiles("<MoleculeE>") is None

    text = Complex("MK", "CCO", (1,), 2).encode() + "<Search><ProteinS>MK"
    blocks = parse_blocks(text)
    assert [b.tag for b in blocks] == ["<ProteinS>", "<MoleculeS>"]
    assert blocks[0].content == "M<PocketS>K<PocketE>" and text[
        blocks[1].start : blocks[1].end
    ].endswith("<MoleculeE>")


# ----------------------------------------------------------------------------------------------
# Records (real data rows)


def test_encode_molecules_from_moses(fixtures):
    rdkit_chem = pytest.importorskip("rdkit.Chem")
    for smi in read_smiles(fixtures, 20):
        assert encode_record("molecule", smi + "  some-name") == f"<MoleculeS>{smi}<MoleculeE>"
        a = encode_record("molecule", smi, randomize_smiles=True, rng=random.Random(7))
        b = encode_record("molecule", smi, randomize_smiles=True, rng=random.Random(7))
        assert a == b
        (written,) = molecule_blocks(a)
        assert rdkit_chem.CanonSmiles(written) == rdkit_chem.CanonSmiles(smi)


def uspto_rows(fixtures):
    with (fixtures / "grammar" / "uspto50k_sample.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("layout", ["retro", "reaction"])
def test_encode_uspto_reactions(fixtures, layout):
    pytest.importorskip("rdkit")
    from logos_jax.grammar.chem import canonical_smiles

    rows = uspto_rows(fixtures)
    assert len(rows) == 30
    for row in rows:
        text = encode_record(layout, row["rxn_mapped"])
        assert not re.search(r":\d+\]", text)  # atom maps stripped
        obj = parse(text).objects
        assert obj.layout == layout
        expected = sorted(canonical_smiles(s) for s in row["reactants_canonical"].split("."))
        assert sorted(canonical_smiles(s) for s in obj.reactants) == expected
        assert canonical_smiles(obj.product) == canonical_smiles(row["product_canonical"])
    retro = parse(encode_record("retro", {"rxn_mapped": rows[0]["rxn_mapped"]})).objects
    assert retro.prompt().endswith("<ReverseReact>")


def test_encode_materials(fixtures):
    for line in (fixtures / "grammar" / "coremof_sample.jsonl").read_text().splitlines():
        row = json.loads(line)
        obj = parse(encode_record("material", line)).objects
        assert obj == Material(".".join(row["nodes"]), tuple(row["linkers"]))


def test_encode_antibodies(fixtures):
    for line in (fixtures / "grammar" / "anarci_sample.jsonl").read_text().splitlines():
        row = json.loads(line)
        assert encode_record("antibody", row) == f"<AntibodyS>{row['sequence']}<AntibodyE>"


def test_encode_pocket_records_from_pockets_jsonl(fixtures):
    rows = [
        json.loads(x) for x in (fixtures / "complexes" / "pockets.jsonl").read_text().splitlines()
    ]
    row = dict(rows[0], ligand="CCO")  # 1hvr: both chains bind; without "chain" the busiest is used
    close = {
        c: [p["seq_index"] for p in row["pocket_le8A"] if p["chain"] == c and p["min_dist"] <= 4.5]
        for c in "AB"
    }
    busiest = max("AB", key=lambda c: len(close[c]))
    obj = parse(encode_record("complex2", row)).objects
    assert obj.pocket == tuple(close[busiest]) and obj.sequence == row["chains"][busiest]
    assert parse(encode_record("complex3", dict(row, chain="A"))).objects.pocket == tuple(
        close["A"]
    )
    from logos_jax.grammar.structure import ContactRule

    wide = parse(
        encode_record("pocket", dict(row, chain="B"), contact_rule=ContactRule(cutoff=8.0))
    ).objects
    assert len(wide.pocket) == sum(p["chain"] == "B" for p in row["pocket_le8A"])
    with pytest.raises(GrammarError, match="vdw rule needs the structure"):
        encode_record("search", row, contact_rule=ContactRule("vdw", None))


@pytest.mark.parametrize(
    ("layout", "raw", "reason"),
    [
        ("nope", "C", "unknown layout"),
        ("molecule", "   ", "empty record"),
        ("protein", "MKBT", "non-standard residue 'B'"),
        ("protein", {"seq": "MK"}, "no 'sequence' field"),
        ("reaction", "CC.O>>CCO.O", "2 products"),
        ("reaction", "CCO", "reactants>reagents>products"),
        ("retro", ">>CCO", "no reactants"),
        ("material", '{"nodes": [], "linkers": ["CC"]}', "non-empty list"),
        ("material", "not json", "needs a JSON object"),
        ("pocket", '{"sequence": "MKT", "pocket": [5]}', "outside the sequence"),
        ("complex2", '{"sequence": "MKT", "pocket": [1]}', "no 'ligand' field"),
        ("search", '{"sequence": "MKT"}', "'pocket' (indices) or 'contacts'"),
    ],
)
def test_encode_record_rejects(layout, raw, reason):
    with pytest.raises(GrammarError, match=re.escape(reason)):
        encode_record(layout, raw)


def test_protein_record_cleanup():
    assert encode_record("protein", "mkt ay*\n") == "<ProteinS>MKTAY<ProteinE>"
    assert encode_record("complex1", {"sequence": "MKT", "pocket": [1], "ligand": "CCO"}) == (
        "<ProteinS>MKT<ProteinE><MoleculeS>CCO<MoleculeE>"
    )


# ----------------------------------------------------------------------------------------------
# CLI


def test_cli_encode_fasta_and_rejects(grammar_cli, fixtures, tmp_path, capsys):
    fasta = tmp_path / "in.fasta"
    fasta.write_text((fixtures / "grammar" / "proteome_sample.fasta").read_text() + ">bad\nMKUUT\n")
    out = tmp_path / "out" / "proteins.txt"
    assert (
        grammar_cli(
            [
                "grammar",
                "encode",
                "--layout",
                "protein",
                "--fasta",
                "--input",
                str(fasta),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    lines = out.read_text().splitlines()
    assert len(lines) == 10 and all(parse(x).layout == "protein" for x in lines)
    err = capsys.readouterr().err
    bad_line = fasta.read_text().splitlines().index(">bad") + 1
    assert f"line {bad_line}: protein sequence: non-standard residue 'U' (selenocysteine)" in err


def test_cli_encode_stdin_to_stdout(grammar_cli, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("CCO\n\nC C\nc1ccccc1\n"))
    assert grammar_cli(["grammar", "encode", "--layout", "molecule"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "<MoleculeS>CCO<MoleculeE>",
        "<MoleculeS>C<MoleculeE>",
        "<MoleculeS>c1ccccc1<MoleculeE>",
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO("MKB\n"))
    assert grammar_cli(["grammar", "encode", "--layout", "protein"]) == 2
    err = capsys.readouterr().err
    assert "line 1: " in err and "error: nothing encoded: every record was rejected" in err


def test_cli_encode_csv_column_and_parse(grammar_cli, fixtures, tmp_path, capsys):
    pytest.importorskip("rdkit")
    out = tmp_path / "retro.txt"
    csv_path = fixtures / "grammar" / "uspto50k_sample.csv"
    argv = [
        "grammar",
        "encode",
        "--layout",
        "retro",
        "--csv-column",
        "rxn_mapped",
        "--input",
        str(csv_path),
    ]
    assert grammar_cli([*argv, "--output", str(out)]) == 0
    capsys.readouterr()
    bad = tmp_path / "mixed.txt"
    bad.write_text(out.read_text().splitlines()[0] + "\n<MoleculeS>C1CC<MoleculeE>\n<ProteinS>MK\n")
    assert grammar_cli(["grammar", "parse", "--input", str(bad)]) == 0
    first, invalid, truncated = (json.loads(x) for x in capsys.readouterr().out.splitlines())
    row = uspto_rows(fixtures)[0]
    assert first["layout"] == "retro" and first["product"] == row["product_canonical"]
    assert sorted(first["reactants"]) == sorted(row["reactants_canonical"].split("."))
    assert invalid == {"layout": "molecule", "smiles": "C1CC", "invalid_smiles": ["C1CC"]}
    assert truncated["truncated"] is True and truncated["position"] == 12


def test_cli_missing_input_is_a_user_error(grammar_cli, tmp_path, capsys):
    assert grammar_cli(["grammar", "parse", "--input", str(tmp_path / "nope.txt")]) == 2
    assert "input file not found" in capsys.readouterr().err


def test_cli_encode_rejects_invalid_smiles_unless_told_not_to(grammar_cli, tmp_path, capsys):
    pytest.importorskip("rdkit")
    src = tmp_path / "in.smi"
    src.write_text("CC(=O)Oc1ccccc1C(=O)O\nC1CC(\n")
    assert grammar_cli(["grammar", "encode", "--layout", "molecule", "--input", str(src)]) == 0
    out = capsys.readouterr()
    assert out.out == "<MoleculeS>CC(=O)Oc1ccccc1C(=O)O<MoleculeE>\n"
    assert "line 2: invalid SMILES (RDKit cannot sanitize it): C1CC(" in out.err
    args = [
        "grammar",
        "encode",
        "--layout",
        "molecule",
        "--input",
        str(src),
        "--check-smiles",
        "off",
    ]
    assert grammar_cli(args) == 0
    assert capsys.readouterr().out.count("<MoleculeS>") == 2


GRAMMAR_DIR = Path(grammar_package.__file__).parent
GRAMMAR_MODULES = sorted(p.stem for p in GRAMMAR_DIR.glob("*.py") if p.stem != "__init__")


def _grammar_imports(module: str) -> set[str]:
    """The ``logos_jax.grammar`` submodules that ``module`` imports, at any depth (lazy ones too)."""
    tree = ast.parse((GRAMMAR_DIR / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "logos_jax.grammar":
            found |= {a.name for a in node.names if a.name in GRAMMAR_MODULES}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "logos_jax.grammar."
        ):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {
                a.name.split(".")[2] for a in node.names if a.name.startswith("logos_jax.grammar.")
            }
    return found - {module}


def test_grammar_modules_import_without_a_circle():
    """chem, layouts and parse (and the rest) form a hierarchy: no circle, not even a lazy import."""
    graph = {m: _grammar_imports(m) for m in GRAMMAR_MODULES}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"grammar import circle: {' -> '.join((*path, module))}"
        if module not in done:
            for dep in sorted(graph[module]):
                visit(dep, (*path, module))
            done.add(module)

    for module in GRAMMAR_MODULES:
        visit(module, ())
    assert graph["chem"] <= {"tags", "validate"}


@pytest.mark.parametrize("module", GRAMMAR_MODULES)
def test_each_grammar_module_imports_first_in_a_fresh_interpreter(module):
    code = f"import logos_jax.grammar.{module}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]

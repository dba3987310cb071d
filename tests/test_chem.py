"""Chemistry helpers on real molecules (MOSES) and reactions (USPTO-50K): RDKit path and fallback."""

from __future__ import annotations

import csv
import random

import pytest

from logos_jax.errors import LogosError
from logos_jax.grammar import chem
from logos_jax.grammar.tags import STANDARD_AMINO_ACIDS

Chem = pytest.importorskip("rdkit.Chem")


def moses(fixtures):
    return [
        line.split()[0]
        for line in (fixtures / "grammar" / "moses_sample.smi").read_text().splitlines()
    ]


def uspto(fixtures):
    with (fixtures / "grammar" / "uspto50k_sample.csv").open() as f:
        return list(csv.DictReader(f))


def test_amino_acid_table_is_the_l_amino_acids():
    from rdkit.Chem import rdCIPLabeler

    assert sorted(chem.AMINO_ACID_SMILES) == sorted(STANDARD_AMINO_ACIDS)
    assert len(set(chem.AMINO_ACID_SMILES.values())) == 20
    for aa, smiles in chem.AMINO_ACID_SMILES.items():
        mol = Chem.MolFromSmiles(smiles)
        assert mol is not None and Chem.MolToSmiles(mol) == smiles, aa  # stored canonical
        assert Chem.GetFormalCharge(mol) == 0, aa  # neutral, not zwitterions
        rdCIPLabeler.AssignCIPLabels(mol)
        labels = [a.GetProp("_CIPCode") for a in mol.GetAtoms() if a.HasProp("_CIPCode")]
        if aa == "G":
            assert labels == []
        else:
            # the alpha carbon: S for every L-amino acid except cysteine (R by CIP priority)
            alpha = next(
                a
                for a in mol.GetAtoms()
                if a.HasProp("_CIPCode") and any(n.GetSymbol() == "N" for n in a.GetNeighbors())
            )
            assert alpha.GetProp("_CIPCode") == ("R" if aa == "C" else "S"), aa
    # isoleucine (2S,3S) and threonine (2S,3R)
    assert Chem.CanonSmiles("CC[C@H](C)[C@H](N)C(=O)O") == chem.AMINO_ACID_SMILES["I"]
    assert Chem.CanonSmiles("C[C@@H](O)[C@H](N)C(=O)O") == chem.AMINO_ACID_SMILES["T"]


def test_canonical_and_validity(fixtures):
    for smi in moses(fixtures):
        assert chem.is_valid_smiles(smi)
        canon = chem.canonical_smiles(smi)
        assert canon == Chem.MolToSmiles(Chem.MolFromSmiles(smi))
        assert chem.canonical_smiles(canon) == canon
    assert chem.canonical_smiles("C[C@H](N)O", keep_stereo=False) == "CC(N)O"
    for bad in ("", "C1CC", "c1cccc1", "Q"):
        assert chem.canonical_smiles(bad) is None
        assert not chem.is_valid_smiles(bad)


def test_randomized_smiles_is_the_same_molecule_and_reproducible(fixtures):
    smiles = moses(fixtures)[:20]
    first = [chem.randomized_smiles(s, random.Random(3)) for s in smiles]
    again = [chem.randomized_smiles(s, random.Random(3)) for s in smiles]
    assert first == again
    assert sum(a != s for a, s in zip(first, smiles)) >= 15  # really random
    for a, s in zip(first, smiles):
        assert chem.canonical_smiles(a) == chem.canonical_smiles(s)
    rng = random.Random(0)
    assert len({chem.randomized_smiles(smiles[0], rng) for _ in range(10)}) > 3
    with pytest.raises(ValueError, match="cannot parse"):
        chem.randomized_smiles("C1CC", rng)


def test_strip_atom_maps_matches_uspto_canonical_columns(fixtures):
    for row in uspto(fixtures):
        reactants, reagents, products = chem.strip_atom_maps(row["rxn_mapped"])
        assert reagents == []
        assert sorted(reactants) == sorted(row["reactants_canonical"].split("."))
        assert products == [row["product_canonical"]]
    with pytest.raises(ValueError, match="got 1 field"):
        chem.strip_atom_maps("CCO")


def test_strip_atom_maps_regex_fallback_without_rdkit(monkeypatch, fixtures):
    def missing():
        raise LogosError("no rdkit")

    monkeypatch.setattr(chem, "rdkit_chem", missing)
    assert not chem.has_rdkit()
    reactants, reagents, products = chem.strip_atom_maps("[CH3:1][OH:2].[Na+]>O>[CH3:1][O:2]C")
    assert (reactants, reagents, products) == (["[CH3][OH]", "[Na+]"], ["O"], ["[CH3][O]C"])
    row = uspto(fixtures)[0]
    reactants, _, products = chem.strip_atom_maps(row["rxn_mapped"])
    monkeypatch.undo()
    assert sorted(chem.canonical_smiles(s) for s in reactants) == sorted(
        row["reactants_canonical"].split(".")
    )
    assert chem.canonical_smiles(products[0]) == row["product_canonical"]


def test_missing_rdkit_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "rdkit" or name.startswith("rdkit."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(LogosError, match=r"pip install 'logos_jax\[chem\]'"):
        chem.canonical_smiles("CCO")

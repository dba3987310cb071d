"""One raw input record → one layout object / grammar sequence (used by the corpus builder and CLI).

Raw formats by layout:

* ``protein``, ``antibody``: a sequence string (whitespace removed, upper-cased, one trailing stop
  ``*`` dropped) or ``{"sequence": ...}``.
* ``molecule``: a SMILES line (the first whitespace-separated field, so ``.smi`` files with names work)
  or ``{"smiles": ...}``.
* ``reaction``, ``retro``: reaction SMILES ``reactants>reagents>products`` (first field of the line), or
  a dict with ``rxn_smiles`` / ``rxn_mapped`` / ``reaction``. Atom maps are stripped
  (``chem.strip_atom_maps``: RDKit when installed, else a regex), each side is split on ``.``, reagents
  are dropped, and there must be exactly one product. ``retro`` writes product → reactants.
* ``material``: MOF JSON ``{"nodes": [...], "linkers": [...]}`` (several nodes are joined with ``.``).
* ``pocket``, ``pocket-smiles``, ``transformation``, ``search``, ``complex1/2/3``: a JSON object with the
  protein as ``sequence`` (or ``chains`` + ``chain``; without ``chain`` the chain with the most
  contacts is used), the pocket as 0-based ``pocket`` indices or as ``contacts`` / ``pocket_le8A``
  (``[{"seq_index", "min_dist", "chain"?}]``, filtered by ``contact_rule``; the ``pockets.jsonl``
  format), and for complexes the ligand SMILES as ``ligand``.

Bad input raises ``GrammarError`` with the reason.
"""

from __future__ import annotations

import json
import random
from typing import Any

from logos_jax.grammar import chem
from logos_jax.grammar.layouts import LAYOUTS, AnyLayout, Complex
from logos_jax.grammar.structure import DEFAULT_CONTACT_RULE, ContactRule
from logos_jax.grammar.validate import GrammarError

_DICT_LAYOUTS = {"material", "pocket", "pocket-smiles", "transformation", "search"}
_DICT_LAYOUTS |= {"complex1", "complex2", "complex3"}


def encode_record(
    layout: str,
    raw: str | dict,
    *,
    rng: random.Random | None = None,
    randomize_smiles: bool = False,
    contact_rule: ContactRule = DEFAULT_CONTACT_RULE,
) -> str:
    """The grammar sequence of one raw record (formats in the module docstring).

    ``randomize_smiles`` writes every molecule (not metal nodes) as a random SMILES drawn from
    ``rng`` (default ``random.Random(0)``; needs RDKit).
    """
    return make_layout(
        layout, raw, rng=rng, randomize_smiles=randomize_smiles, contact_rule=contact_rule
    ).encode()


def make_layout(
    layout: str,
    raw: str | dict,
    *,
    rng: random.Random | None = None,
    randomize_smiles: bool = False,
    contact_rule: ContactRule = DEFAULT_CONTACT_RULE,
) -> AnyLayout:
    """The layout object of one raw record (what ``encode_record`` encodes)."""
    if layout not in LAYOUTS:
        raise GrammarError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    cls, fixed = LAYOUTS[layout]
    record = _as_record(layout, raw)
    rand = _randomizer(rng or random.Random(0)) if randomize_smiles else (lambda s: s)

    if layout in ("protein", "antibody"):
        return cls(_clean_sequence(_field(record, "sequence")))
    if layout == "molecule":
        return cls(rand(_first_field(_field(record, "smiles"))))
    if layout in ("reaction", "retro"):
        reactants, product = _reaction(record)
        reactants = tuple(rand(r) for r in reactants)
        if layout == "reaction":
            return cls(reactants, rand(product))
        return cls(rand(product), reactants)
    if layout == "material":
        nodes = _string_list(record, "nodes")
        return cls(".".join(nodes), tuple(rand(s) for s in _string_list(record, "linkers")))

    sequence, pocket = _protein_and_pocket(record, contact_rule)
    if cls is Complex:
        ligand = rand(_field(record, "ligand"))
        return cls(sequence, ligand, pocket if fixed["level"] > 1 else (), **fixed)
    return cls(sequence, pocket, **fixed)


def _as_record(layout: str, raw: Any) -> Any:
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str):
        raise GrammarError(f"a record must be a string or a dict, got {type(raw).__name__}")
    if layout in _DICT_LAYOUTS or raw.lstrip().startswith("{"):
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as err:
            raise GrammarError(f"the {layout} layout needs a JSON object: {err}") from None
        if not isinstance(record, dict):
            raise GrammarError(f"the {layout} layout needs a JSON object")
        return record
    return raw


def _field(record: Any, key: str) -> Any:
    if isinstance(record, str):
        return record
    if key not in record:
        raise GrammarError(f"record has no {key!r} field (fields: {', '.join(record) or 'none'})")
    return record[key]


def _first_field(line: Any) -> str:
    if not isinstance(line, str) or not line.split():
        raise GrammarError("empty record")
    return line.split()[0]


def _clean_sequence(sequence: Any) -> str:
    if not isinstance(sequence, str):
        raise GrammarError(f"sequence must be a string, got {type(sequence).__name__}")
    cleaned = "".join(sequence.split()).upper()
    return cleaned[:-1] if cleaned.endswith("*") else cleaned


def _string_list(record: dict, key: str) -> list[str]:
    values = _field(record, key)
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise GrammarError(f"{key!r} must be a non-empty list of SMILES strings")
    return values


def _reaction(record: Any) -> tuple[list[str], str]:
    if isinstance(record, dict):
        key = next((k for k in ("rxn_smiles", "rxn_mapped", "reaction") if k in record), None)
        if key is None:
            raise GrammarError(
                "reaction record needs an 'rxn_smiles', 'rxn_mapped' or 'reaction' field"
            )
        record = record[key]
    try:
        reactants, _reagents, products = chem.strip_atom_maps(_first_field(record))
    except ValueError as err:
        raise GrammarError(f"bad reaction SMILES: {err}") from None
    if len(products) != 1:
        raise GrammarError(f"reaction has {len(products)} products; the layouts have exactly one")
    if not reactants:
        raise GrammarError("reaction has no reactants")
    return reactants, products[0]


def _protein_and_pocket(record: dict, rule: ContactRule) -> tuple[str, tuple[int, ...]]:
    contacts = record.get("contacts", record.get("pocket_le8A"))
    chain = record.get("chain")
    if "sequence" in record:
        sequence = record["sequence"]
    elif "chains" in record:
        chains = record["chains"]
        if chain is None:
            chain = _busiest_chain(chains, contacts or [], rule)
        if chain not in chains:
            raise GrammarError(f"chain {chain!r} not in the record (chains: {', '.join(chains)})")
        sequence = chains[chain]
    else:
        raise GrammarError("record needs a 'sequence' (or 'chains') field")
    if "pocket" in record:
        pocket = record["pocket"]
        if not isinstance(pocket, list):
            raise GrammarError("'pocket' must be a list of 0-based residue indices")
    elif contacts is not None:
        pocket = [
            c["seq_index"] for c in _selected(contacts, rule) if c.get("chain", chain) == chain
        ]
    else:
        raise GrammarError("record needs a 'pocket' (indices) or 'contacts' field")
    return _clean_sequence(sequence), tuple(pocket)


def _selected(contacts: list[dict], rule: ContactRule) -> list[dict]:
    if rule.rule != "distance" or rule.cutoff is None:
        raise GrammarError(
            "records carry only minimum distances: use a distance contact rule with a cutoff "
            "(the vdw rule needs the structure: logos grammar contacts)"
        )
    try:
        return [c for c in contacts if float(c["min_dist"]) <= rule.cutoff]
    except (KeyError, TypeError, ValueError) as err:
        raise GrammarError(f"contacts need 'seq_index' and 'min_dist': {err}") from None


def _busiest_chain(chains: dict, contacts: list[dict], rule: ContactRule) -> str:
    counts = {c: 0 for c in chains}
    for c in _selected(contacts, rule):
        if c.get("chain") in counts:
            counts[c["chain"]] += 1
    return max(counts, key=lambda c: counts[c]) if counts else ""


def _randomizer(rng: random.Random):
    def rand(smiles: str) -> str:
        try:
            return chem.randomized_smiles(smiles, rng)
        except ValueError as err:
            raise GrammarError(str(err)) from None

    return rand

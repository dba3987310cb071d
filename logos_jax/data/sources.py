"""Raw-record readers, one per source file format, for the corpus builder.

Each reader yields ``RawRecord``s in file order. A line that cannot be read is yielded with ``error``
set (the builder counts it as a reject) so one bad line never stops a build. Formats:

* ``smiles``: one SMILES a line (a second whitespace field, a name, is ignored);
* ``fasta``: ``>header`` + sequence lines; the record is the sequence (``raw_text.fasta_records``);
* ``csv``: a header row (``raw_text.CsvRows``); ``template`` builds the record from the columns, e.g.
  ``"{reactants_canonical}>>{product_canonical}"``;
* ``jsonl``: one JSON object a line; ``field`` picks one value (a string record), ``fields`` keeps a
  dict of several (e.g. MOF ``nodes`` + ``linkers``); neither keeps the whole object;
* ``chains``: JSON lines with a ``chains`` mapping ``{chain_id: sequence}``; one record per chain;
* ``pockets``: the ``pockets.jsonl`` format (``chains``, ``pocket_le8A`` contacts with ``min_dist``,
  ``ligand_smiles``); one record ``{"sequence", "pocket", "ligand"}`` per chain with at least one
  residue within ``cutoff`` Å (default 4.5) of the ligand;
* ``structures``: JSON lines ``{"file": "x.pdb", "ligand": "RES", "ligand_smiles"?: ..., "chain"?: ...}``
  naming PDB/mmCIF complexes (paths relative to the list). The structure is parsed in the builder's
  worker processes (``structure_record``, biotite): contacts by ``contact_rule`` (``distance`` |
  ``vdw``) and ``cutoff``, the chain with most contacts unless ``chain`` is given, the ligand SMILES
  from the Chemical Component Dictionary unless ``ligand_smiles`` is given. A file that cannot be
  parsed is a reject ("unparsable structure").
  Records of one structure share a split group, so a complex never straddles train and eval.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from logos_jax.errors import LogosError
from logos_jax.jsonl_io import json_objects
from logos_jax.raw_text import NOT_TEXT, CsvRows, fasta_records
from logos_jax.validate import text_lines

FORMATS = ("smiles", "fasta", "csv", "jsonl", "chains", "pockets", "structures")


@dataclasses.dataclass(frozen=True)
class RawRecord:
    """One raw input record. ``group`` decides the train/eval split (equal groups, same split)."""

    key: str
    raw: str | dict | None
    group: str
    error: str | None = None


def _record(key: str, raw: str | dict) -> RawRecord:
    group = raw if isinstance(raw, str) else json.dumps(raw, sort_keys=True)
    return RawRecord(key, raw, group)


def _bad_bytes(key: str) -> RawRecord:
    return RawRecord(key, None, key, NOT_TEXT)


def _smiles(path: Path, **_: Any) -> Iterator[RawRecord]:
    for n, line in text_lines(path):
        if line is None:
            yield _bad_bytes(f"{path.name}:{n}")
        elif line.strip():
            yield _record(f"{path.name}:{n}", line.split()[0])


def _fasta(path: Path, **_: Any) -> Iterator[RawRecord]:
    for n, sequence in fasta_records(text_lines(path)):
        key = f"{path.name}:{n}"
        yield _bad_bytes(key) if sequence is None else _record(key, sequence)


def _csv(path: Path, *, template: str | None = None, **_: Any) -> Iterator[RawRecord]:
    if not template:
        raise LogosError(f"{path}: a csv source needs a 'template' such as '{{col_a}}>>{{col_b}}'")
    for n, row, problem in CsvRows(text_lines(path)):
        key = f"{path.name}:{n}"
        if row is None:
            yield RawRecord(key, None, key, problem)
            continue
        try:
            yield _record(key, template.format(**row))
        except (KeyError, IndexError, ValueError, AttributeError) as err:
            yield RawRecord(key, None, key, f"csv row does not fit the template: {err}")


def _json_lines(path: Path) -> Iterator[tuple[str, dict | None, str | None]]:
    for n, row, problem in json_objects(path):
        yield f"{path.name}:{n}", row, problem


def _jsonl(
    path: Path, *, field: str | None = None, fields: list[str] | None = None, **_: Any
) -> Iterator[RawRecord]:
    for key, row, error in _json_lines(path):
        if error:
            yield RawRecord(key, None, key, error)
        elif field is not None:
            if isinstance(row.get(field), str):
                yield _record(key, row[field])
            else:
                yield RawRecord(key, None, key, f"no string field {field!r}")
        elif fields is not None:
            missing = [k for k in fields if k not in row]
            if missing:
                yield RawRecord(key, None, key, f"missing fields {missing}")
            else:
                yield _record(key, {k: row[k] for k in fields})
        else:
            yield _record(key, row)


def _chains(path: Path, **_: Any) -> Iterator[RawRecord]:
    for key, row, error in _json_lines(path):
        if error or not isinstance(row.get("chains"), dict):
            yield RawRecord(key, None, key, error or "no 'chains' mapping")
            continue
        for chain, sequence in row["chains"].items():
            if isinstance(sequence, str):
                yield _record(f"{key}:{chain.strip() or '_'}", sequence)
            else:
                yield RawRecord(f"{key}:{chain}", None, key, f"chain {chain!r} is not a string")


def _pockets(path: Path, *, cutoff: float = 4.5, **_: Any) -> Iterator[RawRecord]:
    for key, row, error in _json_lines(path):
        group = str((row or {}).get("file", key))
        if error or not isinstance(row.get("chains"), dict) or "pocket_le8A" not in row:
            yield RawRecord(key, None, group, error or "needs 'chains' and 'pocket_le8A'")
            continue
        contacts = row["pocket_le8A"]
        if not isinstance(contacts, list) or not all(_is_contact(c) for c in contacts):
            yield RawRecord(
                key, None, group, "pocket_le8A must be a list of {chain, seq_index, min_dist}"
            )
            continue
        for chain, sequence in row["chains"].items():
            pocket = sorted(
                c["seq_index"]
                for c in contacts
                if c.get("chain") == chain and float(c.get("min_dist", "inf")) <= cutoff
            )
            if pocket:
                raw = {"sequence": sequence, "pocket": pocket}
                if "ligand_smiles" in row:
                    raw["ligand"] = row["ligand_smiles"]
                yield RawRecord(f"{group}:{chain}", raw, group)


def _is_contact(c: Any) -> bool:
    number = (int, float)
    return (
        isinstance(c, dict)
        and isinstance(c.get("seq_index"), int)
        and not isinstance(c.get("seq_index"), bool)
        and isinstance(c.get("min_dist", 0.0), number)
        and not isinstance(c.get("min_dist", 0.0), bool)
    )


def _structures(
    path: Path, *, cutoff: float = 4.5, contact_rule: str = "distance", **_: Any
) -> Iterator[RawRecord]:
    for key, row, error in _json_lines(path):
        if error or not isinstance(row.get("file"), str) or not isinstance(row.get("ligand"), str):
            yield RawRecord(key, None, key, error or "needs 'file' and 'ligand' (residue name)")
            continue
        raw = {
            **row,
            "file": str(path.parent / row["file"]),
            "cutoff": cutoff,
            "rule": contact_rule,
        }
        yield RawRecord(f"{row['file']}:{row['ligand']}", raw, row["file"])


def structure_record(raw: dict) -> dict:
    """A ``structures`` record -> ``{"sequence", "pocket", "ligand"}`` (parses the file; slow)."""
    from logos_jax.grammar.structure import chain_sequences, ligand_contacts, ligand_smiles

    contacts = ligand_contacts(raw["file"], raw["ligand"], cutoff=raw["cutoff"], rule=raw["rule"])
    sequences = chain_sequences(raw["file"])
    if not contacts:
        raise LogosError(f"no protein residue within the contact rule of {raw['ligand']}")
    chain = raw.get("chain") or max(sequences, key=lambda c: sum(k.chain == c for k in contacts))
    return {
        "sequence": sequences[chain],
        "pocket": [k.seq_index for k in contacts if k.chain == chain],
        "ligand": raw.get("ligand_smiles") or ligand_smiles(raw["file"], raw["ligand"]),
    }


_READERS = {
    "smiles": _smiles,
    "fasta": _fasta,
    "csv": _csv,
    "jsonl": _jsonl,
    "chains": _chains,
    "pockets": _pockets,
    "structures": _structures,
}


def read_source(path: Path, fmt: str, options: dict[str, Any]) -> Iterator[RawRecord]:
    """The records of one source file in file order; ``options`` are the format's keys above."""
    if fmt not in _READERS:
        raise LogosError(f"unknown source format {fmt!r}; choose from {', '.join(FORMATS)}")
    if not path.is_file():
        raise LogosError(f"source file {path} not found; fix: correct 'path' in the data config")
    return _READERS[fmt](path, **options)

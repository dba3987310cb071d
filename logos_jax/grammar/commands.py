"""`logos grammar`: encode raw records into grammar sequences, parse sequences back, list contacts.

Subcommands: ``encode`` (raw records → one sequence per line), ``parse`` (sequences → one JSON object per
line), ``contacts`` (a protein–ligand structure → contact residues and the pocket/complex encoding).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from logos_jax.errors import LogosError
from logos_jax.files import atomic_open, refuse_overwrite_input
from logos_jax.grammar.layouts import LAYOUT_NAMES
from logos_jax.raw_text import CsvRows, fasta_records
from logos_jax.validate import MALFORMED_RECORD, decode_line, text_lines
from logos_jax.validate import number as cli_number

_STRUCTURE_LAYOUTS = ("complex1", "complex2", "complex3", "pocket", "pocket-smiles")
_SMILES_FIELDS = ("smiles", "product", "reactants", "linkers", "ligand_smiles")


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="grammar_command", metavar="SUBCOMMAND")
    fmt = argparse.ArgumentDefaultsHelpFormatter

    enc = sub.add_parser(
        "encode",
        help="raw records (SMILES, reaction SMILES, sequences, JSON) -> grammar sequences",
        description="Encode one raw record per input line (or FASTA record) into one grammar sequence "
        "per output line. Rejected records are reported on stderr as 'line N: reason'; the exit status "
        "is 0 when at least one record was encoded.",
        formatter_class=fmt,
    )
    enc.add_argument(
        "--layout", required=True, choices=LAYOUT_NAMES, help="grammar layout to write"
    )
    enc.add_argument("--input", type=Path, metavar="FILE", help="input file; stdin when omitted")
    enc.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help="output file, written atomically; stdout when omitted",
    )
    enc.add_argument(
        "--fasta", action="store_true", help="input is FASTA (protein/antibody layouts)"
    )
    enc.add_argument(
        "--csv-column",
        metavar="NAME",
        help="input is CSV with a header; encode this column (e.g. rxn_mapped for USPTO files)",
    )
    enc.add_argument("--randomize-smiles", action="store_true", help="write random SMILES (RDKit)")
    enc.add_argument("--seed", type=int, default=0, help="seed for --randomize-smiles")
    enc.add_argument(
        "--check-smiles",
        choices=("sanitize", "parse", "off"),
        default=None,
        help="reject records whose SMILES RDKit cannot sanitize / parse (default: sanitize when "
        "RDKit is installed, parse for materials, off without RDKit)",
    )
    enc.add_argument(
        "--cutoff",
        type=cli_number(low=0, low_open=True),
        default=4.5,
        help="contact distance cutoff in Å for records that carry contacts with min_dist",
    )
    enc.set_defaults(func=run_encode)

    par = sub.add_parser(
        "parse",
        help="grammar sequences -> JSON (layout and parts, or error and position)",
        description="Parse one grammar sequence per input line and print one JSON object per line: "
        "the layout and its parts, or the error, its character position and whether the text is a "
        "truncated prefix. SMILES are canonicalised when RDKit is installed (unparsable ones are kept "
        "and listed under 'invalid_smiles').",
        formatter_class=fmt,
    )
    par.add_argument("--input", type=Path, metavar="FILE", help="input file; stdin when omitted")
    par.add_argument("--raw-smiles", action="store_true", help="do not canonicalise SMILES")
    par.set_defaults(func=run_parse)

    con = sub.add_parser(
        "contacts",
        help="protein-ligand structure -> contact residues and the complex/pocket encoding",
        description="List the protein residues in contact with a ligand (heavy atoms, first altloc) "
        "and print the grammar encoding of the complex or pocket.",
        formatter_class=fmt,
    )
    con.add_argument("structure", type=Path, help="PDB or mmCIF file")
    con.add_argument(
        "--ligand", required=True, metavar="RESNAME", help="ligand residue name, e.g. XK2"
    )
    con.add_argument(
        "--cutoff",
        type=cli_number(low=0, low_open=True),
        default=None,
        help="distance cutoff in Å; 4.5 when omitted with --rule distance",
    )
    con.add_argument(
        "--rule",
        choices=("distance", "vdw"),
        default="distance",
        help="distance: any heavy atom within --cutoff; vdw: within the vdW radii sum + 0.5 Å "
        "(--cutoff then sets that tolerance)",
    )
    con.add_argument(
        "--chain", help="protein chain to encode; the one with most contacts when omitted"
    )
    con.add_argument("--layout", choices=_STRUCTURE_LAYOUTS, default="complex2", help="encoding")
    con.add_argument(
        "--smiles", help="ligand SMILES; from the Chemical Component Dictionary when omitted"
    )
    con.set_defaults(func=run_contacts)

    parser.set_defaults(func=None)


def _input_lines(path: Path | None) -> Iterator[tuple[int, str | None]]:
    """``(line number, text or None)`` of the input file or stdin; None: a line of bad bytes."""
    if path is None:
        if not hasattr(sys.stdin, "buffer"):  # a text stream without bytes (tests, notebooks)
            return enumerate(sys.stdin, 1)
        return ((n, decode_line(raw)) for n, raw in enumerate(sys.stdin.buffer, 1))
    if not path.is_file():
        raise LogosError(f"input file not found: {path}")
    return text_lines(path)


def _records(
    lines: Iterator[tuple[int, str | None]], *, fasta: bool, csv_column: str | None
) -> Iterator[tuple[int, str | None]]:
    """(line number, raw record or None) pairs; a FASTA record is numbered by its header line.
    None: the record holds bytes that are not UTF-8 text."""
    if csv_column is not None:
        reader = CsvRows(lines)
        try:
            fields = reader.fieldnames
        except csv.Error as err:
            raise LogosError(f"cannot read the CSV header: {err}") from None
        if fields is None or csv_column not in fields:
            raise LogosError(f"CSV column {csv_column!r} not found (columns: {fields})")
        for number, row, _ in reader:
            yield number, None if row is None else row[csv_column] or ""
        return
    if not fasta:
        for number, line in lines:
            if line is None or line.strip():
                yield number, line if line is None else line.rstrip("\n")
        return
    yield from fasta_records(lines)


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    """stdout, or a file that replaces ``path`` only when everything was written (``atomic_open``)."""
    if path is None:
        yield sys.stdout
        return
    if path.is_dir():
        raise LogosError(f"--output {path} is a folder; give a file path")
    with atomic_open(path) as f:
        yield f


def run_encode(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from logos_jax.grammar.chem import has_rdkit, smiles_checker
    from logos_jax.grammar.records import encode_record
    from logos_jax.grammar.structure import ContactRule
    from logos_jax.grammar.validate import GrammarError

    rng = random.Random(args.seed)
    rule = ContactRule("distance", args.cutoff)
    mode = args.check_smiles
    if mode is None:  # chemistry checks when RDKit is there; MOF nodes rarely sanitise
        mode = "off" if not has_rdkit() else "parse" if args.layout == "material" else "sanitize"
    smiles_problem = smiles_checker(mode)
    encoded = rejected = 0
    if args.output is not None:
        refuse_overwrite_input(args.output, {"--input": args.input})
    lines = _input_lines(args.input)
    with _output(args.output) as out:
        records = _records(lines, fasta=args.fasta, csv_column=args.csv_column)
        for number, raw in tqdm(records, desc="encode", unit="rec", disable=args.output is None):
            if raw is None:
                print(f"line {number}: not UTF-8 text (invalid or binary bytes)", file=sys.stderr)
                rejected += 1
                continue
            try:
                text = encode_record(
                    args.layout,
                    raw,
                    rng=rng,
                    randomize_smiles=args.randomize_smiles,
                    contact_rule=rule,
                )
            except (GrammarError, *MALFORMED_RECORD) as err:
                print(f"line {number}: {err}", file=sys.stderr)
                rejected += 1
                continue
            problem = smiles_problem(text)
            if problem is not None:
                print(f"line {number}: {problem}", file=sys.stderr)
                rejected += 1
                continue
            out.write(text + "\n")
            encoded += 1
        if not encoded:  # inside the block: an existing output file is left as it was
            what = "every record was rejected" if rejected else "the input holds no record"
            raise LogosError(f"nothing encoded: {what}")
    if args.output is not None:
        print(f"encoded {encoded}, rejected {rejected} -> {args.output}", file=sys.stderr)
    return 0


def canonical_parts(parts: dict[str, Any]) -> dict[str, Any]:
    """``parts`` (from ``Parsed.to_json``) with every SMILES field RDKit-canonical; the SMILES RDKit
    cannot parse are kept and listed under ``invalid_smiles``."""
    from logos_jax.grammar.chem import canonical_smiles

    out = dict(parts)
    invalid: list[str] = []

    def canon(smiles: str) -> str:
        result = canonical_smiles(smiles)
        if result is None:
            invalid.append(smiles)
        return result or smiles

    for key in _SMILES_FIELDS:
        if isinstance(out.get(key), str):
            out[key] = canon(out[key])
        elif isinstance(out.get(key), list):
            out[key] = [canon(s) for s in out[key]]
    if invalid:
        out["invalid_smiles"] = invalid
    return out


def run_parse(args: argparse.Namespace) -> int:
    from logos_jax.grammar.chem import has_rdkit
    from logos_jax.grammar.parse import parse

    canonical = not args.raw_smiles and has_rdkit()
    for number, line in _input_lines(args.input):
        if line is None:
            print(json.dumps({"error": "not UTF-8 text (invalid or binary bytes)", "line": number}))
            continue
        if line.strip():
            result = parse(line.rstrip("\n")).to_json()
            if canonical and "error" not in result:
                result = canonical_parts(result)
            print(json.dumps(result))
    return 0


def run_contacts(args: argparse.Namespace) -> int:
    from logos_jax.grammar import structure

    default = 4.5 if args.rule == "distance" else None
    rule = structure.ContactRule(args.rule, args.cutoff if args.cutoff is not None else default)
    contacts = structure.ligand_contacts(
        args.structure, args.ligand, cutoff=rule.cutoff, rule=rule.rule, chain=args.chain
    )
    print(f"{'chain':<6}{'residue':>8}  {'name':<5}{'aa':<3}{'index':>6}{'min_dist':>10}")
    for c in contacts:
        residue = f"{c.res_num}{c.icode}"
        print(
            f"{c.chain or '-':<6}{residue:>8}  {c.resname:<5}{c.aa:<3}{c.seq_index:>6}{c.min_dist:>10.2f}"
        )
    if rule.rule == "distance":
        how = f"heavy atoms within {rule.cutoff} Å"
    else:
        how = f"within the vdW radii sum + {rule.cutoff if rule.cutoff is not None else structure.VDW_TOLERANCE} Å"
    print(f"{len(contacts)} contact residues ({how})")
    if args.layout.startswith("complex"):
        obj = structure.complex_from_structure(
            args.structure,
            args.ligand,
            level=int(args.layout[-1]),
            chain=args.chain,
            rule=rule,
            smiles=args.smiles,
        )
    else:
        obj = structure.pocket_from_structure(
            args.structure,
            args.ligand,
            expanded=args.layout == "pocket-smiles",
            chain=args.chain,
            rule=rule,
        )
    print(obj.encode())
    return 0

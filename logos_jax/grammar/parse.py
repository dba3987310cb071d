"""Grammar sequence → layout object, for whole sequences and for a model's partial or broken output.

``parse(text)`` never raises: it returns a ``Parsed`` with either the layout object or a
``ParseError`` carrying the character offset where the text stops making sense and the reason.
``ParseError.truncated`` is True when the text is a valid *prefix* that was cut short (an unclosed
block, an operator with nothing after it, half a tag at the end): more text could still complete it.

The helpers below ``parse`` pull parts out of completions without requiring the whole sequence to be
valid (what a sampler or an evaluator sees): ``parse_blocks``, ``molecule_blocks``,
``retro_reactants``, ``annotated_protein``, ``material_parts``, ``completion_smiles``; and
``allowed_next_tags`` says which tags may follow a prefix (for tag masks in constrained decoding).

Pocket blocks hold either a residue letter or (SMILES-expanded layouts) the SMILES of one amino acid
from ``chem.AMINO_ACID_SMILES``; a SMILES not in the table is also matched after RDKit
canonicalisation when RDKit is installed.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

from logos_jax.grammar import chem, tags
from logos_jax.grammar.chem import SMILES_TO_AMINO_ACID, molecule_blocks
from logos_jax.grammar.layouts import (
    Antibody,
    AnyLayout,
    BindingSiteSearch,
    Complex,
    ForwardReaction,
    Material,
    Molecule,
    PocketProtein,
    Protein,
    Retrosynthesis,
    Transformation,
    to_dict,
)
from logos_jax.grammar.validate import GrammarError, first_bad_residue, smiles_problem

_KNOWN_TAGS = frozenset(tags.ALL_TAGS)


@dataclasses.dataclass(frozen=True)
class ParseError:
    """Where (``position``, a character offset into the text) and why parsing stopped."""

    position: int
    reason: str
    truncated: bool = False


@dataclasses.dataclass(frozen=True)
class Parsed:
    """The result of ``parse``: exactly one of ``objects`` / ``error`` is set."""

    layout: str | None
    objects: AnyLayout | None
    error: ParseError | None

    @property
    def complete(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        """``{"layout": ..., <parts>}`` or ``{"error": reason, "position": n, "truncated": bool}``."""
        if self.error is not None:
            err = self.error
            return {"error": err.reason, "position": err.position, "truncated": err.truncated}
        assert self.objects is not None
        return to_dict(self.objects)


class _Fail(Exception):
    def __init__(self, position: int, reason: str, truncated: bool = False):
        super().__init__(reason)
        self.error = ParseError(position, reason, truncated)


@dataclasses.dataclass(frozen=True)
class _Token:
    kind: str  # "tag" or "text"
    value: str
    pos: int


def _lex(text: str) -> tuple[list[_Token], _Fail | None]:
    """Tag and text tokens up to the first malformed ``<...>``, and that problem (None if none).

    The problem is raised only when the parser reaches it, so an earlier error is reported first.
    """
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        lt = text.find("<", i)
        if lt < 0:
            tokens.append(_Token("text", text[i:], i))
            break
        if lt > i:
            tokens.append(_Token("text", text[i:lt], i))
        gt = text.find(">", lt)
        nxt = text.find("<", lt + 1)
        if gt < 0 or (0 <= nxt < gt):
            rest = text[lt : nxt if nxt >= 0 else None]
            if gt < 0 and nxt < 0 and any(t.startswith(rest) for t in _KNOWN_TAGS):
                return tokens, _Fail(lt, f"text ends inside a tag ({rest!r})", truncated=True)
            return tokens, _Fail(lt, f"unclosed '<' ({rest[:20]!r} is not a tag)")
        tag = text[lt : gt + 1]
        if tag not in _KNOWN_TAGS:
            return tokens, _Fail(lt, f"unknown tag {tag}")
        tokens.append(_Token("tag", tag, lt))
        i = gt + 1
    return tokens, None


@functools.cache
def _canonical_lookup() -> dict[str, str] | None:
    if not chem.has_rdkit():
        return None
    return {chem.canonical_smiles(s): aa for s, aa in SMILES_TO_AMINO_ACID.items()}


def _residue_from_smiles(smiles: str) -> str | None:
    if smiles in SMILES_TO_AMINO_ACID:
        return SMILES_TO_AMINO_ACID[smiles]
    lookup = _canonical_lookup()
    if lookup is None or smiles_problem(smiles) is not None:
        return None
    return lookup.get(chem.canonical_smiles(smiles) or "")


@dataclasses.dataclass(frozen=True)
class _ProteinBlock:
    sequence: str
    pocket: tuple[int, ...]
    expanded: bool | None  # None when there is no pocket block
    pos: int


@dataclasses.dataclass(frozen=True)
class _Block:
    tag: str
    content: Any
    pos: int


class _Parser:
    """Recursive descent over the tag/text tokens of one sequence."""

    def __init__(self, text: str):
        self.text = text
        self.tokens, self.lex_error = _lex(text)
        self.i = 0

    # -- token access -------------------------------------------------------------------------
    def peek(self) -> _Token | None:
        """The next token; None at the end of the text; the lexer's error where it stopped."""
        if self.i < len(self.tokens):
            return self.tokens[self.i]
        if self.lex_error is not None:
            raise self.lex_error
        return None

    def at_end(self) -> bool:
        return self.peek() is None

    def next(self, expecting: str) -> _Token:
        tok = self.peek()
        if tok is None:
            raise _Fail(len(self.text), f"text ends before {expecting}", truncated=True)
        self.i += 1
        return tok

    def expect_tag(self, tag: str, context: str) -> _Token:
        tok = self.next(f"{tag} ({context})")
        if tok.kind != "tag" or tok.value != tag:
            raise _Fail(tok.pos, f"expected {tag} ({context}), found {_describe(tok)}")
        return tok

    # -- blocks --------------------------------------------------------------------------------
    def simple_block(self, open_tag: str, kind: str) -> _Block:
        """``open text close`` where text is residues (kind "residues") or a SMILES (kind "smiles")."""
        start = self.expect_tag(open_tag, "block start")
        close = tags.OPEN_TO_CLOSE[open_tag]
        tok = self.next(f"the end of the {open_tag} block opened at {start.pos}")
        if tok.kind == "tag":
            if tok.value == close:
                raise _Fail(tok.pos, f"empty {open_tag} block")
            raise _Fail(tok.pos, f"unexpected {tok.value} inside the {open_tag} block")
        _check_content(tok, kind)
        self.expect_tag(close, f"to close the {open_tag} block opened at {start.pos}")
        return _Block(open_tag, tok.value, start.pos)

    def protein_block(self) -> _ProteinBlock:
        start = self.expect_tag(tags.PROTEIN_S, "block start")
        residues: list[str] = []
        pocket: list[int] = []
        expanded: bool | None = None
        while True:
            tok = self.next(f"{tags.PROTEIN_E} to close the protein opened at {start.pos}")
            if tok.kind == "text":
                _check_content(tok, "residues")
                residues.extend(tok.value)
            elif tok.value == tags.POCKET_S:
                aa, is_smiles = self.pocket_block(tok)
                if expanded is not None and expanded != is_smiles:
                    raise _Fail(tok.pos, "pocket blocks mix residue letters and amino-acid SMILES")
                expanded = is_smiles
                pocket.append(len(residues))
                residues.append(aa)
            elif tok.value == tags.PROTEIN_E:
                if not residues:
                    raise _Fail(tok.pos, f"empty {tags.PROTEIN_S} block")
                return _ProteinBlock("".join(residues), tuple(pocket), expanded, start.pos)
            else:
                raise _Fail(tok.pos, f"unexpected {tok.value} inside the protein block")

    def pocket_block(self, start: _Token) -> tuple[str, bool]:
        tok = self.next(f"the end of the pocket block opened at {start.pos}")
        if tok.kind == "tag":
            what = "empty" if tok.value == tags.POCKET_E else f"unexpected {tok.value} in"
            raise _Fail(tok.pos, f"{what} pocket block")
        content = tok.value
        if self.at_end() and smiles_problem(content) is None:  # a letter or the start of a SMILES
            raise _Fail(len(self.text), "text ends inside a pocket block", truncated=True)
        if len(content) == 1:
            _check_content(tok, "residues")
            aa, is_smiles = content, False
        else:
            aa = _residue_from_smiles(content)
            if aa is None:
                raise _Fail(
                    tok.pos, f"pocket block {content!r} is not one residue or amino-acid SMILES"
                )
            is_smiles = True
        self.expect_tag(tags.POCKET_E, f"to close the pocket block opened at {start.pos}")
        return aa, is_smiles

    def molecules(self) -> list[_Block]:
        blocks = [self.simple_block(tags.MOLECULE_S, "smiles")]
        while (tok := self.peek()) is not None and tok.value == tags.MOLECULE_S:
            blocks.append(self.simple_block(tags.MOLECULE_S, "smiles"))
        return blocks

    def material(self) -> Material:
        start = self.expect_tag(tags.MATERIAL_S, "block start")
        tok = self.peek()
        if tok is None:
            raise _Fail(len(self.text), "text ends before the metal block", truncated=True)
        if tok.value != tags.METAL_S:
            raise _Fail(
                tok.pos, f"a material starts with a {tags.METAL_S} block, found {_describe(tok)}"
            )
        metal = self.simple_block(tags.METAL_S, "smiles")
        tok = self.peek()
        if tok is None:
            raise _Fail(len(self.text), "text ends before the linker blocks", truncated=True)
        if tok.value != tags.MOLECULE_S:
            raise _Fail(
                tok.pos,
                f"a material needs a linker {tags.MOLECULE_S} block, found {_describe(tok)}",
            )
        linkers = self.molecules()
        self.expect_tag(tags.MATERIAL_E, f"to close the material opened at {start.pos}")
        return Material(metal.content, tuple(b.content for b in linkers))

    # -- whole sequences -----------------------------------------------------------------------
    def sequence(self) -> AnyLayout:
        tok = self.peek()
        if tok is None:
            raise _Fail(0, "empty sequence", truncated=True)
        if tok.kind == "text":
            raise _Fail(tok.pos, "text outside any block")
        if tok.value == tags.PROTEIN_S:
            obj = self.after_protein(self.protein_block())
        elif tok.value == tags.ANTIBODY_S:
            obj = Antibody(self.simple_block(tags.ANTIBODY_S, "residues").content)
        elif tok.value == tags.MOLECULE_S:
            obj = self.after_molecules(self.molecules())
        elif tok.value == tags.MATERIAL_S:
            obj = self.material()
        elif tok.value in tags.CLOSE_TO_OPEN:
            raise _Fail(tok.pos, f"{tok.value} with no open block")
        elif tok.value in tags.OPERATORS:
            raise _Fail(tok.pos, f"operator {tok.value} with no object before it")
        else:
            raise _Fail(tok.pos, f"{tok.value} outside its enclosing block")
        tok = self.peek()
        if tok is not None:
            raise _Fail(tok.pos, f"{_describe(tok)} after the end of the {obj.name} sequence")
        return obj

    def after_protein(self, first: _ProteinBlock) -> AnyLayout:
        tok = self.peek()
        if tok is None:
            if first.expanded is None:
                return Protein(first.sequence)
            return PocketProtein(first.sequence, first.pocket, expanded=first.expanded)
        if tok.value == tags.MOLECULE_S:
            ligand = self.simple_block(tags.MOLECULE_S, "smiles").content
            level = 1 if first.expanded is None else 3 if first.expanded else 2
            return Complex(first.sequence, ligand, first.pocket, level=level)
        if tok.value == tags.SEARCH:
            self.i += 1
            if first.pocket:
                raise _Fail(
                    first.pos, f"the protein before {tags.SEARCH} must have no pocket blocks"
                )
            second = self.protein_after_operator(tags.SEARCH)
            _same_protein(first, second)
            if second.expanded:
                raise _Fail(
                    second.pos, f"the protein after {tags.SEARCH} wraps residue letters, not SMILES"
                )
            return BindingSiteSearch(first.sequence, second.pocket)
        if tok.value == tags.TRANS:
            self.i += 1
            if first.expanded is not False:
                raise _Fail(
                    first.pos, f"the protein before {tags.TRANS} needs pocket residue letters"
                )
            second = self.protein_after_operator(tags.TRANS)
            _same_protein(first, second)
            if second.expanded is not True or second.pocket != first.pocket:
                raise _Fail(
                    second.pos,
                    f"the protein after {tags.TRANS} must wrap the same residues as SMILES",
                )
            return Transformation(first.sequence, first.pocket)
        raise _Fail(tok.pos, f"{_describe(tok)} after a protein block")

    def protein_after_operator(self, operator: str) -> _ProteinBlock:
        tok = self.peek()
        if tok is None:
            raise _Fail(len(self.text), f"text ends after {operator}", truncated=True)
        if tok.value != tags.PROTEIN_S:
            raise _Fail(
                tok.pos, f"expected {tags.PROTEIN_S} after {operator}, found {_describe(tok)}"
            )
        return self.protein_block()

    def after_molecules(self, blocks: list[_Block]) -> AnyLayout:
        smiles = tuple(b.content for b in blocks)
        tok = self.peek()
        if tok is None:
            if len(blocks) == 1:
                return Molecule(smiles[0])
            raise _Fail(
                len(self.text), f"several molecules need {tags.REACT} and a product", truncated=True
            )
        if tok.value == tags.REACT:
            self.i += 1
            if self.at_end():
                raise _Fail(len(self.text), f"text ends after {tags.REACT}", truncated=True)
            product = self.simple_block(tags.MOLECULE_S, "smiles").content
            return ForwardReaction(smiles, product)
        if tok.value == tags.REVERSE_REACT:
            if len(blocks) > 1:
                raise _Fail(
                    tok.pos, f"{tags.REVERSE_REACT} must follow exactly one product molecule"
                )
            self.i += 1
            if self.at_end():
                raise _Fail(len(self.text), f"text ends after {tags.REVERSE_REACT}", truncated=True)
            reactants = tuple(b.content for b in self.molecules())
            return Retrosynthesis(smiles[0], reactants)
        raise _Fail(tok.pos, f"{_describe(tok)} after a molecule block")


def _describe(tok: _Token) -> str:
    return tok.value if tok.kind == "tag" else f"text {tok.value[:20]!r}"


def _check_content(tok: _Token, kind: str) -> None:
    check = first_bad_residue if kind == "residues" else smiles_problem
    bad = check(tok.value)
    if bad is not None:
        raise _Fail(tok.pos + bad[0], bad[1])


def _same_protein(first: _ProteinBlock, second: _ProteinBlock) -> None:
    if first.sequence == second.sequence:
        return
    n = min(len(first.sequence), len(second.sequence))
    diff = next((i for i in range(n) if first.sequence[i] != second.sequence[i]), n)
    raise _Fail(second.pos, f"the second protein differs from the first at residue {diff}")


def parse(text: str) -> Parsed:
    """Parse one grammar sequence (see the module docstring); never raises."""
    try:
        obj = _Parser(text).sequence()
    except _Fail as fail:
        return Parsed(None, None, fail.error)
    except GrammarError as err:  # a structurally fine sequence whose parts the layout rejects
        return Parsed(None, None, ParseError(0, str(err)))
    return Parsed(obj.name, obj, None)


def allowed_next_tags(prefix: str) -> tuple[str, ...]:
    """The grammar tags that may come right after ``prefix`` (in ``ALL_TAGS`` order): those after
    which the text is still complete or a valid truncated prefix. Empty when ``prefix`` is already
    malformed. The parser decides, so a sampler's tag mask agrees with what ``parse`` accepts."""
    return tuple(
        tag for tag in tags.ALL_TAGS if (err := parse(prefix + tag).error) is None or err.truncated
    )


# ---------------------------------------------------------------------------------------------
# Tolerant extraction helpers for completions.


@dataclasses.dataclass(frozen=True)
class Block:
    """One complete top-level block: its open tag, raw inner text and ``[start, end)`` offsets."""

    tag: str
    content: str
    start: int
    end: int


def parse_blocks(text: str) -> list[Block]:
    """Every complete top-level block of ``text``, in order; stops at the first unclosed one.

    Operators and stray text between blocks are skipped; nested blocks stay in ``content``.
    """
    blocks: list[Block] = []
    opener = re.compile("|".join(re.escape(t) for t in tags.OPEN_TO_CLOSE))
    pos = 0
    while (m := opener.search(text, pos)) is not None:
        close = tags.OPEN_TO_CLOSE[m.group()]
        end = text.find(close, m.end())
        if end < 0:
            break
        blocks.append(Block(m.group(), text[m.end() : end], m.start(), end + len(close)))
        pos = end + len(close)
    return blocks


def retro_reactants(completion: str) -> list[str]:
    """Reactant SMILES of a retrosynthesis completion (the text after ``<ReverseReact>`` if present)."""
    _, _, after = completion.rpartition(tags.REVERSE_REACT)
    return molecule_blocks(after)


def annotated_protein(completion: str) -> tuple[str, tuple[int, ...]] | None:
    """``(sequence, pocket)`` of the pocket-annotated protein of a binding-site search completion.

    Takes the first protein block after ``<Search>`` (or the first one when there is no ``<Search>``);
    a completion that starts inside the block (the prompt ended with ``<ProteinS>``) is accepted. Pocket
    residues written as SMILES are mapped back to letters. None when there is no complete, valid block.
    """
    _, _, after = completion.rpartition(tags.SEARCH)
    start = after.find(tags.PROTEIN_S)
    after = tags.PROTEIN_S + after if start < 0 else after[start:]
    end = after.find(tags.PROTEIN_E)
    if end < 0:
        return None
    try:
        block = _Parser(after[: end + len(tags.PROTEIN_E)]).protein_block()
    except _Fail:
        return None
    return block.sequence, block.pocket


def material_parts(completion: str) -> tuple[str, tuple[str, ...]] | None:
    """``(metal, linkers)`` of the first complete, valid material in ``completion`` (the prompt
    ``<MaterialS>`` may be missing from it), else None."""
    start = completion.find(tags.MATERIAL_S)
    text = tags.MATERIAL_S + completion if start < 0 else completion[start:]
    end = text.find(tags.MATERIAL_E)
    if end < 0:
        return None
    try:
        material = _Parser(text[: end + len(tags.MATERIAL_E)]).material()
    except (_Fail, GrammarError):
        return None
    return material.metal, material.linkers


def completion_smiles(completion: str) -> str | None:
    """The SMILES a ligand-design completion wrote: the text before its first tag (the stop
    ``<MoleculeE>`` or anything else), or None when that is not a block-worthy SMILES."""
    smiles = completion.split("<", 1)[0].strip()
    return smiles if smiles_problem(smiles) is None else None

"""Task presets: how an input row becomes a prompt, when a sample stops, what its answer means.

One ``Task`` per LOGOS sampling interface (the released scripts' JSONL rows are
accepted unchanged) plus ``free`` (any text prompt, for a plain base model):

| task | input row | prompt | stop | samples |
|---|---|---|---|---|
| retro | ``{"test_input", "groundtruth"?, "id"?}`` | ``test_input`` | EOS | 32 |
| pocket-search | ``{"id", "text", "groundtruth"?}`` | ``text + "<ProteinS>"`` | EOS | 40 |
| ligand | ``{"id", "protein_pocket_ligand", "groundtruth"?}`` | ``protein_pocket_ligand`` | ``<MoleculeE>``, EOS | 10 |
| material | none | ``<MaterialS>`` | ``<MaterialE>``, EOS | 10,000 in all |
| free | ``{"id", "prompt"}`` | ``prompt`` | EOS | 1 |

A row without ``id`` is named by its 1-based line number. ``BadRow`` carries the reason a row is
skipped; ``Task.answer`` turns a completion into parsed objects and grammar / validity flags.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from logos_jax.grammar import completion_smiles, material_parts, parse, tags
from logos_jax.grammar.chem import canonical_smiles, has_rdkit
from logos_jax.grammar.parse import retro_reactants

_TAG_LIKE = re.compile(r"<[A-Za-z]+>")


# (parsed objects, grammatical, valid); the flags are None for the free task.
Answer = tuple[dict[str, Any], bool | None, bool | None]


class BadRow(Exception):
    """An input row that cannot be sampled (the message is the reason)."""


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One input: its id, the prompt text, the ground truth (if the row has one), extra task data."""

    id: str
    text: str
    groundtruth: Any = None
    protein: str | None = None  # pocket-search: the input protein the answer must reproduce


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    num_samples: int
    stop_tags: tuple[str, ...]
    constraint: str | None  # constraints.GRAMMARS key, "pocket", or None
    fields: tuple[str, ...]  # required input fields
    make_prompt: Callable[[dict[str, Any], str], Prompt]
    answer: Callable[[str, str], Answer]  # (prompt, completion) -> objects, grammatical, valid
    grammar: bool = True  # prompts must be grammar prefixes

    def prompt(self, row: Any, line: int) -> Prompt:
        """The ``Prompt`` of one decoded JSON row; ``BadRow`` when it does not fit this task."""
        if not isinstance(row, dict):
            raise BadRow(f"expected a JSON object, got {type(row).__name__}")
        for field in self.fields:
            if field not in row:
                raise BadRow(
                    f"missing field {field!r} (a {self.name} row needs {list(self.fields)})"
                )
            if not isinstance(row[field], str) or not row[field]:
                raise BadRow(f"field {field!r} must be a non-empty string")
        row_id = str(row["id"]) if row.get("id") is not None else str(line)
        prompt = self.make_prompt(row, row_id)
        if self.grammar:
            check_grammar_prefix(prompt.text)
        return prompt


def check_grammar_prefix(text: str) -> None:
    """``BadRow`` unless ``text`` is a valid beginning of a grammar sequence (known tags only)."""
    for match in _TAG_LIKE.finditer(text):
        if match.group() not in tags.ALL_TAGS:
            raise BadRow(f"unknown tag {match.group()} at offset {match.start()}")
    parsed = parse(text)
    if parsed.error is not None and not parsed.error.truncated:
        raise BadRow(
            f"prompt is not grammatical at offset {parsed.error.position}: {parsed.error.reason}"
        )


def _canonical(smiles: str) -> str | None:
    return canonical_smiles(smiles) if has_rdkit() else smiles


def _prompt_ending_with(field: str, tag: str) -> Callable[[dict[str, Any], str], Prompt]:
    """A prompt builder taking ``row[field]`` as it is, which must end with ``tag``."""

    def build(row: dict[str, Any], row_id: str) -> Prompt:
        text = row[field]
        if not text.endswith(tag):
            raise BadRow(f"{field} must end with {tag}")
        return Prompt(row_id, text, row.get("groundtruth"))

    return build


# ----- retrosynthesis -----
def retro_answer(prompt: str, completion: str) -> Answer:
    """Reactants (raw; canonical with stereo kept, sorted, when valid). Grammatical when the whole
    sequence parses as a retrosynthesis; valid when RDKit also reads every reactant."""
    reactants = retro_reactants(completion)
    grammatical = parse(prompt + completion).layout == "retro"
    canonical = [_canonical(s) for s in reactants]
    valid = grammatical and all(canonical)
    return (
        {
            "reactants": reactants,
            "reactants_canonical": sorted(canonical) if valid else None,
        },
        grammatical,
        valid,
    )


# ----- binding-site search -----
_SEARCH_PROMPT = re.compile(
    re.escape(tags.PROTEIN_S) + r"([A-Z]+)" + re.escape(tags.PROTEIN_E + tags.SEARCH)
)


def _pocket_prompt(row: dict[str, Any], row_id: str) -> Prompt:
    match = _SEARCH_PROMPT.fullmatch(row["text"])
    if match is None:
        raise BadRow(f"text must be {tags.PROTEIN_S}SEQUENCE{tags.PROTEIN_E}{tags.SEARCH}")
    return Prompt(row_id, row["text"] + tags.PROTEIN_S, row.get("groundtruth"), match.group(1))


def pocket_answer(prompt: str, completion: str) -> Answer:
    """0-based pocket residue indices; grammatical (and valid) when the answer is one protein block
    reproducing the input protein with only pocket insertions."""
    parsed = parse(prompt + completion)
    if parsed.layout != "search":
        return {"pocket": None}, False, False
    return {"pocket": list(parsed.objects.pocket)}, True, True


# ----- pocket ligand design -----
def ligand_answer(prompt: str, completion: str) -> Answer:
    """The ligand SMILES (and canonical form). Grammatical when a SMILES-like text is closed by
    ``<MoleculeE>``; valid when RDKit also reads it."""
    smiles = completion_smiles(completion)
    grammatical = bool(smiles) and completion.startswith(f"{smiles}{tags.MOLECULE_E}")
    canonical = _canonical(smiles) if smiles else None
    return (
        {"smiles": smiles, "smiles_canonical": canonical},
        grammatical,
        bool(grammatical and canonical),
    )


# ----- material -----
def material_answer(prompt: str, completion: str) -> Answer:
    """Metal node and linkers (linkers canonical, sorted). Grammatical when the material block is
    complete; valid when RDKit also reads every linker (node SMILES often do not sanitize, so they
    are only checked syntactically)."""
    parts = material_parts(completion)
    if parts is None:
        return {"metal": None, "linkers": None, "linkers_canonical": None}, False, False
    metal, linkers = parts
    canonical = [_canonical(s) for s in linkers]
    valid = all(canonical)
    return (
        {
            "metal": metal,
            "linkers": list(linkers),
            "linkers_canonical": sorted(canonical) if valid else None,
        },
        True,
        valid,
    )


def _free_prompt(row: dict[str, Any], row_id: str) -> Prompt:
    return Prompt(row_id, row["prompt"], row.get("groundtruth"))


def free_answer(prompt: str, completion: str) -> Answer:
    return {}, None, None


TASKS: dict[str, Task] = {
    "retro": Task(
        "retro",
        32,
        (),
        "retro",
        ("test_input",),
        _prompt_ending_with("test_input", tags.REVERSE_REACT),
        retro_answer,
    ),
    "pocket-search": Task(
        "pocket-search", 40, (), "pocket", ("id", "text"), _pocket_prompt, pocket_answer
    ),
    "ligand": Task(
        "ligand",
        10,
        (tags.MOLECULE_E,),
        "ligand",
        ("id", "protein_pocket_ligand"),
        _prompt_ending_with("protein_pocket_ligand", tags.MOLECULE_S),
        ligand_answer,
    ),
    "material": Task(
        "material",
        10_000,
        (tags.MATERIAL_E,),
        "material",
        (),
        lambda row, row_id: Prompt(row_id, tags.MATERIAL_S),
        material_answer,
    ),
    "free": Task("free", 1, (), None, ("id", "prompt"), _free_prompt, free_answer, grammar=False),
}
# The ``--task`` choices of ``logos sample`` and ``logos eval``, in this order.
TASK_CHOICES = tuple(TASKS)


def get_task(name: str) -> Task:
    from logos_jax.errors import LogosError

    if name not in TASKS:
        raise LogosError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]

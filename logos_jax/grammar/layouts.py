"""The grammar layouts: one frozen dataclass per kind of sequence, each able to write itself.

Every layout validates its parts on construction (``GrammarError`` with the reason) and has
``encode() -> str`` (the whole sequence), ``prompt()`` (the part a task gives the model) and
``answer()`` (the rest), with ``prompt() + answer() == encode()``. For layouts that are one object
the prompt is the open tag (unconditional generation); for tasks it is everything up to and including
the operator (``<ReverseReact>``, ``<Search>``, ``<Trans>``, ``<React>``) or, for complexes, the
protein and the ligand's open tag (pocket-conditioned ligand design).

``layout`` (a class attribute) names the family; ``name`` (a property) is the exact layout name used on
the command line and in configs, which for ``PocketProtein`` and ``Complex`` depends on the instance
(``pocket`` / ``pocket-smiles``; ``complex1`` / ``complex2`` / ``complex3``). ``LAYOUTS`` maps every name
to its class and fixed arguments.

Pockets are 0-based indices into the protein sequence, stored sorted and de-duplicated. A
``PocketProtein`` and a level-2/3 ``Complex`` need at least one pocket residue (with none they would be
written exactly like a plain protein / a level-1 complex); a level-1 ``Complex`` carries none.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

from logos_jax.grammar import tags
from logos_jax.grammar.chem import AMINO_ACID_SMILES
from logos_jax.grammar.validate import GrammarError, check_pocket, check_sequence, check_smiles


def _block(open_tag: str, content: str) -> str:
    return f"{open_tag}{content}{tags.OPEN_TO_CLOSE[open_tag]}"


def _molecules(smiles: tuple[str, ...]) -> str:
    return "".join(_block(tags.MOLECULE_S, s) for s in smiles)


def annotated_residues(sequence: str, pocket: tuple[int, ...], *, expanded: bool) -> str:
    """The inside of a protein block with each pocket residue wrapped in ``<PocketS>…<PocketE>``."""
    wrapped = set(pocket)
    parts = []
    for i, aa in enumerate(sequence):
        if i in wrapped:
            parts.append(_block(tags.POCKET_S, AMINO_ACID_SMILES[aa] if expanded else aa))
        else:
            parts.append(aa)
    return "".join(parts)


def _smiles_tuple(values: Any, what: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise GrammarError(f"{what} must be a sequence of SMILES, not one string")
    values = tuple(values)
    if not values:
        raise GrammarError(f"at least one {what[:-1] if what.endswith('s') else what} is needed")
    return tuple(check_smiles(v, what[:-1] if what.endswith("s") else what) for v in values)


class _Layout(abc.ABC):
    """Shared behaviour: ``name`` defaults to ``layout``; ``encode`` is ``prompt + answer``."""

    layout: ClassVar[str]

    @property
    def name(self) -> str:
        return self.layout

    @abc.abstractmethod
    def prompt(self) -> str:
        """The part a task gives the model."""

    @abc.abstractmethod
    def answer(self) -> str:
        """The rest of the sequence."""

    def encode(self) -> str:
        return self.prompt() + self.answer()

    def _set(self, field: str, value: Any) -> None:
        object.__setattr__(self, field, value)


@dataclasses.dataclass(frozen=True)
class Protein(_Layout):
    """``<ProteinS>MKTAYIAK…<ProteinE>``."""

    sequence: str
    layout: ClassVar[str] = "protein"

    def __post_init__(self) -> None:
        check_sequence(self.sequence, "protein")

    def prompt(self) -> str:
        return tags.PROTEIN_S

    def answer(self) -> str:
        return self.sequence + tags.PROTEIN_E


@dataclasses.dataclass(frozen=True)
class Antibody(_Layout):
    """``<AntibodyS>EVQLVESGG…<AntibodyE>`` (one chain; chain separators were not published)."""

    sequence: str
    layout: ClassVar[str] = "antibody"

    def __post_init__(self) -> None:
        check_sequence(self.sequence, "antibody")

    def prompt(self) -> str:
        return tags.ANTIBODY_S

    def answer(self) -> str:
        return self.sequence + tags.ANTIBODY_E


@dataclasses.dataclass(frozen=True)
class Molecule(_Layout):
    """``<MoleculeS>CC(=O)Oc1ccccc1C(=O)O<MoleculeE>``."""

    smiles: str
    layout: ClassVar[str] = "molecule"

    def __post_init__(self) -> None:
        check_smiles(self.smiles)

    def prompt(self) -> str:
        return tags.MOLECULE_S

    def answer(self) -> str:
        return self.smiles + tags.MOLECULE_E


@dataclasses.dataclass(frozen=True)
class ForwardReaction(_Layout):
    """``<MoleculeS>R1<MoleculeE><MoleculeS>R2<MoleculeE><React><MoleculeS>P<MoleculeE>``."""

    reactants: tuple[str, ...]
    product: str
    layout: ClassVar[str] = "reaction"

    def __post_init__(self) -> None:
        self._set("reactants", _smiles_tuple(self.reactants, "reactants"))
        check_smiles(self.product, "product")

    def prompt(self) -> str:
        return _molecules(self.reactants) + tags.REACT

    def answer(self) -> str:
        return _block(tags.MOLECULE_S, self.product)


@dataclasses.dataclass(frozen=True)
class Retrosynthesis(_Layout):
    """``<MoleculeS>P<MoleculeE><ReverseReact><MoleculeS>R1<MoleculeE><MoleculeS>R2<MoleculeE>``."""

    product: str
    reactants: tuple[str, ...]
    layout: ClassVar[str] = "retro"

    def __post_init__(self) -> None:
        check_smiles(self.product, "product")
        self._set("reactants", _smiles_tuple(self.reactants, "reactants"))

    def prompt(self) -> str:
        return _block(tags.MOLECULE_S, self.product) + tags.REVERSE_REACT

    def answer(self) -> str:
        return _molecules(self.reactants)


@dataclasses.dataclass(frozen=True)
class Material(_Layout):
    """``<MaterialS><MetalS>node<MetalE><MoleculeS>linker<MoleculeE>…<MaterialE>``.

    ``metal`` is the node SMILES (MOFid notation, e.g. ``[Zn][O]([Zn])([Zn])[Zn]``); several nodes
    are joined with ``.`` in the one metal block.
    """

    metal: str
    linkers: tuple[str, ...]
    layout: ClassVar[str] = "material"

    def __post_init__(self) -> None:
        check_smiles(self.metal, "metal node")
        self._set("linkers", _smiles_tuple(self.linkers, "linkers"))

    def prompt(self) -> str:
        return tags.MATERIAL_S

    def answer(self) -> str:
        return _block(tags.METAL_S, self.metal) + _molecules(self.linkers) + tags.MATERIAL_E


@dataclasses.dataclass(frozen=True)
class PocketProtein(_Layout):
    """``<ProteinS>JFDS<PocketS>S<PocketE>KJEF…<ProteinE>``; ``expanded``: residues as SMILES."""

    sequence: str
    pocket: tuple[int, ...]
    expanded: bool = False
    layout: ClassVar[str] = "pocket"

    def __post_init__(self) -> None:
        check_sequence(self.sequence, "protein")
        self._set("pocket", check_pocket(self.pocket, self.sequence, expanded=self.expanded))
        if not self.pocket:
            raise GrammarError("a pocket-annotated protein needs at least one pocket residue")

    @property
    def name(self) -> str:
        return "pocket-smiles" if self.expanded else "pocket"

    def prompt(self) -> str:
        return tags.PROTEIN_S

    def answer(self) -> str:
        inner = annotated_residues(self.sequence, self.pocket, expanded=self.expanded)
        return inner + tags.PROTEIN_E


@dataclasses.dataclass(frozen=True)
class Transformation(_Layout):
    """Pocket residues as letters ``<Trans>`` the same protein with them as SMILES."""

    sequence: str
    pocket: tuple[int, ...]
    layout: ClassVar[str] = "transformation"

    def __post_init__(self) -> None:
        check_sequence(self.sequence, "protein")
        self._set("pocket", check_pocket(self.pocket, self.sequence, expanded=True))
        if not self.pocket:
            raise GrammarError("a transformation needs at least one pocket residue")

    def prompt(self) -> str:
        letters = annotated_residues(self.sequence, self.pocket, expanded=False)
        return _block(tags.PROTEIN_S, letters) + tags.TRANS

    def answer(self) -> str:
        return _block(tags.PROTEIN_S, annotated_residues(self.sequence, self.pocket, expanded=True))


@dataclasses.dataclass(frozen=True)
class BindingSiteSearch(_Layout):
    """``<ProteinS>plain<ProteinE><Search><ProteinS>annotated<ProteinE>`` (pocket may be empty)."""

    sequence: str
    pocket: tuple[int, ...]
    layout: ClassVar[str] = "search"

    def __post_init__(self) -> None:
        check_sequence(self.sequence, "protein")
        self._set("pocket", check_pocket(self.pocket, self.sequence, expanded=False))

    def prompt(self) -> str:
        return _block(tags.PROTEIN_S, self.sequence) + tags.SEARCH

    def answer(self) -> str:
        inner = annotated_residues(self.sequence, self.pocket, expanded=False)
        return _block(tags.PROTEIN_S, inner)


@dataclasses.dataclass(frozen=True)
class Complex(_Layout):
    """Protein then ligand; level 1 plain, 2 contact residues wrapped, 3 wrapped as SMILES."""

    sequence: str
    ligand_smiles: str
    pocket: tuple[int, ...] = ()
    level: int = 1
    layout: ClassVar[str] = "complex"

    def __post_init__(self) -> None:
        check_sequence(self.sequence, "protein")
        check_smiles(self.ligand_smiles, "ligand")
        if self.level not in (1, 2, 3):
            raise GrammarError(f"complex level must be 1, 2 or 3, got {self.level!r}")
        pocket = check_pocket(self.pocket, self.sequence, expanded=self.level == 3)
        if self.level == 1 and pocket:
            raise GrammarError("a level-1 complex carries no pocket (use level 2 or 3)")
        if self.level > 1 and not pocket:
            raise GrammarError(f"a level-{self.level} complex needs at least one contact residue")
        self._set("pocket", pocket)

    @property
    def name(self) -> str:
        return f"complex{self.level}"

    def prompt(self) -> str:
        inner = annotated_residues(self.sequence, self.pocket, expanded=self.level == 3)
        return _block(tags.PROTEIN_S, inner) + tags.MOLECULE_S

    def answer(self) -> str:
        return self.ligand_smiles + tags.MOLECULE_E


AnyLayout = (
    Protein
    | Antibody
    | Molecule
    | ForwardReaction
    | Retrosynthesis
    | Material
    | PocketProtein
    | Transformation
    | BindingSiteSearch
    | Complex
)

# layout name -> (class, fixed constructor arguments)
LAYOUTS: dict[str, tuple[type, dict[str, Any]]] = {
    "protein": (Protein, {}),
    "antibody": (Antibody, {}),
    "molecule": (Molecule, {}),
    "reaction": (ForwardReaction, {}),
    "retro": (Retrosynthesis, {}),
    "material": (Material, {}),
    "pocket": (PocketProtein, {"expanded": False}),
    "pocket-smiles": (PocketProtein, {"expanded": True}),
    "transformation": (Transformation, {}),
    "search": (BindingSiteSearch, {}),
    "complex1": (Complex, {"level": 1}),
    "complex2": (Complex, {"level": 2}),
    "complex3": (Complex, {"level": 3}),
}
LAYOUT_NAMES: tuple[str, ...] = tuple(LAYOUTS)


def to_dict(obj: AnyLayout) -> dict[str, Any]:
    """``{"layout": name, <field>: value, ...}`` with tuples as lists (JSON-ready)."""
    out: dict[str, Any] = {"layout": obj.name}
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        out[field.name] = list(value) if isinstance(value, tuple) else value
    return out

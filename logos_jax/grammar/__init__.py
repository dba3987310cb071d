"""The LOGOS scientific grammar: tags, layouts (encoders), the parser, record encoding, chemistry.

Pure Python at import time; RDKit (``chem``) and biotite (``structure``) are imported lazily by the
functions that need them.
"""

from logos_jax.grammar import tags
from logos_jax.grammar.chem import AMINO_ACID_SMILES
from logos_jax.grammar.layouts import (
    LAYOUT_NAMES,
    LAYOUTS,
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
from logos_jax.grammar.parse import (
    Block,
    Parsed,
    ParseError,
    allowed_next_tags,
    annotated_protein,
    completion_smiles,
    material_parts,
    molecule_blocks,
    parse,
    parse_blocks,
    retro_reactants,
)
from logos_jax.grammar.records import encode_record, make_layout
from logos_jax.grammar.structure import DEFAULT_CONTACT_RULE, ContactRule
from logos_jax.grammar.tags import ALL_TAGS, OPEN_TO_CLOSE
from logos_jax.grammar.validate import GrammarError

__all__ = [
    "ALL_TAGS",
    "AMINO_ACID_SMILES",
    "LAYOUTS",
    "LAYOUT_NAMES",
    "OPEN_TO_CLOSE",
    "Antibody",
    "AnyLayout",
    "BindingSiteSearch",
    "Block",
    "Complex",
    "ContactRule",
    "DEFAULT_CONTACT_RULE",
    "ForwardReaction",
    "GrammarError",
    "Material",
    "Molecule",
    "ParseError",
    "Parsed",
    "PocketProtein",
    "Protein",
    "Retrosynthesis",
    "Transformation",
    "allowed_next_tags",
    "annotated_protein",
    "completion_smiles",
    "encode_record",
    "make_layout",
    "material_parts",
    "molecule_blocks",
    "parse",
    "parse_blocks",
    "retro_reactants",
    "tags",
    "to_dict",
]

"""The grammar tags: the one inventory every other module (layouts, parser, tokenizer, sampler) reads.

``<XxxS>`` opens an object, ``<XxxE>`` closes it; bare tags are operators placed between objects
(see ``docs/grammar.md``). ``ALL_TAGS`` has a fixed order: the order in which the tags are
added to a tokenizer, so two tokenizers extended from the same base give the tags the same ids.
"""

from __future__ import annotations

PROTEIN_S = "<ProteinS>"
PROTEIN_E = "<ProteinE>"
ANTIBODY_S = "<AntibodyS>"
ANTIBODY_E = "<AntibodyE>"
MOLECULE_S = "<MoleculeS>"
MOLECULE_E = "<MoleculeE>"
POCKET_S = "<PocketS>"
POCKET_E = "<PocketE>"
MATERIAL_S = "<MaterialS>"
MATERIAL_E = "<MaterialE>"
METAL_S = "<MetalS>"
METAL_E = "<MetalE>"

REACT = "<React>"
REVERSE_REACT = "<ReverseReact>"
TRANS = "<Trans>"
SEARCH = "<Search>"

OPEN_TO_CLOSE: dict[str, str] = {
    PROTEIN_S: PROTEIN_E,
    ANTIBODY_S: ANTIBODY_E,
    MOLECULE_S: MOLECULE_E,
    POCKET_S: POCKET_E,
    MATERIAL_S: MATERIAL_E,
    METAL_S: METAL_E,
}
CLOSE_TO_OPEN: dict[str, str] = {close: open_ for open_, close in OPEN_TO_CLOSE.items()}
OPERATORS: tuple[str, ...] = (REACT, REVERSE_REACT, TRANS, SEARCH)

ALL_TAGS: tuple[str, ...] = (
    PROTEIN_S,
    PROTEIN_E,
    ANTIBODY_S,
    ANTIBODY_E,
    MOLECULE_S,
    MOLECULE_E,
    POCKET_S,
    POCKET_E,
    MATERIAL_S,
    MATERIAL_E,
    METAL_S,
    METAL_E,
    REACT,
    REVERSE_REACT,
    TRANS,
    SEARCH,
)

# Residue alphabets. The 20 standard one-letter codes, plus ``X`` (unknown residue, as UniProt writes
# it) in plain protein and antibody sequences. Other letters (``B Z J U O``: ambiguous, selenocysteine,
# pyrrolysine) are rejected. ``X`` cannot be wrapped in a SMILES-expanded pocket (it has no structure).
STANDARD_AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
PROTEIN_ALPHABET = STANDARD_AMINO_ACIDS + "X"

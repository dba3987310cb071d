"""Grammar-constrained decoding: per-step token masks from small automata over the LOGOS grammar.

Two kinds, both pytrees of device arrays that the decode loop carries:

- ``BlockGrammar``: a finite automaton over token *classes* (each tag its own class, "SMILES text",
  "end of sequence", everything else). Used for answers that are sequences of blocks:
  retrosynthesis (one or more molecule blocks, then EOS), material (metal block, linker blocks,
  ``<MaterialE>``) and pocket ligand design (a SMILES, then ``<MoleculeE>``).
- ``ProteinCopy``: a binding-site answer must reproduce the input protein; a text token is allowed
  only if it spells the next residues of that protein, and ``<PocketS>`` X ``<PocketE>`` may wrap any
  single residue. Then ``<ProteinE>`` and EOS.

Both also look at the token budget left: a transition is allowed only if the answer can still be
finished within ``max_new_tokens`` (for ``ProteinCopy`` this holds when the budget covers the protein
plus two tokens), so a constrained answer is grammatical whatever the model's weights.

"SMILES text" is any token whose text is non-empty printable ASCII without whitespace or ``<``/``>``
(``grammar.validate.smiles_problem``); whether RDKit accepts the SMILES is left to the model.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import flax
import jax
import jax.numpy as jnp
import numpy as np

from logos_jax.grammar import tags
from logos_jax.grammar.validate import smiles_problem

OTHER, TEXT, EOS = 0, 1, 2
TAG_CLASS = {tag: 3 + i for i, tag in enumerate(tags.ALL_TAGS)}
NUM_CLASSES = 3 + len(tags.ALL_TAGS)
UNREACHABLE = 1 << 20
ACCEPT = "accept"

# Automata over token classes: state -> {class: next state}; "start" is the first state.
GRAMMARS: dict[str, dict[str, dict[Any, str]]] = {
    "retro": {  # after <ReverseReact>
        "start": {tags.MOLECULE_S: "mol_open"},
        "mol_open": {TEXT: "mol_text"},
        "mol_text": {TEXT: "mol_text", tags.MOLECULE_E: "mol_closed"},
        "mol_closed": {tags.MOLECULE_S: "mol_open", EOS: ACCEPT},
    },
    "material": {  # after <MaterialS>
        "start": {tags.METAL_S: "metal_open"},
        "metal_open": {TEXT: "metal_text"},
        "metal_text": {TEXT: "metal_text", tags.METAL_E: "metal_closed"},
        "metal_closed": {tags.MOLECULE_S: "linker_open"},
        "linker_open": {TEXT: "linker_text"},
        "linker_text": {TEXT: "linker_text", tags.MOLECULE_E: "linker_closed"},
        "linker_closed": {tags.MOLECULE_S: "linker_open", tags.MATERIAL_E: ACCEPT},
    },
    "ligand": {  # after <MoleculeS>
        "start": {TEXT: "text"},
        "text": {TEXT: "text", tags.MOLECULE_E: ACCEPT},
    },
}


class Constraint(Protocol):
    """What the decode loop needs: a mask for the next token and the state update."""

    def allowed(self, state: Any, remaining: jax.Array) -> jax.Array:
        """``[rows, vocab]`` bool; ``remaining`` ``[rows]`` = tokens each row may still emit, this one
        included."""
        ...

    def advance(self, state: Any, token: jax.Array) -> Any:
        """State after emitting ``token`` ``[rows]``."""
        ...


def token_texts(tokenizer: Any) -> list[str]:
    """The text of every token id on its own (``tokenizer.decode([i])``), tags kept."""
    return [tokenizer.decode([i]) for i in range(tokenizer.vocab_size)]


def token_classes(
    texts: Sequence[str], tag_ids: Mapping[str, int], eos_ids: Sequence[int], vocab_size: int
) -> np.ndarray:
    """``[vocab]`` int32 class of every id (ids past ``len(texts)``, e.g. padded rows, are OTHER)."""
    classes = np.full((vocab_size,), OTHER, np.int32)
    for i, text in enumerate(texts[:vocab_size]):
        if text and smiles_problem(text) is None:
            classes[i] = TEXT
    for tag, i in tag_ids.items():
        if tag in TAG_CLASS and i < vocab_size:
            classes[i] = TAG_CLASS[tag]
    for i in eos_ids:
        if i < vocab_size:
            classes[i] = EOS
    return classes


@flax.struct.dataclass
class BlockGrammar:
    """Automaton over token classes. ``token_class`` ``[vocab]``, ``transitions`` ``[states, classes]``
    (-1 = forbidden), ``distance`` ``[states]`` tokens still needed to reach the accept state.
    State: ``[rows]`` int32."""

    token_class: jax.Array
    transitions: jax.Array
    distance: jax.Array
    start_state: int = flax.struct.field(pytree_node=False, default=0)

    def start(self) -> np.ndarray:
        """The state of one prompt before its first generated token."""
        return np.asarray(self.start_state, np.int32)

    def allowed(self, state: jax.Array, remaining: jax.Array) -> jax.Array:
        nxt = self.transitions[state]  # [rows, classes]
        finishable = self.distance[jnp.maximum(nxt, 0)] + 1 <= remaining[:, None]
        ok = (nxt >= 0) & finishable
        return jnp.take(ok, self.token_class, axis=1)

    def advance(self, state: jax.Array, token: jax.Array) -> jax.Array:
        nxt = self.transitions[state, self.token_class[token]]
        return jnp.where(nxt >= 0, nxt, state)


def block_grammar(
    kind: str,
    texts: Sequence[str],
    tag_ids: Mapping[str, int],
    eos_ids: Sequence[int],
    vocab_size: int,
) -> BlockGrammar:
    """The ``BlockGrammar`` of ``GRAMMARS[kind]`` for a tokenizer's token texts and tag/EOS ids."""
    spec = GRAMMARS[kind]
    names = [*spec, ACCEPT]
    index = {name: i for i, name in enumerate(names)}
    transitions = np.full((len(names), NUM_CLASSES), -1, np.int32)
    for state, edges in spec.items():
        for cls, target in edges.items():
            column = TAG_CLASS[cls] if isinstance(cls, str) else cls
            transitions[index[state], column] = index[target]
    # Shortest distance to ACCEPT, by breadth-first search over reversed edges.
    distance = np.full((len(names),), UNREACHABLE, np.int32)
    distance[index[ACCEPT]] = 0
    queue = deque([index[ACCEPT]])
    while queue:
        target = queue.popleft()
        for source in np.nonzero((transitions == target).any(axis=1))[0]:
            if distance[source] == UNREACHABLE:
                distance[source] = distance[target] + 1
                queue.append(source)
    classes = token_classes(texts, tag_ids, eos_ids, vocab_size)
    needed = {c for edges in spec.values() for c in edges}
    for cls in needed:
        column = TAG_CLASS[cls] if isinstance(cls, str) else cls
        if not (classes == column).any():
            from logos_jax.errors import LogosError

            raise LogosError(
                f"constrained {kind} decoding needs a token for {cls!r}, which this tokenizer lacks"
            )
    return BlockGrammar(
        token_class=jnp.asarray(classes),
        transitions=jnp.asarray(transitions),
        distance=jnp.asarray(distance),
        start_state=index["start"],
    )


# ProteinCopy modes.
OUTSIDE, POCKET_OPEN, POCKET_FULL, PROTEIN_CLOSED, DONE = range(5)


@flax.struct.dataclass
class ProteinCopy:
    """Binding-site answers (see the module docstring).

    ``residue_ids`` ``[n]`` are the tokens made only of residue letters, ``residue_chars`` ``[n, width]``
    their letters (0-padded), ``residue_len`` ``[vocab]`` each id's letter count (0 = not residues),
    ``letter_token`` ``[128]`` the one-letter token of each residue letter (-1 = none).
    State: ``{"sequence": [rows, max_residues] int32 letters, "length": [rows], "index": [rows],
    "mode": [rows], "after_pocket": [rows] whether the last residue was a pocket's, "copy": [rows,
    max_residues + 2] the protein's tokens as the prompt spells them, then <ProteinE> and EOS (-1
    padded), "token_at": [rows, max_residues + 1] the ``copy`` index of the token that starts at
    each residue (-1 = none)}``; the last three serve ``draft``.
    """

    residue_ids: jax.Array
    residue_chars: jax.Array
    residue_len: jax.Array
    letter_token: jax.Array
    pocket_s: jax.Array
    pocket_e: jax.Array
    protein_e: jax.Array
    eos_ids: jax.Array
    max_residues: int = flax.struct.field(pytree_node=False, default=1024)

    def start(self, sequence: str, tokens: Sequence[int] = ()) -> dict[str, np.ndarray]:
        """The state for an input protein ``sequence`` (must fit ``max_residues``); ``tokens``: its
        token ids as the prompt spells them (drafts follow them; none when they do not spell it)."""
        codes = np.zeros((self.max_residues,), np.int32)
        codes[: len(sequence)] = [ord(c) for c in sequence]
        zero = np.asarray(0, np.int32)
        copy = np.full((self.max_residues + 2,), -1, np.int32)
        token_at = np.full((self.max_residues + 1,), -1, np.int32)
        letters = self._letters(sequence, tokens)
        if letters is not None:
            starts = np.concatenate([[0], np.cumsum(letters)])
            copy[: len(tokens)] = tokens
            token_at[starts] = np.arange(len(tokens) + 1)
            copy[len(tokens)] = int(self.protein_e)
            copy[len(tokens) + 1] = int(self.eos_ids[0])
        return {
            "sequence": codes,
            "length": np.asarray(len(sequence), np.int32),
            "index": zero,
            "mode": np.asarray(OUTSIDE, np.int32),
            "after_pocket": zero,
            "copy": copy,
            "token_at": token_at,
        }

    def _letters(self, sequence: str, tokens: Sequence[int]) -> np.ndarray | None:
        """Each token's letter count when ``tokens`` are residue tokens whose letters, in order,
        are ``sequence``; else None."""
        if not len(tokens) or len(tokens) > self.max_residues:
            return None
        ids = np.asarray(self.residue_ids)
        rows = np.searchsorted(ids, tokens)
        if np.any(rows >= len(ids)) or np.any(ids[np.minimum(rows, len(ids) - 1)] != tokens):
            return None
        chars = np.asarray(self.residue_chars)[rows]  # [tokens, width], 0-padded
        text = "".join(chr(c) for row in chars for c in row if c)
        return np.count_nonzero(chars, axis=1) if text == sequence else None

    def draft(self, state: dict[str, jax.Array], k: int) -> jax.Array:
        """``[rows, k]`` the answer's next ``k`` tokens if it goes on as it is going (-1 = none).

        Pocket residues come in runs, so a residue is drafted the way the last one was written:
        after a plain residue, the prompt's tokens from the current residue on; inside a pocket or
        right after one, each next residue as ``<PocketS>`` X ``<PocketE>``. Both end with
        ``<ProteinE>`` and EOS. A wrong guess costs one rejected draft; the model decides."""
        seq, length, index, mode = (
            state["sequence"],
            state["length"],
            state["index"],
            state["mode"],
        )
        copy, token_at = state["copy"], state["token_at"]
        j = jnp.arange(k)[None, :]
        # Copying: the prompt's tokens from the current residue (its token must start there).
        start = jnp.take_along_axis(
            token_at, jnp.minimum(index, token_at.shape[1] - 1)[:, None], axis=1
        )
        at = start + j
        copied = jnp.take_along_axis(copy, jnp.clip(at, 0, copy.shape[1] - 1), axis=1)
        copied = jnp.where((start >= 0) & (at < copy.shape[1]), copied, -1)
        # Pockets: a stream of <PocketS> X <PocketE> per residue from ``first`` on, entered at
        # ``phase`` (0: before <PocketS>, 1: before X, 2: before <PocketE>), then <ProteinE>, EOS.
        phase = jnp.select([mode == POCKET_OPEN, mode == POCKET_FULL], [1, 2], 0)
        first = jnp.where(mode == POCKET_FULL, index - 1, index)
        t = phase[:, None] + j
        residue = first[:, None] + t // 3
        letter = jnp.take_along_axis(seq, jnp.clip(residue, 0, seq.shape[1] - 1), axis=1)
        triple = jnp.stack(
            [
                jnp.broadcast_to(self.pocket_s, letter.shape),
                self.letter_token[jnp.clip(letter, 0, 127)],
                jnp.broadcast_to(self.pocket_e, letter.shape),
            ]
        )
        in_pockets = jnp.take_along_axis(triple, (t % 3)[None], axis=0)[0]
        past = t - 3 * (length - first)[:, None]  # tokens after the last residue's triple
        tail = jnp.where(past == 0, self.protein_e, jnp.where(past == 1, self.eos_ids[0], -1))
        in_pockets = jnp.where(past >= 0, tail, in_pockets)
        pocket_run = (mode == POCKET_OPEN) | (mode == POCKET_FULL)
        pocket_run |= (mode == OUTSIDE) & (state["after_pocket"] != 0)
        out = jnp.where(pocket_run[:, None], in_pockets, copied)
        out = jnp.where(
            (mode == PROTEIN_CLOSED)[:, None], jnp.where(j == 0, self.eos_ids[0], -1), out
        )
        return jnp.where((mode == DONE)[:, None], -1, out)

    def allowed(self, state: dict[str, jax.Array], remaining: jax.Array) -> jax.Array:
        seq, length, index, mode = state["sequence"], state["length"], state["index"], state["mode"]
        rows = seq.shape[0]
        vocab = self.residue_len.shape[0]
        width = self.residue_chars.shape[1]
        offsets = jnp.arange(width)
        window = jnp.take_along_axis(
            seq, jnp.minimum(index[:, None] + offsets, seq.shape[1] - 1), axis=1
        )  # [rows, width]
        chars_ok = (self.residue_chars[None] == window[:, None]) | (
            offsets[None, None] >= self.residue_len[self.residue_ids][None, :, None]
        )
        n = self.residue_len[self.residue_ids][None, :]  # [1, n]
        spells = jnp.all(chars_ok, axis=-1) & (index[:, None] + n <= length[:, None])
        text_ok = spells & (
            (mode[:, None] == OUTSIDE) | ((mode[:, None] == POCKET_OPEN) & (n == 1))
        )
        out = jnp.zeros((rows, vocab), bool).at[:, self.residue_ids].set(text_ok)
        rest = length - index
        # Opening a pocket costs two extra tokens: keep room for the rest, <ProteinE> and EOS.
        open_ok = (mode == OUTSIDE) & (rest >= 1) & (remaining >= rest + 4)
        out = out.at[:, self.pocket_s].set(open_ok)
        out = out.at[:, self.pocket_e].set(mode == POCKET_FULL)
        out = out.at[:, self.protein_e].set((mode == OUTSIDE) & (rest == 0))
        eos_ok = jnp.broadcast_to((mode == PROTEIN_CLOSED)[:, None], (rows, self.eos_ids.shape[0]))
        return out.at[:, self.eos_ids].set(eos_ok)

    def advance(self, state: dict[str, jax.Array], token: jax.Array) -> dict[str, jax.Array]:
        index, mode = state["index"], state["mode"]
        n = self.residue_len[token]
        is_eos = jnp.any(token[:, None] == self.eos_ids[None, :], axis=1)
        new_mode = jnp.select(
            [
                (mode == OUTSIDE) & (token == self.pocket_s),
                (mode == POCKET_OPEN) & (n > 0),
                (mode == POCKET_FULL) & (token == self.pocket_e),
                (mode == OUTSIDE) & (token == self.protein_e),
                (mode == PROTEIN_CLOSED) & is_eos,
            ],
            [POCKET_OPEN, POCKET_FULL, OUTSIDE, PROTEIN_CLOSED, DONE],
            mode,
        )
        moved = ((mode == OUTSIDE) | (mode == POCKET_OPEN)) & (n > 0)
        # Whether the last residue written was a pocket's (``draft`` continues the same way).
        closed = (mode == POCKET_FULL) & (token == self.pocket_e)
        after = jnp.where(
            closed, 1, jnp.where((mode == OUTSIDE) & (n > 0), 0, state["after_pocket"])
        )
        return {
            **state,
            "index": index + jnp.where(moved, n, 0),
            "mode": new_mode,
            "after_pocket": after.astype(jnp.int32),
        }


def protein_copy(
    texts: Sequence[str],
    tag_ids: Mapping[str, int],
    eos_ids: Sequence[int],
    vocab_size: int,
    max_residues: int,
    max_token_letters: int = 16,
) -> ProteinCopy:
    """The ``ProteinCopy`` constraint for a tokenizer (``max_residues``: the longest input protein)."""
    alphabet = set(tags.PROTEIN_ALPHABET)
    ids = [
        i
        for i, t in enumerate(texts[:vocab_size])
        if t and len(t) <= max_token_letters and set(t) <= alphabet
    ]
    missing = [t for t in (tags.POCKET_S, tags.POCKET_E, tags.PROTEIN_E) if t not in tag_ids]
    if missing or not ids or not eos_ids:
        from logos_jax.errors import LogosError

        raise LogosError(
            "constrained binding-site decoding needs residue tokens, an EOS id and the tags "
            f"{tags.POCKET_S} {tags.POCKET_E} {tags.PROTEIN_E} (missing: {missing or 'EOS/residues'})"
        )
    chars = np.zeros((len(ids), max(len(texts[i]) for i in ids)), np.int32)
    lengths = np.zeros((vocab_size,), np.int32)
    letter_token = np.full((128,), -1, np.int32)
    for row, i in enumerate(ids):
        chars[row, : len(texts[i])] = [ord(c) for c in texts[i]]
        lengths[i] = len(texts[i])
        if len(texts[i]) == 1 and letter_token[ord(texts[i])] < 0:
            letter_token[ord(texts[i])] = i
    return ProteinCopy(
        residue_ids=jnp.asarray(ids, jnp.int32),
        residue_chars=jnp.asarray(chars),
        residue_len=jnp.asarray(lengths),
        letter_token=jnp.asarray(letter_token),
        pocket_s=jnp.asarray(tag_ids[tags.POCKET_S], jnp.int32),
        pocket_e=jnp.asarray(tag_ids[tags.POCKET_E], jnp.int32),
        protein_e=jnp.asarray(tag_ids[tags.PROTEIN_E], jnp.int32),
        eos_ids=jnp.asarray(sorted(eos_ids), jnp.int32),
        max_residues=max_residues,
    )

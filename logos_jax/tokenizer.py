"""Tokenizers for LOGOS: Hugging Face ``tokenizer.json`` files plus the grammar tags.

``LogosTokenizer`` wraps a ``tokenizers.Tokenizer`` with the ids the rest of the system needs: ``bos_id``
(the id ``encode(add_bos=True)`` prepends; None when the tokenizer adds none, as Qwen's), every EOS id
(Llama-3 ends turns with several), and ``pad_id``. BOS is added by this class, never by the file's
post-processor, so ``encode`` behaves the same for every tokenizer.

The grammar tags are added as *non-special* added tokens (``special=False, normalized=False``): each is one
id, matched before pre-tokenisation, and kept by any decoder that skips special tokens. ``decode`` keeps
the tags even for a tokenizer that registered them as special.

Also here: ``train_sentencepiece`` (a SentencePiece model converted to ``tokenizer.json``) and
``build_residue_tokenizer`` (a fixed per-residue / per-atom vocabulary, no training).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from logos_jax.errors import LogosError
from logos_jax.files import atomic_write_text
from logos_jax.grammar.tags import ALL_TAGS
from logos_jax.validate import text_lines

ASSETS = Path(__file__).resolve().parent / "assets" / "tokenizers"

# EOS names looked up when no config file names one (Llama-3, Qwen/GPT-2 style, SentencePiece).
_FALLBACK_EOS = ("<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>")

# Per-residue / per-atom pre-tokens: every upper-case letter is its own pre-token (a residue in a protein
# block, an organic-subset atom in a SMILES), except the two-letter atoms Cl and Br.
RESIDUE_SPLIT = r"Cl|Br|[A-Z]"
_SPM_DELIMITER = (
    "\u241f"  # marks pre-token boundaries in SentencePiece training text (never in data)
)


class LogosTokenizer:
    """A ``tokenizers.Tokenizer`` with BOS / EOS / PAD ids and the grammar-tag helpers."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        bos_id: int | None,
        eos_ids: Sequence[int],
        pad_id: int | None,
    ):
        self.tokenizer = tokenizer  # the wrapped tokenizers.Tokenizer; treat as read-only
        self.bos_id = bos_id
        self.eos_ids = tuple(dict.fromkeys(int(i) for i in eos_ids))
        self.pad_id = pad_id
        self._hash: str | None = None

    # -- files --------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> LogosTokenizer:
        """Load a folder holding ``tokenizer.json`` (and optionally ``tokenizer_config.json``,
        ``special_tokens_map.json``, ``generation_config.json``, ``config.json``) or the file itself
        (config files beside it are read too).

        BOS: the tokenizer config's ``bos_token`` (None when it is null or ``add_bos_token`` is false),
        else the token the file's post-processor prepends, else None. EOS: every id named by
        ``generation_config.json`` / ``config.json`` (``eos_token_id``, int or list) and the tokenizer
        config's ``eos_token``; with none of those, the first of ``<|end_of_text|>``, ``<|endoftext|>``,
        ``</s>``, ``<eos>`` in the vocabulary. PAD: ``pad_token``, else ``pad_token_id``, else None.
        """
        from tokenizers import Tokenizer

        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise LogosError(
                f"no tokenizer.json at {path}; give a tokenizer folder or the file itself"
            )
        try:
            tokenizer = Tokenizer.from_file(str(file))
        except Exception as err:
            raise LogosError(f"cannot read tokenizer {file}: {err}") from None
        folder = file.parent
        tok_cfg = {
            **_read_json(folder / "special_tokens_map.json"),
            **_read_json(folder / "tokenizer_config.json"),
        }
        model_cfg = {
            **_read_json(folder / "config.json"),
            **_read_json(folder / "generation_config.json"),
        }

        def token_id(value: Any) -> int | None:
            content = value.get("content") if isinstance(value, dict) else value
            return tokenizer.token_to_id(content) if isinstance(content, str) else None

        if "bos_token" in tok_cfg:
            bos_id = token_id(tok_cfg["bos_token"])
            if tok_cfg.get("add_bos_token") is False:
                bos_id = None
        else:
            bos_id = _post_processor_bos(tokenizer)

        eos_ids: list[int] = []
        config_eos = model_cfg.get("eos_token_id")
        if config_eos is not None:
            eos_ids.extend(config_eos if isinstance(config_eos, list) else [config_eos])
        if (eos := token_id(tok_cfg.get("eos_token"))) is not None:
            eos_ids.append(eos)
        if not eos_ids:
            found = (tokenizer.token_to_id(name) for name in _FALLBACK_EOS)
            fallback = next((i for i in found if i is not None), None)
            eos_ids = [fallback] if fallback is not None else []

        pad_id = token_id(tok_cfg.get("pad_token"))
        if pad_id is None and isinstance(model_cfg.get("pad_token_id"), int):
            pad_id = model_cfg["pad_token_id"]
        return cls(tokenizer, bos_id=bos_id, eos_ids=eos_ids, pad_id=pad_id)

    def save(self, out_dir: Path) -> None:
        """Write ``tokenizer.json`` and ``tokenizer_config.json`` (bos/eos/pad tokens) into ``out_dir``;
        with more than one EOS id, also ``eos_token_id`` (a list) into ``generation_config.json`` (other
        keys of an existing one are kept). Each file is written atomically."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(out_dir / "tokenizer.json", self.tokenizer.to_str(pretty=False))
        name = self.tokenizer.id_to_token
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": name(self.bos_id) if self.bos_id is not None else None,
            "eos_token": name(self.eos_ids[0]) if self.eos_ids else None,
            "pad_token": name(self.pad_id) if self.pad_id is not None else None,
            "add_bos_token": self.bos_id is not None,
        }
        _atomic_write(out_dir / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")
        if len(self.eos_ids) > 1:
            generation = _read_json(out_dir / "generation_config.json")
            generation["eos_token_id"] = list(self.eos_ids)
            _atomic_write(
                out_dir / "generation_config.json", json.dumps(generation, indent=2) + "\n"
            )

    # -- ids ----------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of ids in the tokenizer (a model's embedding table may have more rows)."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, add_bos: bool = True) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return [self.bos_id, *ids] if add_bos and self.bos_id is not None else ids

    def encode_batch(self, texts: list[str], *, add_bos: bool = True) -> list[list[int]]:
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        prefix = [self.bos_id] if add_bos and self.bos_id is not None else []
        return [prefix + e.ids for e in encodings]

    def decode(self, ids: Iterable[int], *, skip_special: bool = False) -> str:
        """Text of ``ids``; ``skip_special`` drops special tokens (BOS, EOS, PAD...) but never a
        grammar tag."""
        ids = [int(i) for i in ids]
        if skip_special:
            drop = self._special_ids()
            ids = [i for i in ids if i not in drop]
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def _special_ids(self) -> set[int]:
        tags = set(self.tag_ids().values())
        added = self.tokenizer.get_added_tokens_decoder()
        special = {i for i, token in added.items() if token.special}
        special |= {i for i in (self.bos_id, self.pad_id, *self.eos_ids) if i is not None}
        return special - tags

    def token_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    def tag_ids(self) -> dict[str, int]:
        """Every grammar tag that encodes to exactly one id, with that id."""
        out = {}
        for tag in ALL_TAGS:
            ids = self.encode(tag, add_bos=False)
            if len(ids) == 1:
                out[tag] = ids[0]
        return out

    def missing_tags(self) -> list[str]:
        """Grammar tags that are not one id (in ``ALL_TAGS`` order)."""
        present = self.tag_ids()
        return [tag for tag in ALL_TAGS if tag not in present]

    def require_tags(self) -> None:
        """Raise ``LogosError`` unless every grammar tag is one id."""
        missing = self.missing_tags()
        if missing:
            raise LogosError(
                f"the tokenizer lacks {len(missing)} grammar tag(s) as single tokens: {' '.join(missing)}. "
                "Fix: run `logos tokenizer add-tags SRC_DIR OUT_DIR` (or call "
                "logos_jax.tokenizer.add_grammar_tags) and use the new folder; a model trained with the "
                "old vocabulary needs its embedding table resized."
            )

    def require_fits(self, model_vocab: int, model: str | Path) -> None:
        """Raise ``LogosError`` when the tokenizer has ids past the model's embedding rows (they would
        index outside the table: JAX clamps the gather, so the model would silently read wrong rows)."""
        if self.vocab_size > model_vocab:
            raise LogosError(
                f"the tokenizer has {self.vocab_size} ids but the model {model} has {model_vocab} "
                "embedding rows; fix: use the model's own tokenizer, or grow the embeddings "
                "(`logos convert hf2jax --add-tags`, or train with init_from=)"
            )

    def hash(self) -> str:
        """sha256 of the normalised ``tokenizer.json`` content (the compact serialisation of the loaded
        tokenizer, whatever the file's formatting) plus the BOS, EOS and PAD ids: two tokenizers with
        the same hash encode identically."""
        if self._hash is None:
            ids = {"bos_id": self.bos_id, "eos_ids": list(self.eos_ids), "pad_id": self.pad_id}
            digest = hashlib.sha256(self.tokenizer.to_str(pretty=False).encode("utf-8"))
            digest.update(json.dumps(ids, sort_keys=True).encode("utf-8"))
            self._hash = digest.hexdigest()
        return self._hash

    def __repr__(self) -> str:
        return (
            f"LogosTokenizer(vocab_size={self.vocab_size}, bos_id={self.bos_id}, "
            f"eos_ids={self.eos_ids}, pad_id={self.pad_id})"
        )


def add_grammar_tags(tok: LogosTokenizer) -> tuple[LogosTokenizer, list[str]]:
    """A copy of ``tok`` in which every grammar tag is one id, and the tags that had to be added
    (``tok`` itself and ``[]`` when none was missing).

    Missing tags are appended in ``ALL_TAGS`` order as non-special added tokens (so two tokenizers
    extended from the same base give the tags the same ids, and decoders keep them).
    """
    from tokenizers import AddedToken, Tokenizer

    missing = tok.missing_tags()
    if not missing:
        return tok, []
    tokenizer = Tokenizer.from_str(tok.tokenizer.to_str())
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in missing])
    new = LogosTokenizer(tokenizer, bos_id=tok.bos_id, eos_ids=tok.eos_ids, pad_id=tok.pad_id)
    return new, missing


def bundled_tokenizer_path(name: str) -> Path:
    """The ``tokenizer.json`` bundled with the package under ``assets/tokenizers/<name>/``."""
    path = ASSETS / name / "tokenizer.json"
    if not path.is_file():
        available = sorted(p.parent.name for p in ASSETS.glob("*/tokenizer.json"))
        raise LogosError(
            f"no bundled tokenizer {name!r}; bundled: {', '.join(available) or 'none'} "
            "(Llama-3's vocabulary cannot be bundled: give its folder path instead)"
        )
    return path


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise LogosError(f"cannot read {path}: {err}") from None
    return data if isinstance(data, dict) else {}


def _atomic_write(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def _post_processor_bos(tokenizer: Any) -> int | None:
    """The special token a ``TemplateProcessing`` post-processor puts first, if any."""
    processor = json.loads(tokenizer.to_str()).get("post_processor") or {}
    stack = [processor]
    while stack:
        node = stack.pop()
        if node.get("type") == "Sequence":
            stack.extend(reversed(node.get("processors", [])))
        elif node.get("type") == "TemplateProcessing":
            first = (node.get("single") or [{}])[0]
            if "SpecialToken" in first:
                return tokenizer.token_to_id(first["SpecialToken"]["id"])
    return None


# ---------------------------------------------------------------------------------------------
# Building tokenizers.

_SPECIALS = ("<unk>", "<s>", "</s>", "<pad>")  # ids 0..3 in both builders


def _finish(tokenizer: Any, out_dir: Path) -> Path:
    """Register specials + tags as added tokens, save with BOS ``<s>``, EOS ``</s>``, PAD ``<pad>``."""
    from tokenizers import AddedToken

    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in _SPECIALS])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in ALL_TAGS])
    ids = {t: tokenizer.token_to_id(t) for t in _SPECIALS}
    tok = LogosTokenizer(tokenizer, bos_id=ids["<s>"], eos_ids=[ids["</s>"]], pad_id=ids["<pad>"])
    tok.save(out_dir)
    return Path(out_dir)


def build_residue_tokenizer(out_dir: Path) -> Path:
    """A fixed per-residue / per-atom tokenizer (no training), saved to ``out_dir``; returns it.

    Vocabulary (~120 ids): ``<unk> <s> </s> <pad>``, the grammar tags, ``Cl`` and ``Br``, and every
    printable ASCII character plus tab and newline. Every character is its own token except the
    two-letter atoms, so each residue of a protein and each atom symbol of a SMILES is one token
    (bracket atoms such as ``[C@@H]`` are spelled character by character). Other characters become
    ``<unk>``. Used by the tiny demo model and tests.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    symbols = [*_SPECIALS, *ALL_TAGS, "Cl", "Br", "\t", "\n", *map(chr, range(32, 127))]
    model = models.WordLevel({s: i for i, s in enumerate(symbols)}, unk_token="<unk>")
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"Cl|Br|[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return _finish(tokenizer, out_dir)


def _read_texts(texts_or_files: Iterable[str | Path]) -> Iterator[str]:
    for item in texts_or_files:
        if isinstance(item, Path):
            if not item.is_file():
                raise LogosError(f"training file not found: {item}")
            skipped = 0
            for _, line in text_lines(item):
                if line is None:
                    skipped += 1  # not UTF-8 text: never a training text
                elif line.strip():
                    yield line.rstrip("\n")
            if skipped:
                print(f"{item}: skipped {skipped} line(s) that are not UTF-8 text", file=sys.stderr)
        else:
            yield item


def _residue_split(text: str) -> str:
    """Insert the SentencePiece pre-token delimiter around every ``RESIDUE_SPLIT`` match."""
    return re.sub(f"({RESIDUE_SPLIT})", _SPM_DELIMITER + r"\1" + _SPM_DELIMITER, text)


def train_sentencepiece(
    texts_or_files: Iterable[str | Path],
    out_dir: Path,
    *,
    vocab_size: int,
    model_type: str = "bpe",
    per_residue: bool = False,
    character_coverage: float = 1.0,
    max_sentence_length: int = 1 << 16,
    num_threads: int = 2,
) -> Path:
    """Train a SentencePiece model and write it as a Hugging Face ``tokenizer.json`` folder.

    ``texts_or_files``: strings are training texts, ``Path`` objects are files read one text per line.
    The grammar tags are ``user_defined_symbols`` (always one id), ``byte_fallback=True`` (no unknown
    characters), no normalisation, no dummy prefix; ids 0-3 are ``<unk> <s> </s> <pad>``.

    ``per_residue``: every upper-case letter (``RESIDUE_SPLIT``: residues, organic-subset atoms; ``Cl``
    and ``Br`` whole) is its own pre-token, so no token spans two residues. Training enforces it with
    SentencePiece's ``pretokenization_delimiter`` (inserted around each such letter), and the written
    ``tokenizer.json`` enforces it at encoding time with a ``Split`` pre-tokenizer on the same regex.

    The folder also keeps the original ``sentencepiece.model``. Returns ``out_dir``.
    """
    import sentencepiece as spm

    if model_type not in ("bpe", "unigram"):
        raise LogosError(f"model_type must be 'bpe' or 'unigram', got {model_type!r}")
    texts = _read_texts(texts_or_files)
    if per_residue:
        texts = (_residue_split(t) for t in texts)
    buffer = io.BytesIO()
    options: dict[str, Any] = {
        "model_type": model_type,
        "vocab_size": vocab_size,
        "user_defined_symbols": list(ALL_TAGS),
        "byte_fallback": True,
        "character_coverage": character_coverage,
        "normalization_rule_name": "identity",
        "add_dummy_prefix": False,
        "remove_extra_whitespaces": False,
        "unk_id": 0,
        "bos_id": 1,
        "eos_id": 2,
        "pad_id": 3,
        "max_sentence_length": max_sentence_length,
        "num_threads": num_threads,
        "hard_vocab_limit": False,
        "minloglevel": 2,
    }
    if per_residue:
        options["pretokenization_delimiter"] = _SPM_DELIMITER
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=texts, model_writer=buffer, **options)
    except RuntimeError as err:
        raise LogosError(f"SentencePiece training failed: {err}") from None
    processor = spm.SentencePieceProcessor(model_proto=buffer.getvalue())
    tokenizer = _spm_to_hf(processor, model_type, per_residue=per_residue)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sentencepiece.model").write_bytes(buffer.getvalue())
    return _finish(tokenizer, out_dir)


def _spm_to_hf(processor: Any, model_type: str, *, per_residue: bool) -> Any:
    """The ``tokenizers.Tokenizer`` equivalent of a trained SentencePiece model (ids preserved).

    BPE merges are rebuilt from the pieces as ``transformers``' SentencePiece converter does: every
    split of a piece into two known pieces, ordered by the merged piece's score, then by the parts' ids.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    size = processor.get_piece_size()
    pieces = [processor.id_to_piece(i) for i in range(size)]
    scores = [processor.get_score(i) for i in range(size)]
    atomic = {
        i
        for i in range(size)
        if processor.is_control(i)
        or processor.is_unknown(i)
        or processor.is_byte(i)
        or pieces[i] in ALL_TAGS
    }
    if model_type == "unigram":
        model = models.Unigram(list(zip(pieces, scores)), unk_id=0, byte_fallback=True)
    else:
        vocab = {p: i for i, p in enumerate(pieces)}
        mergeable = {p for i, p in enumerate(pieces) if i not in atomic}
        merges = []
        for i in sorted(range(size), key=lambda k: (-scores[k], k)):
            piece = pieces[i]
            if i in atomic:
                continue
            splits = [(piece[:k], piece[k:]) for k in range(1, len(piece))]
            splits = [(a, b) for a, b in splits if a in mergeable and b in mergeable]
            merges.extend(sorted(splits, key=lambda ab: (vocab[ab[0]], vocab[ab[1]])))
        model = models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    tokenizer = Tokenizer(model)
    metaspace = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=True)
    if per_residue:
        split = pre_tokenizers.Split(Regex(RESIDUE_SPLIT), behavior="isolated")
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([metaspace, split])
    else:
        tokenizer.pre_tokenizer = metaspace
    # ByteFallback first: with no space in the training text, "▁" itself is three byte pieces.
    tokenizer.decoder = decoders.Sequence(
        [decoders.ByteFallback(), decoders.Replace("\u2581", " "), decoders.Fuse()]
    )
    return tokenizer

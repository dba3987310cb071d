"""The on-disk corpus format shared by the builder (writer) and the pipeline (reader).

A corpus directory holds::

    manifest.json                      what was built: counts, shard checksums, tokenizer, config
    tokenizer/                         the tokenizer the ids belong to (``LogosTokenizer.load`` reads it)
    train/<modality>/<source>-NNNNN.array_record   one document (token ids, little-endian uint32) per record
    train/<modality>/<source>-NNNNN.lengths.npy    the documents' lengths, [records] uint32
    eval/<modality>/...                 the held-out split, same structure
    heldout/<layout>.jsonl             held-out raw prompts + ground truth for sampling tasks
    rejects.jsonl                      records that were not used, one JSON object each, with the reason

A document is one grammar sequence tokenized with the tokenizer's BOS first and its first EOS id last
(each when the tokenizer has one: Qwen's has no BOS), so a packed row reads ``BOS doc EOS BOS doc EOS
...`` and the model learns to stop after an object, as the released sampling scripts expect.

Modalities follow the LOGOS corpus breakdown. The default mixture weights are the corpus *token*
shares (protein 64.4%, protein-pocket 12.9%, protein-ligand 10.3%, antibody 6.7%, molecule 4.7%,
reaction + material 1.0%, split evenly here); the pipeline renormalises them over the modalities present.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from logos_jax.errors import LogosError
from logos_jax.files import atomic_write_text

MODALITIES: tuple[str, ...] = (
    "protein",
    "protein_pocket",
    "protein_ligand",
    "antibody",
    "molecule",
    "reaction",
    "material",
)

DEFAULT_WEIGHTS: dict[str, float] = {
    "protein": 0.644,
    "protein_pocket": 0.129,
    "protein_ligand": 0.103,
    "antibody": 0.067,
    "molecule": 0.047,
    "reaction": 0.005,
    "material": 0.005,
}

# Which modality each grammar layout's documents count towards.
LAYOUT_MODALITY: dict[str, str] = {
    "protein": "protein",
    "antibody": "antibody",
    "molecule": "molecule",
    "reaction": "reaction",
    "retro": "reaction",
    "material": "material",
    "pocket": "protein_pocket",
    "pocket-smiles": "protein_pocket",
    "transformation": "protein_pocket",
    "search": "protein_pocket",
    "complex1": "protein_ligand",
    "complex2": "protein_ligand",
    "complex3": "protein_ligand",
}

SPLITS = ("train", "eval")
MANIFEST = "manifest.json"
TOKENIZER_DIR = "tokenizer"
REJECTS = "rejects.jsonl"
HELDOUT_DIR = "heldout"
FORMAT_VERSION = 1
TOKEN_DTYPE = np.dtype("<u4")


def encode_document(ids: list[int] | np.ndarray) -> bytes:
    """Token ids -> the bytes of one ArrayRecord record."""
    return np.asarray(ids, dtype=TOKEN_DTYPE).tobytes()


def decode_document(record: bytes) -> np.ndarray:
    """One ArrayRecord record -> token ids, [length] int32."""
    return np.frombuffer(record, dtype=TOKEN_DTYPE).astype(np.int32)


def lengths_path(shard: Path) -> Path:
    """The ``.lengths.npy`` companion of a shard."""
    return shard.with_name(shard.name.removesuffix(".array_record") + ".lengths.npy")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON (sorted keys, so equal content gives equal bytes) via a tmp file + rename."""
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def read_manifest(corpus_dir: str | Path) -> dict[str, Any]:
    """The corpus manifest; a LogosError if ``corpus_dir`` is not a finished corpus."""
    path = Path(corpus_dir) / MANIFEST
    if not path.is_file():
        raise LogosError(
            f"{corpus_dir}: no {MANIFEST}; this is not a built corpus (or its build did not finish). "
            "fix: run `logos data build --config <config>` (rerunning resumes an interrupted build)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise LogosError(
            f"{path}: corrupt corpus manifest ({type(err).__name__}); fix: rebuild the corpus"
        ) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list):
        raise LogosError(
            f"{path}: corrupt corpus manifest (no shard list); fix: rebuild the corpus"
        )
    if manifest.get("format_version") != FORMAT_VERSION:
        raise LogosError(
            f"{path}: corpus format {manifest.get('format_version')} is not {FORMAT_VERSION}; "
            "fix: rebuild the corpus with this version of logos_jax"
        )
    return manifest


def split_shards(manifest: dict[str, Any], split: str, modality: str) -> list[dict[str, Any]]:
    """The manifest entries of one split's shards for one modality, in their fixed order."""
    return [s for s in manifest["shards"] if s["split"] == split and s["modality"] == modality]


_VERIFIED: set[tuple[str, int, int, str]] = set()


def verify_shards(corpus_dir: str | Path, manifest: dict[str, Any]) -> None:
    """Check every shard and lengths file against the manifest's sha256 (once per process and file
    version); a LogosError names the first missing or corrupt file. Reading a corpus costs one pass
    over its bytes (~1-2 GB/s), and a flipped bit can never train silently."""
    for shard in manifest["shards"]:
        path = Path(corpus_dir) / shard["path"]
        for file, expected in (
            (path, shard["sha256"]),
            (lengths_path(path), shard["lengths_sha256"]),
        ):
            try:
                info = file.stat()
            except FileNotFoundError:
                raise LogosError(
                    f"{corpus_dir}: shard file {file} is missing; fix: rebuild the corpus"
                ) from None
            key = (str(file), info.st_size, info.st_mtime_ns, expected)
            if key in _VERIFIED:
                continue
            if sha256_file(file) != expected:
                raise LogosError(
                    f"{corpus_dir}: shard file {file} is corrupt (its sha256 differs from "
                    "manifest.json); fix: rebuild the corpus"
                )
            _VERIFIED.add(key)

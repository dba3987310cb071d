"""Reading a Hugging Face folder against the parameter table (no JAX): its config, its tensors, and
the checks that they are exactly the table's. Shared by ``hf2jax`` and direct loading
(``logos_jax.checkpoint.load_model`` of an HF folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from logos_jax.config import ModelConfig, read_json
from logos_jax.convert.safetensors_io import TensorInfo, checkpoint_files, index_tensors, map_tensor
from logos_jax.errors import LogosError
from logos_jax.model_folder import MODEL_CONFIG
from logos_jax.params import IGNORED_SUFFIXES, hf_tensors

HEAD, EMBED = "lm_head.weight", "model.embed_tokens.weight"


def is_hf_folder(path: str | Path) -> bool:
    """A folder with ``config.json`` and safetensors weights (and no logos ``model_config.yaml``)."""
    path = Path(path)
    if not (path / "config.json").is_file() or (path / MODEL_CONFIG).is_file():
        return False
    try:
        return bool(checkpoint_files(path))
    except LogosError:
        return False


def hf_config(hf_dir: str | Path) -> ModelConfig:
    """The model config of an HF folder: ``config.json``, with ``generation_config.json``'s EOS ids."""
    hf_dir = Path(hf_dir)
    config = ModelConfig.from_hf(
        read_json(hf_dir / "config.json"), source=str(hf_dir / "config.json")
    )
    generation = hf_dir / "generation_config.json"
    if generation.is_file():
        eos = read_json(generation).get("eos_token_id")
        if eos is not None:
            config = config.replace(eos_token_id=tuple(eos) if isinstance(eos, list) else eos)
    return config


def bits(array: np.ndarray) -> np.ndarray:
    """Same-size unsigned-int view: numpy's fast strided copy (bf16 has no fast path of its own)."""
    return array.view(np.dtype(f"u{array.dtype.itemsize}"))


def _same_bits(a: np.ndarray, b: np.ndarray, rows: int = 4096) -> bool:
    """Whether two (memory-mapped, raw) arrays are identical, compared ``rows`` rows at a time."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return all(np.array_equal(a[r : r + rows], b[r : r + rows]) for r in range(0, a.shape[0], rows))


def _check_tied_head(tensors: dict[str, TensorInfo]) -> None:
    """A tied config's file may still carry ``lm_head.weight``, but only as a copy of the embedding;
    anything else is an untied model, which would load wrong."""
    head, embed = tensors[HEAD], tensors[EMBED]
    if not _same_bits(map_tensor(head, raw=True), map_tensor(embed, raw=True)):
        raise LogosError(
            f"{head.file}: tensor {HEAD!r} differs from {EMBED!r} but config.json says "
            "tie_word_embeddings: true; if the model is untied, set it to false in config.json"
        )


def checked_tensors(config: ModelConfig, hf_dir: str | Path) -> dict[str, TensorInfo]:
    """Every tensor of ``hf_dir`` by name, checked against the table: none missing, none extra
    (bar recomputed buffers and a tied copy of the head), every shape the config's."""
    hf_dir = Path(hf_dir)
    tensors = index_tensors(hf_dir)
    expected = {name: info for name, info, _ in hf_tensors(config)}
    missing = sorted(set(expected) - set(tensors))
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise LogosError(
            f"{hf_dir}: missing tensor(s) {missing[:5]}{more} required by config.json "
            f"({config.architecture}, {config.num_layers} layers)"
        )
    ignorable = {HEAD} if config.tie_embeddings else set()
    if config.tie_embeddings and HEAD in tensors:
        _check_tied_head(tensors)
    extra = sorted(
        n for n in set(tensors) - set(expected) - ignorable if not n.endswith(IGNORED_SUFFIXES)
    )
    if extra:
        raise LogosError(
            f"{tensors[extra[0]].file}: unexpected tensor(s) {extra[:5]} not part of a "
            f"{config.architecture} with this config.json (wrong config, or an unsupported variant)"
        )
    for name, info in expected.items():
        found = tensors[name]
        if found.shape != info.shape:
            raise LogosError(
                f"{found.file}: tensor {name!r} has shape {list(found.shape)} but "
                f"config.json implies {list(info.shape)}"
            )
    return {name: tensors[name] for name in expected}

"""The model folder's file names and its atomic creation (no JAX here: ``hf2jax`` starts fast).

A model folder holds ``model_config.yaml``, an Orbax ``params/`` tree and the tokenizer files. It is
built in a temporary sibling folder and renamed into place, so a crash never leaves a folder that
looks complete.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from logos_jax.files import atomic_folder  # noqa: F401  (the one atomic-folder helper; re-exported)

MODEL_CONFIG = "model_config.yaml"
PARAMS = "params"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
)


def copy_tokenizer_files(src: Path, dst: Path) -> list[str]:
    """Copy the tokenizer files present in ``src`` to ``dst``; returns their names."""
    copied = []
    for name in TOKENIZER_FILES:
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, Path(dst) / name)
            copied.append(name)
    return copied

"""The model folder's file names and its atomic creation (no JAX here: ``hf2jax`` starts fast).

A model folder holds ``model_config.yaml``, an Orbax ``params/`` tree and the tokenizer files. It is
built in a temporary sibling folder and renamed into place, so a crash never leaves a folder that
looks complete.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from logos_jax.errors import LogosError
from logos_jax.files import make_dir, public_mode, remove_stale_temps, temp_dir_beside

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


@contextmanager
def atomic_folder(out_dir: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``out_dir`` that becomes ``out_dir`` when the block succeeds
    (one rename) and is deleted when it raises. ``out_dir`` must not exist. Temporary folders of
    killed earlier runs are removed first."""
    out_dir = Path(out_dir).absolute()
    if out_dir.exists():
        raise LogosError(f"{out_dir} already exists; choose a new output folder or delete it")
    make_dir(out_dir.parent)
    for stale in remove_stale_temps(out_dir):
        print(f"removed {stale}, left by an interrupted run", file=sys.stderr)
    tmp = temp_dir_beside(out_dir)
    try:
        yield tmp
        public_mode(tmp, directory=True)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

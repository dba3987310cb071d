"""Training consumes built corpora only: it never builds one, and ``train/`` imports neither the
corpus builder nor ``convert/``."""

from pathlib import Path

import pytest
from imports import imported_modules

from logos_jax.errors import LogosError
from logos_jax.train.config import load_train_config
from logos_jax.train.loop import resolve_data

TRAIN_DIR = Path(__file__).resolve().parent.parent / "logos_jax" / "train"


def test_train_imports_neither_the_corpus_builder_nor_convert():
    for path in sorted(TRAIN_DIR.glob("*.py")):
        wrong = {
            m
            for m in imported_modules(path)
            if m.startswith(("logos_jax.data.builder", "logos_jax.convert"))
        }
        assert not wrong, f"{path.name} imports {wrong}"


def test_a_data_config_is_refused_with_the_build_command(tmp_path):
    config = load_train_config("tiny", [f"run_dir={tmp_path / 'run'}", "data=mini"])
    with pytest.raises(
        LogosError, match=r"not a built corpus folder.*logos data build --config mini"
    ):
        resolve_data(config)
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(LogosError, match="no manifest.json"):
        resolve_data(load_train_config("tiny", [f"run_dir={tmp_path}", f"data={folder}"]))
    assert (
        resolve_data(load_train_config("tiny", ["run_dir=x", "data=synthetic"])).kind == "synthetic"
    )

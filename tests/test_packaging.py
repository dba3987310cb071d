"""A wheel carries the presets: ``logos train --config tiny`` works from an install, not only a checkout."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources (the build's ``build/`` stays out of the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("logos_jax", "configs"):
        shutil.copytree(REPO_ROOT / name, src / name, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    done = subprocess.run(
        [*pip, "-w", out, src],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = out.glob("logos_jax-*.whl")
    return path


def test_wheel_holds_every_preset(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    presets = sorted(
        p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "configs").rglob("*.yaml")
    )
    assert presets, "no presets in configs/"
    missing = [p for p in presets if f"logos_jax/{p}" not in names]
    assert not missing, f"presets missing from the wheel: {missing}"
    assert not any(n.startswith("configs/") for n in names), "presets must sit inside the package"


def test_find_preset_from_an_unpacked_wheel(wheel, tmp_path):
    """With the wheel's files first on sys.path and cwd elsewhere, presets come from the package data."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import logos_jax, logos_jax.config as c, logos_jax.train.config as t\n"
        "print(logos_jax.__file__)\n"
        "for kind, name in [('model', 'tiny'), ('data', 'mini'), ('train', 'logos-1b')]:\n"
        "    print(c.find_preset(kind, name))\n"
        "print(c.load_model_config(t.load_train_config('tiny').model).num_layers)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    package, *presets, layers = done.stdout.split()
    assert Path(package).is_relative_to(site)
    installed = site / "logos_jax" / "configs"
    assert [Path(p) for p in presets] == [
        installed / "model" / "tiny.yaml",
        installed / "data" / "mini.yaml",
        installed / "train" / "logos-1b.yaml",
    ]
    assert int(layers) > 0

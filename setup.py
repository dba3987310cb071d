"""The one packaging rule pyproject.toml cannot say: the top-level ``configs/`` presets (the source of
truth, read in place from a checkout) install as package data ``logos_jax/configs/``, so a wheel has them."""

from setuptools import find_namespace_packages, setup

CONFIGS = [
    "logos_jax.configs",
    *(f"logos_jax.configs.{p}" for p in find_namespace_packages("configs")),
]

setup(
    packages=[*find_namespace_packages(include=["logos_jax*"]), *CONFIGS],
    package_dir={"logos_jax.configs": "configs"},
)

"""Where a run's first parameters come from: random init, or ``init_from`` a checkpoint.

Continued pretraining loads a model folder, another run dir or a Hugging Face folder directly sharded
onto the mesh, with the run's layer stacking, and grows its embeddings (mean-initialised rows, ``logos_jax.embedding_resize``) when the data's
tokenizer has more ids, e.g. after the grammar tags were added. Its shapes come from the checkpoint;
its param and compute dtypes come from the run's model preset (``train_dtypes``), so a bf16 release
trains with the preset's fp32 master weights.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh

from logos_jax.checkpoint import load_model
from logos_jax.config import ModelConfig
from logos_jax.embedding_resize import resize_embeddings
from logos_jax.errors import LogosError
from logos_jax.model import init_params, param_shardings
from logos_jax.sharding import DEFAULT_RULES, Rules

# Model fields an init_from run may change (everything else is fixed by the checkpoint's shapes).
RUNTIME_FIELDS = (
    "param_dtype",
    "compute_dtype",
    "max_position_embeddings",
    "norm_eps",
    "rope_theta",
)


def fit_vocab(config: ModelConfig, data_vocab: int | None) -> ModelConfig:
    """A fresh model's vocabulary follows the data's tokenizer."""
    if data_vocab is None or data_vocab == config.vocab_size:
        return config
    return config.replace(vocab_size=data_vocab)


def train_dtypes(preset: ModelConfig, overrides: dict[str, Any]) -> dict[str, Any]:
    """The runtime overrides of an ``init_from`` run: the preset's param/compute dtypes (not the
    checkpoint's, which are its storage dtypes), then the run's own ``model.<field>`` overrides."""
    return {
        "param_dtype": preset.param_dtype,
        "compute_dtype": preset.compute_dtype,
        **overrides,
    }


def fresh_params(
    config: ModelConfig, seed: int, mesh: Mesh, scan_layers: bool, rules: Rules = DEFAULT_RULES
) -> Any:
    return init_params(config, jax.random.PRNGKey(seed), mesh, rules, scan_layers)


def load_initial(
    path: str,
    overrides: dict[str, Any],
    data_vocab: int | None,
    mesh: Mesh,
    rules: Rules = DEFAULT_RULES,
    scan_layers: bool = True,
) -> tuple[ModelConfig, Any]:
    """(config, params) from a checkpoint, with runtime overrides and the vocab grown to ``data_vocab``
    (a smaller data vocabulary keeps the checkpoint's rows); params stacked or per layer
    (``scan_layers``)."""
    fixed = sorted(set(overrides) - set(RUNTIME_FIELDS))
    if fixed:
        raise LogosError(
            f"init_from={path}: model field(s) {fixed} are fixed by the checkpoint; only "
            f"{', '.join(RUNTIME_FIELDS)} may be overridden"
        )
    config, params = load_model(
        path, mesh, rules, param_dtype=overrides.get("param_dtype"), scan_layers=scan_layers
    )
    config = config.replace(**overrides) if overrides else config
    if data_vocab is not None and data_vocab > config.vocab_size:
        params, config = resize_embeddings(params, config, data_vocab)
        params = jax.device_put(params, param_shardings(config, mesh, rules, scan_layers))
    return config, params

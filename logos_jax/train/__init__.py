"""Pretraining, continued pretraining and SFT: ``run_training(config) -> RunSummary`` and its config."""

from logos_jax.train.config import TrainConfig, load_train_config, valid_keys
from logos_jax.train.loop import RunSummary, run_training

__all__ = ["RunSummary", "TrainConfig", "load_train_config", "run_training", "valid_keys"]

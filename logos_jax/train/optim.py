"""Optimizer: AdamW with a warmup + cosine / warmup-stable-decay schedule, global-norm clipping and a
weight-decay mask (kernels decay; norm scales never; embeddings / LM head only when asked)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from logos_jax.train.config import OptimizerConfig

EMBEDDING_LEAVES = ("embedding",)  # embed_tokens/embedding
HEAD_MODULES = ("lm_head",)


def learning_rate_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to ``lr``, then cosine / wsd decay to ``lr * min_lr_ratio`` or constant."""
    warmup = max(0, min(cfg.warmup_steps, total_steps))
    rest = max(1, total_steps - warmup)
    final = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "constant":
        after = optax.constant_schedule(cfg.lr)
    elif cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(cfg.lr, rest, alpha=cfg.min_lr_ratio)
    else:  # wsd: stable at lr, then a linear decay over the last decay_fraction of the steps
        decay = max(1, int(round(rest * cfg.decay_fraction)))
        after = optax.join_schedules(
            [optax.constant_schedule(cfg.lr), optax.linear_schedule(cfg.lr, final, decay)],
            [rest - decay],
        )
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), after], [warmup])


def decay_mask(params: Any, decay_embeddings: bool) -> Any:
    """Tree of bools like ``params``: True where weight decay applies."""

    def keep(path: tuple[Any, ...], _leaf: Any) -> bool:
        names = [getattr(k, "key", str(k)) for k in path]
        if names[-1] == "kernel":
            return decay_embeddings or not any(n in HEAD_MODULES for n in names)
        if names[-1] in EMBEDDING_LEAVES:
            return decay_embeddings
        return False  # norm scales (and anything else 1-D per layer)

    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(
    cfg: OptimizerConfig, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(update rule, learning-rate schedule); the step logs ``schedule(step)``."""
    schedule = learning_rate_schedule(cfg, total_steps)
    parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
    parts.append(
        optax.adamw(
            schedule,
            b1=cfg.b1,
            b2=cfg.b2,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            mu_dtype=jnp.dtype(cfg.state_dtype),
            mask=lambda p: decay_mask(p, cfg.decay_embeddings),
        )
    )
    return optax.chain(*parts), schedule

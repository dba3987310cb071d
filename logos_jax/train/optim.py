"""Optimizer: AdamW with a warmup + cosine / warmup-stable-decay schedule, global-norm clipping and a
weight-decay mask (kernels decay; norm scales never; embeddings / LM head only when asked).

The update is one optax ``GradientTransformation`` computing exactly what
``optax.chain(optax.clip_by_global_norm(c), optax.adamw(...))`` computes, as one element-wise
expression per parameter: XLA then emits a single pass that reads grad, moments and param and writes
them in place. The optax chain compiles to one pass per moment plus the update and a fresh clipped
gradient tree (about 4x slower on CPU for a 110M model; see benchmarks/train.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from logos_jax.config import DTYPES
from logos_jax.params import decays, role_of
from logos_jax.validate import check_fields, check_ranges

SCHEDULES = ("cosine", "wsd", "constant")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with warmup then cosine / warmup-stable-decay (``wsd``) / constant learning rate."""

    lr: float = 3e-4
    schedule: str = "cosine"
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # final lr = lr * min_lr_ratio (cosine and wsd)
    decay_fraction: float = 0.2  # wsd: the last fraction of steps decays linearly
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    decay_embeddings: bool = False  # weight decay on embed_tokens / lm_head (norms never decay)
    clip_norm: float = 1.0  # global-norm clipping; 0 disables
    state_dtype: str = "float32"  # dtype of both Adam moments (whatever the params/grads dtype)
    schedule_steps: int = (
        0  # length of the lr schedule (0: the run's ``steps``); lets a run stop early
    )

    def check(self, where: str) -> None:
        """LogosError ``<where>: optimizer.<field>=...`` for a field of the wrong type or out of range
        (``schedule`` is checked by the train config, against ``SCHEDULES``)."""
        check_fields(self, where, "optimizer.")
        unit = {"min_lr_ratio": self.min_lr_ratio, "decay_fraction": self.decay_fraction}
        check_ranges(
            where,
            [
                (self.lr > 0, f"optimizer.lr={self.lr} must be > 0"),
                *[(0 <= v <= 1, f"optimizer.{k}={v} must be in [0, 1]") for k, v in unit.items()],
                *[
                    (0 <= v < 1, f"optimizer.{k}={v} must be in [0, 1)")
                    for k, v in {"b1": self.b1, "b2": self.b2}.items()
                ],
                (self.eps > 0, f"optimizer.eps={self.eps} must be > 0"),
                *[
                    (v >= 0, f"optimizer.{k}={v} must be >= 0")
                    for k, v in {
                        "warmup_steps": self.warmup_steps,
                        "weight_decay": self.weight_decay,
                        "clip_norm": self.clip_norm,
                        "schedule_steps": self.schedule_steps,
                    }.items()
                ],
                (
                    self.state_dtype in DTYPES,
                    f"optimizer.state_dtype={self.state_dtype!r} is not one of {DTYPES}",
                ),
            ],
        )


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
    """Tree of bools like ``params`` (stacked or per-layer): True where weight decay applies, from
    each tensor's role in the parameter table (``logos_jax.params.decays``)."""

    def keep(path: tuple[Any, ...], _leaf: Any) -> bool:
        names = tuple(getattr(k, "key", str(k)) for k in path)
        return decays(role_of(names), decay_embeddings)

    return jax.tree_util.tree_map_with_path(keep, params)


class AdamWState(NamedTuple):
    count: jax.Array  # int32 [] updates applied so far
    mu: Any  # first moments (``state_dtype``)
    nu: Any  # second moments (``state_dtype``)


def clipped_adamw(
    learning_rate: optax.Schedule,
    *,
    b1: float,
    b2: float,
    eps: float,
    weight_decay: float,
    decay: Any,
    clip_norm: float,
    state_dtype: Any,
) -> optax.GradientTransformation:
    """Global-norm clipping (``clip_norm`` > 0) then AdamW, optax semantics; ``decay(params)`` gives
    the tree of bools saying where weight decay applies. ``update(..., grad_norm=n)`` reuses a
    global norm the caller already computed (saves a pass over the gradients).

    Both moments are kept in ``state_dtype`` whatever the gradients' and params' dtypes, and the
    update is computed in float32 (bf16 gradients are upcast, as optax does by type promotion
    against float32 moments)."""

    def init(params: Any) -> AdamWState:
        def zeros(p: jax.Array) -> jax.Array:
            return jnp.zeros_like(p, dtype=state_dtype)

        return AdamWState(
            count=jnp.zeros([], jnp.int32),
            mu=jax.tree.map(zeros, params),
            nu=jax.tree.map(zeros, params),
        )

    def update(
        grads: Any, state: AdamWState, params: Any, grad_norm: jax.Array | None = None, **_: Any
    ) -> tuple[Any, AdamWState]:
        count = optax.safe_increment(state.count)
        lr = learning_rate(state.count)
        scale = jnp.ones([], jnp.float32)
        if clip_norm > 0:
            norm = optax.tree.norm(grads) if grad_norm is None else grad_norm
            scale = jnp.where(norm < clip_norm, 1.0, clip_norm / norm)
        c1 = 1 - jnp.asarray(b1, jnp.float32) ** count
        c2 = 1 - jnp.asarray(b2, jnp.float32) ** count

        def leaf(g, m, v, p, decays):
            g = g.astype(jnp.float32) * scale
            m = (1 - b1) * g + b1 * m.astype(jnp.float32)
            v = (1 - b2) * jnp.square(g) + b2 * v.astype(jnp.float32)
            u = (m / c1) / (jnp.sqrt(v / c2) + eps)
            if decays:
                u = u + weight_decay * p.astype(jnp.float32)
            return (-lr * u).astype(p.dtype), m.astype(state_dtype), v.astype(state_dtype)

        out = jax.tree.map(leaf, grads, state.mu, state.nu, params, decay(params))
        is_triple = lambda x: isinstance(x, tuple)  # noqa: E731
        part = lambda i: jax.tree.map(lambda t: t[i], out, is_leaf=is_triple)  # noqa: E731
        return part(0), AdamWState(count=count, mu=part(1), nu=part(2))

    return optax.GradientTransformationExtraArgs(init, update)


def make_optimizer(
    cfg: OptimizerConfig, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(update rule, learning-rate schedule); the step logs ``schedule`` at the optimizer's own
    update count (skipped steps do not advance it)."""
    schedule = learning_rate_schedule(cfg, total_steps)
    tx = clipped_adamw(
        schedule,
        b1=cfg.b1,
        b2=cfg.b2,
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        decay=lambda p: decay_mask(p, cfg.decay_embeddings),
        clip_norm=cfg.clip_norm,
        state_dtype=jnp.dtype(cfg.state_dtype),
    )
    return tx, schedule

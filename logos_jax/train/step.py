"""The jitted train and eval steps: packed-sequence loss, gradient accumulation, AdamW update.

Loss: position ``t`` predicts ``tokens[t+1]`` when ``segment_ids[t+1] == segment_ids[t] != 0``, weighted
by ``target_mask[t+1]`` (SFT zeroes the prompt). Cross-entropy is computed from the final hidden states
in chunks of ``loss_chunk`` positions (each chunk's logits are recomputed in the backward pass, so the
``[batch, seq, vocab]`` logits never live at once). A step whose loss or gradient is not finite leaves
params and optimizer state untouched; ``bad_step`` / ``skipped`` in the state tell the host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from logos_jax.batch import KEYS as BATCH_KEYS  # the one batch schema
from logos_jax.batch import abstract_batch  # noqa: F401  (re-exported for the loop and benchmarks)
from logos_jax.config import ModelConfig
from logos_jax.data.corpus import MODALITIES
from logos_jax.model import Decoder, abstract_params, param_shardings
from logos_jax.model.layers import linear
from logos_jax.params import get_path, head_path
from logos_jax.sharding import DEFAULT_RULES, Rules, batch_sharding, constrain

NUM_MODALITIES = len(MODALITIES)


@flax.struct.dataclass
class TrainState:
    """Everything that changes from step to step (all device arrays)."""

    step: jax.Array  # int32 [] steps taken
    params: Any
    opt_state: Any
    rng: jax.Array  # uint32 [2] raw PRNG key data, split every step
    bad_step: jax.Array  # int32 [] first step with a non-finite loss/grad, -1 if none
    skipped: jax.Array  # int32 [] non-finite steps skipped (nan_policy=skip)


@dataclasses.dataclass(frozen=True)
class LossConfig:
    loss_chunk: int = 0  # positions per cross-entropy chunk (0: the whole sequence)
    z_loss: float = 0.0


def shift_targets(batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(targets, weights, target modality), each ``[batch, seq]``; the last position has weight 0."""
    tokens, seg = batch["tokens"], batch["segment_ids"]

    def shift(x: jax.Array) -> jax.Array:
        return jnp.concatenate([x[:, 1:], jnp.zeros_like(x[:, :1])], axis=1)

    same = (shift(seg) == seg) & (seg != 0)
    weights = same.astype(jnp.float32) * shift(batch["target_mask"]).astype(jnp.float32)
    return shift(tokens), weights, shift(batch["modality"])


def token_losses(
    params: Any,
    batch: dict[str, jax.Array],
    model: Decoder,
    loss: LossConfig,
) -> tuple[jax.Array, jax.Array]:
    """Per-position cross-entropy and log-partition ``[batch, seq]`` float32 (targets = next token)."""
    config = model.config
    hidden, _ = model.apply(
        {"params": params},
        batch["tokens"],
        batch["positions"],
        batch["segment_ids"],
        return_hidden=True,
    )
    targets, _, _ = shift_targets(batch)
    head = get_path(params, head_path(config)).astype(hidden.dtype)  # [vocab, hidden]
    b, s, d = hidden.shape
    chunk = loss.loss_chunk or s
    n = s // chunk

    def chunk_loss(h: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        logits = linear(h, head, preferred_element_type=jnp.float32)  # [b, chunk, vocab]
        logits = constrain(logits, ("batch", "seq", "vocab"), model.mesh, model.rules)
        lse = jax.nn.logsumexp(logits, axis=-1)
        picked = jnp.take_along_axis(logits, t[..., None], axis=-1)[..., 0]
        return lse - picked, lse

    if n == 1:
        return chunk_loss(hidden, targets)
    # [n, b, chunk, d]: scan over chunks, logits rematerialised in the backward pass.
    hs = hidden.reshape(b, n, chunk, d).swapaxes(0, 1)
    ts = targets.reshape(b, n, chunk).swapaxes(0, 1)
    body = jax.checkpoint(lambda _, x: (None, chunk_loss(*x)))
    _, (ce, lse) = jax.lax.scan(body, None, (hs, ts))
    return ce.swapaxes(0, 1).reshape(b, s), lse.swapaxes(0, 1).reshape(b, s)


def loss_sums(
    params: Any, batch: dict[str, jax.Array], model: Decoder, loss: LossConfig
) -> dict[str, jax.Array]:
    """Weighted sums over one (micro-)batch: ce, z (lse^2), weight, and per-modality ce / weight."""
    ce, lse = token_losses(params, batch, model, loss)
    _, weights, modality = shift_targets(batch)
    ids = jnp.clip(modality, 0, NUM_MODALITIES - 1).reshape(-1)
    return {
        "ce": jnp.sum(ce * weights),
        "z": jnp.sum(jnp.square(lse) * weights),
        "weight": jnp.sum(weights),
        "modality_ce": jax.ops.segment_sum((ce * weights).reshape(-1), ids, NUM_MODALITIES),
        "modality_weight": jax.ops.segment_sum(weights.reshape(-1), ids, NUM_MODALITIES),
    }


def make_train_step(
    model: Decoder,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    loss: LossConfig,
    grad_accum: int,
    nan_policy: str,
) -> Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]:
    """``step(state, batch) -> (state, metrics)`` (un-jitted; see ``jit_train_step``).

    batch: ``BATCH_KEYS`` each ``[global_batch, seq]``; with ``grad_accum = A`` the batch is split into
    A micro-batches (row ``r * A + i`` goes to micro-batch ``i``, so no rows change device).
    ``tx.update`` is passed the gradient's global norm as ``grad_norm`` (ignored if it takes none).
    """
    tx = optax.with_extra_args_support(tx)

    def objective(params, micro, total_weight):
        sums = loss_sums(params, micro, model, loss)
        value = (sums["ce"] + loss.z_loss * sums["z"]) / total_weight
        return value, sums

    grad_fn = jax.grad(objective, has_aux=True)

    def step(state: TrainState, batch: dict[str, jax.Array]):
        batch = {k: batch[k] for k in BATCH_KEYS}
        total_weight = jnp.maximum(jnp.sum(shift_targets(batch)[1]), 1.0)
        if grad_accum == 1:
            grads, sums = grad_fn(state.params, batch, total_weight)
        else:
            micro = {
                k: v.reshape(v.shape[0] // grad_accum, grad_accum, *v.shape[1:]).swapaxes(0, 1)
                for k, v in batch.items()
            }

            def accumulate(carry, mb):
                g, s = grad_fn(state.params, mb, total_weight)
                return jax.tree.map(jnp.add, carry, (g, s)), None

            zeros = jax.tree.map(
                jnp.zeros_like,
                jax.eval_shape(
                    grad_fn, state.params, jax.tree.map(lambda v: v[0], micro), total_weight
                ),
            )
            (grads, sums), _ = jax.lax.scan(accumulate, zeros, micro)
        grad_norm = optax.tree.norm(grads)
        ce = sums["ce"] / total_weight
        finite = jnp.isfinite(ce) & jnp.isfinite(grad_norm)
        apply = finite if nan_policy == "skip" else finite & (state.bad_step < 0)

        def update(_):
            updates, opt_state = tx.update(
                grads, state.opt_state, state.params, grad_norm=grad_norm
            )
            return optax.apply_updates(state.params, updates), opt_state

        # A branch, not a select: a skipped step costs nothing and params are never touched.
        params, opt_state = jax.lax.cond(
            apply, update, lambda _: (state.params, state.opt_state), None
        )
        new_rng, _ = jax.random.split(jax.random.wrap_key_data(state.rng))
        new_state = TrainState(
            step=state.step + 1,
            params=params,
            opt_state=opt_state,
            rng=jax.random.key_data(new_rng),
            bad_step=jnp.where(~finite & (state.bad_step < 0), state.step, state.bad_step),
            skipped=state.skipped + (~finite).astype(jnp.int32),
        )
        metrics = {
            "loss": ce,
            "z_loss": sums["z"] / total_weight,
            "grad_norm": grad_norm,
            # The optimizer's own count: it does not advance on skipped steps, state.step does.
            "lr": schedule(optax.tree_utils.tree_get(state.opt_state, "count")),
            "target_tokens": sums["weight"],
            "modality_ce": sums["modality_ce"],
            "modality_weight": sums["modality_weight"],
        }
        return new_state, metrics

    return step


@dataclasses.dataclass(frozen=True)
class StatePlacement:
    """Shardings and abstract shapes of a ``TrainState`` on one mesh (jit and restore targets)."""

    shardings: TrainState
    abstract: TrainState
    batch: NamedSharding
    replicated: NamedSharding


def state_placement(
    config: ModelConfig,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    rules: Rules = DEFAULT_RULES,
    scan_layers: bool = True,
) -> StatePlacement:
    """Optimizer moments take their parameter's sharding; scalars are replicated.

    ``scan_layers=False``: params (and moments) hold one ``layers_{i}`` subtree per block.
    """
    replicated = NamedSharding(mesh, PartitionSpec())
    p_shard = param_shardings(config, mesh, rules, scan_layers)
    p_abstract = abstract_params(config, mesh, rules, scan_layers)
    opt_shapes = jax.eval_shape(tx.init, p_abstract)
    opt_shard = optax.tree_map_params(
        tx, lambda _, s: s, opt_shapes, p_shard, transform_non_params=lambda _: replicated
    )

    def with_sharding(shape, sharding):
        return jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding)

    opt_abstract = jax.tree.map(with_sharding, opt_shapes, opt_shard)
    scalar = jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated)
    shardings = TrainState(
        step=replicated,
        params=p_shard,
        opt_state=opt_shard,
        rng=replicated,
        bad_step=replicated,
        skipped=replicated,
    )
    abstract = TrainState(
        step=scalar,
        params=p_abstract,
        opt_state=opt_abstract,
        rng=jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=replicated),
        bad_step=scalar,
        skipped=scalar,
    )
    return StatePlacement(shardings, abstract, batch_sharding(mesh, rules), replicated)


def init_state(
    params: Any, tx: optax.GradientTransformation, placement: StatePlacement, seed: int
) -> TrainState:
    """A fresh state at step 0 around ``params`` (already sharded as ``placement.shardings.params``)."""
    opt_state = jax.jit(tx.init, out_shardings=placement.shardings.opt_state)(params)

    def put(x):
        return jax.device_put(x, placement.replicated)

    return TrainState(
        step=put(jnp.zeros((), jnp.int32)),
        params=params,
        opt_state=opt_state,
        rng=put(jax.random.key_data(jax.random.PRNGKey(seed))),
        bad_step=put(jnp.full((), -1, jnp.int32)),
        skipped=put(jnp.zeros((), jnp.int32)),
    )


def jit_train_step(step: Callable, placement: StatePlacement) -> Callable:
    """``jax.jit`` with explicit shardings; the old state's buffers are donated."""
    batch = {k: placement.batch for k in BATCH_KEYS}
    return jax.jit(
        step,
        in_shardings=(placement.shardings, batch),
        out_shardings=(placement.shardings, placement.replicated),
        donate_argnums=0,
    )


def make_eval_step(model: Decoder, loss: LossConfig, placement: StatePlacement) -> Callable:
    """``eval(params, batch) -> loss sums`` (see ``loss_sums``), jitted over the mesh."""
    batch = {k: placement.batch for k in BATCH_KEYS}
    return jax.jit(
        lambda params, b: loss_sums(params, {k: b[k] for k in BATCH_KEYS}, model, loss),
        in_shardings=(placement.shardings.params, batch),
        out_shardings=placement.replicated,
    )

"""The decoder: embedding, scanned blocks (stacked params, optional remat), final norm, LM head.

One module for Llama-3 and Qwen3 (flags in ``ModelConfig``). ``Decoder.__call__`` serves training
(``segment_ids`` for packed documents) and the decode engine's prefill chunks and decode steps
(``kv``: KV pages, see ``logos_jax.model.attention.PagedKV``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from logos_jax.config import ModelConfig
from logos_jax.model.attention import AttentionKernel, PagedKV
from logos_jax.model.layers import MLP, Attention, RMSNorm, dtype_of, linear, table_param
from logos_jax.model.rope import cos_sin
from logos_jax.sharding import DEFAULT_RULES, Rules, constrain

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``.

    ``carry = (x, kv)``: the KV pages (per-layer blocks only, ``layer`` a Python int) pass from
    block to block as one value, each block writing its own layer's pages in place.
    """

    config: ModelConfig
    kernel: AttentionKernel = AttentionKernel()
    kernels_in_out: bool = False

    @nn.compact
    def __call__(self, carry, cos, sin, segment_ids, layer):
        x, kv = carry
        cfg = self.config
        dtype = dtype_of(cfg.compute_dtype)
        h = RMSNorm(cfg.norm_eps, dtype, name="input_layernorm")(x)
        attn, kv = Attention(cfg, self.kernel, self.kernels_in_out, name="self_attn")(
            h, cos, sin, segment_ids, kv, layer
        )
        x = x + attn
        h = RMSNorm(cfg.norm_eps, dtype, name="post_attention_layernorm")(x)
        return (x + MLP(cfg, self.kernels_in_out, name="mlp")(h), kv), None


class Weight(nn.Module):
    """A module holding one table parameter (``leaf``): the embedding table, the LM head."""

    leaf: str

    @nn.compact
    def __call__(self) -> jnp.ndarray:
        return table_param(self, self.leaf)


class Decoder(nn.Module):
    """Causal LM. ``mesh`` (optional) adds activation sharding constraints from ``rules``;
    ``attention`` picks the training / prefill attention kernel (``attention.IMPLEMENTATIONS``);
    ``kernels_in_out``: the blocks' linear kernels are ``[in, out]`` (see ``kernels_to_in_out``),
    not the table's ``[out, in]``."""

    config: ModelConfig
    remat_policy: str = "none"
    mesh: Mesh | None = None
    rules: Rules = DEFAULT_RULES
    scan_layers: bool = True
    attention: str = "xla"
    kernels_in_out: bool = False

    def _constrain(self, x: jnp.ndarray, axes: tuple[str | None, ...]) -> jnp.ndarray:
        return constrain(x, axes, self.mesh, self.rules)

    @nn.compact
    def __call__(
        self,
        tokens: jnp.ndarray,
        positions: jnp.ndarray,
        segment_ids: jnp.ndarray | None = None,
        kv: PagedKV | None = None,
        return_hidden: bool = False,
    ) -> tuple[jnp.ndarray, PagedKV | None]:
        """tokens, positions, segment_ids ``[batch, seq]`` int32 -> logits ``[batch, seq, vocab]``
        float32 (or the final hidden states ``[batch, seq, hidden]`` with ``return_hidden``), and
        ``kv`` with this call's keys/values written (None without it).

        Without ``kv``, tokens attend within their segment (packed documents); with it, each row
        attends over its pages (``segment_ids`` is then unused).
        """
        cfg = self.config
        dtype = dtype_of(cfg.compute_dtype)
        if segment_ids is None:
            segment_ids = jnp.ones_like(tokens)
        embedding = Weight("embedding", name="embed_tokens")()  # [vocab, hidden]
        # The lookup reads a table gathered over ``embed`` (as FSDP gathers every kernel) and still
        # split over ``vocab``: the gather's rows then follow the batch's sharding. Gathering
        # straight from the [vocab, embed]-sharded table leaves XLA no efficient plan (it
        # replicates the output: "[SPMD] Involuntary full rematerialization").
        table = self._constrain(embedding, ("vocab", None))
        x = self._constrain(
            jnp.take(table, tokens, axis=0).astype(dtype), ("batch", "seq", "embed")
        )
        cos, sin = cos_sin(cfg, positions)

        kernel = AttentionKernel(self.attention, self.mesh, self.rules)
        block = Block
        if self.remat_policy != "none":
            block = nn.remat(Block, policy=REMAT_POLICIES[self.remat_policy], prevent_cse=False)
        if self.scan_layers:
            layer_ids = jnp.arange(cfg.num_layers)
            blocks = nn.scan(
                block,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0),
                length=cfg.num_layers,
            )(cfg, kernel, self.kernels_in_out, name="layers")
            (x, kv), _ = blocks((x, kv), cos, sin, segment_ids, layer_ids)
        else:
            for i in range(cfg.num_layers):
                layer = block(cfg, kernel, self.kernels_in_out, name=f"layers_{i}")
                (x, kv), _ = layer((x, kv), cos, sin, segment_ids, i)
        x = RMSNorm(cfg.norm_eps, dtype, name="norm")(x)

        if return_hidden:
            return x, kv
        # The head is the table's ``head_path``: the embedding when tied.
        head = embedding if cfg.tie_embeddings else Weight("weight", name="lm_head")()
        logits = linear(x.astype(dtype), head.astype(dtype))
        logits = self._constrain(logits, ("batch", "seq", "vocab"))
        return logits.astype(jnp.float32), kv

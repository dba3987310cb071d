"""Attention cores: grouped-query softmax attention over a mask, and the paged KV store decode reads.

``dot_product_attention`` is the one entry point both the training step (no cache, a segment/causal
mask) and the decode engine (keys and values read from KV pages) end in. ``PagedKV`` holds every
layer's KV pages and, for one model call, where the new tokens are written and which pages each
row's queries read (see ``logos_jax.engine`` for who fills it).
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def dot_product_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, dtype: jnp.dtype
) -> jax.Array:
    """Softmax attention with grouped KV heads.

    q ``[batch, seq, heads, head_dim]`` (unscaled, after RoPE); k, v ``[batch, kv_heads, kv_len,
    head_dim]``; mask ``[batch, 1, 1, seq, kv_len]`` bool (True = may attend). Returns
    ``[batch, seq, heads * head_dim]`` in ``dtype``. Scores and the softmax are float32.
    """
    batch, seq, heads, hd = q.shape
    kv_heads, kv_len = k.shape[1], k.shape[2]
    group = heads // kv_heads
    # Head-major operands (XLA's batched matmuls take them without extra copies):
    # [batch, kv_heads, group * seq, head_dim] x [batch, kv_heads, kv_len, head_dim].
    q = q.reshape(batch, seq, kv_heads, group, hd).transpose(0, 2, 3, 1, 4)
    q = q.reshape(batch, kv_heads, group * seq, hd).astype(dtype)
    k, v = k.astype(dtype), v.astype(dtype)
    scores = jnp.einsum("bkqd,bktd->bkqt", q, k, preferred_element_type=jnp.float32)
    scores = scores.reshape(batch, kv_heads, group, seq, kv_len) * (hd**-0.5)
    scores = jnp.where(mask, scores, MASK_VALUE)
    # Softmax with the normalisation after the PV matmul: [.., q, head_dim] divides instead
    # of [.., q, kv] (the max is a constant shift, so it carries no gradient).
    shift = jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True))
    weights = jnp.exp(scores - shift)
    total = jnp.sum(weights, axis=-1).reshape(batch, kv_heads, group * seq, 1)
    weights = weights.astype(dtype).reshape(batch, kv_heads, group * seq, kv_len)
    out = jnp.einsum("bkqt,bktd->bkqd", weights, v, preferred_element_type=jnp.float32)
    out = (out / total).astype(dtype)
    out = out.reshape(batch, kv_heads, group, seq, hd).transpose(0, 3, 1, 2, 4)
    return out.reshape(batch, seq, heads * hd)


def segment_mask(
    q_segment: jax.Array, kv_segment: jax.Array, q_index: jax.Array, kv_index: jax.Array
) -> jax.Array:
    """``[batch, 1, 1, q, kv]`` bool: same segment and causal (packed documents never see each other).

    q_segment ``[batch, q]``, kv_segment ``[batch, kv]`` (0 = padding), q_index ``[q]`` and
    kv_index ``[kv]`` are indices in the sequence.
    """
    same = q_segment[:, :, None] == kv_segment[:, None, :]
    causal = kv_index[None, None, :] <= q_index[None, :, None]
    return (same & causal)[:, None, None, :, :]


@flax.struct.dataclass
class PagedKV:
    """Every layer's keys and values in fixed-size pages, plus one model call's page addressing.

    k, v ``[layers, pages, kv_heads, page_size, head_dim]``; page 0 is scratch (padding tokens and
    idle rows write there; nothing reads it unmasked). For the call's tokens ``[batch, seq]``:
    ``write_page`` / ``write_offset`` say where each new key/value goes, ``positions`` are the
    tokens' positions in their sequence (a row's sequence is laid out in its pages in order, position
    ``p`` at page ``read_pages[row, p // page_size]``, offset ``p % page_size``), and ``read_pages``
    ``[batch, pages_read]`` is the prefix of each row's page table that its queries attend over.
    """

    k: jax.Array
    v: jax.Array
    write_page: jax.Array
    write_offset: jax.Array
    positions: jax.Array
    read_pages: jax.Array

    @property
    def page_size(self) -> int:
        return self.k.shape[3]

    def attend(
        self, layer: jax.Array | int, q: jax.Array, k: jax.Array, v: jax.Array, dtype: jnp.dtype
    ) -> tuple[jax.Array, PagedKV]:
        """Write this call's k, v ``[batch, seq, kv_heads, head_dim]`` into ``layer``'s pages (in
        place when the pages are a loop carry or donated), then attend q ``[batch, seq, heads,
        head_dim]`` over the pages in ``read_pages``. Returns ``[batch, seq, heads * head_dim]``."""
        idx = (layer, self.write_page, slice(None), self.write_offset)
        k_pages = self.k.at[idx].set(k.astype(self.k.dtype))
        v_pages = self.v.at[idx].set(v.astype(self.v.dtype))
        out = paged_attention(q, k_pages, v_pages, layer, self.read_pages, self.positions, dtype)
        return out, self.replace(k=k_pages, v=v_pages)


def paged_attention(
    q: jax.Array,
    k_pages: jax.Array,
    v_pages: jax.Array,
    layer: jax.Array | int,
    read_pages: jax.Array,
    positions: jax.Array,
    dtype: jnp.dtype,
) -> jax.Array:
    """Causal attention of q ``[batch, seq, heads, head_dim]`` at ``positions`` ``[batch, seq]`` over
    the pages ``read_pages`` ``[batch, n]`` of ``layer`` in k/v_pages ``[layers, pages, kv_heads,
    page_size, head_dim]``.

    Gathers only the ``n`` pages each row reads (``n`` is the caller's bucket of the longest row),
    so the cost follows what is in the cache, not its capacity.
    """
    batch, n = read_pages.shape
    kv_heads, page_size, hd = k_pages.shape[2:]

    def gather(pages: jax.Array) -> jax.Array:  # -> [batch, kv_heads, n * page_size, head_dim]
        rows = pages[layer, read_pages].transpose(0, 2, 1, 3, 4)
        return rows.reshape(batch, kv_heads, n * page_size, hd)

    kv_pos = jnp.arange(n * page_size)
    mask = (kv_pos[None, None, :] <= positions[:, :, None])[:, None, None]
    return dot_product_attention(q, gather(k_pages), gather(v_pages), mask, dtype)

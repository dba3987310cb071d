"""Attention cores: grouped-query softmax attention over a mask, and the paged KV store decode reads.

``dot_product_attention`` is the one entry point both the training step (no cache, a segment/causal
mask) and the decode engine (keys and values read from KV pages) end in. ``PagedKV`` holds every
layer's KV pages and, for one model call, where the new tokens are written and which pages each
row's queries read (see ``logos_jax.engine`` for who fills it).
"""

from __future__ import annotations

import dataclasses

import flax
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from logos_jax.errors import LogosError
from logos_jax.sharding import DEFAULT_RULES, Rules, logical_to_spec

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


# ----- Training / prefill attention over packed segments: one entry point, three kernels -----

IMPLEMENTATIONS = ("xla", "flash", "auto")
SPLASH_BLOCKS = (512, 256, 128)  # the largest that divides seq is the splash block along q and kv


def resolve_implementation(implementation: str, platform: str, dtype: jnp.dtype, seq: int) -> str:
    """The kernel that ``implementation`` runs on ``platform`` (``cpu`` / ``tpu`` / ``gpu`` for
    NVIDIA, see ``device_platform``): ``xla`` (``dot_product_attention``), ``splash`` (the Pallas
    TPU flash kernel shipped with JAX; on CPU in Pallas interpret mode, which is slow and meant for
    tests) or ``cudnn`` (cuDNN flash attention). ``auto``: splash on TPU when ``seq`` is a multiple
    of 128, cuDNN on an NVIDIA GPU for 16-bit compute, otherwise xla."""
    if implementation not in IMPLEMENTATIONS:
        raise LogosError(f"attention={implementation!r} is not one of {IMPLEMENTATIONS}")
    flash = implementation == "flash"
    if implementation == "xla":
        return "xla"
    if platform == "gpu":
        if jnp.dtype(dtype).itemsize == 2:
            return "cudnn"
        if flash:
            raise LogosError("attention=flash on GPU (cuDNN) needs compute_dtype bfloat16/float16")
        return "xla"
    if platform not in ("tpu", "cpu"):
        if flash:
            raise LogosError(f"attention=flash has no kernel on {platform}; use xla or auto")
        return "xla"
    if seq % SPLASH_BLOCKS[-1]:
        if flash:
            raise LogosError(f"attention=flash needs seq_len a multiple of 128, got {seq}")
        return "xla"
    return "splash" if platform == "tpu" or flash else "xla"


def device_platform(device: jax.Device) -> str:
    """``cpu`` / ``tpu`` / ``gpu`` (NVIDIA, where cuDNN is) or the device's own platform name."""
    if device.platform == "gpu" and not device.device_kind.upper().startswith("NVIDIA"):
        return "rocm"
    return device.platform


def _splash_kernel(heads: int, seq: int, interpret: bool):
    """A causal splash kernel for ``heads`` query heads over ``seq`` positions (per example)."""
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    block = next(b for b in SPLASH_BLOCKS if seq % b == 0)
    sizes = splash.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    mask = splash.MultiHeadMask([splash.CausalMask((seq, seq))] * heads)
    return splash.make_splash_mha(
        mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret
    )


def splash_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    segment_ids: jax.Array,
    dtype: jnp.dtype,
    mesh: Mesh | None = None,
    rules: Rules = DEFAULT_RULES,
    *,
    interpret: bool = False,
) -> jax.Array:
    """``segment_attention`` with the Pallas splash kernel (GQA: each kv head serves its group of
    query heads; segment ids mask across documents; never a ``[seq, seq]`` array in memory).

    On a ``mesh`` the kernel runs per device under ``shard_map``: batch over the batch axes, heads
    over ``tensor`` when it divides both the query and the kv heads (else heads stay whole).
    """
    batch, seq, heads, hd = q.shape
    q = (q * hd**-0.5).astype(dtype).transpose(0, 2, 1, 3)  # [batch, heads, seq, head_dim]
    k, v = k.astype(dtype), v.astype(dtype)

    def local(q: jax.Array, k: jax.Array, v: jax.Array, seg: jax.Array) -> jax.Array:
        from jax.experimental.pallas.ops.tpu.splash_attention import SegmentIds

        kernel = _splash_kernel(q.shape[1], seq, interpret)
        one = lambda q, k, v, s: kernel(q, k, v, segment_ids=SegmentIds(s, s))  # noqa: E731
        return jax.vmap(one)(q, k, v, seg)

    if mesh is not None:
        q_spec = logical_to_spec(("batch", "q_heads", None, None), q.shape, mesh, rules)
        kv_spec = logical_to_spec(("batch", "kv_heads", None, None), k.shape, mesh, rules)
        if q_spec[1] != kv_spec[1]:  # a split that would separate a kv head from its queries
            q_spec = kv_spec = PartitionSpec(q_spec[0], None, None, None)
        local = jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(q_spec, kv_spec, kv_spec, PartitionSpec(q_spec[0], None)),
            out_specs=q_spec,
            check_vma=False,
        )
    out = local(q, k, v, segment_ids)
    return out.transpose(0, 2, 1, 3).reshape(batch, seq, heads * hd).astype(dtype)


def nn_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    segment_ids: jax.Array,
    dtype: jnp.dtype,
    implementation: str = "cudnn",
) -> jax.Array:
    """``segment_attention`` through ``jax.nn.dot_product_attention`` (``implementation="cudnn"``:
    cuDNN flash attention, which skips the masked upper triangle; GQA natively; the documents of a
    packed row are separated by a ``[batch, 1, seq, seq]`` bool mask)."""
    batch, seq, heads, hd = q.shape
    k, v = (t.transpose(0, 2, 1, 3).astype(dtype) for t in (k, v))  # [batch, seq, kv_heads, hd]
    same = (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]
    out = jax.nn.dot_product_attention(
        q.astype(dtype), k, v, mask=same, is_causal=True, implementation=implementation
    )
    return out.reshape(batch, seq, heads * hd).astype(dtype)


@dataclasses.dataclass(frozen=True)
class AttentionKernel:
    """Training / prefill attention: which implementation (``IMPLEMENTATIONS``) and the mesh it
    runs on (the platform is the mesh's, so an ahead-of-time compile for TPU picks the TPU kernel)."""

    implementation: str = "xla"
    mesh: Mesh | None = None
    rules: Rules = DEFAULT_RULES

    def __call__(
        self, q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, dtype: jnp.dtype
    ) -> jax.Array:
        """Causal attention within packed segments: q ``[batch, seq, heads, head_dim]`` (unscaled,
        after RoPE), k, v ``[batch, kv_heads, seq, head_dim]``, segment_ids ``[batch, seq]`` int32
        (0 = padding, which attends to padding only). Returns ``[batch, seq, heads * head_dim]``."""
        device = jax.devices()[0] if self.mesh is None else self.mesh.devices.flat[0]
        platform = device_platform(device)
        kind = resolve_implementation(self.implementation, platform, dtype, q.shape[1])
        if kind == "splash":
            interpret = platform == "cpu"
            return splash_attention(
                q, k, v, segment_ids, dtype, self.mesh, self.rules, interpret=interpret
            )
        if kind == "cudnn":
            return nn_attention(q, k, v, segment_ids, dtype)
        index = jnp.arange(q.shape[1])
        return dot_product_attention(
            q, k, v, segment_mask(segment_ids, segment_ids, index, index), dtype
        )


@dataclasses.dataclass(frozen=True)
class PageLayout:
    """How one layer's key (or value) pages are laid out, and the reads and writes that depend on it.

    ``pages_major``: ``[pages, kv_heads, ...]``, a page one contiguous block (the XLA paged
    attention gathers whole pages: 1.5x faster on CPU than the other order); otherwise
    ``[kv_heads, pages, ...]``, the order the Pallas paged-attention kernels read. A page is
    ``[page_size, head_dim]``, or ``[head_dim, page_size]`` when ``tokens_last``: the XLA path
    keeps keys that way, so scores are a plain ``[q, head_dim] x [head_dim, tokens]`` product
    (XLA:CPU ran the transposed-operand form 4x slower, per block read).
    """

    pages_major: bool
    tokens_last: bool = False

    @property
    def page_axis(self) -> int:
        return 0 if self.pages_major else 1

    def shape(self, num_pages: int, kv_heads: int, page_size: int, head_dim: int) -> tuple:
        lead = (num_pages, kv_heads) if self.pages_major else (kv_heads, num_pages)
        return lead + ((head_dim, page_size) if self.tokens_last else (page_size, head_dim))

    def page_size(self, pages: jax.Array) -> int:
        return pages.shape[3 if self.tokens_last else 2]

    def kv_heads(self, pages: jax.Array) -> int:
        return pages.shape[1 - self.page_axis]

    @property
    def axes(self) -> tuple[str | None, ...]:
        """Logical axes: rows read any page, so pages are never split over the batch axes; heads
        follow the attention weights' split."""
        lead = (None, "kv_heads") if self.pages_major else ("kv_heads", None)
        return lead + (("head_dim", None) if self.tokens_last else (None, "head_dim"))

    def write(
        self, pages: jax.Array, page: jax.Array, offset: jax.Array, new: jax.Array
    ) -> jax.Array:
        """``new`` ``[batch, seq, kv_heads, head_dim]`` written at page, offset ``[batch, seq]``."""
        new = new.astype(pages.dtype)
        # Advanced indices around a slice put [batch, seq] first in the update; adjacent ones
        # put it where they stand.
        if self.tokens_last:
            if self.pages_major:
                return pages.at[page, :, :, offset].set(new)
            return pages.at[:, page, :, offset].set(new)
        if self.pages_major:
            return pages.at[page, :, offset].set(new)
        return pages.at[:, page, offset].set(new.transpose(2, 0, 1, 3))

    def gather(self, pages: jax.Array, cols: jax.Array) -> jax.Array:
        """The pages ``cols`` ``[batch, n]`` of each row, in order: ``[batch, kv_heads, n *
        page_size, head_dim]``, or ``[batch, kv_heads, head_dim, n * page_size]`` when
        ``tokens_last``."""
        batch, n = cols.shape
        # picked: [batch, n, kv_heads, a, b] (pages-major) or [kv_heads, batch, n, a, b].
        picked = pages[cols] if self.pages_major else pages[:, cols]
        b, k, p = (0, 2, 1) if self.pages_major else (1, 0, 2)
        if self.tokens_last:  # -> [batch, kv_heads, head_dim, n, page_size]
            picked = picked.transpose(b, k, 3, p, 4)
            return picked.reshape(batch, picked.shape[1], picked.shape[2], -1)
        picked = picked.transpose(b, k, p, 3, 4)  # -> [batch, kv_heads, n, page_size, head_dim]
        return picked.reshape(batch, picked.shape[1], -1, picked.shape[4])

    def copy(self, pages: jax.Array, src: jax.Array, dst: jax.Array) -> jax.Array:
        """Page ``src[i]`` copied to page ``dst[i]`` (``[n]`` each)."""
        if self.pages_major:
            return pages.at[dst].set(pages[src])
        return pages.at[:, dst].set(pages[:, src])


@dataclasses.dataclass(frozen=True)
class KVLayout:
    """The page layouts of keys and of values, as the decode kernel reads them."""

    k: PageLayout
    v: PageLayout

    @classmethod
    def for_kernel(cls, kernel: str) -> KVLayout:
        """The layouts the decode kernel ``kernel`` ("xla", "pallas", "pallas_interpret") reads."""
        if kernel == "xla":
            return cls(PageLayout(pages_major=True, tokens_last=True), PageLayout(pages_major=True))
        return cls(PageLayout(pages_major=False), PageLayout(pages_major=False))


@flax.struct.dataclass
class PagedKV:
    """Every layer's keys and values in fixed-size pages, plus one model call's page addressing.

    k, v: one array per layer, laid out as ``layout.k`` / ``layout.v`` say (the kernel's
    ``KVLayout``); page 0 is scratch (padding tokens and idle rows write there; nothing reads it
    unmasked). For the call's tokens ``[batch, seq]``: ``write_page`` / ``write_offset`` say
    where each new key/value goes, ``positions`` are the tokens' positions in their sequence (a
    row's sequence is laid out in its pages in order, position ``p`` at page
    ``page_table[row, p // page_size]``, offset ``p % page_size``). ``page_table``
    ``[batch, max_pages]`` (a multiple of ``block_pages`` wide) lists each row's pages; attention
    reads its first ``num_blocks`` blocks of ``block_pages`` pages, a count the caller sets from
    the longest live row. ``kernel``: "xla", or "pallas" / "pallas_interpret" for the Pallas
    paged-attention kernel (decode calls, one token per row).
    """

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    write_page: jax.Array
    write_offset: jax.Array
    positions: jax.Array
    page_table: jax.Array
    num_blocks: jax.Array
    block_pages: int = flax.struct.field(pytree_node=False, default=8)
    kernel: str = flax.struct.field(pytree_node=False, default="xla")

    @property
    def layout(self) -> KVLayout:
        return KVLayout.for_kernel(self.kernel)

    def attend(
        self, layer: int, q: jax.Array, k: jax.Array, v: jax.Array, dtype: jnp.dtype
    ) -> tuple[jax.Array, PagedKV]:
        """Write this call's k, v ``[batch, seq, kv_heads, head_dim]`` into ``layer``'s pages (in
        place when the pages are a loop carry or donated), then attend q ``[batch, seq, heads,
        head_dim]`` over the row's pages. Returns ``[batch, seq, heads * head_dim]``."""
        if not isinstance(layer, int):
            raise ValueError("paged attention needs per-layer weights (scan_layers=False)")
        at = (self.write_page, self.write_offset)
        k_layer = self.layout.k.write(self.k[layer], *at, k)
        v_layer = self.layout.v.write(self.v[layer], *at, v)
        if self.kernel != "xla" and q.shape[1] == 1:
            out = pallas_paged_attention(
                q,
                k_layer,
                v_layer,
                self.page_table,
                self.positions[:, 0] + 1,
                self.block_pages,
                interpret=self.kernel == "pallas_interpret",
            ).astype(dtype)
        else:
            out = paged_attention(
                q,
                k_layer,
                v_layer,
                self.page_table,
                self.positions,
                self.num_blocks,
                self.block_pages,
                self.layout,
                dtype,
            )
        replace = lambda pages, new: (*pages[:layer], new, *pages[layer + 1 :])  # noqa: E731
        return out, self.replace(k=replace(self.k, k_layer), v=replace(self.v, v_layer))


def paged_attention(
    q: jax.Array,
    k_pages: jax.Array,
    v_pages: jax.Array,
    page_table: jax.Array,
    positions: jax.Array,
    num_blocks: jax.Array,
    block_pages: int,
    layout: KVLayout,
    dtype: jnp.dtype,
) -> jax.Array:
    """Causal attention of q ``[batch, seq, heads, head_dim]`` at ``positions`` ``[batch, seq]`` over
    one layer's k_pages and v_pages (laid out as ``layout.k`` and ``layout.v`` say).

    A loop over the first ``num_blocks`` blocks of ``block_pages`` columns of ``page_table``
    ``[batch, max_pages]`` with an online softmax (flash-decoding): each step gathers one block of
    pages per row, so the cost follows the longest live row, not the cache's capacity, and no
    temporary is larger than a block. Returns ``[batch, seq, heads * head_dim]`` in ``dtype``.
    """
    batch, seq, heads, hd = q.shape
    kv_heads, page_size = layout.v.kv_heads(v_pages), layout.v.page_size(v_pages)
    group = heads // kv_heads
    width = block_pages * page_size
    rows = group * seq
    # Operands batch- then kv-head-major: [batch, kv_heads, group * seq, head_dim].
    qh = q.reshape(batch, seq, kv_heads, group, hd).transpose(0, 2, 3, 1, 4)
    qh = qh.reshape(batch, kv_heads, rows, hd).astype(dtype)
    q_pos = jnp.broadcast_to(positions[:, None, :], (batch, group, seq)).reshape(batch, 1, rows, 1)
    # Gathered keys / values are [.., tokens, head_dim], or [.., head_dim, tokens] if tokens_last.
    score_dims = "bkqd,bkdt->bkqt" if layout.k.tokens_last else "bkqd,bktd->bkqt"
    value_dims = "bkqt,bkdt->bkqd" if layout.v.tokens_last else "bkqt,bktd->bkqd"

    def body(j, carry):
        top, total, acc = carry
        cols = jax.lax.dynamic_slice_in_dim(page_table, j * block_pages, block_pages, axis=1)
        keys = layout.k.gather(k_pages, cols).astype(dtype)  # [batch, kv_heads, ...]
        values = layout.v.gather(v_pages, cols).astype(dtype)
        scores = jnp.einsum(score_dims, qh, keys, preferred_element_type=jnp.float32)
        kv_pos = j * width + jnp.arange(width)
        scores = jnp.where(kv_pos <= q_pos, scores * (hd**-0.5), MASK_VALUE)
        new_top = jnp.maximum(top, jnp.max(scores, axis=-1, keepdims=True))
        weights = jnp.exp(scores - new_top)
        rescale = jnp.exp(top - new_top)
        total = total * rescale + jnp.sum(weights, axis=-1, keepdims=True)
        pv = jnp.einsum(
            value_dims, weights.astype(dtype), values, preferred_element_type=jnp.float32
        )
        return new_top, total, acc * rescale + pv

    init = (
        jnp.full((batch, kv_heads, rows, 1), MASK_VALUE, jnp.float32),
        jnp.zeros((batch, kv_heads, rows, 1), jnp.float32),
        jnp.zeros((batch, kv_heads, rows, hd), jnp.float32),
    )
    _, total, acc = jax.lax.fori_loop(0, num_blocks, body, init)
    out = (acc / total).astype(dtype).reshape(batch, kv_heads, group, seq, hd)
    return out.transpose(0, 3, 1, 2, 4).reshape(batch, seq, heads * hd)


def pallas_paged_attention(
    q: jax.Array,
    k_pages: jax.Array,
    v_pages: jax.Array,
    page_table: jax.Array,
    lengths: jax.Array,
    block_pages: int,
    *,
    interpret: bool = False,
) -> jax.Array:
    """One query per row through the Pallas paged-attention kernel that ships with JAX (the TPU
    kernel on TPU, the Triton one elsewhere; ``interpret`` runs the latter on CPU for tests).

    q ``[batch, 1, heads, head_dim]``, k/v_pages ``[kv_heads, pages, page_size, head_dim]``,
    page_table ``[batch, max_pages]``, lengths ``[batch]`` (the query sees positions below it).
    Returns ``[batch, 1, heads * head_dim]`` float32.
    """
    batch, _, heads, hd = q.shape
    scaled = (q[:, 0].astype(jnp.float32) * hd**-0.5).astype(k_pages.dtype)
    lengths = lengths.astype(jnp.int32)
    if jax.default_backend() == "tpu" and not interpret:
        from jax.experimental.pallas.ops.tpu.paged_attention import paged_attention as kernel

        out = kernel(
            scaled, k_pages, v_pages, lengths, page_table, pages_per_compute_block=block_pages
        )
    else:
        from jax.experimental.pallas.ops.gpu.paged_attention import paged_attention as kernel

        out = kernel(
            scaled,
            k_pages,
            v_pages,
            page_table,
            lengths,
            block_h=16,
            pages_per_compute_block=block_pages,
            k_splits=page_table.shape[1] // block_pages,
            interpret=interpret,
        )
    return out.reshape(batch, 1, heads * hd).astype(jnp.float32)

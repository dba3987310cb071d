"""Rotary position embeddings in the Hugging Face convention (half rotation), with "llama3" scaling.

Frequencies are computed in float32 exactly as transformers does (``_compute_llama3_parameters``), so
logits agree far past the original context (e.g. position 30,000 with Llama-3.2's factor 32).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from logos_jax.config import ModelConfig


def inverse_frequencies(config: ModelConfig) -> np.ndarray:
    """``[head_dim // 2]`` float32 inverse frequencies, llama3-scaled when the config says so."""
    dim = config.head_dim
    exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    inv_freq = (1.0 / (np.float32(config.rope_theta) ** exponents)).astype(np.float32)
    scaling = config.rope_scaling
    if scaling is None:
        return inv_freq
    low_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
    high_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
    wavelen = (2 * math.pi / inv_freq).astype(np.float32)
    scaled = np.where(wavelen > low_wavelen, inv_freq / np.float32(scaling.factor), inv_freq)
    smooth = (scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / np.float32(scaling.factor) + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def cos_sin(config: ModelConfig, positions: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """cos, sin of ``positions [batch, seq]`` -> each ``[batch, seq, head_dim]`` float32."""
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inverse_frequencies(config))
    angles = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
    """Rotate ``x [batch, seq, heads, head_dim]`` by ``cos/sin [batch, seq, head_dim]`` (half rotation)."""
    cos = cos[:, :, None, :].astype(x.dtype)
    sin = sin[:, :, None, :].astype(x.dtype)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin

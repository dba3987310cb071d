"""Checkpoint conversion between Hugging Face folders and logos model folders."""

from logos_jax.convert.hf2jax import hf_to_jax, iter_hf_params
from logos_jax.convert.jax2hf import jax_to_hf
from logos_jax.convert.resize import resize_embeddings

__all__ = ["hf_to_jax", "jax_to_hf", "iter_hf_params", "resize_embeddings"]

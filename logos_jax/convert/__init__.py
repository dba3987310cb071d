"""Checkpoint conversion between Hugging Face folders and logos model folders.

``hf2jax`` (HF -> logos, no JAX needed; it grows the vocabulary with ``logos_jax.embedding_resize``),
``jax2hf`` (logos -> HF), ``hf_folder`` (an HF folder read against the parameter table, ``logos_jax.params``), ``safetensors_io``, ``orbax_format``.
Import from the submodules (importing this package loads nothing heavy).
"""

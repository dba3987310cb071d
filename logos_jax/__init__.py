"""logos_jax: the JAX/Flax implementation of LOGOS, a scientific generative language model.

Subpackages: ``grammar`` (tags, layouts, parser), ``model`` (the decoder), ``convert`` (HF <-> JAX),
``data`` (corpus builder and Grain pipeline), ``train``, ``sample``, ``eval``.
"""

__version__ = "0.1.0"

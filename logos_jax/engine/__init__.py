"""The decode engine: paged KV cache, continuous batching, shared prompt pages, beam search.

``Engine`` (driver, ``engine.py``) runs the pure jitted programs of ``programs.py`` over the
device state of ``state.py``; ``pages.py`` keeps the host's page bookkeeping and ``beam.py`` runs
beam search on the same pages. ``logos_jax.sample.Sampler`` is the list-in, list-out front end.
"""

from logos_jax.engine.beam import beam_search
from logos_jax.engine.engine import Completion, DecodeWeights, Engine, Request

__all__ = ["Completion", "DecodeWeights", "Engine", "Request", "beam_search"]

"""Batch sampling: logits processors, the KV-cache decode loop, grammar constraints, task jobs.

Names are imported on first use, so ``logos --help`` (which imports ``sample.commands``) stays free
of JAX. The task presets live in ``logos_jax.tasks`` (``eval/`` uses them too, without importing
``sample/``); ``TASKS``, ``BadRow``, ``Task`` and ``get_task`` are re-exported from there.
"""

from __future__ import annotations

import importlib
from typing import Any

# The longest copy draft a step verifies (binding-site answers under grammar constraints); 0 = off.
SPECULATE = 4

# name -> the module that defines it (relative to this package, or absolute)
_EXPORTS = {
    "BlockGrammar": ".constraints",
    "ProteinCopy": ".constraints",
    "block_grammar": ".constraints",
    "protein_copy": ".constraints",
    "SamplingReport": ".jobs",
    "run_sampling": ".jobs",
    "SamplingConfig": ".processors",
    "process_logits": ".processors",
    "Completion": ".sampler",
    "Sampler": ".sampler",
    "TASKS": "logos_jax.tasks",
    "BadRow": "logos_jax.tasks",
    "Task": "logos_jax.tasks",
    "get_task": "logos_jax.tasks",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)

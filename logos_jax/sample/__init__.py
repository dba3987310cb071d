"""Batch sampling: logits processors, the KV-cache decode loop, grammar constraints, task jobs.

Names are imported on first use, so ``logos --help`` (which imports ``sample.commands``) stays free
of JAX.
"""

from __future__ import annotations

import importlib
from typing import Any

# The longest copy draft a step verifies (binding-site answers under grammar constraints); 0 = off.
SPECULATE = 8

_EXPORTS = {
    "BlockGrammar": "constraints",
    "ProteinCopy": "constraints",
    "block_grammar": "constraints",
    "protein_copy": "constraints",
    "SamplingReport": "jobs",
    "run_sampling": "jobs",
    "SamplingConfig": "processors",
    "process_logits": "processors",
    "Completion": "sampler",
    "Sampler": "sampler",
    "TASKS": "tasks",
    "BadRow": "tasks",
    "Task": "tasks",
    "get_task": "tasks",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)

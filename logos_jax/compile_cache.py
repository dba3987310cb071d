"""A persistent XLA compilation cache for ``logos`` commands: a repeated job skips its compiles.

Where: ``$LOGOS_COMPILE_CACHE`` (a folder; ``off`` turns the cache off), else
``$XDG_CACHE_HOME/logos_jax/xla`` (``~/.cache/logos_jax/xla``). Programs that compile in less than
``MIN_COMPILE_SECONDS`` are not stored. JAX keys every entry by the program, its compile options,
the devices and the JAX version, so an entry is only ever reused for the same program.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV = "LOGOS_COMPILE_CACHE"
# Loading an entry costs ~30 ms here; the engine's small programs (admission, slot selection, the
# weight relayout) compile in 0.1-0.3 s each, so they are worth storing; one-op programs are not.
MIN_COMPILE_SECONDS = 0.1


def cache_dir() -> Path | None:
    """The cache folder this process should use (None: off)."""
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in ("off", "0", "false", "") else Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "logos_jax" / "xla"


def enable() -> Path | None:
    """Point JAX's persistent compilation cache at ``cache_dir()``; returns the folder (None: off,
    or the folder cannot be created, which is reported and otherwise ignored)."""
    folder = cache_dir()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"logos: compilation cache off ({folder}: {err.strerror})", file=sys.stderr)
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return folder

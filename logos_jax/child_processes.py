"""Worker processes that die with the process that started them.

``kill -9`` runs no clean-up, so a parent cannot stop its workers when it is killed that way; each
worker therefore watches its own parent and exits once it has been re-parented (the parent is gone).
Used by the corpus builder's process pool and by the training data pipeline's Grain workers.
"""

from __future__ import annotations

import os
import threading
import time

POLL_SECONDS = 0.5


def exit_with_parent(parent: int) -> None:
    """Start a daemon thread that ends this process (exit status 1) when ``parent`` is no longer its
    parent process."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def grain_worker_init(parent: int, worker_index: int, worker_count: int) -> None:
    """A Grain ``worker_init_fn`` (bind ``parent`` with ``functools.partial``)."""
    del worker_index, worker_count
    exit_with_parent(parent)

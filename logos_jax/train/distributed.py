"""Multi-host start-up: ``jax.distributed.initialize`` from the config or the environment, with a timeout.

Explicit settings (``distributed.coordinator`` / ``num_processes`` / ``process_id``) win; otherwise
``LOGOS_COORDINATOR`` / ``LOGOS_NUM_PROCESSES`` / ``LOGOS_PROCESS_ID``; otherwise JAX's own cluster
detection (TPU pods, SLURM) fills them in. Must run before any other JAX call.
"""

from __future__ import annotations

import os
import sys
import threading

import jax

from logos_jax.errors import LogosError
from logos_jax.train.config import DistributedConfig

ENV = {
    "coordinator": "LOGOS_COORDINATOR",
    "num_processes": "LOGOS_NUM_PROCESSES",
    "process_id": "LOGOS_PROCESS_ID",
}


def resolve(cfg: DistributedConfig) -> dict[str, object]:
    """The ``jax.distributed.initialize`` keyword arguments (None: let JAX detect them)."""
    coordinator = cfg.coordinator or os.environ.get(ENV["coordinator"])
    num = (
        cfg.num_processes if cfg.num_processes is not None else os.environ.get(ENV["num_processes"])
    )
    pid = cfg.process_id if cfg.process_id is not None else os.environ.get(ENV["process_id"])
    return {
        "coordinator_address": coordinator,
        "num_processes": None if num is None else int(num),
        "process_id": None if pid is None else int(pid),
    }


def initialize(cfg: DistributedConfig) -> bool:
    """Join the multi-process job when enabled (or when LOGOS_COORDINATOR is set). True if joined.

    JAX aborts the whole process (a C++ fatal error) when peers are missing, so a watchdog thread
    prints what went wrong and exits with status 2 once ``timeout_s`` has passed.
    """
    if not cfg.enabled and ENV["coordinator"] not in os.environ:
        return False
    kwargs = resolve(cfg)
    joined = threading.Event()

    def watchdog() -> None:
        if not joined.wait(cfg.timeout_s):
            print(
                f"logos train: error: jax.distributed.initialize({kwargs}) did not finish within "
                f"{cfg.timeout_s}s: the other processes did not join (or the coordinator is unreachable). "
                "Fix: start `logos train` on every host with the same coordinator address and "
                "num_processes and distinct process ids, or raise distributed.timeout_s if hosts start "
                "slowly",
                file=sys.stderr,
                flush=True,
            )
            os._exit(2)

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        jax.distributed.initialize(**kwargs, initialization_timeout=cfg.timeout_s + 60)
    except (
        Exception
    ) as err:  # jaxlib raises XlaRuntimeError / RuntimeError with a long gRPC message
        raise LogosError(
            f"jax.distributed.initialize({kwargs}) failed: {str(err).splitlines()[0] if str(err) else err!r}"
        ) from None
    finally:
        joined.set()
    return True

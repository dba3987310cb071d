"""Multi-host start-up: ``jax.distributed.initialize`` from settings or the environment, with a timeout.

Shared by ``logos train`` and ``logos sample``. Explicit settings (``coordinator`` / ``num_processes`` /
``process_id``) win; otherwise ``LOGOS_COORDINATOR`` / ``LOGOS_NUM_PROCESSES`` / ``LOGOS_PROCESS_ID``;
otherwise JAX's own cluster detection (TPU pods, SLURM) fills them in. Must run before any other JAX
call.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
from typing import Protocol

import jax

from logos_jax.errors import LogosError

ENV = {
    "coordinator": "LOGOS_COORDINATOR",
    "num_processes": "LOGOS_NUM_PROCESSES",
    "process_id": "LOGOS_PROCESS_ID",
}


class Settings(Protocol):
    """What ``initialize`` reads (``train.config.DistributedConfig`` is one)."""

    enabled: bool
    coordinator: str | None
    num_processes: int | None
    process_id: int | None
    timeout_s: int


@dataclasses.dataclass(frozen=True)
class Options:
    """Settings for a command without a config file (``logos sample --distributed``)."""

    enabled: bool = False
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    timeout_s: int = 300


def resolve(cfg: Settings) -> dict[str, object]:
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


def initialize(
    cfg: Settings, command: str = "logos train", timeout_setting: str = "distributed.timeout_s"
) -> bool:
    """Join the multi-process job when enabled (or when LOGOS_COORDINATOR is set). True if joined.

    JAX aborts the whole process (a C++ fatal error) when peers are missing, so a watchdog thread
    prints what went wrong and exits with status 2 once ``timeout_s`` has passed. ``command`` and
    ``timeout_setting`` name the command and its timeout setting in that message.
    """
    if not cfg.enabled and ENV["coordinator"] not in os.environ:
        return False
    kwargs = resolve(cfg)
    joined = threading.Event()

    def watchdog() -> None:
        if not joined.wait(cfg.timeout_s):
            print(
                f"{command}: error: jax.distributed.initialize({kwargs}) did not finish within "
                f"{cfg.timeout_s}s: the other processes did not join (or the coordinator is unreachable). "
                f"Fix: start `{command}` on every host with the same coordinator address and "
                f"num_processes and distinct process ids, or raise {timeout_setting} if hosts start "
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

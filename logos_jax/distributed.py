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

import jax

from logos_jax.errors import LogosError
from logos_jax.validate import check_fields, check_ranges

ENV = {
    "coordinator": "LOGOS_COORDINATOR",
    "num_processes": "LOGOS_NUM_PROCESSES",
    "process_id": "LOGOS_PROCESS_ID",
}


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """``jax.distributed.initialize`` settings; null fields come from the environment (TPU/SLURM).

    The ``distributed:`` section of a train config, and ``logos sample --distributed``'s options.
    """

    enabled: bool = False
    coordinator: str | None = None  # "host:port"; or env LOGOS_COORDINATOR
    num_processes: int | None = None  # or env LOGOS_NUM_PROCESSES
    process_id: int | None = None  # or env LOGOS_PROCESS_ID
    timeout_s: int = 300

    def check(self, where: str) -> None:
        """LogosError ``<where>: distributed.<field>=...`` for a field of the wrong type or out of
        range."""
        check_fields(self, where, "distributed.")
        check_ranges(
            where,
            [
                (self.timeout_s > 0, f"distributed.timeout_s={self.timeout_s} must be > 0"),
                (
                    self.num_processes is None or self.num_processes >= 1,
                    f"distributed.num_processes={self.num_processes} must be >= 1",
                ),
                (
                    self.process_id is None or self.process_id >= 0,
                    f"distributed.process_id={self.process_id} must be >= 0",
                ),
            ],
        )


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


def initialize(
    cfg: DistributedConfig,
    command: str = "logos train",
    timeout_setting: str = "distributed.timeout_s",
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

"""User-facing errors: raised for a user's mistake, printed by the CLI as one message (no traceback)."""

import sys
from typing import Any

CLOSED_LOOP = "Event loop is closed"


class LogosError(Exception):
    """A problem the user can fix (bad path, bad config key, missing extra, corrupt file...).

    The message must name the problem and, where there is one, the fix.
    """


def missing_extra(package: str, extra: str) -> LogosError:
    """The error for an optional dependency that is not installed."""
    return LogosError(
        f"this feature needs the '{package}' package, which is not installed. "
        f"Install it with: pip install 'logos_jax[{extra}]'"
    )


def quiet_closed_loop_reports() -> None:
    """Drop the ``RuntimeError: Event loop is closed`` reports that follow a failed Orbax read.

    Orbax runs a restore's reads on an event loop it closes as soon as one read fails; the reads
    still in flight then report to the closed loop from their own threads, and Python prints each
    as an "Exception ignored" traceback after the clear message this package already gave (a dozen
    interleaved tracebacks for one corrupt checkpoint). Called before Orbax reads (once is enough);
    every other unraisable exception still reaches the previous hook."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_closed_loop_reports", False):
        return

    def hook(unraisable: Any) -> None:
        error = unraisable.exc_value
        if isinstance(error, RuntimeError) and str(error) == CLOSED_LOOP:
            return
        previous(unraisable)

    hook.drops_closed_loop_reports = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook

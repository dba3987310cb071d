"""User-facing errors: raised for a user's mistake, printed by the CLI as one message (no traceback)."""


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

"""Safe outputs: atomic files with the user's umask, output-vs-input checks, stale temp clean-up.

``tempfile.mkstemp`` / ``mkdtemp`` create mode 0600 / 0700 (private), which is right for a temporary
name but wrong for the file it becomes: a shared cluster's other users could not read the outputs.
Everything renamed into place here gets ``0666 & ~umask`` (files) or ``0777 & ~umask`` (folders),
what ``open()`` / ``mkdir`` would have given.

Temporary folders are named ``.<name>.tmp-<pid>-<random>``; ``remove_stale_temps`` deletes those of
processes that no longer run (a killed ``hf2jax`` would otherwise leave a model-sized hidden folder).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from logos_jax.errors import LogosError


def umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def public_mode(path: str | Path, *, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open()`` / ``mkdir`` would: ``0666/0777 & ~umask``."""
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling + rename (readers never see half a file)."""
    path = Path(path)
    if path.is_dir():
        raise LogosError(f"{path} is a folder; expected a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise writable_error(path, err) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        public_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def writable_error(path: str | Path, err: OSError) -> LogosError:
    """The one-line error for an output that cannot be created (read-only, a file as a folder...)."""
    return LogosError(f"cannot write {path}: {err.strerror or err}")


def make_dir(path: str | Path) -> Path:
    """``mkdir -p`` for an output folder; a LogosError when it cannot be created."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise writable_error(path, err) from None
    return path


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same file (also through links, or both not existing yet)."""
    a, b = Path(a), Path(b)
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def refuse_overwrite_input(output: str | Path, inputs: dict[str, str | Path | None]) -> None:
    """LogosError when ``output`` is one of ``inputs`` (``{"--input": path}``): writing would destroy it."""
    out = Path(output)
    for flag, path in inputs.items():
        if path is None:
            continue
        if out.absolute() == Path(path).absolute() or same_file(out, path):
            raise LogosError(
                f"the output {output} is the {flag} file; writing it would destroy the input. "
                "fix: choose another output path"
            )


def temp_dir_beside(target: Path) -> Path:
    """A new temporary folder beside ``target`` named ``.<name>.tmp-<pid>-<random>``."""
    make_dir(target.parent)
    try:
        return Path(
            tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent)
        )
    except OSError as err:
        raise writable_error(target, err) from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(target: Path) -> list[Path]:
    """Delete ``temp_dir_beside(target)`` folders whose process is gone; returns the removed paths."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern = re.compile(re.escape(f".{target.name}.tmp-") + r"(\d+)-")
    removed = []
    for entry in target.parent.iterdir():
        match = pattern.match(entry.name)
        if match and entry.is_dir() and not _alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed

"""Safe outputs: atomic files with the user's umask, output-vs-input checks, stale temp clean-up.

Every output written "all or nothing" goes through this module: ``atomic_path`` (a writer that takes a
path), ``atomic_open`` (a file object), ``atomic_write_text`` (a string) and ``atomic_folder`` (a
folder). Each writes a temporary sibling and renames it onto the target only when the writing block
ended cleanly; on an error the temporary is deleted and the target is untouched.

``tempfile.mkstemp`` / ``mkdtemp`` create mode 0600 / 0700 (private), which is right for a temporary
name but wrong for the file it becomes: a shared cluster's other users could not read the outputs.
Everything renamed into place here gets what ``open()`` / ``mkdir`` would have given: a replaced
file keeps its mode, a new one gets ``0666 & ~umask`` (files) or ``0777 & ~umask`` (folders).

Temporary files and folders are named ``.<name>.tmp-<pid>-<random>``; before each write,
``remove_stale_temps`` deletes the target's temporaries whose process no longer runs (a killed
``hf2jax`` would otherwise leave a model-sized hidden folder, a killed job a half-written file).
``remove_temp_files`` deletes every temporary file under a folder whose only writer is known to be
gone (a resumed build's own output), whatever its process id.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from logos_jax.errors import LogosError


def umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def public_mode(path: str | Path, *, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open()`` / ``mkdir`` would: ``0666/0777 & ~umask``."""
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())


def open_mode(path: str | Path) -> int:
    """The mode ``open(path, "w")`` leaves: the existing file's, or ``0666 & ~umask`` for a new one."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~umask()


@contextmanager
def atomic_path(path: str | Path, *, why: str = "write") -> Iterator[Path]:
    """Yield a temporary file path beside ``path`` (``.<name>.tmp-<pid>-<random>``) for a writer that
    takes a path; when the block ends cleanly the file is synced to disk, given ``open_mode(path)``
    and renamed onto ``path``; when it raises, the temporary is deleted. Temporaries of ``path`` left
    by killed processes are deleted first. A folder that cannot hold the temporary is a LogosError
    ``cannot {why} {path}: {reason}``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path))
    except OSError as err:
        raise LogosError(f"cannot {why} {path}: {err.strerror or err}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, open_mode(path))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, why: str = "write") -> Iterator[IO[Any]]:
    """``open(path, mode)`` ("w" text in UTF-8, or "wb") whose contents replace ``path`` in one rename
    when the block ends cleanly (``atomic_path``); readers never see half a file."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a whole file: mode 'w' or 'wb', not {mode!r}")
    with (
        atomic_path(path, why=why) as tmp,
        open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f,
    ):
        yield f


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling + rename (readers never see half a file)."""
    path = Path(path)
    if path.is_dir():
        raise LogosError(f"{path} is a folder; expected a file path")
    with atomic_open(path) as f:
        f.write(text)


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


def temp_prefix(target: Path) -> str:
    """The name of this process's temporaries of ``target``, up to the random part."""
    return f".{target.name}.tmp-{os.getpid()}-"


def temp_dir_beside(target: Path) -> Path:
    """A new temporary folder beside ``target`` named ``.<name>.tmp-<pid>-<random>``."""
    make_dir(target.parent)
    try:
        return Path(tempfile.mkdtemp(prefix=temp_prefix(target), dir=target.parent))
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
    """Delete the temporaries of ``target`` (files of ``atomic_path``, folders of
    ``temp_dir_beside``) whose process is gone; returns the removed paths."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern = re.compile(re.escape(f".{target.name}.tmp-") + r"(\d+)-")
    removed = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:  # a folder we may write to but not list: nothing to clean
        return []
    for entry in entries:
        match = pattern.match(entry.name)
        if match and not _alive(int(match.group(1))):
            try:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink(missing_ok=True)
            except OSError:  # another user's, or gone meanwhile: not ours to insist on
                continue
            removed.append(entry)
    return removed


def remove_temp_files(folder: Path) -> list[Path]:
    """Delete the ``atomic_path`` temporaries (``.<name>.tmp-<pid>-<random>``) anywhere under
    ``folder``, whatever their process; only for a folder no running process writes. Returns the
    removed paths."""
    pattern = re.compile(r"\..+\.tmp-\d+-")
    removed = [p for p in Path(folder).rglob(".*.tmp-*") if p.is_file() and pattern.match(p.name)]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


@contextmanager
def atomic_folder(out_dir: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``out_dir`` that becomes ``out_dir`` when the block succeeds
    (one rename) and is deleted when it raises. ``out_dir`` must not exist. Temporary folders of
    killed earlier runs are removed first."""
    out_dir = Path(out_dir).absolute()
    if out_dir.exists():
        raise LogosError(f"{out_dir} already exists; choose a new output folder or delete it")
    make_dir(out_dir.parent)
    for stale in remove_stale_temps(out_dir):
        print(f"removed {stale}, left by an interrupted run", file=sys.stderr)
    tmp = temp_dir_beside(out_dir)
    try:
        yield tmp
        public_mode(tmp, directory=True)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

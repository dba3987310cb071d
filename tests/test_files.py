"""The one atomic-write helper (``logos_jax.files``): modes like ``open()``, nothing half-written."""

import os
import re
import stat
from pathlib import Path

import pytest

from logos_jax.errors import LogosError
from logos_jax.files import atomic_open, atomic_path, atomic_write_text, open_mode

REPO_ROOT = Path(__file__).resolve().parent.parent


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_files_get_the_umask_and_replaced_files_keep_their_mode(tmp_path):
    old = os.umask(0o027)
    try:
        new = tmp_path / "sub" / "new.txt"
        atomic_write_text(new, "a\n")
        assert new.read_text() == "a\n" and mode(new) == 0o640
        kept = tmp_path / "kept.txt"
        kept.write_text("old")
        os.chmod(kept, 0o604)
        with atomic_open(kept) as f:
            f.write("new")
        assert kept.read_text() == "new" and mode(kept) == 0o604 == open_mode(kept)
    finally:
        os.umask(old)


def test_a_failed_write_leaves_the_target_and_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"before")
    with pytest.raises(RuntimeError), atomic_open(target, "wb") as f:
        f.write(b"half")
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_atomic_path_serves_writers_that_take_a_path(tmp_path):
    target = tmp_path / "shard.array_record"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".shard.array_record.")
        assert not target.exists()
        tmp.write_bytes(b"records")
    assert target.read_bytes() == b"records"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard.array_record"]


def test_unwritable_targets_are_one_line_errors(tmp_path):
    (tmp_path / "file").write_text("")
    blocked = atomic_open(tmp_path / "file" / "x", why="merge into")
    with pytest.raises(LogosError, match=r"^cannot merge into .*file/x: "), blocked:
        pass
    with pytest.raises(LogosError, match="is a folder"):
        atomic_write_text(tmp_path, "x")
    with pytest.raises(ValueError, match="mode"), atomic_open(tmp_path / "y", "a"):
        pass


def test_no_hand_written_atomic_writes_outside_files_py():
    """temp file + ``os.replace`` is written once, in ``logos_jax/files.py``."""
    allowed = {"logos_jax/files.py"}
    found = [
        path.relative_to(REPO_ROOT).as_posix()
        for path in (REPO_ROOT / "logos_jax").rglob("*.py")
        if re.search(r"\bos\.replace\(|\bmkstemp\(", path.read_text())
    ]
    assert sorted(set(found) - allowed) == []

"""Multi-host sampling: each model replica samples its own slice of the inputs into a part file.

A *replica* is the group of processes that holds one copy of the model: processes
``[k * p, (k + 1) * p)`` form replica ``k`` when the model is sharded over ``p`` processes (its
``--mesh`` needs ``p`` hosts' devices). Replica ``k`` of ``n`` takes the inputs whose position in the
input file (after bad rows) is ``k`` modulo ``n``: the slice depends only on the inputs and ``n``, not
on timing, so a killed host that is started again resumes its own part. The replica's first
process writes ``<out>.part-<k>-of-<n>`` with the resumable JSONL machinery (``logos_jax.jsonl_io``); once every
process is done (a collective, which doubles as a barrier), process 0 merges the parts and any
complete inputs already in ``<out>`` into ``<out>`` in input order (temp file + ``os.replace``) and
removes the parts.

Only replicas of one process are implemented (the model replicated on every host, sharded over its
local devices): the decode engine feeds and reads host-local arrays, so a mesh that spans hosts is
refused with a clear error. ``--out`` must be on a filesystem every host sees (NFS, gcsfuse): process
0 reads the other hosts' parts.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import jax
import numpy as np
from jax.sharding import Mesh

from logos_jax import jsonl_io
from logos_jax.errors import LogosError
from logos_jax.sharding import MeshConfig, make_mesh

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Replica:
    """Replica ``index`` of ``count``; ``processes`` per replica; ``writer``: this process writes
    the replica's part (its first process)."""

    index: int
    count: int
    processes: int = 1
    writer: bool = True

    def take(self, items: Sequence[T]) -> list[T]:
        """This replica's slice: the items at positions ``index`` modulo ``count``."""
        return list(items[self.index :: self.count])

    def part(self, out: Path) -> Path:
        return part_path(out, self.index, self.count)


def replica_for(process_index: int, process_count: int, processes_per_replica: int) -> Replica:
    """The replica of ``process_index`` when the model is sharded over ``processes_per_replica``
    consecutive processes."""
    if processes_per_replica < 1 or process_count % processes_per_replica:
        raise LogosError(
            f"a model replica over {processes_per_replica} processes does not divide the "
            f"{process_count} processes of this job; fix: choose --mesh so that its devices are "
            "one host's, or a whole number of hosts that divides the job"
        )
    return Replica(
        index=process_index // processes_per_replica,
        count=process_count // processes_per_replica,
        processes=processes_per_replica,
        writer=process_index % processes_per_replica == 0,
    )


def local_replica(config: MeshConfig) -> tuple[Replica, Mesh]:
    """This process's replica and the mesh of its model copy, for a job of several processes."""
    local = jax.local_devices()
    sizes = (config.data, config.fsdp, config.tensor)
    known = math.prod(s for s in sizes if s != -1)
    per_replica = 1 if known <= len(local) else math.ceil(known / len(local))
    replica = replica_for(jax.process_index(), jax.process_count(), per_replica)
    if replica.processes > 1:
        raise LogosError(
            f"--mesh {','.join(map(str, sizes))} needs {known} devices but each host has "
            f"{len(local)}: sampling with the model sharded over {replica.processes} hosts is not "
            "supported (the decode engine runs on one host's devices); fix: use a --mesh that fits "
            f"{len(local)} devices (the default 1,-1,1 does): every host then samples its own "
            "slice of the inputs"
        )
    return replica, make_mesh(config, local)


def part_path(out: Path, index: int, count: int) -> Path:
    return out.with_name(f"{out.name}.part-{index}-of-{count}")


def _parts_on_disk(out: Path) -> dict[Path, int]:
    """Existing part files of ``out`` and the replica count each was written for."""
    pattern = re.compile(re.escape(out.name) + r"\.part-(\d+)-of-(\d+)")
    if not out.parent.is_dir():
        return {}
    return {
        p: int(m.group(2))
        for p in out.parent.iterdir()
        if (m := pattern.fullmatch(p.name)) is not None
    }


def done_ids(out: Path, replica: Replica, slice_ids: Sequence[str]) -> set[str]:
    """Ids of this replica's slice already complete in ``<out>`` or in its part (the part is resumed:
    torn rows dropped). A part file of a job with another replica count, or one holding inputs not
    in this slice (another input file), is a LogosError naming the fix."""
    other = sorted((str(p), n) for p, n in _parts_on_disk(out).items() if n != replica.count)
    if other:
        path, n = other[0]
        raise LogosError(
            f"{path}: a part file of a run with another number of hosts (this run has "
            f"{replica.count}); fix: re-run on that run's number of hosts to finish it, or delete "
            f"its {out.name}.part-*-of-{n} files to start over"
        )
    merged = set(jsonl_io.complete_inputs(out))
    part = replica.part(out)
    in_part = jsonl_io.resume(part) if replica.writer else set(jsonl_io.complete_inputs(part))
    stray = sorted(in_part - set(slice_ids))
    if stray:
        raise LogosError(
            f"{part}: holds input id {stray[0]!r}, which is not in this host's slice of the inputs: "
            "it was written for another input file (or other options); fix: run the original "
            "command, or choose another --out"
        )
    return (merged | in_part) & set(slice_ids)


def _all_ok(ok: bool) -> bool:
    """Whether every process is ``ok``; a collective, so also a barrier for all processes.

    A process that was killed breaks the collective: this one then exits at once with status 1
    (``os._exit``: a normal exit would wait in ``jax.distributed``'s shutdown barrier for the dead
    process and then abort with a C++ stack trace).
    """
    from jax.experimental import multihost_utils

    try:
        flags = multihost_utils.process_allgather(np.array([int(ok)], np.int32))
    except Exception as err:  # jaxlib's XlaRuntimeError: the peer's connection went away
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(
            f"logos sample: error: lost another host while waiting for it ({reason}); it was "
            "killed or crashed (see its log). fix: re-run the same command on every host: each "
            "resumes its own part",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)
    return bool(np.all(flags))


def finish(out: Path, replica: Replica, ids: Sequence[str]) -> int:
    """After this process sampled its slice: wait for every process, merge the parts into ``out``
    (process 0), wait again. ``ids``: every usable input id in input order. Returns the number of
    inputs in the merged file; raises (on every process) when a process failed."""
    if not _all_ok(True):
        raise LogosError(
            "another host failed while sampling (see its log); nothing was merged. fix: re-run "
            "the same command on every host: each resumes its own part"
        )
    merged, error = 0, None
    if jax.process_index() == 0:
        try:
            merged = merge(out, replica.count, ids)
        except LogosError as err:
            error = err
    if not _all_ok(error is None):
        if error is not None:
            raise error
        raise LogosError(
            f"process 0 could not merge the parts into {out} (see its log); fix it there and re-run"
        )
    return merged


def fail() -> None:
    """Tell the other processes, waiting in ``finish``, that this one failed (then re-raise)."""
    _all_ok(False)


def merge(out: Path, count: int, ids: Sequence[str]) -> int:
    """Write the complete inputs of ``out`` and its ``count`` parts into ``out`` in ``ids`` order
    (inputs not in ``ids``, from an earlier run, last), atomically; then remove the parts."""
    groups = jsonl_io.complete_inputs(out)
    parts = [part_path(out, k, count) for k in range(count)]
    for k, part in enumerate(parts):
        found = jsonl_io.complete_inputs(part)
        missing = [i for i in ids[k::count] if i not in found and i not in groups]
        if missing:
            where = "is missing" if not part.exists() else f"lacks {len(missing)} input(s)"
            raise LogosError(
                f"{part} {where} (first: {missing[0]!r}): --out must be on a filesystem every host "
                "sees (NFS, gcsfuse), and every host must have finished; fix that and re-run"
            )
        for i, lines in found.items():
            groups.setdefault(i, lines)
    order = {i: n for n, i in enumerate(ids)}
    ranked = sorted(groups, key=lambda i: order.get(i, len(order)))
    jsonl_io.write_atomic(
        out, (line for i in ranked for line in groups[i]), why="merge the parts into"
    )
    for part in parts:
        part.unlink(missing_ok=True)
    return len(groups)

"""Multi-host sampling: 2 processes x 4 CPU devices (jax.distributed over localhost) write the same
rows as 1 process x 8 devices; a process killed mid-run resumes its own part on a re-run, and the
merged output has no duplicates. Plus the slicing / merging rules without processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from logos_jax.cli import main
from logos_jax.errors import LogosError
from logos_jax.sample import multihost
from tests.tiny import residue_model_folder

WORKER = "import sys; from logos_jax.cli import main; sys.exit(main(sys.argv[1:]))"
INPUTS = 10
SAMPLES = 2


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """(argv without --out, input ids in order, the 1-process x 8-device reference rows)."""
    root = tmp_path_factory.mktemp("multihost")
    folder = residue_model_folder(root)[0]
    molecules = ["CCO", "CCN", "OCC", "NCC", "CCS", "SCC", "COC", "CNC", "OCO", "NCN"][:INPUTS]
    rows = [
        {"id": f"m{i}", "test_input": f"<MoleculeS>{m}<MoleculeE><ReverseReact>"}
        for i, m in enumerate(molecules)
    ]
    inp = root / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["sample", "--task", "retro", "--ckpt", str(folder), "--input", str(inp)]
    argv += ["--num-samples", str(SAMPLES), "--max-new-tokens", "16", "--batch-size", "1"]
    # Data parallel (params replicated): a row's numbers do not depend on the device count, so
    # 4 and 8 devices give bit-identical rows. (fsdp sums in another order: last-digit log-probs.)
    argv += ["--temperature", "1.5", "--top-k", "0", "--mesh=-1,1,1", "--no-progress"]
    assert main([*argv, "--out", str(root / "one.jsonl")]) == 0
    return argv, [r["id"] for r in rows], _rows(root / "one.jsonl")


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _in_input_order(rows, ids):
    return sorted(rows, key=lambda r: (ids.index(r["id"]), r["sample"]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(argv, out, port, pid):
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
        JAX_PLATFORMS="cpu",
        LOGOS_COORDINATOR=f"localhost:{port}",
        LOGOS_NUM_PROCESSES="2",
        LOGOS_PROCESS_ID=str(pid),
    )
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, *argv, "--out", str(out), "--distributed-timeout", "60"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run_both(argv, out):
    port = _free_port()
    procs = [_start(argv, out, port, pid) for pid in range(2)]
    errs = [p.communicate(timeout=240)[1] for p in procs]
    for p, err in zip(procs, errs):
        assert p.returncode == 0, err[-3000:]
    return errs


def _lines(path):
    return path.read_text().count("\n") if path.exists() else 0


def test_two_processes_write_the_rows_of_one(job, tmp_path):
    argv, ids, reference = job
    out = tmp_path / "two.jsonl"
    errs = _run_both(argv, out)
    assert f"2 parts merged: {INPUTS} input(s) -> {out}" in errs[0]
    assert f"{INPUTS // 2} input(s) sampled" in errs[1] and "part-1-of-2" in errs[1]
    assert _rows(out) == _in_input_order(reference, ids)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.jsonl"]  # parts removed


def test_killed_process_resumes_its_part_without_duplicates(job, tmp_path):
    argv, ids, reference = job
    out = tmp_path / "kill.jsonl"
    part1 = multihost.part_path(out, 1, 2)
    port = _free_port()
    procs = [_start(argv, out, port, pid) for pid in range(2)]
    deadline = time.monotonic() + 180
    while _lines(part1) < SAMPLES and time.monotonic() < deadline:  # mid-run: an input written
        time.sleep(0.01)
    procs[1].send_signal(signal.SIGKILL)
    procs[1].wait()
    written = _lines(part1)
    assert SAMPLES <= written < INPUTS // 2 * SAMPLES, "process 1 was not killed mid-run"
    # Process 0 finishes its part, then waits for process 1 in vain (it would exit with "lost
    # another host" after ~30 s): the operator stops the job.
    part0 = multihost.part_path(out, 0, 2)
    while _lines(part0) < INPUTS // 2 * SAMPLES and procs[0].poll() is None:
        time.sleep(0.05)
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait()
    assert not out.exists()

    errs = _run_both(argv, out)
    assert f"0 input(s) sampled (0 samples, 0 tokens, 0 tokens/s), {INPUTS // 2} already" in errs[0]
    resumed = int(errs[1].split(" already done")[0].rsplit(", ", 1)[1])
    assert resumed >= written // SAMPLES
    rows = _rows(out)
    keys = [(r["id"], r["sample"]) for r in rows]
    assert len(keys) == len(set(keys)) == INPUTS * SAMPLES
    assert rows == _in_input_order(reference, ids)


def test_replicas_slice_deterministically_and_merge_in_input_order(tmp_path):
    assert multihost.replica_for(3, 4, 1) == multihost.Replica(3, 4)
    assert multihost.replica_for(3, 4, 2) == multihost.Replica(1, 2, processes=2, writer=False)
    with pytest.raises(LogosError, match="does not divide"):
        multihost.replica_for(0, 3, 2)
    slices = [multihost.Replica(k, 3).take(list(range(8))) for k in range(3)]
    assert slices == [[0, 3, 6], [1, 4, 7], [2, 5]]

    out = tmp_path / "o.jsonl"

    def row(i, s=0, n=1):
        return json.dumps({"id": i, "sample": s, "group_size": n}) + "\n"

    multihost.part_path(out, 0, 2).write_text(row("c") + row("a", 0, 2) + row("a", 1, 2))
    multihost.part_path(out, 1, 2).write_text(row("b"))
    assert multihost.merge(out, 2, ["a", "b", "c"]) == 3
    assert out.read_text() == row("a", 0, 2) + row("a", 1, 2) + row("b") + row("c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.jsonl"]

    multihost.part_path(out, 0, 3).write_text(row("a"))
    with pytest.raises(LogosError, match="another number of hosts"):
        multihost.done_ids(out, multihost.Replica(0, 2), ["a"])
    multihost.part_path(out, 0, 3).unlink()
    multihost.part_path(out, 1, 2).write_text(row("zz"))
    with pytest.raises(LogosError, match="not in this host's slice"):
        multihost.done_ids(out, multihost.Replica(1, 2), ["b"])
    multihost.part_path(out, 1, 2).unlink()
    (tmp_path / "p.jsonl").write_text(row("a"))
    with pytest.raises(LogosError, match=r"part-1-of-2 is missing.*filesystem every host"):
        multihost.merge(tmp_path / "p.jsonl", 2, ["a", "b"])


def test_a_lost_host_ends_the_wait_with_a_message(monkeypatch, capsys):
    from jax.experimental import multihost_utils

    def broken(_):
        raise RuntimeError("Gloo context initialization failed: DEADLINE_EXCEEDED\nmore")

    def exit_(code):
        raise SystemExit(code)

    monkeypatch.setattr(multihost_utils, "process_allgather", broken)
    monkeypatch.setattr(multihost.os, "_exit", exit_)
    with pytest.raises(SystemExit) as exited:
        multihost.finish(Path("o.jsonl"), multihost.Replica(0, 2), ["a"])
    err = capsys.readouterr().err
    assert exited.value.code == 1 and err.count("\n") == 1
    assert "lost another host while waiting for it (Gloo context initialization failed" in err
    assert "re-run the same command on every host" in err


def test_launch_scripts_dry_runs():
    from test_train_scripts import TPU, dry_run

    (start,) = dry_run("sample.sh", *TPU, "--", "--task", "retro", "--out", "/mnt/logos/o b.jsonl")
    assert "--worker=all" in start
    assert (
        "logos sample --distributed --no-progress --task retro --out /mnt/logos/o\\ b.jsonl"
        in start
    )
    assert "> sample.log 2>&1 & echo $! > ~/logos/sample.pid" in start
    (logs,) = dry_run("logs.sh", *TPU, "--job", "sample")
    assert "tail -n 100 -f ~/logos/sample.log" in logs
    (stop,) = dry_run("stop.sh", *TPU, "--job", "sample")
    assert "kill $(cat ~/logos/sample.pid)" in stop
    _, srun = dry_run(
        "slurm_gpu.sh", "--dry-run", "--sample", "--task", "retro", "--out", "o.jsonl"
    )
    assert "LOGOS_PROCESS_ID=$SLURM_PROCID logos sample --distributed --no-progress" in srun
    assert srun.endswith("--task retro --out o.jsonl")

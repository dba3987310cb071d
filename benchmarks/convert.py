"""hf2jax wall time vs ``cp`` of the same files, and peak RSS vs checkpoint size.

Builds a synthetic HF checkpoint with the real LOGOS-pretrain-1B shapes (Llama-3.2-1B + grammar tags,
bf16, sharded safetensors, ~2.5 GB), then in one run times (a) ``cp -r`` of the folder — the floor
for any conversion, which must read and write the same bytes — and (b) ``logos convert hf2jax`` in
a fresh process (start-up included), whose peak RSS is its own ``VmHWM`` (``getrusage`` would
also count the memory of this process, which a child inherits until it execs).
Each command starts after a ``sync``; rounds alternate them (the machine is shared) and the median
and best of each are reported. ``--compare DIR`` times the ``hf2jax`` of another checkout (e.g. a
``git worktree`` of an earlier commit) in the same rounds, for before/after figures under one load.

``cp`` and ``hf2jax`` fill the page cache (``hf2jax --direct-io``, also timed, bypasses it), and on
a VM whose freed memory goes back to the host (this one) new page-cache pages cost ~5x more than
pages freed a moment ago. So each of those two runs right after deleting an earlier output: both
are timed in their best case.

    python benchmarks/convert.py [--layers 16] [--rounds 5] [--compare /tmp/logos_base]
Targets (issue 18): time ratio <= 1.5 (median), peak RSS <= 0.3 x checkpoint size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import ml_dtypes
import numpy as np

from logos_jax.config import load_model_config
from logos_jax.convert.safetensors_io import write_safetensors
from logos_jax.grammar.tags import ALL_TAGS
from logos_jax.params import hf_tensors


def build_checkpoint(folder: Path, layers: int, shard_bytes: int = 1 << 30) -> int:
    config = load_model_config("logos-1b").replace(
        num_layers=layers, vocab_size=128256 + len(ALL_TAGS), param_dtype="bfloat16"
    )
    hf = config.to_hf()
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(hf))
    rng = np.random.default_rng(0)
    shards, current, size, total = [], [], 0, 0
    for name, info, _ in hf_tensors(config):
        shape = info.shape
        arr = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(ml_dtypes.bfloat16)
        if current and size + arr.nbytes > shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append((name, arr))
        size += arr.nbytes
        total += arr.nbytes
    shards.append(current)
    weight_map = {}
    for k, tensors in enumerate(shards):
        file = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(folder / file, tensors)
        weight_map.update({n: file for n, _ in tensors})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return sum(p.stat().st_size for p in folder.iterdir())


# `logos` (the CLI entry point), then the process's own peak RSS in kB on the last line.
CONVERT_AND_REPORT_PEAK = (
    "import sys; from logos_jax.cli import main; rc = main(sys.argv[1:]); "
    "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]); sys.exit(rc)"
)


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
    """Wall time and stdout of ``cmd``, started with no dirty pages pending (``sync`` first: writeback
    left over from an earlier step would otherwise throttle whichever command runs second)."""
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
    return time.perf_counter() - start, out


def summary(times: list[float]) -> str:
    return f"median {statistics.median(times):.2f} s (best {min(times):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=16, help="16 = the real 1B")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/logos_convert_bench"))
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument(
        "--compare", type=Path, default=None, help="another checkout whose hf2jax is timed too"
    )
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    src = args.workdir / "hf"
    size = build_checkpoint(src, args.layers)
    print(f"checkpoint: {size / 1e9:.2f} GB on disk ({args.layers} layers, bf16)")

    copy, out = args.workdir / "copy", args.workdir / "jax"
    convert = [sys.executable, "-c", CONVERT_AND_REPORT_PEAK, "convert", "hf2jax", str(src)]
    cp = ["cp", "-r", str(src), str(copy)]
    other = None
    if args.compare is not None:
        other = {**os.environ, "PYTHONPATH": str(args.compare.absolute())}
    subprocess.run(cp, check=True)  # so that the first timed command also follows a deletion
    times: dict[str, list[float]] = {"cp": [], "hf2jax": [], "direct": [], "compare": []}
    peak = 0
    for _ in range(args.rounds):  # interleaved (the machine is shared)
        shutil.rmtree(copy)
        seconds, stdout = timed([*convert, str(out)])
        times["hf2jax"].append(seconds)
        peak = max(peak, int(stdout.split()[-1]) * 1024)  # kB -> bytes
        shutil.rmtree(out)
        times["cp"].append(timed(cp)[0])
        times["direct"].append(timed([*convert, str(out), "--direct-io"])[0])
        shutil.rmtree(out)
        if other is not None:
            times["compare"].append(timed([*convert, str(out)], env=other)[0])
            shutil.rmtree(out)
    cp_s = statistics.median(times["cp"])
    ratio = statistics.median(times["hf2jax"]) / cp_s
    print(f"cp: {summary(times['cp'])}   hf2jax: {summary(times['hf2jax'])}")
    print(
        f"time ratio (medians): {ratio:.2f} (target <= 1.5)   [hf2jax --direct-io: "
        f"{summary(times['direct'])} = {statistics.median(times['direct']) / cp_s:.2f}x]"
    )
    if other is not None:
        compare_s = statistics.median(times["compare"])
        print(f"hf2jax of {args.compare}: {summary(times['compare'])} = {compare_s / cp_s:.2f}x cp")
    print(f"peak RSS: {peak / 1e9:.2f} GB = {peak / size:.2f} x checkpoint (target <= 0.3)")
    print(f"rounds: {json.dumps({k: [round(t, 2) for t in v] for k, v in times.items() if v})}")
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

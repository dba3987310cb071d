"""hf2jax wall time vs ``cp`` of the same files, and peak RSS vs checkpoint size.

Builds a synthetic HF checkpoint with the real LOGOS-pretrain-1B shapes (Llama-3.2-1B + grammar tags,
bf16, sharded safetensors, ~2.5 GB), then in one run times (a) ``cp -r`` of the folder — the floor
for any conversion, which must read and write the same bytes — and (b) ``logos convert hf2jax`` in
a fresh process (start-up included), whose peak RSS is its own ``VmHWM`` (``getrusage`` would
also count the memory of this process, which a child inherits until it execs).
Each command starts after a ``sync``; rounds alternate them and the best of each is reported.

hf2jax writes with ``O_DIRECT`` (no page cache); ``cp`` and ``hf2jax --buffered-io`` fill the page
cache, and on a VM whose freed memory goes back to the host (this one) new page-cache pages cost ~5x
more than pages freed a moment ago. So each of those two runs right after deleting an earlier
output: both are timed in their best case.

    python benchmarks/convert.py [--layers 16] [--workdir /tmp/logos_convert_bench]
Targets: time ratio <= 3, RSS <= 1.25 x checkpoint size (+ ~1 GB fixed runtime).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import ml_dtypes
import numpy as np

from logos_jax.config import load_model_config
from logos_jax.convert.name_map import hf_shape, hf_tensors
from logos_jax.convert.safetensors_io import write_safetensors
from logos_jax.grammar.tags import ALL_TAGS


def build_checkpoint(folder: Path, layers: int, shard_bytes: int = 1 << 30) -> int:
    config = load_model_config("logos-1b").replace(
        num_layers=layers, vocab_size=128256 + len(ALL_TAGS), param_dtype="bfloat16"
    )
    hf = config.to_hf()
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(hf))
    rng = np.random.default_rng(0)
    shards, current, size, total = [], [], 0, 0
    for name, entry, _ in hf_tensors(config):
        shape = hf_shape(entry, config)
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


def timed(cmd: list[str]) -> tuple[float, str]:
    """Wall time and stdout of ``cmd``, started with no dirty pages pending (``sync`` first: writeback
    left over from an earlier step would otherwise throttle whichever command runs second)."""
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=16, help="16 = the real 1B")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/logos_convert_bench"))
    parser.add_argument("--rounds", type=int, default=2, help="cp / hf2jax rounds; best of each")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    src = args.workdir / "hf"
    size = build_checkpoint(src, args.layers)
    print(f"checkpoint: {size / 1e9:.2f} GB on disk ({args.layers} layers, bf16)")

    copy, out = args.workdir / "copy", args.workdir / "jax"
    convert = [
        sys.executable,
        "-c",
        CONVERT_AND_REPORT_PEAK,
        "convert",
        "hf2jax",
        str(src),
        str(out),
    ]
    cp = ["cp", "-r", str(src), str(copy)]
    subprocess.run(cp, check=True)  # so that the first timed command also follows a deletion
    cp_s = convert_s = buffered_s = float("inf")
    peak = 0
    for _ in range(args.rounds):  # interleaved (the machine is shared): best of each
        shutil.rmtree(copy)
        buffered_s = min(buffered_s, timed([*convert, "--buffered-io"])[0])
        shutil.rmtree(out)
        cp_s = min(cp_s, timed(cp)[0])
        seconds, stdout = timed(convert)
        convert_s = min(convert_s, seconds)
        peak = max(peak, int(stdout.split()[-1]) * 1024)  # kB -> bytes
        shutil.rmtree(out)
    runtime = 1.0e9
    print(
        f"cp: {cp_s:.2f} s   hf2jax: {convert_s:.2f} s   time ratio: {convert_s / cp_s:.2f} "
        f"(target <= 3)   [hf2jax --buffered-io: {buffered_s:.2f} s = {buffered_s / cp_s:.2f}x]"
    )
    print(
        f"peak RSS: {peak / 1e9:.2f} GB = {peak / size:.2f} x checkpoint; "
        f"(peak - 1 GB runtime) / size = {(peak - runtime) / size:.2f} (target <= 1.25)"
    )
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

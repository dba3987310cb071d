"""hf2jax wall time vs ``cp`` of the same files, and peak RSS vs checkpoint size.

Builds a synthetic HF checkpoint with the real LOGOS-pretrain-1B shapes (Llama-3.2-1B + grammar tags,
bf16, sharded safetensors, ~2.5 GB), then in one run times (a) ``cp -r`` of the folder — the floor
for any conversion, which must read and write the same bytes — and (b) ``logos convert hf2jax`` in
a fresh process (start-up included), whose peak RSS is read from ``getrusage(RUSAGE_CHILDREN)``.
Each command starts after a ``sync``; rounds alternate the two and the best of each is reported.

    python benchmarks/convert.py [--layers 16] [--workdir /tmp/logos_convert_bench]
Targets: time ratio <= 3, RSS <= 1.25 x checkpoint size (+ ~1 GB fixed runtime).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import ml_dtypes
import numpy as np

from logos_jax.config import load_model_config
from logos_jax.convert.name_map import hf_tensors
from logos_jax.convert.safetensors_io import write_safetensors
from logos_jax.grammar.tags import ALL_TAGS


def build_checkpoint(folder: Path, layers: int, shard_bytes: int = 1 << 30) -> int:
    config = load_model_config("logos-1b").replace(
        num_layers=layers, vocab_size=128256 + len(ALL_TAGS), param_dtype="bfloat16"
    )
    hf = config.to_hf()
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(hf))
    from logos_jax.convert.name_map import get_path, hf_shape
    from logos_jax.model import abstract_params

    shapes = abstract_params(config)
    rng = np.random.default_rng(0)
    shards, current, size, total = [], [], 0, 0
    for name, entry, _ in hf_tensors(config):
        shape = hf_shape(entry, get_path(shapes, entry.path).shape)
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


def timed(cmd: list[str]) -> float:
    """Wall time of ``cmd``, started with no dirty pages pending (``sync`` first: writeback left over
    from an earlier step would otherwise throttle whichever command runs second)."""
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


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

    cp_s = convert_s = float("inf")
    for _ in range(args.rounds):  # interleaved (the machine is shared): best of each
        cp_s = min(cp_s, timed(["cp", "-r", str(src), str(args.workdir / "copy")]))
        shutil.rmtree(args.workdir / "copy")
        convert = [sys.executable, "-m", "logos_jax.cli", "convert", "hf2jax"]
        convert_s = min(convert_s, timed([*convert, str(src), str(args.workdir / "jax")]))
        shutil.rmtree(args.workdir / "jax")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB -> bytes
    runtime = 1.0e9
    print(
        f"cp: {cp_s:.1f} s   hf2jax: {convert_s:.1f} s   time ratio: {convert_s / cp_s:.2f} (target <= 3)"
    )
    print(
        f"peak RSS: {peak / 1e9:.2f} GB = {peak / size:.2f} x checkpoint; "
        f"(peak - 1 GB runtime) / size = {(peak - runtime) / size:.2f} (target <= 1.25)"
    )
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

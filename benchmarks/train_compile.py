"""Ahead-of-time compile of the real train step for a TPU slice, on this CPU-only machine.

Like MaxText's ``train_compile``: the mesh is built from a mock TPU topology
(``jax.experimental.topologies``), the step is lowered on abstract, sharded state (no weights are
allocated) and compiled by libtpu's compiler; the per-device memory analysis says whether it fits HBM.
Needs libtpu importable (not the TPU itself), e.g. without touching the main environment::

    pip install --no-deps --target /tmp/libtpu_env "libtpu==0.0.42.*"   # the version jax[tpu] pins
    PYTHONPATH=/tmp/libtpu_env python benchmarks/train_compile.py --config logos-1b --topology v5p:2x2x4

``--config`` is a train preset (its model, batch, seq_len, mesh, remat, loss_chunk are used);
``KEY=VALUE`` overrides work as for ``logos train``.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="logos-1b", help="train preset or YAML")
    p.add_argument(
        "--topology", default="v5p:2x2x4", help="TPU topology, e.g. v5p:2x2x4 (16 chips)"
    )
    p.add_argument("--hbm-gib", type=float, default=95.0, help="HBM per chip, to check the fit")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = p.parse_args()
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")

    from jax.experimental import topologies

    from logos_jax.model import Decoder
    from logos_jax.sharding import MeshConfig, make_mesh
    from logos_jax.train.config import load_train_config
    from logos_jax.train.optim import make_optimizer
    from logos_jax.train.step import (
        LossConfig,
        abstract_batch,
        jit_train_step,
        make_train_step,
        state_placement,
    )

    try:
        topo = topologies.get_topology_desc(topology_name=args.topology, platform="tpu")
    except RuntimeError as err:
        raise SystemExit(
            f"cannot build a TPU topology here ({err}); install libtpu as shown in --help"
        ) from None
    cfg = load_train_config(args.config, ["run_dir=/tmp/aot", *args.overrides])
    model_cfg = cfg.model_config()
    mesh = make_mesh(MeshConfig(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor), topo.devices)
    tx, schedule = make_optimizer(cfg.optimizer, cfg.steps)
    placement = state_placement(model_cfg, tx, mesh)
    model = Decoder(model_cfg, remat_policy=cfg.remat, mesh=mesh, attention=cfg.attention)
    step = make_train_step(
        model,
        tx,
        schedule,
        loss=LossConfig(cfg.loss_chunk, cfg.z_loss),
        grad_accum=cfg.grad_accum,
        nan_policy=cfg.nan_policy,
    )
    batch = abstract_batch(cfg.batch_size, cfg.seq_len, placement.batch)
    print(
        f"{args.config}: {model_cfg.num_params() / 1e9:.2f}B params on {args.topology} "
        f"({len(topo.devices)} x {topo.devices[0].device_kind}), mesh {dict(mesh.shape)}, batch "
        f"{cfg.batch_size} x {cfg.seq_len}, grad_accum {cfg.grad_accum}, remat {cfg.remat}, "
        f"loss_chunk {cfg.loss_chunk}, attention {cfg.attention}"
    )
    t = time.perf_counter()
    lowered = jit_train_step(step, placement).lower(placement.abstract, batch)
    lower_s = time.perf_counter() - t
    t = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t
    print(f"lowered in {lower_s:.1f}s, compiled in {compile_s:.1f}s")
    mem = compiled.memory_analysis()
    if mem is not None:
        gib = 2.0**30
        total = (
            mem.argument_size_in_bytes
            + mem.output_size_in_bytes
            - mem.alias_size_in_bytes
            + mem.temp_size_in_bytes
        )
        print(
            f"per device: arguments {mem.argument_size_in_bytes / gib:.2f} GiB, temporaries "
            f"{mem.temp_size_in_bytes / gib:.2f} GiB, total {total / gib:.2f} GiB of {args.hbm_gib} GiB HBM "
            f"({'fits' if total / gib <= args.hbm_gib else 'does NOT fit'})"
        )


if __name__ == "__main__":
    main()

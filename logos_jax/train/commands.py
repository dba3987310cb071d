"""``logos train``: pretrain, continue pretraining (``init_from``) or fine-tune (``mode=sft``).

    logos train --config tiny run_dir=runs/tiny steps=200 model.num_layers=2 mesh.fsdp=8

Keys (YAML or ``key=value``): run_dir, steps, seed, checkpoint_every, eval_every, log_every, batch_size
(global, sequences), seq_len, grad_accum, mesh.{data,fsdp,tensor}, init_from, model (preset or YAML),
model.<field>, data (synthetic | corpus dir | data config | SFT JSONL), mode (pretrain | sft),
optimizer.*, distributed.*, ... (``logos train --keys`` lists them all). Re-running on an existing
run_dir resumes from its last committed checkpoint.
"""

from __future__ import annotations

import argparse
import sys

import yaml


def _run(args: argparse.Namespace) -> int:
    from logos_jax.train.config import load_train_config, valid_keys

    if args.keys:
        print("\n".join(valid_keys()))
        return 0
    config = load_train_config(args.config, args.overrides)
    print(
        "# resolved train config\n" + yaml.safe_dump(config.to_dict(), sort_keys=False),
        file=sys.stderr,
    )
    if args.print_config:
        return 0
    from logos_jax.train.loop import run_training

    summary = run_training(config)
    print(
        f"trained {summary.run_dir}: steps {summary.start_step} -> {summary.final_step}, "
        f"final loss {summary.losses.get(summary.final_step)}, tokens/s {summary.tokens_per_s}, "
        f"mfu {summary.mfu}",
        file=sys.stderr,
    )
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        help="train config: a preset name under configs/train (tiny, logos-1b, ...) or a YAML path",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. run_dir=runs/x steps=100 model.num_layers=2 mesh.fsdp=4",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    parser.add_argument("--keys", action="store_true", help="list every valid config key and exit")
    parser.set_defaults(func=_run)

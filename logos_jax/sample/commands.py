"""``logos sample``: batch sampling for the LOGOS tasks into a resumable JSONL file.

With ``--distributed`` (or ``LOGOS_COORDINATOR`` set) the command runs on every host of a
``jax.distributed`` job: each host samples its slice of the inputs into a part file and process 0
merges the parts into ``--out`` (``sample.multihost``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from logos_jax.sample import SPECULATE
from logos_jax.validate import number

TASK_CHOICES = ("retro", "pocket-search", "ligand", "material", "free")


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, choices=TASK_CHOICES, help="task preset")
    parser.add_argument(
        "--ckpt",
        required=True,
        help="model folder (logos convert hf2jax output, with tokenizer files) or training run dir",
    )
    parser.add_argument(
        "--input",
        default=None,
        help="input JSONL in the released scripts' format (not for --task material)",
    )
    parser.add_argument("--out", required=True, help="output JSONL (appended to; re-run to resume)")
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer folder (default: the checkpoint folder)"
    )
    parser.add_argument(
        "--num-samples",
        type=number(int, low=1),
        default=None,
        help="samples per input (default: retro 32, pocket-search 40, ligand 10, free 1; "
        "material: samples in all, default 10000)",
    )
    parser.add_argument("--temperature", type=number(low=0), default=1.2, help="0 = greedy")
    parser.add_argument(
        "--top-p",
        type=number(low=0, high=1, low_open=True),
        default=0.85,
        help="nucleus sampling (1 = off)",
    )
    parser.add_argument(
        "--top-k",
        type=number(int, low=0),
        default=50,
        help="top-k (0 = off; 50 is transformers' default)",
    )
    parser.add_argument("--min-p", type=number(low=0, high=1), default=0.0, help="min-p (0 = off)")
    parser.add_argument(
        "--repetition-penalty",
        type=number(low=0, low_open=True),
        default=1.05,
        help="HF repetition penalty (1 = off)",
    )
    parser.add_argument(
        "--max-new-tokens", type=number(int, low=1), default=1000, help="tokens per sample at most"
    )
    parser.add_argument(
        "--batch-size",
        type=number(int, low=1),
        default=64,
        help="rows decoded together (the engine's slots; a finished row's slot takes the next sample)",
    )
    parser.add_argument(
        "--constrained",
        action="store_true",
        help="grammar-constrained decoding: answers are always well-formed blocks",
    )
    parser.add_argument(
        "--speculate",
        type=number(int, low=0),
        default=SPECULATE,
        help="with --constrained, binding-site answers draft up to this many copied tokens and "
        "verify them in one model call (same outputs, fewer steps); 0 = off",
    )
    parser.add_argument(
        "--num-beams",
        type=number(int, low=0),
        default=0,
        help="beam search with this many beams instead of sampling (one row per beam, best first)",
    )
    parser.add_argument(
        "--seed", type=number(int, low=0), default=0, help="random seed (per-input streams)"
    )
    parser.add_argument(
        "--full-perplexity",
        action="store_true",
        help="also write the released scripts' prompt + completion perplexity",
    )
    parser.add_argument(
        "--mesh",
        default="1,-1,1",
        help="data,fsdp,tensor mesh sizes (-1 = the rest of the devices)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="run on every host of a multi-host job (jax.distributed: LOGOS_COORDINATOR / "
        "LOGOS_NUM_PROCESSES / LOGOS_PROCESS_ID, or TPU/SLURM detection; LOGOS_COORDINATOR alone "
        "also turns it on): each host samples its slice into <out>.part-<i>-of-<n>, then the "
        "parts are merged into --out (which all hosts must see)",
    )
    parser.add_argument(
        "--distributed-timeout",
        type=number(int, low=1),
        default=300,
        help="seconds to wait for every host to join (--distributed)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import jax

    from logos_jax import compile_cache, distributed
    from logos_jax.errors import LogosError
    from logos_jax.files import refuse_overwrite_input
    from logos_jax.sample import multihost
    from logos_jax.sample.jobs import run_sampling
    from logos_jax.sample.processors import SamplingConfig
    from logos_jax.sharding import MeshConfig, make_mesh

    refuse_overwrite_input(args.out, {"--input": args.input})
    compile_cache.enable()
    try:
        data, fsdp, tensor = (int(x) for x in args.mesh.split(","))
    except ValueError:
        raise LogosError(f"--mesh {args.mesh!r}: expected three integers like 1,-1,1") from None
    _check_tokenizer_fits(args.ckpt, args.tokenizer)
    options = distributed.DistributedConfig(
        enabled=args.distributed, timeout_s=args.distributed_timeout
    )
    replica = None
    joined = distributed.initialize(options, "logos sample", "--distributed-timeout")
    if joined and jax.process_count() > 1:  # one replica per host: its own slice and part file
        replica, mesh = multihost.local_replica(MeshConfig(data, fsdp, tensor))
    if replica is None:
        mesh = make_mesh(MeshConfig(data, fsdp, tensor))
    sampling = SamplingConfig(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        max_new_tokens=args.max_new_tokens,
    )
    report = run_sampling(
        args.task,
        args.out,
        ckpt=args.ckpt,
        input_path=args.input,
        tokenizer=args.tokenizer,
        num_samples=args.num_samples,
        sampling=sampling,
        batch_size=args.batch_size,
        constrained=args.constrained,
        num_beams=args.num_beams,
        seed=args.seed,
        full_perplexity=args.full_perplexity,
        mesh=mesh,
        progress=not args.no_progress,
        replica=replica,
        speculate=args.speculate,
    )
    print(
        f"{report.written} input(s) sampled ({report.samples} samples, {report.tokens} tokens, "
        f"{report.tokens_per_s:.0f} tokens/s), {report.already_done} already done, "
        f"{len(report.bad_rows)} bad row(s) skipped -> {report.part or args.out}",
        file=sys.stderr,
    )
    if report.merged is not None and jax.process_index() == 0:
        print(
            f"{replica.count} parts merged: {report.merged} input(s) -> {args.out}", file=sys.stderr
        )
    if args.input and not report.input_ids:
        what = "every input row was rejected" if report.bad_rows else "it holds no row"
        raise LogosError(f"nothing sampled from {args.input}: {what}")
    return 0


def _check_tokenizer_fits(ckpt: str, tokenizer: str | None) -> None:
    """The tokenizer's ids must all be rows of the model's embedding table."""
    from logos_jax.checkpoint import load_config, resolve_model_dir
    from logos_jax.tokenizer import LogosTokenizer

    model_dir, _ = resolve_model_dir(ckpt)
    folder = tokenizer or model_dir
    if not (Path(folder) / "tokenizer.json").is_file() and not Path(folder).is_file():
        return  # the job names the missing tokenizer
    config = load_config(model_dir)
    LogosTokenizer.load(folder).require_fits(config.vocab_size, ckpt)

"""Copy-speculation on binding-site search: the decode engine with vs without drafting the copy.

A binding-site answer (``<Search>``) writes the input protein again with ``<PocketS>``/``<PocketE>``
around a few residues, so most of its tokens are a copy of the prompt. With ``speculate=K`` the
engine drafts up to K tokens of that copy from the grammar constraint and verifies them in one model
call (``Programs.speculative_step``); without it, one token per call.

Setup: a small model of ``benchmarks/sample.py``'s configuration (iii) shape (residue tokenizer,
hidden 128 x 2 layers, 0.4M parameters) trained for ``--train-steps`` (600) on the bundled mini
corpus's binding-site searches and retrosyntheses (prepared once under ``--workdir``), every bundled
protein chain with a pocket
(6 chains, 90-212 residues) as a pocket-search prompt (``text + <ProteinS>``, as the released
scripts send), 40 samples per input (the official count for this task), the README settings (T 1.2,
top-k 50, top-p 0.85, repetition penalty 1.05, max_new_tokens 1000), constrained decoding on (the
drafts come from the constraint), 64 slots.

Methods, each its own process, alternated over ``--rounds`` (order rotated each round):

  plain  the engine with ``speculate=0``;
  spec   the engine with ``speculate=--draft`` (default 4, ``logos sample``'s; the draft length
         adapts to the acceptance rate and measured speed).

Reported per method: whole-process tokens/s (spawn to end of sampling: imports, load and compiles
included), for round 1 (every program compiles) and for later rounds (the programs come from the
persistent compilation cache, as for a repeated ``logos sample`` job: the children enable it like
the command does, in a folder the driver empties first); warm tokens/s (the same process samples
again with new seeds); the ratio spec/plain of each, and spec's acceptance rate (accepted /
drafted tokens). A
greedy check in the spec process decodes every input with and without speculation and compares
tokens; sampled outputs are compared too (speculation emits the tokens the plain loop would pick).

    python benchmarks/speculation.py --workdir /tmp/sb              # ~5 min on a 2-core CPU
    python benchmarks/speculation.py --quick                         # plumbing only, ~2 min

Target (issue 15): spec/plain >= 2x tokens/s at identical greedy output.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sample import (  # noqa: E402
    SETTINGS,
    pocket_examples,
    residue_tokenizer,
    run_child,
    train_retro_pocket,
)

METHODS = ("plain", "spec")
TARGET = 2.0


def model_folder(args: argparse.Namespace) -> Path:
    return Path(args.workdir) / f"pocket-{args.train_steps}steps"


def prepare(folder: Path, steps: int) -> None:
    """The model: ``benchmarks/sample.py``'s (iii) model (``train_retro_pocket``), saved with its
    tokenizer."""
    if (folder / "logos").is_dir():
        return
    from logos_jax.checkpoint import save_model

    tokenizer = residue_tokenizer(folder / "tokenizer")
    config, params = train_retro_pocket(tokenizer, steps)
    save_model(folder / "logos", config, params, folder / "tokenizer")


def job(folder: Path, args: argparse.Namespace):
    """(sampler, constraint, prompts, constraint start states) for the pocket-search job."""
    from logos_jax.checkpoint import load_model
    from logos_jax.grammar import tags
    from logos_jax.sample import SamplingConfig, constraints
    from logos_jax.sample.sampler import Sampler
    from logos_jax.tokenizer import LogosTokenizer

    tokenizer = LogosTokenizer.load(folder / "tokenizer")
    config, params = load_model(folder / "logos")
    chains = pocket_examples()[: args.inputs]
    prompts = [tokenizer.encode(c.prompt() + tags.PROTEIN_S) for c in chains]
    eos = sorted(tokenizer.eos_ids)
    constraint = constraints.protein_copy(
        constraints.token_texts(tokenizer),
        tokenizer.tag_ids(),
        eos,
        config.vocab_size,
        max_residues=max(len(c.sequence) for c in chains) + 1,
    )
    states = [
        constraint.start(c.sequence, tokenizer.encode(c.sequence, add_bos=False)) for c in chains
    ]
    sampler = Sampler(
        config,
        params,
        stop_ids=eos,
        pad_id=tokenizer.pad_id,
        sampling=SamplingConfig(max_new_tokens=args.new_tokens, **SETTINGS),
        vocab_limit=tokenizer.vocab_size,
        num_slots=min(args.slots, len(prompts) * args.samples),
        max_prompt_len=-(-max(len(p) for p in prompts) // 16) * 16,
        speculate=args.draft if args.run == "spec" else 0,
    )
    return sampler, constraint, prompts, states


def sample(sampler, constraint, prompts, states, samples: int, seed: int):
    seeds = [1000 * seed + i for i in range(len(prompts))]
    return sampler.generate(
        prompts,
        num_samples=samples,
        seeds=seeds,
        constraint=constraint,
        constraint_states=states,
    )


def tokens(out) -> int:
    return sum(len(c.tokens) for cs in out for c in cs)


def child(args: argparse.Namespace) -> None:
    """``--run plain|spec``: sample, print one JSON line."""
    from logos_jax import compile_cache

    compile_cache.enable()  # as `logos sample` does (LOGOS_COMPILE_CACHE: the driver's folder)
    folder = model_folder(args)
    sampler, constraint, prompts, states = job(folder, args)
    out = sample(sampler, constraint, prompts, states, args.samples, args.seed)
    result = {"tokens": tokens(out), "done_at": time.time()}
    start = time.perf_counter()
    warm = sample(sampler, constraint, prompts, states, args.samples, args.seed + 100)
    result["warm_tok_s"] = tokens(warm) / (time.perf_counter() - start)
    result["mean_len"] = float(np.mean([len(c.tokens) for cs in out for c in cs]))
    result["stopped"] = float(np.mean([c.stopped for cs in out for c in cs]))
    engine = sampler.engine(constraint)
    result["acceptance"] = engine.speculation.acceptance
    result["compilations"] = sampler.compilations
    if args.run == "spec" and args.seed == 0:  # same tokens as the plain loop, greedy and sampled
        import dataclasses

        from logos_jax.sample.sampler import Sampler

        options = dict(sampler.options, speculate=0)
        plain = Sampler(config=sampler.config, params=sampler.params, **options)
        result["sampled_identical"] = all(
            np.array_equal(a.tokens, b.tokens)
            for x, y in zip(out, sample(plain, constraint, prompts, states, args.samples, 0))
            for a, b in zip(x, y)
        )
        greedy = dataclasses.replace(sampler.sampling, temperature=0.0)
        runs = []
        for speculate in (0, args.draft):
            options = dict(sampler.options, sampling=greedy, speculate=speculate)
            s = Sampler(config=sampler.config, params=sampler.params, **options)
            runs.append(sample(s, constraint, prompts, states, 1, 0))
        result["greedy_identical"] = all(
            np.array_equal(a[0].tokens, b[0].tokens) for a, b in zip(*runs)
        )
    print(json.dumps(result))


def spawn(method: str, args: argparse.Namespace, seed: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run", method, "--seed", str(seed)]
    for name in ("workdir", "samples", "new_tokens", "slots", "train_steps", "draft", "inputs"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return run_child(cmd, Path(args.workdir), method)


def drive(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        args.workdir = args.workdir or tmp
        print(
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.inputs} inputs x "
            f"{args.samples} samples, max_new_tokens {args.new_tokens}, draft <= {args.draft}"
        )
        start = time.time()
        shutil.rmtree(Path(args.workdir) / "xla-cache", ignore_errors=True)  # round 1 compiles
        prepare(model_folder(args), args.train_steps)
        print(f"model ready ({time.time() - start:.0f} s)")
        runs: dict[str, list[dict]] = {m: [] for m in METHODS}
        for r in range(args.rounds):
            for method in METHODS[r % 2 :] + METHODS[: r % 2]:
                result = spawn(method, args, r)
                runs[method].append(result)
                print(
                    f"  round {r + 1} {method:<5} {result['wall_s']:6.1f} s {result['tokens']:7d} "
                    f"tokens {result['tokens'] / result['wall_s']:8.1f} tok/s (warm "
                    f"{result['warm_tok_s']:.0f}), mean length {result['mean_len']:.0f}, "
                    f"stopped {result['stopped']:.0%}",
                    flush=True,
                )
    rate = {m: [x["tokens"] / x["wall_s"] for x in runs[m]] for m in METHODS}
    cached = {m: rate[m][1:] or rate[m] for m in METHODS}
    warm = {m: [x["warm_tok_s"] for x in runs[m]] for m in METHODS}
    first = runs["spec"][0]
    print(
        "\ntokens/s: whole process, round 1 (compiling) and later rounds (compilation cache) "
        "best / median; warm (in process) best / median"
    )
    for m in METHODS:
        print(
            f"  {m:<5} {rate[m][0]:8.1f}   {max(cached[m]):8.1f} / "
            f"{statistics.median(cached[m]):8.1f}   warm {max(warm[m]):8.1f} / "
            f"{statistics.median(warm[m]):8.1f}"
        )

    def ratio(values: dict[str, list[float]], pick) -> float:
        return pick(values["spec"]) / pick(values["plain"])

    print(
        f"spec / plain: whole process round 1 {rate['spec'][0] / rate['plain'][0]:.2f}x, "
        f"cached {ratio(cached, max):.2f}x (median {ratio(cached, statistics.median):.2f}x); "
        f"warm {ratio(warm, max):.2f}x (median {ratio(warm, statistics.median):.2f}x) "
        f"(target >= {TARGET}x)"
    )
    print(
        f"acceptance {first['acceptance']:.1%}; greedy identical: {first['greedy_identical']}; "
        f"sampled identical: {first['sampled_identical']}"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--workdir", default=None, help="the prepared model goes here (reused when present)")
    add("--samples", type=int, default=40, help="samples per input")
    add("--inputs", type=int, default=6, help="bundled protein chains to search")
    add("--new-tokens", type=int, default=1000, help="max_new_tokens")
    add("--slots", type=int, default=64, help="rows decoded together")
    add("--draft", type=int, default=4, help="spec: the longest draft (logos sample's default)")
    add("--rounds", type=int, default=2, help="interleaved rounds")
    add("--train-steps", type=int, default=600, help="training steps of the prepared model")
    add("--quick", action="store_true", help="2 inputs x 4 samples, 30 training steps, 1 round")
    add("--run", choices=METHODS, help=argparse.SUPPRESS)
    add("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.inputs, args.samples, args.train_steps, args.rounds = 2, 4, 30, 1
    return args


if __name__ == "__main__":
    args = parse_args()
    child(args) if args.run else drive(args)

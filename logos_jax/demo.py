"""``logos demo``: the whole system end to end on the bundled real mini corpus, in minutes on a CPU.

build the corpus -> train the tiny model on a mesh of 8 (fake) devices with checkpoints -> check that a
resumed run reproduces the uninterrupted losses -> export to Hugging Face and reload -> sample every task
with and without grammar constraints, and an untrained model for comparison -> evaluate -> report
(``report.md``, ``report.json``, one loss-curve PNG per modality). Each stage keeps its outputs in
``--out``; re-running skips the stages that are already complete.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

DEMO_DEVICES = 8
MOLECULE_PROMPTS = 32  # unconditional molecule prompts for the valid-SMILES comparison


def _ensure_devices(count: int) -> None:
    """Ask XLA for ``count`` CPU devices; must happen before JAX initialises its backend."""
    flag = f"--xla_force_host_platform_device_count={count}"
    if "jax" in sys.modules:
        import jax

        if jax.device_count() >= count:
            return
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()


class _Stage:
    """Prints a stage header and its wall time."""

    def __init__(self, name: str, timings: dict[str, float]):
        self.name, self.timings = name, timings

    def __enter__(self) -> _Stage:
        print(f"\n== {self.name}", flush=True)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.timings[self.name] = time.perf_counter() - self.start
        if exc[0] is None:
            print(f"   ({self.timings[self.name]:.0f} s)", flush=True)


# The demo's mixture leans on small molecules so that a 0.8M-parameter model learns to write valid
# SMILES within a few minutes; real runs use the LOGOS corpus proportions (the pipeline's default).
DEMO_WEIGHTS = {
    "molecule": 0.5,
    "reaction": 0.15,
    "material": 0.15,
    "protein": 0.05,
    "antibody": 0.05,
    "protein_pocket": 0.05,
    "protein_ligand": 0.05,
}
# Sampling temperature for the demo: the tiny model is far weaker than LOGOS, and at the official
# T=1.2 its samples are mostly noise; everything else keeps the official settings (top-p 0.85, ...).
DEMO_TEMPERATURE = 0.7


def _train_config(steps: int, run_dir: Path, corpus: Path) -> Any:
    from logos_jax.train.config import from_dict, load_train_config

    config = load_train_config(
        "tiny",
        [
            f"run_dir={run_dir}",
            f"data={corpus}",
            f"steps={steps}",
            "batch_size=8",
            "optimizer.lr=5e-3",
            f"checkpoint_every={steps // 2}",
            f"eval_every={steps // 2}",
            "log_every=5",
            "keep_checkpoints=2",
            "mesh.data=2",
            "mesh.fsdp=2",
            "mesh.tensor=2",
        ],
    )
    return from_dict({**config.to_dict(), "data_weights": DEMO_WEIGHTS})


def _resume_check(run_dir: Path, steps: int, window: int) -> dict[str, Any]:
    """Copy the run, drop checkpoints after the midpoint, resume for ``window`` steps, compare."""
    from logos_jax.config import load_yaml
    from logos_jax.train.config import from_dict
    from logos_jax.train.loop import TRAIN_CONFIG, run_training

    half = steps // 2
    check_dir = run_dir.parent / "resume_check"
    shutil.rmtree(check_dir, ignore_errors=True)
    shutil.copytree(
        run_dir, check_dir, ignore=shutil.ignore_patterns("metrics.jsonl", "tensorboard")
    )
    for step_dir in (check_dir / "checkpoints").iterdir():
        if step_dir.name.isdigit() and int(step_dir.name) > half:
            shutil.rmtree(step_dir)
    raw = load_yaml(check_dir / TRAIN_CONFIG)
    # Same lr schedule (its length is the original run's), stopped ``window`` steps after the midpoint.
    raw["optimizer"]["schedule_steps"] = steps
    raw.update(run_dir=str(check_dir), steps=half + window, eval_every=0, tensorboard=False)
    resumed = run_training(from_dict(raw)).losses
    reference = {
        r["step"]: r["loss"]
        for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
        if "loss" in r
    }
    compared = {s: (loss, reference[s]) for s, loss in resumed.items() if s in reference}
    identical = bool(compared) and all(a == b for a, b in compared.values())
    shutil.rmtree(check_dir, ignore_errors=True)
    return {"resumed_from": half, "steps_compared": sorted(compared), "bit_identical": identical}


def _export_check(run_dir: Path, hf_dir: Path) -> dict[str, Any]:
    """Export to HF, reload with transformers (when installed) and compare logits with JAX."""
    import jax.numpy as jnp
    import numpy as np

    from logos_jax.checkpoint import load_model
    from logos_jax.convert.jax2hf import jax_to_hf
    from logos_jax.model import Decoder

    if not hf_dir.exists():
        jax_to_hf(run_dir, hf_dir, progress=False)
    result: dict[str, Any] = {"hf_dir": str(hf_dir)}
    try:
        import torch
        import transformers
    except ImportError:
        result["reload"] = "skipped: install the 'convert' extra to reload in transformers"
        return result
    config, params = load_model(run_dir)
    tokens = np.arange(1, 33, dtype=np.int32)[None] % config.vocab_size
    positions = np.arange(32, dtype=np.int32)[None]
    ours, _ = Decoder(config).apply({"params": params}, jnp.asarray(tokens), jnp.asarray(positions))
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        ref = model(torch.as_tensor(tokens, dtype=torch.long)).logits.numpy()
    result["reload"] = type(model).__name__
    result["max_abs_logit_diff"] = float(np.abs(np.asarray(ours) - ref).max())
    return result


def _molecule_validity(out: Path, ckpt: dict[str, Any], tokenizer: Any, name: str) -> float:
    """Valid-SMILES rate of unconditional ``<MoleculeS>`` samples (the 'free' task)."""
    from logos_jax.grammar import parse
    from logos_jax.grammar.chem import is_valid_smiles
    from logos_jax.sample.jobs import run_sampling
    from logos_jax.sample.sampler import SamplingConfig

    prompts = out / "molecule_prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"id": f"mol-{i}", "prompt": "<MoleculeS>"}) + "\n"
            for i in range(MOLECULE_PROMPTS)
        )
    )
    path = out / f"molecules_{name}.jsonl"
    sampling = SamplingConfig(temperature=DEMO_TEMPERATURE, max_new_tokens=96)
    run_sampling(
        "free",
        path,
        input_path=prompts,
        tokenizer=tokenizer,
        sampling=sampling,
        progress=False,
        **ckpt,
    )
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    valid = 0
    for row in rows:
        parsed = parse(row["prompt"] + row["completion"])
        valid += bool(
            parsed.complete
            and parsed.layout == "molecule"
            and is_valid_smiles(parsed.objects.smiles)
        )
    return valid / max(len(rows), 1)


def _plot_losses(run_dir: Path, out: Path) -> list[str]:
    """One PNG per modality: training loss (and held-out loss) against step."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    modalities = sorted({k.split("/", 1)[1] for r in records for k in r if k.startswith("loss/")})
    written = []
    for modality in modalities:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        train = [(r["step"], r[f"loss/{modality}"]) for r in records if f"loss/{modality}" in r]
        ax.plot(*zip(*train, strict=True), label="train")
        held = [
            (r["step"], r[f"eval/loss/{modality}"]) for r in records if f"eval/loss/{modality}" in r
        ]
        if held:
            ax.plot(*zip(*held, strict=True), "o-", label="held-out")
        ax.set(title=f"{modality} loss", xlabel="step", ylabel="cross-entropy (nats/token)")
        ax.legend()
        fig.tight_layout()
        path = out / f"loss_{modality}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path.name)
    return written


TASKS = (
    # task, held-out input file (None: no input), inputs used, samples per input, max new tokens
    ("retro", "retro.jsonl", 16, 4, 96),
    ("pocket-search", "search.jsonl", 4, 1, 0),
    ("ligand", "complex2.jsonl", 6, 2, 96),
    ("material", None, 0, 16, 128),
)


def _sample_and_evaluate(out: Path, corpus: Path, run_dir: Path, tokenizer: Any) -> dict:
    from logos_jax.eval.metrics import evaluate
    from logos_jax.sample.jobs import run_sampling
    from logos_jax.sample.sampler import SamplingConfig

    results: dict[str, Any] = {}
    for task, inputs, count, samples, max_new in TASKS:
        input_path = None
        if inputs is not None:
            source = corpus / "heldout" / inputs
            if not source.is_file():
                continue
            input_path = out / "inputs" / inputs
            input_path.parent.mkdir(exist_ok=True)
            input_path.write_text("".join(source.read_text().splitlines(keepends=True)[:count]))
        if task == "pocket-search":  # the answer is the whole protein again
            longest = max(len(json.loads(line)["text"]) for line in input_path.open())
            max_new = longest + 16
        for constrained in (False, True):
            name = f"{task}{'_constrained' if constrained else ''}"
            path = out / "samples" / f"{name}.jsonl"
            path.parent.mkdir(exist_ok=True)
            report = run_sampling(
                task,
                path,
                ckpt=run_dir,
                input_path=input_path,
                tokenizer=tokenizer,
                num_samples=samples,
                sampling=SamplingConfig(temperature=DEMO_TEMPERATURE, max_new_tokens=max_new),
                batch_size=64,
                constrained=constrained,
                progress=False,
            )
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            summary = evaluate(task, rows)
            summary["samples_per_s"] = round(report.samples_per_s, 2)
            results[name] = summary
            print(f"   {name:28s} {_headline(summary)}", flush=True)
    return results


def _headline(summary: dict[str, Any]) -> str:
    keys = ("top_1", "top_10", "valid", "unique", "novel", "precision", "recall", "f1", "mcc")
    return "  ".join(
        f"{k}={summary[k]:.2f}" for k in keys if isinstance(summary.get(k), int | float)
    )


def _write_report(out: Path, report: dict[str, Any]) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2))
    lines = [
        "# logos demo report",
        "",
        f"Devices: {report['devices']}; tiny model: {report['params']:,} parameters; "
        f"{report['train']['final_step']} training steps on the bundled mini corpus.",
        "",
        "## What the model learned",
        "",
        f"- Valid SMILES from `<MoleculeS>`: trained **{report['valid_smiles']['trained']:.0%}** vs "
        f"untrained **{report['valid_smiles']['untrained']:.0%}** ({MOLECULE_PROMPTS} samples each, "
        f"T={DEMO_TEMPERATURE}, top-p 0.85; RDKit sanitisation).",
        f"- Held-out loss: {report['train']['eval_loss']:.3f} nats/token after training "
        f"(untrained: {report['train']['initial_loss']:.3f} at step 5).",
        f"- Resume from step {report['resume']['resumed_from']}: losses at steps "
        f"{report['resume']['steps_compared']} bit-identical: {report['resume']['bit_identical']}.",
        f"- HF export reloaded as {report['export'].get('reload')}; max |logit diff| vs JAX: "
        f"{report['export'].get('max_abs_logit_diff', float('nan')):.2e}.",
        "",
        "## Tasks (held-out inputs; with and without grammar constraints)",
        "",
        "| run | metrics |",
        "|---|---|",
        *(f"| {name} | {_headline(s)} |" for name, s in report["tasks"].items()),
        "",
        "## Stage timings (s)",
        "",
        *(f"- {k}: {v:.0f}" for k, v in report["timings"].items()),
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def run(args: argparse.Namespace) -> int:
    _ensure_devices(DEMO_DEVICES)
    import jax

    from logos_jax import compile_cache
    from logos_jax.config import load_model_config
    from logos_jax.data.builder import build_corpus, load_build_config
    from logos_jax.model import init_params
    from logos_jax.tokenizer import LogosTokenizer
    from logos_jax.train.loop import run_training

    compile_cache.enable()
    out = Path(args.out).absolute()
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    corpus, run_dir = out / "corpus", out / "run"
    print(f"logos demo -> {out} ({jax.device_count()} {jax.devices()[0].platform} devices)")

    with _Stage("1/6 build the corpus from the bundled real data", timings):
        manifest = build_corpus(load_build_config("mini"), corpus)
        for modality, stats in sorted(manifest["modalities"].items()):
            print(f"   {modality:15s} {stats}")
    tokenizer = LogosTokenizer.load(corpus / "tokenizer")

    with _Stage("2/6 train the tiny model (mesh data 2 x fsdp 2 x tensor 2)", timings):
        config = _train_config(args.steps, run_dir, corpus)
        summary = run_training(config)
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    first_loss = next(r["loss"] for r in records if "loss" in r)

    with _Stage("3/6 resume check: restart from the midpoint checkpoint", timings):
        resume = _resume_check(run_dir, args.steps, window=10)
        print(f"   bit-identical losses after resume: {resume['bit_identical']}")

    with _Stage("4/6 export to Hugging Face and reload", timings):
        export = _export_check(run_dir, out / "hf")
        print(f"   {export}")

    with _Stage("5/6 sample every task (plain and grammar-constrained) and evaluate", timings):
        tasks = _sample_and_evaluate(out, corpus, run_dir, tokenizer)
        trained = _molecule_validity(out, {"ckpt": run_dir}, tokenizer, "trained")
        model_config = load_model_config(run_dir)
        untrained = init_params(model_config, jax.random.key(1))
        random = _molecule_validity(
            out, {"model": (model_config, untrained)}, tokenizer, "untrained"
        )
        print(f"   valid SMILES from <MoleculeS>: trained {trained:.0%}, untrained {random:.0%}")

    with _Stage("6/6 report", timings):
        report = {
            "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
            "params": model_config.num_params(),
            "train": {
                "final_step": summary.final_step,
                "initial_loss": first_loss,
                "eval_loss": summary.eval.get("eval/loss", float("nan")),
                "tokens_per_s": summary.tokens_per_s,
            },
            "resume": resume,
            "export": export,
            "valid_smiles": {"trained": trained, "untrained": random},
            "tasks": tasks,
            "timings": timings,
            "plots": _plot_losses(run_dir, out),
        }
        _write_report(out, report)
    print((out / "report.md").read_text())
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", default="demo_out", help="output folder (reused: finished stages are kept)"
    )
    parser.add_argument("--steps", type=int, default=500, help="training steps of the tiny model")
    parser.add_argument("--fresh", action="store_true", help="delete --out first and start over")
    parser.set_defaults(func=run)

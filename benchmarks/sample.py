"""Sampling throughput at the official settings: the decode engine vs the released scripts' recipe.

Settings (the LOGOS README's, as the released scripts run them): ``max_new_tokens`` 1000 with the
real stop ids, 32 samples per prompt, T 1.2, top-k 50 (the Hugging Face default the scripts
inherit), top-p 0.85, repetition penalty 1.05. Three configurations, the same prompts for every
method:

  llama128k  (i) a random Llama, Llama-3 vocabulary (128,256 ids), hidden 256 x 4 layers (36.8M
             parameters); 1 USPTO-50K product x 32 samples, 1 round (its references alone take ~10
             min a round here). A random model almost never stops: rows run to 1000 tokens.
  small512   (ii) a random Llama with a small vocabulary (512 ids), hidden 512 x 6 layers (23.9M); 1
             product (residue tokenizer) x 32 samples, 2 rounds (~4 min a round here).
  trained    (iii) a small model (residue tokenizer, 119 ids, hidden 128 x 2 layers) trained for
             ``--train-steps`` (600) on the bundled mini corpus (USPTO-50K retrosyntheses, 1/4 of the
             batches, and binding-site searches, 3/4: ``train_retro_pocket``, the same model as
             ``benchmarks/speculation.py``'s), exported with ``jax_to_hf`` so
             transformers runs the same weights; 4 held-out retro prompts + 2 pocket-search prompts
             x 32 samples, 2 rounds; they stop at realistic, varied lengths (a row that derails runs
             on to 1000). The prompts, stop fraction and lengths per kind are printed.

Methods, each its own process (``--run METHOD``; it prints one JSON line):

  official  (a) the released scripts' recipe: ``generate`` on each prompt duplicated 32 times, then
            a prompt + completion perplexity forward per sample at batch size 1;
  generate  (b) ``generate(num_return_sequences=32, output_logits=True)`` over as many prompts per
            call as the held logits fit in ``--hf-logits-gb`` (llama128k: 8 rows per call),
            completion log-probs from those logits;
  ours      (c) ``logos_jax.sample.Sampler`` (the decode engine, 64 slots or the configuration's
            rows if fewer, the default paging, 16 steps per call, full perplexity) on the converted
            checkpoint.

Torch uses ``os.cpu_count()`` threads. The driver prepares each configuration once (a ``prepare``
process: HF folder, converted checkpoint, prompts), then alternates the methods over the rounds
(``--rounds``, default per configuration as above; order rotated each round) and reports, per
method, the best and median of generated tokens / whole-process seconds: from the spawn of the
process to the end of its sampling, so interpreter start, imports, model load and (for ours)
compilation are included. Ours enables the persistent compilation cache as ``logos sample`` does,
in a folder the driver empties first: round 1 compiles every program, later rounds of a
configuration load them (a repeated job); the ratio of round 1 alone is printed too. In round 1 ours then samples once more in the same process with new seeds:
its warm tokens/s. Generated tokens are counted up to and including the stop token (methods draw
different samples, hence tokens/s, not seconds).

Decode ms/step (``--run steps``): the engine on the same rows (up to 64 samples of the
configuration's prompts, stop ids off so every row runs to the limit), once with max_new_tokens 128
and once with 1000. Each decode call is timed (blocked until ready) and its step count read from the
slots' step counters; calls that compiled a program are left out. Reported: ms/step over the first
128 steps in each setting (same rows, same positions: only max_new_tokens differs) and over all 1000
steps, beside the step's memory floor on this machine: the bytes a step must read (weights + the
rows' live keys and values, averaged over the 1000 steps) over the read bandwidth a jitted
reduction measures in the same process. A step near its floor can only get faster by reading fewer
bytes.

    python benchmarks/sample.py --workdir /tmp/sb --json sample.json   # all three (~30 min)
    python benchmarks/sample.py --config small512 --rounds 3          # one configuration
    python benchmarks/sample.py --quick   # 1 prompt (+1 pocket) x 4 samples x 32 tokens, 1 round

``--workdir`` keeps the prepared models (a second run skips training); default a temporary folder.
Sizes were chosen from per-step timings on this 2-core CPU so that the default run takes about 30
minutes on a quiet machine; ``--quick`` takes ~2 minutes there (9 processes + 3 prepares + 3 ms/step
processes; it checks the plumbing, its figures mean little).

Targets (printed for information): (c)/(a) >= 5x and (c)/(b) >= 2x in all three configurations;
ms/step within 20% between max_new_tokens 128 and 1000.

``--study constrained`` measures instead what grammar-constrained decoding changes: a tiny model
(per-character tokenizer) is trained for ``--train-steps`` on a few hundred real USPTO-50K
retrosyntheses and CoRE MOF building-block sets (../shared/data when present, else the bundled mini
corpus), then held-out retrosynthesis prompts and material prompts are sampled (README settings)
with and without ``--constrained``; it prints the grammatical and valid rates (and retro top-k,
material uniqueness) of both, each a ratio against the other.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
BUNDLED = ROOT / "logos_jax" / "assets" / "mini_corpus"
SETTINGS = dict(temperature=1.2, top_k=50, top_p=0.85, repetition_penalty=1.05)
METHODS = ("official", "generate", "ours")
LABELS = {"official": "(a) official recipe", "generate": "(b) HF generate", "ours": "(c) ours"}
TARGETS = {"official": 5.0, "generate": 2.0}


@dataclasses.dataclass(frozen=True)
class Bench:
    """One configuration: model shape, how it is made, how many prompts of which kind."""

    name: str
    title: str
    vocab: int  # 0: the residue tokenizer's
    hidden: int
    layers: int
    retro_prompts: int
    pocket_prompts: int = 0
    trained: bool = False
    rounds: int = 2  # default rounds (``--rounds`` sets all)


CONFIGS = {
    "llama128k": Bench("llama128k", "(i) random Llama, 128k vocab", 128256, 256, 4, 1, rounds=1),
    "small512": Bench("small512", "(ii) random Llama, 512 vocab", 512, 512, 6, 1),
    "trained": Bench("trained", "(iii) trained on the mini corpus", 0, 128, 2, 4, 2, True),
}
QUICK = dict(samples=4, new_tokens=32, short_tokens=16, train_steps=30, rounds=1)


def bench_for(name: str, args: argparse.Namespace) -> Bench:
    """The configuration, with one prompt of each kind under ``--quick``."""
    bench = CONFIGS[name]
    if args.quick:
        bench = dataclasses.replace(
            bench, retro_prompts=1, pocket_prompts=min(1, bench.pocket_prompts)
        )
    return bench


def bench_folder(bench: Bench, args: argparse.Namespace) -> Path:
    """Where ``prepare`` puts the configuration (named by what changes its contents)."""
    steps = f"-{args.train_steps}steps" if bench.trained else ""
    return Path(args.workdir) / f"{bench.name}-{bench.retro_prompts}r{bench.pocket_prompts}p{steps}"


# ----- data -----
def data_dir() -> Path:
    """../shared/data when present (the constrained study's published figures), else bundled."""
    return SHARED if (SHARED / "reactions" / "uspto50k_test.csv").is_file() else BUNDLED


def retro_examples(folder: Path = BUNDLED) -> list:
    """USPTO-50K test reactions as ``Retrosynthesis`` objects (file order)."""
    from logos_jax.grammar import Retrosynthesis

    with (folder / "reactions" / "uspto50k_test.csv").open() as f:
        return [
            Retrosynthesis(r["product_canonical"], tuple(r["reactants_canonical"].split(".")))
            for r in csv.DictReader(f)
        ]


def pocket_examples() -> list:
    """One ``BindingSiteSearch`` per bundled complex chain with pocket residues (<= 8 A)."""
    from logos_jax.grammar import BindingSiteSearch

    out = []
    for line in (BUNDLED / "complexes" / "pockets.jsonl").read_text().splitlines():
        row = json.loads(line)
        for chain, sequence in row["chains"].items():
            pocket = [r["seq_index"] for r in row["pocket_le8A"] if r["chain"] == chain]
            if pocket:
                out.append(BindingSiteSearch(sequence, tuple(pocket)))
    return out


def residue_tokenizer(folder: Path):
    from logos_jax.tokenizer import LogosTokenizer, build_residue_tokenizer

    return LogosTokenizer.load(build_residue_tokenizer(folder))


def llama3_prompts(texts: list[str]) -> list[list[int]]:
    """Llama-3 ids (BOS first) with ../shared's tokenizer; else random ids of the bundled Qwen3
    tokenizer's lengths (a random model only sees the lengths)."""
    llama3 = SHARED / "tokenizers" / "llama3" / "tokenizer.json"
    from tokenizers import Tokenizer

    if llama3.is_file():
        tok = Tokenizer.from_file(str(llama3))
        return [[128000, *tok.encode(t, add_special_tokens=False).ids] for t in texts]
    tok = Tokenizer.from_file(
        str(ROOT / "logos_jax" / "assets" / "tokenizers" / "qwen3" / "tokenizer.json")
    )
    rng = np.random.default_rng(0)
    lengths = [len(tok.encode(t, add_special_tokens=False).ids) for t in texts]
    return [[128000, *rng.integers(1000, 100000, size=n).tolist()] for n in lengths]


# ----- models -----
def hf_llama_config(vocab: int, hidden: int, layers: int, bos: int, eos: int, pad: int):
    import transformers

    return transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=max(1, hidden // 128),
        head_dim=64,
        intermediate_size=4 * hidden,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
    )


def save_random_hf(out: Path, config) -> int:
    """A seeded random ``LlamaForCausalLM`` saved as an HF folder; returns its parameter count."""
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def tiny_config(tokenizer, hidden: int = 128, layers: int = 2, max_len: int = 1024):
    from logos_jax.config import ModelConfig

    return ModelConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=hidden // 32,
        num_kv_heads=hidden // 64,
        head_dim=32,
        intermediate_size=3 * hidden,
        max_position_embeddings=max_len,
        eos_token_id=tokenizer.eos_ids[0],
        pad_token_id=tokenizer.pad_id,
        bos_token_id=tokenizer.bos_id,
    )


def pack(texts: list[str], tokenizer, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, segments) ``[n, seq_len]``: BOS + text + EOS, padded (segment 0), cut at seq_len."""
    ids = np.full((len(texts), seq_len), tokenizer.pad_id, np.int32)
    segments = np.zeros((len(texts), seq_len), np.int32)
    for i, text in enumerate(texts):
        seq = [*tokenizer.encode(text), tokenizer.eos_ids[0]][:seq_len]
        ids[i, : len(seq)], segments[i, : len(seq)] = seq, 1
    return ids, segments


def train_tiny(groups: list[tuple[list[str], int, int, int]], tokenizer, steps: int, config=None):
    """A small decoder trained with AdamW (next-token loss, padding masked). ``groups``: (texts,
    seq_len, batch, weight); each step draws a batch from one group, in proportion to weight."""
    import jax
    import jax.numpy as jnp
    import optax

    from logos_jax.model import Decoder, init_params

    config = config or tiny_config(tokenizer)
    data = [(*pack(texts, tokenizer, n), b) for texts, n, b, _ in groups]
    weights = np.array([w for *_, w in groups], float)
    params = init_params(config, jax.random.key(0))
    schedule = optax.warmup_cosine_decay_schedule(0.0, 3e-3, min(30, steps // 3), steps, 1e-4)
    opt = optax.adamw(schedule, weight_decay=0.01)
    opt_state = opt.init(params)

    def loss_fn(p, x, seg):
        positions = jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape)
        logits, _ = Decoder(config).apply({"params": p}, x, positions, seg)
        lp = jax.nn.log_softmax(logits[:, :-1], -1)
        nll = -jnp.take_along_axis(lp, x[:, 1:, None], -1)[..., 0]
        mask = seg[:, 1:]
        return jnp.sum(nll * mask) / jnp.sum(mask)

    @jax.jit
    def step(p, s, x, seg):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, seg)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    rng = np.random.default_rng(0)
    for i in range(steps):
        ids, segments, batch = data[rng.choice(len(data), p=weights / weights.sum())]
        rows = rng.integers(0, len(ids), batch)
        params, opt_state, loss = step(params, opt_state, ids[rows], segments[rows])
        if i % 100 == 0 or i == steps - 1:
            print(f"  train step {i:4d}  loss {float(loss):.3f}", file=sys.stderr)
    return config, params


# ----- prepare: model folders + prompts -----
def prepare_random(bench: Bench, out: Path) -> dict:
    """(i)/(ii): a random HF Llama, converted with hf2jax; retro prompts."""
    from logos_jax.convert.hf2jax import hf_to_jax

    products = [r.prompt() for r in retro_examples()[: bench.retro_prompts]]
    if bench.vocab == 128256:
        prompts, bos, stop, pad = llama3_prompts(products), 128000, 128001, 128009
    else:
        tokenizer = residue_tokenizer(out / "tokenizer")
        prompts = [tokenizer.encode(p) for p in products]
        bos, stop, pad = tokenizer.bos_id, tokenizer.eos_ids[0], tokenizer.pad_id
    config = hf_llama_config(bench.vocab, bench.hidden, bench.layers, bos, stop, pad)
    n_params = save_random_hf(out / "hf", config)
    hf_to_jax(out / "hf", out / "logos", progress=False)
    return dict(
        prompts=prompts,
        kinds=["retro"] * len(prompts),
        stop_ids=[stop],
        pad_id=pad,
        params=n_params,
        vocab=bench.vocab,
    )


TRAIN_RETRO = 800  # retrosyntheses trained on; the ones after them are (iii)'s held-out prompts


def short_retro() -> list:
    """The bundled retrosyntheses of at most 180 characters (training + held-out prompts)."""
    return [r for r in retro_examples() if len(r.encode()) <= 180]


def train_retro_pocket(tokenizer, steps: int):
    """(iii)'s model (and ``benchmarks/speculation.py``'s): ``tiny_config`` trained on the first
    ``TRAIN_RETRO`` short retrosyntheses (1/4 of the batches) and every bundled binding-site search
    (3/4), so that both kinds of answer end where the data's do. Returns (config, params)."""
    pockets = [p.encode() for p in pocket_examples()]
    retro = [r.encode() for r in short_retro()[:TRAIN_RETRO]]
    pocket_len = max(len(tokenizer.encode(p)) for p in pockets) + 1
    groups = [(retro, 192, 32, 1), (pockets, -(-pocket_len // 64) * 64, 8, 3)]
    return train_tiny(groups, tokenizer, steps, tiny_config(tokenizer))


def prepare_trained(bench: Bench, out: Path, train_steps: int) -> dict:
    """(iii): train on bundled retro + pocket-search texts, save, export to HF; held-out retro
    prompts and pocket-search prompts (``text + <ProteinS>``, as the released scripts send)."""
    import jax

    from logos_jax.checkpoint import save_model
    from logos_jax.convert.jax2hf import jax_to_hf
    from logos_jax.grammar import tags

    tokenizer = residue_tokenizer(out / "tokenizer")
    held_out = short_retro()[TRAIN_RETRO:]
    pockets = pocket_examples()
    config, params = train_retro_pocket(tokenizer, train_steps)
    save_model(out / "logos", config, params, out / "tokenizer")
    jax_to_hf(out / "logos", out / "hf", progress=False)
    texts = [r.prompt() for r in held_out[: bench.retro_prompts]]
    texts += [p.prompt() + tags.PROTEIN_S for p in pockets[::4][: bench.pocket_prompts]]
    kinds = ["retro"] * bench.retro_prompts + ["pocket-search"] * bench.pocket_prompts
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    return dict(
        prompts=[tokenizer.encode(t) for t in texts],
        kinds=kinds[: len(texts)],
        stop_ids=list(tokenizer.eos_ids),
        pad_id=tokenizer.pad_id,
        params=n_params,
        vocab=tokenizer.vocab_size,
    )


def run_prepare(bench: Bench, folder: Path, args: argparse.Namespace) -> dict:
    if (folder / "meta.json").is_file():
        return json.loads((folder / "meta.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    meta = (
        prepare_trained(bench, folder, args.train_steps)
        if bench.trained
        else prepare_random(bench, folder)
    )
    (folder / "meta.json").write_text(json.dumps(meta))
    return meta


# ----- (a), (b): transformers -----
def load_hf(folder: Path):
    import torch
    import transformers

    torch.set_num_threads(os.cpu_count() or 1)
    return transformers.LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def completion_lengths(generated, stop_ids: list[int]) -> list[int]:
    """Tokens each row generated, up to and including its first stop id."""
    out = []
    for row in generated.tolist():
        ends = [i for i, t in enumerate(row) if t in stop_ids]
        out.append(ends[0] + 1 if ends else len(row))
    return out


def hf_generate(
    model, batch: list[list[int]], samples: int, meta: dict, new_tokens: int, logits: bool
):
    """Left-padded ``generate`` at the official settings; (generated ids [rows, <= new], logits)."""
    import torch

    pad = meta["pad_id"]
    width = max(len(p) for p in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, p in enumerate(batch):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=True,
        max_new_tokens=new_tokens,
        num_return_sequences=samples,
        pad_token_id=pad,
        eos_token_id=meta["stop_ids"],
        return_dict_in_generate=True,
        output_logits=logits,
        **SETTINGS,
    )
    return out.sequences[:, width:], out.logits


def run_official(model, meta: dict, args: argparse.Namespace) -> int:
    """(a): each prompt duplicated ``samples`` times in one generate call, then one perplexity
    forward (prompt + completion) per sample at batch size 1. Returns generated tokens."""
    import torch

    total = 0
    with torch.no_grad():
        for i, prompt in enumerate(meta["prompts"]):
            torch.manual_seed(1000 * args.seed + i)
            generated, _ = hf_generate(
                model, [prompt] * args.samples, 1, meta, args.new_tokens, False
            )
            for row, n in zip(generated, completion_lengths(generated, meta["stop_ids"])):
                seq = torch.cat([torch.tensor(prompt), row[:n]])[None]
                model(input_ids=seq, labels=seq).loss.exp()
                total += n
    return total


def run_generate(model, meta: dict, args: argparse.Namespace) -> int:
    """(b): ``num_return_sequences`` over as many prompts per call as the logits budget holds (or
    a prompt's samples split in chunks when one prompt's do not fit); log-probs from the logits."""
    import torch

    budget = int(args.hf_logits_gb * 2**30) // (args.new_tokens * meta["vocab"] * 4)
    rows = max(
        [d for d in range(1, args.samples + 1) if args.samples % d == 0 and d <= budget] or [1]
    )
    per_call = max(1, budget // args.samples) if rows == args.samples else 1
    prompts, total, call = meta["prompts"], 0, 0
    with torch.no_grad():
        for b in range(0, len(prompts), per_call):
            for done in range(0, args.samples, rows):
                torch.manual_seed(1000 * args.seed + call)
                call += 1
                n_rows = min(rows, args.samples - done)
                generated, logits = hf_generate(
                    model, prompts[b : b + per_call], n_rows, meta, args.new_tokens, True
                )
                lengths = torch.tensor(completion_lengths(generated, meta["stop_ids"]))
                logprob = torch.zeros(len(generated))
                for t, step_logits in enumerate(logits):
                    lp = torch.log_softmax(step_logits.float(), -1).gather(
                        1, generated[:, t : t + 1]
                    )
                    logprob += torch.where(lengths > t, lp[:, 0], 0.0)
                del logits
                total += int(lengths.sum())
    return total


# ----- (c): the engine -----
def make_sampler(
    folder: Path,
    meta: dict,
    args: argparse.Namespace,
    new_tokens: int,
    stops: bool,
    steps: int = 16,
):
    from logos_jax.checkpoint import load_model
    from logos_jax.sample import SamplingConfig
    from logos_jax.sample.sampler import Sampler

    config, params = load_model(folder / "logos")
    longest = max(len(p) for p in meta["prompts"])
    rows = len(meta["prompts"]) * args.samples
    return Sampler(
        config,
        params,
        stop_ids=meta["stop_ids"] if stops else [],
        pad_id=meta["pad_id"],
        sampling=SamplingConfig(max_new_tokens=new_tokens, **SETTINGS),
        full_perplexity=True,
        num_slots=min(args.slots, rows),  # as a user sizes --batch-size
        max_prompt_len=-(-longest // 16) * 16,
        steps_per_call=steps,
    )


def ours_sample(sampler, meta: dict, args: argparse.Namespace, seed: int) -> tuple[int, dict]:
    """Generated tokens, and per prompt kind (count, stopped fraction, mean/max length)."""
    prompts = meta["prompts"]
    seeds = [1000 * seed + i for i in range(len(prompts))]
    out = sampler.generate(prompts, num_samples=args.samples, seeds=seeds)
    kinds: dict[str, list] = {}
    for kind, completions in zip(meta["kinds"], out):
        kinds.setdefault(kind, []).extend(completions)
    shape = {
        k: dict(
            rows=len(cs),
            stopped=float(np.mean([c.stopped for c in cs])),
            mean_len=float(np.mean([len(c.tokens) for c in cs])),
            max_len=int(max(len(c.tokens) for c in cs)),
        )
        for k, cs in kinds.items()
    }
    return sum(len(c.tokens) for cs in out for c in cs), shape


class DecodeTimer:
    """Wraps an engine's decode program: per call (first step, steps run, seconds, compiled)."""

    def __init__(self, engine):
        self.program = engine._decode_program
        engine._decode_program = self
        self.calls: list[tuple[int, int, float, bool]] = []
        self.shapes: set[tuple] = set()

    def __call__(self, params, state, table, *args, **kwargs):
        import jax

        active = np.asarray(state.slots.active)
        before = np.asarray(state.slots.step)
        compiled = table.shape not in self.shapes
        self.shapes.add(table.shape)
        start = time.perf_counter()
        out = jax.block_until_ready(self.program(params, state, table, *args, **kwargs))
        seconds = time.perf_counter() - start
        steps = np.asarray(out.slots.step) - before
        if active.any():
            first, ran = int(before[active].max()), int(steps[active].max())
            self.calls.append((first, ran, seconds, compiled))
        return out

    def ms_per_step(self, below: int | None = None) -> float:
        """Mean ms per decode step over warm calls that start before step ``below``."""
        calls = [c for c in self.calls if not c[3] and (below is None or c[0] < below)]
        steps = sum(c[1] for c in calls)
        return 1000 * sum(c[2] for c in calls) / steps if steps else float("nan")


def run_steps(folder: Path, meta: dict, args: argparse.Namespace) -> dict:
    """Decode ms/step at max_new_tokens ``short`` vs ``long`` on the same rows, stop ids off."""
    samples = min(args.samples, args.slots)
    per_prompt = max(1, args.slots // samples)
    rows = dict(meta, prompts=meta["prompts"][:per_prompt], kinds=meta["kinds"][:per_prompt])
    sub = argparse.Namespace(**dict(vars(args), samples=samples))
    out = {"rows": len(rows["prompts"]) * samples}
    for label, new_tokens in (("short", args.short_tokens), ("long", args.new_tokens)):
        per_call = min(16, args.short_tokens // 4)  # several warm calls even under --quick
        sampler = make_sampler(folder, rows, sub, new_tokens, stops=False, steps=per_call)
        timer = DecodeTimer(sampler.engine())
        ours_sample(sampler, rows, sub, 0)
        out[f"{label}_first_ms"] = timer.ms_per_step(args.short_tokens)
        out[f"{label}_all_ms"] = timer.ms_per_step()
        out[f"{label}_tokens"] = new_tokens
    out.update(memory_floor(sampler.engine(), rows, sub))
    return out


def memory_floor(engine, meta: dict, args: argparse.Namespace) -> dict:
    """The decode step's memory-traffic floor on this machine: bytes a step must read (the engine's
    weights, plus every row's live keys and values, averaged over the ``new_tokens`` steps) over the
    read bandwidth a jitted reduction gets here (best of 5 over 512 MB)."""
    import jax
    import jax.numpy as jnp

    data = jnp.ones((2**27,), jnp.float32)
    total = jax.jit(jnp.sum)
    total(data).block_until_ready()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        total(data).block_until_ready()
        best = min(best, time.perf_counter() - start)
    bandwidth = data.nbytes / best
    weights = sum(x.nbytes for x in jax.tree.leaves(engine.weights))
    config, rows = engine.config, len(meta["prompts"]) * args.samples
    prompt = float(np.mean([len(p) for p in meta["prompts"]]))
    live = rows * (prompt + args.new_tokens / 2)  # tokens in the cache, averaged over the steps
    per_token = 2 * config.num_layers * config.num_kv_heads * config.head_dim
    kv = live * per_token * engine.state.k[0].dtype.itemsize
    return dict(
        bandwidth_gb_s=bandwidth / 1e9,
        weight_mb=weights / 1e6,
        kv_mb=kv / 1e6,
        floor_ms=(weights + kv) / bandwidth * 1e3,
    )


# ----- one measured process -----
def child(args: argparse.Namespace) -> None:
    """``--run METHOD``: do the work, print one JSON line (``done_at``: wall clock when done)."""
    bench = bench_for(args.config, args)
    folder = bench_folder(bench, args)
    if args.run == "prepare":
        meta = run_prepare(bench, folder, args)
        print(json.dumps({"params": meta["params"], "done_at": time.time()}))
        return
    meta = json.loads((folder / "meta.json").read_text())
    result: dict = {}
    if args.run == "steps":
        result = run_steps(folder, meta, args)
    elif args.run == "ours":
        from logos_jax import compile_cache

        compile_cache.enable()  # as `logos sample` does (LOGOS_COMPILE_CACHE: the driver's folder)
        sampler = make_sampler(folder, meta, args, args.new_tokens, stops=True)
        result["tokens"], result["shape"] = ours_sample(sampler, meta, args, args.seed)
        result["done_at"] = time.time()
        result["compilations"] = sampler.compilations
        if args.warm:
            start = time.perf_counter()
            tokens, _ = ours_sample(sampler, meta, args, args.seed + 100)
            result["warm_tok_s"] = tokens / (time.perf_counter() - start)
    else:
        model = load_hf(folder / "hf")
        run = run_official if args.run == "official" else run_generate
        result["tokens"] = run(model, meta, args)
    result.setdefault("done_at", time.time())
    print(json.dumps(result))


def spawn(method: str, config: str, args: argparse.Namespace, seed: int, warm: bool) -> dict:
    """Run ``--run method`` as its own process; adds ``wall_s`` (spawn to ``done_at``)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run", method, "--config", config]
    for name in (
        "workdir",
        "samples",
        "new_tokens",
        "short_tokens",
        "slots",
        "train_steps",
        "hf_logits_gb",
    ):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    cmd += (
        ["--seed", str(seed)] + (["--warm"] if warm else []) + (["--quick"] if args.quick else [])
    )
    return run_child(cmd, Path(args.workdir), f"{method} / {config}")


def run_child(cmd: list[str], workdir: Path, label: str) -> dict:
    """Run a measured child process (the compilation cache in ``workdir/xla-cache``, as ``logos
    sample`` keeps one); its last stdout line as JSON, plus ``wall_s`` (spawn to ``done_at``)."""
    start = time.time()
    env = dict(os.environ, LOGOS_COMPILE_CACHE=str(workdir / "xla-cache"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{label} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = result["done_at"] - start
    return result


# ----- the driver -----
def drive(args: argparse.Namespace) -> None:
    configs = args.config.split(",") if args.config else list(CONFIGS)
    with tempfile.TemporaryDirectory() as tmp:
        args.workdir = args.workdir or tmp
        shutil.rmtree(Path(args.workdir) / "xla-cache", ignore_errors=True)  # round 1 compiles
        rounds = {n: args.rounds or CONFIGS[n].rounds for n in configs}
        print(
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
            f"{args.samples} samples x max_new_tokens {args.new_tokens}; rounds {rounds}"
        )
        params = {}
        for name in configs:
            result = spawn("prepare", name, args, 0, False)
            params[name] = result["params"]
            print(
                f"prepared {name}: {result['params'] / 1e6:.1f}M parameters "
                f"({result['wall_s']:.0f} s)"
            )
        runs = {name: {m: [] for m in METHODS} for name in configs}
        for r in range(max(rounds.values())):
            for name in [n for n in configs if r < rounds[n]]:
                order = METHODS[r % 3 :] + METHODS[: r % 3]
                for method in order:
                    result = spawn(method, name, args, r, warm=r == 0 and method == "ours")
                    runs[name][method].append(result)
                    print(
                        f"  round {r + 1} {name:<9} {method:<8} {result['wall_s']:7.1f} s  "
                        f"{result['tokens']:6d} tokens  "
                        f"{result['tokens'] / result['wall_s']:8.1f} tok/s",
                        flush=True,
                    )
        steps = {} if args.skip_steps else {n: spawn("steps", n, args, 0, False) for n in configs}
        figures = report(runs, steps, params, args)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


def summarize(results: list[dict]) -> dict:
    rates = [r["tokens"] / r["wall_s"] for r in results]
    return dict(best=max(rates), median=statistics.median(rates), runs=results)


def report(runs: dict, steps: dict, params: dict, args: argparse.Namespace) -> dict:
    """Print tokens/s per method (best / median of rounds), ratios and ms/step; return figures."""
    figures = {}
    print(
        "\nwhole-process tokens/s, best / median of the rounds; "
        "targets: (c)/(a) >= 5x, (c)/(b) >= 2x"
    )
    for name, methods in runs.items():
        stats = {m: summarize(r) for m, r in methods.items()}
        n = len(methods["ours"])
        ours = methods["ours"][0]
        print(
            f"{CONFIGS[name].title}, {params[name] / 1e6:.1f}M parameters, {n} round(s); ours: "
            f"{ours['compilations']} compiled programs, rows {json.dumps(ours['shape'])}"
        )
        for method, s in stats.items():
            first = s["runs"][0]
            print(
                f"  {LABELS[method]:<20} {s['best']:8.1f} / {s['median']:8.1f} tok/s   "
                f"(round 1: {first['tokens']} tokens in {first['wall_s']:.1f} s)"
            )
        print(f"  (c) ours, warm       {ours['warm_tok_s']:8.1f} tok/s (round 1, same process)")
        ratios = {}
        for ref, target in TARGETS.items():
            best = stats["ours"]["best"] / stats[ref]["best"]
            median = stats["ours"]["median"] / stats[ref]["median"]
            ratios[ref] = dict(best=best, median=median)
            mark = "ok" if best >= target else "below"
            cold = stats["ours"]["runs"][0]["tokens"] / stats["ours"]["runs"][0]["wall_s"]
            cold /= stats[ref]["runs"][0]["tokens"] / stats[ref]["runs"][0]["wall_s"]
            print(
                f"  (c)/{LABELS[ref][:3]}  {best:6.2f}x best, {median:6.2f}x median, "
                f"{cold:6.2f}x round 1   target >= {target:.0f}x: {mark}"
            )
        figures[name] = dict(
            params=params[name], tok_s=stats, warm_tok_s=ours["warm_tok_s"], ratios=ratios
        )
    if steps:
        print(
            f"\ndecode ms/step, engine, stop ids off (target: within 20% between "
            f"{args.short_tokens} and {args.new_tokens})"
        )
        for name, s in steps.items():
            change = s["long_first_ms"] / s["short_first_ms"] - 1
            print(
                f"  {name:<9} {s['rows']} rows: first {args.short_tokens} steps "
                f"{s['short_first_ms']:.1f} ms (max_new {args.short_tokens}) vs "
                f"{s['long_first_ms']:.1f} ms (max_new {args.new_tokens}): {change:+.0%}; "
                f"all {args.new_tokens} steps {s['long_all_ms']:.1f} ms"
            )
            print(
                f"  {'':<9} memory floor over all {args.new_tokens} steps {s['floor_ms']:.1f} ms "
                f"(weights {s['weight_mb']:.0f} MB + live KV {s['kv_mb']:.0f} MB on average, read at "
                f"{s['bandwidth_gb_s']:.1f} GB/s): the step takes "
                f"{s['long_all_ms'] / s['floor_ms']:.1f}x the floor"
            )
            figures[name]["ms_per_step"] = s
    load = os.getloadavg()[0]
    print(f"load average now {load:.1f} (a shared CPU makes every figure noisy)")
    figures["settings"] = dict(
        samples=args.samples,
        max_new_tokens=args.new_tokens,
        short_tokens=args.short_tokens,
        sampling=SETTINGS,
        cpus=os.cpu_count(),
        load_average_end=load,
    )
    return figures


# ----- the constrained-decoding study -----
def training_sequences(n: int, max_chars: int) -> tuple[list[str], list[dict], list[dict]]:
    """(training texts, held-out retro input rows, training MOF rows)."""
    from logos_jax.grammar import Material

    reactions = [r for r in retro_examples(data_dir()) if len(r.encode()) <= max_chars]
    with (data_dir() / "materials" / "coremof2024_fsr_mofid.jsonl").open() as f:
        mofs = [json.loads(line) for line in f]
    materials = [(m, Material(".".join(m["nodes"]), tuple(m["linkers"]))) for m in mofs]
    materials = [(m, x) for m, x in materials if len(x.encode()) <= max_chars][:n]
    train_retro, held_out = reactions[:n], reactions[n : n + 40]
    texts = [r.encode() for r in train_retro] + [x.encode() for _, x in materials]
    rows = [{"test_input": r.prompt(), "groundtruth": r.answer()} for r in held_out]
    return texts, rows, [m for m, _ in materials]


def constrained_study(args: argparse.Namespace) -> None:
    from logos_jax.eval import evaluate
    from logos_jax.sample import SamplingConfig, run_sampling

    texts, retro_rows, mof_rows = training_sequences(args.train_examples, 160)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokenizer = residue_tokenizer(tmp / "tokenizer")
        print(f"training on {len(texts)} sequences for {args.train_steps} steps")
        config, params = train_tiny([(texts, 192, 32, 1)], tokenizer, args.train_steps)
        (tmp / "retro.jsonl").write_text("".join(json.dumps(r) + "\n" for r in retro_rows))
        (tmp / "mofs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mof_rows))
        results = {}
        for task, n, inp in (("retro", 8, tmp / "retro.jsonl"), ("material", 200, None)):
            for constrained in (False, True):
                out = tmp / f"{task}-{constrained}.jsonl"
                report = run_sampling(
                    task,
                    out,
                    input_path=inp,
                    model=(config, params),
                    tokenizer=tokenizer,
                    num_samples=n,
                    sampling=SamplingConfig(max_new_tokens=160),
                    batch_size=64,
                    constrained=constrained,
                    progress=False,
                )
                rows = [json.loads(line) for line in out.read_text().splitlines()]
                reference = tmp / "mofs.jsonl" if task == "material" else None
                summary = evaluate(task, rows, reference=reference)
                summary["tokens_per_s"] = report.tokens_per_s
                results[(task, constrained)] = summary
    print_study(results, args)


def print_study(results: dict, args: argparse.Namespace) -> None:
    keys = {
        "retro": ("grammatical", "valid", "top_1", "top_5"),
        "material": ("grammatical", "valid", "unique", "novel", "vnu"),
    }
    print(f"\n{'task':<9} {'metric':<12} {'free':>8} {'constrained':>12}   ratio")
    for task, names in keys.items():
        for name in names:
            free, cons = results[(task, False)][name], results[(task, True)][name]
            ratio = f"{cons / free:.2f}x" if free else "-"
            print(f"{task:<9} {name:<12} {free:8.1%} {cons:12.1%}   {ratio}")
        print(
            f"{task:<9} {'tokens/s':<12} {results[(task, False)]['tokens_per_s']:8.0f} "
            f"{results[(task, True)]['tokens_per_s']:12.0f}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {f"{t}/{'constrained' if c else 'free'}": v for (t, c), v in results.items()},
                indent=2,
            )
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--study", choices=("speed", "constrained"), default="speed")
    add("--config", default=None, help=f"comma-separated subset of {','.join(CONFIGS)}")
    add(
        "--rounds",
        type=int,
        default=None,
        help="interleaved rounds (default: llama128k 1, others 2)",
    )
    add("--samples", type=int, default=32, help="samples per prompt")
    add("--new-tokens", type=int, default=1000, help="max_new_tokens")
    add("--short-tokens", type=int, default=128, help="ms/step: the short max_new_tokens")
    add("--slots", type=int, default=64, help="ours: rows decoded together")
    add("--hf-logits-gb", type=float, default=4.5, help="(b): held logits per generate call")
    add("--train-steps", type=int, default=600, help="(iii) and the constrained study")
    add("--train-examples", type=int, default=400, help="constrained study: per task")
    add("--workdir", default=None, help="prepared models go here (reused when present)")
    add("--skip-steps", action="store_true", help="skip the ms/step measurement")
    add("--quick", action="store_true", help="tiny sizes: samples 4, max_new 32, 1 round")
    add("--json", default=None, help="also write the figures here")
    add("--run", choices=("prepare", *METHODS, "steps"), help=argparse.SUPPRESS)
    add("--seed", type=int, default=0, help=argparse.SUPPRESS)
    add("--warm", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    return args


def main() -> None:
    args = parse_args()
    if args.study == "constrained":
        constrained_study(args)
    elif args.run:
        child(args)
    else:
        drive(args)


if __name__ == "__main__":
    main()

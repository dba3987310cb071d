"""Sampling throughput: logos_jax vs the released scripts' transformers recipe, same model, same prompts.

A random Llama (Llama-3 vocabulary, ~37M parameters by default) is saved as a Hugging Face folder,
converted with ``logos_jax.convert.hf_to_jax``, and the same retrosynthesis-style prompts (USPTO-50K
products from ``../shared/data`` when present) are sampled with T 1.2, top-k 50, top-p 0.85,
repetition penalty 1.05 and no early stop, three ways:

  (a) the released scripts' recipe: ``generate`` on each prompt duplicated ``--samples`` times, then a
      prompt + completion perplexity forward per sample at batch size 1;
  (b) ``generate`` with ``num_return_sequences`` over all prompts at once, with ``output_logits``
      (completion log-probs from the same pass);
  (c) logos_jax ``Sampler`` on the converted checkpoint (one prefill per prompt, shared by its
      samples; log-probs and the prompt + completion perplexity from the same pass).

Prints generated tokens/s for each and the ratios (c)/(a), (c)/(b); (c) is shown warm (compiled; a
job compiles once per prompt bucket) and cold (first call, compile included).

    python benchmarks/sample.py                 # 16 prompts x 8 samples x 128 new tokens
    python benchmarks/sample.py --prompts 4 --new-tokens 32 --hidden 128   # a quick check

``--study constrained`` measures instead what grammar-constrained decoding changes: a tiny model
(per-character tokenizer) is trained for ``--train-steps`` on a few hundred real USPTO-50K
retrosyntheses and CoRE MOF building-block sets, then held-out retrosynthesis prompts and material
prompts are sampled (README settings) with and without ``--constrained``; it prints the grammatical
and valid rates (and retro top-k, material uniqueness) of both, each a ratio against the other.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
SETTINGS = dict(temperature=1.2, top_k=50, top_p=0.85, repetition_penalty=1.05)


def make_prompts(n: int) -> list[list[int]]:
    """Token ids of ``<MoleculeS>product<MoleculeE><ReverseReact>`` for ``n`` USPTO-50K products
    (Llama-3 tokenizer, BOS first); random ids of similar length without ../shared/data."""
    reactions = SHARED / "reactions" / "uspto50k_test.csv"
    tokenizer_file = SHARED / "tokenizers" / "llama3" / "tokenizer.json"
    if reactions.is_file() and tokenizer_file.is_file():
        import csv

        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer_file))
        with reactions.open() as f:
            products = [r["product_canonical"] for r, _ in zip(csv.DictReader(f), range(n))]
        texts = [f"<MoleculeS>{p}<MoleculeE><ReverseReact>" for p in products]
        return [[128000, *tok.encode(t, add_special_tokens=False).ids] for t in texts]
    rng = np.random.default_rng(0)
    return [
        [128000, *rng.integers(1000, 100000, size=int(rng.integers(20, 50))).tolist()]
        for _ in range(n)
    ]


def save_hf_model(out: Path, args: argparse.Namespace):
    import torch
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=128256,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=max(1, args.hidden // 128),
        head_dim=64,
        intermediate_size=4 * args.hidden,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=128000,
        eos_token_id=128001,
        pad_token_id=128009,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(out)
    return model, sum(p.numel() for p in model.parameters())


def hf_generate(model, batch: list[list[int]], samples: int, new_tokens: int, logits: bool):
    """Left-padded ``generate``; returns (sequences [rows, prompt + new], per-step logits or None)."""
    import torch

    width = max(len(p) for p in batch)
    ids = torch.full((len(batch), width), 128009, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, p in enumerate(batch):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=True,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        num_return_sequences=samples,
        pad_token_id=128009,
        eos_token_id=None,
        return_dict_in_generate=True,
        output_logits=logits,
        **SETTINGS,
    )
    return out.sequences, out.logits


def run_official(model, prompts, samples, new_tokens) -> float:
    """(a): duplicated prompts per generate call, then one perplexity forward per sample."""
    import torch

    start = time.perf_counter()
    with torch.no_grad():
        for p in prompts:
            sequences, _ = hf_generate(model, [p] * samples, 1, new_tokens, logits=False)
            for seq in sequences:
                seq = seq[seq != 128009][None] if (seq == 128009).any() else seq[None]
                model(input_ids=seq, labels=seq).loss.exp()
    return time.perf_counter() - start


def run_hf_batched(model, prompts, samples, new_tokens, batch_prompts) -> float:
    """(b): generate with num_return_sequences and per-step logits (completion log-probs), over
    ``batch_prompts`` prompts at a time (all steps' logits of a batch are held in memory)."""
    import torch

    start = time.perf_counter()
    with torch.no_grad():
        for b in range(0, len(prompts), batch_prompts):
            sequences, logits = hf_generate(
                model, prompts[b : b + batch_prompts], samples, new_tokens, logits=True
            )
            chosen = sequences[:, -new_tokens:]
            total = torch.zeros(len(sequences))
            for step, step_logits in enumerate(logits):
                logp = torch.log_softmax(step_logits.float(), -1)
                total += logp.gather(1, chosen[:, step : step + 1])[:, 0]
            del logits
    return time.perf_counter() - start


def run_logos(ckpt: Path, prompts, samples, new_tokens, batch_prompts) -> tuple[float, float, int]:
    """(c): returns (cold seconds incl. compile, warm seconds, compilations)."""
    from logos_jax.checkpoint import load_model
    from logos_jax.sample import SamplingConfig
    from logos_jax.sample.sampler import Sampler

    config, params = load_model(ckpt)
    sampler = Sampler(
        config,
        params,
        stop_ids=[],
        pad_id=128009,
        full_perplexity=True,
        sampling=SamplingConfig(max_new_tokens=new_tokens, **SETTINGS),
    )
    times = []
    for seed in (0, 1):
        start = time.perf_counter()
        out = sampler.generate(
            prompts,
            num_samples=samples,
            seeds=[seed * 1000 + i for i in range(len(prompts))],
            batch_size=batch_prompts,
        )
        times.append(time.perf_counter() - start)
        assert all(len(c.tokens) == new_tokens for o in out for c in o)
    return times[0], times[1], sampler.compilations


def training_sequences(n: int, max_chars: int) -> tuple[list[str], list[dict], list[dict]]:
    """(training texts, held-out retro input rows, training MOF rows) from ../shared/data."""
    import csv

    from logos_jax.grammar import Material, Retrosynthesis

    with (SHARED / "reactions" / "uspto50k_test.csv").open() as f:
        reactions = [
            Retrosynthesis(r["product_canonical"], tuple(r["reactants_canonical"].split(".")))
            for r in csv.DictReader(f)
        ]
    reactions = [r for r in reactions if len(r.encode()) <= max_chars]
    with (SHARED / "materials" / "coremof2024_fsr_mofid.jsonl").open() as f:
        mofs = [json.loads(line) for line in f]
    materials = [(m, Material(".".join(m["nodes"]), tuple(m["linkers"]))) for m in mofs]
    materials = [(m, x) for m, x in materials if len(x.encode()) <= max_chars][:n]
    train_retro, held_out = reactions[:n], reactions[n : n + 40]
    texts = [r.encode() for r in train_retro] + [x.encode() for _, x in materials]
    rows = [{"test_input": r.prompt(), "groundtruth": r.answer()} for r in held_out]
    return texts, rows, [m for m, _ in materials]


def train_tiny(texts: list[str], tokenizer, steps: int, seq_len: int):
    """A small decoder trained with AdamW on ``texts`` (next-token loss, padding masked)."""
    import jax
    import jax.numpy as jnp
    import optax

    from logos_jax.config import ModelConfig
    from logos_jax.model import Decoder, init_params

    config = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=32,
        intermediate_size=384,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_ids[0],
        pad_token_id=tokenizer.pad_id,
        bos_token_id=tokenizer.bos_id,
    )
    ids = np.full((len(texts), seq_len), tokenizer.pad_id, np.int32)
    segments = np.zeros((len(texts), seq_len), np.int32)
    for i, text in enumerate(texts):
        seq = [*tokenizer.encode(text), tokenizer.eos_ids[0]][:seq_len]
        ids[i, : len(seq)], segments[i, : len(seq)] = seq, 1
    params = init_params(config, jax.random.key(0))
    schedule = optax.warmup_cosine_decay_schedule(0.0, 3e-3, 30, steps, 1e-4)
    opt = optax.adamw(schedule, weight_decay=0.01)
    opt_state = opt.init(params)
    positions = jnp.broadcast_to(jnp.arange(seq_len), (32, seq_len))

    def loss_fn(p, x, seg):
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
        batch = rng.integers(0, len(texts), 32)
        params, opt_state, loss = step(params, opt_state, ids[batch], segments[batch])
        if i % 100 == 0 or i == steps - 1:
            print(f"  train step {i:4d}  loss {float(loss):.3f}")
    return config, params


def constrained_study(args: argparse.Namespace) -> None:
    from logos_jax.eval import evaluate
    from logos_jax.sample import SamplingConfig, run_sampling
    from logos_jax.tokenizer import LogosTokenizer, build_residue_tokenizer

    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is needed for the constrained-decoding study")
    texts, retro_rows, mof_rows = training_sequences(args.train_examples, 160)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokenizer = LogosTokenizer.load(build_residue_tokenizer(tmp / "tokenizer"))
        print(f"training on {len(texts)} sequences for {args.train_steps} steps")
        config, params = train_tiny(texts, tokenizer, args.train_steps, 192)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", choices=("speed", "constrained"), default="speed")
    parser.add_argument(
        "--train-steps", type=int, default=600, help="constrained study: training steps"
    )
    parser.add_argument(
        "--train-examples", type=int, default=400, help="constrained study: per task"
    )
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument(
        "--batch-prompts", type=int, default=4, help="prompts per batch for (b) and (c)"
    )
    parser.add_argument("--hidden", type=int, default=256, help="hidden size (multiple of 128)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--skip-official", action="store_true", help="skip (a), the slowest")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.study == "constrained":
        constrained_study(args)
        return

    import torch

    from logos_jax.convert.hf2jax import hf_to_jax

    torch.set_num_threads(os.cpu_count() or 1)
    prompts = make_prompts(args.prompts)
    generated = args.prompts * args.samples * args.new_tokens
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        model, n_params = save_hf_model(Path(tmp) / "hf", args)
        hf_to_jax(Path(tmp) / "hf", Path(tmp) / "logos", progress=False)
        print(
            f"model: random Llama, {n_params / 1e6:.1f}M parameters, vocab 128256; "
            f"{args.prompts} prompts ({min(map(len, prompts))}-{max(map(len, prompts))} tokens) x "
            f"{args.samples} samples x {args.new_tokens} new tokens = {generated} tokens; "
            f"{os.cpu_count()} CPU threads"
        )
        cold, warm, compiles = run_logos(
            Path(tmp) / "logos", prompts, args.samples, args.new_tokens, args.batch_prompts
        )
        batched = run_hf_batched(model, prompts, args.samples, args.new_tokens, args.batch_prompts)
        official = (
            None
            if args.skip_official
            else run_official(model, prompts, args.samples, args.new_tokens)
        )
    load_after = os.getloadavg()

    figures = {
        "generated_tokens": generated,
        "a_official_tok_s": generated / official if official else None,
        "b_hf_batched_tok_s": generated / batched,
        "c_logos_warm_tok_s": generated / warm,
        "c_logos_cold_tok_s": generated / cold,
        "c_compilations": compiles,
        "ratio_c_over_a": official / warm if official else None,
        "ratio_c_over_b": batched / warm,
        "ratio_c_cold_over_b": batched / cold,
        "load_average_before": load_before,
        "load_average_after": load_after,
    }
    if official:
        print(
            f"(a) official recipe      {figures['a_official_tok_s']:9.1f} tok/s  ({official:.1f} s)"
        )
    print(f"(b) HF batched generate  {figures['b_hf_batched_tok_s']:9.1f} tok/s  ({batched:.1f} s)")
    print(f"(c) logos_jax warm       {figures['c_logos_warm_tok_s']:9.1f} tok/s  ({warm:.1f} s)")
    print(
        f"(c) logos_jax cold       {figures['c_logos_cold_tok_s']:9.1f} tok/s  ({cold:.1f} s, {compiles} compile)"
    )
    if official:
        print(f"(c)/(a) = {figures['ratio_c_over_a']:.2f}x")
    print(
        f"(c)/(b) = {figures['ratio_c_over_b']:.2f}x   (cold: {figures['ratio_c_cold_over_b']:.2f}x)"
    )
    print(
        f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} (shared CPU: noisy)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

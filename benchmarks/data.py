"""Data benchmark: does one host's pipeline outrun the 1B training step, and what does the builder cost?

Two figures, each a ratio against a reference measured in the same run:

1. **Pipeline headroom** = tokens/s one host's ``make_train_iterator`` delivers (packed, batched, Grain
   workers on) / tokens/s one host of the 1B run consumes. The consumption is
   ``host tokens per step / step time``. Without ``--step-time`` the step time is *estimated* (no TPU
   here): training FLOPs per step (6 x params x tokens + 12 x layers x seq x hidden x tokens for
   attention, from ``configs/model/logos-1b.yaml``) / (chips x peak bf16 FLOP/s x MFU), defaults from
   ``configs/train/logos-1b.yaml``: a v5p-32 (4 hosts x 4 chips, 459 TFLOP/s each), MFU 0.45,
   256 x 4096 tokens a step. Pass the step time your run logs (``--step-time``) for a measured figure.
2. **Builder overhead** = the builder's tokenization stage (``LogosTokenizer.encode_batch`` + EOS, as the
   builder calls it) and the whole build (grammar encoding, RDKit checks, shards, 2 processes), each as
   tokens/s relative to a bare ``tokenizers.Tokenizer.encode_batch`` over the same grammar texts.

Default: the bundled mini corpus with the qwen3 tokenizer, 16 x 4096 host batches, 15 s per measure.
Full size: ``--host-batch 64 --workers 4 --seconds 60`` on a real host.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

from absl import flags

flags.FLAGS.mark_as_parsed()  # Grain 0.2.18 workers read an absl flag (google/grain#1355)


def _train_flops_per_token(model: str, seq_len: int) -> tuple[float, int]:
    from logos_jax.config import load_model_config

    c = load_model_config(model)
    attn = c.hidden_size * c.head_dim * (2 * c.num_heads + 2 * c.num_kv_heads)
    mlp = 3 * c.hidden_size * c.intermediate_size
    params = c.num_layers * (attn + mlp) + c.vocab_size * c.hidden_size
    params += 0 if c.tie_embeddings else c.vocab_size * c.hidden_size
    flops = 6 * params + 12 * c.num_layers * seq_len * c.num_heads * c.head_dim
    return float(flops), params


def _grammar_texts(config) -> list[str]:
    from logos_jax.data.sources import read_source
    from logos_jax.grammar import GrammarError, encode_record

    texts = []
    for source in config.sources:
        for rec in read_source(Path(source.path), source.format, source.options):
            for layout in source.layouts:
                with contextlib.suppress(GrammarError):
                    texts.append(encode_record(layout, rec.raw))
    return texts


def _rates(fns, texts: list[str], repeats: int = 5) -> list[float]:
    """Tokens/s of each ``fn(texts) -> tokens``, best of ``repeats``, interleaved (fair under load)."""
    best = [float("inf")] * len(fns)
    tokens = [0] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            tokens[i] = fn(texts)
            best[i] = min(best[i], time.perf_counter() - start)
    return [t / b for t, b in zip(tokens, best)]


def bench_builder(args, out: Path) -> Path:
    from tokenizers import Tokenizer

    from logos_jax.data.builder import build_corpus, load_build_config
    from logos_jax.tokenizer import LogosTokenizer

    config = load_build_config(args.config, {"tokenizer": args.tokenizer})
    corpus = out / "corpus"
    start = time.perf_counter()
    manifest = build_corpus(config, corpus, workers=args.build_workers)
    build_s = time.perf_counter() - start
    built_tokens = sum(
        s[x]["tokens"] for s in manifest["modalities"].values() for x in ("train", "eval")
    )

    texts = _grammar_texts(config)
    bare = Tokenizer.from_file(str(corpus / "tokenizer" / "tokenizer.json"))
    ours = LogosTokenizer.load(corpus / "tokenizer")
    eos = list(ours.eos_ids[:1])

    def bare_fn(t):
        return sum(len(e.ids) for e in bare.encode_batch(t, add_special_tokens=False))

    def ours_fn(t):
        return sum(len(ids + eos) for ids in ours.encode_batch(t, add_bos=True))

    bare_rate, ours_rate = _rates([bare_fn, ours_fn], texts)
    print(f"\n== builder ({config.name}, tokenizer {args.tokenizer}, {len(texts)} grammar texts)")
    print(f"bare tokenizers encode_batch:     {bare_rate / 1e6:8.3f} M tokens/s")
    print(
        f"builder tokenization stage:       {ours_rate / 1e6:8.3f} M tokens/s   "
        f"ratio {ours_rate / bare_rate:.2f}"
    )
    build_rate = built_tokens / build_s
    print(
        f"whole build ({args.build_workers} processes, {build_s:.1f} s): {build_rate / 1e6:8.3f} M tokens/s   "
        f"ratio {build_rate / bare_rate:.3f}  (grammar + RDKit + shards included)"
    )
    return corpus


def bench_pipeline(args, corpus: Path) -> None:
    from logos_jax.data.pipeline import make_train_iterator

    host_rows = args.host_batch
    it = make_train_iterator(
        corpus,
        seq_len=args.seq_len,
        global_batch_size=host_rows * args.hosts,
        num_workers=args.workers,
        process_index=0,
        process_count=args.hosts,
    )
    for _ in range(3):  # start the workers, fill the buffers
        next(it)
    start, batches, real = time.perf_counter(), 0, 0
    while time.perf_counter() - start < args.seconds:
        batch = next(it)
        batches += 1
        real += int(batch["target_mask"].sum())
    elapsed = time.perf_counter() - start
    it.close()
    delivered = batches * host_rows * args.seq_len / elapsed

    flops_per_token, params = _train_flops_per_token(args.model, args.seq_len)
    step_tokens = args.step_batch * args.seq_len
    if args.step_time:
        step_time, how = args.step_time, "measured (--step-time)"
    else:
        chips = args.hosts * args.chips_per_host
        step_time = step_tokens * flops_per_token / (chips * args.peak_tflops * 1e12 * args.mfu)
        how = (
            f"estimated: {flops_per_token / 1e9:.2f} GFLOP/token ({params / 1e9:.2f} B params) x "
            f"{step_tokens} tokens / ({chips} chips x {args.peak_tflops} TFLOP/s x MFU {args.mfu})"
        )
    consumed = step_tokens / args.hosts / step_time
    print(
        f"\n== pipeline (seq {args.seq_len}, host batch {host_rows}, {args.workers} Grain workers, "
        f"{args.hosts} hosts)"
    )
    print(
        f"delivered per host:   {delivered / 1e3:10.1f} k tokens/s  ({batches} batches in {elapsed:.1f} s, "
        f"{real / (batches * host_rows * args.seq_len):.1%} non-padding)"
    )
    print(
        f"1B step per host:     {consumed / 1e3:10.1f} k tokens/s  (step {step_time:.2f} s, {how})"
    )
    print(f"headroom ratio (delivered / consumed): {delivered / consumed:.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--config", default="mini", help="data config to build")
    parser.add_argument("--tokenizer", default="qwen3", help="residue | qwen3 | a path")
    parser.add_argument(
        "--corpus", help="use this built corpus for the pipeline (skips the builder part)"
    )
    parser.add_argument("--build-workers", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument(
        "--host-batch", type=int, default=16, help="rows per host batch (1B run: 64)"
    )
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="Grain worker processes")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--model", default="logos-1b")
    parser.add_argument("--step-batch", type=int, default=256, help="global rows per 1B step")
    parser.add_argument("--chips-per-host", type=int, default=4)
    parser.add_argument("--peak-tflops", type=float, default=459.0, help="bf16 peak per chip (v5p)")
    parser.add_argument("--mfu", type=float, default=0.45)
    parser.add_argument("--step-time", type=float, help="a measured 1B step time in seconds")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(args.corpus) if args.corpus else bench_builder(args, Path(tmp))
        bench_pipeline(args, corpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())

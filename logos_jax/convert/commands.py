"""``logos convert``: Hugging Face <-> JAX checkpoint conversion.

logos convert hf2jax HF_DIR OUT_DIR [--add-tags]   HF Llama-3/Qwen3 folder -> logos model folder
logos convert jax2hf CKPT OUT_DIR                   logos model folder or training run -> HF folder
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _hf2jax(args: argparse.Namespace) -> int:
    from logos_jax.convert.hf2jax import hf_to_jax

    out = hf_to_jax(args.hf_dir, args.out_dir, add_tags=args.add_tags, direct_io=args.direct_io)
    print(f"wrote {out}")
    return 0


def _jax2hf(args: argparse.Namespace) -> int:
    from logos_jax.convert.jax2hf import jax_to_hf

    out = jax_to_hf(args.ckpt, args.out_dir, max_shard_bytes=int(args.max_shard_gb * 1024**3))
    print(f"wrote {out}")
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="convert_command", metavar="DIRECTION")
    hf2jax = sub.add_parser(
        "hf2jax",
        help="HF folder (config.json + safetensors + tokenizer) -> logos model folder",
        description=(
            "Convert a Hugging Face LlamaForCausalLM / Qwen3ForCausalLM folder (single or sharded "
            "safetensors, fp32/bf16/fp16) into a logos model folder: model_config.yaml, an Orbax "
            "params/ checkpoint and the tokenizer files. Tensors are read one at a time in their "
            "own dtype and copied in the kernel, as cp copies files (--direct-io: straight to "
            "disk instead); the output appears only once complete."
        ),
    )
    hf2jax.add_argument("hf_dir", type=Path, help="Hugging Face model folder")
    hf2jax.add_argument("out_dir", type=Path, help="output folder (must not exist)")
    hf2jax.add_argument(
        "--add-tags",
        action="store_true",
        help="add the LOGOS grammar tags to the tokenizer and grow the embeddings (new rows = mean "
        "of the existing rows): the start of continued pretraining from a base checkpoint",
    )
    hf2jax.add_argument(
        "--direct-io",
        action="store_true",
        help="write with O_DIRECT, bypassing the page cache (slower when the machine has free RAM; "
        "converting a model larger than it then neither evicts the page cache nor waits on "
        "dirty-page throttling)",
    )
    hf2jax.set_defaults(func=_hf2jax)
    jax2hf = sub.add_parser(
        "jax2hf",
        help="logos model folder or training run -> HF folder loadable by transformers",
        description=(
            "Export a logos model folder (or a training run dir: its latest complete checkpoint) to "
            "a Hugging Face folder: config.json (transformers 5), safetensors shards + index, "
            "tokenizer files. HF -> JAX -> HF is bit-identical."
        ),
    )
    jax2hf.add_argument("ckpt", type=Path, help="logos model folder or training run dir")
    jax2hf.add_argument("out_dir", type=Path, help="output folder (must not exist)")
    jax2hf.add_argument(
        "--max-shard-gb", type=float, default=2.0, help="largest safetensors shard, in GiB"
    )
    jax2hf.set_defaults(func=_jax2hf)

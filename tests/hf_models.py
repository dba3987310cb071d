"""Tiny random transformers models saved as HF folders: the parity reference for conversion tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the 'convert' extra (torch, transformers)")
transformers = pytest.importorskip("transformers", reason="needs the 'convert' extra")

LLAMA32_SCALING = {
    "rope_type": "llama3",
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def hf_config(kind: str, vocab: int = 256):
    """A tiny Llama-3.2-like (GQA, llama3 scaling, tied) or Qwen3-like (qk norm, head_dim 32, untied)."""
    common = dict(
        vocab_size=vocab,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=131072,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    if kind == "llama":
        return transformers.LlamaConfig(
            **common,
            rms_norm_eps=1e-5,
            tie_word_embeddings=True,
            rope_parameters={"rope_theta": 500000.0, **LLAMA32_SCALING},
        )
    return transformers.Qwen3Config(
        **common,
        head_dim=32,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        rope_parameters={"rope_theta": 1000000.0, "rope_type": "default"},
    )


def make_hf_model(kind: str, out: Path, dtype: str = "float32", seed: int = 0, **save_kwargs):
    """Build, randomise (incl. norm weights), save with save_pretrained; returns the torch model."""
    torch.manual_seed(seed)
    cls = transformers.LlamaForCausalLM if kind == "llama" else transformers.Qwen3ForCausalLM
    model = cls(hf_config(kind))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    model = model.to(getattr(torch, dtype)).eval()
    model.save_pretrained(out, **save_kwargs)
    return model


def padded_batch(rng: np.random.Generator, lengths: list[int], vocab: int = 256):
    """Left-padded token ids, attention mask and per-row positions (``cumsum(mask) - 1``)."""
    width = max(lengths)
    tokens = np.zeros((len(lengths), width), np.int32)
    mask = np.zeros_like(tokens)
    for row, n in enumerate(lengths):
        tokens[row, width - n :] = rng.integers(3, vocab, n)
        mask[row, width - n :] = 1
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
    return tokens, mask, positions

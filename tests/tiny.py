"""Tiny models and greedy settings shared by the sampler, engine, job and eval tests."""

from pathlib import Path

from logos_jax.config import ModelConfig
from logos_jax.sample.processors import SamplingConfig

TINY = ModelConfig(
    vocab_size=64,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    intermediate_size=64,
    tie_embeddings=False,
    max_position_embeddings=512,
)
GREEDY = SamplingConfig(temperature=0, top_k=0, top_p=1.0, repetition_penalty=1.0, max_new_tokens=8)


def residue_model_folder(root: Path, max_position_embeddings: int = 80, tokenizer_dir=None):
    """A saved tiny random model folder with the residue tokenizer under ``root``:
    (folder, tokenizer, config, params). ``tokenizer_dir``: an already built residue tokenizer."""
    import jax

    from logos_jax.checkpoint import save_model
    from logos_jax.model import init_params
    from logos_jax.tokenizer import LogosTokenizer, build_residue_tokenizer

    tok_dir = tokenizer_dir or build_residue_tokenizer(root / "tokenizer")
    tok = LogosTokenizer.load(tok_dir)
    config = ModelConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_layers=1,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        intermediate_size=64,
        max_position_embeddings=max_position_embeddings,
        eos_token_id=tok.eos_ids[0],
        pad_token_id=tok.pad_id,
        bos_token_id=tok.bos_id,
    )
    params = init_params(config, jax.random.key(0))
    folder = save_model(root / "model", config, params, tokenizer_dir=tok_dir)
    return folder, tok, config, params

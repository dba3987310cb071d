"""The tiny decoder and greedy settings shared by the sampler and engine tests."""

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

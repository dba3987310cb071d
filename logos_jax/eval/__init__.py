"""Task metrics for sampling outputs: retrosynthesis top-k, validity / uniqueness / novelty, pocket F1."""

from logos_jax.eval.metrics import (
    evaluate,
    load_reference,
    load_truth,
    rank_answers,
    residue_scores,
)

__all__ = ["evaluate", "load_reference", "load_truth", "rank_answers", "residue_scores"]

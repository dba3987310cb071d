"""Copy-speculation: drafts from the binding-site constraint, verified in one model call, emit exactly
the tokens of the plain decode loop (greedy and sampled), keep the answers grammatical, and draw from
the same distribution."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from logos_jax.engine import Engine, Request
from logos_jax.engine.engine import SpeculationStats, tokens_per_call
from logos_jax.grammar import tags
from logos_jax.sample import constraints
from logos_jax.sample.processors import SamplingConfig
from tests.tiny import GREEDY, residue_model_folder

PROTEINS = ["MKTAYIAKQRQISFVKSHFSRQ", "MKVLAAGIVG", "GSHMSLFDFFKNKGSAATATDRLKLV"]
SAMPLED = SamplingConfig(max_new_tokens=64)  # the README settings: T 1.2, top-p 0.85, penalty 1.05


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    _, tok, config, params = residue_model_folder(
        tmp_path_factory.mktemp("spec"), max_position_embeddings=256
    )
    constraint = constraints.protein_copy(
        constraints.token_texts(tok), tok.tag_ids(), sorted(tok.eos_ids), config.vocab_size, 40
    )
    return tok, config, params, constraint


def requests(tok, constraint, samples, proteins=PROTEINS, seed=0):
    return [
        Request(
            tok.encode(f"{tags.PROTEIN_S}{p}{tags.PROTEIN_E}{tags.SEARCH}{tags.PROTEIN_S}"),
            samples,
            seed=seed + i,
            constraint_state=constraint.start(p, tok.encode(p, add_bos=False)),
        )
        for i, p in enumerate(proteins)
    ]


def run(tiny, sampling, speculate, samples=4, slots=8, **kw):
    tok, config, params, constraint = tiny
    engine = Engine(
        config,
        params,
        stop_ids=tok.eos_ids,
        pad_id=tok.pad_id,
        sampling=sampling,
        num_slots=slots,
        max_prompt_len=96,
        constraint=constraint,
        speculate=speculate,
    )
    out = dict(engine.run(requests(tok, constraint, samples, **kw)))
    return [out[i] for i in range(len(out))], engine


def same_tokens(a, b):
    return all(np.array_equal(x.tokens, y.tokens) for xs, ys in zip(a, b) for x, y in zip(xs, ys))


@pytest.mark.parametrize("max_new", [60, 7])
def test_greedy_output_is_the_same_with_and_without_speculation(tiny, max_new):
    greedy = dataclasses.replace(GREEDY, max_new_tokens=max_new)
    plain, _ = run(tiny, greedy, 0, samples=1)
    spec, engine = run(tiny, greedy, 4, samples=1)
    assert same_tokens(plain, spec)
    assert all(len(c.tokens) <= max_new for cs in spec for c in cs)
    for xs, ys in zip(plain, spec):  # log-probs from the verify call equal the step-by-step ones
        np.testing.assert_allclose(xs[0].logprobs, ys[0].logprobs, atol=1e-5)
    if max_new == 60:
        assert engine.speculation.accepted > 0
        tok = tiny[0]
        assert all(
            tok.decode(c.tokens).endswith(tags.PROTEIN_E + "</s>") for cs in spec for c in cs
        )


def test_sampled_output_is_the_same_token_for_token_and_grammatical(tiny):
    plain, _ = run(tiny, SAMPLED, 0)
    spec, engine = run(tiny, SAMPLED, 8, slots=5)  # other slots and batching too
    assert same_tokens(plain, spec)
    # Every answer is the input protein again, with pockets around single residues.
    tok = tiny[0]
    for protein, completions in zip(PROTEINS, spec):
        for c in completions:
            text = tok.decode(c.tokens, skip_special=False)
            body = text.split(tags.PROTEIN_E)[0]
            assert body.replace(tags.POCKET_S, "").replace(tags.POCKET_E, "") == protein
    assert engine.speculation.drafted > 0
    drafts = {k[1] for k in engine.compiled_shapes if k[0] == "decode"}
    assert all(d > 0 for d in drafts) and len(drafts) <= 4  # only speculative programs


def test_sampled_distribution_is_unchanged(tiny):
    """Different seeds for the two runs: per-position token frequencies over 160 samples of one
    protein agree (the distributions are the same, not merely the draws)."""
    protein = ["MKVLAAG"]
    sampling = dataclasses.replace(SAMPLED, temperature=1.5, top_p=1.0, top_k=0)
    plain, _ = run(tiny, sampling, 0, samples=160, slots=32, proteins=protein, seed=0)
    spec, _ = run(tiny, sampling, 4, samples=160, slots=32, proteins=protein, seed=1000)
    assert not same_tokens(plain, spec)
    vocab = tiny[1].vocab_size
    for position in range(6):
        freq = [
            np.bincount(
                [int(c.tokens[position]) for c in cs[0] if len(c.tokens) > position],
                minlength=vocab,
            )
            / len(cs[0])
            for cs in (plain, spec)
        ]
        # 160 samples: a frequency's standard error is at most 0.04; 4 of them is a loose bound.
        assert np.max(np.abs(freq[0] - freq[1])) < 0.16, position


def test_drafts_follow_the_copy_through_pockets(tiny):
    tok, _, _, constraint = tiny
    protein = "MKVLA"
    ids = tok.encode(protein, add_bos=False)
    start = constraint.start(protein, ids)
    eos, pocket_s, pocket_e, protein_e = (
        tok.eos_ids[0],
        tok.token_id(tags.POCKET_S),
        tok.token_id(tags.POCKET_E),
        tok.token_id(tags.PROTEIN_E),
    )

    def draft(tokens, k=4, start=start):
        s = {key: jnp.asarray(v)[None] for key, v in start.items()}
        for t in tokens:
            s = constraint.advance(s, jnp.asarray([t]))
        return np.asarray(constraint.draft(s, k))[0].tolist()

    assert draft([]) == ids[:4]  # copying: the prompt's tokens
    assert draft(ids[:3], 4) == [ids[3], ids[4], protein_e, eos]
    # In or right after a pocket, the next residues are drafted as pockets too.
    assert draft([ids[0], pocket_s], 4) == [ids[1], pocket_e, pocket_s, ids[2]]
    assert draft([ids[0], pocket_s, ids[1]], 3) == [pocket_e, pocket_s, ids[2]]
    assert draft([ids[0], pocket_s, ids[1], pocket_e], 4) == [pocket_s, ids[2], pocket_e, pocket_s]
    assert draft([ids[0], pocket_s, ids[1], pocket_e, ids[2]], 3) == [ids[3], ids[4], protein_e]
    assert draft([*ids[:4], pocket_s, ids[4], pocket_e], 3) == [protein_e, eos, -1]
    assert draft([*ids, protein_e], 3) == [eos, -1, -1]
    # Tokens that do not spell the protein: no copy drafts (decoding still works, unspeculated).
    assert draft([], 3, constraint.start(protein, ids[::-1])) == [-1, -1, -1]
    assert draft([], 3, constraint.start(protein)) == [-1, -1, -1]


def test_draft_length_adapts_to_the_acceptance_rate():
    assert tokens_per_call(0.5, 2) == pytest.approx(1.75)
    stats = SpeculationStats()
    assert stats.update(10, 10, 4, 8) == 4  # too few drafts to judge
    assert stats.update(200, 198, 4, 8) == 8  # nearly all accepted: longer drafts pay
    stats = SpeculationStats()
    assert stats.update(200, 20, 8, 8) == 4  # few accepted: shorter drafts
    assert stats.update(400, 40, 4, 8) == 2
    assert stats.update(600, 60, 2, 8) == 1
    assert stats.update(800, 80, 1, 8) == 1


def test_a_longer_draft_that_measures_slower_is_undone():
    stats = SpeculationStats()
    assert stats.update(200, 198, 4, 8, speed=1000.0) == 8  # acceptance says: longer
    assert stats.update(300, 297, 8, 8, speed=None) == 8  # compiled: not timed
    assert stats.update(400, 396, 8, 8, speed=600.0) == 4  # slower than 4: back
    assert stats.too_long == 8
    assert stats.update(600, 594, 4, 8, speed=1000.0) == 4  # and not tried again


def test_sampling_job_rows_are_the_same_with_and_without_speculation(tiny, tmp_path):
    import json

    from logos_jax.sample import run_sampling

    tok, config, params, _ = tiny
    rows = [
        {"id": f"p{i}", "text": f"<ProteinS>{p}<ProteinE><Search>"} for i, p in enumerate(PROTEINS)
    ]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    outputs = []
    for speculate in (0, 8):
        out = tmp_path / f"out{speculate}.jsonl"
        run_sampling(
            "pocket-search",
            out,
            input_path=inp,
            model=(config, params),
            tokenizer=tok,
            num_samples=3,
            sampling=SAMPLED,
            constrained=True,
            progress=False,
            speculate=speculate,
        )
        outputs.append([json.loads(r) for r in sorted(out.read_text().splitlines())])
    plain, spec = outputs
    assert [r["completion"] for r in plain] == [r["completion"] for r in spec]
    assert [r["perplexity"] for r in plain] == pytest.approx([r["perplexity"] for r in spec])
    assert all(r["grammatical"] for r in spec)

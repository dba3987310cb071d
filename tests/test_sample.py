"""The sampler: engine decode vs full forward, processors vs transformers, stops, beams, sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from logos_jax.engine import Engine, Request
from logos_jax.model import Decoder, init_params
from logos_jax.sample.processors import SamplingConfig, process_logits
from logos_jax.sample.sampler import Sampler
from logos_jax.sharding import MeshConfig, make_mesh
from tests.tiny import GREEDY, TINY

CFG = TINY
PROMPTS = [[1, 5, 6, 7], [1, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24]]


REF_LEN = 32


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.key(0))


@pytest.fixture(scope="module")
def greedy(params):
    return Sampler(CFG, params, stop_ids=[], pad_id=0, sampling=GREEDY, full_perplexity=True)


@jax.jit
def _forward_log_probs(params, tokens):
    """Reference: the whole (right-padded, causal) sequence through the model, no cache."""
    logits, _ = Decoder(CFG).apply({"params": params}, tokens, jnp.arange(REF_LEN)[None])
    return jax.nn.log_softmax(logits[0], axis=-1)


def sequence_logprobs(params, tokens):
    """log p(tokens[i + 1] | tokens[: i + 1]) for every i, from one full forward pass."""
    padded = jnp.asarray([tokens + [0] * (REF_LEN - len(tokens))])
    lp = np.asarray(_forward_log_probs(params, padded))
    return np.array([lp[i, tokens[i + 1]] for i in range(len(tokens) - 1)])


def full_forward_greedy(params, prompt, steps):
    """Reference greedy decoding: re-run the full sequence each step; tokens and log-probs."""
    tokens = list(prompt)
    for _ in range(steps):
        padded = jnp.asarray([tokens + [0] * (REF_LEN - len(tokens))])
        lp = np.asarray(_forward_log_probs(params, padded))
        tokens.append(int(np.argmax(lp[len(tokens) - 1])))
    return tokens[len(prompt) :], sequence_logprobs(params, tokens)[len(prompt) - 1 :]


@pytest.mark.parametrize("page_size", [4, 16])
def test_engine_greedy_equals_full_forward_per_prompt(params, page_size):
    """Pages of 4 split both prompts mid-page (shared full pages + a copied partial page)."""
    sampler = Sampler(
        CFG,
        params,
        stop_ids=[],
        pad_id=0,
        sampling=GREEDY,
        full_perplexity=True,
        page_size=page_size,
        num_slots=3,
    )
    out = sampler.generate(PROMPTS, num_samples=2)
    for prompt, samples in zip(PROMPTS, out):
        ref_tokens, ref_lp = full_forward_greedy(params, prompt, GREEDY.max_new_tokens)
        for c in samples:
            assert c.tokens.tolist() == ref_tokens
            np.testing.assert_allclose(c.logprobs, ref_lp, atol=1e-4)
            full = sequence_logprobs(params, prompt + ref_tokens)
            assert c.prompt_logprob == pytest.approx(full[: len(prompt) - 1].sum(), abs=1e-3)
            assert c.full_perplexity == pytest.approx(np.exp(-full.mean()), rel=1e-4)
            assert c.perplexity == pytest.approx(np.exp(-np.mean(ref_lp)), rel=1e-4)


def test_sampling_is_seeded_per_prompt_and_samples_differ(params):
    sampling = SamplingConfig(
        temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0, max_new_tokens=6
    )
    sampler = Sampler(CFG, params, stop_ids=[], pad_id=0, sampling=sampling)
    both = sampler.generate(PROMPTS, num_samples=4, seeds=[7, 9])
    # Two slots: samples wait for free slots and run beside other samples.
    two_slots = Sampler(CFG, params, stop_ids=[], pad_id=0, sampling=sampling, num_slots=2)
    alone = two_slots.generate(PROMPTS[:1], num_samples=4, seeds=[7])
    assert [c.tokens.tolist() for c in both[0]] == [c.tokens.tolist() for c in alone[0]]
    assert len({tuple(c.tokens.tolist()) for c in both[0]}) > 1
    for c in both[1]:  # log-probs are the raw model's, whatever the sampling settings
        ref = sequence_logprobs(params, PROMPTS[1] + c.tokens.tolist())[len(PROMPTS[1]) - 1 :]
        np.testing.assert_allclose(c.logprobs, ref, atol=1e-4)


def test_stop_token_set_ends_each_row_at_its_first_stop(params, greedy):
    ref = greedy.generate(PROMPTS)
    seq_a, seq_b = ref[0][0].tokens.tolist(), ref[1][0].tokens.tolist()
    stop_a = seq_a[2]
    stop_b = next(t for t in seq_b if t not in seq_a)  # ends row b only
    stopped = Sampler(CFG, params, stop_ids=[stop_a, stop_b], pad_id=0, sampling=GREEDY).generate(
        PROMPTS
    )
    for ref_seq, (c,) in zip((seq_a, seq_b), stopped):
        first = next(i for i, t in enumerate(ref_seq) if t in (stop_a, stop_b))
        assert c.stopped and c.tokens.tolist() == ref_seq[: first + 1]
    assert not ref[0][0].stopped and len(seq_a) == GREEDY.max_new_tokens


def test_beam_search(greedy):
    sampler = greedy
    greedy = sampler.generate(PROMPTS)
    one = sampler.generate(PROMPTS, num_beams=1)
    assert [o[0].tokens.tolist() for o in one] == [g[0].tokens.tolist() for g in greedy]
    beams = sampler.generate(PROMPTS, num_beams=4)
    for b, g in zip(beams, greedy):
        scores = [c.score for c in b]
        assert scores == sorted(scores, reverse=True) and len(b) == 4
        assert len({tuple(c.tokens.tolist()) for c in b}) == 4
        np.testing.assert_allclose(scores, [c.sum_logprob for c in b], atol=1e-3)
        assert scores[0] >= g[0].sum_logprob - 1e-4


def test_sharded_mesh_gives_same_tokens(greedy):
    assert len(jax.devices()) == 8
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    sharded_params = init_params(CFG, jax.random.key(0), mesh)
    sampler = Sampler(CFG, sharded_params, stop_ids=[], pad_id=0, sampling=GREEDY, mesh=mesh)
    assert sampler.engine().num_slots % 4 == 0
    out = sampler.generate(PROMPTS, num_samples=2)
    ref = greedy.generate(PROMPTS)
    for o, r in zip(out, ref):
        assert all(c.tokens.tolist() == r[0].tokens.tolist() for c in o)
        np.testing.assert_allclose(o[0].logprobs, r[0].logprobs, atol=1e-4)


def test_engine_state_starts_where_its_programs_leave_it():
    """The fresh state is placed as the programs return it, so the first prefill and admission
    compile once (not once for a fresh state and again for the state they return): on the engine's
    mesh, the pages' kv heads split over ``tensor`` at their layout's kv-head axis; without one, on
    the mesh the weights live on."""
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    params = init_params(CFG, jax.random.key(0), mesh)
    for kernel, kv_axis in (("pallas_interpret", 0), ("xla", 1)):
        engine = Engine(
            CFG, params, stop_ids=[], pad_id=0, sampling=GREEDY, mesh=mesh, paged_kernel=kernel
        )
        start = engine._state_shardings()
        for spec in (start.k.spec, start.v.spec):
            assert spec[kv_axis] == "tensor" and "tensor" not in spec[:kv_axis]
    list(engine.run([Request(PROMPTS[0], 2, 0)]))
    assert engine.state.k[0].sharding.is_equivalent_to(start.k, 4)
    one = make_mesh(MeshConfig(num_devices=1))  # the mesh `load_model` places weights on
    params = init_params(CFG, jax.random.key(0), one)
    engine = Engine(CFG, params, stop_ids=[], pad_id=0, sampling=GREEDY)  # no mesh of its own
    list(engine.run([Request([1, 5, 6, 7], 2, 0), Request([1, 8, 9], 2, 1)]))  # one chunk length
    assert engine._prefill_program._cache_size() == engine._admit_program._cache_size() == 1


# ----- logits processors vs transformers -----
@pytest.mark.parametrize(
    "config",
    [
        SamplingConfig(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.3),
        SamplingConfig(temperature=0.7, top_k=0, top_p=1.0, repetition_penalty=1.0),
        SamplingConfig(temperature=1.0, top_k=7, top_p=1.0, repetition_penalty=1.0),
        SamplingConfig(temperature=1.0, top_k=0, top_p=0.8, repetition_penalty=1.0),
        SamplingConfig(temperature=1.0, top_k=0, top_p=0.999, repetition_penalty=1.0),
        SamplingConfig(temperature=1.0, top_k=0, top_p=1.0, min_p=0.2, repetition_penalty=1.0),
        SamplingConfig(temperature=1.2, top_k=50, top_p=0.85, min_p=0.05, repetition_penalty=1.05),
    ],
)
@pytest.mark.parametrize("peaked", [False, True])
def test_processors_match_transformers(config, peaked):
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("transformers.generation.logits_process")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 300)).astype(np.float32) * (6.0 if peaked else 1.0)
    input_ids = rng.integers(0, 300, size=(4, 12))
    seen = np.zeros((4, 300), bool)
    np.put_along_axis(seen, input_ids, True, axis=1)
    procs = []
    if config.repetition_penalty != 1.0:
        procs.append(tf.RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
    if config.temperature != 1.0:
        procs.append(tf.TemperatureLogitsWarper(config.temperature))
    if config.top_k:
        procs.append(tf.TopKLogitsWarper(config.top_k))
    if config.top_p < 1.0:
        procs.append(tf.TopPLogitsWarper(config.top_p))
    if config.min_p:
        procs.append(tf.MinPLogitsWarper(config.min_p))
    expected = torch.from_numpy(logits.copy())
    for p in procs:
        expected = p(torch.from_numpy(input_ids), expected)
    expected = expected.numpy()
    got = np.asarray(process_logits(jnp.asarray(logits), config, jnp.asarray(seen)))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("vocab", [128256, 100001])
def test_two_stage_top_k_equals_lax_top_k(vocab):
    """The chunked top-k of large vocabularies returns exactly ``lax.top_k``'s values and indices,
    ragged last chunk, ties (to the lower index) and masked (-inf) rows included."""
    from logos_jax.sample.processors import top_k

    rng = np.random.default_rng(vocab)
    x = rng.normal(size=(2, 3, vocab)).astype(np.float32)
    x[0, 0] = np.round(x[0, 0], 1)  # many ties
    x[0, 1] = -np.inf
    x[0, 1, rng.choice(vocab, 20, replace=False)] = rng.normal(size=20)  # 20 allowed tokens
    x[1, 2, -3:] = 10.0  # the best values in the short last chunk
    for k in (50, 64):
        want_values, want_ids = jax.lax.top_k(jnp.asarray(x), k)
        values, ids = jax.jit(top_k, static_argnums=1)(jnp.asarray(x), k)
        np.testing.assert_array_equal(np.asarray(values), np.asarray(want_values))
        np.testing.assert_array_equal(np.asarray(ids), np.asarray(want_ids))


def test_processors_match_transformers_on_a_large_vocabulary():
    """The official settings (top-k 50 through the chunked top-k) against transformers at 30k ids."""
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("transformers.generation.logits_process")
    config = SamplingConfig()
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(3, 30000)).astype(np.float32) * 4.0
    input_ids = rng.integers(0, 30000, size=(3, 40))
    seen = np.zeros(logits.shape, bool)
    np.put_along_axis(seen, input_ids, True, axis=1)
    expected = torch.from_numpy(logits.copy())
    for proc in (
        tf.RepetitionPenaltyLogitsProcessor(config.repetition_penalty),
        tf.TemperatureLogitsWarper(config.temperature),
        tf.TopKLogitsWarper(config.top_k),
        tf.TopPLogitsWarper(config.top_p),
    ):
        expected = proc(torch.from_numpy(input_ids), expected)
    expected = expected.numpy()
    got = np.asarray(process_logits(jnp.asarray(logits), config, jnp.asarray(seen)))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-5, atol=1e-5)


def test_sampling_config_rejects_bad_values():
    from logos_jax.errors import LogosError

    with pytest.raises(LogosError, match="top_p"):
        SamplingConfig(top_p=0.0)
    with pytest.raises(LogosError, match="temperature"):
        SamplingConfig(temperature=-1)


@pytest.mark.parametrize(
    "config",
    [
        SamplingConfig(temperature=1.2, top_k=50, top_p=0.85, min_p=0.0, repetition_penalty=1.05),
        SamplingConfig(temperature=0.8, top_k=10, top_p=1.0, min_p=0.1, repetition_penalty=1.0),
        SamplingConfig(temperature=1.0, top_k=0, top_p=0.5, repetition_penalty=1.2),
    ],
)
def test_candidate_distribution_equals_full_vocabulary_distribution(config):
    from logos_jax.sample.processors import token_distribution

    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(3, 500)).astype(np.float32) * 4.0)
    seen = jnp.asarray(rng.random((3, 500)) < 0.05)
    _, full = token_distribution(logits, config, seen)
    ids, probs = token_distribution(logits, config, seen, candidates=64)
    scattered = np.zeros((3, 500), np.float32)
    np.put_along_axis(scattered, np.asarray(ids), np.asarray(probs), axis=1)
    np.testing.assert_allclose(scattered, np.asarray(full), atol=1e-6)


def test_sample_token_frequencies_follow_the_distribution():
    from logos_jax.sample.processors import sample_token, token_distribution

    config = SamplingConfig(temperature=1.0, top_k=0, top_p=0.9, repetition_penalty=1.0)
    logits = jnp.tile(jnp.linspace(0.0, 3.0, 12)[None], (20000, 1))
    uniform = jax.random.uniform(jax.random.key(3), (20000,), minval=1e-7)
    tokens = np.asarray(jax.jit(lambda x, u: sample_token(x, config, None, u))(logits, uniform))
    _, probs = token_distribution(logits[:1], config)
    freq = np.bincount(tokens, minlength=12) / len(tokens)
    np.testing.assert_allclose(freq, np.asarray(probs[0]), atol=0.015)

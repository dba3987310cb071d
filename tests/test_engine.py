"""The decode engine: in-place KV pages, shared prompt pages, continuous batching, chunked prefill."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from logos_jax.engine import Engine, Request
from logos_jax.engine.narrowing import NarrowingRent, narrower_width
from logos_jax.engine.pages import PagePool, pages_for
from logos_jax.engine.programs import lm_head
from logos_jax.model import Decoder, init_params
from logos_jax.sample.processors import SamplingConfig
from tests.tiny import GREEDY, TINY

CFG = TINY
SAMPLED = SamplingConfig(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.1)


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.key(0))


def full_forward_greedy(params, prompt, steps):
    tokens = list(prompt)
    apply = jax.jit(Decoder(CFG).apply)
    for _ in range(steps):
        logits, _ = apply({"params": params}, jnp.asarray([tokens]), jnp.arange(len(tokens))[None])
        tokens.append(int(jnp.argmax(logits[0, -1])))
    return tokens[len(prompt) :]


def make_engine(params, sampling=GREEDY, stop_ids=(), **options):
    return Engine(CFG, params, stop_ids=stop_ids, pad_id=0, sampling=sampling, **options)


def run(engine, requests):
    out = dict(engine.run(requests))
    return [out[i] for i in range(len(requests))]


def decode_memory(params, num_pages):
    engine = make_engine(
        params,
        sampling=dataclasses.replace(SAMPLED, max_new_tokens=1000),
        num_slots=8,
        max_prompt_len=32,
        num_pages=num_pages,
    )
    engine._check([Request([1, 2, 3], 1, 0)])
    table = jnp.zeros((engine.num_slots, engine.max_pages), jnp.int32)
    compiled = engine._decode_program.lower(
        engine.params, engine.state, table, jnp.int32(1), None, steps=engine.steps_per_call
    ).compile()
    return compiled.memory_analysis(), sum(x.nbytes for x in engine.state.k + engine.state.v)


def test_decode_step_temporaries_do_not_grow_with_the_kv_pages(params):
    """The compiled decode program updates the donated pages in place: its temporaries hold a
    block of pages per row, never a copy of the cache, whatever the pool's size."""
    small, _ = decode_memory(params, 600)
    large, cache_bytes = decode_memory(params, 2400)
    assert large.temp_size_in_bytes == small.temp_size_in_bytes
    assert large.temp_size_in_bytes < cache_bytes / 20, (large.temp_size_in_bytes, cache_bytes)
    assert large.alias_size_in_bytes >= cache_bytes  # donated: outputs alias the input pages


def test_samples_share_one_prefill_and_the_prompt_pages(params, monkeypatch):
    prompt = list(range(1, 24))  # 23 tokens: 5 full pages of 4 and a partial one
    engine = make_engine(params, num_slots=4, page_size=4)
    prefills = []
    original = engine._prefill_program

    def counting(*args):
        prefills.append(args[3].shape)
        return original(*args)

    engine._prefill_program = counting
    taken = []
    take = PagePool.take

    def recording(self, n):
        got = take(self, n)
        taken.append(self.num_pages - 1 - self.free)
        return got

    monkeypatch.setattr(PagePool, "take", recording)
    (out,) = run(engine, [Request(prompt, 10, 0)])
    assert len(out) == 10 and len(prefills) == 1  # one prefill for 10 samples in 4 slots
    ref = full_forward_greedy(params, prompt, GREEDY.max_new_tokens)
    assert all(c.tokens.tolist() == ref for c in out)
    # In use at most: the prompt's 6 pages + per running sample its copy of the partial page and
    # the pages of its next steps_per_call tokens; never a private copy of the prompt.
    per_sample = pages_for(23 + engine.steps_per_call, 4) - 5
    assert max(taken) <= 6 + 4 * per_sample
    assert engine.pool.free == engine.pool.num_pages - 1  # everything given back


def test_continuous_batching_refills_slots_and_matches_a_wide_batch(params):
    """Rows stop at different steps; a slot that frees up takes the next pending sample, and every
    sample equals the one a batch wide enough for all samples gives. The wide batch narrows its
    slot table as its rows finish (and widens again for the next run) without changing a token."""
    prompts = [[1, 5, 6, 7], [1, 9, 10, 11, 12, 13], [2, 3], [4, 4, 4, 4, 4, 4, 4, 4, 4]]
    sampling = dataclasses.replace(SAMPLED, max_new_tokens=12)
    stop = [17, 33]
    requests = [Request(p, 5, 100 + i) for i, p in enumerate(prompts)]
    narrow = make_engine(params, sampling, stop, num_slots=3, steps_per_call=4)
    wide = make_engine(params, sampling, stop, num_slots=64, steps_per_call=2, narrow_after=0)
    got, want = run(narrow, requests), run(wide, requests)
    lengths = {len(c.tokens) for out in want for c in out}
    assert len(lengths) > 1  # real, varied stops
    for g, w in zip(got, want, strict=True):
        assert [c.tokens.tolist() for c in g] == [c.tokens.tolist() for c in w]
        for a, b in zip(g, w, strict=True):
            np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
            assert a.stopped == b.stopped == (a.tokens[-1] in stop)
    # One decode program whatever the rows' lengths; one prefill program per chunk length.
    assert narrow.compiled_shapes == {("admit",), ("decode", 0, 3), ("prefill", 16)}
    widths = sorted(k[2] for k in wide.compiled_shapes if k[0] == "decode")
    assert widths[0] < 64 and len(widths) <= 3, widths  # 64, then 16 (and 4) as rows finish
    again = run(wide, requests)
    assert [[c.tokens.tolist() for c in r] for r in again] == [
        [c.tokens.tolist() for c in r] for r in want
    ]


def test_a_table_that_never_narrows_gives_the_same_tokens(params):
    """Narrowing waits until the idle slots have wasted what a new program costs: with that cost
    out of reach the wide table decodes the whole tail, one decode program, the same tokens."""
    prompts = [[1, 5, 6, 7], [1, 9, 10, 11, 12, 13], [2, 3]]
    sampling = dataclasses.replace(SAMPLED, max_new_tokens=12)
    requests = [Request(p, 5, 100 + i) for i, p in enumerate(prompts)]
    eager = make_engine(params, sampling, [17, 33], num_slots=64, steps_per_call=2, narrow_after=0)
    never = make_engine(
        params, sampling, [17, 33], num_slots=64, steps_per_call=2, narrow_after=1e9
    )
    want, got = run(eager, requests), run(never, requests)
    assert [[c.tokens.tolist() for c in r] for r in got] == [
        [c.tokens.tolist() for c in r] for r in want
    ]
    assert {k[2] for k in never.compiled_shapes if k[0] == "decode"} == {64}
    assert min(k[2] for k in eager.compiled_shapes if k[0] == "decode") < 64
    assert never.narrowing.waste > 0  # the tail's idle slots were counted


def test_narrowing_rent_measures_a_programs_cost_and_narrows_once_it_is_wasted():
    rent = NarrowingRent()
    assert not rent.due(ready=False)  # cost unknown: keep the table
    assert rent.due(ready=True)  # a prepared program costs nothing
    rent.record(1.32, steps=16, prepared=True, idle_share=0.0)  # 1.0 s preparing + 16 x 20 ms
    rent.record(0.32, steps=16, prepared=False, idle_share=0.0)
    assert rent.cost == pytest.approx(1.0)
    rent.record(0.32, steps=16, prepared=False, idle_share=0.75)
    assert rent.waste == pytest.approx(0.24) and not rent.due(ready=False)
    for _ in range(3):
        rent.record(0.32, steps=16, prepared=False, idle_share=0.75)
    assert rent.waste == pytest.approx(0.96) and not rent.due(ready=False)
    rent.record(0.32, steps=16, prepared=False, idle_share=0.75)
    assert rent.due(ready=False)
    # A prepared call that ran fewer steps: its steps are priced at the next call's rate.
    short = NarrowingRent()
    short.record(0.5, steps=4, prepared=True, idle_share=0.0)
    short.record(0.16, steps=16, prepared=False, idle_share=0.0)
    assert short.cost == pytest.approx(0.46)
    assert NarrowingRent(cost=0.0).due(ready=False)


def test_narrower_width_divides_by_four_down_to_a_sixteenth_in_whole_shards():
    assert narrower_width(64, live=40, num_slots=64, shards=1) == 64
    assert narrower_width(64, live=16, num_slots=64, shards=1) == 16
    assert narrower_width(64, live=1, num_slots=64, shards=1) == 4  # not below 64 // 16
    assert narrower_width(16, live=3, num_slots=64, shards=1) == 4
    assert narrower_width(64, live=1, num_slots=64, shards=8) == 16  # 4 is not a multiple of 8
    assert narrower_width(3, live=0, num_slots=3, shards=1) == 3


def test_prompts_of_many_lengths_compile_few_prefill_programs(params):
    """Prompt chunks are 16 tokens times a power of four (at most ``prefill_chunk``): prompts of 28
    to 217 tokens share two prefill programs instead of four powers of two."""
    engine = make_engine(
        params,
        sampling=dataclasses.replace(GREEDY, max_new_tokens=1),
        num_slots=2,
        max_prompt_len=224,
        prefill_chunk=256,
    )
    lengths = [28, 53, 104, 217]
    run(engine, [Request([1 + i % 50 for i in range(n)], 1, 0) for n in lengths])
    assert {k for k in engine.compiled_shapes if k[0] == "prefill"} == {
        ("prefill", 64),
        ("prefill", 256),
    }


def test_long_prompt_prefilled_in_chunks_equals_full_forward(params):
    prompt = [int(t) for t in np.random.default_rng(0).integers(1, 64, 70)]
    engine = make_engine(
        params,
        num_slots=2,
        page_size=8,
        prefill_chunk=16,
        full_perplexity=True,
    )
    (out,) = run(engine, [Request(prompt, 2, 0)])
    assert ("prefill", 16) in engine.compiled_shapes
    ref = full_forward_greedy(params, prompt, GREEDY.max_new_tokens)
    assert all(c.tokens.tolist() == ref for c in out)
    logits, _ = Decoder(CFG).apply(
        {"params": params}, jnp.asarray([prompt]), jnp.arange(len(prompt))[None]
    )
    lp = jax.nn.log_softmax(logits[0], axis=-1)
    expected = float(sum(lp[i, prompt[i + 1]] for i in range(len(prompt) - 1)))
    assert out[0].prompt_logprob == pytest.approx(expected, abs=1e-3)


def test_bad_requests_are_refused(params):
    engine = make_engine(params, max_prompt_len=8)
    with pytest.raises(ValueError, match="1 to 8 tokens"):
        run(engine, [Request(list(range(9)), 1, 0)])
    with pytest.raises(ValueError, match="1 to 8 tokens"):
        run(engine, [Request([], 1, 0)])
    assert run(engine, [Request([1, 2], 0, 0)]) == [[]]


def test_pallas_paged_kernel_in_interpret_mode_equals_the_xla_path():
    """The Pallas paged-attention kernel (run by Pallas' interpreter on CPU) and the blocked XLA
    loop agree on GQA rows of different lengths reading scattered, shared pages, with the XLA loop
    in every page layout (either order, keys with tokens last or not) and block size."""
    from logos_jax.model.attention import (
        KVLayout,
        PageLayout,
        paged_attention,
        pallas_paged_attention,
    )

    rng = np.random.default_rng(0)
    batch, heads, kv_heads, hd, page_size, pages, width = 3, 4, 2, 16, 4, 40, 16
    k_pages = jnp.asarray(rng.normal(size=(kv_heads, pages, page_size, hd)), jnp.float32)
    v_pages = jnp.asarray(rng.normal(size=(kv_heads, pages, page_size, hd)), jnp.float32)
    table = np.zeros((batch, width), np.int32)
    table[:, :3] = [5, 9, 2]  # a shared prefix
    table[0, 3:7], table[1, 3:12], table[2, 3:4] = [11, 3, 30, 7], range(20, 29), [33]
    positions = jnp.asarray([[26], [45], [13]], jnp.int32)
    q = jnp.asarray(rng.normal(size=(batch, 1, heads, hd)), jnp.float32)
    table = jnp.asarray(table)
    got = pallas_paged_attention(q, k_pages, v_pages, table, positions[:, 0] + 1, 8, interpret=True)

    def relaid(pages: jax.Array, layout: PageLayout) -> jax.Array:  # from [kv, pages, ps, hd]
        order = (1, 0) if layout.pages_major else (0, 1)
        return pages.transpose(*order, *((3, 2) if layout.tokens_last else (2, 3)))

    layouts = [KVLayout.for_kernel("pallas"), KVLayout.for_kernel("xla")]
    layouts.append(
        KVLayout(PageLayout(False, tokens_last=True), PageLayout(True, tokens_last=True))
    )
    for layout in layouts:
        k, v = relaid(k_pages, layout.k), relaid(v_pages, layout.v)
        for block, blocks in [(8, 2), (1, 12)]:
            ref = paged_attention(
                q, k, v, table, positions, jnp.int32(blocks), block, layout, jnp.float32
            )
            np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=2e-5)


def test_page_layouts_write_read_and_copy_the_same_tokens():
    """Every ``PageLayout`` holds a token's key at (page, offset) and gathers a row's pages in
    table order; copying a page copies it whole."""
    from logos_jax.model.attention import PageLayout

    rng = np.random.default_rng(1)
    kv_heads, page_size, hd = 2, 4, 3
    new = jnp.asarray(rng.normal(size=(2, 3, kv_heads, hd)), jnp.float32)  # [batch, seq, kv, hd]
    page, offset = jnp.asarray([[3, 3, 1], [2, 2, 2]]), jnp.asarray([[2, 3, 0], [0, 1, 2]])
    gathered = []
    for major in (False, True):
        for tokens_last in (False, True):
            layout = PageLayout(pages_major=major, tokens_last=tokens_last)
            pages = jnp.zeros(layout.shape(5, kv_heads, page_size, hd))
            assert layout.page_size(pages) == page_size and layout.kv_heads(pages) == kv_heads
            pages = layout.write(pages, page, offset, new)
            pages = layout.copy(pages, jnp.asarray([3]), jnp.asarray([4]))
            rows = layout.gather(pages, jnp.asarray([[3, 1], [4, 2]]))
            if tokens_last:  # [batch, kv, hd, 8] -> [batch, kv, 8, hd]
                rows = rows.transpose(0, 1, 3, 2)
            assert rows.shape == (2, kv_heads, 2 * page_size, hd)
            np.testing.assert_array_equal(rows[0, :, 2:5], new[0].transpose(1, 0, 2))
            np.testing.assert_array_equal(rows[1, :, 2:4], new[0, :2].transpose(1, 0, 2))  # copy
            np.testing.assert_array_equal(rows[1, :, 4:7], new[1].transpose(1, 0, 2))
            gathered.append(rows)
    for rows in gathered[1:]:
        np.testing.assert_array_equal(gathered[0], rows)


def test_engine_with_the_pallas_kernel_decodes_like_the_xla_path(params):
    prompts = [[1, 5, 6, 7, 8, 9], [2, 3]]
    results = []
    for kernel in ("xla", "pallas_interpret"):
        engine = make_engine(
            params,
            num_slots=2,
            page_size=4,
            block_pages=2,
            paged_kernel=kernel,
        )
        results.append(run(engine, [Request(p, 1, 0) for p in prompts]))
    for a, b in zip(*results, strict=True):
        assert a[0].tokens.tolist() == b[0].tokens.tolist()
        np.testing.assert_allclose(a[0].logprobs, b[0].logprobs, atol=1e-4)


def test_decode_weights_are_laid_out_once_and_shared(params):
    """The engine reads its kernels ``[in, out]`` (``kernels_to_in_out``) and its LM head
    ``[hidden, vocab]``: the same logits as the table's ``[out, in]``; an engine built from another's
    ``weights`` reuses them (no second relayout, which would transpose them back) and decodes the
    same tokens."""
    tokens = jnp.asarray([[5, 9, 2, 7, 3]])
    positions = jnp.arange(5)[None]
    table_logits, _ = Decoder(CFG).apply({"params": params}, tokens, positions)
    first = make_engine(params, sampling=SAMPLED, num_slots=4)
    in_out = Decoder(CFG, scan_layers=False, kernels_in_out=True)
    hidden, _ = in_out.apply({"params": first.params}, tokens, positions, return_hidden=True)
    engine_logits = lm_head(CFG, first.params, hidden)
    np.testing.assert_allclose(engine_logits, table_logits, rtol=1e-5, atol=1e-5)
    gate = first.params["layers_0"]["mlp"]["gate_proj"]["weight"]
    assert gate.shape == (CFG.hidden_size, CFG.intermediate_size)  # the table's is [out, in]

    second = make_engine(first.weights, sampling=SAMPLED, num_slots=3)
    assert second.weights is first.weights
    requests = [Request([4, 8, 15, 16], 5, seed=3), Request([23, 42], 4, seed=4)]
    expect = run(first, requests)
    got = run(second, requests)
    assert [[c.tokens.tolist() for c in r] for r in got] == [
        [c.tokens.tolist() for c in r] for r in expect
    ]

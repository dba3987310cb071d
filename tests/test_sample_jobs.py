"""Sampling jobs: the CLI on a saved tiny model, bad rows, resumption, constrained decoding, eval plumbing."""

import json

import pytest

from logos_jax.cli import main
from logos_jax.eval import evaluate
from logos_jax.sample import SamplingConfig, run_sampling
from tests.tiny import residue_model_folder

PROTEIN = "MKTAYIAKQR"
RETRO_ROWS = [
    {
        "test_input": "<MoleculeS>CCO<MoleculeE><ReverseReact>",
        "groundtruth": "<MoleculeS>CC<MoleculeE>",
    },
    "this line is not JSON",
    {"groundtruth": "<MoleculeS>C<MoleculeE>"},
    {"test_input": "<MoleculeS>CCN<Bogus><ReverseReact>"},
    {"test_input": "<MoleculeS>" + "C" * 80 + "<MoleculeE><ReverseReact>"},
    {"test_input": "<MoleculeS>c1ccccc1O<MoleculeE><ReverseReact>"},
    {"id": "r3", "test_input": "<MoleculeS>CC(=O)O<MoleculeE><ReverseReact>"},
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A saved tiny random model folder with the residue tokenizer: (folder, tokenizer, config, params)."""
    return residue_model_folder(tmp_path_factory.mktemp("tiny"))


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def read_out(path):
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_cli_skips_bad_rows_and_resumes_without_duplicates(tiny, tmp_path, capsys):
    folder = tiny[0]
    inp = write_jsonl(tmp_path / "in.jsonl", RETRO_ROWS)
    out = tmp_path / "out.jsonl"
    argv = [
        "sample",
        "--task",
        "retro",
        "--ckpt",
        str(folder),
        "--input",
        str(inp),
        "--out",
        str(out),
        "--num-samples",
        "3",
        "--max-new-tokens",
        "16",
        "--batch-size",
        "6",
        "--no-progress",
        "--full-perplexity",
    ]
    assert main(argv) == 0
    err = capsys.readouterr().err
    reported = {
        int(line.split(":")[1]): line.split("skipped: ")[1]
        for line in err.splitlines()
        if "skipped: " in line
    }
    assert sorted(reported) == [2, 3, 4, 5]
    assert reported[2].startswith("not valid JSON (")
    assert "missing field 'test_input'" in reported[3]
    assert "unknown tag <Bogus>" in reported[4]
    assert "exceeds the model context of 80" in reported[5]
    assert "3 input(s) sampled (9 samples" in err
    rows = read_out(out)
    assert sorted((r["id"], r["sample"]) for r in rows) == sorted(
        (i, s) for i in ("1", "6", "r3") for s in range(3)
    )
    first = rows[0]
    assert first["text"] == first["prompt"] + first["completion"]
    assert first["perplexity"] > 1 and first["full_perplexity"] > 1
    assert 1 <= first["num_tokens"] <= 16 and isinstance(first["valid"], bool)
    assert [r["groundtruth"] for r in rows if r["id"] == "1"] == [RETRO_ROWS[0]["groundtruth"]] * 3

    # A kill mid-write: one input lost a row, the last line is torn.
    lines = out.read_text().splitlines(keepends=True)
    assert json.loads(lines[0])["id"] != json.loads(lines[-1])["id"]
    drop = 0  # a row of the first input; the torn line belongs to the last one
    damaged = [line for i, line in enumerate(lines) if i != drop]
    damaged[-1] = damaged[-1][: len(damaged[-1]) // 2]
    out.write_text("".join(damaged))
    assert main(argv) == 0
    assert "2 input(s) sampled" in capsys.readouterr().err
    rows = read_out(out)
    keys = [(r["id"], r["sample"]) for r in rows]
    assert len(keys) == len(set(keys)) == 9

    before = out.read_text()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "0 input(s) sampled" in err and "3 already done" in err
    assert out.read_text() == before


@pytest.mark.parametrize(
    ("task", "rows", "max_new"),
    [
        ("retro", [RETRO_ROWS[0], RETRO_ROWS[6]], 10),
        ("material", None, 24),
        (
            "ligand",
            [{"id": "x.pdb", "protein_pocket_ligand": f"<ProteinS>{PROTEIN}<ProteinE><MoleculeS>"}],
            12,
        ),
        (
            "pocket-search",
            [
                {"id": "p.pdb", "text": f"<ProteinS>{PROTEIN}<ProteinE><Search>"},
                {"id": "q.pdb", "text": "<ProteinS>MKV<ProteinE><Search>"},
            ],
            40,
        ),
    ],
)
def test_constrained_decoding_is_always_grammatical(tiny, tmp_path, task, rows, max_new):
    _, tok, config, params = tiny
    inp = write_jsonl(tmp_path / "in.jsonl", rows) if rows else None
    out = tmp_path / f"{task}.jsonl"
    report = run_sampling(
        task,
        out,
        input_path=inp,
        model=(config, params),
        tokenizer=tok,
        num_samples=6,
        sampling=SamplingConfig(max_new_tokens=max_new),
        batch_size=12,
        constrained=True,
        progress=False,
    )
    result = read_out(out)
    assert report.samples == len(result) == 6 * (len(rows) if rows else 1)
    assert all(r["grammatical"] for r in result), [r["completion"] for r in result]
    if task == "pocket-search":
        assert all(isinstance(r["objects"]["pocket"], list) for r in result)
    if task == "material":
        assert {r["id"] for r in result} == {"material-000000"}
    summary = evaluate(task, result)
    assert summary["grammatical"] == 1.0 and summary["samples"] == len(result)


def test_free_task_needs_no_grammar(tiny, tmp_path):
    _, tok, config, params = tiny
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "hello <world>"}])
    out = tmp_path / "free.jsonl"
    report = run_sampling(
        "free",
        out,
        input_path=inp,
        model=(config, params),
        tokenizer=tok,
        sampling=SamplingConfig(temperature=0, max_new_tokens=5),
        progress=False,
    )
    (row,) = read_out(out)
    assert report.written == 1 and row["valid"] is None and row["num_tokens"] <= 5


def test_constrained_beam_search_rows_are_ranked(tiny, tmp_path):
    _, tok, config, params = tiny
    inp = write_jsonl(tmp_path / "in.jsonl", [RETRO_ROWS[0]])
    out = tmp_path / "beams.jsonl"
    run_sampling(
        "retro",
        out,
        input_path=inp,
        model=(config, params),
        tokenizer=tok,
        num_beams=3,
        sampling=SamplingConfig(max_new_tokens=10),
        constrained=True,
        progress=False,
    )
    rows = read_out(out)
    scores = [r["beam_score"] for r in rows]
    assert len(rows) == rows[0]["group_size"] == 3 and scores == sorted(scores, reverse=True)
    assert all(r["grammatical"] for r in rows)
    assert len({r["completion"] for r in rows}) == 3


def test_a_repeated_job_reuses_the_persistent_compilation_cache(tiny, tmp_path):
    import os
    import subprocess
    import sys

    folder = tiny[0]
    inp = write_jsonl(tmp_path / "in.jsonl", [RETRO_ROWS[0]])
    cache = tmp_path / "xla-cache"
    env = dict(os.environ, LOGOS_COMPILE_CACHE=str(cache), JAX_LOG_COMPILES="1")
    outputs = []
    for run in range(2):
        out = tmp_path / f"out{run}.jsonl"
        argv = ["sample", "--task", "retro", "--ckpt", folder, "--input", inp, "--out", out]
        argv += ["--num-samples", "2", "--max-new-tokens", "8", "--no-progress"]
        done = subprocess.run(
            [sys.executable, "-m", "logos_jax.cli", *map(str, argv)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(read_out(out))
        if run == 0:
            assert any(cache.iterdir()), "nothing was stored"
            assert "Persistent compilation cache hit" not in done.stderr
    assert "Persistent compilation cache hit" in done.stderr
    assert [r["completion"] for r in outputs[0]] == [r["completion"] for r in outputs[1]]

"""Bad input, tried as a careless user and as a hostile file would: every case ends with a one-line
error or a correct result, never a traceback, never a changed input.

The CLI is called in-process (``logos_jax.cli.main``): an uncaught exception fails the test (that
is a traceback for the user); ``SystemExit(2)`` is argparse's one-line usage error; a ``LogosError``
becomes exit status 2 with ``logos <cmd>: error: ...`` on stderr. Hand-written cases cover each
command; hypothesis generates config values, JSONL rows and byte strings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from logos_jax import jsonl_io
from logos_jax.cli import main
from logos_jax.config import ModelConfig, save_model_config
from logos_jax.errors import LogosError, quiet_closed_loop_reports
from logos_jax.files import atomic_write_text, public_mode, remove_stale_temps, umask
from logos_jax.model_folder import atomic_folder
from logos_jax.tokenizer import LogosTokenizer, build_residue_tokenizer
from tests.tiny import residue_model_folder

# Derandomized: CI runs the same examples every time (a new failure is a code change, not luck).
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def cli(argv: list[str], capsys) -> tuple[int, str]:
    """``(exit status, stderr)`` of ``logos argv`` run in-process; a traceback fails the test."""
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse usage errors
        rc = exit_.code if isinstance(exit_.code, int) else 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def one_line_error(rc: int, err: str, *words: str) -> None:
    """A failed command printed one error line (after any usage text) that names ``words``."""
    assert rc != 0, err
    lines = [x for x in err.strip().splitlines() if "error:" in x]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], err


def snapshot(*paths: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in paths}


@pytest.fixture(scope="module")
def residue_tok(tmp_path_factory) -> Path:
    return build_residue_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer")


def fake_model_folder(root: Path, tok_dir: Path, vocab_size: int) -> Path:
    """A folder that looks like a converted model (config, params/, tokenizer) without weights."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "params").mkdir(exist_ok=True)
    config = ModelConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_layers=1,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        intermediate_size=64,
    )
    save_model_config(config, root / "model_config.yaml")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (tok_dir / name).is_file():
            (root / name).write_bytes((tok_dir / name).read_bytes())
    return root


# ------------------------------------------------------------------------------ outputs: data loss


def test_sample_refuses_output_equal_to_input(tmp_path, capsys):
    rows = tmp_path / "in.jsonl"
    rows.write_text('{"test_input": "<MoleculeS>CCO<MoleculeE><ReverseReact>"}\n')
    before = snapshot(rows)
    for out in (rows, tmp_path / "." / "in.jsonl"):
        argv = ["sample", "--task", "retro", "--ckpt", tmp_path / "nope", "--input", rows]
        rc, err = cli([*argv, "--out", out], capsys)
        one_line_error(rc, err, "destroy the input")
    link = tmp_path / "link.jsonl"
    link.symlink_to(rows)
    argv = ["sample", "--task", "retro", "--ckpt", tmp_path / "nope", "--input", rows]
    rc, err = cli([*argv, "--out", link], capsys)
    one_line_error(rc, err, "destroy the input")
    assert snapshot(rows) == before


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--num-samples", "0"),
        ("--num-samples", "-3"),
        ("--num-samples", "2.5"),
        ("--temperature", "nan"),
        ("--temperature", "inf"),
        ("--temperature", "-1"),
        ("--repetition-penalty", "nan"),
        ("--repetition-penalty", "0"),
        ("--top-p", "0"),
        ("--top-p", "1.5"),
        ("--top-p", "nan"),
        ("--min-p", "nan"),
        ("--top-k", "-1"),
        ("--max-new-tokens", "0"),
        ("--batch-size", "0"),
        ("--num-beams", "-2"),
        ("--seed", "abc"),
    ],
)
def test_sample_rejects_bad_numbers(tmp_path, capsys, flag, value):
    argv = ["sample", "--task", "free", "--ckpt", tmp_path, "--out", tmp_path / "o.jsonl"]
    rc, err = cli([*argv, flag, value], capsys)
    assert rc == 2
    one_line_error(rc, err, flag)
    assert not (tmp_path / "o.jsonl").exists()


def test_sampling_config_rejects_nan():
    from logos_jax.sample import SamplingConfig

    for bad in (
        {"temperature": float("nan")},
        {"repetition_penalty": float("nan")},
        {"top_p": float("nan")},
        {"min_p": float("nan")},
        {"temperature": float("inf")},
    ):
        with pytest.raises(LogosError, match="invalid sampling settings"):
            SamplingConfig(**bad)


def test_sample_refuses_tokenizer_larger_than_model(tmp_path, capsys, residue_tok):
    vocab = LogosTokenizer.load(residue_tok).vocab_size
    model = fake_model_folder(tmp_path / "model", residue_tok, vocab - 5)
    rows = tmp_path / "in.jsonl"
    rows.write_text('{"id": "a", "prompt": "MKT"}\n')
    argv = ["sample", "--task", "free", "--ckpt", model, "--input", rows]
    rc, err = cli([*argv, "--out", tmp_path / "o.jsonl"], capsys)
    one_line_error(rc, err, f"{vocab} ids", f"{vocab - 5} embedding rows")
    assert not (tmp_path / "o.jsonl").exists()


def test_eval_refuses_to_overwrite_results(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    results.write_text(
        json.dumps({"id": "1", "sample": 0, "completion": "x", "valid": True}) + "\n"
    )
    other = tmp_path / "other_results.jsonl"
    other.write_text(results.read_text())
    before = snapshot(results, other)
    rc, err = cli(["eval", "--task", "free", results, "--summary", results], capsys)
    one_line_error(rc, err, "destroy the input")
    rc, err = cli(["eval", "--task", "free", results, "--summary", other], capsys)
    one_line_error(rc, err, "--force")
    assert snapshot(results, other) == before
    rc, err = cli(["eval", "--task", "free", results, "--summary", tmp_path], capsys)
    one_line_error(rc, err, "folder")


def test_eval_rejects_results_without_rows(tmp_path, capsys):
    for content in (b"", b"\xff\xfe\x00garbage\n", b"not json\n[1, 2]\n"):
        results = tmp_path / "r.jsonl"
        results.write_bytes(content)
        rc, err = cli(["eval", "--task", "free", results], capsys)
        assert rc == 2 and "no result rows" in err, err


# Bad --reference / --truth lines and wrong-typed result rows: each is one skipped line with its
# file:line on stderr, the rest is scored; never a traceback, the inputs unchanged.
EVAL_GOOD_ROW = {
    "id": "a",
    "sample": 0,
    "prompt": "<MoleculeS>CCCCOC(C)=O<MoleculeE><ReverseReact>",
    "completion": "<MoleculeS>CCO<MoleculeE><MoleculeS>CC(=O)O<MoleculeE>",
    "perplexity": 2.0,
}
WRONG_TYPED_ROWS = {
    "completion-int": {"completion": 5},
    "text-int": {"text": 5, "completion": None},
    "prompt-int": {"prompt": 5},
    "prompt-object": {"prompt": {"a": 1}},
    "objects-str": {"objects": "x"},
    "sample-null": {"sample": None},
    "id-null": {"id": None},
    "id-list": {"id": [1]},
    "perplexity-str": {"perplexity": "x"},
    "sum_logprob-list": {"sum_logprob": [1]},
    "groundtruth-int": {"groundtruth": 5},
    "groundtruth-nulls": {"groundtruth": [None]},
    "pocket-str": {"groundtruth": {"pocket": "x"}},
    "pocket-strs": {"pocket": ["1", "2"]},
    "ligand-int": {"ligand": 7},
    "a-list": [1, 2],
    "a-string": "row",
    "a-number": 5,
    "null": None,
}


def eval_summary(tmp_path, capsys, argv, *inputs: Path) -> tuple[dict, str]:
    """``logos eval argv --summary``: (the summary, stderr); a traceback or a changed input fails."""
    before = snapshot(*inputs)
    summary = tmp_path / "summary.json"
    rc, err = cli([*argv, "--summary", summary], capsys)
    assert rc == 0, err
    assert snapshot(*inputs) == before
    return json.loads(summary.read_text()), err


@pytest.mark.parametrize("task", ["free", "pocket-search", "retro", "ligand", "material"])
@pytest.mark.parametrize("bad", sorted(WRONG_TYPED_ROWS))
def test_eval_skips_result_rows_of_wrong_types(tmp_path, capsys, task, bad):
    if task in ("retro", "ligand", "material"):
        pytest.importorskip("rdkit")
    value = WRONG_TYPED_ROWS[bad]
    row = {**EVAL_GOOD_ROW, "sample": 1, **value} if isinstance(value, dict) else value
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps(EVAL_GOOD_ROW) + "\n" + json.dumps(row) + "\n")
    summary, err = eval_summary(tmp_path, capsys, ["eval", "--task", task, results], results)
    assert summary["samples"] == 1
    skipped = [x for x in err.splitlines() if x.startswith(f"{results}:2: skipped: ")]
    assert len(skipped) == 1, err
    if isinstance(value, dict):
        assert f"field '{next(iter(value))}" in skipped[0], err  # the field is named
    # every row of the wrong type: one error line, no traceback
    results.write_text(json.dumps(row) + "\n")
    rc, err = cli(["eval", "--task", task, results], capsys)
    one_line_error(rc, err, "no result rows")


BAD_TEXT_FILES = {
    "binary": (b"\x00\x01\x02\xff\xfe\x00" * 20, []),
    "invalid-utf8-line": (b"CCO\n\xc3\x28 not text\nc1ccccc1\n", [2]),
    "nul-line": (b"CCO\nCC\x00O\nc1ccccc1\n", [2]),
    "latin-1": ("CCO\ncaf\u00e9\n".encode("latin-1"), [2]),
}


@pytest.mark.parametrize("name", sorted(BAD_TEXT_FILES))
@pytest.mark.parametrize("option", ["--reference", "--truth"])
@pytest.mark.parametrize("suffix", [".smi", ".jsonl"])
def test_eval_reference_and_truth_of_bad_bytes(tmp_path, capsys, name, option, suffix):
    content, bad_lines = BAD_TEXT_FILES[name]
    side = tmp_path / f"side{suffix}"
    side.write_bytes(content)
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps(EVAL_GOOD_ROW) + "\n")
    argv = ["eval", "--task", "free", results, option, side]
    summary, err = eval_summary(tmp_path, capsys, argv, results, side)
    assert summary["samples"] == 1
    for line in bad_lines:
        assert f"{side}:{line}: skipped: not UTF-8 text" in err, err
    if name == "binary":
        assert f"{side}:1: skipped: not UTF-8 text" in err, err


def test_eval_reference_lines_rejected_one_by_one(tmp_path, capsys):
    pytest.importorskip("rdkit")
    prompt = "<ProteinS>MKT<ProteinE><MoleculeS>"
    results = tmp_path / "r.jsonl"
    rows = [
        {"id": "x", "sample": i, "prompt": prompt, "completion": c}
        for i, c in enumerate(["OCC<MoleculeE>", "CCN<MoleculeE>"])
    ]
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    smi = tmp_path / "train.smi"
    smi.write_bytes(b"\xff\xfe\n\xc3\x28\nCCO\n\x00\x00\n")
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_bytes(
        b'\xff\xfe\x00\n{"smiles": "CCO"}\n{bad json\n[1]\n{"smiles": 5}\n{"text": null}\n'
        b'{"text": "<MoleculeS>c1ccccc1<MoleculeE>"}\n{"smiles": ["CCN"]}\n'
    )
    for reference, bad_lines in ((smi, [1, 2, 4]), (jsonl, [1, 3, 4, 5, 6, 8])):
        argv = ["eval", "--task", "ligand", results, "--reference", reference]
        summary, err = eval_summary(tmp_path, capsys, argv, results, reference)
        # CCO is in the training set (its good line), CCN is not (its only line is rejected)
        assert (summary["valid_count"], summary["novel_count"]) == (2, 1), err
        skipped = [x.split(": skipped")[0] for x in err.splitlines() if ": skipped: " in x]
        assert skipped == [f"{reference}:{n}" for n in bad_lines], err
    # material rows of the wrong shape are skipped too
    mof = tmp_path / "mof.jsonl"
    mof.write_text('{"nodes": "Cu", "linkers": ["c1ccncc1"]}\n{"nodes": ["Cu"], "linkers": [3]}\n')
    argv = ["eval", "--task", "material", results, "--reference", mof]
    summary, err = eval_summary(tmp_path, capsys, argv, results, mof)
    assert f"{mof}:1: skipped: field 'nodes' must be a list" in err, err
    assert f"{mof}:2: skipped: " in err, err


def test_eval_truth_lines_rejected_one_by_one(tmp_path, capsys):
    pytest.importorskip("rdkit")
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps(EVAL_GOOD_ROW) + "\n")
    truth = tmp_path / "truth.jsonl"
    truth.write_bytes(
        b'\xff\xfe\x00garbage\nnot json\n[1]\n{"groundtruth": "CCO"}\n{"id": null}\n'
        b'{"id": "b", "groundtruth": 5}\n{"id": "c", "pocket": ["x"]}\n'
        b'{"id": "a", "groundtruth": "CCO.CC(=O)O"}\n'
    )
    argv = ["eval", "--task", "retro", results, "--truth", truth]
    summary, err = eval_summary(tmp_path, capsys, argv, results, truth)
    assert (summary["scored_inputs"], summary["top_1"]) == (1, 1.0), err
    skipped = [x.split(": skipped")[0] for x in err.splitlines() if ": skipped: " in x]
    assert skipped == [f"{truth}:{n}" for n in range(1, 8)], err
    # every line bad: nothing to score against, still a result
    truth.write_bytes(b"\x00\xff" * 50)
    summary, err = eval_summary(tmp_path, capsys, argv, results, truth)
    assert summary["scored_inputs"] == 0 and f"{truth}:1: skipped: not UTF-8" in err


def test_tokenizer_commands_refuse_a_model_folder(tmp_path, capsys, residue_tok):
    vocab = LogosTokenizer.load(residue_tok).vocab_size
    model = fake_model_folder(tmp_path / "model", residue_tok, vocab)
    before = snapshot(model / "tokenizer.json", model / "model_config.yaml")
    text = tmp_path / "t.txt"
    text.write_text("<ProteinS>MKTAYIAKQR<ProteinE>\n" * 20)
    rc, err = cli(
        ["tokenizer", "train", "--input", text, "--out", model, "--vocab-size", "60"], capsys
    )
    one_line_error(rc, err, "model folder", "--force")
    rc, err = cli(["tokenizer", "add-tags", residue_tok, model], capsys)
    one_line_error(rc, err, "model folder")
    rc, err = cli(["tokenizer", "add-tags", residue_tok, residue_tok], capsys)
    one_line_error(rc, err, "input")
    rc, err = cli(
        ["tokenizer", "train", "--input", text, "--out", text, "--vocab-size", "60"], capsys
    )
    one_line_error(rc, err, "is a file")
    rc, err = cli(
        ["tokenizer", "train", "--input", text, "--out", model, "--vocab-size", "0"], capsys
    )
    one_line_error(rc, err, "--vocab-size")
    assert snapshot(model / "tokenizer.json", model / "model_config.yaml") == before


# ------------------------------------------------------------------------------ files and modes


def test_outputs_get_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        assert umask() == 0o022
        atomic_write_text(tmp_path / "a.json", "{}\n")
        assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
        with atomic_folder(tmp_path / "model") as tmp:
            (tmp / "x").write_text("x")
        assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755
        os.umask(0o027)
        d = tmp_path / "d"
        d.mkdir()
        public_mode(d, directory=True)
        assert stat.S_IMODE(d.stat().st_mode) == 0o750
    finally:
        os.umask(old)


def test_killed_conversion_temp_folders_are_removed(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".model.tmp-{dead_pid}-abc"
    (stale / "params").mkdir(parents=True)
    live = tmp_path / f".model.tmp-{os.getpid()}-xyz"
    live.mkdir()
    other = tmp_path / f".other.tmp-{dead_pid}-abc"
    other.mkdir()
    with atomic_folder(tmp_path / "model") as tmp:
        (tmp / "x").write_text("x")
    assert not stale.exists() and live.exists() and other.exists()
    assert remove_stale_temps(tmp_path / "model") == []


def test_killed_writers_temp_files_are_removed_by_the_next_write(tmp_path):
    """A process killed inside ``atomic_path`` leaves ``.<name>.tmp-<pid>-<random>``; the next
    atomic write of that target deletes it, but not a live writer's nor another target's."""
    dead_pid = 4194305  # above the largest pid Linux can assign (2**22)
    stale = tmp_path / f".out.jsonl.tmp-{dead_pid}-abc"
    stale.write_text("half a file")
    live = tmp_path / f".out.jsonl.tmp-{os.getpid()}-xyz"
    live.write_text("being written")
    other = tmp_path / f".other.jsonl.tmp-{dead_pid}-abc"
    other.write_text("another target's")
    atomic_write_text(tmp_path / "out.jsonl", "{}\n")
    assert (tmp_path / "out.jsonl").read_text() == "{}\n"
    assert not stale.exists() and live.exists() and other.exists()
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == sorted(["out.jsonl", live.name, other.name])


# ------------------------------------------------------------------------------ sampling JSONL


def test_resume_tolerates_a_tail_torn_inside_a_character(tmp_path):
    out = tmp_path / "o.jsonl"
    done = json.dumps({"id": "a", "sample": 0, "group_size": 1, "text": "é"}, ensure_ascii=False)
    torn = json.dumps({"id": "b", "sample": 0, "group_size": 1, "text": "ééé"}, ensure_ascii=False)
    data = (done + "\n").encode() + torn.encode()[:-3]
    assert data[-1] == 0xC3  # cut inside the two bytes of an é
    out.write_bytes(data)
    os.chmod(out, 0o644)
    assert jsonl_io.resume(out) == {"a"}
    assert out.read_bytes() == (done + "\n").encode()
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert jsonl_io.resume(out) == {"a"}


@FUZZ
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.dictionaries(
                st.sampled_from(["id", "sample", "group_size", "text"]),
                st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=5)),
            ).map(lambda r: json.dumps(r).encode()),
        ),
        max_size=8,
    )
)
def test_resume_never_crashes_on_garbage(tmp_path, lines):
    """Garbage is refused untouched, or (only rows and a torn tail) resumed to complete inputs."""
    out = tmp_path / "garbage.jsonl"
    out.write_bytes(b"\n".join(lines))
    try:
        finished = jsonl_io.resume(out)
    except LogosError as err:
        assert "not a row of a `logos sample` output" in str(err)
        assert out.read_bytes() == b"\n".join(lines)
        return
    for _, row, _ in jsonl_io.read_rows(out):
        assert isinstance(row, dict) and str(row["id"]) in finished


def test_sample_out_naming_another_file_is_refused_untouched(tmp_path, capsys):
    other = tmp_path / "inputs.jsonl"
    content = '{"id": "p1", "text": "<ProteinS>MKT<ProteinE><Search>"}\nnotes\n'
    other.write_text(content)
    with pytest.raises(LogosError, match="inputs.jsonl:1: not a row"):
        jsonl_io.resume(other)
    assert other.read_text() == content


def test_eval_summary_replaces_its_own_summary(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps({"id": "1", "sample": 0, "completion": "x"}) + "\n")
    summary = tmp_path / "s.json"
    assert cli(["eval", "--task", "free", results, "--summary", summary], capsys)[0] == 0
    first = json.loads(summary.read_text())
    assert cli(["eval", "--task", "free", results, "--summary", summary], capsys)[0] == 0
    assert json.loads(summary.read_text()) == first
    other = tmp_path / "other.jsonl"
    other.write_text(results.read_text())
    assert cli(["eval", "--task", "free", results, "--summary", other, "--force"], capsys)[0] == 0
    assert json.loads(other.read_text()) == first


# ------------------------------------------------------------------------------ config values

BAD_TRAIN_OVERRIDES = [
    ("steps=2.5", "steps=2.5"),
    ("steps=abc", "steps='abc'"),
    ("steps=0", "steps"),
    ("mesh.fsdp=abc", "mesh.fsdp='abc'"),
    ("mesh.fsdp=0", "mesh.fsdp=0"),
    ("optimizer.lr=abc", "optimizer.lr='abc'"),
    ("optimizer.lr=-1", "optimizer.lr=-1.0"),
    ("optimizer.lr=.nan", "optimizer.lr=nan"),
    ("optimizer.b2=1.5", "optimizer.b2"),
    ("optimizer.state_dtype=int8", "optimizer.state_dtype"),
    ("scan_layers=maybe", "scan_layers='maybe'"),
    ("scan_layers=1", "scan_layers=1"),
    ("tensorboard='false'", "tensorboard='false'"),
    ("keep_checkpoints=0", "keep_checkpoints=0"),
    ("eval_batches=0", "eval_batches"),
    ("data_weights=5", "data_weights=5"),
    ("data_weights={protein: -1}", "data_weights"),
    ("model.num_layers=abc", "model.num_layers='abc'"),
    ("model.num_layers=2.5", "model.num_layers=2.5"),
    ("model.tie_embeddings=maybe", "model.tie_embeddings"),
    ("model.bogus=1", "model.bogus"),
    ("distributed.timeout_s=0", "distributed.timeout_s"),
    ("steps", "key=value"),
]


@pytest.mark.parametrize("override,named", BAD_TRAIN_OVERRIDES)
def test_train_rejects_bad_values_naming_the_key(tmp_path, capsys, override, named):
    argv = ["train", "--config", "tiny", f"run_dir={tmp_path / 'run'}", override, "--print-config"]
    rc, err = cli(argv, capsys)
    one_line_error(rc, err, named)
    assert not (tmp_path / "run").exists()


def test_train_accepts_integral_and_null_values(tmp_path):
    from logos_jax.train.config import load_train_config

    config = load_train_config(
        "tiny", [f"run_dir={tmp_path}", "steps=1e3", "peak_flops=null", "model.num_layers=2"]
    )
    assert config.steps == 1000 and isinstance(config.steps, int) and config.peak_flops is None
    assert config.model_overrides == {"num_layers": 2}


@FUZZ
@given(
    key=st.sampled_from(
        ["steps", "seed", "batch_size", "scan_layers", "optimizer.lr", "mesh.data", "z_loss"]
    ),
    value=st.one_of(
        st.text(max_size=8), st.floats(allow_nan=True), st.integers(-5, 5), st.booleans()
    ),
)
def test_train_config_fuzz(tmp_path, key, value):
    """Any value either builds a config holding a value of the field's type, or a one-line error."""
    from logos_jax.train.config import load_train_config

    text = json.dumps(value) if not isinstance(value, str) else value
    if "\n" in text or "=" in text:
        return
    try:
        config = load_train_config("tiny", [f"run_dir={tmp_path}", f"{key}={text}"])
    except LogosError as err:
        assert "\n" not in str(err) and key in str(err)
        return
    section, _, name = key.rpartition(".")
    got = getattr(getattr(config, section) if section else config, name)
    expected = {"scan_layers": bool, "optimizer.lr": float, "z_loss": float}.get(key, int)
    assert type(got) is expected


def test_model_config_fields_are_typed(tmp_path):
    import yaml

    base = yaml.safe_load(Path("configs/model/tiny.yaml").read_text())
    for bad, named in (
        ({"num_layers": "abc"}, "num_layers"),
        ({"tie_embeddings": "false"}, "tie_embeddings"),
        ({"num_kv_heads": 0}, "num_kv_heads"),
        ({"rope_theta": None}, "rope_theta"),
    ):
        with pytest.raises(LogosError, match=named):
            ModelConfig.from_dict({**base, **bad})
    with pytest.raises(LogosError, match="missing key"):
        ModelConfig.from_hf({"architectures": ["LlamaForCausalLM"]})
    hf = ModelConfig.from_dict(base).to_hf()
    for bad, named in (
        ({"num_attention_heads": 0}, "num_heads must be positive"),
        ({"num_attention_heads": 0, "head_dim": None}, "num_attention_heads must be positive"),
        ({"architectures": 5}, "wrong type"),
        ({"hidden_size": "32"}, "hidden_size='32'"),
        ({"vocab_size": 2.5}, "vocab_size=2.5"),
        ({"rope_parameters": {"rope_type": "llama3"}}, "wrong type"),
    ):
        with pytest.raises(LogosError, match=named):
            ModelConfig.from_hf({**hf, **bad})


# ------------------------------------------------------------------------------ crashes in RDKit


HUGE_SMILES = "C" * 20000  # RDKit's SMILES writer segfaults on this (stack overflow)


def test_huge_smiles_never_reaches_rdkit(tmp_path):
    """In a child process: without the guard, the process dies with SIGSEGV."""
    seqs = tmp_path / "seqs.txt"
    seqs.write_text(f"<MoleculeS>{HUGE_SMILES}<MoleculeE>\n<MoleculeS>CCO<MoleculeE>\n")
    smiles = tmp_path / "smiles.txt"
    smiles.write_text(f"{HUGE_SMILES}\nCCO\n")
    code = f"""
import random, sys
from logos_jax.grammar import chem
assert chem.canonical_smiles({HUGE_SMILES!r}) is None
assert not chem.is_valid_smiles({HUGE_SMILES!r})
assert "over the limit" in chem.smiles_checker("sanitize")("<MoleculeS>{HUGE_SMILES}<MoleculeE>")
for f in (lambda: chem.randomized_smiles({HUGE_SMILES!r}, random.Random(0)),
          lambda: chem.strip_atom_maps({HUGE_SMILES!r} + ">>CC")):
    try:
        f()
        raise SystemExit("accepted")
    except ValueError:
        pass
from logos_jax.cli import main
assert main(["grammar", "parse", "--input", {str(seqs)!r}]) == 0
assert main(["grammar", "encode", "--layout", "molecule", "--input", {str(smiles)!r}]) == 0
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert "invalid_smiles" in lines[0] and lines[-1] == "<MoleculeS>CCO<MoleculeE>"
    assert "over the limit" in done.stderr and "Traceback" not in done.stderr


# ------------------------------------------------------------------------------ safetensors headers


def _safetensors(path: Path, header: dict, data: bytes) -> Path:
    import struct

    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


BAD_OFFSETS = [
    ({"a": [0, 16], "b": [8, 24]}, "overlap"),
    ({"a": [-8, 8], "b": [16, 32]}, "data_offsets"),
    ({"a": [16, 0], "b": [16, 32]}, "data_offsets"),
    ({"a": [0, 16], "b": [0, 16]}, "overlap"),
    ({"a": [0, 16], "b": [24, 40]}, "truncated"),
    ({"a": [0.0, 16], "b": [16, 32]}, "data_offsets"),
    ({"a": [0, 16, 3], "b": [16, 32]}, "data_offsets"),
    ({"a": "0-16", "b": [16, 32]}, "data_offsets"),
]


@pytest.mark.parametrize("offsets,named", BAD_OFFSETS)
def test_safetensors_offsets_are_validated(tmp_path, offsets, named):
    from logos_jax.convert.safetensors_io import read_header

    header = {k: {"dtype": "F32", "shape": [4], "data_offsets": v} for k, v in offsets.items()}
    path = _safetensors(tmp_path / "model.safetensors", header, bytes(32))
    with pytest.raises(LogosError, match=named):
        read_header(path)


def test_hf2jax_refuses_overlapping_tensors(tmp_path, capsys):
    config = ModelConfig(
        vocab_size=8,
        hidden_size=4,
        num_layers=1,
        num_heads=1,
        num_kv_heads=1,
        head_dim=4,
        intermediate_size=4,
    )
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps(config.to_hf()))
    names = ["model.embed_tokens.weight", "model.norm.weight"]
    header = {
        names[0]: {"dtype": "F32", "shape": [8, 4], "data_offsets": [0, 128]},
        names[1]: {"dtype": "F32", "shape": [4], "data_offsets": [112, 128]},
    }
    _safetensors(hf / "model.safetensors", header, bytes(128))
    rc, err = cli(["convert", "hf2jax", hf, tmp_path / "out"], capsys)
    one_line_error(rc, err, "overlap")
    assert not (tmp_path / "out").exists()


@FUZZ
@given(
    entries=st.dictionaries(
        st.text(min_size=1, max_size=4),
        st.fixed_dictionaries(
            {
                "dtype": st.sampled_from(["F32", "F16", "BF16", "I8", 3]),
                "shape": st.lists(st.integers(-2, 5), max_size=3),
                "data_offsets": st.lists(st.integers(-10, 80), min_size=0, max_size=3),
            }
        ),
        max_size=4,
    )
)
def test_safetensors_header_fuzz(tmp_path, entries):
    """A parsed header's tensors lie inside the file and never share a byte."""
    from logos_jax.convert.safetensors_io import read_header

    path = _safetensors(tmp_path / "f.safetensors", entries, bytes(64))
    try:
        tensors = read_header(path)
    except LogosError:
        return
    spans = sorted((t.start, t.end) for t in tensors.values())
    size = path.stat().st_size
    assert all(0 <= s <= e <= size for s, e in spans)
    assert all(b[0] >= a[1] for a, b in zip(spans, spans[1:]))


# ------------------------------------------------------------------------------ corpus builds


def data_config(tmp_path: Path, source: Path, **extra) -> Path:
    import yaml

    config = {
        "name": "fuzz",
        "tokenizer": "residue",
        "workers": 0,
        "eval_fraction": 0.0,
        "records_per_shard": 2,
        "sources": [
            {"name": "mols", "path": str(source), "format": "smiles", "layouts": ["molecule"]}
        ],
    }
    for key, value in extra.items():
        if key.startswith("source_"):
            config["sources"][0][key.removeprefix("source_")] = value
        else:
            config[key] = value
    path = tmp_path / f"data-{len(list(tmp_path.glob('data-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_data_build_rejects_bad_lines_and_fails_when_nothing_is_left(tmp_path, capsys):
    source = tmp_path / "mols.smi"
    source.write_bytes(b"CCO\n\xff\xfe bad\nC\x00C\n" + b"C" * 20000 + b"\nc1ccccc1\n")
    before = snapshot(source)
    out = tmp_path / "corpus"
    rc, err = cli(
        ["data", "build", "--config", data_config(tmp_path, source), "--out", out], capsys
    )
    assert rc == 0, err
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    reasons = sorted(r["reason"].split(":")[0] for r in rejects)
    assert reasons == ["invalid SMILES", "unreadable record", "unreadable record"], reasons
    assert (
        json.loads((out / "manifest.json").read_text())["modalities"]["molecule"]["train"][
            "documents"
        ]
        == 2
    )
    bad = tmp_path / "bad.smi"
    bad.write_bytes(b"\xff\n\x00\x01\nnot-a-smiles(\n")
    rc, err = cli(
        ["data", "build", "--config", data_config(tmp_path, bad), "--out", tmp_path / "c2"], capsys
    )
    one_line_error(rc, err, "no documents")
    assert snapshot(source) == before


@pytest.mark.parametrize(
    "extra,named",
    [
        ({"source_randomize_smiles": "false"}, "randomize_smiles='false'"),
        ({"source_limit": "ten"}, "limit='ten'"),
        ({"source_limit": -1}, "limit=-1"),
        ({"records_per_shard": 2.5}, "records_per_shard=2.5"),
        ({"seed": "x"}, "seed='x'"),
        ({"eval_fraction": 1.5}, "eval_fraction"),
        ({"source_layouts": "molecule"}, "layouts"),
        ({"source_name": None}, "name=null"),
        ({"workers": -1}, "workers"),
        ({"sources": ["mols.smi"]}, "sources[0]"),
        ({"sources": {"a": 1}}, "sources"),
    ],
)
def test_data_config_values_are_typed(tmp_path, capsys, extra, named):
    source = tmp_path / "mols.smi"
    source.write_text("CCO\n")
    config = data_config(tmp_path, source, **extra)
    rc, err = cli(["data", "build", "--config", config, "--out", tmp_path / "c"], capsys)
    one_line_error(rc, err, named)


def test_resumed_build_with_changed_sources_starts_over(tmp_path, monkeypatch, capsys):
    from logos_jax.data import builder

    source = tmp_path / "mols.smi"
    source.write_text("CCO\nCCN\nCCC\n")
    config = builder.load_build_config(data_config(tmp_path, source))
    out = tmp_path / "corpus"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(builder, "_finish", killed)
        with pytest.raises(KeyboardInterrupt):
            builder.build_corpus(config, out)
    assert (out / ".work").is_dir() and not (out / "manifest.json").exists()
    source.write_text("c1ccccc1\nCCCl\n")  # edited while the build was interrupted
    manifest = builder.build_corpus(config, out)
    assert "starting over" in capsys.readouterr().err
    docs = manifest["modalities"]["molecule"]["train"]["documents"]
    assert docs == 2 and manifest["sources"]["mols"]["records"] == 2
    source.write_text("CCO\n")
    with pytest.raises(LogosError, match="other contents of the source"):
        builder.build_corpus(config, out)


def test_corrupt_shard_is_named_on_open(tmp_path, capsys):
    from logos_jax.data.pipeline import make_eval_batches, make_train_iterator

    source = tmp_path / "mols.smi"
    source.write_text("CCO\nCCN\nCCC\nc1ccccc1\n")
    out = tmp_path / "corpus"
    config = data_config(tmp_path, source, eval_fraction=0.5)
    assert cli(["data", "build", "--config", config, "--out", out], capsys)[0] == 0
    assert cli(["data", "info", out], capsys)[0] == 0
    shard = sorted(out.glob("train/molecule/*.array_record"))[0]
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    rc, err = cli(["data", "info", out], capsys)
    one_line_error(rc, err, shard.name, "corrupt")
    with pytest.raises(LogosError, match=shard.name):
        make_train_iterator(out, seq_len=16, global_batch_size=2, process_index=0, process_count=1)
    (out / "manifest.json").write_text("{not json")
    rc, err = cli(["data", "info", out], capsys)
    one_line_error(rc, err, "corrupt corpus manifest")
    with pytest.raises(LogosError, match="corrupt corpus manifest"):
        next(make_eval_batches(out, seq_len=16, batch_size=2))


def _state(pid: int) -> str | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    return next(x.split()[1] for x in text.splitlines() if x.startswith("State:"))


def _start_with_workers(argv: list[str], count: int = 2) -> tuple[subprocess.Popen, list[int]]:
    """``logos argv`` in a child process, once it has spawned ``count`` workers: (process, worker
    pids, the multiprocessing resource tracker's included when it runs)."""
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "logos_jax.cli", *map(str, argv)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    workers: list[int] = []
    deadline = time.time() + 120
    while time.time() < deadline and len(workers) < count and proc.poll() is None:
        time.sleep(0.2)
        # Any of the process's threads may have started them (Grain starts workers from its own).
        found = [
            int(p)
            for children in Path(f"/proc/{proc.pid}/task").glob("*/children")
            for p in _read(children).split()
        ]
        # spawned workers run spawn_main
        workers = [p for p in found if "spawn_main" in _cmdline(p)]
    trackers = [p for p in found if "resource_tracker" in _cmdline(p)]
    return proc, workers + trackers


def _start_build_with_workers(tmp_path: Path) -> tuple[subprocess.Popen, list[int]]:
    """A ``data build`` in a child process with 2 spawned workers: (process, worker pids)."""
    source = tmp_path / "mols.smi"
    source.write_text("CC(C)Cc1ccc(cc1)C(C)C(=O)O\n" * 4000)
    config = data_config(tmp_path, source, workers=2, records_per_shard=20)
    return _start_with_workers(["data", "build", "--config", config, "--out", tmp_path / "corpus"])


def _assert_all_exit(pids: list[int]) -> None:
    import time

    deadline = time.time() + 10
    while time.time() < deadline and any(_state(p) not in (None, "Z") for p in pids):
        time.sleep(0.2)
    assert all(_state(p) in (None, "Z") for p in pids), [_cmdline(p) for p in pids]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_a_dead_build_worker_is_one_error(tmp_path):
    import signal

    build, workers = _start_build_with_workers(tmp_path)
    try:
        assert len(workers) >= 2, "the build never started its workers"
        os.kill(workers[0], signal.SIGKILL)
        _, err = build.communicate(timeout=120)
    finally:
        if build.poll() is None:
            build.kill()
    assert build.returncode == 2, err[-2000:]
    assert "a worker process of the fuzz build died" in err and "Traceback" not in err


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_build_workers_exit_when_the_build_is_killed(tmp_path):
    import signal

    build, workers = _start_build_with_workers(tmp_path)
    try:
        assert len(workers) >= 2, "the build never started its workers"
    finally:
        build.send_signal(signal.SIGKILL)
        build.wait()
    _assert_all_exit(workers)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_training_data_workers_exit_when_training_is_killed(tmp_path, capsys):
    import signal

    source = tmp_path / "mols.smi"
    source.write_text("".join(f"{'C' * (i % 9 + 1)}O\n" for i in range(40)))
    corpus = tmp_path / "corpus"
    rc, err = cli(
        ["data", "build", "--config", data_config(tmp_path, source), "--out", corpus], capsys
    )
    assert rc == 0, err
    run = ["train", "--config", "tiny", f"run_dir={tmp_path / 'run'}", *TINY_RUN]
    run += [f"data={corpus}", "model.vocab_size=128", "steps=100000", "data_workers=2"]
    train, workers = _start_with_workers(run)
    try:
        assert len(workers) >= 2, train.stderr.read() if train.poll() is not None else workers
    finally:
        train.send_signal(signal.SIGKILL)
        train.wait()
    _assert_all_exit(workers)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:  # the process or thread has ended
        return ""


def _cmdline(pid: int) -> str:
    return _read(Path(f"/proc/{pid}/cmdline")).replace("\0", " ")


# ------------------------------------------------------------------------------ grammar commands

GRAMMAR_INPUTS = [
    b"",
    b"\xff\xfe\xfd\n",
    b"\x00\x01\x02\x03binary\x00\n",
    b"CCO\n\xc3\n",
    b">h\nMKT\xffAY\n>g\nMKTAYIAKQR\n",
    "é\u2028x\n".encode(),
    b"[" * 5000 + b"\n",
    b"\r\n\r\n",
]


@pytest.mark.parametrize("content", GRAMMAR_INPUTS)
@pytest.mark.parametrize(
    "argv",
    [
        ["grammar", "parse"],
        ["grammar", "encode", "--layout", "molecule"],
        ["grammar", "encode", "--layout", "protein", "--fasta"],
        ["grammar", "encode", "--layout", "retro", "--csv-column", "rxn"],
        ["grammar", "encode", "--layout", "pocket"],
    ],
)
def test_grammar_commands_on_hostile_files(tmp_path, capsys, content, argv):
    source = tmp_path / "in.txt"
    source.write_bytes(content)
    out = tmp_path / "out.txt"
    out.write_text("previous output\n")
    extra = ["--output", out] if argv[1] == "encode" else []
    rc, err = cli([*argv, "--input", source, *extra], capsys)
    assert source.read_bytes() == content
    if rc != 0:
        one_line_error(rc, err)
        assert out.read_text() == "previous output\n"  # a failed run leaves the old output


def test_grammar_encode_refuses_output_equal_to_input(tmp_path, capsys):
    source = tmp_path / "in.smi"
    source.write_text("CCO\n")
    rc, err = cli(
        ["grammar", "encode", "--layout", "molecule", "--input", source, "--output", source], capsys
    )
    one_line_error(rc, err, "destroy the input")
    assert source.read_text() == "CCO\n"
    rc, err = cli(
        ["grammar", "encode", "--layout", "molecule", "--input", source, "--output", tmp_path],
        capsys,
    )
    one_line_error(rc, err, "folder")


@pytest.mark.parametrize("cutoff", ["inf", "nan", "0", "-1", "abc"])
def test_grammar_cutoff_must_be_finite_and_positive(tmp_path, capsys, cutoff):
    source = tmp_path / "in.jsonl"
    source.write_text("{}\n")
    argv = ["grammar", "encode", "--layout", "pocket", "--input", source, "--cutoff", cutoff]
    rc, err = cli(argv, capsys)
    assert rc == 2
    one_line_error(rc, err, "--cutoff")


@FUZZ
@given(st.binary(max_size=300))
def test_grammar_parse_fuzz(tmp_path, data):
    source = tmp_path / "fuzz.txt"
    source.write_bytes(data)
    from contextlib import redirect_stdout
    from io import StringIO

    out = StringIO()
    with redirect_stdout(out):
        assert main(["grammar", "parse", "--raw-smiles", "--input", str(source)]) == 0
    for line in out.getvalue().splitlines():
        json.loads(line)


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 30), st.floats(), st.text(max_size=6)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
RECORD_KEYS = ["sequence", "pocket", "ligand", "smiles", "nodes", "linkers", "chains", "contacts"]


@FUZZ
@example(layout="pocket", rows=[{"chains": [1]}])
@given(
    layout=st.sampled_from(["pocket", "complex2", "material", "search", "transformation", "retro"]),
    rows=st.lists(
        st.dictionaries(st.sampled_from(RECORD_KEYS), JSON_VALUES, max_size=4), max_size=4
    ),
)
def test_grammar_encode_json_records_fuzz(tmp_path, layout, rows):
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from contextlib import redirect_stderr, redirect_stdout
    from io import StringIO

    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(
            [
                "grammar",
                "encode",
                "--layout",
                layout,
                "--input",
                str(source),
                "--check-smiles",
                "off",
            ]
        )
    assert rc in (0, 2) and "Traceback" not in err.getvalue()


@FUZZ
@given(
    task=st.sampled_from(["free", "pocket-search"]),
    rows=st.lists(
        st.one_of(
            JSON_VALUES,
            st.dictionaries(
                st.sampled_from(
                    [
                        "id",
                        "sample",
                        "prompt",
                        "completion",
                        "text",
                        "objects",
                        "groundtruth",
                        "pocket",
                        "perplexity",
                        "sum_logprob",
                        "line",
                        "ligand",
                    ]
                ),
                JSON_VALUES,
                max_size=5,
            ),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_eval_result_rows_fuzz(task, rows):
    from logos_jax.eval import evaluate

    try:
        summary = evaluate(task, rows)
    except LogosError:
        return
    assert summary["samples"] == len(rows)


# ------------------------------------------------------------------------------ SFT rows


@pytest.mark.parametrize(
    "line,named",
    [
        (b'{"prompt": null, "completion": "x"}', "must be a string, got null"),
        (b'{"prompt": "MKT", "completion": 5}', "'completion' must be a string, got 5"),
        (b'{"test_input": ["a"], "groundtruth": "x"}', "'test_input' must be a string"),
        (b'{"prompt": "", "completion": "x"}', "must not be empty"),
        (b'["prompt", "completion"]', "expected a JSON object"),
        (b'{"prompt": "a"}', "none of the SFT field pairs"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[" * 3000, "not valid JSON"),
    ],
)
def test_sft_rows_are_typed(tmp_path, line, named):
    from logos_jax.train.data import read_sft_pairs

    data = tmp_path / "sft.jsonl"
    data.write_bytes(b'{"prompt": "MKT", "completion": "AY"}\n' + line + b"\n")
    with pytest.raises(LogosError, match=f"sft.jsonl:2: .*{named}"):
        read_sft_pairs(data)


def test_sft_example_truncated_to_nothing_is_refused(tmp_path, residue_tok):
    from logos_jax.train.data import make_sft_source

    tok = LogosTokenizer.load(residue_tok)
    data = tmp_path / "sft.jsonl"
    rows = [{"prompt": "MKT", "completion": "AY"}, {"prompt": "M" * 40, "completion": "AY"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(LogosError, match="sft.jsonl:2: the prompt fills all 16 positions"):
        make_sft_source(data, tok, batch_size=2, seq_len=16, seed=0, sharding=None)
    source = make_sft_source(data, tok, batch_size=2, seq_len=64, seed=0, sharding=None)
    assert len(source.rows) == 2


# ------------------------------------------------------------------------------ training runs

TINY_RUN = [
    "model.num_layers=2",
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_heads=2",
    "model.num_kv_heads=1",
    "model.head_dim=16",
    "model.vocab_size=64",
    "batch_size=8",
    "seq_len=16",
    "data=synthetic",
    "tensorboard=false",
    "checkpoint_every=1",
    "log_every=1",
]


def test_closed_loop_reports_of_failed_orbax_reads_are_dropped(monkeypatch):
    """Reads still in flight when Orbax closes a failed restore's event loop report "Event loop is
    closed" from their threads; those reports are dropped, any other still reaches the hook."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: seen.append(unraisable.exc_value))
    quiet_closed_loop_reports()
    quiet_closed_loop_reports()  # idempotent: one filter

    class Reports:
        def __init__(self, error):
            self.error = error

        def __del__(self):
            raise self.error

    Reports(RuntimeError("Event loop is closed"))
    Reports(ValueError("something else"))
    assert [type(e) for e in seen] == [ValueError]


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_latest_checkpoint_falls_back_and_shapes_are_checked(tmp_path, capsys, monkeypatch):
    import shutil

    from logos_jax.train.checkpointing import TrainCheckpointer, _unreadable

    run = tmp_path / "run"
    base = ["train", "--config", "tiny", f"run_dir={run}", *TINY_RUN, "keep_checkpoints=3"]
    rc, err = cli([*base, "steps=2"], capsys)
    assert rc == 0, err[-2000:]
    # A garbled metadata file marks a step unreadable.
    copy = tmp_path / "copy"
    shutil.copytree(run / "checkpoints" / "1", copy)
    assert _unreadable(copy) is None
    (copy / "meta" / "metadata").write_text("{garbled")
    assert "meta/metadata" in _unreadable(copy)
    # Damage the newest checkpoint's array files: it is set aside for the previous one.
    for blob in (run / "checkpoints" / "2" / "params").rglob("d/*"):
        if blob.is_file():
            blob.write_bytes(b"\0" * 7)
    rc, err = cli([*base, "steps=3"], capsys)
    assert rc == 0, err[-2000:]
    assert "checkpoints/2 is corrupt" in err and "steps 1 -> 3" in err
    assert (run / "checkpoints" / "2.corrupt").is_dir()
    # Another model shape on the same run_dir is refused, not ignored.
    rc, err = cli([*base, "steps=4", "model.num_layers=3"], capsys)
    one_line_error(rc, err, "num_layers=2 -> 3")
    # So is data whose tokenizer has more ids than the run's embedding rows.
    source = tmp_path / "mols.smi"
    source.write_text("CCO\n")
    corpus = tmp_path / "corpus"
    rc, err = cli(
        ["data", "build", "--config", data_config(tmp_path, source), "--out", corpus], capsys
    )
    assert rc == 0, err
    rc, err = cli([*base, "steps=4", f"data={corpus}"], capsys)
    one_line_error(rc, err, "vocab_size=64 -> the data's tokenizer has")
    # A step whose arrays fail while restoring falls back to the previous committed step.
    restore = TrainCheckpointer._restore

    def failing(self, step, placement, source):
        if step == 3:
            raise ValueError("OUT_OF_RANGE: byte range not valid")
        return restore(self, step, placement, source)

    monkeypatch.setattr(TrainCheckpointer, "_restore", failing)
    rc, err = cli([*base, "steps=4"], capsys)
    assert rc == 0 and "checkpoints/3 cannot be restored" in err, err[-2000:]
    assert "steps 2 -> 4" in err, err[-2000:]


def test_init_from_with_a_corpus_of_another_tokenizer_is_refused(tmp_path, capsys, residue_tok):
    from logos_jax.tokenizer import bundled_tokenizer_path

    source = tmp_path / "mols.smi"
    source.write_text("CCO\nCCN\n")
    corpus = tmp_path / "corpus"
    assert (
        cli(["data", "build", "--config", data_config(tmp_path, source), "--out", corpus], capsys)[
            0
        ]
        == 0
    )
    qwen = bundled_tokenizer_path("qwen3")
    model = fake_model_folder(tmp_path / "qwen", qwen if qwen.is_dir() else qwen.parent, 200000)
    argv = ["train", "--config", "tiny", f"run_dir={tmp_path / 'run'}", f"init_from={model}"]
    rc, err = cli([*argv, f"data={corpus}", "steps=1"], capsys)
    one_line_error(rc, err, "another tokenizer", "shared tokens have other ids")
    # The corpus's own tokenizer (as hf2jax --add-tags / tokenizer: <model> would give) passes.
    from logos_jax.train.commands import check_init_from_tokenizer
    from logos_jax.train.config import load_train_config

    same = fake_model_folder(tmp_path / "same", corpus / "tokenizer", 119)
    ok = load_train_config("tiny", [f"run_dir={tmp_path / 'r2'}", f"init_from={same}"])
    check_init_from_tokenizer(dataclasses.replace(ok, data=str(corpus)))
    # A data config is not trained on: training reads built corpora only.
    rc, err = cli([*argv, f"data={data_config(tmp_path, source)}", "steps=1"], capsys)
    one_line_error(rc, err, "not a built corpus folder", "logos data build --config")
    assert not (tmp_path / "run" / "corpus").exists()


def test_clean_train_error_prints_no_background_traceback(tmp_path):
    argv = ["train", "--config", "tiny", f"run_dir={tmp_path / 'run'}", "init_from=/nope"]
    done = subprocess.run(
        [sys.executable, "-m", "logos_jax.cli", *argv, "data=synthetic", "steps=1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert "error: /nope: no such checkpoint folder" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


# ------------------------------------------------------------------------------ hostile files, every command

HOSTILE = {
    "empty": b"",
    "binary": bytes(range(256)) * 4,
    "bad-utf8": b"\xff\xfe\xfa not text \xc3\n",
    "json-list": b"[1, 2, 3]\n",
    "json-null": b"null\n",
    "json-types": b'{"architectures": 5, "vocab_size": "x", "hidden_size": null, "sources": 3}\n',
    "deep": b"[" * 10000,
    "yaml-tab": b"a:\n\t- b: [\n",
}


def _hostile_argv(kind: str, path: Path, tmp_path: Path) -> list:
    folder = tmp_path / "folder"
    folder.mkdir(exist_ok=True)
    for name in ("config.json", "model.safetensors", "model_config.yaml", "tokenizer.json"):
        (folder / name).write_bytes(path.read_bytes())
    (folder / "params").mkdir(exist_ok=True)
    (folder / "manifest.json").write_bytes(path.read_bytes())
    out = tmp_path / "out"
    return {
        "tokenizer-train": [
            "tokenizer",
            "train",
            "--input",
            path,
            "--out",
            out,
            "--vocab-size",
            "40",
        ],
        "tokenizer-check": ["tokenizer", "check", path],
        "tokenizer-add-tags": ["tokenizer", "add-tags", folder, out],
        "data-build": ["data", "build", "--config", path.with_suffix(".yaml"), "--out", out],
        "data-info": ["data", "info", folder],
        "train-config": ["train", "--config", path.with_suffix(".yaml"), "--print-config"],
        "hf2jax": ["convert", "hf2jax", folder, out],
        "jax2hf": ["convert", "jax2hf", folder, out],
        "contacts": ["grammar", "contacts", path, "--ligand", "XK2"],
        "eval": ["eval", "--task", "retro", path],
    }[kind]


@pytest.mark.parametrize("content", sorted(HOSTILE))
@pytest.mark.parametrize(
    "kind",
    [
        "tokenizer-train",
        "tokenizer-check",
        "tokenizer-add-tags",
        "data-build",
        "data-info",
        "train-config",
        "hf2jax",
        "jax2hf",
        "contacts",
        "eval",
    ],
)
def test_every_command_on_hostile_files(tmp_path, capsys, kind, content):
    path = tmp_path / "input.txt"
    path.write_bytes(HOSTILE[content])
    path.with_suffix(".yaml").write_bytes(HOSTILE[content])
    rc, err = cli(_hostile_argv(kind, path, tmp_path), capsys)
    assert path.read_bytes() == HOSTILE[content]
    if rc != 0:
        one_line_error(rc, err)
    assert not list(tmp_path.glob(".out.tmp-*"))  # no stray temporary folder


# ------------------------------------------------------------------------------ hostile output paths


@pytest.mark.parametrize("where", ["under-a-file", "a-folder"])
@pytest.mark.parametrize(
    "kind", ["tokenizer-train", "eval", "encode", "data-build", "hf2jax", "train"]
)
def test_outputs_that_cannot_be_written_are_one_error(tmp_path, capsys, residue_tok, kind, where):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me\n")
    folder = tmp_path / "a_folder"
    folder.mkdir()
    out = blocker / "sub" if where == "under-a-file" else folder
    text = tmp_path / "t.txt"
    text.write_text("CCO\n<ProteinS>MKT<ProteinE>\n")
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps({"id": "1", "sample": 0, "completion": "x"}) + "\n")
    source = tmp_path / "m.smi"
    source.write_text("CCO\n")
    argv = {
        "tokenizer-train": [
            "tokenizer",
            "train",
            "--input",
            text,
            "--out",
            out,
            "--vocab-size",
            "40",
        ],
        "eval": ["eval", "--task", "free", results, "--summary", out],
        "encode": ["grammar", "encode", "--layout", "molecule", "--input", source, "--output", out],
        "data-build": [
            "data",
            "build",
            "--config",
            data_config(tmp_path, source),
            "--out",
            out / "c",
        ],
        "hf2jax": ["convert", "hf2jax", tmp_path, out / "m" if where == "under-a-file" else out],
        "train": ["train", "--config", "tiny", f"run_dir={out / 'run'}", "--print-config"],
    }[kind]
    if kind == "train" and where == "a-folder":
        return  # a run_dir that exists is a resume
    if kind in ("tokenizer-train", "data-build") and where == "a-folder":
        return  # writing into an existing empty folder is allowed
    rc, err = cli(argv, capsys)
    if kind == "train":
        rc, err = cli([*argv[:-1], "steps=1", "data=synthetic"], capsys)
    one_line_error(rc, err)
    assert blocker.read_text() == "keep me\n" and list(folder.iterdir()) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------------------ sampling jobs


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, residue_tok):
    root = tmp_path_factory.mktemp("tiny_model")
    return residue_model_folder(root, tokenizer_dir=residue_tok)[0]


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\xff\xfe\x00\x01binary\n\x00\x00\n",
        b'{"test_input": null}\n{"test_input": 5}\n[1]\nnot json\n',
        b'{"test_input": "<MoleculeS>CCO<Bogus><ReverseReact>"}\n',
    ],
)
def test_sample_with_no_usable_row_fails_and_writes_nothing(tmp_path, capsys, tiny_model, content):
    rows = tmp_path / "in.jsonl"
    rows.write_bytes(content)
    out = tmp_path / "out.jsonl"
    argv = ["sample", "--task", "retro", "--ckpt", tiny_model, "--input", rows, "--out", out]
    rc, err = cli([*argv, "--no-progress", "--max-new-tokens", "4"], capsys)
    one_line_error(rc, err)
    assert rows.read_bytes() == content
    assert not out.exists() or out.read_bytes() == b""


def test_contacts_on_a_structure_without_protein(tmp_path, capsys):
    pytest.importorskip("biotite")
    pdb = tmp_path / "ligand_only.pdb"
    pdb.write_text(
        "HETATM    1  C1  XK2 A   1      10.000  10.000  10.000  1.00  0.00           C\n"
        "HETATM    2  O1  XK2 A   1      11.200  10.000  10.000  1.00  0.00           O\n"
        "END\n"
    )
    for layout in ("complex2", "pocket"):
        rc, err = cli(["grammar", "contacts", pdb, "--ligand", "XK2", "--layout", layout], capsys)
        one_line_error(rc, err, "no protein chain")
    rc, err = cli(["grammar", "contacts", pdb, "--ligand", "ABC"], capsys)
    one_line_error(rc, err, "no residue named 'ABC'")


def test_sample_rerun_after_an_output_torn_inside_a_character(tmp_path, capsys, tiny_model):
    rows = tmp_path / "in.jsonl"
    first = {"id": "a", "test_input": "<MoleculeS>CCO<MoleculeE><ReverseReact>"}
    rows.write_text(json.dumps(first) + "\n")
    out = tmp_path / "out.jsonl"
    argv = ["sample", "--task", "retro", "--ckpt", tiny_model, "--input", rows, "--out", out]
    argv += ["--no-progress", "--max-new-tokens", "4", "--num-samples", "2", "--batch-size", "4"]
    rc, err = cli(argv, capsys)
    assert rc == 0, err[-2000:]
    done = out.read_bytes()
    out.write_bytes(done + '{"id": "b", "text": "é'.encode()[:-1])  # a full disk mid-character
    second = {"id": "b", "test_input": "<MoleculeS>CCN<MoleculeE><ReverseReact>"}
    rows.write_text(json.dumps(first) + "\n" + json.dumps(second) + "\n")
    rc, err = cli(argv, capsys)
    assert rc == 0, err[-2000:]
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert out.read_bytes().startswith(done)
    assert sorted((r["id"], r["sample"]) for r in lines) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]


@FUZZ
@given(
    flag=st.sampled_from(
        ["--num-samples", "--temperature", "--top-p", "--top-k", "--min-p", "--repetition-penalty"]
        + ["--max-new-tokens", "--batch-size", "--num-beams", "--seed", "--mesh"]
    ),
    value=st.one_of(
        st.text(alphabet="0123456789.-+eEinfatxyz,", max_size=8),
        st.sampled_from(["nan", "inf", "-inf", "1e309", "0", "-0", "1", "2.5", "1,-1,1"]),
    ),
)
def test_sample_cli_numbers_fuzz(tmp_path, flag, value):
    """Any value: argparse's usage error, or (when in range) the missing checkpoint's error."""
    from contextlib import redirect_stderr
    from io import StringIO

    err = StringIO()
    argv = ["sample", "--task", "free", "--ckpt", str(tmp_path / "none"), "--out", "o.jsonl"]
    with redirect_stderr(err):
        try:
            rc = main([*argv, f"{flag}={value}"])
        except SystemExit as exit_:
            rc = exit_.code
    assert rc == 2 and "Traceback" not in err.getvalue()
    lines = [x for x in err.getvalue().splitlines() if "error:" in x]
    assert len(lines) == 1 and (flag in lines[0] or "none" in lines[0]), err.getvalue()


@FUZZ
@given(
    fmt=st.sampled_from(["smiles", "fasta", "csv", "jsonl", "chains", "pockets", "structures"]),
    data=st.one_of(
        st.binary(max_size=200),
        st.lists(JSON_VALUES, max_size=4).map(
            lambda rows: "".join(json.dumps(r) + "\n" for r in rows).encode()
        ),
    ),
)
def test_source_readers_fuzz(tmp_path, fmt, data):
    """Every reader turns any bytes into records or per-line rejects, never an exception."""
    from logos_jax.data.sources import read_source

    path = tmp_path / "source"
    path.write_bytes(data)
    options = {"template": "{a}>>{b}"} if fmt == "csv" else {}
    for record in read_source(path, fmt, options):
        assert record.error is not None or record.raw is not None


def test_train_refuses_a_model_folder_or_corpus_as_run_dir(tmp_path, capsys, residue_tok):
    model = fake_model_folder(tmp_path / "model", residue_tok, 119)
    before = snapshot(model / "model_config.yaml", model / "tokenizer.json")
    rc, err = cli(["train", "--config", "tiny", f"run_dir={model}", "data=synthetic"], capsys)
    one_line_error(rc, err, "is a model folder", f"init_from={model}")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "manifest.json").write_text("{}")
    rc, err = cli(["train", "--config", "tiny", f"run_dir={corpus}", "data=synthetic"], capsys)
    one_line_error(rc, err, "is a built corpus")
    assert snapshot(model / "model_config.yaml", model / "tokenizer.json") == before


def test_data_build_rejects_json_records_of_the_wrong_shape(tmp_path, capsys):
    source = tmp_path / "pockets.jsonl"
    rows = [
        {"sequence": "MKTAYIAKQR", "pocket": [1, 2]},
        {"sequence": ["M"], "pocket": [1]},
        {"sequence": "MKT", "pocket": "12"},
        {"sequence": "MKT", "pocket": [99]},
        {"sequence": None, "pocket": None},
        {"sequence": "MKT", "pocket": [{"a": 1}]},
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = data_config(
        tmp_path,
        source,
        source_format="jsonl",
        source_fields=["sequence", "pocket"],
        source_layouts=["pocket"],
    )
    out = tmp_path / "corpus"
    rc, err = cli(["data", "build", "--config", config, "--out", out], capsys)
    assert rc == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["modalities"]["protein_pocket"]["train"]["documents"] == 1
    assert manifest["modalities"]["protein_pocket"]["rejects"] == 5

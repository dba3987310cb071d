"""The corpus builder: real build of mini-corpus slices with bad records, kill-and-resume, the format."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from array_record.python.array_record_data_source import ArrayRecordDataSource

from logos_jax.data.builder import build_corpus, load_build_config
from logos_jax.data.corpus import decode_document, lengths_path, read_manifest, sha256_file
from logos_jax.errors import LogosError
from logos_jax.tokenizer import LogosTokenizer

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small_config(fixtures):
    return fixtures / "data" / "small.yaml"


@pytest.fixture(scope="module")
def built(small_config, tmp_path_factory):
    """An uninterrupted build with two worker processes."""
    out = tmp_path_factory.mktemp("corpus") / "small"
    manifest = build_corpus(load_build_config(small_config), out, workers=2)
    return out, manifest


def _rejects(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]


def test_bad_records_are_counted_and_written_with_reasons(built):
    out, manifest = built
    rejects = _rejects(out)
    by_source = Counter(r["source"] for r in rejects)
    assert by_source["bad_molecules"] == 2
    assert by_source["bad_proteins"] == 3
    assert by_source["bad_pockets"] == 5  # broken JSON x2 layouts, index outside x2, no ligand x1
    assert by_source["bad_reactions"] == 2
    reasons = {(r["source"], r["key"].split(":")[-1]): r["reason"] for r in rejects}
    assert "invalid SMILES" in reasons[("bad_molecules", "2")]
    assert "invalid SMILES" in reasons[("bad_molecules", "4")]
    assert "non-standard residue 'B'" in reasons[("bad_proteins", "3")]
    assert re.fullmatch(
        r"over-long: 12\d\d tokens > max_tokens 1024", reasons[("bad_proteins", "7")]
    )
    assert any(r["reason"].startswith("unreadable record: not valid JSON") for r in rejects)
    assert "2 products" in reasons[("bad_reactions", "3")]
    # Per-modality counts in the manifest match the rejects file; the good records were kept.
    per_modality = Counter(r["modality"] for r in rejects)
    assert {
        m: s["rejects"] for m, s in manifest["modalities"].items() if s["rejects"]
    } == per_modality
    assert manifest["sources"]["bad_molecules"]["records"] == 4
    docs = manifest["modalities"]["molecule"]
    assert docs["train"]["documents"] + docs["eval"]["documents"] == 160 + 2


def test_shards_manifest_and_documents(built):
    out, manifest = built
    tokenizer = LogosTokenizer.load(out / "tokenizer")
    assert manifest["tokenizer"]["hash"] == tokenizer.hash()
    assert read_manifest(out)["fingerprint"] == manifest["fingerprint"]
    assert not (out / ".work").exists()
    for shard in manifest["shards"]:
        path = out / shard["path"]
        assert sha256_file(path) == shard["sha256"]
        lengths = np.load(lengths_path(path))
        assert len(lengths) == shard["documents"] and lengths.sum() == shard["tokens"]
    shard = next(
        s for s in manifest["shards"] if s["modality"] == "reaction" and s["split"] == "train"
    )
    ids = decode_document(ArrayRecordDataSource([str(out / shard["path"])])[0])
    assert ids[0] == tokenizer.bos_id and ids[-1] == tokenizer.eos_ids[0]
    text = tokenizer.decode(ids[1:-1])
    assert text.startswith("<MoleculeS>") and ("<React>" in text or "<ReverseReact>" in text)
    totals = {
        s: sum(m[s]["tokens"] for m in manifest["modalities"].values()) for s in ("train", "eval")
    }
    assert totals["eval"] > 0 and totals["train"] > 10 * totals["eval"]


def test_heldout_rows_in_the_official_formats(built):
    out, manifest = built
    retro = [json.loads(x) for x in (out / "heldout/retro.jsonl").read_text().splitlines()]
    assert retro and manifest["heldout"]["retro"]["rows"] == len(retro)
    for row in retro:
        assert row["test_input"].startswith("<MoleculeS>")
        assert row["test_input"].endswith("<MoleculeE><ReverseReact>")
        assert row["groundtruth"].startswith("<MoleculeS>") and row["groundtruth"].endswith(
            "<MoleculeE>"
        )
    search = [json.loads(x) for x in (out / "heldout/search.jsonl").read_text().splitlines()]
    assert [r["id"] for r in search] == ["1hpv.pdb:A", "1hpv.pdb:B"]  # the held-out structure
    assert all(
        r["text"].endswith("<ProteinE><Search>") and "<PocketS>" in r["groundtruth"] for r in search
    )
    ligand = [json.loads(x) for x in (out / "heldout/complex2.jsonl").read_text().splitlines()]
    assert all(r["protein_pocket_ligand"].endswith("<MoleculeS>") for r in ligand)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_resume_deletes_a_killed_runs_half_written_shard(built, small_config, tmp_path):
    """A kill during a shard's write leaves its ``atomic_path`` temporary; the resumed build deletes
    it (the chunk has no marker, so it is redone) and ends byte-identical to an uninterrupted one."""
    reference, _ = built
    out = tmp_path / "resumed"
    (out / ".work").mkdir(parents=True)
    stale = out / "train" / "protein" / f".proteome-00003.array_record.tmp-{os.getpid()}-5das994h"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a shard")
    build_corpus(load_build_config(small_config), out, workers=1)
    assert not stale.exists()
    assert _tree(out) == _tree(reference)


def test_kill_and_resume_gives_the_uninterrupted_corpus(built, small_config, tmp_path):
    reference, _ = built
    out = tmp_path / "killed"
    script = (
        "from logos_jax.data.builder import build_corpus, load_build_config; "
        f"build_corpus(load_build_config({str(small_config)!r}, {{'records_per_shard': 10}}), "
        f"{str(out)!r}, workers=1)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    work = out / ".work"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if work.is_dir() and len(list(work.glob("*-*.json"))) >= 3:
            break
        time.sleep(0.001)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists(), "the build finished before it could be killed"
    markers = [json.loads(p.read_text()) for p in sorted(work.glob("*-*.json"))]
    assert markers
    finished = {s["path"]: os.stat(out / s["path"]) for m in markers for s in m["shards"]}

    config = load_build_config(small_config, {"records_per_shard": 10})
    build_corpus(config, out, workers=2)
    for path, before in finished.items():
        after = os.stat(out / path)
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), path

    # Byte-identical to an uninterrupted build of the same config (which used 2 workers).
    uninterrupted = tmp_path / "uninterrupted"
    build_corpus(config, uninterrupted, workers=1)
    assert _tree(out) == _tree(uninterrupted)
    # ...and the same documents as the reference build with other chunking (order aside).
    ref_rejects = sorted(json.dumps(r, sort_keys=True) for r in _rejects(reference))
    assert sorted(json.dumps(r, sort_keys=True) for r in _rejects(out)) == ref_rejects


def test_rebuilding_into_a_corpus_of_another_config_is_refused(built, small_config):
    out, _ = built
    same = build_corpus(load_build_config(small_config), out)
    assert same == read_manifest(out)
    with pytest.raises(LogosError, match="another config"):
        build_corpus(load_build_config(small_config, {"seed": 1}), out)


def test_config_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [{name: a, path: x.smi, format: smiles, layouts: [molecul]}]\n")
    with pytest.raises(LogosError, match="unknown layouts"):
        load_build_config(bad)
    bad.write_text(
        "sources: [{name: a, path: x.smi, format: smiles, layouts: [molecule]}]\nshards: 3\n"
    )
    with pytest.raises(LogosError, match="unknown data config keys"):
        load_build_config(bad)


def test_cli_build_and_info(built, small_config, capsys):
    import argparse

    from logos_jax.data.commands import register

    out, manifest = built
    parser = argparse.ArgumentParser()
    register(parser)
    args = parser.parse_args(["build", "--config", str(small_config), "--out", str(out), "seed=0"])
    assert args.func(args) == 0  # same config: recognised as already built
    args = parser.parse_args(["info", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert f"{manifest['modalities']['molecule']['train']['documents']}" in printed
    assert "over-long" in printed


def test_structures_are_parsed_in_workers_and_broken_ones_rejected(shared_data, tmp_path):
    (tmp_path / "broken.pdb").write_text(
        "ATOM      1  CA  ALA A   1    not a coordinate line\nEND\n"
    )
    (tmp_path / "list.jsonl").write_text(
        json.dumps({"file": str(shared_data / "complexes" / "1hpv.pdb"), "ligand": "478"})
        + "\n"
        + json.dumps({"file": "broken.pdb", "ligand": "LIG"})
        + "\n"
    )
    (tmp_path / "c.yaml").write_text(
        "eval_fraction: 0\nsources:\n"
        "  - {name: pdb, path: list.jsonl, format: structures, cutoff: 4.0, layouts: [search, complex2]}\n"
    )
    out = tmp_path / "out"
    manifest = build_corpus(load_build_config(tmp_path / "c.yaml"), out, workers=2)
    assert manifest["modalities"]["protein_pocket"]["train"]["documents"] == 1
    assert manifest["modalities"]["protein_ligand"]["train"]["documents"] == 1
    rejects = _rejects(out)
    assert [r["key"] for r in rejects] == ["broken.pdb:LIG", "broken.pdb:LIG"]
    assert all(r["reason"].startswith("unparsable structure:") for r in rejects)
    tokenizer = LogosTokenizer.load(out / "tokenizer")
    shard = next(s for s in manifest["shards"] if s["modality"] == "protein_ligand")
    text = tokenizer.decode(decode_document(ArrayRecordDataSource([str(out / shard["path"])])[0]))
    assert "<PocketS>" in text and text.endswith(
        "<MoleculeE>" + tokenizer.decode(tokenizer.eos_ids)
    )
    assert "S(=O)(=O)c1ccc(N)cc1" in text  # amprenavir's sulfonamide, from the CCD

"""End to end on a tiny model: `logos sample --task pocket-search --constrained` on the bundled HIV
protease complexes, then `logos eval --structures`, then the Markdown table beside the published rows.

The model is random: the point is the pipeline (prompt from a structure's chain, constrained answers
that copy the protein, structure-level DCA / DCC scoring, summary JSON and table), not its figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from logos_jax.cli import main
from tests.tiny import residue_model_folder

pytest.importorskip("biotite")

COMPLEXES = Path(__file__).parent / "fixtures" / "complexes"
IDS = ("1hpv", "1hvr")  # HIV-1 protease with amprenavir (478) / XK263 (XK2)
NUM_SAMPLES = 4


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A saved tiny random model folder with the residue tokenizer (room for a 99-residue chain
    in the prompt and again, with pocket tags, in the answer)."""
    return residue_model_folder(tmp_path_factory.mktemp("tiny"), max_position_embeddings=320)[0]


def test_sample_pocket_search_then_eval_structures_then_table(tiny_model, tmp_path, capsys):
    from logos_jax.grammar.structure import chain_sequences

    rows = []
    for pdb_id in IDS:
        chain_a = chain_sequences(COMPLEXES / f"{pdb_id}.pdb")["A"]
        rows.append({"id": pdb_id, "text": f"<ProteinS>{chain_a}<ProteinE><Search>"})
    longest = max(len(r["text"]) for r in rows)
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"

    sample_argv = [
        "sample",
        "--task",
        "pocket-search",
        "--ckpt",
        str(tiny_model),
        "--input",
        str(inp),
        "--out",
        str(out),
        "--num-samples",
        str(NUM_SAMPLES),
        "--constrained",
        # the 99-residue chain, a few pockets (two tags each), <ProteinE> and EOS
        "--max-new-tokens",
        "120",
        "--batch-size",
        "8",
        "--seed",
        "0",
        "--no-progress",
    ]
    assert longest < 320 and main(sample_argv) == 0
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in results) == sorted(IDS * NUM_SAMPLES)
    # constrained decoding: every answer copies the protein, so every sample is scorable
    assert all(r["valid"] for r in results), [r for r in results if not r["valid"]]
    capsys.readouterr()

    summary_path = tmp_path / "summary.json"
    eval_argv = [
        "eval",
        "--task",
        "pocket-search",
        str(out),
        "--structures",
        str(COMPLEXES),
        "--summary",
        str(summary_path),
    ]
    assert main(eval_argv) == 0
    printed = capsys.readouterr().out
    assert "dca_top_n" in printed

    summary = json.loads(summary_path.read_text())
    assert summary["task"] == "pocket-search"
    assert summary["valid_count"] == len(IDS) * NUM_SAMPLES
    assert summary["skipped"] == [] and summary["scored_inputs"] == len(IDS)
    assert summary["ligand_sites"] == len(IDS)  # one inhibitor per complex
    for key in ("dca", "dcc"):
        for suffix in ("top_n", "top_n+2"):
            value = summary[f"{key}_{suffix}"]
            count = summary[f"{key}_{suffix}_count"]
            assert 0.0 <= value <= 1.0 and value == count / len(IDS)
        assert summary[f"{key}_top_n"] <= summary[f"{key}_top_n+2"]
    per_input = {p["id"]: p for p in summary["per_input"]}
    assert set(per_input) == set(IDS)
    assert per_input["1hpv"]["ligands"] == ["478"]
    assert per_input["1hvr"]["ligands"] == ["XK2"]
    for p in per_input.values():
        assert len(p["top_n_dca"]) == len(p["ligands"])  # n = the number of ligand sites
    # the random model marks some residues: pockets are clustered and their centres measured
    assert any(p["pockets"] and p["top_n_dca"][0] is not None for p in per_input.values())

    table = summary_path.with_suffix(".md").read_text()
    assert table.startswith("# `logos eval")
    dca = 100 * summary["dca_top_n"]
    assert f"| binding site, DCA success top-n | {dca:.1f} |" in table
    assert "65.2 (COACH420) / 58.5 (HOLO4K)" in table and "P2Rank 72.0" in table
    assert "| dcc_top_n+2 |" in table

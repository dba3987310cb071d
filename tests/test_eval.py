"""Task metrics on hand-made result files whose answers are worked out by hand."""

import json
import math

import pytest

from logos_jax.cli import main
from logos_jax.eval import evaluate, residue_scores

pytest.importorskip("rdkit")

RETRO_PROMPT = "<MoleculeS>CCCCOC(C)=O<MoleculeE><ReverseReact>"


def mol(*smiles):
    return "".join(f"<MoleculeS>{s}<MoleculeE>" for s in smiles)


def row(row_id, sample, completion, prompt, **extra):
    return {"id": row_id, "sample": sample, "prompt": prompt, "completion": completion, **extra}


RETRO_ROWS = [
    # a: truth {CCO, CC(=O)O}; the best log-prob answer is wrong, the most frequent is right.
    row("a", 0, mol("CCN"), RETRO_PROMPT, sum_logprob=-1.0, groundtruth=mol("OCC", "CC(=O)O")),
    row(
        "a",
        1,
        mol("CC(O)=O", "CCO"),
        RETRO_PROMPT,
        sum_logprob=-2.0,
        groundtruth=mol("OCC", "CC(=O)O"),
    ),
    row(
        "a",
        2,
        mol("CCO", "OC(C)=O"),
        RETRO_PROMPT,
        sum_logprob=-3.0,
        groundtruth=mol("OCC", "CC(=O)O"),
    ),
    row("a", 3, mol("C1CC"), RETRO_PROMPT, sum_logprob=-0.5, groundtruth=mol("OCC", "CC(=O)O")),
    # b: stereo is kept, so neither the enantiomer nor the flat molecule matches.
    row(
        "b",
        0,
        mol("C[C@@H](N)C(=O)O"),
        RETRO_PROMPT,
        sum_logprob=-1.0,
        groundtruth=mol("C[C@H](N)C(=O)O"),
    ),
    row(
        "b",
        1,
        mol("CC(N)C(=O)O"),
        RETRO_PROMPT,
        sum_logprob=-2.0,
        groundtruth=mol("C[C@H](N)C(=O)O"),
    ),
    # c: no ground truth, not scored.
    row("c", 0, mol("CCO"), RETRO_PROMPT, sum_logprob=-1.0),
]


def test_retro_top_k_by_logprob_and_by_frequency():
    by_lp = evaluate("retro", RETRO_ROWS)
    assert by_lp["inputs"] == 3 and by_lp["scored_inputs"] == 2 and by_lp["samples"] == 7
    assert by_lp["valid_count"] == 6 and by_lp["valid"] == pytest.approx(6 / 7)
    assert by_lp["top_1"] == 0.0  # a ranks CCN first
    assert by_lp["top_3"] == by_lp["top_10"] == 0.5  # a's truth is second; b never matches
    by_freq = evaluate("retro", RETRO_ROWS, rank_by="frequency")
    assert by_freq["top_1"] == 0.5 and by_freq["top_1_count"] == 1


def test_retro_truth_from_file_and_official_rows_without_completion(tmp_path):
    truth = tmp_path / "truth.jsonl"
    truth.write_text(json.dumps({"id": "c", "groundtruth": mol("OCC")}) + "\n")
    # Rows as the released scripts write them: the full sequence and a perplexity only.
    rows = [{"id": "c", "text": RETRO_PROMPT + mol("CCO"), "perplexity": 1.3}]
    summary = evaluate("retro", rows, truth=truth)
    assert summary["top_1"] == 1.0 and summary["scored_inputs"] == 1


def test_material_validity_uniqueness_novelty(tmp_path):
    reference = tmp_path / "mofs.jsonl"
    reference.write_text(json.dumps({"nodes": ["[Zn]"], "linkers": ["OC(=O)c1ccccc1"]}) + "\n")
    completions = [
        "<MetalS>[Zn]<MetalE>"
        + mol("O=C(O)c1ccccc1")
        + "<MaterialE>",  # valid, in the training set
        "<MetalS>[Cu]<MetalE>" + mol("c1ccncc1") + "<MaterialE>",  # valid, novel
        "<MetalS>[Cu]<MetalE>" + mol("n1ccccc1") + "<MaterialE>",  # the same material again
        "<MetalS>[Cu]<MetalE><MaterialE>",  # no linker: not grammatical
        "<MetalS>[Cu]<MetalE>" + mol("c1cc") + "<MaterialE>",  # grammatical, RDKit rejects it
    ]
    rows = [row("material-000000", i, c, "<MaterialS>") for i, c in enumerate(completions)]
    s = evaluate("material", rows, reference=reference)
    assert (s["grammatical_count"], s["valid_count"], s["unique_count"], s["novel_count"]) == (
        4,
        3,
        2,
        1,
    )
    assert (
        s["valid"] == 3 / 5 and s["unique"] == 2 / 3 and s["novel"] == 1 / 2 and s["vnu"] == 1 / 5
    )


def test_ligand_metrics_with_smi_reference(tmp_path):
    reference = tmp_path / "train.smi"
    reference.write_text("CCO\nc1ccccc1\n")
    prompt = "<ProteinS>MKT<ProteinE><MoleculeS>"
    completions = ["OCC<MoleculeE>", "CCN<MoleculeE>", "CCN", "C1CC<MoleculeE>"]
    rows = [row("x", i, c, prompt) for i, c in enumerate(completions)]
    s = evaluate("ligand", rows, reference=reference)
    assert s["grammatical"] == 3 / 4 and s["valid"] == 2 / 4
    assert s["unique"] == 1.0 and s["novel"] == 0.5 and s["vnu"] == 1 / 4


def test_residue_scores_by_hand():
    s = residue_scores({1, 7}, {1, 2, 5}, 10)  # tp 1, fp 1, fn 2, tn 6
    assert s["precision"] == 0.5 and s["recall"] == pytest.approx(1 / 3)
    assert s["f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert s["mcc"] == pytest.approx((1 * 6 - 1 * 2) / math.sqrt(2 * 3 * 7 * 8))
    perfect = residue_scores({1, 2}, {1, 2}, 5)
    assert perfect == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "mcc": 1.0}


def test_pocket_cli_with_truth_file_and_summary(tmp_path, capsys):
    prompt = "<ProteinS>MKTAYIAKQR<ProteinE><Search><ProteinS>"
    completions = [
        "M<PocketS>K<PocketE><PocketS>T<PocketE>AY<PocketS>I<PocketE>AKQR<ProteinE>",  # exact
        "M<PocketS>K<PocketE>TAYIA<PocketS>K<PocketE>QR<ProteinE>",  # {1, 7}
        "MKTAYIAKQ<PocketS>W<PocketE><ProteinE>",  # not the input protein: invalid, predicts nothing
    ]
    results = tmp_path / "out.jsonl"
    results.write_text(
        "".join(json.dumps(row("1abc", i, c, prompt)) + "\n" for i, c in enumerate(completions))
    )
    truth = tmp_path / "truth.jsonl"
    truth.write_text(json.dumps({"id": "1abc", "pocket": [1, 2, 5]}) + "\n")
    summary_path = tmp_path / "summary.json"
    argv = [
        "eval",
        "--task",
        "pocket-search",
        str(results),
        "--truth",
        str(truth),
        "--summary",
        str(summary_path),
    ]
    assert main(argv) == 0
    summary = json.loads(summary_path.read_text())
    partial = residue_scores({1, 7}, {1, 2, 5}, 10)
    assert summary["valid"] == pytest.approx(2 / 3)
    for name in ("precision", "recall", "f1", "mcc"):
        assert summary[name] == pytest.approx((1.0 + partial[name] + 0.0) / 3)
        assert 0.0 <= summary[name] <= 1.0
    printed = capsys.readouterr().out
    assert "precision" in printed and "%" in printed


def test_result_rows_of_inputs_without_a_line_are_accepted():
    """Material samples have no input line (``"line": null``, as ``logos sample`` writes them)."""
    from logos_jax.errors import LogosError
    from logos_jax.eval.metrics import check_result_row

    row = {"id": "material-000000", "sample": 0, "line": None, "completion": "<MetalS>"}
    check_result_row(row, "out.jsonl:1")
    with pytest.raises(LogosError, match="'line' must be an integer"):
        check_result_row({**row, "line": "3"}, "out.jsonl:1")

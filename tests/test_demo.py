"""The demo's report pieces: per-modality loss plots and the markdown report (the full run is `make demo`)."""

from __future__ import annotations

import json

import pytest

from logos_jax.cli import main
from logos_jax.demo import _plot_losses, _write_report


def test_loss_plots_per_modality(tmp_path):
    pytest.importorskip("matplotlib")
    records = [
        {"step": s, "loss": 3.0 / s, "loss/molecule": 2.0 / s, "loss/protein": 4.0 / s}
        for s in range(1, 6)
    ] + [{"step": 5, "eval/loss": 1.0, "eval/loss/molecule": 0.5}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    written = _plot_losses(tmp_path, tmp_path)
    assert written == ["loss_molecule.png", "loss_protein.png"]
    assert (tmp_path / "loss_molecule.png").read_bytes()[:4] == b"\x89PNG"


def test_report_states_what_was_learned(tmp_path):
    report = {
        "devices": "8 x cpu",
        "params": 802816,
        "train": {"final_step": 500, "initial_loss": 4.6, "eval_loss": 1.9, "tokens_per_s": 5e3},
        "resume": {"resumed_from": 250, "steps_compared": [255, 260], "bit_identical": True},
        "export": {"reload": "LlamaForCausalLM", "max_abs_logit_diff": 1e-6},
        "valid_smiles": {"trained": 0.4, "untrained": 0.0},
        "tasks": {"retro": {"top_1": 0.1, "valid": 0.5}},
        "timings": {"train": 200.0},
    }
    _write_report(tmp_path, report)
    text = (tmp_path / "report.md").read_text()
    assert "trained **40%** vs untrained **0%**" in text
    assert "bit-identical: True" in text
    assert "| retro | top_1=0.10  valid=0.50 |" in text
    assert json.loads((tmp_path / "report.json").read_text())["params"] == 802816


def test_demo_help(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "--steps" in capsys.readouterr().out

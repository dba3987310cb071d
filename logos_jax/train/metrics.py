"""Training metrics: MFU from a per-device peak FLOP/s table, and the writers (console, JSONL, TensorBoard).

``metrics.jsonl`` gets one JSON object per logged step (``step``, ``loss``, ``tokens_per_s``, ``mfu``,
``grad_norm``, ``lr``, ``loss/<modality>``...) and one per eval (``eval/loss``, ``eval/ppl/<modality>``...).
Only process 0 writes.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

# Dense bf16 peak FLOP/s per jax device, matched on the start of ``device.device_kind`` (lower case).
PEAK_FLOPS: dict[str, float] = {
    "tpu v6 lite": 918e12,  # v6e (Trillium)
    "tpu v5p": 459e12,
    "tpu v5 lite": 197e12,  # v5e
    "tpu v5": 459e12,
    "tpu v4": 275e12,
    "tpu v3": 61.5e12,  # one core
    "nvidia h200": 989e12,
    "nvidia h100": 989e12,
    "nvidia a100": 312e12,
}


def peak_flops_per_device(device_kind: str, override: float | None = None) -> float | None:
    """Peak FLOP/s of one device (``override`` wins); None when the kind is unknown (CPU)."""
    if override:
        return float(override)
    kind = device_kind.lower()
    for prefix, flops in PEAK_FLOPS.items():
        if kind.startswith(prefix):
            return flops
    return None


def mfu(
    flops_per_token: float, tokens_per_s: float, num_devices: int, peak: float | None
) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over the devices' peak."""
    if not peak:
        return None
    return flops_per_token * tokens_per_s / (peak * num_devices)


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))


class MetricsWriter:
    """Append records to ``metrics.jsonl``, print a short line, and mirror scalars to TensorBoard."""

    def __init__(self, run_dir: Path, *, tensorboard: bool, enabled: bool = True):
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        self.file = open(Path(run_dir) / "metrics.jsonl", "a")  # noqa: SIM115 (closed in close())
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                print(
                    "note: tensorboardX is not installed (pip install 'logos_jax[report]'); "
                    "metrics go to metrics.jsonl only",
                    file=sys.stderr,
                )
            else:
                self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        step = record["step"]
        # Console: the headline numbers (per-modality values are in the file).
        depth = {True: 1, False: 0}
        shown = {
            k: v
            for k, v in record.items()
            if k != "step" and v is not None and k.count("/") <= depth[k.startswith("eval/")]
        }
        print(f"step {step}: " + " ".join(f"{k}={_fmt(v)}" for k, v in shown.items()), flush=True)
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    self.tb.add_scalar(key, value, step)

    def close(self) -> None:
        if not self.enabled:
            return
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)

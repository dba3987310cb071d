"""Training configuration: a typed ``TrainConfig`` read from YAML plus ``key=value`` overrides.

Top-level keys are ``TrainConfig`` fields; dotted keys address the nested sections
(``mesh.fsdp=4``, ``optimizer.lr=1e-3``, ``distributed.timeout_s=60``). ``model.<field>=value`` overrides
one field of the model config (e.g. ``model.num_layers=4``) and lands in ``model_overrides`` (the
YAML spelling: a ``model_overrides:`` mapping). ``configs/train/*.yaml`` show every section. Unknown keys raise a ``LogosError`` naming the key and the valid ones.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from logos_jax.config import (
    ModelConfig,
    find_preset,
    load_model_config,
    load_yaml,
    parse_overrides,
)
from logos_jax.distributed import DistributedConfig
from logos_jax.errors import LogosError
from logos_jax.files import atomic_write_text
from logos_jax.model import REMAT_POLICIES
from logos_jax.model.attention import IMPLEMENTATIONS as ATTENTION_IMPLEMENTATIONS
from logos_jax.sharding import MeshConfig
from logos_jax.train.optim import SCHEDULES, OptimizerConfig
from logos_jax.validate import check_fields, check_ranges, check_value

NAN_POLICIES = ("stop", "skip")
MODES = ("pretrain", "sft")
WHERE = "invalid train config"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; saved as ``<run_dir>/train_config.yaml``."""

    run_dir: str
    model: str = "tiny"  # preset name, model YAML, or a model folder
    model_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    # converted checkpoint / run dir to start from (weights only; dtypes from ``model``)
    init_from: str | None = None
    mode: str = "pretrain"  # pretrain | sft
    data: str = (
        "synthetic"  # synthetic | built corpus dir (``logos data build``) | SFT JSONL (mode=sft)
    )
    data_weights: dict[str, float] | None = None  # modality -> mixture weight (corpus only)
    data_workers: int = 0
    tokenizer: str | None = None  # SFT: tokenizer dir (default: init_from's folder)
    steps: int = 100
    seed: int = 0
    batch_size: int = 8  # global, in sequences
    seq_len: int = 256
    grad_accum: int = 1  # micro-batches per step (batch_size must divide evenly)
    remat: str = "none"  # none | full | dots | dots_no_batch
    # xla | flash | auto: flash = the Pallas splash kernel on TPU, cuDNN on GPU (no [seq, seq]
    # scores in memory); auto = flash where it applies, else xla (CPU)
    attention: str = "auto"
    # true: layers run as one scanned block (stacked params; fast compile, the TPU default).
    # false: one block per layer (per-layer params; no stacking copies: faster steps on CPU/GPU
    # at small scale, compile time grows with depth). A run keeps the stacking it started with.
    scan_layers: bool = True
    loss_chunk: int = 0  # cross-entropy over chunks of this many positions (0: whole sequence)
    z_loss: float = 0.0
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)  # ``sharding.MeshConfig``
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    async_checkpoint: bool = True
    eval_every: int = 0  # 0: no periodic eval
    eval_batches: int = 4
    log_every: int = 10
    nan_policy: str = "stop"  # stop | skip (a non-finite step leaves params untouched either way)
    peak_flops: float | None = None  # per device, FLOP/s; default from the device-kind table
    tensorboard: bool = True

    def __post_init__(self) -> None:
        # The sections live with their modules and check themselves only when asked.
        self.optimizer.check(WHERE)
        self.distributed.check(WHERE)
        check_fields(self, WHERE)
        self.mesh.check(WHERE)
        nonnegative = {
            "seed": self.seed,
            "data_workers": self.data_workers,
            "eval_every": self.eval_every,
            "loss_chunk": self.loss_chunk,
            "z_loss": self.z_loss,
        }
        weights = self.data_weights or {}
        checks = [
            *[(v >= 0, f"{k}={v} must be >= 0") for k, v in nonnegative.items()],
            (
                self.keep_checkpoints >= 1,
                f"keep_checkpoints={self.keep_checkpoints} must be >= 1 (0 would keep no checkpoint)",
            ),
            (self.eval_batches >= 1, f"eval_batches={self.eval_batches} must be >= 1"),
            (
                self.peak_flops is None or self.peak_flops > 0,
                f"peak_flops={self.peak_flops} must be > 0",
            ),
            (
                all(w >= 0 for w in weights.values())
                and (not weights or sum(weights.values()) > 0),
                f"data_weights={weights} must be >= 0 with a positive sum",
            ),
            (self.mode in MODES, f"mode={self.mode!r} is not one of {MODES}"),
            (
                self.remat in REMAT_POLICIES,
                f"remat={self.remat!r} is not one of {tuple(REMAT_POLICIES)}",
            ),
            (
                self.attention in ATTENTION_IMPLEMENTATIONS,
                f"attention={self.attention!r} is not one of {ATTENTION_IMPLEMENTATIONS}",
            ),
            (
                self.nan_policy in NAN_POLICIES,
                f"nan_policy={self.nan_policy!r} is not one of {NAN_POLICIES}",
            ),
            (
                self.optimizer.schedule in SCHEDULES,
                f"optimizer.schedule={self.optimizer.schedule!r} is not one of {SCHEDULES}",
            ),
            (
                self.steps > 0 and self.batch_size > 0 and self.seq_len > 1,
                "steps, batch_size and seq_len must be positive (seq_len > 1)",
            ),
            (
                self.grad_accum > 0 and self.batch_size % self.grad_accum == 0,
                f"batch_size={self.batch_size} must be a multiple of grad_accum={self.grad_accum}",
            ),
            (
                self.log_every > 0 and self.checkpoint_every > 0,
                "log_every and checkpoint_every must be positive",
            ),
            (
                self.loss_chunk == 0 or self.seq_len % self.loss_chunk == 0,
                f"seq_len={self.seq_len} must be a multiple of loss_chunk={self.loss_chunk}",
            ),
        ]
        check_ranges(WHERE, checks)

    def model_config(self) -> ModelConfig:
        """The model preset/file with ``model_overrides`` applied (vocab resize happens later)."""
        base = load_model_config(self.model)
        return base.replace(**self.model_overrides) if self.model_overrides else base

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = {
    "optimizer": OptimizerConfig,
    "mesh": MeshConfig,
    "distributed": DistributedConfig,
}


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def valid_keys() -> list[str]:
    """Every key accepted in a train YAML or as ``key=value`` (``model.<field>`` for model fields)."""
    keys = [k for k in _field_names(TrainConfig) if k not in SECTIONS and k != "model_overrides"]
    for section, cls in SECTIONS.items():
        keys += [f"{section}.{name}" for name in _field_names(cls)]
    return [*keys, "model.<field>"]


def _unknown(key: str) -> LogosError:
    return LogosError(f"unknown train config key {key!r}; valid keys: {', '.join(valid_keys())}")


def from_dict(raw: dict[str, Any]) -> TrainConfig:
    """Build a ``TrainConfig`` from a nested dict (the YAML's nesting); unknown keys are errors."""
    values = dict(raw)
    for section, cls in SECTIONS.items():
        sub = values.get(section) or {}
        if isinstance(sub, cls):
            continue
        if not isinstance(sub, dict):
            raise LogosError(f"train config: {section} must be a mapping, got {sub!r}")
        for key in sub:
            if key not in _field_names(cls):
                raise _unknown(f"{section}.{key}")
        values[section] = cls(**sub)
    for key in values:
        if key not in _field_names(TrainConfig):
            raise _unknown(key)
    if "run_dir" not in values or not values["run_dir"]:
        raise LogosError(
            "train config: run_dir is required (set it in the YAML or as run_dir=PATH)"
        )
    overrides = values.get("model_overrides") or {}
    if not isinstance(overrides, dict):
        raise LogosError(f"train config: model_overrides must be a mapping, got {overrides!r}")
    model_fields = _field_names(ModelConfig)
    unknown = sorted(set(overrides) - set(model_fields))
    if unknown:
        raise LogosError(
            f"unknown model field(s) {['model.' + k for k in unknown]}; valid: "
            f"{', '.join('model.' + f for f in model_fields)}"
        )
    hints = typing.get_type_hints(ModelConfig)
    values["model_overrides"] = {
        k: check_value(f"model.{k}", v, hints[k], WHERE) for k, v in overrides.items()
    }
    try:
        return TrainConfig(**values)
    except TypeError as err:
        raise LogosError(f"train config: {err}") from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings to a nested config dict (values parsed as YAML scalars)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    model_fields = _field_names(ModelConfig)
    for key, value in parse_overrides(overrides, f"; valid keys: {', '.join(valid_keys())}"):
        head, dot, tail = key.partition(".")
        if not dot:
            if key in SECTIONS or key == "model_overrides" or key not in _field_names(TrainConfig):
                raise _unknown(key)
            out[key] = value
        elif head == "model":
            if tail not in model_fields:
                raise LogosError(
                    f"unknown model field {key!r}; valid: {', '.join('model.' + f for f in model_fields)}"
                )
            out.setdefault("model_overrides", {})[tail] = value
        elif head in SECTIONS:
            if tail not in _field_names(SECTIONS[head]):
                raise _unknown(key)
            out.setdefault(head, {})[tail] = value
        else:
            raise _unknown(key)
    return out


def load_train_config(name_or_path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """A preset name under ``configs/train/`` or a YAML path (or None: defaults), plus overrides."""
    raw = load_yaml(find_preset("train", str(name_or_path))) if name_or_path else {}
    return from_dict(apply_overrides(raw, list(overrides)))


def save_train_config(config: TrainConfig, path: Path) -> None:
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))

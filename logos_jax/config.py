"""Typed model configuration: one dataclass for Llama-3 and Qwen3, built from HF ``config.json`` or YAML.

``ModelConfig.from_hf`` reads both the transformers-4 keys (top-level ``rope_theta``, ``rope_scaling``,
``torch_dtype``) and the transformers-5 keys (``rope_parameters``, ``dtype``); ``to_hf`` writes the
transformers-5 keys. YAML presets live in ``configs/model/`` (package data ``logos_jax/configs/`` once
installed); ``parse_overrides`` reads the ``key=value`` overrides of every command.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from logos_jax.errors import LogosError
from logos_jax.files import atomic_write_text

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen3ForCausalLM")
DTYPES = ("float32", "bfloat16", "float16")
# Presets: package data in an installed wheel (setup.py maps configs/ there), else the checkout's configs/
# (an editable install, or the source tree on sys.path).
PRESET_DIRS = (
    Path(__file__).resolve().parent / "configs",
    Path(__file__).resolve().parent.parent / "configs",
)


def presets_dir() -> Path:
    """The folder holding ``model/``, ``data/`` and ``train/`` presets (installed or checkout)."""
    for folder in PRESET_DIRS:
        if folder.is_dir():
            return folder
    raise LogosError(f"no presets folder: looked in {', '.join(map(str, PRESET_DIRS))}")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Llama-3 ("llama3") frequency scaling; read from config, never hard-coded."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Decoder hyper-parameters. Llama-3 and Qwen3 differ only in flags (``qk_norm``, tying, RoPE)."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rope_theta: float = 500000.0
    rope_scaling: RopeScaling | None = None
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    qk_norm: bool = False
    max_position_embeddings: int = 131072
    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    # Token ids carried to HF config.json (generation needs them); not used by the forward pass.
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        from logos_jax.validate import check_fields

        check_fields(self, "invalid model config")
        problems = []
        if self.num_kv_heads <= 0 or self.num_heads % self.num_kv_heads:
            problems.append(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        for name in ("param_dtype", "compute_dtype"):
            if getattr(self, name) not in DTYPES:
                problems.append(f"{name}={getattr(self, name)!r} is not one of {DTYPES}")
        for name in (
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "intermediate_size",
        ):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if problems:
            raise LogosError("invalid model config: " + "; ".join(problems))

    @property
    def architecture(self) -> str:
        return "Qwen3ForCausalLM" if self.qk_norm else "LlamaForCausalLM"

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        if self.eos_token_id is None:
            return ()
        if isinstance(self.eos_token_id, int):
            return (self.eos_token_id,)
        return tuple(self.eos_token_id)

    def num_params(self) -> int:
        """Parameter count (embedding counted once when tied)."""
        d, L = self.hidden_size, self.num_layers
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        attn = d * q + 2 * d * kv + q * d + (2 * self.head_dim if self.qk_norm else 0)
        mlp = 3 * d * self.intermediate_size
        head = 0 if self.tie_embeddings else self.vocab_size * d
        return self.vocab_size * d + L * (attn + mlp + 2 * d) + d + head

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward = 3x forward): 6 per matmul weight (every
        layer's q/k/v/o and MLP kernels, and the LM head; the embedding lookup is a gather and norm
        scales multiply element-wise, so neither counts), plus causal attention's QK^T and PV
        (2 x 2 x heads x head_dim x seq per layer and token, halved by the mask, times 3)."""
        d, q = self.hidden_size, self.num_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        per_layer = 2 * d * q + 2 * d * kv + 3 * d * self.intermediate_size
        matmul = self.num_layers * per_layer + self.vocab_size * d
        attention = 6 * self.num_layers * q * seq_len
        return float(6 * matmul + attention)

    # ----- YAML / dict -----
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if isinstance(out["eos_token_id"], tuple):
            out["eos_token_id"] = list(out["eos_token_id"])
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "config") -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise LogosError(
                f"{source}: unknown model config key(s) {unknown}; valid keys: {sorted(known)}"
            )
        values = dict(raw)
        if isinstance(values.get("rope_scaling"), dict):
            values["rope_scaling"] = RopeScaling(**values["rope_scaling"])
        if isinstance(values.get("eos_token_id"), list):
            values["eos_token_id"] = tuple(values["eos_token_id"])
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.name not in values
        ]
        if missing:
            raise LogosError(f"{source}: missing model config key(s) {missing}")
        try:
            return cls(**values)
        except TypeError as err:
            raise LogosError(f"{source}: {err}") from None

    def replace(self, **changes: Any) -> ModelConfig:
        return ModelConfig.from_dict({**self.to_dict(), **changes})

    # ----- Hugging Face config.json -----
    @classmethod
    def from_hf(cls, hf: dict[str, Any], *, source: str = "config.json") -> ModelConfig:
        """Build from an HF ``config.json`` dict (transformers 4 or 5 keys)."""
        try:
            return cls._from_hf(hf, source=source)
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as err:
            raise LogosError(f"{source}: a value has the wrong type or shape ({err})") from None
        except ZeroDivisionError:
            raise LogosError(f"{source}: num_attention_heads must be positive") from None

    @classmethod
    def _from_hf(cls, hf: dict[str, Any], *, source: str) -> ModelConfig:
        if not isinstance(hf, dict):
            raise LogosError(f"{source}: expected a JSON object")
        archs = hf.get("architectures") or [hf.get("model_type", "?")]
        arch = archs[0]
        if arch not in SUPPORTED_ARCHITECTURES:
            raise LogosError(
                f"{source}: architecture {arch!r} is not supported; supported: "
                f"{', '.join(SUPPORTED_ARCHITECTURES)} (dense decoders with full attention)"
            )
        unsupported = []
        if hf.get("sliding_window") and hf.get("use_sliding_window", True):
            unsupported.append(f"sliding_window={hf['sliding_window']}")
        if hf.get("num_experts") or hf.get("num_local_experts"):
            unsupported.append("mixture of experts")
        if hf.get("attention_bias") or hf.get("mlp_bias"):
            unsupported.append("attention/MLP biases")
        if hf.get("hidden_act", "silu") != "silu":
            unsupported.append(f"hidden_act={hf['hidden_act']}")
        if unsupported:
            raise LogosError(f"{source}: {arch} with {', '.join(unsupported)} is not supported")
        rope = dict(hf.get("rope_parameters") or {})
        legacy = hf.get("rope_scaling") or {}
        rope_theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
        rope_type = rope.get("rope_type") or legacy.get("rope_type") or legacy.get("type")
        scaling_src = rope if rope.get("rope_type") == "llama3" else legacy
        if rope_type in (None, "default"):
            scaling = None
        elif rope_type == "llama3":
            scaling = RopeScaling(
                factor=float(scaling_src["factor"]),
                low_freq_factor=float(scaling_src["low_freq_factor"]),
                high_freq_factor=float(scaling_src["high_freq_factor"]),
                original_max_position_embeddings=int(
                    scaling_src["original_max_position_embeddings"]
                ),
            )
        else:
            raise LogosError(
                f"{source}: RoPE type {rope_type!r} is not supported; supported: default, llama3"
            )
        dtype = hf.get("dtype") or hf.get("torch_dtype") or "float32"
        if dtype not in DTYPES:
            raise LogosError(f"{source}: dtype {dtype!r} is not supported; supported: {DTYPES}")
        required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
        missing = [k for k in (*required, "intermediate_size") if k not in hf]
        if missing:
            raise LogosError(f"{source}: missing key(s) {missing}")
        heads = hf["num_attention_heads"]
        # transformers' LlamaConfig and Qwen3Config both default to untied.
        tie = hf.get("tie_word_embeddings", False)
        if not isinstance(tie, bool):
            raise LogosError(
                f"{source}: tie_word_embeddings must be a JSON boolean (true or false), got {tie!r}"
            )
        return cls(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
            intermediate_size=hf["intermediate_size"],
            rope_theta=float(rope_theta),
            rope_scaling=scaling,
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            tie_embeddings=tie,
            qk_norm=arch == "Qwen3ForCausalLM",
            max_position_embeddings=int(hf.get("max_position_embeddings", 131072)),
            param_dtype=dtype,
            compute_dtype=dtype,
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=tuple(hf["eos_token_id"])
            if isinstance(hf.get("eos_token_id"), list)
            else hf.get("eos_token_id"),
            pad_token_id=hf.get("pad_token_id"),
        )

    def to_hf(self) -> dict[str, Any]:
        """The transformers-5 ``config.json`` dict for this model."""
        rope: dict[str, Any] = {"rope_theta": self.rope_theta, "rope_type": "default"}
        if self.rope_scaling is not None:
            rope.update(rope_type="llama3", **dataclasses.asdict(self.rope_scaling))
        eos = self.eos_token_id
        hf: dict[str, Any] = {
            "architectures": [self.architecture],
            "model_type": "qwen3" if self.qk_norm else "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size,
            "hidden_act": "silu",
            "rms_norm_eps": self.norm_eps,
            "rope_parameters": rope,
            "tie_word_embeddings": self.tie_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
            "use_cache": True,
            "dtype": self.param_dtype,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": list(eos) if isinstance(eos, tuple) else eos,
            "pad_token_id": self.pad_token_id,
        }
        if self.qk_norm:
            hf.update(
                use_sliding_window=False, sliding_window=None, max_window_layers=self.num_layers
            )
        else:
            hf["mlp_bias"] = False
        return hf


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON file; a LogosError naming the file if it is missing or malformed."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LogosError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise LogosError(f"{path}: is a folder, expected a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise LogosError(f"{path}: not valid JSON ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise LogosError(f"{path}: expected a JSON object at the top level")
    return data


def find_preset(kind: str, name: str) -> Path:
    """Resolve a preset name (``tiny``) or a YAML path to a file under ``configs/<kind>/``.

    Presets are the package data ``logos_jax/configs/`` of an installed wheel, or the checkout's
    ``configs/`` (``presets_dir``).
    """
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise LogosError(f"{kind} config {name!r}: file not found")
        return candidate
    folder = presets_dir() / kind
    path = folder / f"{name}.yaml"
    if path.is_file():
        return path
    available = sorted(p.stem for p in folder.glob("*.yaml"))
    raise LogosError(f"unknown {kind} preset {name!r}; available: {', '.join(available)}")


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LogosError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise LogosError(f"{path}: is a folder, expected a YAML file") from None
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as err:
        reason = " ".join(str(err).split())[:300]
        raise LogosError(f"{path}: not valid YAML ({type(err).__name__}: {reason})") from None
    if not isinstance(data, dict):
        raise LogosError(f"{path}: expected a mapping at the top level")
    return data


def load_model_config(name_or_path: str | Path) -> ModelConfig:
    """A model preset name (``tiny``, ``logos-1b``...), a YAML file, or an HF ``config.json``/folder."""
    path = Path(name_or_path)
    if path.is_dir():
        for candidate in ("model_config.yaml", "config.json"):
            if (path / candidate).is_file():
                return load_model_config(path / candidate)
        raise LogosError(f"{path}: no model_config.yaml or config.json in this folder")
    if path.suffix == ".json":
        return ModelConfig.from_hf(read_json(path), source=str(path))
    preset = find_preset("model", str(name_or_path))
    return ModelConfig.from_dict(load_yaml(preset), source=str(preset))


def parse_overrides(pairs: Iterable[str], hint: str = "") -> Iterator[tuple[str, Any]]:
    """``(key, value)`` for each ``key=value`` string, in order: the one override parser of every
    command (``logos train``, ``logos data build``). Values are YAML scalars (``parse_override_value``);
    which keys exist is the caller's check. A string without ``=`` or without a key is a LogosError
    ``override 'x' is not key=value<hint>``."""
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise LogosError(f"override {pair!r} is not key=value{hint}")
        yield key, parse_override_value(text)


def parse_override_value(text: str) -> Any:
    """``key=value`` values are YAML scalars: ``4`` -> int, ``true`` -> bool, ``1e-4`` -> float.

    Text that is not YAML (``[``, control characters) stays a string; the typed config check then
    names the key it does not fit."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else value
        except ValueError:
            return value
    return value


def save_model_config(config: ModelConfig, path: Path) -> None:
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))

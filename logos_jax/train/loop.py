"""The training run: set up mesh, model, optimizer, data and checkpoints, then step, log, eval, save.

``run_training(config)`` is the programmatic entry point (the CLI and the demo call it). Re-running it
on a ``run_dir`` that holds a committed checkpoint resumes from the latest one, exactly: params,
optimizer state, step, RNG and the data stream position all come back.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from logos_jax import distributed
from logos_jax.checkpoint import FORMAT_VERSION, format_version, stores_scanned_layers
from logos_jax.checkpoint_steps import uncommitted_step_dirs
from logos_jax.config import ModelConfig, find_preset, load_model_config, save_model_config
from logos_jax.data.corpus import MODALITIES
from logos_jax.errors import LogosError
from logos_jax.model import Decoder
from logos_jax.model_folder import MODEL_CONFIG, PARAMS, copy_tokenizer_files
from logos_jax.sharding import batch_shards, make_mesh
from logos_jax.train import data as data_lib
from logos_jax.train.checkpointing import TrainCheckpointer
from logos_jax.train.config import TrainConfig, from_dict, save_train_config
from logos_jax.train.init import fit_vocab, fresh_params, load_initial, train_dtypes
from logos_jax.train.metrics import MetricsWriter, mfu, peak_flops_per_device, perplexity
from logos_jax.train.optim import make_optimizer
from logos_jax.train.step import (
    LossConfig,
    abstract_batch,
    init_state,
    jit_train_step,
    make_eval_step,
    make_train_step,
    state_placement,
)

TRAIN_CONFIG = "train_config.yaml"


@dataclasses.dataclass
class RunSummary:
    """What ``run_training`` returns."""

    run_dir: Path
    start_step: int  # 0 for a fresh run, else the checkpoint step resumed from
    final_step: int
    losses: dict[int, float]  # logged step -> training loss (this invocation)
    eval: dict[str, float]  # the last eval record (empty without eval)
    tokens_per_s: float | None  # mean over this invocation's logged intervals
    mfu: float | None
    skipped_steps: int
    compile_s: float


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What ``config.data`` names: its kind, the resolved path, and its tokenizer (vocab, folder)."""

    kind: str  # synthetic | corpus | sft
    path: Path | None
    vocab_size: int | None
    tokenizer_dir: Path | None


def _corpus_vocab(corpus: Path) -> DataSpec:
    from logos_jax.data.pipeline import read_manifest

    manifest = read_manifest(corpus)
    tok = manifest["tokenizer"]
    return DataSpec("corpus", corpus, int(tok["vocab_size"]), corpus / tok.get("dir", "tokenizer"))


def resolve_data(config: TrainConfig) -> DataSpec:
    """Interpret ``config.data``: ``synthetic``, a built corpus folder, or (``mode=sft``) a JSONL file.

    Training reads built corpora only; ``logos data build`` (or ``logos demo``) builds them."""
    if config.mode == "sft":
        tok_dir = Path(config.tokenizer or config.init_from or "")
        if not (config.tokenizer or config.init_from):
            raise LogosError(
                "mode=sft needs tokenizer=DIR or init_from=MODEL_DIR (the tokenizer's folder)"
            )
        from logos_jax.tokenizer import LogosTokenizer

        vocab = LogosTokenizer.load(tok_dir).vocab_size
        return DataSpec("sft", Path(config.data), vocab, tok_dir)
    if config.data == "synthetic":
        return DataSpec("synthetic", None, None, None)
    path = Path(config.data)
    if path.is_dir():
        if not (path / "manifest.json").is_file():
            raise LogosError(f"data={path}: no manifest.json; build it with `logos data build`")
        return _corpus_vocab(path)
    try:
        find_preset("data", config.data)
        build = f"logos data build --config {config.data} --out DIR"
    except LogosError:
        build = "logos data build --config <data config> --out DIR"
    raise LogosError(
        f"data={config.data} is not a built corpus folder: training reads built corpora only. "
        f"fix: `{build}`, then data=DIR (or data=synthetic)"
    )


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _drop_uncommitted(directory: Path) -> None:
    """Remove step folders whose save never committed (a kill mid-save); they are never restored."""
    if jax.process_index() == 0:
        for p in uncommitted_step_dirs(directory):
            print(f"ignoring incomplete checkpoint {p} (no commit marker)", file=sys.stderr)
            shutil.rmtree(p, ignore_errors=True)
    _barrier("drop_uncommitted")


def _make_source(config: TrainConfig, spec: DataSpec, model: ModelConfig, placement):
    if spec.kind == "synthetic":
        return data_lib.SyntheticSource(
            model.vocab_size, config.batch_size, config.seq_len, config.seed, placement.batch
        )
    if spec.kind == "sft":
        from logos_jax.tokenizer import LogosTokenizer

        tokenizer = LogosTokenizer.load(spec.tokenizer_dir)
        return data_lib.make_sft_source(
            spec.path, tokenizer, config.batch_size, config.seq_len, config.seed, placement.batch
        )
    return data_lib.CorpusSource(
        spec.path,
        batch_size=config.batch_size,
        seq_len=config.seq_len,
        weights=config.data_weights,
        seed=config.seed,
        workers=config.data_workers,
        sharding=placement.batch,
    )


def _model_and_params(config: TrainConfig, spec: DataSpec, run_dir: Path, resuming: bool, mesh):
    """The run's model config, and initial params (None when a checkpoint will be restored)."""
    if resuming:
        return load_model_config(run_dir / MODEL_CONFIG), None
    if config.init_from:
        overrides = train_dtypes(load_model_config(config.model), config.model_overrides)
        return load_initial(
            config.init_from, overrides, spec.vocab_size, mesh, scan_layers=config.scan_layers
        )
    model = fit_vocab(config.model_config(), spec.vocab_size)
    return model, fresh_params(model, config.seed, mesh, config.scan_layers)


def _check_layer_stacking(step_dir: Path, scan_layers: bool) -> None:
    if format_version(step_dir / PARAMS) != FORMAT_VERSION:
        raise LogosError(
            f"{step_dir} was saved by an earlier logos_jax (Linear kernels [in, out]); its optimizer "
            "state cannot resume. Start a new run_dir with init_from=<this run> (its weights load "
            "with either layer stacking)"
        )
    if stores_scanned_layers(step_dir / PARAMS) != scan_layers:
        raise LogosError(
            f"{step_dir} was saved with scan_layers={str(not scan_layers).lower()}; resume with "
            "the same setting (or start a new run_dir with init_from=<this run>, which accepts "
            "either layer stacking)"
        )


class _Logger:
    """Collects per-step device metrics and turns an interval of them into one record (one sync)."""

    def __init__(
        self, config: TrainConfig, model: ModelConfig, writer: MetricsWriter, num_devices: int
    ):
        self.config, self.writer, self.num_devices = config, writer, num_devices
        self.tokens_per_step = config.batch_size * config.seq_len
        self.flops_per_token = model.flops_per_token(config.seq_len)
        self.peak = peak_flops_per_device(jax.devices()[0].device_kind, config.peak_flops)
        self.pending: list[dict[str, jax.Array]] = []
        self.t0 = time.perf_counter()
        self.losses: dict[int, float] = {}
        self.rates: list[float] = []

    def add(self, metrics: dict[str, jax.Array]) -> None:
        self.pending.append(metrics)

    def flush(self, step: int, skipped: int) -> dict[str, Any]:
        host = jax.device_get(self.pending)
        elapsed = time.perf_counter() - self.t0
        tokens_per_s = self.tokens_per_step * len(host) / max(elapsed, 1e-9)
        self.rates.append(tokens_per_s)
        loss = float(np.mean([m["loss"] for m in host]))
        mod_ce = np.sum([m["modality_ce"] for m in host], axis=0)
        mod_w = np.sum([m["modality_weight"] for m in host], axis=0)
        record: dict[str, Any] = {
            "step": step,
            "loss": loss,
            "grad_norm": float(host[-1]["grad_norm"]),
            "lr": float(host[-1]["lr"]),
            "tokens_per_s": tokens_per_s,
            "mfu": mfu(self.flops_per_token, tokens_per_s, self.num_devices, self.peak),
            "skipped_steps": skipped,
        }
        if self.config.z_loss:
            record["z_loss"] = float(np.mean([m["z_loss"] for m in host]))
        record.update(
            {f"loss/{MODALITIES[i]}": float(mod_ce[i] / mod_w[i]) for i in np.nonzero(mod_w)[0]}
        )
        self.losses[step] = loss
        self.writer.write(record)
        self.pending = []
        self.t0 = time.perf_counter()
        return record


def _run_eval(eval_step, params, batches, step: int, writer: MetricsWriter) -> dict[str, float]:
    sums = jax.device_get([eval_step(params, b) for b in batches])
    ce = sum(float(s["ce"]) for s in sums)
    weight = max(sum(float(s["weight"]) for s in sums), 1.0)
    mod_ce = np.sum([s["modality_ce"] for s in sums], axis=0)
    mod_w = np.sum([s["modality_weight"] for s in sums], axis=0)
    record: dict[str, Any] = {
        "step": step,
        "eval/loss": ce / weight,
        "eval/ppl": perplexity(ce / weight),
    }
    for i in np.nonzero(mod_w)[0]:
        loss = float(mod_ce[i] / mod_w[i])
        record[f"eval/loss/{MODALITIES[i]}"] = loss
        record[f"eval/ppl/{MODALITIES[i]}"] = perplexity(loss)
    writer.write(record)
    return {k: v for k, v in record.items() if k != "step"}


def _check_finite(state, config: TrainConfig, checkpointer: TrainCheckpointer) -> None:
    bad = int(jax.device_get(state.bad_step))
    if bad >= 0 and config.nan_policy == "stop":
        last = checkpointer.latest_step()
        raise LogosError(
            f"the loss or gradient became NaN/inf at step {bad + 1}; the run stopped (no checkpoint was "
            f"written after it; the last good one is step {last}). Fix: lower optimizer.lr, check the "
            "data, or set nan_policy=skip to skip such steps"
        )


def _compile_train_step(config: TrainConfig, model, tx, schedule, loss_cfg, placement):
    """(compiled step, compile seconds): compiled ahead of time so step timings exclude it."""
    step_fn = make_train_step(
        model,
        tx,
        schedule,
        loss=loss_cfg,
        grad_accum=config.grad_accum,
        nan_policy=config.nan_policy,
    )
    batch_shape = abstract_batch(config.batch_size, config.seq_len, placement.batch)
    t0 = time.perf_counter()
    compiled = jit_train_step(step_fn, placement).lower(placement.abstract, batch_shape).compile()
    return compiled, time.perf_counter() - t0


def run_training(config: TrainConfig | dict[str, Any]) -> RunSummary:
    """Train (or resume) the run described by ``config``; returns a ``RunSummary``.

    ``config`` is a ``TrainConfig`` or its nested-dict form (the YAML's nesting). Writes under
    ``config.run_dir``: ``train_config.yaml``, ``model_config.yaml``, the tokenizer files,
    ``metrics.jsonl``, ``tensorboard/`` and ``checkpoints/<step>/``.
    """
    if not isinstance(config, TrainConfig):
        config = from_dict(config)
    distributed.initialize(config.distributed)
    run_dir = Path(config.run_dir).absolute()
    primary = jax.process_index() == 0
    if primary:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_train_config(config, run_dir / TRAIN_CONFIG)
    _barrier("run_dir")
    mesh = make_mesh(config.mesh)
    if config.batch_size % (batch_shards(mesh) * config.grad_accum):
        raise LogosError(
            f"batch_size={config.batch_size} must be a multiple of the batch shards "
            f"({batch_shards(mesh)}: mesh.data x mesh.fsdp) times grad_accum ({config.grad_accum})"
        )
    spec = resolve_data(config)
    _drop_uncommitted(run_dir / "checkpoints")
    checkpointer = TrainCheckpointer(
        run_dir, keep=config.keep_checkpoints, async_save=config.async_checkpoint
    )
    resume_step = checkpointer.latest_step()
    model_cfg, params = _model_and_params(config, spec, run_dir, resume_step is not None, mesh)
    if primary:
        save_model_config(model_cfg, run_dir / MODEL_CONFIG)
        if spec.tokenizer_dir is not None:
            copy_tokenizer_files(spec.tokenizer_dir, run_dir)
        elif config.init_from:
            copy_tokenizer_files(Path(config.init_from), run_dir)

    tx, schedule = make_optimizer(config.optimizer, config.optimizer.schedule_steps or config.steps)
    placement = state_placement(model_cfg, tx, mesh, scan_layers=config.scan_layers)
    source = _make_source(config, spec, model_cfg, placement)
    writer = MetricsWriter(run_dir, tensorboard=config.tensorboard, enabled=primary)
    try:
        if resume_step is not None:
            _check_layer_stacking(checkpointer.directory / str(resume_step), config.scan_layers)
            state = checkpointer.restore(resume_step, placement, source)
            print(f"resumed {run_dir} from step {resume_step}", file=sys.stderr)
        else:
            state = init_state(params, tx, placement, config.seed)
        del params
        model = Decoder(
            model_cfg,
            remat_policy=config.remat,
            mesh=mesh,
            scan_layers=config.scan_layers,
            attention=config.attention,
        )
        loss_cfg = LossConfig(config.loss_chunk, config.z_loss)
        train_step, compile_s = _compile_train_step(
            config, model, tx, schedule, loss_cfg, placement
        )
        eval_step, eval_data = None, []
        if config.eval_every and spec.kind == "corpus":
            eval_step = make_eval_step(model, loss_cfg, placement)
            eval_data = data_lib.eval_batches(
                spec.path, config.batch_size, config.seq_len, config.eval_batches, placement.batch
            )
        logger = _Logger(config, model_cfg, writer, mesh.size)
        last_eval: dict[str, float] = {}
        start = int(jax.device_get(state.step))
        for step in range(start + 1, config.steps + 1):
            state, metrics = train_step(state, next(source))
            logger.add(metrics)
            if step % config.log_every == 0 or step == config.steps:
                _check_finite(state, config, checkpointer)
                logger.flush(step, int(jax.device_get(state.skipped)))
            if (
                eval_step is not None
                and eval_data
                and (step % config.eval_every == 0 or step == config.steps)
            ):
                last_eval = _run_eval(eval_step, state.params, eval_data, step, writer)
            if step % config.checkpoint_every == 0 or step == config.steps:
                _check_finite(state, config, checkpointer)
                checkpointer.save(state, source, config.to_dict())
        checkpointer.wait()
        rates = logger.rates[1:] or logger.rates  # the first interval includes warm-up
        tokens_per_s = float(np.mean(rates)) if rates else None
        return RunSummary(
            run_dir=run_dir,
            start_step=start,
            final_step=int(jax.device_get(state.step)),
            losses=logger.losses,
            eval=last_eval,
            tokens_per_s=tokens_per_s,
            mfu=mfu(logger.flops_per_token, tokens_per_s, mesh.size, logger.peak)
            if tokens_per_s
            else None,
            skipped_steps=int(jax.device_get(state.skipped)),
            compile_s=compile_s,
        )
    finally:
        checkpointer.close()
        source.close()
        writer.close()

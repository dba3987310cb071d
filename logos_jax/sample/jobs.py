"""Sampling jobs: input JSONL -> prompts -> batched sampler -> one output row per sample (resumable).

``run_sampling`` is what ``logos sample`` and the demo call. Bad input rows (not JSON, a missing
field, an unknown tag, a prompt longer than the context) are reported with their line number and
skipped. Inputs already complete in the output file are skipped, so re-running the same command
resumes a killed job (see ``logos_jax.jsonl_io``). Samples run on the decode engine (``logos_jax.engine``):
each input's rows are written as soon as its last sample finishes. Under ``jax.distributed``
(``replica=``), each model replica samples its slice of the inputs into a part file and process 0
merges the parts into the output in input order (see ``multihost``).
"""

from __future__ import annotations

import dataclasses
import sys
import time
import zlib
from pathlib import Path
from typing import Any

from jax.sharding import Mesh

from logos_jax import jsonl_io
from logos_jax.config import ModelConfig
from logos_jax.errors import LogosError
from logos_jax.sample import SPECULATE, multihost
from logos_jax.sample.processors import SamplingConfig
from logos_jax.tasks import BadRow, Prompt, Task, get_task

MATERIAL_CHUNK = 100  # material samples per virtual input (the unit of resumption)


@dataclasses.dataclass
class SamplingReport:
    """What a job did: the usable inputs' ids (all hosts), inputs written now, inputs found complete, bad
    rows, throughput; multi-host: this process's part file and the inputs in the merged output."""

    input_ids: list[str] = dataclasses.field(default_factory=list)
    written: int = 0
    already_done: int = 0
    bad_rows: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    samples: int = 0
    tokens: int = 0
    seconds: float = 0.0
    compilations: int = 0
    part: Path | None = None
    merged: int | None = None

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


@dataclasses.dataclass(frozen=True)
class _Input:
    prompt: Prompt
    line: int | None
    ids: list[int]
    num_samples: int


def _row_seed(seed: int, row_id: str) -> int:
    return zlib.crc32(f"{seed}:{row_id}".encode()) & 0x7FFFFFFF


def read_inputs(
    task: Task, input_path: Path | None, num_samples: int, report: SamplingReport
) -> list[tuple[Prompt, int | None, int]]:
    """``(prompt, line, samples)`` for every usable input; bad rows go to ``report.bad_rows``."""
    if task.name == "material":
        if input_path is not None:
            raise LogosError("the material task takes no --input (its prompt is <MaterialS>)")
        chunks = range(0, num_samples, MATERIAL_CHUNK)
        return [
            (
                task.make_prompt({}, f"material-{k // MATERIAL_CHUNK:06d}"),
                None,
                min(MATERIAL_CHUNK, num_samples - k),
            )
            for k in chunks
        ]
    if input_path is None:
        raise LogosError(f"the {task.name} task needs --input FILE.jsonl")
    if not Path(input_path).is_file():
        raise LogosError(f"{input_path}: input file not found")
    out: list[tuple[Prompt, int | None, int]] = []
    seen: set[str] = set()
    for line, row, problem in jsonl_io.json_objects(Path(input_path)):
        try:
            if problem:
                raise BadRow(problem)
            prompt = task.prompt(row, line)
            if prompt.id in seen:
                raise BadRow(f"duplicate id {prompt.id!r}")
        except BadRow as err:
            report.bad_rows.append((line, str(err)))
            continue
        seen.add(prompt.id)
        out.append((prompt, line, num_samples))
    return out


def _output_rows(
    item: _Input, completions: list[Any], tokenizer: Any, task: Task, full_perplexity: bool
) -> list[dict[str, Any]]:
    rows = []
    completions = completions[: item.num_samples]
    for j, c in enumerate(completions):
        completion = tokenizer.decode(c.tokens, skip_special=True)
        objects, grammatical, valid = task.answer(item.prompt.text, completion)
        row: dict[str, Any] = {
            "id": item.prompt.id,
            "line": item.line,
            "sample": j,
            "group_size": len(completions),
            "prompt": item.prompt.text,
            "completion": completion,
            "text": item.prompt.text + completion,
            "objects": objects,
            "grammatical": grammatical,
            "valid": valid,
            "num_tokens": len(c.tokens),
            "stopped": c.stopped,
            "sum_logprob": c.sum_logprob,
            "perplexity": c.perplexity,
        }
        if full_perplexity:
            row["full_perplexity"] = c.full_perplexity
        if c.score is not None:
            row["beam_score"] = c.score
        if item.prompt.groundtruth is not None:
            row["groundtruth"] = item.prompt.groundtruth
        rows.append(row)
    return rows


def run_sampling(
    task: str,
    out_path: str | Path,
    *,
    ckpt: str | Path | None = None,
    input_path: str | Path | None = None,
    model: tuple[ModelConfig, Any] | None = None,
    tokenizer: Any = None,
    num_samples: int | None = None,
    sampling: SamplingConfig | None = None,
    batch_size: int = 64,
    constrained: bool = False,
    num_beams: int = 0,
    seed: int = 0,
    full_perplexity: bool = False,
    mesh: Mesh | None = None,
    progress: bool = True,
    replica: multihost.Replica | None = None,
    speculate: int = SPECULATE,
) -> SamplingReport:
    """Sample ``task`` for every input row into ``out_path`` (appending; resumes a partial file).

    The model comes from ``ckpt`` (a model folder or training run dir, loaded onto ``mesh``) or is
    given as ``model=(config, params)``; the tokenizer from ``tokenizer`` (a ``LogosTokenizer`` or a
    folder) or the checkpoint folder. ``num_samples`` per input (material: in all) defaults to the
    task's; ``batch_size`` is the number of rows (samples) decoded together: the engine's slots
    (rounded up to a multiple of the mesh's batch shards); a finished row's slot takes the next
    pending sample. ``num_beams > 0``: beam search
    instead of sampling, one row per beam, best first (``beam_score`` added). ``speculate``: the
    longest copy draft the engine verifies per step where the constraint drafts (binding-site
    answers with ``constrained``); the outputs are the same with any value, 0 turns it off.

    ``replica`` (a multi-process job, every process calls this with the same arguments): sample
    only this replica's slice into its part file, then merge all parts into ``out_path``.
    """
    job = dict(locals())
    if replica is None:
        return _job(**job)
    try:
        report = _job(**job)
    except Exception:
        multihost.fail()  # the other processes wait for this one in finish()
        raise
    report.merged = multihost.finish(Path(out_path), replica, report.input_ids)
    return report


def _job(
    task: str,
    out_path: str | Path,
    *,
    ckpt: str | Path | None,
    input_path: str | Path | None,
    model: tuple[ModelConfig, Any] | None,
    tokenizer: Any,
    num_samples: int | None,
    sampling: SamplingConfig | None,
    batch_size: int,
    constrained: bool,
    num_beams: int,
    seed: int,
    full_perplexity: bool,
    mesh: Mesh | None,
    progress: bool,
    replica: multihost.Replica | None,
    speculate: int,
) -> SamplingReport:
    from logos_jax.checkpoint import load_model, resolve_model_dir
    from logos_jax.tokenizer import LogosTokenizer

    spec = get_task(task)
    sampling = sampling or SamplingConfig()
    num_samples = num_beams or num_samples or spec.num_samples
    if model is None and ckpt is None:
        raise LogosError("give a checkpoint folder (--ckpt) or a loaded model")
    if tokenizer is None or isinstance(tokenizer, str | Path):
        folder = tokenizer or (resolve_model_dir(ckpt)[0] if ckpt is not None else None)
        if folder is None:
            raise LogosError(
                "no tokenizer: pass one, or a checkpoint folder that holds tokenizer.json"
            )
        tokenizer = LogosTokenizer.load(folder)
    if spec.grammar:
        tokenizer.require_tags()

    report = SamplingReport()
    inputs = read_inputs(spec, Path(input_path) if input_path else None, num_samples, report)
    if model is None:
        model = load_model(ckpt, mesh=mesh)
    config, params = model
    context = config.max_position_embeddings
    items: list[_Input] = []
    for prompt, line, n in inputs:
        ids = tokenizer.encode(prompt.text)
        if len(ids) + sampling.max_new_tokens > context:
            report.bad_rows.append(
                (
                    line or 0,
                    f"prompt of {len(ids)} tokens + {sampling.max_new_tokens} new tokens "
                    f"exceeds the model context of {context}",
                )
            )
            continue
        items.append(_Input(prompt, line, ids, n))
    report.input_ids = [i.prompt.id for i in items]
    if replica is None or replica.index == 0:  # every host read the same file
        for line, reason in report.bad_rows:
            print(f"{input_path}:{line}: skipped: {reason}", file=sys.stderr)

    out_path = Path(out_path)
    if replica is None:
        write_path, finished = out_path, jsonl_io.resume(out_path)
    else:
        items = replica.take(items)
        write_path = report.part = replica.part(out_path)
        finished = multihost.done_ids(out_path, replica, [i.prompt.id for i in items])
    report.already_done = len(finished)
    pending = sorted((i for i in items if i.prompt.id not in finished), key=lambda i: len(i.ids))
    if not pending:
        return report

    sampler, constraint = _make_sampler(
        spec,
        config,
        params,
        tokenizer,
        sampling,
        mesh,
        full_perplexity,
        constrained,
        pending,
        min(batch_size, sum(i.num_samples for i in pending)),  # no idle slots for small jobs
        speculate,
    )
    states = None
    if constraint is not None:
        states = [
            constraint.start(i.prompt.protein, tokenizer.encode(i.prompt.protein, add_bos=False))
            if spec.constraint == "pocket"
            else constraint.start()
            for i in pending
        ]

    from tqdm import tqdm

    start = time.perf_counter()
    bar = tqdm(
        total=sum(i.num_samples for i in pending),
        unit="sample",
        disable=not progress,
        desc=f"sample {spec.name}",
        file=sys.stderr,
    )
    # Rows are written per input as soon as its last sample finishes (continuous batching).
    with jsonl_io.Appender(write_path) as out, bar:
        for index, completions in sampler.stream(
            [i.ids for i in pending],
            num_samples=[i.num_samples for i in pending],
            seeds=[_row_seed(seed, i.prompt.id) for i in pending],
            constraint=constraint,
            constraint_states=states,
            num_beams=num_beams,
        ):
            item = pending[index]
            out.write(_output_rows(item, completions, tokenizer, spec, full_perplexity))
            report.written += 1
            report.samples += min(item.num_samples, len(completions))
            report.tokens += sum(len(c.tokens) for c in completions[: item.num_samples])
            report.seconds = time.perf_counter() - start
            bar.update(item.num_samples)
            bar.set_postfix(
                tok_s=f"{report.tokens_per_s:.0f}", sample_s=f"{report.samples_per_s:.1f}"
            )
    report.compilations = sampler.compilations
    return report


def _make_sampler(
    spec,
    config,
    params,
    tokenizer,
    sampling,
    mesh,
    full_perplexity,
    constrained,
    pending,
    slots,
    speculate,
):
    from logos_jax.sample import constraints
    from logos_jax.sample.sampler import Sampler

    tag_ids = tokenizer.tag_ids()
    eos = set(tokenizer.eos_ids) | set(config.eos_token_ids)
    if not eos and not spec.stop_tags:
        raise LogosError("the tokenizer and model config name no EOS id; samples could never stop")
    stop_ids = eos | {tag_ids[t] for t in spec.stop_tags}
    pad_id = next(
        i
        for i in (tokenizer.pad_id, config.pad_token_id, min(eos, default=None), 0)
        if i is not None
    )
    sampler = Sampler(
        config,
        params,
        stop_ids=sorted(stop_ids),
        pad_id=pad_id,
        sampling=sampling,
        mesh=mesh,
        full_perplexity=full_perplexity,
        vocab_limit=tokenizer.vocab_size,
        num_slots=slots,
        max_prompt_len=max(len(i.ids) for i in pending),
        speculate=speculate,
    )
    constraint = None
    if constrained and spec.constraint is not None:
        texts = constraints.token_texts(tokenizer)
        if spec.constraint == "pocket":
            longest = max(len(i.prompt.protein) for i in pending)
            constraint = constraints.protein_copy(
                texts, tag_ids, sorted(eos), config.vocab_size, max_residues=longest + 1
            )
        else:
            constraint = constraints.block_grammar(
                spec.constraint, texts, tag_ids, sorted(eos), config.vocab_size
            )
    return sampler, constraint

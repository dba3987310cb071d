"""Task metrics over sampling output rows (``logos sample`` JSONL, or any rows with the same fields).

- retro: top-k exact match of the canonical reactant set (stereo kept) against the ground truth;
  each input's distinct valid answers are ranked by best log-prob, by perplexity, or by frequency
  across samples (ties by best log-prob).
- ligand / material: validity, uniqueness (distinct valid / valid), novelty (distinct valid not in a
  training set / distinct valid) and VNU (valid, unique and novel / samples).
- pocket-search: residue-level precision, recall, F1 and MCC of each sample's pocket against the
  annotated truth; averaged over an input's samples, then over inputs (an invalid sample predicts
  no residue). With ``structures`` (a folder of holo structures named by row id): DCA / DCC success
  of the top-n and top-(n+2) pockets (``eval.sites``).

Chemistry (retro, ligand, material) needs RDKit: without it ``evaluate`` refuses with a message
naming the ``chem`` extra rather than comparing raw strings.

Answers are re-derived from ``completion`` (or ``text``) with the task's parser, so files written by
other tools score the same way. Every fraction is in [0, 1]; counts come alongside.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from logos_jax.errors import LogosError
from logos_jax.grammar import annotated_protein, parse
from logos_jax.grammar.chem import canonical_smiles, has_rdkit
from logos_jax.grammar.parse import retro_reactants
from logos_jax.jsonl_io import json_objects
from logos_jax.tasks import TASKS
from logos_jax.validate import bad_bytes, row_value, text_lines

RANKINGS = ("logprob", "perplexity", "frequency")
TOP_KS = (1, 3, 5, 10)


CHEMISTRY_TASKS = ("retro", "ligand", "material")


def _canonical(smiles: str) -> str | None:
    return canonical_smiles(smiles)


def require_rdkit(task: str) -> None:
    """Refuse chemistry metrics without RDKit (validity and matching need canonical SMILES)."""
    if not has_rdkit():
        raise LogosError(
            f"{task} metrics need RDKit (validity and canonical SMILES); install the chem extra: "
            "pip install 'logos_jax[chem]'"
        )


def _completion(row: dict[str, Any]) -> str:
    if isinstance(row.get("completion"), str):
        return row["completion"]
    text, prompt = row.get("text"), row.get("prompt") or ""
    if isinstance(text, str):
        return text[len(prompt) :] if text.startswith(prompt) else text
    raise LogosError(f"row {row.get('id')!r} has neither 'completion' nor 'text'")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_id(row: dict[str, Any], where: str) -> None:
    if "id" in row and not (isinstance(row["id"], str) or _is_int(row["id"])):
        raise LogosError(
            f"{where}: field 'id' must be a string or an integer, got {row['id']!r:.60}"
        )


def _check_truth(row: dict[str, Any], where: str) -> None:
    """``groundtruth`` (a string, a list of SMILES or residue indices, ``{"pocket": [...]}``) and
    ``pocket`` (residue indices) of a result or ground-truth row, or null."""
    truth = row.get("groundtruth")
    pocket = truth.get("pocket") if isinstance(truth, dict) else row.get("pocket")
    name = "groundtruth.pocket" if isinstance(truth, dict) else "pocket"
    if truth is not None and not isinstance(truth, str | list | dict):
        raise LogosError(
            f"{where}: field 'groundtruth' must be a string, a list or an object, got {truth!r:.60}"
        )
    if isinstance(truth, list) and not (
        all(isinstance(x, str) for x in truth) or all(_is_int(x) for x in truth)
    ):
        raise LogosError(
            f"{where}: field 'groundtruth' must list SMILES strings or residue indices, "
            f"got {truth!r:.60}"
        )
    if pocket is not None and not (isinstance(pocket, list) and all(_is_int(x) for x in pocket)):
        raise LogosError(
            f"{where}: field {name!r} must be a list of residue indices, got {pocket!r:.60}"
        )


def check_result_row(row: Any, where: str) -> None:
    """A LogosError ``"<where>: field 'x' must be ..."`` when a result row's fields have the wrong
    type (``"completion": 5``, ``"sample": null``, a JSON list instead of an object...)."""
    if not isinstance(row, dict):
        raise LogosError(f"{where}: not a JSON object")
    _check_id(row, where)
    for field in ("prompt", "completion", "text", "ligand"):
        if row.get(field) is not None:
            row_value(row, field, str, where)
    for field in ("sum_logprob", "perplexity"):
        if row.get(field) is not None:
            row_value(row, field, float, where)
    row_value(row, "sample", int, where, required=False)
    if row.get("line") is not None:  # null for inputs without a line (material samples)
        row_value(row, "line", int, where)
    if row.get("objects") is not None:
        row_value(row, "objects", dict, where)
    _check_truth(row, where)


def _skip(path: Path, number: int, reason: str) -> None:
    """A rejected line of an input file, on stderr (``<path>:<line>: skipped: <reason>``)."""
    reason = reason.removeprefix(f"{path}:{number}: ")
    print(f"{path}:{number}: skipped: {reason}", file=sys.stderr)


def _text_lines(path: Path):
    """``(line number, text)`` for every non-blank line of ``path``; lines of bad bytes are
    skipped with a warning."""
    for number, line in text_lines(path):
        if line is None:
            _skip(path, number, bad_bytes(path, number))
        elif line.strip():
            yield number, line


def _json_lines(path: Path):
    """``(line number, decoded JSON row)`` for every line of ``path`` that is a JSON object; bad
    bytes, JSON errors and other values are skipped with a warning."""
    for number, row, problem in json_objects(path):
        if problem:
            _skip(path, number, problem)
        else:
            yield number, row


def _answer(task: str, row: dict[str, Any]) -> tuple[dict[str, Any], bool | None, bool | None]:
    prompt = row.get("prompt") or ""
    completion = _completion(row)
    if task == "retro" and not prompt:
        prompt = completion[: completion.rfind("<ReverseReact>") + len("<ReverseReact>")]
        completion = completion[len(prompt) :]
    return TASKS[task].answer(prompt, completion)


def _group(rows: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[str(row.get("id", row.get("line", "?")))].append(row)
    return groups


def _score(row: dict[str, Any]) -> float:
    """Higher is better: sum log-prob, else minus perplexity, else 0."""
    if isinstance(row.get("sum_logprob"), int | float):
        return float(row["sum_logprob"])
    if isinstance(row.get("perplexity"), int | float):
        return -float(row["perplexity"])
    return 0.0


def rank_answers(answers: Sequence[tuple[Any, dict[str, Any]]], rank_by: str) -> list[Any]:
    """Distinct answer keys, best first. ``answers``: (key, row) per valid sample."""
    best: dict[Any, float] = {}
    count: dict[Any, int] = defaultdict(int)
    ppl: dict[Any, float] = {}
    for key, row in answers:
        best[key] = max(best.get(key, -math.inf), _score(row))
        count[key] += 1
        p = row.get("perplexity")
        ppl[key] = min(ppl.get(key, math.inf), float(p) if isinstance(p, int | float) else math.inf)
    if rank_by == "frequency":
        return sorted(best, key=lambda k: (-count[k], -best[k]))
    if rank_by == "perplexity":
        return sorted(best, key=lambda k: (ppl[k], -best[k]))
    return sorted(best, key=lambda k: -best[k])


def _truth_reactants(truth: Any) -> tuple[str, ...] | None:
    if isinstance(truth, list):
        smiles = [str(s) for s in truth]
    elif isinstance(truth, str):
        smiles = retro_reactants(truth) if "<" in truth else truth.split(".")
    else:
        return None
    canonical = [_canonical(s) for s in smiles]
    return tuple(sorted(canonical)) if canonical and all(canonical) else None


def _validity(groups, task) -> tuple[list[tuple[str, dict, dict, bool, bool]], dict[str, Any]]:
    answers = []
    for row_id, rows in groups.items():
        for row in rows:
            objects, grammatical, valid = _answer(task, row)
            answers.append((row_id, row, objects, bool(grammatical), bool(valid)))
    n = len(answers)
    counts = {
        "inputs": len(groups),
        "samples": n,
        "grammatical_count": sum(a[3] for a in answers),
        "valid_count": sum(a[4] for a in answers),
    }
    counts["grammatical"] = counts["grammatical_count"] / n if n else 0.0
    counts["valid"] = counts["valid_count"] / n if n else 0.0
    return answers, counts


def retro_metrics(
    rows: Iterable[dict[str, Any]],
    truth: dict[str, Any] | None = None,
    rank_by: str = "logprob",
    ks: Sequence[int] = TOP_KS,
) -> dict[str, Any]:
    if rank_by not in RANKINGS:
        raise LogosError(f"unknown ranking {rank_by!r}; choose one of {', '.join(RANKINGS)}")
    groups = _group(rows)
    answers, out = _validity(groups, "retro")
    per_input: dict[str, list] = defaultdict(list)
    for row_id, row, objects, _, valid in answers:
        if valid:
            per_input[row_id].append((tuple(objects["reactants_canonical"]), row))
    hits = dict.fromkeys(ks, 0)
    scored = 0
    for row_id, rows_ in groups.items():
        gt = (truth or {}).get(row_id, rows_[0].get("groundtruth"))
        target = _truth_reactants(gt)
        if target is None:
            continue
        scored += 1
        ranked = rank_answers(per_input[row_id], rank_by)
        for k in ks:
            hits[k] += target in ranked[:k]
    out.update(scored_inputs=scored, rank_by=rank_by)
    for k in ks:
        out[f"top_{k}_count"] = hits[k]
        out[f"top_{k}"] = hits[k] / scored if scored else 0.0
    return out


def _material_key(metal: str, linkers: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    node = ".".join(sorted(metal.split(".")))
    return node, tuple(sorted(_canonical(s) or s for s in linkers))


def load_reference(path: str | Path, task: str) -> set:
    """Training-set keys for novelty: canonical SMILES (ligand) or (node, linkers) (material).

    ``.jsonl``: rows with ``smiles``, or ``nodes`` + ``linkers`` (MOFid rows), or ``text`` (a grammar
    sequence). Any other file: one SMILES per line (first field; a header that does not parse is
    skipped). Lines of bad bytes, JSON errors and rows of the wrong types are skipped with a warning
    on stderr naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise LogosError(f"{path}: reference file not found")
    keys: set = set()
    if path.suffix == ".jsonl":
        for number, row in _json_lines(path):
            try:
                key = _reference_key(row, task, f"{path}:{number}")
            except LogosError as err:
                _skip(path, number, str(err))
                continue
            if key is not None:
                keys.add(key)
        return keys
    for _, line in _text_lines(path):
        first = line.replace(",", " ").split()[0]
        canonical = _canonical(first)
        if canonical:
            keys.add(canonical)
    return keys


def _reference_key(row: dict[str, Any], task: str, where: str) -> Any:
    """The novelty key of one ``.jsonl`` reference row, or None (a LogosError for wrong types)."""
    if task == "material" and "nodes" in row:
        nodes, linkers = (
            row_value(row, "nodes", list, where),
            row_value(row, "linkers", list, where),
        )
        if not all(isinstance(x, str) for x in nodes + linkers):
            raise LogosError(f"{where}: 'nodes' and 'linkers' must list SMILES strings")
        return _material_key(".".join(nodes), linkers)
    if "smiles" in row:
        smiles = row_value(row, "smiles", str, where)
        return _canonical(smiles) or smiles
    if "text" in row:
        obj = parse(row_value(row, "text", str, where)).objects
        if task == "material" and obj is not None and obj.name == "material":
            return _material_key(obj.metal, obj.linkers)
        if obj is not None and obj.name == "molecule":
            return _canonical(obj.smiles) or obj.smiles
    return None


def generation_metrics(
    task: str, rows: Iterable[dict[str, Any]], reference: set | None = None
) -> dict[str, Any]:
    """Validity, uniqueness, novelty and VNU of ligand or material samples."""
    groups = _group(rows)
    answers, out = _validity(groups, task)
    keys = []
    for _, _, objects, _, valid in answers:
        if not valid:
            continue
        if task == "material":
            keys.append(_material_key(objects["metal"], objects["linkers_canonical"]))
        else:
            keys.append(objects["smiles_canonical"])
    distinct = set(keys)
    out["unique_count"] = len(distinct)
    out["unique"] = len(distinct) / len(keys) if keys else 0.0
    if reference is not None:
        novel = distinct - reference
        out["novel_count"] = len(novel)
        out["novel"] = len(novel) / len(distinct) if distinct else 0.0
        out["vnu"] = len(novel) / out["samples"] if out["samples"] else 0.0
        out["reference_size"] = len(reference)
    return out


def residue_scores(pred: set[int], truth: set[int], length: int) -> dict[str, float]:
    """Precision, recall, F1, MCC of predicted vs true residue indices in a protein of ``length``."""
    tp = len(pred & truth)
    fp = len(pred - truth)
    fn = len(truth - pred)
    tn = length - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = (tp * tn - fp * fn) / denom if denom else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "mcc": mcc}


def _truth_pocket(truth: Any) -> set[int] | None:
    if isinstance(truth, dict):
        truth = truth.get("pocket")
    if isinstance(truth, list):
        return {int(i) for i in truth} if all(_is_int(i) for i in truth) else None
    if isinstance(truth, str):
        found = annotated_protein(truth)
        return set(found[1]) if found else None
    return None


def pocket_metrics(
    rows: Iterable[dict[str, Any]], truth: dict[str, Any] | None = None
) -> dict[str, Any]:
    groups = _group(rows)
    answers, out = _validity(groups, "pocket-search")
    by_input: dict[str, list] = defaultdict(list)
    for row_id, row, objects, _, valid in answers:
        by_input[row_id].append((row, set(objects["pocket"]) if valid else set()))
    names = ("precision", "recall", "f1", "mcc")
    totals = dict.fromkeys(names, 0.0)
    scored = 0
    for row_id, samples in by_input.items():
        target = _truth_pocket((truth or {}).get(row_id, samples[0][0].get("groundtruth")))
        prompt = samples[0][0].get("prompt") or ""
        sequence = (
            prompt.split("<ProteinS>")[1].split("<ProteinE>")[0] if "<ProteinS>" in prompt else ""
        )
        if target is None or not sequence:
            continue
        scored += 1
        scores = [residue_scores(pred, target, len(sequence)) for _, pred in samples]
        for name in names:
            totals[name] += sum(s[name] for s in scores) / len(scores)
    out["scored_inputs"] = scored
    for name in names:
        out[name] = totals[name] / scored if scored else 0.0
    return out


def load_input_rows(path: str | Path) -> dict[str, dict[str, Any]]:
    """``id -> row`` of a JSONL whose rows carry an ``id`` (a ground-truth file, or the sampling
    input file: ``groundtruth``, ``pocket``, ``ligand``...). A line that is not such a row (bad
    bytes, not JSON, no ``id``, fields of the wrong type) is skipped with a warning on stderr."""
    path = Path(path)
    if not path.is_file():
        raise LogosError(f"{path}: ground-truth file not found")
    out = {}
    for number, row in _json_lines(path):
        where = f"{path}:{number}"
        try:
            if "id" not in row:
                raise LogosError(f"{where}: a ground-truth row needs an 'id'")
            _check_id(row, where)
            if row.get("ligand") is not None:
                row_value(row, "ligand", str, where)
            _check_truth(row, where)
        except LogosError as err:
            _skip(path, number, str(err))
            continue
        out[str(row["id"])] = row
    return out


def load_truth(path: str | Path) -> dict[str, Any]:
    """``id -> ground truth`` from a JSONL with ``id`` and ``groundtruth`` (or ``pocket``) fields."""
    return {
        k: row.get("groundtruth", row.get("pocket")) for k, row in load_input_rows(path).items()
    }


def evaluate(
    task: str,
    rows: Iterable[dict[str, Any]],
    *,
    reference: set | str | Path | None = None,
    truth: dict[str, Any] | str | Path | None = None,
    rank_by: str = "logprob",
    structures: str | Path | None = None,
) -> dict[str, Any]:
    """The summary dict of ``task`` over output ``rows``.

    ``reference``: training-set keys (or a file, see ``load_reference``) for novelty; ``truth``:
    ``id -> ground truth`` (or a JSONL file) when rows carry no ``groundtruth``; ``structures``:
    pocket-search only, the folder of holo structures for DCA / DCC (``eval.sites``).
    """
    if task in CHEMISTRY_TASKS:
        require_rdkit(task)
    if structures is not None and task != "pocket-search":
        raise LogosError(
            f"structures score pocket-search here, not {task}; ligand docking is "
            "eval.design.design_metrics (logos eval --task ligand --structures DIR)"
        )
    rows = list(rows)
    for number, row in enumerate(rows, start=1):
        check_result_row(row, f"result row {number}")
    inputs = None
    if isinstance(truth, str | Path):
        inputs = load_input_rows(truth)
        truth = {k: r.get("groundtruth", r.get("pocket")) for k, r in inputs.items()}
    if isinstance(reference, str | Path):
        reference = load_reference(reference, task)
    if task == "retro":
        out = retro_metrics(rows, truth, rank_by)
    elif task in ("ligand", "material"):
        out = generation_metrics(task, rows, reference)
    elif task == "pocket-search" and structures is not None:
        from logos_jax.eval.sites import site_metrics

        out = site_metrics(rows, structures, inputs=inputs)
    elif task == "pocket-search":
        out = pocket_metrics(rows, truth)
    elif task == "free":
        ppl = [r["perplexity"] for r in rows if isinstance(r.get("perplexity"), int | float)]
        out = {"inputs": len(_group(rows)), "samples": len(rows)}
        if ppl:
            out["mean_perplexity"] = sum(ppl) / len(ppl)
    else:
        raise LogosError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return {"task": task, **out}

"""The corpus builder: raw sources -> grammar sequences -> token ids -> ArrayRecord shards + manifest.

A data config (``configs/data/*.yaml``) names the tokenizer and the sources; each source is read in
chunks of ``records_per_shard`` raw records. A chunk is the unit of work and of resumption: a worker
process encodes every record with every layout of its source (``logos_jax.grammar.encode_record``),
tokenizes, and writes that chunk's shards (one per split and modality it produced) and then a small
``.work/<source>-NNNNN.json`` marker. A rerun after a kill skips chunks that have a marker, so
finished shards are never redone, and deletes the temporaries of shards the kill cut short; when
all chunks are done the markers are merged into ``manifest.json``, ``rejects.jsonl`` and
``heldout/*.jsonl`` and ``.work`` is removed.

Determinism: a chunk's output depends only on its records, the seed and the config, never on the
number of workers or on a previous interrupted run, so a resumed build is byte-identical to an
uninterrupted one. The train/eval split is decided per raw record (all its layouts together) by a hash
of the seed and the record's content (for structures: the file), so duplicates and the layouts of one
complex never straddle the split. SMILES randomisation (``randomize_smiles``) draws from a generator
seeded by (seed, source, record, layout).

Bad records (a reader error, a ``GrammarError`` such as an invalid SMILES or a non-standard residue,
a document over ``max_tokens`` tokens) are counted per modality and written to ``rejects.jsonl`` with
the reason; they never stop the build.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import dataclasses
import hashlib
import itertools
import json
import multiprocessing
import os
import random
import shutil
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from logos_jax.child_processes import exit_with_parent
from logos_jax.config import find_preset, load_yaml
from logos_jax.data.corpus import (
    FORMAT_VERSION,
    HELDOUT_DIR,
    LAYOUT_MODALITY,
    MANIFEST,
    MODALITIES,
    REJECTS,
    SPLITS,
    TOKENIZER_DIR,
    encode_document,
    lengths_path,
    sha256_file,
    write_json_atomic,
)
from logos_jax.data.sources import FORMATS, RawRecord, read_source, structure_record
from logos_jax.errors import LogosError
from logos_jax.files import (
    atomic_folder,
    atomic_open,
    atomic_path,
    atomic_write_text,
    make_dir,
    remove_temp_files,
)
from logos_jax.grammar.chem import SMILES_CHECKS, smiles_checker
from logos_jax.validate import MALFORMED_RECORD, check_fields, check_ranges, check_value

ASSETS = Path(__file__).resolve().parent.parent / "assets"
WORK_DIR = ".work"
BUNDLED_TOKENIZERS = ("qwen3", "llama3")
# Held-out prompts written for the sampling tasks: layout -> the tag that ends the prompt.
HELDOUT_TASKS = {"retro": "<ReverseReact>", "search": "<Search>", "complex2": "<MoleculeS>"}


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    """One raw source: a file, its format (``sources.FORMATS``) and the layouts to encode it with."""

    name: str
    path: str
    format: str
    layouts: tuple[str, ...]
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    randomize_smiles: bool = False
    eval_fraction: float | None = None
    check_smiles: str | None = None
    limit: int | None = None


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """A corpus build: ``tokenizer`` is ``residue`` (built into the corpus), ``qwen3``/``llama3``
    (bundled, tags added) or a path to a tokenizer file or folder. ``check_smiles``: ``sanitize``
    (every molecule block must parse and sanitise in RDKit), ``parse`` (parse only; MOF linkers often
    do not sanitise) or ``off``; sources may override it."""

    name: str
    sources: tuple[SourceConfig, ...]
    tokenizer: str = "residue"
    seed: int = 0
    eval_fraction: float = 0.05
    records_per_shard: int = 2000
    max_tokens: int = 4096
    workers: int = 2
    check_smiles: str = "sanitize"
    raw: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)


_SOURCE_KEYS = {
    "name",
    "path",
    "format",
    "layouts",
    "randomize_smiles",
    "eval_fraction",
    "check_smiles",
    "limit",
}
_OPTION_KEYS = {"template", "field", "fields", "cutoff", "contact_rule"}
_OPTION_TYPES = {"template": str, "field": str, "fields": list[str], "cutoff": float}


def _resolve_path(text: str, base: Path) -> str:
    if text.startswith("{assets}"):
        return str(ASSETS / text.removeprefix("{assets}").lstrip("/"))
    path = Path(text).expanduser()
    return str(path if path.is_absolute() else base / path)


def build_config_from_dict(data: dict[str, Any], *, base: Path, source: str) -> BuildConfig:
    """Validate a data config mapping; relative source paths resolve against ``base``."""
    from logos_jax.grammar import LAYOUT_NAMES

    known = {f.name for f in dataclasses.fields(BuildConfig)} - {"raw"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise LogosError(f"{source}: unknown data config keys {unknown}; known: {sorted(known)}")
    if not data.get("sources") or not isinstance(data["sources"], list):
        raise LogosError(f"{source}: the data config needs a non-empty 'sources' list")
    sources = []
    for i, s in enumerate(data["sources"]):
        where = f"{source}: sources[{i}]"
        if not isinstance(s, dict):
            raise LogosError(f"{where}: expected a mapping with name, path, format, layouts")
        bad = sorted(set(s) - _SOURCE_KEYS - _OPTION_KEYS)
        if bad:
            raise LogosError(
                f"{where}: unknown keys {bad}; known: {sorted(_SOURCE_KEYS | _OPTION_KEYS)}"
            )
        missing = [k for k in ("name", "path", "format", "layouts") if k not in s]
        if missing:
            raise LogosError(f"{where}: missing keys {missing}")
        if s["format"] not in FORMATS:
            raise LogosError(f"{where}: format {s['format']!r} not in {FORMATS}")
        if s.get("contact_rule", "distance") not in ("distance", "vdw"):
            raise LogosError(f"{where}: contact_rule must be 'distance' or 'vdw'")
        if not isinstance(s["layouts"], list | tuple):
            raise LogosError(f"{where}: layouts must be a list, got {s['layouts']!r}")
        layouts = tuple(s["layouts"])
        wrong = [x for x in layouts if x not in LAYOUT_NAMES]
        if wrong or not layouts:
            raise LogosError(f"{where}: unknown layouts {wrong}; choose from {list(LAYOUT_NAMES)}")
        options = {k: s[k] for k in _OPTION_KEYS if k in s}
        for key, kind in _OPTION_TYPES.items():
            if key in options:
                options[key] = check_value(key, options[key], kind, where)
        config = SourceConfig(
            name=check_value("name", s["name"], str, where),
            path=_resolve_path(check_value("path", s["path"], str, where), base),
            format=s["format"],
            layouts=layouts,
            options=options,
            randomize_smiles=s.get("randomize_smiles", False),
            eval_fraction=s.get("eval_fraction"),
            check_smiles=s.get("check_smiles"),
            limit=s.get("limit"),
        )
        check_fields(config, where)
        check_ranges(
            where,
            [
                (config.limit is None or config.limit >= 0, f"limit={config.limit} must be >= 0"),
                (
                    config.eval_fraction is None or 0 <= config.eval_fraction < 1,
                    f"eval_fraction={config.eval_fraction} must be in [0, 1)",
                ),
                (options.get("cutoff", 1) > 0, f"cutoff={options.get('cutoff')} must be > 0"),
            ],
        )
        sources.append(config)
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise LogosError(f"{source}: source names must be unique, got {names}")
    fields = {k: data[k] for k in known - {"sources", "name"} if k in data}
    config = BuildConfig(
        name=data.get("name", Path(source).stem), sources=tuple(sources), raw=data, **fields
    )
    check_fields(config, source)
    if config.workers < 0:
        raise LogosError(f"{source}: workers={config.workers} must be >= 0")
    checks = {config.check_smiles} | {s.check_smiles for s in sources if s.check_smiles}
    if not checks <= set(SMILES_CHECKS):
        raise LogosError(
            f"{source}: check_smiles must be one of {SMILES_CHECKS}, got {sorted(checks)}"
        )
    if config.records_per_shard < 1 or config.max_tokens < 2 or not 0 <= config.eval_fraction < 1:
        raise LogosError(
            f"{source}: need records_per_shard >= 1, max_tokens >= 2 and 0 <= eval_fraction < 1"
        )
    return config


def load_build_config(
    name_or_path: str | Path, overrides: dict[str, Any] | None = None
) -> BuildConfig:
    """A preset name under ``configs/data`` (``mini``) or a YAML path, with top-level overrides."""
    path = find_preset("data", str(name_or_path))
    data = {**load_yaml(path), **(overrides or {})}
    return build_config_from_dict(data, base=path.resolve().parent, source=str(path))


def _is_eval(seed: int, group: str, fraction: float) -> bool:
    digest = hashlib.sha256(f"{seed}\0{group}".encode()).digest()
    return int.from_bytes(digest[:8], "little") < fraction * 2.0**64


def _prepare_tokenizer(spec: str, out_dir: Path) -> Path:
    """Materialise the tokenizer into ``out_dir/tokenizer`` (kept on resume) and check its tags."""
    from logos_jax.tokenizer import (
        LogosTokenizer,
        add_grammar_tags,
        build_residue_tokenizer,
        bundled_tokenizer_path,
    )

    target = out_dir / TOKENIZER_DIR
    if not target.exists():
        with atomic_folder(target) as tmp:
            if spec == "residue":
                build_residue_tokenizer(tmp)
            else:
                src = bundled_tokenizer_path(spec) if spec in BUNDLED_TOKENIZERS else Path(spec)
                if not src.exists():
                    raise LogosError(
                        f"tokenizer {spec!r}: not 'residue', one of {BUNDLED_TOKENIZERS} or an existing path"
                    )
                tokenizer, _ = add_grammar_tags(LogosTokenizer.load(src))
                tokenizer.save(tmp)
    LogosTokenizer.load(target).require_tags()
    return target


# ---------------------------------------------------------------- worker side (one chunk at a time)

_TOKENIZER = None


def _init_worker(tokenizer_dir: str, parent: int | None = None) -> None:
    global _TOKENIZER
    from logos_jax.tokenizer import LogosTokenizer

    if parent is not None:
        exit_with_parent(parent)
    _TOKENIZER = LogosTokenizer.load(tokenizer_dir)


def _write_shard(path: Path, documents: list[list[int]]) -> dict[str, Any]:
    from array_record.python.array_record_module import ArrayRecordWriter

    with atomic_path(path) as tmp:
        writer = ArrayRecordWriter(str(tmp), "group_size:1")
        for ids in documents:
            writer.write(encode_document(ids))
        writer.close()
    lengths = np.array([len(d) for d in documents], dtype=np.uint32)
    with atomic_open(lengths_path(path), "wb") as f:
        np.save(f, lengths)
    return {
        "documents": len(documents),
        "tokens": int(lengths.sum()),
        "sha256": sha256_file(path),
        "lengths_sha256": sha256_file(lengths_path(path)),
    }


def _heldout_row(layout: str, key: str, sequence: str) -> dict[str, str] | None:
    marker = HELDOUT_TASKS.get(layout)
    if marker is None or marker not in sequence:
        return None
    cut = sequence.index(marker) + len(marker)
    prompt, truth = sequence[:cut], sequence[cut:]
    if layout == "retro":
        return {"test_input": prompt, "groundtruth": truth}
    if layout == "search":
        return {"id": key, "text": prompt, "groundtruth": truth}
    return {"id": key, "protein_pocket_ligand": prompt, "groundtruth": truth}


def _encode_chunk(
    source: SourceConfig, records: list[RawRecord], config: BuildConfig
) -> tuple[dict, list[dict], list[tuple[str, dict]]]:
    """Documents by (split, modality), reject rows and held-out rows of one chunk."""
    from logos_jax.grammar import GrammarError, encode_record

    fraction = config.eval_fraction if source.eval_fraction is None else source.eval_fraction
    mode = source.check_smiles or config.check_smiles
    smiles_problem = smiles_checker(mode)
    texts, places, rejects, heldout = [], [], [], []
    for rec in records:
        split = "eval" if _is_eval(config.seed, rec.group, fraction) else "train"
        raw, error = rec.raw, rec.error
        if error is None and source.format == "structures":
            try:
                raw = structure_record(rec.raw)
            except (
                Exception
            ) as err:  # any parser failure on an arbitrary file is this record's reject
                error = f"unparsable structure: {err}"
        for layout in source.layouts:
            modality = LAYOUT_MODALITY[layout]
            reject = {"source": source.name, "key": rec.key, "layout": layout, "modality": modality}
            if error is not None:
                reason = error if error.startswith("unparsable") else f"unreadable record: {error}"
                rejects.append({**reject, "reason": reason, "raw": ""})
                continue
            rng = random.Random(f"{config.seed}\0{source.name}\0{rec.key}\0{layout}")
            try:
                text = encode_record(layout, raw, rng=rng, randomize_smiles=source.randomize_smiles)
            except (GrammarError, *MALFORMED_RECORD) as err:
                shown = raw if isinstance(raw, str) else json.dumps(raw)
                rejects.append({**reject, "reason": str(err), "raw": shown[:200]})
                continue
            problem = smiles_problem(text)
            if problem is not None:
                rejects.append({**reject, "reason": problem, "raw": text[:200]})
                continue
            texts.append(text)
            places.append((split, modality, reject))
            row = _heldout_row(layout, rec.key, text) if split == "eval" else None
            if row is not None:
                heldout.append((layout, row))
    eos = list(_TOKENIZER.eos_ids[:1])
    documents: dict[tuple[str, str], list[list[int]]] = defaultdict(list)
    for ids, text, (split, modality, reject) in zip(
        _TOKENIZER.encode_batch(texts, add_bos=True), texts, places
    ):
        ids = list(ids) + eos
        if len(ids) > config.max_tokens:
            reason = f"over-long: {len(ids)} tokens > max_tokens {config.max_tokens}"
            rejects.append({**reject, "reason": reason, "raw": text[:200]})
        else:
            documents[(split, modality)].append(ids)
    return documents, rejects, heldout


def _process_chunk(
    source: SourceConfig, chunk: int, records: list[RawRecord], config: BuildConfig, out_dir: str
) -> dict[str, Any]:
    """Encode, tokenize and write one chunk, then its done-marker; returns the marker."""
    out = Path(out_dir)
    documents, rejects, heldout = _encode_chunk(source, records, config)
    shards = []
    for split in SPLITS:
        for modality in MODALITIES:
            docs = documents.get((split, modality))
            if docs:
                rel = f"{split}/{modality}/{source.name}-{chunk:05d}.array_record"
                info = _write_shard(out / rel, docs)
                shards.append(
                    {
                        "path": rel,
                        "split": split,
                        "modality": modality,
                        "source": source.name,
                        **info,
                    }
                )
    marker = {
        "source": source.name,
        "chunk": chunk,
        "records": len(records),
        "shards": shards,
        "rejects": rejects,
        "heldout": heldout,
    }
    write_json_atomic(_marker_path(out, source.name, chunk), marker)
    return marker


# ---------------------------------------------------------------- driver


def _marker_path(out: Path, source: str, chunk: int) -> Path:
    return out / WORK_DIR / f"{source}-{chunk:05d}.json"


def _chunks(source: SourceConfig, size: int) -> Iterator[tuple[int, list[RawRecord]]]:
    records: list[RawRecord] = []
    chunk = 0
    records_read = read_source(Path(source.path), source.format, source.options)
    for rec in itertools.islice(records_read, source.limit):
        records.append(rec)
        if len(records) == size:
            yield chunk, records
            chunk, records = chunk + 1, []
    if records:
        yield chunk, records


def _source_hashes(config: BuildConfig) -> dict[str, str]:
    """sha256 of every source file: a resumed build must read exactly the bytes it started on."""
    hashes = {}
    for source in config.sources:
        path = Path(source.path)
        if not path.is_file():
            raise LogosError(
                f"source file {path} not found; fix: correct 'path' in the data config"
            )
        hashes[source.name] = sha256_file(path)
    return hashes


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _check_previous(out: Path, stamp: dict[str, Any]) -> bool:
    """True if ``out`` already holds this build, finished; errors if it holds another.

    An unfinished build whose source files changed since it started is discarded (its finished
    chunks hold the old records): the build starts over, and says so."""
    stamp_path = out / WORK_DIR / "build.json"
    if (out / MANIFEST).is_file():
        manifest = _read_json(out / MANIFEST) or {}
        if manifest.get("config") != stamp["config"]:
            raise LogosError(
                f"{out} already holds a corpus built from another config; "
                "fix: choose another --out or delete that folder"
            )
        built_from = manifest.get("source_sha256")
        if built_from is not None and built_from != stamp["source_sha256"]:
            changed = sorted(
                k for k in stamp["source_sha256"] if built_from.get(k) != stamp["source_sha256"][k]
            )
            raise LogosError(
                f"{out} was built from other contents of the source(s) {changed}; "
                "fix: delete that folder to rebuild, or choose another --out"
            )
        return True
    previous = _read_json(stamp_path) if stamp_path.is_file() else None
    if previous is not None and previous.get("config") != stamp["config"]:
        raise LogosError(
            f"{out} holds an unfinished build of another config; "
            "fix: rerun with the same config to resume it, or delete the folder"
        )
    if stamp_path.exists() and previous != stamp:
        old = (previous or {}).get("source_sha256") or {}
        changed = sorted(
            k for k in stamp["source_sha256"] if old.get(k) != stamp["source_sha256"][k]
        )
        print(
            f"{out}: the source(s) {changed or 'files'} changed since this build started; "
            "starting over (the finished chunks hold the old records)",
            file=sys.stderr,
        )
        _discard_unfinished(out)
    return False


def _discard_unfinished(out: Path) -> None:
    """Remove an unfinished build's chunks (markers and shards); the tokenizer folder is kept."""
    shutil.rmtree(out / WORK_DIR, ignore_errors=True)
    for split in SPLITS:
        shutil.rmtree(out / split, ignore_errors=True)


def _run_chunks(
    config: BuildConfig, out: Path, tokenizer_dir: Path, workers: int
) -> dict[str, int]:
    """Process every unfinished chunk; returns the number of chunks per source."""
    from tqdm import tqdm

    counts: dict[str, int] = {}
    progress = tqdm(desc=f"building {config.name}", unit=" records", file=sys.stderr)
    skipped = 0
    if workers <= 1:
        _init_worker(str(tokenizer_dir))
        pool = None
    else:
        pool = concurrent.futures.ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(str(tokenizer_dir), os.getpid()),
        )
    pending: set[concurrent.futures.Future] = set()

    def drain(limit: int) -> None:
        nonlocal pending
        while len(pending) > limit:
            done, pending = concurrent.futures.wait(pending, return_when="FIRST_COMPLETED")
            for future in done:
                progress.update(future.result()["records"])

    try:
        for source in config.sources:
            counts[source.name] = 0
            for chunk, records in _chunks(source, config.records_per_shard):
                counts[source.name] = chunk + 1
                if _marker_path(out, source.name, chunk).is_file():
                    skipped += 1
                    progress.update(len(records))
                elif pool is None:
                    _process_chunk(source, chunk, records, config, str(out))
                    progress.update(len(records))
                else:
                    pending.add(
                        pool.submit(_process_chunk, source, chunk, records, config, str(out))
                    )
                    drain(2 * workers)
        drain(0)
    except concurrent.futures.process.BrokenProcessPool:
        raise LogosError(
            f"a worker process of the {config.name} build died (killed, or out of memory); "
            "finished chunks are kept: rerun the same command to resume"
        ) from None
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        progress.close()
    if skipped:
        print(f"resumed: {skipped} finished chunks were kept, not redone", file=sys.stderr)
    return counts


def _finish(
    config: BuildConfig,
    out: Path,
    tokenizer_dir: Path,
    chunks: dict[str, int],
    source_sha256: dict[str, str],
) -> dict:
    from logos_jax.tokenizer import LogosTokenizer

    tokenizer = LogosTokenizer.load(tokenizer_dir)
    markers = [
        json.loads(_marker_path(out, s.name, k).read_text())
        for s in config.sources
        for k in range(chunks[s.name])
    ]
    shards = [shard for m in markers for shard in m["shards"]]
    stats = {
        m: {"rejects": 0, **{s: {"documents": 0, "tokens": 0} for s in SPLITS}} for m in MODALITIES
    }
    for shard in shards:
        stats[shard["modality"]][shard["split"]]["documents"] += shard["documents"]
        stats[shard["modality"]][shard["split"]]["tokens"] += shard["tokens"]
    reasons: Counter[str] = Counter()
    with atomic_open(out / REJECTS) as f:
        for m in markers:
            for row in m["rejects"]:
                stats[row["modality"]]["rejects"] += 1
                reasons[row["reason"].split(":")[0]] += 1
                f.write(json.dumps(row, sort_keys=True) + "\n")
    heldout: dict[str, list[dict]] = defaultdict(list)
    for m in markers:
        for layout, row in m["heldout"]:
            heldout[layout].append(row)
    (out / HELDOUT_DIR).mkdir(exist_ok=True)
    for layout, rows in heldout.items():
        path = out / HELDOUT_DIR / f"{layout}.jsonl"
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    tokenizer_info = {
        "spec": config.tokenizer,
        "dir": TOKENIZER_DIR,
        "hash": tokenizer.hash(),
        "vocab_size": tokenizer.vocab_size,
        "bos_id": tokenizer.bos_id,
        "eos_id": tokenizer.eos_ids[0] if tokenizer.eos_ids else None,
        "pad_id": tokenizer.pad_id,
    }
    fingerprint = hashlib.sha256(
        json.dumps([tokenizer_info["hash"], [s["sha256"] for s in shards]]).encode()
    ).hexdigest()[:16]
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": config.name,
        "config": {k: v for k, v in config.raw.items() if k != "workers"},
        "fingerprint": fingerprint,
        "document": "BOS + ids + first EOS id (if the tokenizer has one); little-endian uint32 per token",
        "tokenizer": tokenizer_info,
        "modalities": stats,
        "sources": {s.name: {"records": 0, "chunks": chunks[s.name]} for s in config.sources},
        "reject_reasons": dict(sorted(reasons.items())),
        "shards": shards,
        "heldout": {
            k: {"path": f"{HELDOUT_DIR}/{k}.jsonl", "rows": len(v)}
            for k, v in sorted(heldout.items())
        },
        "rejects_file": REJECTS,
        "source_sha256": source_sha256,
    }
    for m in markers:
        manifest["sources"][m["source"]]["records"] += m["records"]
    write_json_atomic(out / MANIFEST, manifest)
    shutil.rmtree(out / WORK_DIR)
    return manifest


def build_corpus(config: BuildConfig, out_dir: str | Path, *, workers: int | None = None) -> dict:
    """Build (or resume building) ``config`` into ``out_dir``; returns the manifest."""
    out = make_dir(out_dir)
    # What the output depends on: the config without ``workers`` (any worker count gives the same bytes).
    stamp = {
        "config": {k: v for k, v in config.raw.items() if k != "workers"},
        "source_sha256": _source_hashes(config),
    }
    if _check_previous(out, stamp):
        print(f"{out}: already built from this config; delete it to rebuild", file=sys.stderr)
        return json.loads((out / MANIFEST).read_text())
    if (out / WORK_DIR).is_dir():  # a killed run's half-written shards: redone below, not kept
        # Whatever their process id: atomic_path only deletes temporaries of dead processes, and a
        # restarted container's build often runs under the killed one's pid.
        remove_temp_files(out)
    (out / WORK_DIR).mkdir(exist_ok=True)
    write_json_atomic(out / WORK_DIR / "build.json", stamp)
    tokenizer_dir = _prepare_tokenizer(config.tokenizer, out)
    chunks = _run_chunks(config, out, tokenizer_dir, config.workers if workers is None else workers)
    return _finish(config, out, tokenizer_dir, chunks, stamp["source_sha256"])

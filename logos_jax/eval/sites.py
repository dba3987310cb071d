"""Binding-site search scored on holo structures: DCA / DCC success of the top-n and top-(n+2) pockets.

The rule, for each input (a row id naming a structure file, see ``structures.find_structure``):

1. Each valid sample's pocket residues (0-based indices into the prompt's protein) are mapped onto the
   structure (``Structure.residues_for``). An invalid sample predicts nothing.
2. Within a sample, residues are clustered by single linkage on their Cα at ``link`` Å (default 10:
   the residues lining one ligand in 1hpv and 1hvr form one cluster at 10 Å, three at 8 Å): each
   cluster is one pocket of that sample (a sample may name several sites).
3. The pockets of all samples of the input are merged by leader clustering on their centres: taken
   from the best sample down (``sum_logprob``, else minus perplexity), a pocket joins the group whose
   first pocket's centre is nearest and within ``merge`` Å (default 8), else starts a new group (no
   chaining: a group spans at most 2 × ``merge``). Each group is one predicted pocket. Its centre is
   the mean of its residues' heavy-atom centroids, each residue weighted by how many of the group's
   pockets contain it.
4. Predicted pockets are ranked by how many distinct samples predict them, then by the best log-prob
   (``sum_logprob``, else minus perplexity) among those samples.
5. With n ligand sites (``structures.find_ligands``: P2Rank's rules, or the ligand the row names;
   only those with a heavy atom within ``contact`` Å of the prompt's residues, so a ligand bound to
   another chain of the file is not asked of a one-chain prompt), a site is found at top-k when one
   of the k best pockets has its centre within ``threshold`` Å (4) of any ligand heavy atom (DCA) /
   of the ligand's centre (DCC). The success rates are found sites / all sites, for k = n and
   k = n + 2, over all scored inputs (P2Rank's ligand-centric counting).

Residue precision / recall / F1 / MCC stay as secondary figures: truth = the prompt's residues with a
heavy atom within ``contact`` Å (4, P2Rank's ligand–protein contact distance) of a site ligand; each
sample is scored, averaged over the input's samples, then over inputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from logos_jax.errors import LogosError
from logos_jax.eval.metrics import _group, _score, _validity, residue_scores
from logos_jax.eval.structures import (
    Ligand,
    Residue,
    contact_residues,
    find_ligands,
    find_structure,
    load_structure,
    single_linkage,
)
from logos_jax.grammar import tags
from logos_jax.grammar.structure import chain_sequences

LINK_CUTOFF = 10.0
MERGE_CUTOFF = 8.0
SUCCESS_THRESHOLD = 4.0
CONTACT_CUTOFF = 4.0
EXTRA_POCKETS = 2


@dataclasses.dataclass(frozen=True)
class Pocket:
    """A predicted pocket: its centre, the samples predicting it, their best score, its residues."""

    centre: np.ndarray
    support: int
    best_score: float
    residues: tuple[int, ...]


def sample_pockets(indices: Iterable[int], residues: list[Residue], link: float) -> list[list[int]]:
    """One sample's residue indices clustered into pockets (single linkage on Cα at ``link`` Å)."""
    chosen = sorted(set(indices))
    if not chosen:
        return []
    groups = single_linkage(np.array([residues[i].ca for i in chosen]), link)
    return [[chosen[j] for j in group] for group in groups]


def _weighted_centre(counts: dict[int, int], residues: list[Residue]) -> np.ndarray:
    weights = np.array(list(counts.values()), dtype=float)
    centroids = np.array([residues[i].atoms.mean(axis=0) for i in counts])
    return (weights[:, None] * centroids).sum(axis=0) / weights.sum()


def leader_clusters(
    centres: list[np.ndarray], scores: list[float], cutoff: float
) -> list[list[int]]:
    """Indices of ``centres`` grouped by leader clustering, best ``scores`` first (ties: input
    order): each joins the group whose leader is nearest and within ``cutoff``, else leads a new one."""
    order = sorted(range(len(centres)), key=lambda i: -scores[i])
    leaders: list[int] = []
    groups: list[list[int]] = []
    for i in order:
        dist = [float(np.linalg.norm(centres[i] - centres[lead])) for lead in leaders]
        if dist and min(dist) <= cutoff:
            groups[int(np.argmin(dist))].append(i)
        else:
            leaders.append(i)
            groups.append([i])
    return groups


def rank_pockets(
    samples: list[tuple[list[int], float]],
    residues: list[Residue],
    *,
    link: float = LINK_CUTOFF,
    merge: float = MERGE_CUTOFF,
) -> list[Pocket]:
    """Predicted pockets of one input, best first. ``samples``: (residue indices, score) per sample."""
    pockets = []  # (sample number, residue indices)
    for number, (indices, _) in enumerate(samples):
        pockets += [(number, group) for group in sample_pockets(indices, residues, link)]
    if not pockets:
        return []
    centres = [_weighted_centre(dict.fromkeys(g, 1), residues) for _, g in pockets]
    ranked = []
    for members in leader_clusters(centres, [samples[n][1] for n, _ in pockets], merge):
        counts: dict[int, int] = {}
        for m in members:
            for i in pockets[m][1]:
                counts[i] = counts.get(i, 0) + 1
        numbers = {pockets[m][0] for m in members}
        ranked.append(
            Pocket(
                _weighted_centre(counts, residues),
                len(numbers),
                max(samples[n][1] for n in numbers),
                tuple(sorted(counts)),
            )
        )
    return sorted(ranked, key=lambda p: (-p.support, -p.best_score))


def dca(centre: np.ndarray, ligand: Ligand) -> float:
    """Distance from a pocket centre to the closest ligand heavy atom (Å)."""
    return float(np.linalg.norm(ligand.coords - centre, axis=-1).min())


def dcc(centre: np.ndarray, ligand: Ligand) -> float:
    """Distance from a pocket centre to the ligand's centre (Å)."""
    return float(np.linalg.norm(ligand.centre - centre))


def found_sites(
    pockets: list[Pocket], ligands: list[Ligand], k: int, threshold: float = SUCCESS_THRESHOLD
) -> dict[str, int]:
    """How many ``ligands`` one of the ``k`` best ``pockets`` finds, by DCA and by DCC."""
    top = pockets[:k]
    return {
        "dca": sum(any(dca(p.centre, lig) <= threshold for p in top) for lig in ligands),
        "dcc": sum(any(dcc(p.centre, lig) <= threshold for p in top) for lig in ligands),
    }


def prompt_protein(row: dict[str, Any]) -> str | None:
    """The protein sequence of a pocket-search prompt (``prompt``, else the start of ``text``)."""
    source = row.get("prompt") or row.get("text") or ""
    start = source.find(tags.PROTEIN_S)
    end = source.find(tags.PROTEIN_E, start + 1)
    if start < 0 or end < 0:
        return None
    return source[start + len(tags.PROTEIN_S) : end]


@dataclasses.dataclass(frozen=True)
class InputSites:
    """What one input contributes: ligand count, sites found at top-n / top-(n+extra), residue scores."""

    ligands: int
    found_n: dict[str, int]
    found_n_extra: dict[str, int]
    residue: dict[str, float]
    pockets: int = 0
    top_n_dca: tuple[float | None, ...] = ()  # per ligand: the closest top-n centre (Å)


def score_input(
    samples: list[tuple[list[int], float]],
    residues: list[Residue],
    ligands: list[Ligand],
    *,
    link: float = LINK_CUTOFF,
    merge: float = MERGE_CUTOFF,
    threshold: float = SUCCESS_THRESHOLD,
    contact: float = CONTACT_CUTOFF,
) -> InputSites:
    """Scores of one input's samples against its structure's residues and ligand sites."""
    pockets = rank_pockets(samples, residues, link=link, merge=merge)
    n = len(ligands)
    truth = contact_residues(residues, ligands, contact)
    scores = [residue_scores(set(indices), truth, len(residues)) for indices, _ in samples]
    residue = {
        name: sum(s[name] for s in scores) / len(scores) if scores else 0.0
        for name in ("precision", "recall", "f1", "mcc")
    }
    return InputSites(
        n,
        found_sites(pockets, ligands, n, threshold),
        found_sites(pockets, ligands, n + EXTRA_POCKETS, threshold),
        residue,
        len(pockets),
        tuple(min((dca(p.centre, lig) for p in pockets[:n]), default=None) for lig in ligands),
    )


def input_sites(
    structures: Path, row_id: str, row: dict[str, Any], ligand: str | None
) -> tuple[list[Residue], list[Ligand]]:
    """The prompt's residues in the row's structure and the ligand sites they line (``LogosError``
    when the structure is missing, the protein matches no chain, or no site touches it)."""
    structure = load_structure(find_structure(structures, row_id))
    sequence = prompt_protein(row)
    if sequence is None:
        raise LogosError("the row has no <ProteinS>…<ProteinE> prompt")
    residues = structure.residues_for(sequence, chain_sequences(structure.path))
    ligands = [
        site
        for site in find_ligands(structure, str(ligand) if ligand else None)
        if contact_residues(residues, [site], CONTACT_CUTOFF)
    ]
    if not ligands:
        raise LogosError("no ligand site touches the prompt's protein")
    return residues, ligands


def site_metrics(
    rows: Iterable[dict[str, Any]],
    structures: str | Path,
    *,
    link: float = LINK_CUTOFF,
    merge: float = MERGE_CUTOFF,
    threshold: float = SUCCESS_THRESHOLD,
    inputs: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Structure-level binding-site figures of pocket-search output rows (see the module docstring).

    ``inputs``: ``id -> input row``, where a ``ligand`` residue name is looked up when the output
    rows do not carry one (``--truth`` with the sampling input file).

    Inputs whose structure is missing, whose protein matches no chain, or without a ligand site are
    skipped; ``skipped`` lists them with the reason.
    """
    structures = Path(structures)
    if not structures.is_dir():
        raise LogosError(f"{structures}: structures directory not found")
    groups = _group(rows)
    answers, out = _validity(groups, "pocket-search")
    samples: dict[str, list[tuple[list[int], float]]] = {}
    for row_id, row, objects, _, valid in answers:
        indices = list(objects["pocket"]) if valid else []
        samples.setdefault(row_id, []).append((indices, _score(row)))

    skipped: list[dict[str, str]] = []
    totals = {"ligands": 0, "dca_n": 0, "dcc_n": 0, "dca_n2": 0, "dcc_n2": 0}
    residue_totals = dict.fromkeys(("precision", "recall", "f1", "mcc"), 0.0)
    scored = 0
    per_input: list[dict[str, Any]] = []
    for row_id, rows_ in groups.items():
        try:
            ligand = rows_[0].get("ligand") or (inputs or {}).get(row_id, {}).get("ligand")
            residues, ligands = input_sites(structures, row_id, rows_[0], ligand)
        except LogosError as err:
            skipped.append({"id": row_id, "reason": str(err)})
            continue
        result = score_input(
            samples[row_id], residues, ligands, link=link, merge=merge, threshold=threshold
        )
        scored += 1
        totals["ligands"] += result.ligands
        for key in ("dca", "dcc"):
            totals[f"{key}_n"] += result.found_n[key]
            totals[f"{key}_n2"] += result.found_n_extra[key]
        for name, value in result.residue.items():
            residue_totals[name] += value
        per_input.append(
            {
                "id": row_id,
                "ligands": [lig.name for lig in ligands],
                "pockets": result.pockets,
                "top_n_dca": [None if d is None else round(d, 2) for d in result.top_n_dca],
            }
        )

    sites = totals["ligands"]
    out.update(scored_inputs=scored, ligand_sites=sites)
    for key in ("dca", "dcc"):
        out[f"{key}_top_n_count"] = totals[f"{key}_n"]
        out[f"{key}_top_n"] = totals[f"{key}_n"] / sites if sites else 0.0
        out[f"{key}_top_n+2_count"] = totals[f"{key}_n2"]
        out[f"{key}_top_n+2"] = totals[f"{key}_n2"] / sites if sites else 0.0
    for name, value in residue_totals.items():
        out[f"residue_{name}"] = value / scored if scored else 0.0
    out.update(
        link_cutoff=link,
        merge_cutoff=merge,
        success_threshold=threshold,
        skipped_inputs=len(skipped),
        skipped=skipped,
        per_input=per_input,
    )
    return out

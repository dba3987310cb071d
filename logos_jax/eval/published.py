"""Published figures to put our numbers beside, and the Markdown table ``logos eval`` writes.

Only figures with a source are listed; a cell left ``—`` was not published there (LOGOS's technical
report abstract gives the 1B/3B figures only for retrosynthesis). Sources:

* LOGOS: technical report, arXiv 2606.16905 (abstract) and the release's reported results.
* P2Rank: Krivák & Hoksza, J. Cheminform. 10:39 (2018), DCA success top-n on COACH420 / HOLO4K.
* LocalRetro: Chen & Jung, JACS Au 1:1612 (2021), USPTO-50K top-1 with the reaction class unknown
  (LocalRetro's own test file; ``logos_jax/assets/mini_corpus/reactions`` bundles 1,500 of its
  reactions).
"""

from __future__ import annotations

import dataclasses
from typing import Any

LOGOS_SOURCE = "LOGOS technical report (arXiv 2606.16905)"
TABLE_TITLE = "# `logos eval --task"  # how every table starts (eval refuses to replace other files)


@dataclasses.dataclass(frozen=True)
class Published:
    """One published figure row: our summary key, how to show it, LOGOS's and a baseline's values."""

    task: str
    key: str
    label: str
    percent: bool
    logos: dict[str, str]  # size -> shown value ("1B", "3B", "8B")
    baseline: str  # "name value (dataset)" or "—"
    protocol: str  # how our protocol differs from the published one


PUBLISHED: tuple[Published, ...] = (
    Published(
        "pocket-search",
        "dca_top_n",
        "binding site, DCA success top-n",
        True,
        {"8B": "65.2 (COACH420) / 58.5 (HOLO4K)"},
        "P2Rank 72.0 (COACH420) / 68.6 (HOLO4K)",
        "our structures and pocket clustering (single linkage on Cα, eval.sites), not the full "
        "COACH420 / HOLO4K sets; LOGOS's clustering and ranking rules were not published",
    ),
    Published(
        "pocket-search",
        "dca_top_n+2",
        "binding site, DCA success top-(n+2)",
        True,
        {},
        "—",
        "as top-n",
    ),
    Published(
        "retro",
        "top_1",
        "retrosynthesis top-1 exact match",
        True,
        {"1B": "64.0", "3B": "71.5", "8B": "74.8"},
        "LocalRetro 53.4 (USPTO-50K, class unknown)",
        "LOGOS's test split and canonicalisation were not published; ours: canonical reactant set "
        "with stereo, the bundled USPTO-50K test split",
    ),
    Published(
        "ligand",
        "vina_mean",
        "pocket ligand design, mean −Vina (kcal/mol)",
        False,
        {"8B": "7.76"},
        "—",
        "LOGOS's targets, Vina version, box and exhaustiveness were not published; ours: "
        "eval.docking (Vina 1.2, meeko preparation, fixed seed)",
    ),
    Published(
        "material",
        "vnu",
        "MOF generation, VNU",
        True,
        {"8B": "39.0"},
        "—",
        "LOGOS's training set for novelty and its validity check were not published; ours: "
        "RDKit-valid linkers, novelty against --reference",
    ),
)


def _shown(value: Any, percent: bool) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{100 * value:.1f}" if percent else f"{value:.2f}"
    return str(value)


def markdown_table(summary: dict[str, Any]) -> str:
    """Markdown: our figures beside LOGOS 1B/3B/8B and the strongest published baseline, then every
    other figure of the summary."""
    task = summary.get("task", "?")
    lines = [
        f"{TABLE_TITLE} {task}`",
        "",
        f"Inputs: {summary.get('inputs', '—')}, samples: {summary.get('samples', '—')}. "
        f"Percentages for rates; LOGOS figures from the {LOGOS_SOURCE}.",
        "",
    ]
    rows = [p for p in PUBLISHED if p.task == task]
    if rows:
        lines += [
            "| metric | ours | LOGOS-1B | LOGOS-3B | LOGOS-8B | strongest baseline | protocol differs |",
            "|---|---|---|---|---|---|---|",
        ]
        for p in rows:
            cells = [
                p.label,
                _shown(summary.get(p.key), p.percent),
                *(p.logos.get(size, "—") for size in ("1B", "3B", "8B")),
                p.baseline,
                p.protocol,
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["| figure | value |", "|---|---|"]
    for key, value in summary.items():
        if key == "task" or isinstance(value, list | dict):
            continue
        lines.append(f"| {key} | {_shown(value, False) if not isinstance(value, str) else value} |")
    return "\n".join(lines) + "\n"

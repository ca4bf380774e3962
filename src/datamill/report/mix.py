"""The mixture in the report: each part's target share against its share of the final rows.

:func:`mix_report` reads ``run.json``'s ``mix`` (``pipeline.mixture``) into the report's ``mix``
entry: ``by``, ``tolerance``, ``within_tolerance``, ``short`` (part → rows missing) and ``rows``,
one ``{part, target, actual, count}`` per part in the targets' order. :func:`card_section` is its
Markdown for the dataset card, :func:`headline` the line above the table.

Deliberately not here: reaching the targets (``pipeline.mixture``).
"""

from __future__ import annotations

from typing import Any


def mix_report(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The report's ``mix`` entry from a run summary, or ``None`` for a run without a mix."""
    mix = summary.get("mix")
    if not isinstance(mix, dict):
        return None
    rows = [
        {
            "part": part,
            "target": target,
            "actual": (mix.get("actual") or {}).get(part, 0.0),
            "count": (mix.get("rows") or {}).get(part, 0),
        }
        for part, target in (mix.get("targets") or {}).items()
    ]
    return {
        "by": mix.get("by"),
        "tolerance": mix.get("tolerance"),
        "within_tolerance": mix.get("within_tolerance"),
        "short": mix.get("short") or {},
        "rows": rows,
    }


def headline(entry: dict[str, Any]) -> str:
    """``mix by task: within tolerance 0.02 of the targets`` (or which parts fell short)."""
    state = "within" if entry.get("within_tolerance") else "not within"
    short = entry.get("short") or {}
    fell = (
        "; short: " + ", ".join(f"{p} ({n} rows missing)" for p, n in short.items())
        if short
        else ""
    )
    return f"mix by {entry.get('by')}: {state} tolerance {entry.get('tolerance'):g} of the targets{fell}"


def card_section(summary: dict[str, Any]) -> str:
    """The card's "Mixture" section (empty text for a run without a mix)."""
    entry = mix_report(summary)
    if entry is None:
        return ""
    lines = ["## Mixture", "", f"- {headline(entry)}", "", "| part | target | actual | count |"]
    lines.append("|---|---|---|---|")
    lines += [
        f"| {r['part']} | {r['target']:.2f} | {r['actual']:.2f} | {r['count']} |"
        for r in entry["rows"]
    ]
    return "\n".join(lines) + "\n"


__all__ = ["card_section", "headline", "mix_report"]

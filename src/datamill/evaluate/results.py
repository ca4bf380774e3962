"""``datamill eval``'s files and words: ``eval.json``, ``eval.png``, the dataset card's
"Evaluation" section and the side-by-side tables.

The card section sits between ``<!-- datamill:eval -->`` and ``<!-- /datamill:eval -->`` in the
folder's ``README.md``: a new evaluation replaces the old one; a card without one gets it appended.
``eval.json`` records ``data_sha256``, the digest of the dataset folder's data files: a re-run of
the recipe keeps the evaluation when its data is identical, and removes ``eval.json``/``eval.png``
and the section when the data changed (``datamill.evalfiles``).

Deliberately not here: computing the numbers (``evaluate.run``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from ..evalfiles import CARD_END as _END
from ..evalfiles import CARD_START as _START
from ..evalfiles import EVAL_FILE, PLOT_FILE, data_digest


def pct(x: float | None) -> str:
    """A rate as a percentage with one decimal, "–" for none."""
    return "–" if x is None or x != x else f"{100 * x:.1f}%"


def interval(d: dict[str, Any], key: str) -> str:
    """``"41.7% [33.3%, 50.0%]"`` (or signed points for a difference)."""
    if key == "diff":
        v, lo, hi = (100 * d[k] for k in ("diff", "low", "high"))
        return f"{v:+.1f} pts [{lo:+.1f}, {hi:+.1f}]"
    return f"{pct(d['rate'])} [{pct(d['low'])}, {pct(d['high'])}]"


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """Rows of the side-by-side table: model, rows, train time, pass rate per kind (with a 95% CI),
    difference to the base (95% paired bootstrap CI). With one held-out kind only, its row would
    repeat ``all``: the table shows ``all`` alone."""
    out = []
    for m in result.get("models", []):
        t = m.get("training") or {}
        kinds = list(m["pass"])
        if len(kinds) == 2 and "all" in kinds:
            kinds = ["all"]
        for kind in kinds:
            p = m["pass"][kind]
            vs = (m.get("vs_base") or {}).get(kind)
            out.append(
                [
                    m["name"],
                    f"{t['method']} {t['rows']} rows" if t else "–",
                    f"{t['seconds']:.0f} s" if t else "–",
                    f"{kind} (n={p['n']})",
                    interval(p, "rate"),
                    interval(vs, "diff") if vs else "–",
                ]
            )
    return out


HEADER = ["model", "trained on", "train time", "held-out", "pass rate [95% CI]", "vs base [95% CI]"]


def card_section(result: dict[str, Any] | None) -> str:
    """Markdown for the dataset card: what was trained, how long, the numbers, the plot."""
    if not result:
        return ""
    h = result.get("heldout", {})
    lines = [
        _START,
        "## Evaluation\n",
        f"`datamill eval`: base `{result.get('base')}` fine-tuned with LoRA on each dataset "
        f"({result.get('device')}), base and tuned models answer {h.get('scored')} held-out items "
        f"({', '.join(h.get('sets', []))}; greedy), each answer checked by datamill's verifiers. "
        f"Intervals: 95% bootstrap ({result.get('resamples')} resamples; differences paired by "
        f"item). {len(h.get('left_out', []))} held-out items overlapped training prompts and were "
        f"left out. Total {result.get('seconds')} s.",
        "",
    ]
    if result.get("plot"):
        lines += [f"![evaluation]({result['plot']})", ""]
    lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(result)]
    lines += ["", *judged_lines(result), _END, ""]
    return "\n".join(lines)


def judged_lines(result: dict[str, Any]) -> list[str]:
    """One line per tuned model judged against the base (``--judge``), then a blank line."""
    out = []
    for m in result.get("models", []):
        j = m.get("judged")
        if j:
            out.append(
                f"- {m['name']}: judged win rate vs base {interval(j, 'rate')} "
                f"(judge {j['judge']}, both orders; {j['ties']} of {j['n']} split)"
            )
    return [*out, ""] if out else []


def update_card(folder: Path, result: dict[str, Any]) -> None:
    """Put :func:`card_section` into ``folder/README.md`` (replacing an earlier one)."""
    card = folder / "README.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    section = card_section(result)
    if _START in text and _END in text:
        before, rest = text.split(_START, 1)
        after = rest.split(_END, 1)[1].lstrip("\n")
        text = before + section + after
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    write_atomic(card, text.encode())


def draw(result: dict[str, Any], path: Path) -> None:
    """A bar chart of each model's pass rate per held-out kind with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = result["models"]
    kinds = [k for k in models[0]["pass"] if k != "all"] or ["all"]
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(kinds) * len(models) / 2 + 2), 3.2))
    for j, m in enumerate(models):
        rates = [m["pass"][k]["rate"] for k in kinds]
        err = [
            [m["pass"][k]["rate"] - m["pass"][k]["low"] for k in kinds],
            [m["pass"][k]["high"] - m["pass"][k]["rate"] for k in kinds],
        ]
        xs = [i + (j - (len(models) - 1) / 2) * width for i in range(len(kinds))]
        ax.bar(xs, rates, width, yerr=err, capsize=3, label=m["name"])
    ax.set_xticks(range(len(kinds)), kinds)
    ax.set_ylabel("held-out pass rate")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(f"base {result.get('base')}\n95% bootstrap intervals", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(folder: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Write ``eval.json`` and ``eval.png`` (a failed plot is noted in ``errors``, never fatal)
    into ``folder``; return the result as written. In a dataset folder it records
    ``data_sha256``, the digest of the data it measured (:func:`~datamill.evalfiles.data_digest`)."""
    folder.mkdir(parents=True, exist_ok=True)
    result = dict(result)
    result.pop("data_sha256", None)
    digest = data_digest(folder)
    if digest is not None:
        result["data_sha256"] = digest
    try:
        tmp = folder / f".{PLOT_FILE}.tmp-{os.getpid()}.png"
        draw(result, tmp)
        os.replace(tmp, folder / PLOT_FILE)
        result["plot"] = PLOT_FILE
    except Exception as exc:
        result.setdefault("errors", {})["plot"] = f"{type(exc).__name__}: {exc}"
    write_atomic(
        folder / EVAL_FILE, (json.dumps(result, indent=2, ensure_ascii=False) + "\n").encode()
    )
    return result


def load(folder: Path) -> dict[str, Any] | None:
    """The ``eval.json`` of ``folder``, or ``None``."""
    try:
        data = json.loads((folder / EVAL_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


__all__ = [
    "EVAL_FILE",
    "HEADER",
    "PLOT_FILE",
    "card_section",
    "draw",
    "interval",
    "judged_lines",
    "load",
    "table_rows",
    "update_card",
    "write",
]

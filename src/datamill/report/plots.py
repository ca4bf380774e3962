"""One PNG that shows a dataset at a glance: rows through the steps, text lengths, the most
common first words of the instructions, and ratings (or pairwise similarity when there are none).

Drawn on a private matplotlib ``Figure`` (rendered by Agg; no pyplot, no display, no global
state). Deliberately not here: computing the numbers (``report.build``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def draw(report: dict[str, Any], path: Path) -> None:
    """Write the report's figure to ``path`` (PNG)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend, no display

    fig = Figure(figsize=(12, 8), dpi=90, layout="constrained")
    (ax_steps, ax_len), (ax_words, ax_last) = fig.subplots(2, 2)
    title = f"{report.get('name', 'dataset')}: {report.get('rows', 0)} rows"
    fig.suptitle(title, fontsize=13)

    steps = report.get("steps") or []
    if steps:
        names = [s["step"] for s in steps][::-1]
        ax_steps.barh(names, [s["rows_in"] for s in steps][::-1], color="#c7d7ea", label="rows in")
        ax_steps.barh(
            names, [s["rows_out"] for s in steps][::-1], color="#3b75af", label="rows out"
        )
        ax_steps.legend(loc="lower right", fontsize=8)
        ax_steps.set_title("rows through the steps")
    else:
        _empty(ax_steps, "no step counts (not a datamill run)")

    fields = report.get("fields") or {}
    drawn = False
    for name, f in fields.items():
        lengths = f.get("_lengths")
        if lengths:
            ax_len.hist(
                lengths,
                bins=30,
                alpha=0.6,
                label=f"{name} (median {(f.get('words') or {}).get('median', 0):g} words)",
            )
            drawn = True
    if drawn:
        ax_len.set_xlabel("words")
        ax_len.set_ylabel("rows")
        ax_len.legend(fontsize=8)
        ax_len.set_title("length distribution")
    else:
        _empty(ax_len, "no text columns found")

    head = (report.get("diversity") or {}).get("field")
    first = (fields.get(head) or {}).get("first_words") if head else None
    if first:
        labels = [w for w, _ in first][::-1]
        ax_words.barh(labels, [n for _, n in first][::-1], color="#59a14f")
        ax_words.set_title(f"most common first words of {head}")
        ax_words.set_xlabel("rows")
    else:
        _empty(ax_words, "no instructions")

    ratings = report.get("ratings") or {}
    emb = (fields.get(head) or {}).get("embedding_similarity") if head else None
    if ratings:
        for name, r in list(ratings.items())[:3]:
            hist = r.get("histogram") or {}
            ax_last.bar(list(hist), list(hist.values()), alpha=0.6, label=name)
        ax_last.legend(fontsize=8)
        ax_last.set_title("ratings")
        ax_last.tick_params(axis="x", labelrotation=45)
    elif emb and emb.get("values") is not None:
        ax_last.hist(emb["values"], bins=30, color="#e15759")
        ax_last.set_xlabel("cosine similarity")
        ax_last.set_title(f"pairwise similarity of {head} (mean {emb['mean']:.3f})")
    else:
        _empty(ax_last, "no ratings")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", color="grey")
    ax.set_axis_off()


__all__ = ["draw"]

"""The one line that tells how a top-up went (``target_rows``), the same in the CLI run's
output, ``datamill report OUT`` and the dataset card.

``info`` holds ``run.json``'s top-up keys (``pipeline.topup``): ``target_rows``, ``reached``,
``attempts``, ``max_attempts``, ``limit`` (the ``--limit`` that capped the tries), ``trimmed``
(rows that survived the steps but were cut: surplus rows, or with a mix the rows over a part's
count or of no targeted part) and ``yield`` (rows that survived the steps per source row tried,
before any cut). ``mixed``: the run had a ``mix``, so cut rows are named as the mix's cuts.

Deliberately not here: the mix's own line (``pipeline.mix.short_line``, ``report.mix``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..words import plural


def topup_text(info: Mapping[str, Any], mixed: bool = False) -> str | None:
    """``target of 10 rows reached after 12 source rows tried; yield 0.92 rows per source row;
    1 surplus row cut`` (with a mix: ``…; 3 rows cut by the mix``), or None without a target."""
    target = info.get("target_rows")
    if not target:
        return None
    reached = bool(info.get("reached"))
    line = (
        f"target of {plural(target, 'row')} {'reached' if reached else 'not reached'} after "
        f"{plural(info.get('attempts') or 0, 'source row')} tried"
    )
    if info.get("limit"):  # --limit N: at most N source rows, target or not
        line += f" (--limit {info['limit']} caps the source rows tried)"
    elif not reached:
        line += f" (the cap, max_attempts {info.get('max_attempts')})"
    rate = info.get("yield")
    if isinstance(rate, (int, float)) and not isinstance(rate, bool):
        line += f"; yield {rate:.2f} rows per source row"
    cut = info.get("trimmed")
    if cut:
        line += (
            f"; {plural(cut, 'row')} cut by the mix"
            if mixed
            else f"; {plural(cut, 'surplus row')} cut"
        )
    return line


__all__ = ["topup_text"]

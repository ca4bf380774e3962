"""A mixture with targets: the share of each part (a tag column's value) in the final dataset.

``mix: {by: category, targets: {qa: 0.5, code: 0.3, chat: 0.2}, tolerance: 0.02}`` with
``target_rows: N`` asks for N rows whose ``category`` shares are within ``tolerance`` of the
targets *after* every filter. :class:`Mix` holds and checks the setting (before any call): the
targets sum to 1 (±1e-6), each share is above 0, ``tolerance`` is in (0, 1), and N is large
enough that whole row counts can come within the tolerance at all. :meth:`Mix.counts` turns the
shares into row counts (largest remainder: they sum to N); :meth:`Mix.allot` says how many rows
of each part to keep from what survived — the target counts when every part has them, else a part
a few rows short (still within the tolerance) made up from parts with rows to spare, or ``None``
when N rows within the tolerance cannot be made yet; :func:`cut` keeps, per part, the first rows
in key order up to its count (deterministic) and leaves out rows of no targeted part.

The top-up that fills the parts is ``pipeline.mixture``; ``run.json`` gets the outcome under
``mix`` (:func:`outcome`), and :func:`short_line` is the one line a run that fell short prints.

Deliberately not here: generating rows (``pipeline.mixture``), the report's table
(``report.mix``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..rows import KeyedRow, Row
from ..words import plural

#: how far the targets' sum may be from 1
SUM_SLACK = 1e-6


def part_of(row: Row, by: str) -> str | None:
    """The part a row belongs to: its ``by`` value as text (``None`` when it has none)."""
    value = row.get(by)
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value).strip()


@dataclass(frozen=True)
class Mix:
    """``by``: the tag column; ``targets``: part → share (sums to 1); ``tolerance``: how far
    each final share may be from its target (a fraction, e.g. 0.02 = 2 points)."""

    by: str
    targets: dict[str, float]
    tolerance: float = 0.02

    @classmethod
    def parse(cls, value: Any) -> Mix:
        """A :class:`Mix` from a recipe's ``mix`` mapping; one ``ConfigError`` line when wrong."""
        if isinstance(value, Mix):
            return value
        if not isinstance(value, dict):
            raise ConfigError(
                "mix must be a mapping: {by: COLUMN, targets: {part: share, ...}, tolerance: 0.02}"
            )
        unknown = sorted(set(value) - {"by", "targets", "tolerance"})
        if unknown:
            raise ConfigError(f"mix: unknown field {unknown[0]!r}; allowed: by, targets, tolerance")
        by, targets = value.get("by"), value.get("targets")
        if not isinstance(by, str) or not by:
            raise ConfigError("mix.by must name the tag column, e.g. by: category")
        if not isinstance(targets, dict) or len(targets) < 2:
            raise ConfigError(
                "mix.targets must map at least two parts to shares, e.g. {a: 0.6, b: 0.4}"
            )
        shares: dict[str, float] = {}
        for part, share in targets.items():
            if isinstance(share, bool) or not isinstance(share, (int, float)) or not share > 0:
                raise ConfigError(
                    f"mix.targets.{part}: a share must be a number above 0, got {share!r}"
                )
            shares[str(part).strip()] = float(share)
        if len(shares) != len(targets):
            raise ConfigError("mix.targets names one part twice")
        total = sum(shares.values())
        if abs(total - 1) > SUM_SLACK:
            raise ConfigError(f"mix.targets must sum to 1, they sum to {total:g}")
        tolerance = value.get("tolerance", 0.02)
        if (
            isinstance(tolerance, bool)
            or not isinstance(tolerance, (int, float))
            or not 0 < tolerance < 1
        ):
            raise ConfigError(
                f"mix.tolerance must be a number between 0 and 1 (e.g. 0.02), got {tolerance!r}"
            )
        return cls(by, shares, float(tolerance))

    def counts(self, total: int) -> dict[str, int]:
        """Rows per part for ``total`` rows: floors, then the largest remainders get one more
        (ties to the earlier part), so the counts sum to ``total``."""
        exact = {p: s * total for p, s in self.targets.items()}
        counts = {p: math.floor(x) for p, x in exact.items()}
        left = total - sum(counts.values())
        order = sorted(self.targets, key=lambda p: -(exact[p] - counts[p]))
        for p in order[:left]:
            counts[p] += 1
        return counts

    def allot(self, have: dict[str, int], total: int) -> dict[str, int] | None:
        """Rows to keep per part out of ``have`` so that ``total`` rows hold every part within
        the tolerance, as close to :meth:`counts` as ``have`` allows (a part a few rows short is
        made up from parts with rows to spare, in the targets' order); ``None`` when ``have``
        cannot make ``total`` rows within the tolerance."""
        counts = self.counts(total)
        take = {p: min(have.get(p, 0), n) for p, n in counts.items()}
        for p, t in self.targets.items():
            if take[p] < math.ceil((t - self.tolerance) * total - 1e-9):
                return None  # short beyond the tolerance
        deficit = total - sum(take.values())
        for p, t in self.targets.items():
            if deficit <= 0:
                break
            ceiling = math.floor((t + self.tolerance) * total + 1e-9)
            extra = min(deficit, have.get(p, 0) - take[p], ceiling - take[p])
            if extra > 0:
                take[p] += extra
                deficit -= extra
        return take if deficit <= 0 else None

    def within(self, shares: dict[str, float]) -> bool:
        """Whether every part's share is within the tolerance of its target."""
        return all(
            abs(shares.get(p, 0.0) - t) <= self.tolerance + 1e-12 for p, t in self.targets.items()
        )

    def fits(self, total: int) -> bool:
        """Whether ``total`` whole rows can hold every part within the tolerance."""
        return self.within(shares(self.counts(total)))

    def fitting_totals(self, bound: int = 100_000) -> tuple[list[int], int | None]:
        """The totals that fit (:meth:`fits`): those below ``every_from`` one by one, and
        ``every_from``, from which every total fits (``None`` when not found within ``bound``).
        Past ``1 / tolerance`` rows every total fits (a count is less than a row off its share),
        so the scan stops there."""
        last = min(bound, math.ceil(1 / self.tolerance))
        ok = [n for n in range(1, last + 1) if self.fits(n)]
        if not ok or ok[-1] != last:
            return ok, None
        every_from, fitting = last, set(ok)
        while every_from - 1 in fitting:
            every_from -= 1
        return [n for n in ok if n < every_from], every_from

    def check_total(self, total: int) -> None:
        """``ConfigError`` when ``total`` rows cannot come within the tolerance in whole rows,
        naming the totals that fit (``use target_rows 10, 14, 16, 20, 22 or any from 24``)."""
        if self.fits(total):
            return
        single, every_from = self.fitting_totals()
        if every_from is None:
            hint = "raise mix.tolerance"
        else:
            if len(single) > 8:  # the ones nearest the total asked for
                single = sorted(sorted(single, key=lambda n: (abs(n - total), n))[:8])
            listed = ", ".join(str(n) for n in single)
            hint = f"use target_rows {listed + ' or ' if listed else ''}any from {every_from}"
        counts = ", ".join(f"{p} {n}" for p, n in self.counts(total).items())
        raise ConfigError(
            f"mix: {plural(total, 'row')} cannot meet the targets within tolerance "
            f"{self.tolerance:g} in whole rows ({counts}); {hint}"
        )


def shares(counts: dict[str, int]) -> dict[str, float]:
    """Each part's share of the counts' total (0 for all when the total is 0)."""
    total = sum(counts.values())
    return {p: (n / total if total else 0.0) for p, n in counts.items()}


def tally(rows: Iterable[KeyedRow], by: str) -> Counter[str | None]:
    """Rows per part (``None``: rows with no tag)."""
    return Counter(part_of(r, by) for _, r in rows)


def cut(
    rows: list[KeyedRow], mix: Mix, counts: dict[str, int]
) -> tuple[list[KeyedRow], dict[str, int], int]:
    """Per part the first ``counts[part]`` rows in key order; rows of no targeted part are
    left out. Returns (kept rows in key order, rows cut per part, rows of no targeted part)."""
    taken: Counter[str] = Counter()
    kept: list[KeyedRow] = []
    cut_rows: Counter[str] = Counter()
    stray = 0
    for kr in sorted(rows, key=lambda kr: kr[0]):
        part = part_of(kr[1], mix.by)
        if part not in counts:
            stray += 1
        elif taken[part] < counts[part]:
            taken[part] += 1
            kept.append(kr)
        else:
            cut_rows[part] += 1
    return kept, dict(cut_rows), stray


def outcome(
    mix: Mix,
    counts: dict[str, int],
    kept: list[KeyedRow],
    cut_rows: dict[str, int],
    stray: int,
    reached: bool = True,
) -> dict[str, Any]:
    """``run.json``'s ``mix``: targets, target counts, final rows and shares per part, whether
    the shares are within tolerance, the parts that fell short when the mix was not ``reached``
    (part → rows missing), the rows cut per part and the rows of no targeted part."""
    have = tally(kept, mix.by)
    rows = {p: have.get(p, 0) for p in mix.targets}
    actual = shares(rows)
    return {
        "by": mix.by,
        "tolerance": mix.tolerance,
        "targets": dict(mix.targets),
        "target_counts": counts,
        "rows": rows,
        "actual": {p: round(s, 4) for p, s in actual.items()},
        "within_tolerance": bool(sum(rows.values())) and mix.within(actual),
        "short": {}
        if reached
        else {p: counts[p] - rows[p] for p in mix.targets if rows[p] < counts[p]},
        "cut": cut_rows,
        "untargeted": stray,
    }


def short_line(summary: dict[str, Any]) -> str | None:
    """One line for a run whose mixture fell short (``None`` otherwise): which parts, how many
    rows each has of how many, and after how many source rows."""
    mix = summary.get("mix")
    if not isinstance(mix, dict) or not mix.get("short"):
        return None
    parts = ", ".join(
        f"{p} {mix['rows'][p]} of {plural(mix['target_counts'][p], 'row')} ({mix['actual'][p]:.2f}, target {mix['targets'][p]:.2f})"
        for p in mix["short"]
    )
    state = "within" if mix.get("within_tolerance") else "not within"
    fix = "raise max_attempts or loosen the filters that drop those parts"
    if summary.get("stopped_by"):
        why = f"the run was stopped: {summary['stopped_by']}"
    elif mix.get("too_rare"):
        why = (
            f"{mix.get('drawn')} sampler rows drawn, the most max_attempts "
            f"{summary.get('max_attempts')} allows, held too few of {', '.join(mix['too_rare'])}"
        )
        fix = "raise the sampler's weight of those parts or max_attempts"
    elif summary.get("limit"):  # --limit N: at most N source rows
        why = f"--limit {summary['limit']} caps the source rows tried"
        fix = "raise --limit (or drop it) to reach the targets"
    else:
        why = f"the cap, max_attempts {summary.get('max_attempts')}"
    return (
        f"mix by {mix['by']} fell short after {plural(summary.get('attempts'), 'source row')} tried "
        f"({why}): {parts}; the shares are {state} tolerance {mix['tolerance']:g}; {fix}"
    )


__all__ = ["Mix", "cut", "outcome", "part_of", "shares", "short_line", "tally"]

"""The rounds of a top-up (``pipeline.topup``, ``pipeline.mixture``): new source rows, the
survival rate so far, the attempt cap, and one round's run of the steps.

Deliberately not here: when to stop and how many rows to ask for next (the callers).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..io.sources import EmptyRows, Source
from ..rows import KeyedRow, Row
from ..steps.base import GlobalStep
from .runner import FailureLog, Runner
from .stats import Stats

if TYPE_CHECKING:
    from .graph import Pipeline

#: without ``max_attempts``, try at most this many times the target (or the source size)
DEFAULT_ATTEMPTS_FACTOR = 4


def attempts_cap(
    source_rows: int, target: int, max_attempts: int | None = None, limit: int | None = None
) -> int:
    """The most source rows a top-up to ``target`` rows tries: ``max_attempts`` when set, else
    the source's rows or ``DEFAULT_ATTEMPTS_FACTOR`` × ``target``, whichever is more; never
    more than the run's ``limit`` (``--limit N``: at most N source rows, target or not)."""
    cap = max_attempts or max(source_rows, DEFAULT_ATTEMPTS_FACTOR * target)
    return cap if limit is None else min(cap, limit)


def first_round(rows: list[Row], target: int, cap: int) -> int:
    """Source rows a top-up's first round tries: the ``target`` (every row may survive, and
    the rate is not known yet), fewer when the source has fewer rows or the ``cap`` is lower."""
    return max(0, min(len(rows), target, cap))


def more_rows(source: Source | None, rows: list[Row], start: int, count: int) -> list[KeyedRow]:
    """``count`` new source rows keyed ``start, start+1, …`` (new keys → new seeds)."""
    if isinstance(source, EmptyRows):
        return [((i,), source.row(i)) for i in range(start, start + count)]
    return [((i,), dict(rows[i % len(rows)])) for i in range(start, start + count)]


class Rounds:
    """The rounds of one top-up: each :meth:`run` streams a batch of new source rows through
    the steps before the first global step (keeping their survivors) and all survivors so far
    through the rest; :meth:`finish` puts the last round's tail counters into the run's."""

    def __init__(self, runner: Runner, pipeline: Pipeline) -> None:
        steps = pipeline.steps
        cut = next((i for i, s in enumerate(steps) if isinstance(s, GlobalStep)), len(steps))
        self.runner, self.head, self.tail = runner, steps[:cut], steps[cut:]
        self.kept: list[KeyedRow] = []
        self.tried = self.count = 0
        self._last_tail: tuple[Stats, FailureLog] | None = None

    async def run(self, batch: list[KeyedRow]) -> list[KeyedRow]:
        """The final rows after one more round, in key order."""
        runner = self.runner
        self.count += 1
        self.tried += len(batch)
        runner.stats.rows_total = self.tried
        self.kept.extend(await runner.run(self.head, batch) if self.head else batch)
        self.kept.sort(key=lambda kr: kr[0])
        if not self.tail:
            return list(self.kept)
        if self._last_tail is not None:  # an earlier round's calls were real: keep their usage
            runner.stats.add({"usage": self._last_tail[0].counters().get("usage", {})})
        scratch = Runner(
            runner.handles,
            Stats(),
            FailureLog(None),
            seed=runner.seed,
            executor=runner.executor,
            cache=runner.cache,
        )
        final = list(await scratch.run(self.tail, list(self.kept)))
        self._last_tail = (scratch.stats, scratch.failures)
        if scratch.stopped and not runner.stopped:
            runner.stopped = scratch.stopped
        return final

    def finish(self) -> None:
        if self._last_tail is not None:
            stats, failures = self._last_tail
            self.runner.stats.add(stats.counters())
            for record in failures.records:
                self.runner.failures.add(record)


def wanted_rows(missing: int, survivors: int, tried: int) -> int:
    """Source rows to try for ``missing`` more survivors at the rate ``survivors / tried`` so
    far, with a 20% margin unless every row has survived; none yet: as many as tried (double)."""
    if survivors <= 0:
        return max(1, tried)
    rate = survivors / tried
    return max(1, math.ceil(missing / rate * (1.0 if rate >= 1 else 1.2)))


def topup_info(
    target: int, survivors: int, rounds: Rounds, cap: int, limit: int | None = None
) -> dict[str, Any]:
    """The top-up keys of ``run.json`` (see the module docstring); ``limit``: the run's
    ``--limit`` when it is the cap (it made the cap lower than the recipe's)."""
    tried = rounds.tried
    info = {
        "target_rows": target,
        "reached": survivors >= target,
        "attempts": tried,
        "max_attempts": cap,
        "rounds": rounds.count,
        "yield": round(survivors / tried, 4) if tried else None,
    }
    if limit is not None:
        info["limit"] = limit
    return info


def limit_capped(
    source_rows: int, target: int, max_attempts: int | None, limit: int | None
) -> int | None:
    """``limit`` when it lowers the top-up's cap below the recipe's own, else None."""
    if limit is None or limit >= attempts_cap(source_rows, target, max_attempts):
        return None
    return limit


__all__ = [
    "DEFAULT_ATTEMPTS_FACTOR",
    "Rounds",
    "attempts_cap",
    "first_round",
    "limit_capped",
    "more_rows",
    "topup_info",
    "wanted_rows",
]

"""Running the steps over the source rows, topping up until enough rows survive.

A recipe (or ``Pipeline(target_rows=N, max_attempts=M)``) may ask for N rows that survive its
filters. :func:`run_rows` then works in rounds: it runs the source rows, counts the survivors
and, while fewer than N survive, feeds more source rows — sized by the survival rate so far —
until N survive or M source rows have been tried, and says which (``run.json``: ``target_rows``,
``reached``, ``attempts``, ``max_attempts``, ``rounds``, ``yield``: rows that survived every
step — with verifiers dropping failed rows, verified rows — per source row tried). More than N
survivors are cut to N. With rejection sampling (``samples: K`` then ``select_verified``) a
source row counts once however many samples it took.

New source rows continue the row index, so every new row has its own key and therefore its own
seed: ``num_rows`` sources get rows numbered on from the last one (a sampler source draws each
new row from its seed and index: ``io.samplers``); fixed sources (inline rows, a file) are
cycled through again under new keys, so each pass samples anew.

Nothing is paid for twice: the per-row steps before the first global step run only on the new
rows of a round (their results are kept); the global steps and what follows them see all rows
each round, and re-run cheaply through the call cache. Their counts and failure records in
``run.json``/``failures.jsonl`` are those of the last round (which saw every row).

Also here: the run's vector cache (``models.embeddings``) points at the run's call-cache file.

Deliberately not here: the streaming itself (``pipeline.runner``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..io.sources import EmptyRows, Source
from ..models.embeddings import embedding_cache
from ..rows import KeyedRow, Row
from ..steps.base import GlobalStep
from .runner import FailureLog, Runner
from .spool import RowSpool
from .stats import Stats

if TYPE_CHECKING:
    from .cache import CallCache
    from .graph import Pipeline

#: without ``max_attempts``, try at most this many times the target (or the source size)
DEFAULT_ATTEMPTS_FACTOR = 4


def attempts_cap(source_rows: int, target: int, max_attempts: int | None = None) -> int:
    """The most source rows a top-up to ``target`` rows tries: ``max_attempts`` when set, else
    the source's rows or ``DEFAULT_ATTEMPTS_FACTOR`` × ``target``, whichever is more."""
    return max_attempts or max(source_rows, DEFAULT_ATTEMPTS_FACTOR * target)


async def run_rows(
    runner: Runner,
    pipeline: Pipeline,
    rows: Iterable[Row],
    source: Source | None,
    cache: CallCache | None,
) -> tuple[RowSpool, dict[str, Any]]:
    """Run the pipeline's steps over ``rows``; return the surviving keyed rows, in key order,
    and what to add to ``run.json`` (the top-up outcome, when the pipeline has a target).

    Without a target ``rows`` is read once, as the rows stream (an iterator is fine). With one,
    the source rows, the survivors of the steps before the first global step and the final rows
    are held in memory (the rounds re-read them)."""
    with embedding_cache(cache.path if cache is not None else None):
        target = pipeline.target_rows
        if not target:
            return await runner.run(pipeline.steps, (((i,), r) for i, r in enumerate(rows))), {}
        final, info = await _topped_up(
            runner,
            pipeline,
            rows if isinstance(rows, list) else list(rows),
            source,
            target,
            pipeline.max_attempts,
        )
        return RowSpool.of(final, **runner.spool_options), info


def more_rows(source: Source | None, rows: list[Row], start: int, count: int) -> list[KeyedRow]:
    """``count`` new source rows keyed ``start, start+1, …`` (new keys → new seeds)."""
    if isinstance(source, EmptyRows):
        return [((i,), source.row(i)) for i in range(start, start + count)]
    return [((i,), dict(rows[i % len(rows)])) for i in range(start, start + count)]


async def _topped_up(
    runner: Runner,
    pipeline: Pipeline,
    rows: list[Row],
    source: Source | None,
    target: int,
    max_attempts: int | None,
) -> tuple[list[KeyedRow], dict[str, Any]]:
    steps = pipeline.steps
    cut = next((i for i, s in enumerate(steps) if isinstance(s, GlobalStep)), len(steps))
    head, tail = steps[:cut], steps[cut:]
    cap = attempts_cap(len(rows), target, max_attempts)
    batch: list[KeyedRow] = [((i,), r) for i, r in enumerate(rows[:cap])]
    kept: list[KeyedRow] = []
    tried, rounds = 0, 0
    final: list[KeyedRow] = []
    last_tail: tuple[Stats, FailureLog] | None = None
    while True:
        rounds += 1
        tried += len(batch)
        runner.stats.rows_total = tried
        kept.extend(await runner.run(head, batch) if head else batch)
        kept.sort(key=lambda kr: kr[0])
        if tail:
            if last_tail is not None:  # an earlier round's calls were real: keep their usage
                runner.stats.add({"usage": last_tail[0].counters().get("usage", {})})
            scratch = Runner(
                runner.handles,
                Stats(),
                FailureLog(None),
                seed=runner.seed,
                executor=runner.executor,
                cache=runner.cache,
            )
            final = list(await scratch.run(tail, list(kept)))
            last_tail = (scratch.stats, scratch.failures)
            if scratch.stopped and not runner.stopped:
                runner.stopped = scratch.stopped
        else:
            final = list(kept)
        if len(final) >= target or tried >= cap or runner.stopped:
            break
        rate = len(final) / tried
        # enough for the rate so far, with a 20% margin unless every row has survived; none yet: double
        wanted = (
            math.ceil((target - len(final)) / rate * (1.0 if rate >= 1 else 1.2))
            if rate > 0
            else tried
        )
        batch = more_rows(source, rows, tried, max(1, min(wanted, cap - tried)))
    if last_tail is not None:
        stats, failures = last_tail
        runner.stats.add(stats.counters())
        for record in failures.records:
            runner.failures.add(record)
    reached = len(final) >= target
    info = {
        "target_rows": target,
        "reached": reached,
        "attempts": tried,
        "max_attempts": cap,
        "rounds": rounds,
        "yield": round(len(final) / tried, 4) if tried else None,
    }
    if len(final) > target:
        info["trimmed"] = len(final) - target
        final = final[:target]
    return final, info


__all__ = ["DEFAULT_ATTEMPTS_FACTOR", "attempts_cap", "more_rows", "run_rows"]

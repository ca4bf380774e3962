"""Running the steps over the source rows, topping up until enough rows survive.

A recipe (or ``Pipeline(target_rows=N, max_attempts=M)``) may ask for N rows that survive its
filters. :func:`run_rows` then works in rounds: the first runs N source rows (the first N; all
of them when the source has fewer, never more than the cap), then, while fewer than N survive,
each round feeds more source rows — sized by the survival rate so far — until N survive or M
source rows have been tried, and says which (``run.json``: ``target_rows``,
``reached``, ``attempts``, ``max_attempts``, ``rounds``, ``yield``: rows that survived every
step — with verifiers dropping failed rows, verified rows — per source row tried, before any
cut). More than N survivors are cut to N (``trimmed``; with a mix, the mix's cuts). With rejection sampling (``samples: K`` then ``select_verified``) a
source row counts once however many samples it took.

New source rows continue the row index, so every new row has its own key and therefore its own
seed: ``num_rows`` sources get rows numbered on from the last one (a sampler source draws each
new row from its seed and index: ``io.samplers``); fixed sources (inline rows, a file) are
cycled through again under new keys, so each pass samples anew.

Nothing is paid for twice: the per-row steps before the first global step run only on the new
rows of a round (their results are kept); the global steps and what follows them see all rows
each round, and re-run cheaply through the call cache. Their counts and failure records in
``run.json``/``failures.jsonl`` are those of the last round (which saw every row).

With ``mix`` (``Pipeline(mix=...)``) the rounds fill each part of a tag column to its target
share instead (``pipeline.mixture``). The rounds themselves, the cap and the row feeding live in
``pipeline.rounds``.

Also here: the run's vector cache (``models.embeddings``) points at the run's call-cache file.

Deliberately not here: the streaming itself (``pipeline.runner``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..io.sources import Source
from ..models.embeddings import embedding_cache
from ..rows import KeyedRow, Row
from .mixture import mixed
from .rounds import (
    DEFAULT_ATTEMPTS_FACTOR,
    Rounds,
    attempts_cap,
    first_round,
    limit_capped,
    more_rows,
    topup_info,
    wanted_rows,
)
from .runner import Runner
from .spool import RowSpool

if TYPE_CHECKING:
    from .cache import CallCache
    from .graph import Pipeline


async def run_rows(
    runner: Runner,
    pipeline: Pipeline,
    rows: Iterable[Row],
    source: Source | None,
    cache: CallCache | None,
    limit: int | None = None,
) -> tuple[RowSpool, dict[str, Any]]:
    """Run the pipeline's steps over ``rows``; return the surviving keyed rows, in key order,
    and what to add to ``run.json`` (the top-up outcome, when the pipeline has a target).

    Without a target ``rows`` is read once, as the rows stream (an iterator is fine). With one,
    the source rows, the survivors of the steps before the first global step and the final rows
    are held in memory (the rounds re-read them). ``limit``: the run's ``--limit``, the most
    source rows a top-up tries (``run.json``'s ``limit`` says when it capped the target's)."""
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
            limit,
        )
        return RowSpool.of(final, **runner.spool_options), info


async def _topped_up(
    runner: Runner,
    pipeline: Pipeline,
    rows: list[Row],
    source: Source | None,
    target: int,
    max_attempts: int | None,
    limit: int | None = None,
) -> tuple[list[KeyedRow], dict[str, Any]]:
    if pipeline.mix is not None:
        return await mixed(runner, pipeline, rows, source, target, max_attempts, limit)
    rounds = Rounds(runner, pipeline)
    cap = attempts_cap(len(rows), target, max_attempts, limit)
    batch: list[KeyedRow] = [
        ((i,), r) for i, r in enumerate(rows[: first_round(rows, target, cap)])
    ]
    while True:
        final = await rounds.run(batch)
        tried = rounds.tried
        if len(final) >= target or tried >= cap or runner.stopped:
            break
        wanted = wanted_rows(target - len(final), len(final), tried)
        batch = more_rows(source, rows, tried, min(wanted, cap - tried))
    rounds.finish()
    capped = limit_capped(len(rows), target, max_attempts, limit)
    info = topup_info(target, len(final), rounds, cap, capped)
    if len(final) > target:
        info["trimmed"] = len(final) - target
        final = final[:target]
    return final, info


__all__ = ["DEFAULT_ATTEMPTS_FACTOR", "attempts_cap", "more_rows", "run_rows"]

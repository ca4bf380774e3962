"""Topping up a mixture: generate more of the parts the filters left short until every part of
the final, filtered dataset has its target count (``pipeline.mix``), or the attempt cap is hit.

Two ways to get more rows of one part, chosen by where the tag comes from:

- **from the source** (``mix.by`` is a source column no step writes: inline rows, a file, a
  sampler's rows): more source rows *of that part* are fed, each part sized by its own survival
  rate (its survivors per source row of it tried). A source that draws its rows (a sampler
  source, ``num_rows``) gives NEW rows of that part: its row stream is walked past the rows used,
  keeping the rows of the short parts (``pipeline.draws``; each keyed by its row index, so a
  rerun hits the cache; the draws are capped, and a part too rare to find within them falls
  short). A fixed source's rows of the part (inline rows, a file) are cycled through under new
  keys, so each pass samples anew. A targeted part the source cannot give (no row of it in a
  fixed source; a sampler value of weight 0 or not declared) is refused before any call.
- **from a step** (a ``classify`` step or any step that writes ``mix.by``): the part of a row is
  known only once it ran, so more source rows are fed, as many as the part furthest behind needs
  at its rate so far (survivors of it per source row tried).

The first round tries each part's target count of source rows when the tag comes from the
source (the first rows of each part, in index order; a drawing source walks its rows from 0),
else ``target_rows`` source rows, as ``pipeline.topup`` does; later rounds size themselves by the
survival rates seen. Either way the rounds stop once the survivors can make ``target_rows`` rows with every part
within the tolerance (``Mix.allot``: the target counts, or a part a few rows short made up from
parts with rows to spare), or at the cap (``max_attempts``, default as ``pipeline.topup``), or
when the run is stopped. Then over-filled parts are cut to their counts (first rows in key
order: deterministic) and rows of no targeted part are left out (``pipeline.mix.cut``); at the
cap each part keeps at most its target count. ``run.json`` gets the top-up keys plus ``mix``
(``pipeline.mix.outcome``, with ``tried``: source rows tried per part when the tag comes from the
source; with drawn rows also ``drawn`` and ``max_draws``, and ``too_rare`` when they ran out).

Deliberately not here: the setting and its checks (``pipeline.mix``), the report (``report.mix``).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from ..errors import did_you_mean
from ..io.sources import EmptyRows, RowsSource, Source
from ..rows import KeyedRow, Row
from .draws import MAX_DRAWS_FACTOR, Draws, PartError, check_parts
from .mix import Mix, cut, outcome, part_of, tally
from .rounds import (
    Rounds,
    attempts_cap,
    first_round,
    limit_capped,
    more_rows,
    topup_info,
    wanted_rows,
)
from .runner import Runner

if TYPE_CHECKING:
    from .graph import Pipeline


def source_pools(
    mix: Mix, pipeline: Pipeline, rows: list[Row], source: Source | None = None
) -> dict[str, list[Row]] | None:
    """The source rows of each targeted part when the tag comes from the source, else ``None``.
    ``ConfigError`` (before any call) when a targeted part has no source row — or, for a source
    that draws its rows (``EmptyRows``: more rows of a part can come), when its declared values
    can never give the part (``draws.check_parts``)."""
    if any(mix.by in s.produces() for s in pipeline.steps):
        return None
    if not rows or not all(mix.by in r for r in rows):
        return None
    pools: dict[str, list[Row]] = {p: [] for p in mix.targets}
    for r in rows:
        part = part_of(r, mix.by)
        if part in pools:
            pools[part].append(r)
    if isinstance(source, EmptyRows):
        check_parts(mix, source)
        return pools
    empty = [p for p, rs in pools.items() if not rs]
    if empty:
        seen = sorted({str(part_of(r, mix.by)) for r in rows})
        raise PartError(
            empty[0],
            f"mix: no source row has {mix.by} = {empty[0]!r}{did_you_mean(empty[0], seen)}, so "
            f"that part can never be filled; the source's {mix.by} values are: "
            f"{', '.join(seen[:10])}; fix mix.targets or the source",
        )
    return pools


def check_source(pipeline: Pipeline, source: Source | None) -> None:
    """:func:`source_pools`' refusals when a recipe is built (so its line can be named): for a
    drawing source from its declared values, for inline rows from the rows; a file source is
    checked when the run reads it."""
    mix = pipeline.mix
    if mix is None or any(mix.by in s.produces() for s in pipeline.steps):
        return
    if isinstance(source, EmptyRows):
        check_parts(mix, source)
    elif isinstance(source, RowsSource):
        source_pools(mix, pipeline, source.rows(), source)


def share_out(wanted: dict[str, int], room: int) -> dict[str, int]:
    """``wanted`` rows per part, scaled down to ``room`` in all when they do not fit (each part
    keeps at least one row while room lasts)."""
    total = sum(wanted.values())
    if total <= room:
        return wanted
    out: dict[str, int] = {}
    for p, n in wanted.items():
        take = min(max(1, n * room // total), room - sum(out.values()))
        if take > 0:
            out[p] = take
    return out


def first_of_parts(rows: list[Row], by: str, wanted: dict[str, int]) -> list[KeyedRow]:
    """The first ``wanted[part]`` source rows of each part, keyed by their index, in index
    order (a mixture's first round when the tag comes from a fixed source)."""
    left = {p: n for p, n in wanted.items() if n > 0}
    taken: list[KeyedRow] = []
    for i, r in enumerate(rows):
        part = part_of(r, by)
        if part is not None and left.get(part, 0) > 0:
            taken.append(((i,), r))
            left[part] -= 1
    return taken


async def mixed(
    runner: Runner,
    pipeline: Pipeline,
    rows: list[Row],
    source: Source | None,
    target: int,
    max_attempts: int | None,
    limit: int | None = None,
) -> tuple[list[KeyedRow], dict[str, Any]]:
    """The final rows of a mixture top-up, cut to their counts (``Mix.allot``), and ``run.json``'s
    keys; at most ``limit`` source rows tried (``--limit``) when given."""
    mix = pipeline.mix
    assert mix is not None
    counts = mix.counts(target)
    pools = source_pools(mix, pipeline, rows, source)
    cap = attempts_cap(len(rows), target, max_attempts, limit)
    draws = None
    next_key = len(rows)  # a fixed source's rows fed again: keys past every source row's
    batch: list[KeyedRow]
    if pools is None:
        batch = [((i,), r) for i, r in enumerate(rows[: first_round(rows, target, cap)])]
    elif isinstance(source, EmptyRows):
        draws = Draws(source, mix.by, 0, MAX_DRAWS_FACTOR * cap)
        batch = draws.take(share_out(counts, cap))
    else:
        batch = first_of_parts(rows, mix.by, share_out(counts, cap))
    fed: Counter[str] = Counter(str(part_of(r, mix.by)) for _, r in batch)
    rounds = Rounds(runner, pipeline)
    while True:
        final = await rounds.run(batch)
        tried = rounds.tried
        have = tally(final, mix.by)
        missing = {p: n - have[p] for p, n in counts.items() if have[p] < n}
        kept_counts = mix.allot({p: have[p] for p in counts}, target)
        if kept_counts is not None or tried >= cap or runner.stopped:
            break
        if draws is not None and draws.too_rare:
            break
        if pools is None:
            wanted = max(wanted_rows(n, have[p], tried) for p, n in missing.items())
            batch = more_rows(source, rows, tried, min(wanted, cap - tried))
            continue
        per_part = {p: wanted_rows(n, have[p], fed[p]) for p, n in missing.items()}
        shares = share_out(per_part, cap - tried)
        if draws is not None:
            batch = draws.take(shares)
            fed.update(str(part_of(r, mix.by)) for _, r in batch)
            if not batch:
                break
            continue
        batch = []
        for p, n in shares.items():
            pool = pools[p]
            for _ in range(n):
                batch.append(((next_key,), dict(pool[fed[p] % len(pool)])))
                next_key += 1
                fed[p] += 1
    rounds.finish()
    reached = kept_counts is not None
    kept, cut_rows, stray = cut(final, mix, kept_counts or counts)
    # the yield counts the rows that survived the steps; the mix's cuts are ``trimmed``
    info = topup_info(
        target, len(final), rounds, cap, limit_capped(len(rows), target, max_attempts, limit)
    )
    if len(final) > len(kept):
        info["trimmed"] = len(final) - len(kept)
    info["reached"] = reached
    info["mix"] = outcome(mix, counts, kept, cut_rows, stray, reached)
    if pools is not None:
        info["mix"]["tried"] = {p: fed[p] for p in mix.targets}
    if draws is not None:
        info["mix"].update(drawn=draws.drawn, max_draws=draws.max_draws)
        if draws.too_rare and not reached:
            info["mix"]["too_rare"] = draws.too_rare
    return kept, info


__all__ = ["check_source", "first_of_parts", "mixed", "share_out", "source_pools"]

"""Running a pipeline end to end: check, load models, stream, write — losing nothing.

Order of work, so that every mistake a user can make fails before the first model call:
lock the output folder → read the source → check the pipeline → assemble the run (open the
call cache, build and start each model once, make the runner: ``pipeline.assembly``) → run →
write outputs atomically. Finished calls live in the call cache the moment they return, so an
interrupted run resumes by running the same command again.

A model that cannot be reached at start (``ModelUnavailable``) stops the run only at the first
call the cache cannot answer: a re-run served entirely from the cache needs no live server.
A run that produced no rows writes no data file, and leaves an earlier finished dataset in its
folder as it was (its own ``run.json``/``failures.jsonl`` go to ``OUT/failed-attempt/``);
``RunResult.previous_rows`` tells callers how many rows the dataset it replaced had.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._process import pid_alive  # noqa: F401 - re-exported for older imports
from .._sync import run_sync
from ..errors import ConfigError, InputError, OutputError
from ..executors import get_executor
from ..executors.base import Executor
from ..io.sinks import OutputFolder
from ..io.sources import Source, SourceScan, scan_and_check
from ..models.embeddings import embedding_cache
from ..provenance import collect
from ..rows import Row
from .assembly import BuiltModels, RunAssembly, build_models
from .batch import batch_summary
from .cache import CallCache
from .forecast import Forecast, attach_forecast
from .graph import Pipeline
from .runner import Budget, FailureLog
from .spool import KEEP_ROWS
from .stats import Stats
from .topup import run_rows


@dataclass
class RunResult:
    """What a run produced: the rows, the counters and where they were written.

    ``rows``: up to ``KEEP_ROWS`` (10,000) rows, a plain ``list``; a larger run gives a
    :class:`~datamill.pipeline.spool.SpooledRows` instead, a read-only sequence read from
    temporary files as it is used (``len``, iteration, ``rows[i]``, slices; ``list(rows)`` loads
    them all), so a run of millions of rows never holds them all in memory. The files go when
    the result does. ``failures``: the first 1,000 failure records (all are in
    ``failures.jsonl``; ``stats.failed_rows`` counts them)."""

    rows: Sequence[Row]
    stats: Stats
    output: Path | None
    failures: list[dict[str, Any]] = field(default_factory=list)
    stopped: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    #: rows of the finished dataset that was in the output folder before this run, if any
    previous_rows: int | None = None
    #: where a run that produced no rows left its run.json and failures.jsonl (no dataset written)
    failed_attempt: Path | None = None

    def to_dataset(self) -> Any:
        """The rows as a ``datasets.Dataset`` (needs the ``hf`` extra)."""
        try:
            import datasets
        except ImportError as exc:
            from ..errors import MissingDependency

            raise MissingDependency("RunResult.to_dataset", "hf") from exc
        return datasets.Dataset.from_list(list(self.rows))

    def __len__(self) -> int:
        return len(self.rows)


async def arun_pipeline(
    pipeline: Pipeline,
    output: str | Path | None = None,
    *,
    model: str | None = None,
    limit: int | None = None,
    cache: bool | str | Path | CallCache = True,
    budget: Budget | None = None,
    on_start: Callable[[Stats], None] | None = None,
    source: Source | None = None,
    overwrite: bool = True,
    executor: Executor | str | None = None,
    progress: bool | str = False,
    forecast: Forecast | dict[str, Any] | None = None,
    input_licence: str | None = None,
    batch: bool = False,
) -> RunResult:
    """Run ``pipeline`` and (when ``output`` is given) write the dataset folder.

    ``executor``: an :class:`~datamill.executors.base.Executor`, ``"local"`` (the default) or
    ``"ray"``. ``progress``: ``True`` shows a progress bar (a widget in Jupyter), ``"auto"``
    only inside Jupyter. ``forecast``: a ``datamill plan`` forecast to store in ``run.json``
    beside the actuals. ``input_licence``: the licence of the source rows, for the card's
    provenance section (``datamill.provenance``; read from the source's dataset card otherwise).
    ``batch``: every model whose provider has a batch API calls it (``pipeline.batch``), as
    ``batch: true`` on a model does.
    """
    folder = OutputFolder(Path(output)) if output is not None else None
    bar: Any = None
    if folder is not None:
        folder.lock()
    failures = FailureLog(folder.failures_partial if folder is not None else None)
    try:
        src, scan = checked_source(pipeline, source, limit)  # read as rows stream, never held whole
        stats = Stats(rows_total=scan.rows)
        if on_start is not None:
            on_start(stats)
        if progress:
            from ..progress import start_progress

            bar = start_progress(stats, progress)
        async with RunAssembly(
            pipeline.models,
            seed=pipeline.seed,
            override=model,
            cache=cache,
            budget=budget,
            executor=get_executor(executor) if isinstance(executor, str) else executor,
            stats=stats,
            failures=failures,
            batch=batch,
        ) as run:
            with contextlib.closing(src.stream()) as source_rows:  # closed on any exit, not by gc
                keyed, topup = await run_rows(
                    run.runner, pipeline, source_rows, src, run.cache, limit
                )
            out_rows = keyed.rows()  # in key order, read from the spool's files as they are used
            stats.rows_done = len(out_rows)
            failures.close()
            summary = run_summary(pipeline, run.models, stats, run.runner.stopped, budget)
            summary.update(topup)
            summary["provenance"] = collect(
                pipeline, run.models, src, input_licence, getattr(budget, "prices", None)
            )
            if forecast is not None:
                attach_forecast(summary, forecast)
            previous, failed_attempt = _write(folder, out_rows, summary, pipeline, run.cache)
            kept: Sequence[Row] = out_rows
            if len(out_rows) <= KEEP_ROWS:  # small runs: a plain list, and no files left behind
                kept = list(out_rows)
                keyed.close()
        return RunResult(
            kept,
            stats,
            folder.path if folder else None,
            failures.records,
            run.runner.stopped,
            summary,
            previous_rows=previous,
            failed_attempt=failed_attempt,
        )
    finally:
        if bar is not None:
            await bar.aclose()
        failures.close()
        if folder is not None:
            folder.unlock()


def checked_source(
    pipeline: Pipeline, source: Source | None, limit: int | None
) -> tuple[Source, SourceScan]:
    """The source (``source`` or the pipeline's, capped at ``limit``) and what one streaming pass
    over it found (row count, columns), checked against the pipeline without holding its rows.
    Raises :class:`InputError` / :class:`ConfigError` / :class:`~datamill.errors.PipelineError`
    before any model is built."""
    src = source or pipeline.source
    if src is None:
        raise InputError(
            "the pipeline has no source: give rows, a file (datamill run RECIPE --input PATH) or a recipe 'source'"
        )
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"--limit must be at least 1, got {limit}")
        src = copy.copy(src)  # the caller's source keeps its own limit (preview, then run)
        src.limit = limit if src.limit is None else min(src.limit, limit)
    scan = scan_and_check(src, pipeline.steps)
    pipeline.check(scan.common)
    return src, scan


def load_checked(
    pipeline: Pipeline, source: Source | None, limit: int | None
) -> tuple[Source, list[Row]]:
    """:func:`checked_source` and the source's rows in memory (``datamill plan`` previews a few
    of them and scales by their count)."""
    src, _ = checked_source(pipeline, source, limit)
    return src, src.load()


def _write(
    folder: OutputFolder | None,
    rows: Sequence[Row],
    summary: dict[str, Any],
    pipeline: Pipeline,
    cache: CallCache | None,
) -> tuple[int | None, Path | None]:
    """Write the dataset folder; a run with no rows leaves an earlier dataset as it was.
    Returns the earlier dataset's rows (or None) and where a failed attempt was left."""
    if folder is None:
        return None, None
    previous = folder.previous_rows()
    if not rows and previous is not None:
        return previous, folder.write_failed_attempt(summary)  # the earlier dataset stays
    with embedding_cache(cache.path if cache is not None else None):  # the report's vectors
        folder.write(rows, summary, pipeline)
    return previous, None


def run_summary(
    pipeline: Pipeline,
    models: BuiltModels,
    stats: Stats,
    stopped: str | None,
    budget: Budget | None,
) -> dict[str, Any]:
    """The content of ``run.json``."""
    data = stats.as_dict()
    data["pipeline"] = pipeline.name
    data["models"] = {
        name: {
            "model": m.info.name,
            "backend": m.backend,
            **({"sampling": s.sampling} if s.sampling else {}),
            **m.run_facts(),
        }
        for name, (m, s) in models.items()
    }
    data["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    data["complete"] = stopped is None
    if stopped is not None:
        data["stopped_by"] = stopped
    if budget is not None and hasattr(budget, "as_dict"):
        data["budget"] = budget.as_dict()
    data.update(batch_summary(models, getattr(budget, "prices", None), data.get("usage")))
    return data


def run_pipeline(pipeline: Pipeline, output: str | Path | None = None, **kwargs: Any) -> RunResult:
    """Synchronous entry point; safe to call where an event loop already runs (Jupyter)."""
    return run_sync(arun_pipeline(pipeline, output, **kwargs), name="datamill-run")


__all__ = ["OutputError", "RunResult", "arun_pipeline", "build_models", "run_pipeline"]

"""Running a pipeline end to end: check, load models, stream, write — losing nothing.

Order of work, so that every mistake a user can make fails before the first model call:
lock the output folder → read the source → check the pipeline → open the call cache → build and
start the models → run → write outputs atomically. Finished calls live in the call cache the
moment they return, so an interrupted run resumes by running the same command again.

A model that cannot be reached at start (``ModelUnavailable``) stops the run only at the first
call the cache cannot answer: a re-run served entirely from the cache needs no live server.
A run that produced no rows writes no data file, and leaves an earlier finished dataset in its
folder as it was (its own ``run.json``/``failures.jsonl`` go to ``OUT/failed-attempt/``);
``RunResult.previous_rows`` tells callers how many rows the dataset it replaced had.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._sync import run_sync
from ..errors import ConfigError, InputError, ModelUnavailable, OutputError
from ..io.sinks import OutputFolder
from ..io.sources import Source, scan_and_check
from ..models.base import Model
from ..models.embeddings import embedding_cache
from ..models.registry import load_model
from ..rows import Row
from .cache import CallCache
from .graph import ModelSettings, Pipeline
from .runner import Budget, FailureLog, ModelHandle, Runner
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


def build_models(
    pipeline: Pipeline, override: str | None = None
) -> dict[str, tuple[Model, ModelSettings]]:
    """One model object per distinct (spec, options); named settings share it."""
    built: dict[str, Model] = {}
    result: dict[str, tuple[Model, ModelSettings]] = {}
    for name, settings in pipeline.models.items():
        spec = (
            override
            if override is not None and not isinstance(settings.spec, Model)
            else settings.spec
        )
        if isinstance(spec, Model):
            result[name] = (spec, settings)
            continue
        key = json.dumps([spec, settings.options], sort_keys=True, default=str)
        if key not in built:
            built[key] = load_model(spec, **settings.options)
        result[name] = (
            built[key],
            ModelSettings(spec=spec, options=settings.options, sampling=settings.sampling),
        )
    return result


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
    executor: Any = None,
    progress: bool | str = False,
    forecast: Any = None,
) -> RunResult:
    """Run ``pipeline`` and (when ``output`` is given) write the dataset folder.

    ``progress``: ``True`` shows a progress bar (a widget in Jupyter), ``"auto"`` only inside
    Jupyter. ``forecast``: a ``datamill plan`` forecast to store in ``run.json`` beside the actuals.
    """
    folder = OutputFolder(Path(output)) if output is not None else None
    bar: Any = None
    if folder is not None:
        folder.lock()
    models: dict[str, tuple[Model, ModelSettings]] = {}
    started: list[Model] = []
    failures = FailureLog(folder.failures_partial if folder is not None else None)
    call_cache: CallCache | None = None
    try:
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
        scan = scan_and_check(src, pipeline.steps)  # read as rows stream, never held whole
        pipeline.check(scan.common)
        if cache is True:  # an unusable cache file is refused before any model is built
            call_cache = CallCache()
        elif isinstance(cache, CallCache):
            call_cache = cache
        elif cache:
            call_cache = CallCache(cache)
        models = build_models(pipeline, model)

        if isinstance(executor, str):
            from ..executors import get_executor

            executor = get_executor(executor)
        if executor is not None:  # remote workers build their own replicas from these settings
            executor.prepare(
                {n: s for n, (_, s) in models.items()},
                str(call_cache.path) if call_cache else None,
                budget,
            )
        stats = Stats(rows_total=scan.rows)
        if on_start is not None:
            on_start(stats)
        if progress:
            from ..progress import start_progress

            bar = start_progress(stats, progress)
        semaphores: dict[int, asyncio.Semaphore] = {}
        handles: dict[str, ModelHandle] = {}
        down: dict[int, ModelUnavailable] = {}
        for name, (m, settings) in models.items():
            if m not in started and id(m) not in down and executor is None:
                try:
                    await m.start()
                    started.append(m)
                except ModelUnavailable as exc:
                    if call_cache is None:  # nothing can be answered without the model
                        raise
                    down[id(m)] = exc  # raised at the first call the cache cannot answer
            sem = semaphores.setdefault(id(m), asyncio.Semaphore(max(1, m.info.max_concurrency)))
            handles[name] = ModelHandle(
                name,
                m,
                settings.sampling,
                call_cache,
                stats,
                budget,
                sem,
                unavailable=down.get(id(m)),
            )
        runner = Runner(handles, stats, failures, seed=pipeline.seed, executor=executor)
        keyed, topup = await run_rows(
            runner, pipeline, src.stream(), src, call_cache
        )  # target_rows: top-up
        out_rows = keyed.rows()  # in key order, read from the spool's files as they are used
        stats.rows_done = len(out_rows)
        failures.close()
        summary = run_summary(pipeline, models, stats, runner.stopped, budget)
        summary.update(topup)
        if forecast is not None:
            from .plan import attach_forecast

            attach_forecast(summary, forecast)
        previous = folder.previous_rows() if folder is not None else None
        failed_attempt: Path | None = None
        if folder is not None and not out_rows and previous is not None:
            failed_attempt = folder.write_failed_attempt(summary)  # the earlier dataset stays
        elif folder is not None:
            with embedding_cache(
                call_cache.path if call_cache is not None else None
            ):  # the report's vectors
                folder.write(out_rows, summary, pipeline)
        kept: Sequence[Row] = out_rows
        if len(out_rows) <= KEEP_ROWS:  # small runs: a plain list, and no files left behind
            kept = list(out_rows)
            keyed.close()
        return RunResult(
            kept,
            stats,
            folder.path if folder else None,
            failures.records,
            runner.stopped,
            summary,
            previous_rows=previous,
            failed_attempt=failed_attempt,
        )
    finally:
        if bar is not None:
            await bar.aclose()
        failures.close()
        if executor is not None and hasattr(executor, "close"):
            executor.close()
        for m in started:
            await m.close()
        if call_cache is not None and call_cache is not cache:
            call_cache.close()
        if folder is not None:
            folder.unlock()


def run_summary(
    pipeline: Pipeline,
    models: dict[str, tuple[Model, ModelSettings]],
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
        }
        for name, (m, s) in models.items()
    }
    data["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    data["complete"] = stopped is None
    if stopped is not None:
        data["stopped_by"] = stopped
    if budget is not None and hasattr(budget, "as_dict"):
        data["budget"] = budget.as_dict()
    return data


def run_pipeline(pipeline: Pipeline, output: str | Path | None = None, **kwargs: Any) -> RunResult:
    """Synchronous entry point; safe to call where an event loop already runs (Jupyter)."""
    return run_sync(arun_pipeline(pipeline, output, **kwargs), name="datamill-run")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["RunResult", "arun_pipeline", "run_pipeline", "OutputError"]

"""Background jobs of the web app: one pipeline run per job, in its own thread and event loop.

A job is the CLI's ``datamill run`` in a thread: the same :func:`~datamill.pipeline.run.arun_pipeline`,
the same output folder layout and the same call cache. The app polls :meth:`Job.progress`, which
reads the run's live :class:`~datamill.pipeline.stats.Stats` (the counters the CLI's progress bar
shows). :meth:`Job.cancel` cancels the run's task; every finished call is already in the cache, so
starting the same job again resumes it.

Deliberately not here: building pipelines (``ui.builder``), widgets (``ui.app``).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DatamillError
from ..pipeline.graph import Pipeline
from ..pipeline.run import RunResult, arun_pipeline
from ..pipeline.stats import Stats
from ..words import plural

_ids = itertools.count(1)


@dataclass
class Progress:
    """A snapshot of a job for the progress bar."""

    state: str  #: queued | loading | running | done | failed | cancelled
    done: int
    total: int | None
    text: str

    @property
    def fraction(self) -> float:
        if not self.total:
            return 0.0
        return min(1.0, self.done / self.total)


class Job:
    """One run of ``pipeline``; ``output=None`` runs without writing (a preview)."""

    def __init__(
        self,
        pipeline: Pipeline,
        output: str | Path | None = None,
        *,
        limit: int | None = None,
        cache: Any = True,
        label: str = "",
    ) -> None:
        self.id = f"job-{next(_ids)}"
        self.pipeline = pipeline
        self.output = Path(output) if output is not None else None
        self.limit = limit
        self.cache = cache
        self.label = label or pipeline.name
        self.state = "queued"
        self.stats: Stats | None = None
        self.result: RunResult | None = None
        self.error: str | None = None
        self.exception: BaseException | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[RunResult] | None = None
        self._cancel_requested = False
        self._done = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Job:
        if self._thread is not None:
            raise RuntimeError(f"{self.id} was already started")
        self.state = "loading"
        self.started_at = time.time()
        self._thread = threading.Thread(
            target=self._main, name=f"datamill-ui-{self.id}", daemon=True
        )
        self._thread.start()
        return self

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # recorded for the app; nothing escapes the thread
            self.exception = exc
            if isinstance(exc, asyncio.CancelledError) or self._cancel_requested:
                self.state = "cancelled"
                self.error = (
                    "stopped: every finished model call is cached, so generating again resumes where it stopped"
                    if self.cache is not False
                    else "stopped: nothing was cached, so generating again starts over"
                )
            else:
                self.state = "failed"
                self.error = (
                    str(exc) if isinstance(exc, DatamillError) else f"{type(exc).__name__}: {exc}"
                )
        finally:
            self.finished_at = time.time()
            self._done.set()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(
            arun_pipeline(
                self.pipeline,
                self.output,
                limit=self.limit,
                cache=self.cache,
                on_start=self._on_start,
            )
        )
        if self._cancel_requested:
            self._task.cancel()
        self.result = await self._task
        self.state = "done"

    def _on_start(self, stats: Stats) -> None:
        self.stats = stats
        self.state = "running"

    def cancel(self) -> None:
        """Ask the run to stop (finished calls stay cached)."""
        self._cancel_requested = True
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not task.done():
            loop.call_soon_threadsafe(task.cancel)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends; ``False`` if ``timeout`` passed first."""
        return self._done.wait(timeout)

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    # -- what the app shows ------------------------------------------------------------------
    def progress(self) -> Progress:
        s = self.stats
        if s is None:
            text = {
                "queued": "waiting to start",
                "loading": "loading the source and the model…",
            }.get(self.state, self.error or self.state)
            return Progress(self.state, 0, None, text)
        total = s.rows_total
        parts = [f"source rows {s.source_rows_done}/{total if total is not None else '?'}"]
        if self.state == "done":
            parts.insert(0, _count(s.rows_done, "row"))
        parts += [
            f"model calls {s.model_calls}",
            f"cached {s.cache_hits}",
            f"{s.tokens_per_second:.0f} tok/s"
            if self.state != "done"
            else f"{s.completion_tokens} tokens",
            f"lost {s.failed_rows}",
            f"{s.seconds:.0f}s",
        ]
        done = s.source_rows_done if self.state != "done" else (total or s.source_rows_done)
        return Progress(self.state, done, total, " · ".join(parts))

    def summary_line(self) -> str:
        """One line for the status box: what happened, in words a person can act on."""
        if self.state == "done" and self.result is not None:
            s = self.result.stats
            where = f" to {self.output}" if self.output is not None else ""
            line = (
                f"wrote {_count(len(self.result.rows), 'row')}{where} (model calls {s.model_calls}, "
                f"cache hits {s.cache_hits}, {s.seconds:.1f}s)"
                if self.output is not None
                else f"{_count(len(self.result.rows), 'row')} (model calls {s.model_calls}, cache hits {s.cache_hits}, {s.seconds:.1f}s)"
            )
            topup = topup_line(self.result.summary)
            if topup:
                line += "; " + topup
            losses = s.losses()
            if losses:
                line += "; " + "; ".join(losses)
            if self.result.stopped:
                line += f"; stopped early: {self.result.stopped}"
            return line
        if self.state in ("failed", "cancelled"):
            return f"{self.state}: {self.error}"
        return self.progress().text


_count = plural  # the web app's lines count as the CLI's do


def topup_line(summary: dict[str, Any]) -> str:
    """The top-up outcome of a run's summary in words, as the CLI and the card say it
    (``report.topup``; ``""`` when it had no row target)."""
    from ..report.topup import topup_text

    return topup_text(summary, mixed="mix" in summary) or ""


class JobRegistry:
    """The jobs of one app process, newest last, so the viewer can open a running job."""

    def __init__(self, keep: int = 20) -> None:
        self.keep = keep
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def add(self, job: Job) -> Job:
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self.keep:
                oldest = next(iter(self._jobs))
                if not self._jobs[oldest].finished:
                    break
                del self._jobs[oldest]
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def with_output(self) -> list[Job]:
        """Jobs that write a folder (not previews), newest first."""
        return [j for j in reversed(list(self._jobs.values())) if j.output is not None]

    def running(self) -> list[Job]:
        return [j for j in self._jobs.values() if not j.finished]

"""Assembling a run: the one place models are built and started, the cache opened, the runner made.

``async with RunAssembly(models, ...) as run:`` builds one model object per distinct
(spec, options) — named settings share it, with one concurrency bound — opens the call cache,
prepares the executor, starts each model once, and makes the :class:`Runner`; leaving closes each
started model once, the executor, and the cache it opened. ``datamill run`` (``pipeline.run``),
``datamill plan`` (``pipeline.plan``) and every Ray shard (:class:`ShardJob`) assemble their run
here, so they build, start and count models the same way.

A model whose ``start()`` raises :class:`ModelUnavailable` stops the run only at the first call
the cache cannot answer (``defer_unavailable``, with a cache), so a re-run served entirely from
the cache needs no live server.

Deliberately not here: reading the source, checking the pipeline, writing outputs
(``pipeline.run``), the streaming itself (``pipeline.runner``).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, ModelUnavailable
from ..executors.base import Executor, LocalExecutor, ShardResult
from ..models.base import Model
from ..models.batch_api import ADAPTERS, batch_settings
from ..models.registry import check_options, load_model, parse_spec, spec_capabilities
from ..rows import KeyedRow
from .batch import BatchModel
from .cache import CallCache
from .graph import ModelSettings
from .runner import Budget, FailureLog, ModelHandle, Runner
from .stats import Stats

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..steps.base import Step

BuiltModels = dict[str, tuple[Model, ModelSettings]]


def build_models(
    settings: dict[str, ModelSettings],
    override: str | None = None,
    threads: int | None = None,
    batch: bool = False,
    online: bool = False,
) -> BuiltModels:
    """One model object per distinct (spec, options); named settings share it.

    ``override``: a spec that replaces every named spec (not model objects); ``threads``: CPU
    threads for a backend that declares a threads option (``Capabilities.threads_option``,
    e.g. llamacpp's ``n_threads``) and does not set it (a Ray worker's share). A model whose
    options say ``batch`` (or every model, ``batch=True``: ``--batch``) is wrapped in a
    :class:`~datamill.pipeline.batch.BatchModel`, one per distinct model, unless ``online``
    (``datamill plan``'s preview measures the online model)."""
    built: dict[str, Model] = {}
    result: BuiltModels = {}
    wrapped: dict[int, Model] = {}
    for name, s in settings.items():
        spec = override if override is not None and not isinstance(s.spec, Model) else s.spec
        options = dict(s.options)
        wanted = batch_settings(options.pop("batch", None), f"model {name!r}")
        if batch and wanted is None and has_batch_api(spec):
            wanted = {}  # --batch: every model whose provider has a batch API
        if online:
            wanted = None
        if isinstance(spec, Model):
            result[name] = (_batched(spec, wanted, wrapped, name), s)
            continue
        if spec != s.spec:  # the recipe's licence was its own model's, not --model's
            options.pop("licence", None)
        threads_option = spec_capabilities(spec).threads_option if threads is not None else None
        if threads_option is not None:
            options.setdefault(threads_option, threads)
        key = json.dumps([spec, options], sort_keys=True, default=str)
        if key not in built:
            check_options(spec, options, f"model {name!r} ({parse_spec(spec)[0]})")
            built[key] = load_model(spec, **options)
        result[name] = (
            _batched(built[key], wanted, wrapped, name),
            ModelSettings(spec=spec, options=s.options, sampling=s.sampling),
        )
    if batch and not online and not any(isinstance(m, BatchModel) for m, _ in result.values()):
        shown = ", ".join(sorted({m.backend or type(m).__name__ for m, _ in result.values()}))
        raise ConfigError(
            f"--batch: no model of this run has a batch API (backends: {shown}; batch APIs: "
            f"{', '.join(sorted(ADAPTERS))}); run without --batch"
        )
    return result


def batched(settings: ModelSettings, batch: bool = False, override: str | None = None) -> bool:
    """Whether a named model calls its provider's batch API in a run: its ``batch`` option, or
    ``batch`` (``--batch``) and a backend with a batch API (``override``: ``--model``)."""
    if batch_settings(settings.options.get("batch"), "model") is not None:
        return True
    spec = (
        override if override is not None and not isinstance(settings.spec, Model) else settings.spec
    )
    return batch and has_batch_api(spec)


def has_batch_api(spec: str | Model) -> bool:
    """Whether the backend of ``spec`` (a spec or a model object) has a batch adapter."""
    if isinstance(spec, Model):
        return spec.backend in ADAPTERS
    return parse_spec(spec)[0] in ADAPTERS


def _batched(
    model: Model, settings: dict[str, Any] | None, wrapped: dict[int, Model], name: str
) -> Model:
    """``model`` itself, or (``settings`` given) its one :class:`BatchModel` wrapper."""
    if settings is None or isinstance(model, BatchModel):
        return model
    if id(model) not in wrapped:
        wrapped[id(model)] = BatchModel(model, label=f"model {name!r}", **settings)
    return wrapped[id(model)]


def open_cache(cache: bool | str | Path | CallCache) -> CallCache | None:
    """``True``: the default file; a path: that file; a :class:`CallCache`: itself; falsy: none.
    An unusable file is refused here (:class:`~datamill.errors.CacheError`), before any model."""
    if isinstance(cache, CallCache):
        return cache
    if cache is True:
        return CallCache()
    return CallCache(cache) if cache else None


class RunAssembly:
    """The models, cache, handles and runner of one run (see the module docstring).

    ``models``: the pipeline's named settings; ``override``: ``--model``; ``cache``: as
    :func:`open_cache` (a :class:`CallCache` given is not closed here); ``executor``: where
    segments stream (default: this process); ``threads``: see :func:`build_models`;
    ``defer_unavailable``: with a cache, a model that cannot start fails at its first call
    instead of here; ``batch``: every model through its provider's batch API (``--batch``);
    ``online``: no model through it, whatever its options say (a preview). After entering: ``models`` (name → (model, settings)), ``cache``,
    ``handles``, ``runner``, ``started`` (each started model once) and ``load_seconds``."""

    def __init__(
        self,
        models: dict[str, ModelSettings],
        *,
        seed: int = 0,
        override: str | None = None,
        cache: bool | str | Path | CallCache = False,
        budget: Budget | None = None,
        executor: Executor | None = None,
        stats: Stats | None = None,
        failures: FailureLog | None = None,
        threads: int | None = None,
        defer_unavailable: bool = True,
        batch: bool = False,
        online: bool = False,
    ) -> None:
        self.settings = models
        self.batch = batch
        self.online = online
        self.seed = seed
        self.override = override
        self._cache_arg = cache
        self.budget = budget
        self.executor: Executor = executor if executor is not None else LocalExecutor()
        self.stats = stats if stats is not None else Stats()
        self.failures = failures if failures is not None else FailureLog(None)
        self.threads = threads
        self.defer_unavailable = defer_unavailable
        self.models: BuiltModels = {}
        self.cache: CallCache | None = None
        self.handles: dict[str, ModelHandle] = {}
        self.started: list[Model] = []
        self.load_seconds = 0.0
        self._prepared = False
        self._runner: Runner | None = None

    @property
    def runner(self) -> Runner:
        if self._runner is None:
            raise RuntimeError("RunAssembly.runner is made on entering: use `async with`")
        return self._runner

    async def __aenter__(self) -> RunAssembly:
        try:
            await self._assemble()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _assemble(self) -> None:
        began = time.monotonic()
        self.cache = open_cache(self._cache_arg)
        self.models = build_models(
            self.settings, self.override, self.threads, self.batch, self.online
        )
        for m, _ in self.models.values():
            if isinstance(m, BatchModel) and m.cache is None:
                m.bind(self.cache)  # before it starts: it resumes the batches recorded there
        job = ShardJob(
            {n: s for n, (_, s) in self.models.items()},
            str(self.cache.path) if self.cache is not None else None,
            self.seed,
        )
        self._prepared = True
        self.executor.prepare(job, self.budget)
        down = await self._start_models() if self.executor.local else {}
        semaphores: dict[int, asyncio.Semaphore] = {}
        for name, (m, s) in self.models.items():
            sem = semaphores.setdefault(id(m), asyncio.Semaphore(max(1, m.info.max_concurrency)))
            self.handles[name] = ModelHandle(
                name,
                m,
                s.sampling,
                self.cache,
                self.stats,
                self.budget,
                sem,
                unavailable=down.get(id(m)),
            )
        self._runner = Runner(
            self.handles,
            self.stats,
            self.failures,
            seed=self.seed,
            executor=self.executor,
            cache=self.cache,
        )
        self.load_seconds = time.monotonic() - began

    async def _start_models(self) -> dict[int, ModelUnavailable]:
        """Start each distinct model once; those that cannot be reached, when deferred."""
        down: dict[int, ModelUnavailable] = {}
        for m, _ in self.models.values():
            if any(m is s for s in self.started) or id(m) in down:
                continue
            try:
                await m.start()
            except ModelUnavailable as exc:
                if self.cache is None or not self.defer_unavailable:
                    raise  # nothing can be answered without the model
                down[id(m)] = exc  # raised at the first call the cache cannot answer
                continue
            self.started.append(m)
        return down

    async def aclose(self) -> None:
        """Close the executor, each started model once and the cache opened here; idempotent."""
        try:
            if self._prepared:
                self._prepared = False
                self.executor.close()
        finally:
            started, self.started = self.started, []
            try:
                for m in started:
                    await m.close()
            finally:
                if self.cache is not None and self.cache is not self._cache_arg:
                    self.cache.close()
                self.cache = None


@dataclass
class ShardJob:
    """What a worker does with one shard of a segment (``executors.base.ShardJob``).

    Picklable: the named model settings (specs, or model objects that travel by value), the
    call-cache path shared by every worker, the run's seed."""

    models: dict[str, ModelSettings]
    cache: str | None
    seed: int = 0
    report_every: float = 0.5  #: seconds between progress reports

    def backends(self) -> list[str]:
        """The backend names of the string specs (for display)."""
        return [parse_spec(s.spec)[0] for s in self.models.values() if isinstance(s.spec, str)]

    def needs_gpu(self) -> bool:
        """Whether a worker must reserve a GPU: some model's backend declares
        ``Capabilities.gpu`` (specs through the registry, model objects through their info)."""
        return any(
            spec_capabilities(s.spec).gpu
            if isinstance(s.spec, str)
            else s.spec.info.capabilities.gpu
            for s in self.models.values()
        )

    def run(
        self,
        steps: list[Step],
        rows: list[KeyedRow],
        report: Callable[[dict[str, Any]], None],
        threads: int,
    ) -> ShardResult:
        """Assemble this worker's run, stream ``rows`` through ``steps``, reporting counters."""

        async def shard() -> ShardResult:
            stats = Stats(rows_total=len(rows))
            async with RunAssembly(
                self.models, seed=self.seed, cache=self.cache or False, stats=stats, threads=threads
            ) as run:
                work = asyncio.create_task(run.runner.stream(steps, rows))
                while not work.done():
                    await asyncio.wait({work}, timeout=self.report_every)
                    report(stats.counters())
                spool = work.result()
                try:  # the rows travel back to the driver; the spool's files stay here
                    rows_out = list(spool)
                finally:
                    spool.close()
                return rows_out, stats.counters(), run.failures.records, run.runner.stopped

        return asyncio.run(shard())


__all__ = [
    "BuiltModels",
    "RunAssembly",
    "ShardJob",
    "batched",
    "build_models",
    "has_batch_api",
    "open_cache",
]

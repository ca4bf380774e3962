"""Batch calls at a provider's batch price, through the same streaming runner.

:class:`BatchModel` wraps an online model whose backend has a batch API (``models.batch_api``):
its :meth:`~BatchModel.generate` puts the call on a queue and awaits its answer, so the runner
streams rows exactly as online — each row goes on as its own call comes back, and the calls a
later step makes form the next batch. The queue becomes a batch when no call has joined it for
``flush_seconds`` (the runner has nothing more it can do without these answers) or when it holds
a batch's worth (the provider's requests and bytes limits; one endpoint per batch).

A batch: its lines and their custom-id → call-key map are committed to the cache file
(``pipeline.batches``) before the provider hears of it; the input file's and the batch's ids are
recorded the moment they are known; it is polled every ``poll_seconds``; each answer goes into
the call cache as the results are read. When the model starts, every unfinished batch of its
identity recorded in the cache is resumed — polled, or found at the provider when the crash came
between creating it and recording its id — so a ``kill -9`` never makes a request twice.

Lines the provider did not run (the batch expired or was cancelled, a server error) are sent
again in a later batch, at most ``resubmits`` times; lines it refused fail their call
(:class:`ModelError`, recorded for the row by the runner).

Deliberately not here: the providers' wire formats (``models.batch_*``), pricing
(``datamill.pricing``: ``Price.batch``), deciding which models are batched (``pipeline.assembly``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, ModelError, ModelUnavailable
from ..models.base import Completion, Model, ModelInfo, Request
from ..models.batch_api import BatchAPI, Line, Outcome, batch_api_for
from .batches import BatchStore, Entry
from .cache import CallCache, call_key


@dataclass
class _Call:
    """One call waiting for its answer: its samples as they come, its lines out at a provider."""

    key: str
    n: int
    future: asyncio.Future[list[Completion]]
    request: Request | None = None
    samples: dict[int, Completion] = field(default_factory=dict)
    out: set[str] = field(default_factory=set)  #: custom ids of its lines in a batch now
    tries: int = 0


class BatchModel(Model):
    """``inner`` called through its provider's batch API (see the module docstring).

    Needs the call cache (:meth:`bind`) before it starts. ``counters``: batches made and
    resumed, request lines sent and sent again, answers, failures, tokens of the answers."""

    def __init__(
        self,
        inner: Model,
        *,
        poll_seconds: float = 30.0,
        flush_seconds: float = 2.0,
        max_requests: int | None = None,
        max_bytes: int | None = None,
        resubmits: int = 2,
        max_poll_failures: int = 10,
        label: str = "",
    ) -> None:
        self.inner = inner
        self.api: BatchAPI = batch_api_for(inner, label)
        self.backend = inner.backend
        self.model = getattr(inner, "model", None)  # the served name, for the price table
        self.poll_seconds = poll_seconds
        self.flush_seconds = flush_seconds
        self.max_requests = min(max_requests or self.api.max_requests, self.api.max_requests)
        self.max_bytes = min(max_bytes or self.api.max_bytes, self.api.max_bytes)
        self.resubmits = resubmits
        self.max_poll_failures = max_poll_failures
        info = inner.info
        self._info: ModelInfo = dataclasses.replace(
            info, max_concurrency=self.max_requests, extra={**info.extra, "batch": True}
        )
        self.cache: CallCache | None = None
        self.store: BatchStore | None = None
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "batches",
                "resumed_batches",
                "requests",
                "resubmitted",
                "answered",
                "failed",
                "prompt_tokens",
                "completion_tokens",
            ),
            0,
        )
        self._calls: dict[tuple[str, int], _Call] = {}
        self._by_id: dict[str, tuple[_Call, Entry]] = {}
        self._queue: list[tuple[_Call, Line]] = []
        self._last = 0.0
        self._full: asyncio.Event | None = None
        self._collector: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()

    @property
    def info(self) -> ModelInfo:
        return self._info

    def __repr__(self) -> str:
        return f"BatchModel({self.inner!r})"

    def bind(self, cache: CallCache | None) -> None:
        """Keep answers in ``cache`` and the batch records beside them (required)."""
        if cache is None:
            raise ConfigError(
                f"{self.info.name}: batch calls need the call cache (batches in flight and their "
                "answers are kept there); drop --no-cache"
            )
        self.cache = cache
        self.store = BatchStore(cache.path)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the online model (its probe checks key and name), then resume every
        unfinished batch of this model recorded in the cache."""
        if self.store is None:
            raise ConfigError(f"{self.info.name}: a batch model needs bind(cache) before start")
        await self.inner.start()
        await self.api.open()
        for record in self.store.unfinished(self.info.identity):
            calls = []
            for entry in record.entries:
                call = self._call(entry.key, entry.n)
                call.out.add(entry.custom_id)
                self._by_id[entry.custom_id] = (call, entry)
                calls.append(call)
            self.counters["resumed_batches"] += 1
            self._spawn(self._resume(record.id, record, calls), calls)

    async def close(self) -> None:
        """Stop polling (batches still running are resumed by the next run) and close."""
        tasks = [t for t in (self._collector, *self._jobs) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._collector = None
        await self.api.close()
        await self.inner.close()
        if self.store is not None:
            self.store.close()
            self.store = None

    # -- calls ----------------------------------------------------------------------------
    async def generate(self, request: Request) -> list[Completion]:
        key = call_key(self.info.identity, request)
        call = self._call(key, request.n)
        if call.request is None:
            try:
                lines = self.api.lines(key, request)
            except ConfigError as exc:  # every call of this kind would be refused alike: stop
                self._calls.pop((key, request.n), None)
                raise ModelUnavailable(f"{self.info.name}: {exc}") from None
            call.request = request
            if not call.out and not call.future.done():
                self._enqueue(call, lines)
        return await asyncio.shield(call.future)

    def _call(self, key: str, n: int) -> _Call:
        call = self._calls.get((key, n))
        if call is None:
            future = asyncio.get_running_loop().create_future()
            call = self._calls[(key, n)] = _Call(key, n, future)
        return call

    def _enqueue(self, call: _Call, lines: list[Line]) -> None:
        loop = asyncio.get_running_loop()
        if self._full is None:
            self._full = asyncio.Event()
        for line in lines:
            call.out.add(line.custom_id)
            self._queue.append((call, line))
        self._last = loop.time()
        if len(self._queue) >= self.max_requests:
            self._full.set()
        if self._collector is None or self._collector.done():
            self._collector = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        """Turn the queue into batches once it stops growing (or holds a full batch)."""
        assert self._full is not None
        loop = asyncio.get_running_loop()
        while self._queue:
            wait = self._last + self.flush_seconds - loop.time()
            if wait > 0 and len(self._queue) < self.max_requests:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), wait)
                continue
            for endpoint, chunk in self._chunks():
                self._spawn(self._submit(endpoint, chunk), [call for call, _, _ in chunk])

    def _chunks(self) -> list[tuple[str, list[tuple[_Call, Line, bytes]]]]:
        """Take a batch's worth of the queue (all of it when it fits), split by endpoint and
        by the provider's requests and bytes limits."""
        taken, self._queue = self._queue[: self.max_requests], self._queue[self.max_requests :]
        by_endpoint: dict[str, list[list[tuple[_Call, Line, bytes]]]] = {}
        sizes: dict[str, int] = {}
        for call, line in taken:
            data = self.api.encode(line)
            chunks = by_endpoint.setdefault(line.endpoint, [[]])
            if len(chunks[-1]) >= self.max_requests or (
                chunks[-1] and sizes[line.endpoint] + len(data) > self.max_bytes
            ):
                chunks.append([])
                sizes[line.endpoint] = 0
            if len(data) > self.max_bytes:
                self._fail(call, f"the request is {len(data):,} bytes, over the batch limit")
                continue
            chunks[-1].append((call, line, data))
            sizes[line.endpoint] = sizes.get(line.endpoint, 0) + len(data)
        return [(e, c) for e, chunks in by_endpoint.items() for c in chunks if c]

    def _spawn(self, work: Any, calls: list[_Call]) -> None:
        """Run one batch's work; a bug or an unexpected error in it fails its calls (with that
        error) instead of leaving their rows waiting for ever."""

        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                for call in calls:
                    self._fail(call, f"{type(exc).__name__}: {exc}", exc)

        task = asyncio.create_task(guarded())
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    # -- one batch ------------------------------------------------------------------------
    async def _submit(self, endpoint: str, chunk: list[tuple[_Call, Line, bytes]]) -> None:
        assert self.store is not None
        batch_id = uuid.uuid4().hex
        entries = [
            Entry(line.custom_id, call.key, call.n, line.first, line.samples)
            for call, line, _ in chunk
        ]
        for (call, _, _), entry in zip(chunk, entries, strict=True):
            self._by_id[entry.custom_id] = (call, entry)
        calls = [call for call, _, _ in chunk]
        try:
            self.store.begin(batch_id, self.info.identity, self.api.provider, endpoint, entries)
        except Exception as exc:
            for call in calls:
                self._fail(call, str(exc), exc)
            return
        store = self.store

        def uploaded(file_id: str) -> None:
            store.update(batch_id, "uploaded", file_id=file_id)

        try:
            remote = await self.api.create(batch_id, endpoint, [d for _, _, d in chunk], uploaded)
        except ModelError as exc:
            if not exc.retryable:  # refused: the provider made nothing
                store.forget(batch_id)
            for call in calls:
                self._fail(call, str(exc), exc)
            return
        store.update(batch_id, "submitted", remote_id=remote)
        self.counters["batches"] += 1
        self.counters["requests"] += len(chunk)
        await self._follow(batch_id, remote, entries)

    async def _resume(self, batch_id: str, record: Any, calls: list[_Call]) -> None:
        assert self.store is not None
        remote = record.remote_id
        if remote is None:  # killed between creating it and recording its id?
            remote = await self.api.find(
                batch_id,
                record.file_id,
                record.requests,
                record.created,
                self.store.known_remote_ids(),
            )
            if remote is None:  # never created: its calls go in a new batch when asked
                self.store.forget(batch_id)
                for entry in record.entries:
                    self._by_id.pop(entry.custom_id, None)
                for call in calls:
                    call.out.clear()
                    if call.request is not None and not call.future.done():
                        self._enqueue(call, self.api.lines(call.key, call.request))
                return
            self.store.update(batch_id, "submitted", remote_id=remote)
        await self._follow(batch_id, remote, record.entries)

    async def _follow(self, batch_id: str, remote: str, entries: list[Entry]) -> None:
        """Poll until the batch ends, then deliver every line's outcome. When the provider
        cannot be asked (``max_poll_failures`` polls in a row failed, or the results cannot be
        read), the calls fail with a line saying so and the batch stays recorded: the next run
        resumes it."""
        assert self.store is not None
        failures = 0
        try:
            while True:
                try:
                    status = await self.api.status(remote)
                except ModelError as exc:
                    failures += 1
                    if exc.retryable and failures < self.max_poll_failures:
                        await asyncio.sleep(self.poll_seconds)  # busy: poll again later
                        continue
                    raise
                failures = 0
                if status.ended:
                    break
                await asyncio.sleep(self.poll_seconds)
            outcomes: dict[str, Outcome] = {}
            if status.failed is None:
                outcomes = dict(await self.api.results(status))
        except ModelError as exc:
            why = (
                f"lost touch with {self.api.provider} batch {remote} ({exc}); it stays recorded "
                "in the cache: run the same command again to resume it"
            )
            for entry in entries:
                hit = self._by_id.pop(entry.custom_id, None)
                if hit is not None:
                    self._fail(hit[0], why, ModelError(why, reason="batch unreachable"))
            return
        why = f"the batch {status.state}" + (f": {status.failed}" if status.failed else "")
        missing: Outcome = ("fail" if status.failed else "retry", why)
        for entry in entries:
            self._deliver(entry, outcomes.get(entry.custom_id, missing))
        self.store.finish(batch_id)

    def _deliver(self, entry: Entry, outcome: Outcome) -> None:
        hit = self._by_id.pop(entry.custom_id, None)
        call = hit[0] if hit is not None else self._call(entry.key, entry.n)
        call.out.discard(entry.custom_id)
        kind, value = outcome
        if kind == "ok":
            assert isinstance(value, list)
            if len(value) < entry.samples:
                self._fail(call, f"returned {len(value)} of {entry.samples} samples")
                return
            for j, completion in enumerate(value[: entry.samples]):
                call.samples[entry.first + j] = completion
                self.counters["prompt_tokens"] += completion.prompt_tokens
                self.counters["completion_tokens"] += completion.completion_tokens
            if len(call.samples) >= call.n and not call.future.done():
                answer = [call.samples[i] for i in range(call.n)]
                assert self.cache is not None
                try:
                    self.cache.put(call.key, answer)  # kept the moment it is read
                except Exception as exc:
                    self._fail(call, str(exc), exc)
                    return
                self.counters["answered"] += 1
                call.future.set_result(answer)
                self._calls.pop((call.key, call.n), None)
            return
        why = str(value)
        if kind == "retry" and call.request is not None and call.tries < self.resubmits:
            call.tries += 1
            self.counters["resubmitted"] += 1
            lines = [
                line
                for line in self.api.lines(call.key, call.request)
                if line.custom_id == entry.custom_id
            ]
            self._enqueue(call, lines)
            return
        if kind == "retry" and call.request is None:
            return  # a resumed call this run has not asked for: asked again when it is
        self._fail(call, f"{self.info.name} batch: {why}")

    def _fail(self, call: _Call, why: str, exc: BaseException | None = None) -> None:
        for cid in list(call.out):
            self._by_id.pop(cid, None)
        call.out.clear()
        self._calls.pop((call.key, call.n), None)
        if call.future.done():
            return
        self.counters["failed"] += 1
        error = exc if exc is not None else ModelError(why, reason="batch request failed")
        call.future.set_exception(error)
        call.future.exception()  # retrieved: a call nobody awaits any more logs nothing

    def run_facts(self) -> dict[str, Any]:
        return {**self.inner.run_facts(), "batch": {"provider": self.api.provider, **self.counters}}

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


def batch_summary(
    models: dict[str, Any], prices: Any = None, usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``run.json``'s ``batch`` key: per named model that went through a batch API, the steps
    whose calls it batched (calls sent per step, from ``usage``: ``run.json``'s), what it sent
    and got and what that cost at the batch price (and would have online); ``{}`` when no model
    was batched. ``models``: name → (model, settings); ``prices``: a
    :class:`~datamill.pricing.PriceTable` (default: :meth:`PriceTable.load`)."""
    from ..pricing import PriceTable

    seen: dict[int, str] = {}
    out: dict[str, Any] = {}
    for name, (m, _) in models.items():
        if not isinstance(m, BatchModel):
            continue
        if id(m) in seen:  # named settings sharing one model: its counters once
            out[name] = {"same_as": seen[id(m)]}
            continue
        seen[id(m)] = name
        if prices is None:
            prices = PriceTable.load()
        c = m.counters
        price, online = prices.for_model(m), prices.for_model(m.inner)
        tokens = (c["prompt_tokens"], c["completion_tokens"])
        steps = {
            step: int(per[name]["calls"])
            for step, per in (usage or {}).items()
            if name in per and per[name].get("calls")
        }
        out[name] = {
            "provider": m.api.provider,
            "steps": steps,
            "calls": c["answered"],
            **{
                k: c[k] for k in ("batches", "resumed_batches", "requests", "resubmitted", "failed")
            },
            "prompt_tokens": tokens[0],
            "completion_tokens": tokens[1],
            "price": None if price is None else price.as_dict(),
            "cost_usd": None if price is None else round(price.cost(*tokens), 6),
            "online_cost_usd": None if online is None else round(online.cost(*tokens), 6),
        }
    return {"batch": out} if out else {}


__all__ = ["BatchModel", "batch_summary"]

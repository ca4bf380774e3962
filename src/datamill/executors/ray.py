"""Run a pipeline's per-row segments on a Ray cluster.

Rows of a segment are cut into contiguous shards; each shard runs as a Ray task that rebuilds the
pipeline's models from their specs (its own replica, with GPUs reserved when the backend needs
them), streams its rows through the same :class:`~datamill.pipeline.runner.Runner` a local run uses,
and returns its rows, counters and failure records. The driver merges them in row-key order, so
the output has the same rows in the same order as a local run. Global steps run in the driver.

Fault tolerance: a shard whose worker dies is retried by Ray (``max_retries``); calls it finished
before dying are in the call cache, so the retry does not pay for them again. The cache is the
SQLite file at the same path on every node: on one machine that is shared; on a real cluster point
``DATAMILL_CACHE`` at a shared filesystem (or accept one cache per node).

Progress: workers report their counters to a small actor every half second; the driver adds them
into the run's one ``Stats`` so the progress bar and run.json cover all workers.

Deliberately not here: budgets (caps are enforced per process; a Ray run refuses them).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, MissingDependency

if TYPE_CHECKING:
    from ..pipeline.runner import KeyedRow, Runner
    from ..steps.base import Step

GPU_BACKENDS = ("vllm",)


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MissingDependency("--executor ray", "ray") from exc
    return ray


class RayExecutor:
    """``RayExecutor(address=None, workers=None, max_retries=3)``.

    ``address``: an existing cluster (``ray://host:10001`` or ``auto``); None starts a local one.
    ``workers``: how many shards run at once (default: the cluster's CPUs / ``cpus_per_worker``).
    """

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float | None = None,
        max_retries: int = 3,
    ) -> None:
        if workers is not None and workers < 1:
            raise ConfigError("--workers must be at least 1")
        self.address = address
        self.workers = workers
        self.cpus_per_worker = cpus_per_worker
        self.gpus_per_worker = gpus_per_worker
        self.max_retries = max_retries
        self.model_specs: dict[str, Any] = {}
        self.cache_path: str | None = None
        self._started_ray = False

    # called by arun_pipeline before the run
    def prepare(self, models: dict[str, Any], cache_path: str | None, budget: Any) -> None:
        if budget is not None:
            raise ConfigError(
                "budgets (--max-cost/--max-tokens/--deadline) are not supported with --executor ray yet; run locally to cap a run"
            )
        self.model_specs = models
        self.cache_path = cache_path
        ray = _ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address:
                kwargs["address"] = self.address
            else:
                kwargs["num_cpus"] = os.cpu_count() or 2
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise ConfigError(
                    f"cannot connect to the Ray cluster at {self.address}: {exc}"
                ) from None
            self._started_ray = True

    def close(self) -> None:
        if self._started_ray:
            _ray().shutdown()
            self._started_ray = False

    def _worker_count(self) -> int:
        if self.workers is not None:
            return self.workers
        cpus = _ray().cluster_resources().get("CPU", 1)
        return max(1, int(cpus // self.cpus_per_worker))

    def _gpus(self) -> float:
        if self.gpus_per_worker is not None:
            return self.gpus_per_worker
        specs = [s.spec for s in self.model_specs.values() if isinstance(s.spec, str)]
        return 1.0 if any(sp.split(":", 1)[0] in GPU_BACKENDS for sp in specs) else 0.0

    async def stream(
        self, runner: Runner, steps: list[Step], rows: list[KeyedRow]
    ) -> list[KeyedRow]:
        ray = _ray()
        if not rows:
            return []
        n = min(self._worker_count(), len(rows))
        size = -(-len(rows) // n)
        shards = [rows[i : i + size] for i in range(0, len(rows), size)]
        progress = _progress_actor(ray).remote()
        remote = ray.remote(_run_shard).options(
            num_cpus=self.cpus_per_worker,
            num_gpus=self._gpus(),
            max_retries=self.max_retries,
            retry_exceptions=False,
        )
        payload = {
            "models": self.model_specs,
            "cache": self.cache_path,
            "seed": runner.seed,
            "threads": max(1, int(self.cpus_per_worker)),
        }
        refs = [remote.remote(payload, steps, shard, i, progress) for i, shard in enumerate(shards)]
        base = runner.stats.counters()
        pending = list(refs)
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
            live = await asyncio.to_thread(ray.get, progress.snapshot.remote())
            _show(runner, base, live)
            if pending:
                await asyncio.sleep(0.5)
        results = await asyncio.to_thread(ray.get, refs)
        out: list[KeyedRow] = []
        _show(runner, base, {})
        stopped = None
        for shard_rows, counters, failures, shard_stopped in results:
            out.extend(shard_rows)
            runner.stats.add(counters)
            for record in failures:
                runner.failures.add(record)
            stopped = stopped or shard_stopped
        if stopped:
            runner.stopped = stopped
        out.sort(key=lambda kr: kr[0])
        return out


def _show(runner: Runner, base: dict[str, Any], live: dict[int, dict[str, Any]]) -> None:
    """Set the driver's live counters to base + the latest report of every shard."""
    from ..pipeline.stats import Stats

    for k in Stats._COUNTERS:
        setattr(runner.stats, k, base[k] + sum(c.get(k, 0) for c in live.values()))


def _progress_actor(ray: Any) -> Any:
    @ray.remote(num_cpus=0)
    class Progress:
        def __init__(self) -> None:
            self.latest: dict[int, dict[str, Any]] = {}

        def report(self, shard: int, counters: dict[str, Any]) -> None:
            self.latest[shard] = counters

        def snapshot(self) -> dict[int, dict[str, Any]]:
            return dict(self.latest)

    return Progress


def _run_shard(
    payload: dict[str, Any], steps: list[Step], rows: list[KeyedRow], shard: int, progress: Any
) -> tuple[Any, ...]:
    """One shard in a Ray worker: the same runner as a local run, with this worker's models."""
    return asyncio.run(_arun_shard(payload, steps, rows, shard, progress))


async def _arun_shard(
    payload: dict[str, Any], steps: list[Step], rows: list[KeyedRow], shard: int, progress: Any
) -> tuple[Any, ...]:
    from ..models.base import Model
    from ..models.registry import load_model
    from ..pipeline.cache import CallCache
    from ..pipeline.runner import FailureLog, ModelHandle, Runner
    from ..pipeline.stats import Stats

    stats = Stats(rows_total=len(rows))
    failures = FailureLog(None)
    cache = CallCache(payload["cache"]) if payload["cache"] else None
    built: dict[str, Model] = {}
    handles: dict[str, ModelHandle] = {}
    started: list[Model] = []
    semaphores: dict[int, asyncio.Semaphore] = {}
    try:
        for name, settings in payload["models"].items():
            spec = settings.spec
            if isinstance(spec, Model):
                model = spec
            else:
                key = repr((spec, sorted(settings.options.items())))
                if key not in built:
                    options = dict(settings.options)
                    if spec.split(":", 1)[0] == "llamacpp":
                        options.setdefault("n_threads", payload["threads"])
                    built[key] = load_model(spec, **options)
                model = built[key]
            if model not in started:
                await model.start()
                started.append(model)
            sem = semaphores.setdefault(
                id(model), asyncio.Semaphore(max(1, model.info.max_concurrency))
            )
            handles[name] = ModelHandle(name, model, settings.sampling, cache, stats, None, sem)
        runner = Runner(handles, stats, failures, seed=payload["seed"])
        work = asyncio.create_task(runner.stream(steps, rows))
        last = 0.0
        while not work.done():
            await asyncio.wait({work}, timeout=0.5)
            if time.monotonic() - last >= 0.5:
                progress.report.remote(shard, stats.counters())
                last = time.monotonic()
        out = list(work.result())  # a RowSpool: its files stay in this worker
        return out, stats.counters(), failures.records, runner.stopped
    finally:
        for m in started:
            await m.close()
        if cache is not None:
            cache.close()

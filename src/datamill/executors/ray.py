"""Run a pipeline's per-row segments on a Ray cluster.

Rows of a segment are cut into contiguous shards; each shard runs as a Ray task that rebuilds the
pipeline's models from their specs (its own replica, with GPUs reserved when the backend needs
them), streams its rows through the same :class:`~datamill.pipeline.runner.Runner` a local run uses,
and returns its rows, counters and failure records. What a worker does with its shard is the
run's :class:`~datamill.executors.base.ShardJob` (``pipeline.assembly``): this module only
distributes the shards and gathers the results. The driver merges them in row-key order, so
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
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, MissingDependency
from ..rows import KeyedRow
from .base import SegmentRunner, ShardJob, ShardResult

if TYPE_CHECKING:
    from ..steps.base import Step


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

    local = False  # each worker builds and starts its own model replicas (``ShardJob``)

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
        self.job: ShardJob | None = None
        self._started_ray = False

    def prepare(self, job: ShardJob, budget: object | None) -> None:
        """Connect to (or start) the cluster; ``job`` is what each shard's worker runs."""
        if budget is not None:
            raise ConfigError(
                "budgets (--max-cost/--max-total-tokens/--deadline) are not supported with --executor ray yet; run locally to cap a run"
            )
        self.job = job
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
        return 1.0 if self.job is not None and self.job.needs_gpu() else 0.0

    async def stream(
        self, runner: SegmentRunner, steps: list[Step], rows: Iterable[KeyedRow]
    ) -> list[KeyedRow]:
        ray = _ray()
        if self.job is None:
            raise RuntimeError("RayExecutor.stream before prepare: the run prepares its executor")
        rows = list(rows)
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
        threads = max(1, int(self.cpus_per_worker))
        refs = [
            remote.remote(self.job, steps, shard, i, progress, threads)
            for i, shard in enumerate(shards)
        ]
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


def _show(runner: SegmentRunner, base: dict[str, Any], live: dict[int, dict[str, Any]]) -> None:
    """Set the driver's live counters to base + the latest report of every shard."""
    for k, v in base.items():
        if isinstance(v, int):  # the plain counters; the per-step tables come with the results
            setattr(runner.stats, k, v + sum(c.get(k, 0) for c in live.values()))


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
    job: ShardJob,
    steps: list[Step],
    rows: list[KeyedRow],
    shard: int,
    progress: Any,
    threads: int,
) -> ShardResult:
    """One shard in a Ray worker: the run's own shard job, reporting to the progress actor."""
    return job.run(steps, rows, lambda counters: progress.report.remote(shard, counters), threads)

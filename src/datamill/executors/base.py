"""The executor seam: where the per-row segments of a run stream.

The runner hands each per-row segment (steps between global steps) to its :class:`Executor`:
:class:`LocalExecutor` streams the rows in this process (the default), ``executors.ray`` cuts
them into shards for Ray workers. An executor that runs shards elsewhere gets a
:class:`ShardJob` from the run (``prepare``): what a worker does with a shard — build the models,
stream, count — is the run's business (``pipeline.assembly``), not the executor's, so this
package never imports ``datamill.pipeline``.

Deliberately not here: global steps (they always run in the driver), building models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from ..rows import KeyedRow

if TYPE_CHECKING:
    from ..steps.base import Step

#: what a shard sends back: its rows, its counters (``Stats.counters``), its failure records and
#: why it stopped early (a budget), if it did
ShardResult = tuple[list[KeyedRow], dict[str, Any], list[dict[str, Any]], str | None]


class RunCounters(Protocol):
    """The run's counters as an executor adds to them (``pipeline.stats.Stats`` is one)."""

    def counters(self) -> dict[str, Any]: ...

    def add(self, counters: dict[str, Any]) -> None: ...


class FailureSink(Protocol):
    """Where failure records go (``pipeline.runner.FailureLog`` is one)."""

    def add(self, record: dict[str, Any]) -> None: ...


class SegmentRunner(Protocol):
    """What an executor asks of the run it serves (``pipeline.runner.Runner`` is one)."""

    stopped: str | None

    @property
    def stats(self) -> RunCounters: ...

    @property
    def failures(self) -> FailureSink: ...

    async def stream(self, steps: list[Step], rows: Iterable[KeyedRow]) -> Iterable[KeyedRow]: ...


class ShardJob(Protocol):
    """A shard's work in a worker process (``pipeline.assembly.ShardJob`` is the one a run makes).

    ``run``: build and start this worker's models, stream ``rows`` through ``steps``, call
    ``report`` with the counters now and then, close the models; ``threads``: CPU threads a
    local backend may use in this worker."""

    def backends(self) -> list[str]: ...

    def needs_gpu(self) -> bool:
        """Whether a worker must reserve a GPU (a model's backend declares ``Capabilities.gpu``)."""
        ...

    def run(
        self,
        steps: list[Step],
        rows: list[KeyedRow],
        report: Callable[[dict[str, Any]], None],
        threads: int,
    ) -> ShardResult: ...


class Executor(Protocol):
    """Streams the per-row segments of one run.

    ``local``: True when the segments run in this process, with the models the run started
    (a remote executor's workers build their own). ``prepare`` is called once before the run
    (``budget``: the run's cap, or None), ``close`` once after it."""

    local: bool

    def prepare(self, job: ShardJob, budget: object | None) -> None: ...

    async def stream(
        self, runner: SegmentRunner, steps: list[Step], rows: Iterable[KeyedRow]
    ) -> Iterable[KeyedRow]:
        """The segment's surviving rows in key order (the local runner's are spooled to disk)."""

    def close(self) -> None: ...


class LocalExecutor:
    """Streams every segment in this process, through the run's own runner (the default)."""

    local = True

    def prepare(self, job: ShardJob, budget: object | None) -> None:
        """Nothing to prepare: the run's models and cache serve the rows here."""

    async def stream(
        self, runner: SegmentRunner, steps: list[Step], rows: Iterable[KeyedRow]
    ) -> Iterable[KeyedRow]:
        return await runner.stream(steps, rows)

    def close(self) -> None:
        """Nothing to release."""


__all__ = [
    "Executor",
    "FailureSink",
    "LocalExecutor",
    "RunCounters",
    "SegmentRunner",
    "ShardJob",
    "ShardResult",
]

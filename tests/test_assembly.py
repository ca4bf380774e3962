"""One run assembly (``pipeline.assembly``): each distinct model built once, started once and
closed once, for ``run``, ``plan`` and a Ray shard's worker alike."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from datamill import ExactDedup, FakeModel, Pipeline, Request, TextGeneration
from datamill.errors import ConfigError
from datamill.executors.base import LocalExecutor
from datamill.pipeline.assembly import RunAssembly, ShardJob, build_models
from datamill.pipeline.graph import ModelSettings
from datamill.pricing import PriceTable
from datamill.rows import KeyedRow


class CountingModel(FakeModel):
    """A fake that counts its ``start`` and ``close`` calls; ``fail_start`` raises at start."""

    def __init__(self, *args: Any, fail_start: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.starts = self.closes = 0
        self.fail_start = fail_start

    async def start(self) -> None:
        self.starts += 1
        if self.fail_start:
            raise ConfigError("this model cannot start")

    async def close(self) -> None:
        self.closes += 1


def answer(request: Request, i: int) -> str:
    return "an answer of a few words"


def two_steps(models: dict[str, Any], rows: int = 4) -> Pipeline:
    """Two model steps on two named models (``a`` then ``b``)."""
    return Pipeline(
        [
            TextGeneration(output="question", model="a"),
            TextGeneration(template="{{ question }}", output="response", model="b"),
        ],
        source=[{"instruction": f"ask {i}"} for i in range(rows)],
        models=models,
    )


def test_plan_starts_and_closes_each_model_once() -> None:
    model = CountingModel(answer)
    forecast = two_steps({"a": model, "b": model}).plan(
        preview_rows=2, prices=PriceTable(), cache=False
    )
    assert (model.starts, model.closes) == (1, 1)
    assert len(model.calls) == 2 * 2  # the preview: 2 rows, 2 steps
    assert forecast.calls == 2 * 4


def test_run_starts_and_closes_a_shared_model_once_and_distinct_ones_each() -> None:
    shared, other = CountingModel(answer), CountingModel(answer, name="other")
    result = two_steps({"a": shared, "b": shared}).run(None, cache=False, progress=False)
    assert len(result.rows) == 4 and (shared.starts, shared.closes) == (1, 1)
    shared2 = CountingModel(answer)
    two_steps({"a": shared2, "b": other}).run(None, cache=False, progress=False)
    assert (shared2.starts, shared2.closes, other.starts, other.closes) == (1, 1, 1, 1)


def test_a_model_that_cannot_start_stops_the_run_and_only_started_ones_are_closed() -> None:
    good, bad = CountingModel(answer), CountingModel(answer, name="bad", fail_start=True)
    with pytest.raises(ConfigError, match="cannot start"):
        two_steps({"a": good, "b": bad}).run(None, cache=False, progress=False)
    assert (good.starts, good.closes) == (1, 1)
    assert (bad.starts, bad.closes) == (1, 0)
    assert good.calls == []  # nothing was sent


def test_named_settings_of_one_spec_and_options_share_one_model() -> None:
    built = build_models(
        {
            "judge": ModelSettings("fake:x", sampling={"temperature": 0.0}),
            "writer": ModelSettings("fake:x", sampling={"temperature": 1.0}),
            "other": ModelSettings("fake:x", options={"max_concurrency": 2}),
        }
    )
    assert built["judge"][0] is built["writer"][0]
    assert built["other"][0] is not built["judge"][0]
    assert built["writer"][1].sampling == {"temperature": 1.0}
    # an override replaces every spec, so all three become one model of the override
    over = build_models({"a": ModelSettings("fake:x"), "b": ModelSettings("fake:y")}, "fake:z")
    assert over["a"][0] is over["b"][0] and over["a"][0].info.name == "z"


def test_handles_of_one_model_share_one_concurrency_bound() -> None:
    model = CountingModel(answer, max_concurrency=3)

    async def handles() -> list[Any]:
        async with RunAssembly(
            {"a": ModelSettings(model), "b": ModelSettings(model)}, cache=False
        ) as run:
            return [run.handles["a"]._semaphore, run.handles["b"]._semaphore]

    a, b = asyncio.run(handles())
    assert a is b
    assert (model.starts, model.closes) == (1, 1)


def test_leaving_twice_closes_each_model_once() -> None:
    model = CountingModel(answer)

    async def go() -> None:
        run = RunAssembly({"a": ModelSettings(model)}, cache=False)
        async with run:
            assert isinstance(run.runner.executor, LocalExecutor)
        await run.aclose()

    asyncio.run(go())
    assert (model.starts, model.closes) == (1, 1)


def test_a_shard_job_gives_the_rows_of_a_local_run(tmp_path: Any) -> None:
    pipeline = two_steps({"a": "fake", "b": "fake"}, rows=5)
    local = pipeline.run(None, cache=False, progress=False)
    job = ShardJob(dict(pipeline.models), str(tmp_path / "calls.sqlite"), pipeline.seed)
    assert pipeline.source is not None
    keyed: list[KeyedRow] = [((i,), r) for i, r in enumerate(pipeline.source.load())]
    reports: list[dict[str, Any]] = []
    rows, counters, failures, stopped = job.run(pipeline.steps, keyed, reports.append, 1)
    assert [r for _, r in rows] == local.rows
    assert counters["model_calls"] == local.stats.model_calls == 10
    assert failures == [] and stopped is None
    assert reports and reports[-1]["model_calls"] == 10
    assert job.backends() == ["fake", "fake"]


class RecordingExecutor(LocalExecutor):
    """Streams here, recording each segment it is handed and its prepare/close calls."""

    def __init__(self) -> None:
        self.segments: list[tuple[list[str], int]] = []
        self.prepared = self.closed = 0

    def prepare(self, job: Any, budget: object | None) -> None:
        self.prepared += 1
        assert sorted(job.models) == ["a", "b"] and job.backends() == []

    async def stream(self, runner: Any, steps: list[Any], rows: Any) -> list[Any]:
        rows = list(rows)
        self.segments.append(([s.label for s in steps], len(rows)))
        return await super().stream(runner, steps, rows)

    def close(self) -> None:
        self.closed += 1


def test_the_runner_hands_each_per_row_segment_to_its_executor() -> None:
    model = CountingModel(answer)
    pipeline = Pipeline(
        [
            TextGeneration(output="question", model="a"),
            ExactDedup(columns=["question"]),
            TextGeneration(template="{{ question }}", output="response", model="b"),
        ],
        source=[{"instruction": f"ask {i}"} for i in range(3)],
        models={"a": model, "b": model},
    )
    executor = RecordingExecutor()
    result = pipeline.run(None, cache=False, progress=False, executor=executor)
    # every question is the same text: the global dedup between the segments keeps one row
    assert executor.segments == [(["text_generation"], 3), (["text_generation_2"], 1)]
    assert len(result.rows) == 1 and (executor.prepared, executor.closed) == (1, 1)
    assert (model.starts, model.closes) == (1, 1)
    local = pipeline.run(None, cache=False, progress=False, executor="local")
    assert local.rows == result.rows

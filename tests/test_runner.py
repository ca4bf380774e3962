"""The streaming runner and the call cache, on the fake model."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from datamill import (
    CallCache,
    Completion,
    FakeModel,
    FormatSFT,
    Pipeline,
    Request,
    TextGeneration,
    step,
)
from datamill.errors import ModelUnavailable
from datamill.steps.base import Context, Step


def basic(model: FakeModel, rows: int = 4) -> Pipeline:
    return Pipeline(
        [
            TextGeneration(output="question", truncated="keep"),
            TextGeneration(template="{{ question }}", output="response"),
            FormatSFT(instruction="question", response="response"),
        ],
        source=[{"instruction": f"seed {i}"} for i in range(rows)],
        models={"default": model},
    )


def test_rows_stream_to_next_step_without_waiting_for_the_batch(tmp_path: Path) -> None:
    events: list[tuple[str, str]] = []

    class Gated(FakeModel):
        """The slow row's call returns only once the fast row has reached the second step (an
        ordering by events, not by sleeps racing each other; the bound only stops a hang)."""

        async def generate(self, request: Request) -> list[Completion]:
            if request.messages[-1]["content"] == "slow":  # type: ignore[index]
                for _ in range(6000):
                    if events:
                        break
                    await asyncio.sleep(0.01)
            return await super().generate(request)

    model = Gated(lambda r, i: r.messages[-1]["content"] + "!")  # type: ignore[index]

    @step(reads=["answer"])
    def record(row: dict) -> dict:
        events.append(("second", row["instruction"]))
        return row

    p = Pipeline(
        [TextGeneration(output="answer"), record],
        source=[{"instruction": "slow"}, {"instruction": "fast"}],
        models={"default": model},
    )
    result = p.run(None)
    # the fast row reached the second step before the slow row had left the first one
    assert events == [("second", "fast"), ("second", "slow")]
    # while output order follows the source
    assert [r["instruction"] for r in result.rows] == ["slow", "fast"]


def test_second_run_makes_no_model_calls(tmp_path: Path) -> None:
    model = FakeModel()
    first = basic(model).run(tmp_path / "a")
    assert first.stats.model_calls == 8 and first.stats.cache_hits == 0
    again = basic(FakeModel()).run(tmp_path / "a")
    assert again.stats.model_calls == 0
    assert again.stats.cache_hits == 8
    assert again.rows == first.rows
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["model_calls"] == 0 and run["rows"] == 4


def test_cache_shared_between_pipelines_and_no_cache_bypasses(tmp_path: Path) -> None:
    basic(FakeModel()).run(tmp_path / "a")
    other = Pipeline(
        [TextGeneration(output="question", truncated="keep")],
        source=[{"instruction": f"seed {i}"} for i in range(4)],
        models={"default": FakeModel()},
    )
    assert other.run(tmp_path / "b").stats.model_calls == 0
    fresh = FakeModel()
    assert basic(fresh).run(tmp_path / "c", cache=False).stats.model_calls == 8
    assert len(fresh.calls) == 8


def test_interrupted_run_resumes_without_repeating_finished_calls(tmp_path: Path) -> None:
    sent: list[str] = []

    class Flaky(FakeModel):
        def __init__(self, die_after: int | None) -> None:
            super().__init__(max_concurrency=1)
            self.die_after = die_after

        async def generate(self, request: Request):  # type: ignore[override]
            if self.die_after is not None and len(self.calls) >= self.die_after:
                raise KeyboardInterrupt
            result = await super().generate(request)
            sent.append(request.cache_payload())
            return result

    with pytest.raises(KeyboardInterrupt):
        basic(Flaky(die_after=5)).run(tmp_path / "o")
    assert len(sent) == 5
    resumed = basic(Flaky(die_after=None)).run(tmp_path / "o")
    assert resumed.stats.cache_hits == 5
    assert resumed.stats.model_calls == 3
    assert len(sent) == len(set(sent)) == 8  # no call was ever sent twice
    assert len(resumed.rows) == 4


def test_identical_calls_in_flight_are_sent_once() -> None:
    class Ask(Step):
        kind = "ask"

        def models(self) -> list[str]:
            return ["default"]

        async def process(self, row: dict, ctx: Context) -> list[dict]:
            [c] = await ctx.generate("default", Request.chat(row["q"], seed=1))
            return [{**row, "a": c.text}]

    model = FakeModel(latency=0.05)
    result = Pipeline([Ask()], source=[{"q": "same"}] * 3, models={"default": model}).run(None)
    assert len(result.rows) == 3
    assert len({r["a"] for r in result.rows}) == 1
    assert len(model.calls) == 1
    assert result.stats.model_calls == 1 and result.stats.cache_hits == 2


def test_failures_are_records_with_reason_and_raw_output(tmp_path: Path) -> None:
    def handler(req: Request, i: int) -> str:
        text = req.messages[-1]["content"]  # type: ignore[index]
        return "" if "bad" in text else "fine answer"

    p = Pipeline(
        [TextGeneration(output="g")],
        source=[{"instruction": "good"}, {"instruction": "bad"}],
        models={"default": FakeModel(handler)},
    )
    result = p.run(tmp_path / "o")
    assert [r["instruction"] for r in result.rows] == ["good"]
    records = [
        json.loads(line) for line in (tmp_path / "o" / "failures.jsonl").read_text().splitlines()
    ]
    assert len(records) == 1
    assert records[0]["reason"] == "empty completion"
    assert records[0]["step"] == "text_generation"
    assert records[0]["row"] == {"instruction": "bad"}
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["failed_rows"] == 1 and run["failures"] == {"empty completion": 1}


def test_unreachable_model_stops_the_run_at_once(tmp_path: Path) -> None:
    class Down(FakeModel):
        async def generate(self, request: Request):  # type: ignore[override]
            self.calls.append(request)
            raise ModelUnavailable("cannot reach http://127.0.0.1:9: connection refused")

    model = Down(max_concurrency=1)
    p = Pipeline(
        [TextGeneration(output="g")],
        source=[{"instruction": str(i)} for i in range(50)],
        models={"default": model},
    )
    with pytest.raises(ModelUnavailable):
        p.run(tmp_path / "o")
    assert len(model.calls) < 5


def test_expansion_keys_keep_order_and_cache_file_is_sqlite(isolated_cache: Path) -> None:
    class Split(Step):
        kind = "split"

        def produces(self) -> list[str]:
            return ["part"]

        async def process(self, row: dict, ctx: Context) -> list[dict]:
            return [{**row, "part": p} for p in row["text"].split()]

    p = Pipeline(
        [Split(), TextGeneration(template="{{ part }}", output="g")],
        source=[{"text": "a b c"}, {"text": "d e"}],
        models={"default": FakeModel(latency=lambda r: 0.01 * len(r.messages[-1]["content"]))},
    )  # type: ignore[index]
    result = p.run(None)
    assert [r["part"] for r in result.rows] == ["a", "b", "c", "d", "e"]
    assert len(CallCache(isolated_cache)) == 5


def test_pipeline_is_usable_from_a_running_event_loop() -> None:
    async def inside() -> int:
        return len(basic(FakeModel(), rows=2).run(None).rows)

    assert asyncio.run(inside()) == 2


def test_asking_for_more_samples_keeps_the_ones_already_paid_for(isolated_cache: Path) -> None:
    class Sample(Step):
        kind = "sample"
        n: int = 1

        def models(self) -> list[str]:
            return ["default"]

        def produces(self) -> list[str]:
            return ["samples"]

        async def process(self, row: dict, ctx: Context) -> list[dict]:
            done = await ctx.generate("default", Request.chat(row["q"], seed=3, n=self.n))
            return [{**row, "samples": [c.text for c in done]}]

    counter = iter(range(1000))
    model = FakeModel(lambda r, i: f"answer {next(counter)}")
    one = Pipeline([Sample(n=1)], source=[{"q": "x"}], models={"default": model}).run(None)
    two = Pipeline([Sample(n=2)], source=[{"q": "x"}], models={"default": model}).run(None)
    assert two.rows[0]["samples"][0] == one.rows[0]["samples"][0]
    assert len(set(two.rows[0]["samples"])) == 2
    again = Pipeline([Sample(n=2)], source=[{"q": "x"}], models={"default": model}).run(None)
    assert again.rows[0]["samples"] == two.rows[0]["samples"] and again.stats.model_calls == 0

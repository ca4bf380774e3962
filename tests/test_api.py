"""The Python API: build a pipeline without YAML, check it, preview rows, run it, get a
``datasets.Dataset``; from plain code and from inside a running event loop (Jupyter)."""

from __future__ import annotations

import asyncio
import importlib
import json
from pathlib import Path

import pytest

import datamill
from datamill import Budget, Expand, FakeModel, FormatSFT, Pipeline, Request, TextGeneration, step
from datamill.errors import ConfigError, PipelineError
from datamill.models.base import Completion


def build(model: FakeModel, rows: int = 4) -> Pipeline:
    @step(reads=["question"], writes=["question"])
    def tidy(row: dict) -> dict:
        return {**row, "question": row["question"].strip().rstrip("?") + "?"}

    return Pipeline(
        [
            TextGeneration(output="question", max_tokens=32, truncated="keep"),
            tidy,
            TextGeneration(
                template="Answer briefly: {{ question }}", output="response", max_tokens=64
            ),
            FormatSFT(instruction="question", response="response"),
        ],
        source=[{"instruction": f"Ask about topic {i}"} for i in range(rows)],
        models={"default": model},
    )


class Tracked(FakeModel):
    """A fake model that says when it was started and freed."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.events: list[str] = []

    async def start(self) -> None:
        self.events.append("start")

    async def close(self) -> None:
        self.events.append("close")


def test_public_api_is_sorted_and_every_name_resolves() -> None:
    names = datamill.__all__
    assert names == sorted(names) and len(set(names)) == len(names)
    for name in names:
        assert getattr(datamill, name) is not None
    for name in (
        "Pipeline",
        "Budget",
        "Forecast",
        "PriceTable",
        "push_to_hub",
        "SelfInstruct",
        "EvolInstruct",
        "Magpie",
        "ResponsePool",
        "EvolQuality",
        "UltraFeedback",
        "CritiqueRewrite",
        "FormatDPO",
        "FormatSFT",
    ):
        assert name in names
    package = Path(datamill.__file__).parent
    assert (package / "py.typed").exists()
    # `from datamill import *` gives exactly __all__ (nothing else leaks in)
    namespace: dict[str, object] = {}
    exec("from datamill import *", namespace)
    assert sorted(k for k in namespace if not k.startswith("__")) == sorted(names)


def test_step_classes_match_the_recipe_registry() -> None:
    from datamill.recipes.registry import STEP_KINDS

    for kind, target in STEP_KINDS.items():
        module, _, cls = target.partition(":")
        if cls in datamill.__all__:
            assert getattr(datamill, cls) is getattr(
                importlib.import_module(f"datamill.{module}"), cls
            ), kind
            assert getattr(datamill, cls).kind == kind


def test_build_check_preview_run_to_dataset(tmp_path: Path) -> None:
    model = FakeModel()
    p = build(model, rows=5)
    flow = p.check()  # the source's columns; calls no model
    assert flow[-1][-2:] == ["messages", "prompt_id"] and model.calls == []

    preview = p.preview(2, progress=False)
    assert len(preview.rows) == 2 and preview.output is None and len(model.calls) == 4

    result = p.run(tmp_path / "out", progress=False)
    assert len(result.rows) == 5  # the preview's limit did not stick to the pipeline
    assert result.stats.cache_hits == 4 and result.stats.model_calls == 6  # the preview was reused
    ds = result.to_dataset()
    import datasets

    assert isinstance(ds, datasets.Dataset) and len(ds) == 5
    assert {"messages", "question", "response", "prompt_id"} <= set(ds.column_names)
    assert ds[0]["messages"][0]["role"] == "user" and ds[0]["question"].endswith("?")
    assert (tmp_path / "out" / "run.json").exists()


def test_check_fails_before_any_call() -> None:
    model = FakeModel()
    p = Pipeline(
        [TextGeneration(template="{{ topic }}", output="g")],
        source=[{"instruction": "x"}],
        models={"default": model},
    )
    with pytest.raises(PipelineError, match="needs column 'topic'"):
        p.check()
    with pytest.raises(PipelineError):
        p.run(None, progress=False)
    assert model.calls == []


def test_run_inside_a_running_event_loop() -> None:
    """Jupyter runs an event loop already: run() works there, and so does ``await arun()``."""

    async def notebook_cell() -> tuple[int, int]:
        sync = build(FakeModel(), rows=3).run(None, progress=False)  # no nest_asyncio needed
        awaited = await build(FakeModel(), rows=3).arun(None, progress=False, cache=False)
        return len(sync.rows), len(awaited.rows)

    assert asyncio.run(notebook_cell()) == (3, 3)
    assert "nest_asyncio" not in importlib.import_module("sys").modules


def test_models_are_freed_when_done(tmp_path: Path) -> None:
    model = Tracked()
    build(model).run(tmp_path / "a", progress=False)
    assert model.events == ["start", "close"]

    def interrupt(request: Request, sample: int) -> str:
        raise KeyboardInterrupt  # what Ctrl-C raises in the middle of a call

    failing = Tracked(interrupt)
    with pytest.raises(KeyboardInterrupt):
        build(failing).run(tmp_path / "b", progress=False, cache=False)
    assert failing.events == ["start", "close"]  # freed even when the run is interrupted


def test_progress_bar(capsys: pytest.CaptureFixture[str]) -> None:
    build(FakeModel(), rows=4).run(None, progress=True, cache=False)
    err = capsys.readouterr().err
    assert "datamill" in err and "4/4" in err and "calls 8" in err
    build(FakeModel(), rows=4).run(None, cache=False)  # "auto": no bar outside Jupyter
    assert capsys.readouterr().err == ""
    with pytest.raises(ConfigError, match="progress"):
        build(FakeModel(), rows=1).run(None, progress="sometimes", cache=False)


def test_budget_and_forecast_from_python(tmp_path: Path) -> None:
    def ten(request: Request, i: int) -> str:
        return "word " * 10

    p = build(FakeModel(ten, max_concurrency=1), rows=6)
    forecast = p.plan(preview_rows=2)
    assert forecast.calls == 12 and forecast.cost == 0.0
    result = p.run(
        tmp_path / "o", budget=Budget(max_total_tokens=150), forecast=forecast, progress=False
    )
    assert result.stopped is not None and "--max-total-tokens" in result.stopped
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["complete"] is False and run["forecast"]["totals"]["calls"] == 12
    finished = p.run(tmp_path / "o", progress=False)
    assert finished.stopped is None and len(finished.rows) == 6


def test_expand_and_row_level_failures_from_python(tmp_path: Path) -> None:
    def handler(request: Request, i: int) -> str | Completion:
        text = request.messages[-1]["content"]  # type: ignore[index]
        return "" if "b" in text else f"answer to {text}"

    p = Pipeline(
        [Expand(columns=["items"], rename={"items": "instruction"}), TextGeneration(output="g")],
        source=[{"items": ["a", "b", "c"]}],
        models={"default": FakeModel(handler)},
    )
    result = p.run(None, progress=False)
    assert [r["instruction"] for r in result.rows] == ["a", "c"]
    assert (
        result.failures[0]["reason"] == "empty completion"
        and result.failures[0]["row"]["instruction"] == "b"
    )


@pytest.mark.real
def test_embedded_model_is_freed_after_a_run(tmp_path: Path) -> None:
    from datamill.models.llamacpp import LlamaCppModel

    model = LlamaCppModel(n_ctx=1024)
    asyncio.run(model.start())  # loaded, as a notebook would leave it
    assert model._hosts
    p = Pipeline(
        [TextGeneration(output="g", max_tokens=8, truncated="keep")],
        source=[{"instruction": "Say hi."}],
        models={"default": model},
    )
    result = p.run(None, progress=False, cache=False)
    assert len(result.rows) == 1 and result.rows[0]["g"]
    assert model._hosts == []  # the engines (and their weights) are released when the run ends


def test_an_interrupted_run_leaves_no_task_error_for_the_gc_to_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Ctrl-C in a row's call: every task's outcome is retrieved by the run, so nothing is
    logged later ("Task exception was never retrieved") from whatever code the gc interrupts."""
    import gc
    import logging

    def interrupt(request: Request, sample: int) -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(FakeModel(interrupt), rows=3).run(tmp_path / "o", progress=False, cache=False)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        gc.collect()
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []

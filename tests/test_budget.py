"""Budgets: --max-total-tokens / --max-cost / --deadline stop a run cleanly, keep what finished, and the
same command resumes it without repeating a call."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from datamill import CallCache, FakeModel, FormatSFT, GlobalStep, Pipeline, Request, TextGeneration
from datamill.cli import main
from datamill.errors import BudgetExceeded, ConfigError, ModelError
from datamill.models.base import Completion
from datamill.pipeline.budget import LEARN_AFTER, Budget, parse_duration, prompt_tokens, render_chat
from datamill.pricing import Price, PriceTable

ROWS = 6


def chain(model: FakeModel, rows: int = ROWS, extra: list | None = None) -> Pipeline:
    return Pipeline(
        [
            TextGeneration(output="question", truncated="keep", max_tokens=16),
            *(extra or []),
            TextGeneration(template="{{ question }}", output="response", max_tokens=16),
            FormatSFT(instruction="question", response="response"),
        ],
        source=[{"instruction": f"seed number {i}"} for i in range(rows)],
        models={"default": model},
    )


def ten_words(request: Request, i: int) -> str:
    return " ".join(["word"] * 10)


def no_prices() -> PriceTable:
    return PriceTable(user={}, defaults={})


# -- parsing and validation ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("10m", 600), ("1h30m", 5400), ("1.5h", 5400), ("2m 30s", 150)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10x", "0", "-5", "0s", "h"])
def test_bad_durations_are_one_clear_line(text: str) -> None:
    with pytest.raises(ConfigError, match="--deadline") as info:
        parse_duration(text)
    assert "\n" not in str(info.value)


def test_bad_caps_are_refused_when_the_budget_is_made() -> None:
    with pytest.raises(ConfigError, match="--max-total-tokens"):
        Budget(max_total_tokens=0, prices=no_prices())
    with pytest.raises(ConfigError, match="--max-cost"):
        Budget(max_cost=-1, prices=no_prices())


# -- estimates ------------------------------------------------------------------------------------
def test_prompt_tokens_use_the_models_tokenizer_and_chat_template() -> None:
    model = FakeModel()  # counts whitespace-separated words; has a ChatML-like template
    request = Request.chat("a b c", system="be brief")
    rendered = render_chat(model.info.chat_template, request.messages or ())
    assert (
        rendered is not None
        and "<|im_start|>system" in rendered
        and rendered.count("<|im_start|>") == 2
    )
    assert prompt_tokens(model, request) == model.count_tokens(rendered)
    assert prompt_tokens(model, Request(prompt="x y z w")) == 4


def test_completion_estimate_is_max_tokens_until_learned_then_the_mean() -> None:
    model = FakeModel()
    handle = SimpleNamespace(model=model, name="default")
    budget = Budget(max_total_tokens=10**9, prices=no_prices())
    request = Request.chat("hello there", max_tokens=100)
    assert budget.completion_estimate(model, request) == 100
    assert budget.completion_estimate(model, request.with_options(n=3)) == 300
    for _ in range(LEARN_AFTER):
        budget.before_call(handle, request)  # type: ignore[arg-type]
        budget.after_call(handle, [Completion("x", completion_tokens=20, prompt_tokens=5)])  # type: ignore[arg-type]
    assert budget.completion_estimate(model, request) == 20
    assert (
        budget.completion_estimate(model, request.with_options(max_tokens=50)) == 50
    )  # another kind
    assert budget.tokens == LEARN_AFTER * 25
    assert budget._reserved() == (0, 0.0)


def test_a_cap_below_one_call_says_to_raise_it() -> None:
    model = FakeModel()
    handle = SimpleNamespace(model=model, name="default")
    budget = Budget(max_total_tokens=50, prices=no_prices())
    with pytest.raises(BudgetExceeded, match="below one call's estimate"):
        budget.before_call(handle, Request.chat("hi", max_tokens=100))  # type: ignore[arg-type]
    # once stopped, every later call is refused, even a small one
    with pytest.raises(BudgetExceeded):
        budget.before_call(handle, Request.chat("hi", max_tokens=1))  # type: ignore[arg-type]
    assert budget.as_dict()["stopped_by"] == "max_total_tokens"


# -- end to end -----------------------------------------------------------------------------------
def test_token_cap_stops_cleanly_and_the_run_resumes_without_repeating_calls(
    tmp_path: Path,
) -> None:
    sent: list[str] = []

    class Counting(FakeModel):
        async def generate(self, request: Request) -> list[Completion]:
            sent.append(request.cache_payload())
            return await super().generate(request)

    out = tmp_path / "out"
    budget = Budget(max_total_tokens=120, prices=no_prices())
    first = chain(Counting(ten_words, max_concurrency=1)).run(out, budget=budget, progress=False)

    assert first.stopped is not None and "--max-total-tokens 120" in first.stopped
    assert 0 < len(first.rows) < ROWS
    assert all(
        set(r) >= {"messages", "question", "response"} for r in first.rows
    )  # only finished rows
    assert budget.tokens <= 120  # the cap held
    assert first.stats.prompt_tokens + first.stats.completion_tokens == budget.tokens
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] is False and "--max-total-tokens" in run["stopped_by"]
    assert (
        run["budget"]["stopped_by"] == "max_total_tokens"
        and run["budget"]["caps"]["max_total_tokens"] == 120
    )
    assert pq.read_table(out / "data" / "train-00000-of-00001.parquet").num_rows == len(first.rows)
    assert run["failed_rows"] == 0  # rows cut by the cap are not failures
    calls_before = len(sent)

    second = chain(Counting(ten_words, max_concurrency=1)).run(out, progress=False)
    assert second.stopped is None and len(second.rows) == ROWS
    assert second.stats.cache_hits == calls_before  # everything the first run paid for is reused
    assert len(sent) == 2 * ROWS and len(set(sent)) == len(sent)  # no call was ever sent twice
    assert json.loads((out / "run.json").read_text())["complete"] is True
    assert all(r in second.rows for r in first.rows)  # what was written is kept as it was


def test_cost_cap_uses_the_price_table(tmp_path: Path) -> None:
    prices = PriceTable(
        user={"fake": Price(input=1000.0, output=1000.0)}, defaults={}
    )  # $0.001 per token
    model = FakeModel(ten_words, max_concurrency=1)
    budget = Budget(max_cost=0.1, prices=prices)
    result = chain(model).run(tmp_path / "o", budget=budget, progress=False)
    assert result.stopped is not None and "--max-cost $0.1000" in result.stopped
    assert budget.cost is not None and 0 < budget.cost <= 0.1
    tokens = result.stats.prompt_tokens + result.stats.completion_tokens
    assert budget.cost == pytest.approx(tokens * 0.001)
    assert json.loads((tmp_path / "o" / "run.json").read_text())["budget"]["used"][
        "cost_usd"
    ] == pytest.approx(budget.cost)


def test_cost_cap_with_an_unpriced_model_stops_before_any_call(tmp_path: Path) -> None:
    class Remote(FakeModel):
        backend = "somecloud"
        CAPABILITIES = replace(FakeModel.CAPABILITIES, local=False)  # a paid API, not free

    model = Remote(ten_words)
    result = chain(model).run(
        tmp_path / "o", budget=Budget(max_cost=1.0, prices=no_prices()), progress=False
    )
    assert model.calls == []
    assert result.stopped is not None and "no price is known" in result.stopped
    assert result.rows == []


def test_local_models_cost_nothing(tmp_path: Path) -> None:
    budget = Budget(max_cost=0.0, prices=PriceTable())
    result = chain(FakeModel(ten_words)).run(tmp_path / "o", budget=budget, progress=False)
    assert result.stopped is None and len(result.rows) == ROWS
    assert budget.cost == 0.0


def test_deadline_uses_wall_clock_and_the_learned_call_time(tmp_path: Path) -> None:
    now = [0.0]

    def slow(request: Request, i: int) -> str:
        now[0] += 4.0  # each call takes 4 "seconds"
        return "word " * 5

    def run_with(deadline: float) -> tuple[Budget, FakeModel]:
        now[0] = 0.0
        model = FakeModel(slow, max_concurrency=1)
        budget = Budget(deadline=deadline, clock=lambda: now[0], prices=no_prices())
        p = Pipeline(
            [TextGeneration(output="g", max_tokens=8)],
            source=[{"instruction": f"q{i}"} for i in range(10)],
            models={"default": model},
        )
        result = p.run(None, budget=budget, cache=False, progress=False)
        assert result.stopped is not None and result.stopped.startswith("--deadline")
        assert len(result.rows) == len(model.calls)
        return budget, model

    budget, model = run_with(10.0)  # calls start at 0, 4, 8; at 12 the deadline has passed
    assert len(model.calls) == 3 and budget.stopped_by == "deadline"
    budget, model = run_with(14.0)  # at 12, three calls of 4s each say the next would end at 16
    assert len(model.calls) == 3 and "a call takes about" in (budget.message or "")


def test_a_failed_call_releases_its_reservation(tmp_path: Path) -> None:
    def handler(request: Request, i: int) -> str:
        if "bad" in request.messages[-1]["content"]:  # type: ignore[index]
            raise ModelError("server error 500", reason="server error")
        return "fine answer"

    budget = Budget(max_total_tokens=10_000, prices=no_prices())
    p = Pipeline(
        [TextGeneration(output="g", max_tokens=8)],
        source=[{"instruction": x} for x in ("good", "bad", "good too")],
        models={"default": FakeModel(handler)},
    )
    result = p.run(None, budget=budget, cache=False, progress=False)
    assert [r["instruction"] for r in result.rows] == ["good", "good too"]
    assert budget._reserved() == (0, 0.0)
    assert budget.as_dict()["used"]["calls"] == 2


class PassAll(GlobalStep):
    kind = "pass_all"

    def process_all(self, rows, drop):  # type: ignore[no-untyped-def]
        return rows


def test_a_stop_before_a_global_step_writes_only_finished_rows(tmp_path: Path) -> None:
    # the cap is reached in the first segment: no row can pass the second model step
    budget = Budget(max_total_tokens=60, prices=no_prices())
    result = chain(FakeModel(ten_words, max_concurrency=1), extra=[PassAll()]).run(
        tmp_path / "a", budget=budget, progress=False
    )
    assert result.stopped is not None and result.rows == []
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["complete"] is False and run["rows"] == 0 and run["steps"]["pass_all"]["rows_in"] > 0
    # the cap is reached after the global step: the rows that finished are written, whole
    budget = Budget(max_total_tokens=130, prices=no_prices())
    result = chain(FakeModel(ten_words, max_concurrency=1), extra=[PassAll()]).run(
        tmp_path / "b", budget=budget, progress=False
    )
    assert result.stopped is not None and 0 < len(result.rows) < ROWS
    assert all(r["response"] and r["messages"] for r in result.rows)
    assert budget.tokens <= 130


def test_cli_caps_exit_3_and_the_same_command_resumes(
    tmp_path: Path, isolated_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    base = ["run", "instructions-basic", "--model", "fake", "--limit", "5", "-o", str(out), "-q"]
    with pytest.raises(SystemExit) as stop:
        main([*base, "--max-total-tokens", "300"])
    assert stop.value.code == 3
    text = capsys.readouterr().out
    assert "--max-total-tokens 300" in text and "same command" in text
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] is False
    paid = run["model_calls"]
    assert 0 < paid < 10 and len(CallCache(isolated_cache)) == paid

    main(base)  # the same command without the cap finishes it
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] is True and run["rows"] == 5
    assert run["cache_hits"] == paid and run["model_calls"] == 10 - paid  # nothing sent twice
    assert len(CallCache(isolated_cache)) == 10


def test_a_capped_run_without_the_cache_promises_no_resume(
    tmp_path: Path, isolated_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datamill.cli import _interrupted

    out = tmp_path / "out"
    args = ["run", "instructions-basic", "--model", "fake", "--limit", "5", "-o", str(out)]
    with pytest.raises(SystemExit) as stop:
        main([*args, "-q", "--no-cache", "--max-total-tokens", "300"])
    assert stop.value.code == 3
    text = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "cached: run the same command again" not in text
    assert "nothing was cached (--no-cache): the same command starts over; drop --no-cache" in text
    assert not isolated_cache.exists() or len(CallCache(isolated_cache)) == 0

    with pytest.raises(SystemExit) as stop:  # Ctrl-C says the same
        _interrupted([*args, "--no-cache"])
    assert stop.value.code == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted: nothing was cached (--no-cache)") and "resume" in err
    with pytest.raises(SystemExit):
        _interrupted(args)
    assert "saved in the cache; to resume, run the same command again" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--deadline", "soon"], "--deadline"),
        (["--max-total-tokens", "0"], "--max-total-tokens"),
        (["--max-total-tokens", "5", "--max-tokens", "5"], "--max-total-tokens only"),
        (["--max-cost", "-2"], "--max-cost"),
    ],
)
def test_cli_bad_caps_are_one_line(
    args: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(
            ["run", "instructions-basic", "--model", "fake", "-o", str(tmp_path / "o"), "-q", *args]
        )
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_cli_cost_cap_needs_a_known_price(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(
            [
                "run",
                "instructions-basic",
                "--model",
                "openai:some-model@https://llm.example.com/v1",
                "-o",
                str(tmp_path / "o"),
                "--max-cost",
                "1",
            ]
        )
    assert stop.value.code == 2
    assert "no price is known" in capsys.readouterr().err


def test_cli_old_max_tokens_is_a_deprecated_alias_of_the_run_cap(
    tmp_path: Path, isolated_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["run", "instructions-basic", "--model", "fake", "--limit", "5", "-o", str(out), "-q"]
    with pytest.raises(SystemExit) as stop:
        main([*args, "--max-tokens", "300"])
    assert stop.value.code == 3  # the same cap as --max-total-tokens 300
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if "deprecated" in line]
    assert len(notes) == 1 and "--max-total-tokens" in notes[0]
    assert "--max-total-tokens 300" in captured.out


def test_budget_max_tokens_keyword_still_works_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match="max_total_tokens"):
        budget = Budget(max_tokens=77, prices=no_prices())
    assert budget.max_total_tokens == 77

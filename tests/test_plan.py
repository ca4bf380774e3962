"""Forecasts (``datamill plan``): calls, tokens, time and cost from a short preview, saved for the
run to compare, and the price table they use."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from datamill import CallCache, FakeModel, FormatSFT, Pipeline, Request, TextGeneration
from datamill.cli import main
from datamill.errors import ConfigError
from datamill.pipeline.budget import prompt_tokens
from datamill.pipeline.plan import Forecast, load_forecast, plan_pipeline
from datamill.pricing import FREE, Price, PriceTable

N = 12


def sized(request: Request, i: int) -> str:
    """10 words for questions, 20 for answers: completions the forecast can get exactly right."""
    text = request.messages[-1]["content"]  # type: ignore[index]
    return " ".join(["w"] * (20 if text.startswith("w ") else 10))


def chain(model: FakeModel, rows: int = N) -> Pipeline:
    return Pipeline(
        [
            TextGeneration(output="question", max_tokens=32),
            TextGeneration(template="{{ question }}", output="response", max_tokens=32),
            FormatSFT(instruction="question", response="response"),
        ],
        source=[
            {"instruction": f"write question {i} " + "about soil " * (i % 4)} for i in range(rows)
        ],
        models={"default": model},
    )


def test_forecast_counts_first_step_and_scales_the_preview() -> None:
    model = FakeModel(sized)
    forecast = plan_pipeline(chain(model), preview_rows=3, prices=PriceTable())
    first, second = forecast.steps
    assert first.step == "text_generation" and first.counted and not second.counted
    # the first step is counted over every source row with the model's tokenizer
    p = chain(FakeModel())
    expected = sum(
        prompt_tokens(model, TextGeneration(max_tokens=32).requests(r, None)[0])
        for r in p.source.load()
    )  # type: ignore[union-attr, arg-type]
    assert first.calls == N and first.prompt_tokens == expected
    # only the preview's rows were sent to the model
    assert len(model.calls) == 2 * 3 and forecast.preview_rows == 3
    # completions are uniform here, so the scaled estimate is exact
    assert first.completion_tokens == 10 * N and second.completion_tokens == 20 * N
    assert second.calls == N and second.rows == N
    assert forecast.calls == 2 * N and forecast.cost == 0.0
    assert forecast.seconds >= forecast.startup_seconds >= 0


def test_forecast_matches_the_run_and_lands_in_run_json(tmp_path: Path) -> None:
    forecast = plan_pipeline(chain(FakeModel(sized)), preview_rows=3, prices=PriceTable())
    result = chain(FakeModel(sized)).run(tmp_path / "o", forecast=forecast, progress=False)
    # the preview's calls were cached: the run sends only the rest, as forecast
    assert result.stats.cache_hits == 6
    assert result.stats.model_calls == round(forecast.to_send()["calls"]) == 2 * N - 6
    assert result.stats.completion_tokens == round(forecast.to_send()["completion_tokens"])
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    cmp = run["forecast_vs_actual"]
    assert cmp["calls"] == {"forecast": 2 * N, "actual": 2 * N}
    assert cmp["completion_tokens_sent"]["forecast"] == cmp["completion_tokens_sent"]["actual"]
    assert run["forecast"]["totals"]["calls"] == 2 * N
    assert (
        run["usage"]["text_generation_2"]["default"]["calls"]
        + run["usage"]["text_generation_2"]["default"]["cache_hits"]
        == N
    )


def test_preview_without_cache_keeps_nothing(isolated_cache: Path) -> None:
    forecast = plan_pipeline(
        chain(FakeModel(sized)), preview_rows=2, cache=False, prices=PriceTable()
    )
    assert not forecast.preview_cached and forecast.to_send()["calls"] == forecast.calls
    assert not isolated_cache.exists() or len(CallCache(isolated_cache)) == 0


def test_preview_measures_the_model_even_when_calls_are_cached(tmp_path: Path) -> None:
    chain(FakeModel(sized)).run(None, progress=False)  # everything is in the cache now
    model = FakeModel(sized)
    forecast = plan_pipeline(chain(model), preview_rows=2, prices=PriceTable())
    assert len(model.calls) == 4  # the preview sent its calls instead of reading the cache
    assert forecast.completion_tokens == 30 * N


def test_rows_lost_in_the_preview_shrink_later_steps() -> None:
    def lossy(request: Request, i: int) -> str:
        text = request.messages[-1]["content"]  # type: ignore[index]
        return "" if text.startswith("write question 1 ") else sized(request, i)

    forecast = plan_pipeline(chain(FakeModel(lossy), rows=9), preview_rows=3, prices=PriceTable())
    first, second = forecast.steps
    assert first.calls == 9 and second.rows == pytest.approx(6) and second.calls == pytest.approx(6)
    assert any(
        "lost 1 row at text_generation (1 empty completion)" in note for note in forecast.notes
    )


def test_a_top_up_target_is_forecast_at_the_previews_survival_rate() -> None:
    def lossy(request: Request, i: int) -> str:
        text = request.messages[-1]["content"]  # type: ignore[index]
        return "" if text.startswith("write question 1 ") else sized(request, i)

    p = chain(FakeModel(lossy), rows=3)
    topped = Pipeline(p.steps, source=p.source, models=p.models, target_rows=8)
    forecast = plan_pipeline(topped, preview_rows=3, prices=PriceTable())
    assert forecast.rows == 12  # 8 wanted, 2 of 3 survive
    first, second = forecast.steps
    assert not first.counted and first.calls == 12 and second.calls == pytest.approx(8)
    assert any("top-up to 8 rows: about 12 source rows" in note for note in forecast.notes)


def test_a_target_below_the_source_size_is_forecast_at_about_the_target() -> None:
    """50 source rows, 10 wanted, none lost: the run tries about 10, and so does the plan."""
    p = chain(FakeModel(sized), rows=50)
    topped = Pipeline(p.steps, source=p.source, models=p.models, target_rows=10)
    forecast = plan_pipeline(topped, preview_rows=3, prices=PriceTable())
    assert forecast.rows == 10 and forecast.steps[0].calls == 10
    assert any("top-up to 10 rows: about 10 source rows" in note for note in forecast.notes)


def test_cost_uses_the_price_table_and_unknown_prices_say_so() -> None:
    prices = PriceTable(user={"fake": Price(input=2.0, output=8.0)}, defaults={})
    forecast = plan_pipeline(chain(FakeModel(sized)), preview_rows=3, prices=prices)
    expected = sum(
        (s.prompt_tokens * 2.0 + s.completion_tokens * 8.0) / 1e6 for s in forecast.steps
    )
    assert forecast.cost == pytest.approx(expected) and forecast.cost > 0
    assert forecast.models["default"]["price"] == {"input": 2.0, "output": 8.0}

    class Remote(FakeModel):
        backend = "somecloud"
        CAPABILITIES = replace(FakeModel.CAPABILITIES, local=False)  # a paid API, not free

    unknown = plan_pipeline(
        chain(Remote(sized)), preview_rows=2, prices=PriceTable(user={}, defaults={})
    )
    assert unknown.cost is None
    text = str(unknown)
    assert "unknown" in text and "prices.yaml" in text


def test_forecast_round_trips_and_checks_its_fingerprint(tmp_path: Path) -> None:
    forecast = plan_pipeline(chain(FakeModel(sized)), preview_rows=2, prices=PriceTable())
    forecast.save(tmp_path)
    again = load_forecast(tmp_path, forecast.fingerprint)
    assert isinstance(again, Forecast) and again.as_dict() == forecast.as_dict()
    assert load_forecast(tmp_path, "something else") is None
    assert load_forecast(tmp_path / "nowhere") is None


def test_bad_preview_size_is_refused() -> None:
    with pytest.raises(ConfigError, match="--preview must be at least 1 row, got 0: .*--preview 1"):
        plan_pipeline(chain(FakeModel()), preview_rows=0)


def test_plan_of_a_model_it_cannot_reach_says_the_preview_needs_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = "openai:gpt-4o-mini@http://127.0.0.1:9/v1"  # nothing listens on port 9
    args = ["plan", "instructions-basic", "--model", spec, "--no-cache", "-o", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as done:
        main([*args, "--preview", "1"])
    assert done.value.code == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: cannot reach http://127.0.0.1:9/v1")
    assert line.endswith(
        "`datamill plan` measures a preview of 1 row on the model, so it needs the model to "
        "answer (a hosted model: the network and its API key)"
    )


def test_cli_plan_prints_the_forecast_and_run_compares(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    main(["plan", "instructions-basic", "--limit", "6", "--model", "fake", "-o", str(out)])
    text = capsys.readouterr().out
    for needle in (
        "text_generation",
        "text_generation_2",
        "total",
        "completion",
        "preview of 3 rows",
        "$0",
    ):
        assert needle in text
    assert (out / "forecast.json").exists()

    main(["run", "instructions-basic", "--limit", "6", "--model", "fake", "-o", str(out), "-q"])
    text = capsys.readouterr().out
    assert "forecast vs actual" in text
    run = json.loads((out / "run.json").read_text())
    assert run["forecast_vs_actual"]["calls"] == {"forecast": 12, "actual": 12}
    assert run["forecast_vs_actual"]["calls_sent"] == {"forecast": 6, "actual": 6}

    main(["run", "instructions-basic", "--limit", "5", "--model", "fake", "-o", str(out), "-q"])
    assert "forecast" not in json.loads((out / "run.json").read_text())  # made for another limit


# -- prices ------------------------------------------------------------------------------------
def test_price_lookup_order(tmp_path: Path) -> None:
    table = PriceTable()
    assert table.lookup("llamacpp", "SmolLM2-135M-Instruct.Q4_1") == FREE
    assert table.lookup("openai", "gpt-4o-mini") == Price(0.15, 0.60)
    assert (
        table.lookup("openai", "gpt-4o-mini", "http://127.0.0.1:8000/v1") == FREE
    )  # a local server
    assert table.lookup("openai", "claude-3-5-haiku-20241022") == Price(0.80, 4.00)  # wildcard
    assert table.lookup("openai", "my-own-model") is None
    assert table.for_spec("openai:gpt-4o@https://api.openai.com/v1") == Price(2.50, 10.00)
    assert table.for_spec("llamacpp") == FREE

    file = tmp_path / "prices.yaml"
    file.write_text(
        "openai:gpt-4o: {input: 1, output: 2}\nllamacpp: {input: 0.5, output: 0.5}\n'my-*': {input: 3, output: 4}\n"
    )
    user = PriceTable.load(file)
    assert user.lookup("openai", "gpt-4o") == Price(1, 2)  # backend:name beats the defaults
    assert user.lookup("llamacpp", "llamacpp") == Price(0.5, 0.5)  # a user price for a local model
    assert user.lookup("openai", "my-own-model") == Price(3, 4)
    assert Price(1, 2).cost(1_000_000, 500_000) == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("gpt-4o: 3\n", "must be a mapping"),
        ("gpt-4o: {input: a, output: 1}\n", "must be numbers"),
        ("- a\n", "maps model names"),
        ("a: [\n", "not valid YAML"),
        ("x: {input: -1, output: 1}\n", "negative"),
    ],
)
def test_bad_price_files_are_one_line(tmp_path: Path, content: str, needle: str) -> None:
    file = tmp_path / "prices.yaml"
    file.write_text(content)
    with pytest.raises(ConfigError, match=needle) as info:
        PriceTable.load(file)
    assert str(file) in str(info.value) and "\n" not in str(info.value)


def test_price_file_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("DATAMILL_PRICES", raising=False)
    assert PriceTable.load().user == {}  # no file: defaults only
    (tmp_path / "datamill").mkdir()
    (tmp_path / "datamill" / "prices.yaml").write_text("gpt-4o: {input: 9, output: 9}\n")
    assert PriceTable.load().lookup("openai", "gpt-4o") == Price(9, 9)
    with pytest.raises(ConfigError, match="does not exist"):
        PriceTable.load(tmp_path / "missing.yaml")


# -- the real model ------------------------------------------------------------------------------
@pytest.mark.real
def test_prompt_tokens_are_counted_with_the_real_tokenizer(embedded_model) -> None:  # type: ignore[no-untyped-def]
    p = Pipeline(
        [TextGeneration(output="answer", max_tokens=8, truncated="keep")],
        source=[{"instruction": f"Name one colour number {i}."} for i in range(4)],
        models={"default": embedded_model},
    )
    forecast = plan_pipeline(p, preview_rows=2, prices=PriceTable())
    result = p.run(None, progress=False, cache=False)
    assert forecast.steps[0].counted and forecast.calls == result.stats.model_calls == 4
    # the chat template and tokenizer give what llama.cpp itself reports, token for token
    assert forecast.prompt_tokens == result.stats.prompt_tokens
    assert forecast.models["default"]["price"] == {"input": 0.0, "output": 0.0}

"""Top-up: ask for N surviving rows; datamill generates more until N survive or the attempt cap
is reached, and says which."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datamill import ConfigError, FakeModel, ModelSettings, Pipeline, TextGeneration, step
from datamill.io.sources import EmptyRows
from datamill.steps.dedup import ExactDedup


def keep_every_third(row: dict) -> dict | None:
    return row if row["row"] % 3 == 0 else None


def test_num_rows_source_is_topped_up_until_the_target_survives(tmp_path: Path) -> None:
    p = Pipeline(
        [step(reads=["row"])(keep_every_third)],
        source=EmptyRows(10),
        models={"default": FakeModel()},
        target_rows=10,
        max_attempts=100,
    )
    result = p.run(tmp_path / "out")
    assert [r["row"] for r in result.rows] == list(range(0, 30, 3))
    # round 1: rows 0-9 → 4 survive (rate 0.4); round 2 asks ceil(6 / 0.4 × 1.2) = 18 more rows
    assert {k: result.summary[k] for k in ("target_rows", "reached", "attempts", "rounds")} == {
        "target_rows": 10,
        "reached": True,
        "attempts": 28,
        "rounds": 2,
    }
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["reached"] is True and run["attempts"] == 28 and run["max_attempts"] == 100
    assert run["steps"]["function"]["rows_in"] == 28
    assert json.loads((tmp_path / "out" / "report.json").read_text())["topup"] == {
        "target_rows": 10,
        "reached": True,
        "attempts": 28,
        "max_attempts": 100,
        "yield": round(10 / 28, 4),  # rows that survived every step per source row tried
    }


def test_the_cap_stops_the_top_up_and_says_so(tmp_path: Path) -> None:
    only_zero = step(reads=["row"])(lambda r: r if r["row"] == 0 else None)
    p = Pipeline(
        [only_zero],
        source=EmptyRows(4),
        models={"default": FakeModel()},
        target_rows=5,
        max_attempts=20,
    )
    result = p.run(tmp_path / "out")
    assert len(result.rows) == 1
    assert result.summary["reached"] is False and result.summary["attempts"] == 20
    assert result.summary["failed_rows"] == 19
    assert "not reached after 20 source rows tried" in (tmp_path / "out" / "README.md").read_text()


def test_fixed_rows_are_reused_under_new_keys_so_each_pass_samples_anew(tmp_path: Path) -> None:
    model = FakeModel(lambda r, i: f"text with seed {r.seed}")

    @step(reads=["generation"])
    def even_seed(row: dict) -> dict | None:
        return row if int(row["generation"].rsplit(" ", 1)[1]) % 2 == 0 else None

    p = Pipeline(
        [TextGeneration(template="{{ instruction }}"), even_seed],
        source=[{"instruction": "write"}, {"instruction": "draw"}],
        models={"default": model},
        target_rows=6,
        max_attempts=60,
    )
    result = p.run(tmp_path / "out")
    assert result.summary["reached"] is True and len(result.rows) == 6
    seeds = [c.seed for c in model.calls]
    assert len(seeds) == len(set(seeds)) == result.summary["attempts"]  # every attempt a new sample
    assert {r["instruction"] for r in result.rows} <= {"write", "draw"}
    assert len({r["generation"] for r in result.rows}) == 6


def test_rows_before_a_global_step_run_once_and_the_global_step_sees_all(tmp_path: Path) -> None:
    # rows 0-2 all get the same text, so the dedup keeps one of them; later rows are all distinct
    def answer(request, _):  # type: ignore[no-untyped-def]
        row = int(request.messages[-1]["content"].rsplit(" ", 1)[1])
        return "alpha" if row < 3 else f"text {row}"

    model = FakeModel(answer)
    p = Pipeline(
        [
            TextGeneration(template="say something {{ row }}", output="text"),
            ExactDedup(columns=["text"]),
        ],
        source=EmptyRows(3),
        models={"default": model},
        target_rows=4,
        max_attempts=40,
    )
    result = p.run(tmp_path / "out", cache=False)
    # round 1: 3 rows, 1 survives (rate 1/3); round 2: ceil(3 × 3 × 1.2) = 11 more rows
    assert {k: result.summary[k] for k in ("reached", "attempts", "rounds", "trimmed")} == {
        "reached": True,
        "attempts": 14,
        "rounds": 2,
        "trimmed": 8,
    }
    assert len(model.calls) == 14  # no row went through the model twice, even without a cache
    assert [r["text"] for r in result.rows] == ["alpha", "text 3", "text 4", "text 5"]
    assert result.summary["steps"]["dedup_exact"] == {"rows_in": 14, "rows_out": 12, "failed": 2}
    assert result.summary["failures_by_step"] == {"dedup_exact": {"exact duplicate": 2}}
    lines = (tmp_path / "out" / "failures.jsonl").read_text().splitlines()
    assert [json.loads(line)["row"]["row"] for line in lines] == [1, 2]


def test_a_second_run_is_served_from_the_cache(tmp_path: Path) -> None:
    def build(model: FakeModel) -> Pipeline:
        keep_b = step(reads=["generation"])(lambda r: r if "b" in r["generation"] else None)
        return Pipeline(
            [TextGeneration(template="word {{ row }}"), keep_b],
            source=EmptyRows(4),
            models={"default": model},
            target_rows=4,
            max_attempts=50,
        )

    handler = lambda r, i: "abc" if r.seed % 2 else "xyz"  # noqa: E731
    first = build(FakeModel(handler)).run(tmp_path / "a")
    again = build(FakeModel(handler)).run(tmp_path / "b")
    assert again.stats.model_calls == 0 and again.stats.cache_hits == first.stats.model_calls
    assert again.rows == first.rows and again.summary["attempts"] == first.summary["attempts"]


def test_more_survivors_than_asked_are_cut_to_the_target(tmp_path: Path) -> None:
    p = Pipeline(
        [step(reads=["row"])(lambda r: r if r["row"] % 3 else None)],
        source=EmptyRows(40),
        models={"default": FakeModel()},
        target_rows=5,
    )
    result = p.run(tmp_path / "out")
    # round 1: rows 0-4 → 1, 2, 4 survive (rate 0.6); round 2: ceil(2 / 0.6 × 1.2) = 4 rows,
    # 5-8 → 5, 7, 8: six survivors, the last cut
    assert [r["row"] for r in result.rows] == [1, 2, 4, 5, 7]
    assert {k: result.summary[k] for k in ("attempts", "rounds", "trimmed")} == {
        "attempts": 9,
        "rounds": 2,
        "trimmed": 1,
    }


def fake_calls(p: Pipeline, out: Path) -> tuple[list[dict], int, dict]:
    """The rows, the model calls (no cache: a fresh folder and model each time), the summary."""
    fake = FakeModel()
    p.models = {"default": ModelSettings(spec=fake)}
    result = p.run(out, cache=False)
    return result.rows, len(fake.calls), result.summary


def test_a_source_larger_than_the_target_pays_for_about_the_target(tmp_path: Path) -> None:
    """The first round tries the target's rows, not the whole source (50 rows for 10 once
    cost 50 calls and cut 40 rows); a filter's losses are made up from the rate seen."""
    gen = TextGeneration(template="about {{ row }}", output="text")
    every = Pipeline([gen], source=EmptyRows(50), target_rows=10)
    rows, calls, summary = fake_calls(every, tmp_path / "a")
    assert [r["row"] for r in rows] == list(range(10)) and calls == 10
    assert summary["attempts"] == 10 and summary["rounds"] == 1 and "trimmed" not in summary
    lossy = Pipeline(
        [gen, step(reads=["row"])(keep_every_third)], source=EmptyRows(50), target_rows=10
    )
    rows, calls, summary = fake_calls(lossy, tmp_path / "b")
    # round 1: rows 0-9 → 4 survive (0.4); round 2: ceil(6 / 0.4 × 1.2) = 18 rows (10-27)
    assert [r["row"] for r in rows] == list(range(0, 30, 3)) and calls == 28
    assert summary["attempts"] == 28 and summary["rounds"] == 2
    again, calls_again, _ = fake_calls(lossy, tmp_path / "c")
    assert again == rows and calls_again == calls


def test_recipes_ask_for_target_rows(tmp_path: Path) -> None:
    from datamill.recipes.loader import recipe_from_dict

    recipe = {
        "name": "t",
        "source": {"num_rows": 2},
        "target_rows": 4,
        "max_attempts": 9,
        "steps": [{"text_generation": {"template": "go {{ row }}"}}],
    }
    p = recipe_from_dict(recipe)
    assert (p.target_rows, p.max_attempts) == (4, 9)
    assert recipe_from_dict(recipe, ["target_rows=7"]).target_rows == 7
    with pytest.raises(ConfigError, match="target_rows"):
        recipe_from_dict({**recipe, "target_rows": 0})
    from datamill.pipeline.graph import ModelSettings

    p.models = {"default": ModelSettings.parse(FakeModel())}
    result = p.run(tmp_path / "out")
    assert (
        len(result.rows) == 4
        and result.summary["reached"] is True
        and result.summary["attempts"] == 4
    )


def test_no_target_means_no_top_up_fields(tmp_path: Path) -> None:
    result = Pipeline(
        [TextGeneration(template="{{ row }}")], source=EmptyRows(2), models={"default": FakeModel()}
    ).run(tmp_path / "o")
    assert "target_rows" not in result.summary and "reached" not in result.summary


def test_a_preview_runs_its_n_rows_once_without_topping_up(tmp_path: Path) -> None:
    p = Pipeline(
        [step(reads=["row"])(keep_every_third)],
        source=EmptyRows(10),
        models={"default": FakeModel()},
        target_rows=5,
    )
    preview = p.preview(2)  # rows 0, 1 → only row 0 survives; no more rows are drawn to reach 5
    assert [r["row"] for r in preview.rows] == [0] and preview.summary["failed_rows"] == 1
    assert "target_rows" not in preview.summary
    assert p.target_rows == 5  # the run still tops up
    assert [r["row"] for r in p.run(tmp_path / "out").rows] == [0, 3, 6, 9, 12]

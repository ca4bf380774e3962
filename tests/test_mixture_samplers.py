"""Mixtures over a sampler source: a part the filters drop is filled with NEW sampled rows of that
part (rejection sampling over the seeded row stream, each row keyed by its index), not the same
rows again; a rerun is served from the cache; a part the sampler can never give is refused before
any call; a part too rare to draw stops at the draw cap and is reported short."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from datamill import ConfigError, FakeModel, Pipeline, TextGeneration
from datamill.cli import app
from datamill.io.samplers import SamplerSource
from datamill.models.base import Request
from datamill.pipeline.draws import MAX_DRAWS_FACTOR
from datamill.steps.filters import KeywordFilter

SAMPLERS: dict[str, Any] = {
    "topic": {"category": {"values": ["science", "cooking"], "weights": [1, 1]}},
    "person": {"person": {"fields": ["name"]}},
    "number": {"integer": {"low": 0, "high": 10**9}},
}


def cooking_fails_mostly(request: Request, index: int) -> str:
    """Answers every prompt; a cooking answer is BROKEN unless its seed is a multiple of 4."""
    text = next(m["content"] for m in request.messages or [] if m["role"] == "user")
    if "cooking" in text and (request.seed or 0) % 4:
        return "BROKEN answer"
    return f"An answer to: {text}"


def pipeline(model: FakeModel, source: SamplerSource, **mix: Any) -> Pipeline:
    return Pipeline(
        [
            TextGeneration(
                template="{{ person.name }} asks about {{ topic }} ({{ number }}).",
                output="response",
            ),
            KeywordFilter(column="response", keywords=["broken"]),
        ],
        source=source,
        models={"default": model},
        target_rows=40,
        max_attempts=mix.pop("max_attempts", 1000),
        mix={"by": "topic", "targets": {"science": 0.5, "cooking": 0.5}, **mix},
    )


def test_a_dropped_part_is_filled_with_new_draws_and_a_rerun_is_all_cache_hits(
    tmp_path: Path,
) -> None:
    source = SamplerSource(SAMPLERS, 20, seed=4)
    first_cooking = sum(r["topic"] == "cooking" for r in source.load())
    first = pipeline(FakeModel(cooking_fails_mostly), source).run(tmp_path / "a")
    assert Counter(r["topic"] for r in first.rows) == {"science": 20, "cooking": 20}
    mix = first.summary["mix"]
    assert mix["within_tolerance"] is True and mix["short"] == {} and "too_rare" not in mix
    # cooking survives about 1 time in 4: it was fed far more rows than the source's first ones
    assert mix["tried"]["cooking"] > 3 * first_cooking
    cooking = [r for r in first.rows if r["topic"] == "cooking"]
    # every kept row is a distinct draw: its own index, person and number, none repeated
    assert len({r["row"] for r in cooking}) == 20
    assert len({r["person"]["name"] for r in cooking}) == 20
    assert len({r["number"] for r in cooking}) == 20
    # and it is the sampler's row of that index (a rerun draws it again, under the same key)
    for r in first.rows:
        assert {k: r[k] for k in ("row", "topic", "person", "number")} == source.row(r["row"])
    assert any(r["row"] >= 20 for r in cooking)
    assert mix["drawn"] >= mix["tried"]["cooking"] + mix["tried"]["science"] - 20
    assert mix["max_draws"] == MAX_DRAWS_FACTOR * 1000

    again_model = FakeModel(cooking_fails_mostly)
    again = pipeline(again_model, SamplerSource(SAMPLERS, 20, seed=4)).run(tmp_path / "b")
    assert again.stats.model_calls == 0 and again_model.calls == []
    assert again.stats.cache_hits == first.stats.model_calls
    assert again.rows == first.rows and again.summary["mix"] == mix


def test_a_part_absent_from_the_first_rows_but_possible_is_drawn(tmp_path: Path) -> None:
    """A file with no row of a part is refused; a sampler that can give it draws it."""
    rare = {**SAMPLERS, "topic": {"category": {"values": ["science", "cooking"], "weights": [30, 1]}}}  # fmt: skip
    source = SamplerSource(rare, 5, seed=1)
    assert {r["topic"] for r in source.load()} == {"science"}
    result = pipeline(FakeModel(), source).run(tmp_path / "out")
    assert Counter(r["topic"] for r in result.rows) == {"science": 20, "cooking": 20}
    assert len({r["number"] for r in result.rows}) == 40


@pytest.mark.parametrize(
    ("topic", "problem"),
    [
        (
            {"category": {"values": ["science", "cooking"], "weights": [1, 0]}},
            "never gives topic = 'cooking' .*it gives: science;",
        ),
        ({"category": ["science", "travel"]}, "never gives topic = 'cooking'"),
        (
            # cooking is a subtopic only of a field whose weight is 0
            {"subcategory": {"of": "field", "values": {"food": ["cooking"], "lab": ["science"]}}},
            "never gives topic = 'cooking'",
        ),
    ],
)
def test_a_part_the_sampler_never_gives_is_refused_before_any_call(
    topic: dict[str, Any], problem: str, tmp_path: Path
) -> None:
    field = {"field": {"category": {"values": ["food", "lab"], "weights": [0, 2]}}}
    model = FakeModel()
    p = pipeline(model, SamplerSource({**field, **SAMPLERS, "topic": topic}, 20))
    with pytest.raises(ConfigError, match=problem) as err:
        p.run(tmp_path / "out")
    assert "\n" not in str(err.value)
    assert model.calls == []


def test_a_very_rare_part_stops_at_the_draw_cap_and_is_reported_short(tmp_path: Path) -> None:
    recipe = tmp_path / "rare.yaml"
    samplers = {**SAMPLERS, "topic": {"category": {"values": ["science", "cooking"], "weights": [10**7, 1]}}}  # fmt: skip
    recipe.write_text(
        json.dumps(
            {
                "name": "rare-mix",
                "source": {"num_rows": 10, "seed": 2, "samplers": samplers},
                "steps": [{"text_generation": {"template": "About {{ topic }}.", "output": "a"}}],
                "target_rows": 20,
                "max_attempts": 30,
                "mix": {"by": "topic", "targets": {"science": 0.5, "cooking": 0.5}},
            }
        )
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(recipe), "--model", "fake", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    mix = run["mix"]
    assert run["reached"] is False and mix["too_rare"] == ["cooking"]
    assert mix["drawn"] == mix["max_draws"] == MAX_DRAWS_FACTOR * 30
    assert mix["short"] == {"cooking": 10} and mix["rows"] == {"science": 10, "cooking": 0}
    assert run["attempts"] < 30  # the draws ran out before the attempts did
    lines = [line for line in result.stderr.splitlines() if "fell short" in line]
    assert len(lines) == 1
    assert "3000 sampler rows drawn" in lines[0] and "too few of cooking" in lines[0]


def test_one_column_of_a_row_is_drawn_alone_as_the_whole_row_has_it() -> None:
    spec = {
        "level": {"category": {"values": ["easy", "hard"], "weights": [1, 3]}},
        "topic": {
            "subcategory": {
                "of": "level",
                "values": {"easy": ["sums"], "hard": ["proofs", "limits"]},
            }
        },  # fmt: skip
        "steps": {
            "conditional": {
                "on": "topic",
                "cases": {"sums": {"integer": {"low": 1, "high": 3}}},
                "default": {"integer": {"low": 5, "high": 6}},
            }
        },  # fmt: skip
        "person": {"person": {"fields": ["name"]}},
    }
    source = SamplerSource(spec, 50, seed=9, fields={"lang": "en"})
    for i in (0, 7, 49, 500):
        row = source.row(i)
        assert {c: source.value(i, c) for c in row} == row
    assert source.value(3, "missing") is None
    assert sorted(source.possible("topic") or []) == ["limits", "proofs", "sums"]
    assert sorted(source.possible("steps") or []) == [1, 2, 3, 5, 6]
    assert source.possible("lang") == ["en"] and source.possible("person") is None
    hard_only = SamplerSource(
        {**spec, "level": {"category": {"values": ["easy", "hard"], "weights": [0, 1]}}}, 5
    )
    assert sorted(hard_only.possible("topic") or []) == ["limits", "proofs"]
    assert sorted(hard_only.possible("steps") or []) == [5, 6]


MIX_RECIPE = """name: mixed
source:
  num_rows: 50
  seed: 7
  samplers:
    topic: {category: {values: [science, cooking, travel], weights: [3, 1, 1]}}
steps:
  - text_generation: {template: "A question about {{ topic }}", output: response}
target_rows: 10
max_attempts: 100
mix:
  by: topic
  targets: {science: 0.5, cooking: 0.3, travel: 0.2}
  tolerance: 0.02
"""


def test_a_mix_over_a_larger_source_pays_for_about_each_parts_count(tmp_path: Path) -> None:
    """50 source rows, 10 wanted 5/3/2: the first round feeds each part its count (10 calls,
    not 50 with 40 cut); the same recipe gives the same rows."""
    from datamill import ModelSettings
    from datamill.recipes.loader import load_recipe

    path = tmp_path / "mixed.yaml"
    path.write_text(MIX_RECIPE)
    runs = []
    for out in ("a", "b"):
        fake = FakeModel()
        p = load_recipe(str(path))
        p.models = {"default": ModelSettings(spec=fake)}
        result = p.run(tmp_path / out, cache=False)
        runs.append(result.rows)
        assert len(fake.calls) == 10 and result.summary["attempts"] == 10
        assert result.summary["rounds"] == 1 and "trimmed" not in result.summary
        assert result.summary["mix"]["cut"] == {} and result.summary["mix"]["tried"] == {
            "science": 5,
            "cooking": 3,
            "travel": 2,
        }
    assert Counter(r["topic"] for r in runs[0]) == {"science": 5, "cooking": 3, "travel": 2}
    source = load_recipe(str(path)).source
    assert isinstance(source, SamplerSource)
    for r in runs[0]:  # the first rows of each part, each the sampler's row of its index
        assert r["topic"] == source.row(r["row"])["topic"]
    firsts = [i for i in range(50) if source.row(i)["topic"] == "cooking"][:3]
    assert sorted(r["row"] for r in runs[0] if r["topic"] == "cooking") == firsts
    assert runs[0] == runs[1]

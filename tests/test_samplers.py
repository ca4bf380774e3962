"""Sampler sources (``source: {samplers, num_rows, seed}``): distributions within tolerance over
many rows, conditionals, reproducibility by seed and row index (top-up included), templates that
read sampled columns, and one clear line for every bad declaration, before any call."""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from datamill import FakeModel, ModelSettings
from datamill.errors import ConfigError
from datamill.io.samplers import SamplerError, SamplerSource
from datamill.models.base import Completion, Request
from datamill.pipeline.topup import more_rows
from datamill.recipes.loader import load_recipe, recipe_from_dict

N = 4000


def on_model(p: Any, model: Any) -> Any:
    p.models = {n: ModelSettings(spec=model, sampling=s.sampling) for n, s in p.models.items()}
    return p


def sampled(samplers: dict[str, Any], n: int = N, seed: int = 11) -> list[dict[str, Any]]:
    return SamplerSource(samplers, n, seed).load()


def test_category_follows_its_weights() -> None:
    rows = sampled({"topic": {"category": {"values": ["a", "b", "c"], "weights": [6, 2, 2]}}})
    share = {k: v / N for k, v in Counter(r["topic"] for r in rows).items()}
    assert share.keys() == {"a", "b", "c"}
    assert share["a"] == pytest.approx(0.6, abs=0.03)
    assert share["b"] == pytest.approx(0.2, abs=0.03)
    unweighted = Counter(r["x"] for r in sampled({"x": {"category": [1, 2]}}))
    assert unweighted[1] / N == pytest.approx(0.5, abs=0.03)


def test_subcategory_is_drawn_from_its_parents_values() -> None:
    subs = {"science": ["physics", "biology"], "cooking": ["baking", "grilling", "soups"]}
    rows = sampled(
        {
            "topic": {"category": {"values": ["science", "cooking"], "weights": [1, 3]}},
            "sub": {"subcategory": {"of": "topic", "values": subs}},
        }
    )
    for r in rows:
        assert r["sub"] in subs[r["topic"]]
    cooking = [r["sub"] for r in rows if r["topic"] == "cooking"]
    assert len(cooking) / N == pytest.approx(0.75, abs=0.03)
    assert Counter(cooking)["soups"] / len(cooking) == pytest.approx(1 / 3, abs=0.04)


def test_ranges_round_and_clip() -> None:
    rows = sampled(
        {
            "u": {"uniform": {"low": 2, "high": 4, "round": 2}},
            "i": {"integer": {"low": 1, "high": 6}},
            "g": {"normal": {"mean": 170, "std": 10}},
            "h": {"normal": {"mean": 170, "std": 10, "round": 0, "low": 165, "high": 190}},
        }
    )
    us = [r["u"] for r in rows]
    assert all(2 <= u <= 4 and round(u, 2) == u for u in us)
    assert statistics.mean(us) == pytest.approx(3, abs=0.05)
    assert set(r["i"] for r in rows) == {1, 2, 3, 4, 5, 6}  # both ends included
    gs = [r["g"] for r in rows]
    assert statistics.mean(gs) == pytest.approx(170, abs=0.6)
    assert statistics.stdev(gs) == pytest.approx(10, abs=0.6)
    hs = [r["h"] for r in rows]
    assert all(isinstance(h, int) and 165 <= h <= 190 for h in hs)
    assert Counter(hs)[165] / N == pytest.approx(0.31, abs=0.03)  # P(x < 165) piles up at low


def test_conditional_picks_the_distribution_by_the_other_column() -> None:
    rows = sampled(
        {
            "level": {"category": ["easy", "hard", "medium"]},
            "steps": {
                "conditional": {
                    "on": "level",
                    "cases": {
                        "easy": {"integer": {"low": 1, "high": 2}},
                        "hard": {"uniform": {"low": 10, "high": 20, "round": 0}},
                    },
                    "default": {"category": [5]},
                }
            },
        },
        n=600,
    )
    by_level: dict[str, set[Any]] = {}
    for r in rows:
        by_level.setdefault(r["level"], set()).add(r["steps"])
    assert by_level["easy"] == {1, 2}
    assert by_level["medium"] == {5}
    assert all(isinstance(v, int) and 10 <= v <= 20 for v in by_level["hard"])
    assert len(by_level["hard"]) > 5


def test_people_from_faker_by_locale_and_offline_personas() -> None:
    people = {"person": {"person": {"locale": "fr_FR", "fields": ["name", "age", "sex", "occupation", "city"], "age": [30, 40]}}}  # fmt: skip
    rows = sampled(people, n=200)
    for r in rows:
        p = r["person"]
        assert set(p) == {"name", "age", "sex", "occupation", "city"}
        assert 30 <= p["age"] <= 40 and p["sex"] in ("female", "male")
        assert all(isinstance(p[k], str) and p[k].strip() for k in ("name", "occupation", "city"))
    assert len({r["person"]["name"] for r in rows}) > 150
    us = sampled({"person": {"person": {"locale": "en_US", "fields": ["name"]}}}, n=200)
    assert {r["person"]["name"] for r in us}.isdisjoint({r["person"]["name"] for r in rows})
    fr = sampled({"p": {"person": {"locale": "fr_FR", "fields": ["country", "email"]}}}, n=5)
    assert all(r["p"]["country"] == "France" and "@" in r["p"]["email"] for r in fr)
    personas = [r["persona"] for r in sampled({"persona": {"persona": {}}}, n=300)]
    assert len(set(personas)) == 300
    assert all(p.endswith(".") and "-year-old" in p and len(p.split()) >= 12 for p in personas)
    named = sampled({"persona": {"persona": {"locale": "de_DE"}}}, n=3)
    assert all(", a " in r["persona"] and " from " in r["persona"] for r in named)


def test_row_i_depends_only_on_seed_and_i() -> None:
    spec = {
        "topic": {"category": ["a", "b", "c", "d"]},
        "x": {"uniform": {"low": 0, "high": 1}},
        "person": {"person": {"fields": ["name", "city"]}},
    }
    ten = SamplerSource(spec, 10, seed=5)
    assert SamplerSource(spec, 10, seed=5).load() == ten.load()  # same seed, same rows
    assert SamplerSource(spec, 4, seed=5).load() == ten.load()[:4]
    assert SamplerSource(spec, 10, seed=6).load() != ten.load()
    # the top-up's new rows continue from the seed: rows 4.. of a 4-row source are rows 4.. of ten
    four = SamplerSource(spec, 4, seed=5)
    assert [r for _, r in more_rows(four, four.load(), 4, 6)] == ten.load()[4:]
    # a column added later leaves the others as they were
    more = SamplerSource({**spec, "y": {"integer": {"low": 1, "high": 9}}}, 10, seed=5).load()
    assert [{k: r[k] for k in ten.load()[0]} for r in more] == ten.load()


def test_recipe_seed_is_the_default_and_templates_read_sampled_columns(tmp_path: Path) -> None:
    recipe = {
        "name": "sampled",
        "seed": 3,
        "source": {
            "num_rows": 6,
            "samplers": {
                "topic": {"category": ["rivers", "engines", "bread"]},
                "person": {"person": {"fields": ["name", "occupation"]}},
            },
        },
        "steps": [
            {
                "text_generation": {
                    "template": "{{ person.name }} ({{ person.occupation }}) asks about {{ topic }}.",
                    "output": "question",
                }
            }
        ],
    }
    p = recipe_from_dict(recipe)
    assert p.source.load() == SamplerSource(recipe["source"]["samplers"], 6, seed=3).load()
    model = FakeModel()
    rows = on_model(p, model).run(tmp_path / "out").rows
    prompts = {c.messages[-1]["content"] for c in model.calls}
    assert len(rows) == 6
    for r in rows:
        assert (
            f"{r['person']['name']} ({r['person']['occupation']}) asks about {r['topic']}."
            in prompts
        )


def test_top_up_draws_new_rows_from_the_seed(tmp_path: Path) -> None:
    """Rows lost to a filter are replaced by rows N, N+1, … of the same seed."""
    spec = {"n": {"integer": {"low": 0, "high": 999}}}

    def answer(request: Request, index: int) -> str | Completion:
        number = int(request.messages[-1]["content"].split()[-1])
        return "" if number % 2 else f"kept {number}"  # odd numbers: empty completion (lost)

    recipe = {
        "name": "topped",
        "source": {"num_rows": 4, "seed": 9, "samplers": spec},
        "steps": [{"text_generation": {"template": "number {{ n }}", "output": "out"}}],
        "target_rows": 8,
        "max_attempts": 200,
    }
    p = recipe_from_dict(recipe)
    result = on_model(p, FakeModel(answer)).run(tmp_path / "out")
    assert len(result.rows) == 8
    expected = SamplerSource(spec, 1, seed=9)
    for r in result.rows:
        assert r["n"] == expected.row(r["row"])["n"] and r["n"] % 2 == 0
    assert max(r["row"] for r in result.rows) >= 4  # some came from the top-up


BAD: list[tuple[dict[str, Any], str]] = [
    ({"x": {"gaussian": {"mean": 0}}}, "samplers.x: unknown sampler kind 'gaussian'"),
    ({"x": {"category": {"values": ["a", "b"], "weights": [1]}}}, "samplers.x: category: 2 values but 1 weights"),
    ({"x": {"category": {"values": ["a"], "weights": [-1]}}}, "samplers.x: category: weights must be numbers"),
    ({"x": {"category": {"values": []}}}, "samplers.x: category: values must be a non-empty list"),
    ({"x": {"conditional": {"on": "level", "cases": {"a": {"integer": {"low": 1, "high": 2}}}}}}, "samplers.x: conditional depends on column 'level', which is not declared"),
    ({"x": {"subcategory": {"of": "y", "values": {"a": ["b"]}}}}, "samplers.x: subcategory depends on column 'y'"),
    ({"y": {"category": ["a", "b"]}, "x": {"subcategory": {"of": "y", "values": {"a": ["z"]}}}}, "samplers.x: subcategory: no entry in values for y='b'"),
    ({"y": {"category": ["a", "b"]}, "x": {"conditional": {"on": "y", "cases": {"a": {"integer": {"low": 1, "high": 2}}}}}}, "samplers.x: conditional: no entry in cases (or a default) for y='b'"),
    ({"x": {"uniform": {"low": 3, "high": 3}}}, "samplers.x: uniform: low (3) must be below high (3)"),
    ({"x": {"integer": {"low": 5, "high": 1}}}, "samplers.x: integer: low (5) must be at most high (1)"),
    ({"x": {"integer": {"low": 1.5, "high": 3}}}, "samplers.x: low must be a whole number"),
    ({"x": {"normal": {"mean": 0, "std": 0}}}, "samplers.x: normal: std must be above 0"),
    ({"x": {"normal": {"mean": 0, "std": 1, "low": 2, "high": 1}}}, "samplers.x: normal: low (2) must be at most high (1)"),
    ({"x": {"uniform": {"low": 0, "high": 1, "round": -1}}}, "samplers.x: round must be 0 or more"),
    ({"x": {"uniform": {"low": 0, "hi": 1}}}, "samplers.x: uniform: unknown parameter 'hi'"),
    ({"x": {"person": {"fields": ["name", "shoe_size"]}}}, "samplers.x: person: unknown field 'shoe_size'"),
    ({"x": {"person": {"locale": "xx_YY"}}}, "samplers.x: person: unknown Faker locale 'xx_YY'"),
    ({"x": {"person": {"age": [50, 20]}}}, "samplers.x: age must be [youngest, oldest]"),
    ({"a": {"subcategory": {"of": "b", "values": {"p": ["q"]}}}, "b": {"subcategory": {"of": "a", "values": {"q": ["p"]}}}}, "columns depend on each other in a cycle"),
    ({"x": "uniform"}, "samplers.x: give exactly one sampler kind"),
]  # fmt: skip


@pytest.mark.parametrize(("samplers", "message"), BAD)
def test_bad_samplers_are_one_line_naming_the_column(
    samplers: dict[str, Any], message: str
) -> None:
    with pytest.raises(SamplerError) as err:
        SamplerSource(samplers, 3)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_recipe_errors_point_at_the_column_line_before_any_call(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: r\n"
        "source:\n"
        "  num_rows: 5\n"
        "  samplers:\n"
        "    topic: {category: {values: [a, b]}}\n"
        "    level: {category: {values: [x, y, z], weights: [1, 2]}}\n"
        "steps:\n"
        "  - text_generation: {template: '{{ topic }}'}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_recipe(str(path))
    assert str(err.value) == (
        f"{path}:6: source.samplers.level: category: 3 values but 2 weights; give one weight per value"
    )
    path.write_text(
        "name: r\nsource:\n  samplers: {topic: {category: [a]}}\nsteps:\n  - text_generation: {}\n"
    )
    with pytest.raises(ConfigError, match="samplers need num_rows"):
        load_recipe(str(path))


def test_a_misspelled_case_or_values_key_is_one_line_naming_it(tmp_path: Path) -> None:
    """A ``cases`` key that is none of the parent's known values would never be drawn (its rows
    would quietly take the default): refused, naming the key, the values and the recipe line."""
    path = tmp_path / "r.yaml"
    words = (
        "    words: {conditional: {on: topic, cases: {sciense: {integer: {low: 100, high: 200}}},"
        " default: {uniform: {low: 20, high: 60, round: 0}}}}\n"
    )
    head = "name: r\nsource:\n  num_rows: 5\n  samplers:\n"
    topic = "    topic: {category: {values: [science, cooking, travel], weights: [3, 1, 0]}}\n"
    steps = "steps:\n  - text_generation: {template: '{{ topic }}'}\n"
    path.write_text(head + topic + words + steps)
    with pytest.raises(ConfigError) as err:
        load_recipe(str(path))
    assert str(err.value) == (
        f"{path}:6: source.samplers.words: conditional: cases key 'sciense' is not a value of "
        "topic (did you mean 'science'?); its values: science, cooking, travel"
    )
    sub = "    sub: {subcategory: {of: topic, values: {science: [a], cooking: [b], travl: [c]}}}\n"
    path.write_text(head + topic + sub + steps)
    with pytest.raises(ConfigError) as err:
        load_recipe(str(path))
    assert str(err.value) == (
        f"{path}:6: source.samplers.sub: subcategory: values key 'travl' is not a value of "
        "topic (did you mean 'travel'?); its values: science, cooking, travel"
    )
    # yes/no values meet yes/no keys; a value of weight 0 is still a value
    ok = (
        "    flag: {category: {values: [yes, no]}}\n"
        "    tone: {conditional: {on: flag, cases: {yes: {category: [terse]}},"
        " default: {category: [calm]}}}\n"
        "    w: {conditional: {on: topic, cases: {travel: {integer: {low: 1, high: 2}}},"
        " default: {integer: {low: 3, high: 4}}}}\n"
    )
    path.write_text(head + topic + ok + steps)
    rows = load_recipe(str(path)).source.load()
    assert all(r["tone"] == ("terse" if r["flag"] == "yes" else "calm") for r in rows)

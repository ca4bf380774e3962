"""Words YAML 1.1 reads as booleans (``on``/``off``/``yes``/``no``/``y``/``n``): a recipe's text
follows YAML 1.2's core schema, so keys and values stay the words written (``conditional: {on:
topic}`` as the README shows, ``values: [yes, no]`` draws words), boolean fields still take
``yes``/``on``, and no error line names a parameter ``True``/``False``, from recipe text or from a
recipe given as data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from datamill import FakeModel, ModelSettings
from datamill.errors import ConfigError
from datamill.recipes.loader import load_recipe, recipe_from_dict
from datamill.recipes.yamlkeys import load_yaml


def on_fake(p: Any) -> Any:
    p.models = {
        n: ModelSettings(spec=FakeModel(), sampling=s.sampling) for n, s in p.models.items()
    }
    return p


GENERATE = '  - text_generation: {template: "{{ topic }} in {{ words }} words", output: q}\n'


def recipe(tmp_path: Path, samplers: str, steps: str = GENERATE) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(
        f"name: r\nsource:\n  num_rows: 40\n  seed: 7\n  samplers:\n{samplers}steps:\n{steps}"
    )
    return path


def test_readme_conditional_on_runs_from_yaml_text(tmp_path: Path) -> None:
    path = recipe(
        tmp_path,
        "    topic: {category: {values: [science, cooking]}}\n"
        "    words: {conditional: {on: topic, cases: {science: {integer: {low: 100, high: 200}}},"
        " default: {integer: {low: 20, high: 60}}}}\n",
    )
    rows = on_fake(load_recipe(str(path))).run(tmp_path / "out").rows
    assert len(rows) == 40 and {r["topic"] for r in rows} == {"science", "cooking"}
    for r in rows:
        low, high = (100, 200) if r["topic"] == "science" else (20, 60)
        assert low <= r["words"] <= high, r


def test_yes_no_case_keys_match_yes_no_values(tmp_path: Path) -> None:
    """``values: [yes, no]`` and ``cases: {yes: …, no: …}`` keys are both words: they meet."""
    path = recipe(
        tmp_path,
        "    topic: {category: {values: [yes, no]}}\n"
        "    words: {conditional: {on: topic, cases: {yes: {integer: {low: 1, high: 5}},"
        " no: {integer: {low: 50, high: 60}}}}}\n",
    )
    rows = on_fake(load_recipe(str(path))).run(tmp_path / "out").rows
    assert {r["topic"] for r in rows} == {"yes", "no"}
    for r in rows:
        assert (1 <= r["words"] <= 5) if r["topic"] == "yes" else (50 <= r["words"] <= 60)


@pytest.mark.parametrize(
    ("samplers", "steps", "line", "expected"),
    [
        (
            "    topic: {category: [a, b]}\n"
            "    words: {conditional: {on: nope, cases: {a: {integer: {low: 1, high: 2}}}}}\n",
            GENERATE,
            7,
            "source.samplers.words: conditional depends on column 'nope', which is not declared",
        ),
        (
            "    topic: {category: [a, b]}\n    words: {integer: {low: 1, high: 2, yes: 3}}\n",
            GENERATE,
            7,
            "source.samplers.words: integer: unknown parameter 'yes'; allowed: low, high",
        ),
        (
            "    topic: {category: [a, b]}\n    words: {off: {low: 1}}\n",
            GENERATE,
            7,
            "source.samplers.words: unknown sampler kind 'off'",
        ),
        (
            "    topic: {category: [a]}\n    words: {integer: {low: 1, high: 2}}\n",
            "  - text_generation: {template: '{{ topic }}', on: topic}\n",
            9,
            "step 1 (text_generation): on: unknown parameter",
        ),
    ],
)
def test_errors_name_the_word_written_not_true(
    tmp_path: Path, samplers: str, steps: str, line: int, expected: str
) -> None:
    path = recipe(tmp_path, samplers, steps)
    with pytest.raises(ConfigError) as err:
        load_recipe(str(path))
    message = str(err.value)
    assert message.startswith(f"{path}:{line}: ") and expected in message, message
    assert "True" not in message and "False" not in message


def test_set_reaches_an_on_key_written_in_the_recipe(tmp_path: Path) -> None:
    """``--set …conditional.on=…`` replaces the key the recipe wrote (not a second one beside
    a ``True``)."""
    path = recipe(
        tmp_path,
        "    topic: {category: [a]}\n    level: {category: [x]}\n"
        "    words: {conditional: {on: topic, cases: {a: {integer: {low: 1, high: 2}}}}}\n",
    )
    with pytest.raises(ConfigError, match="conditional: cases key 'a' is not a value of level"):
        load_recipe(str(path), ["source.samplers.words.conditional.on=level"])


def test_boolean_keys_in_recipe_data() -> None:
    """Data read without datamill's loader: a conditional's ``True`` key is its ``on``; any
    other boolean key is one line naming the words it may have been."""
    base: dict[str, Any] = {"name": "r", "steps": [{"text_generation": {"output": "q"}}]}
    samplers = {
        "topic": {"category": ["a"]},
        "words": {
            "conditional": {True: "topic", "cases": {"a": {"integer": {"low": 1, "high": 2}}}}
        },
    }
    p = recipe_from_dict({**base, "source": {"num_rows": 3, "samplers": samplers}})
    assert {r["words"] for r in p.source.load()} <= {1, 2}
    bad = [
        {**base, "source": {"num_rows": 3, "samplers": {"w": {"integer": {False: 1}}}}},
        {**base, "steps": [{"text_generation": {True: "x"}}]},
        {**base, True: 1},
    ]
    for data in bad:
        with pytest.raises(ConfigError) as err:
            recipe_from_dict(data)
        message = str(err.value)
        assert "quote it" in message and "True" not in message and "False" not in message


def test_load_yaml_reads_booleans_as_yaml_1_2_core() -> None:
    data = load_yaml(
        "a: {on: x, No: y, 'yes': z}\nb: [on, off, yes, no, Y, n, YES, Off]\nc: {true: 1}\n"
        "d: [true, True, FALSE, tRuE, 'true', !!bool yes]\ne: [1, 1.5, null, ~]\n"
    )
    assert data == {
        "a": {"on": "x", "No": "y", "yes": "z"},
        "b": ["on", "off", "yes", "no", "Y", "n", "YES", "Off"],
        "c": {"true": 1},
        "d": [True, True, False, True, "true", True],
        "e": [1, 1.5, None, None],
    }


YN = (
    "    urgent: {category: {values: [yes, no]}}\n"
    "    switch: {category: {values: [on, off]}}\n"
    "    tone: {conditional: {on: urgent, cases: {yes: {category: {values: [terse]}},"
    " no: {category: {values: [relaxed]}}}}}\n"
)


def test_yes_no_on_off_values_stay_words_in_rows_prompts_and_parquet(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    steps = '  - text_generation: {template: "{{ tone }} {{ urgent }} {{ switch }}", output: r}\n'
    pipeline = on_fake(load_recipe(str(recipe(tmp_path, YN, steps))))
    fake = pipeline.models["default"].spec
    rows = pipeline.run(tmp_path / "out").rows
    assert {r["urgent"] for r in rows} == {"yes", "no"}
    assert {r["switch"] for r in rows} == {"on", "off"}
    for r in rows:
        assert r["tone"] == ("terse" if r["urgent"] == "yes" else "relaxed"), r
    prompts = {c.messages[-1]["content"] for c in fake.calls if c.messages}
    assert prompts and all("True" not in p and "False" not in p for p in prompts), prompts
    assert {p.split()[1] for p in prompts} == {"yes", "no"}
    (data,) = sorted((tmp_path / "out" / "data").glob("*.parquet"))
    schema = pq.read_schema(data)
    assert str(schema.field("urgent").type) == "string"
    assert str(schema.field("switch").type) == "string"


def test_boolean_fields_still_take_yes_on_words(tmp_path: Path) -> None:
    """pydantic's lax bool reads ``no``/``yes``/``on``/``off`` from the recipe and from ``--set``."""
    steps = (
        '  - text_generation: {template: "{{ topic }}", output: r}\n'
        "  - format_sft: {instruction: topic, response: r, keep_columns: no}\n"
    )
    path = recipe(tmp_path, "    topic: {category: [a]}\n", steps)
    assert load_recipe(str(path)).steps[-1].keep_columns is False
    for word, want in (("yes", True), ("on", True), ("off", False), ("True", True)):
        p = load_recipe(str(path), [f"format_sft.keep_columns={word}"])
        assert p.steps[-1].keep_columns is want, word
    with pytest.raises(ConfigError, match="keep_columns: Input should be a valid boolean"):
        load_recipe(str(path), ["format_sft.keep_columns=maybe"])


def test_the_readme_sampler_block_loads_as_written(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    start = readme.index("```yaml\nsource:\n  num_rows: 200") + len("```yaml\n")
    block = readme[start : readme.index("```", start)]
    assert "conditional: {on: topic" in block
    path = tmp_path / "readme.yaml"
    path.write_text(f"name: readme\n{block}steps:\n  - text_generation: {{output: q}}\n")
    rows = load_recipe(str(path), ["source.num_rows=30"]).source.load()
    assert len(rows) == 30
    for r in rows:
        low, high = (100, 200) if r["topic"] == "science" else (20, 60)
        assert low <= r["words"] <= high, r

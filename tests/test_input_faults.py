"""How input values reach prompts and failure records: nested template paths, text that cannot be
written as UTF-8 (lone surrogates), objects printed whole into a prompt, Jinja in fields that are
not templates, and the Python API's constructor errors. Fake model only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datamill import ConfigError, FakeModel, FormatSFT, Pipeline, Request, TextGeneration, step
from datamill.errors import DatamillError, InputError, PipelineError
from datamill.pipeline.runner import FailureLog
from datamill.rows import path_text, unencodable, why_missing
from datamill.tasks.base import template_reads
from datamill.tasks.critique import CritiqueRewrite
from datamill.tasks.magpie import Magpie
from datamill.tasks.response_pool import ResponsePool
from datamill.tasks.self_instruct import SelfInstruct

LONE = "\ud83d"  # the first half of an emoji pair, alone


def echo() -> FakeModel:
    """Answers with the prompt it got (system + user), so a test can read what was sent."""

    def answer(request: Request, index: int) -> str:
        return " | ".join(m["content"] for m in request.messages or ())

    return FakeModel(answer)


def prompts(model: FakeModel) -> list[str]:
    return [m["content"] for r in model.calls for m in r.messages or ()]


# -- nested places in templates ----------------------------------------------------------------
CARD = "Card to {{ person.name }} at {{ person.address.street }}. {{ note }}"


def test_nested_null_blank_or_absent_is_empty_input_naming_the_path() -> None:
    model = echo()
    rows = [
        {"person": {"name": "Ada", "address": {"street": "1 Main St"}}, "note": "tea"},
        {"person": {"name": "Cy", "address": {"street": None}}, "note": "juice"},
        {"person": {"name": "Dee", "address": {"street": "   "}}, "note": "milk"},
        {"person": {"name": "Ben"}, "note": "coffee"},
        {"person": {"name": "Eve", "address": None}, "note": "water"},
    ]
    result = Pipeline(
        [TextGeneration(template=CARD, output="card")], source=rows, models={"default": model}
    ).run(None)
    assert prompts(model) == ["Card to Ada at 1 Main St. tea"]
    assert [r["card"] for r in result.rows] == ["Card to Ada at 1 Main St. tea"]
    details = {f["row"]["person"]["name"]: (f["reason"], f["detail"]) for f in result.failures}
    assert details == {
        "Cy": ("empty input", "person.address.street is null; text_generation needs a value there"),
        "Dee": (
            "empty input",
            "person.address.street is blank; text_generation needs a value there",
        ),
        "Ben": (
            "empty input",
            "person.address.street is absent; text_generation needs a value there",
        ),
        "Eve": (
            "empty input",
            "person.address.street is null; text_generation needs a value there",
        ),
    }


def test_item_access_paths_are_checked_like_attributes() -> None:
    model = echo()
    template = "{{ turns[0].content }} / {{ meta['the topic'] }}"
    rows = [
        {"turns": [{"content": "hi"}], "meta": {"the topic": "rivers"}},
        {"turns": [], "meta": {"the topic": "lakes"}},
        {"turns": [{"content": "yo"}], "meta": {"the topic": ""}},
    ]
    result = Pipeline(
        [TextGeneration(template=template, output="out")], source=rows, models={"default": model}
    ).run(None)
    assert prompts(model) == ["hi / rivers"]
    assert sorted(f["detail"] for f in result.failures) == [
        "meta['the topic'] is blank; text_generation needs a value there",
        "turns[0].content is absent; text_generation needs a value there",
    ]


def test_nested_path_empty_in_every_row_is_refused_before_any_call() -> None:
    model = echo()
    rows = [{"person": {"name": "Ada"}, "note": "a"}, {"person": {"name": "Bo"}, "note": "b"}]
    pipe = Pipeline(
        [TextGeneration(template=CARD, output="card")], source=rows, models={"default": model}
    )
    with pytest.raises(InputError) as err:
        pipe.run(None)
    assert str(err.value) == (
        "inline rows: person.address.street is empty or absent in all 2 rows; "
        "step 1 (text_generation) needs a value there"
    )
    assert model.calls == []


def test_places_the_template_tests_itself_are_not_required() -> None:
    model = echo()
    template = (
        "{{ name }}{% if person.address is defined %} at {{ person.address.street }}{% endif %}"
        "{{ nick | default('') }}"
    )
    rows = [{"name": "Ada", "person": {}}, {"name": "Bo", "person": {"address": {"street": "x"}}}]
    result = Pipeline(
        [TextGeneration(template=template, output="out")], source=rows, models={"default": model}
    ).run(None)
    assert sorted(r["out"] for r in result.rows) == ["Ada", "Bo at x"]
    assert result.failures == []


def test_template_reads_finds_paths_and_what_is_printed_whole() -> None:
    reads = template_reads(
        "{{ a.b }} {{ c['d e'][0] }} {{ t.strip() }} {{ xs | join(',') }} "
        "{% for item in items %}{{ item.name }}{% endfor %}{{ m[k] }}"
    )
    assert [path_text(p) for p in reads.paths] == [
        "a.b",
        "c['d e'][0]",
        "t",
        "xs",
        "items",
        "m",
        "k",
    ]
    assert [path_text(p) for p in reads.rendered] == ["a.b", "c['d e'][0]"]
    guarded = template_reads(
        "{{ a | default('') }}{% if b.c is defined %}{{ b.c.d }}{% endif %}"
        "{% if e %}{{ e.f }}{% endif %}{{ g if g is not none else '' }}"
    )
    assert guarded.paths == ()  # each place is tested by the template itself
    assert guarded.columns == ("b", "e", "g")  # ``a`` may be absent; ``b.c is defined`` needs b


# -- text that cannot be written as UTF-8 ------------------------------------------------------
def test_lone_surrogate_in_a_source_row_is_refused_before_any_call() -> None:
    model = echo()
    rows = [
        {"instruction": "Name a river."},
        {"instruction": "ok", "meta": {"tags": ["fine", f"emoji {LONE} here"]}},
    ]
    pipe = Pipeline(
        [TextGeneration(output="response"), FormatSFT()], source=rows, models={"default": model}
    )
    with pytest.raises(InputError) as err:
        pipe.run(None)
    message = str(err.value)
    assert message.startswith(
        "inline rows row 2: meta.tags[1]: unpaired surrogate '\\ud83d' at character 7; "
    )
    assert "\n" not in message and model.calls == []
    message.encode("utf-8")  # the message itself can be printed


@pytest.mark.parametrize("cache", [False, True], ids=["no-cache", "cache"])
def test_completion_with_a_lone_surrogate_is_a_failure_record(tmp_path: Path, cache: bool) -> None:
    def answer(request: Request, index: int) -> str:
        asked = (request.messages or ())[-1]["content"]
        return f"a river {LONE}!" if "river" in asked else "a fish"

    rows = [{"instruction": "Name a river."}, {"instruction": "Name a fish."}]
    result = Pipeline(
        [TextGeneration(output="response")], source=rows, models={"default": FakeModel(answer)}
    ).run(str(tmp_path / "out"), progress=False, cache=cache)
    assert [r["response"] for r in result.rows] == ["a fish"]
    lines = (tmp_path / "out" / "failures.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["reason"] == "unencodable text in output"
    assert record["raw_output"] == "a river \\ud83d!"  # escaped, so the record can be written


def test_a_function_step_returning_a_lone_surrogate_is_recorded(tmp_path: Path) -> None:
    @step(reads=["instruction"], writes=["note"])
    def annotate(row: dict) -> dict:
        return {**row, "note": f"x{LONE}" if row["instruction"] == "bad" else "fine"}

    result = Pipeline([annotate], source=[{"instruction": "bad"}, {"instruction": "good"}]).run(
        str(tmp_path / "out"), progress=False
    )
    assert result.rows == [{"instruction": "good", "note": "fine"}]
    record = json.loads((tmp_path / "out" / "failures.jsonl").read_text(encoding="utf-8"))
    assert record["reason"] == "unencodable text"
    assert record["detail"].endswith("note: unpaired surrogate '\\ud83d' at character 2")


def test_failure_log_writes_any_row_content(tmp_path: Path) -> None:
    path = tmp_path / "failures.jsonl"
    log = FailureLog(path)
    odd = {
        "text": f"half {LONE} pair",
        "key": {f"k{LONE}": 1},
        "blob": b"\xff\x00",
        "tags": {"a"},
        "score": float("nan"),
        (1, 2): "tuple key",
        "plain": "é ✓",
    }
    log.add({"step": "s", "reason": "r", "key": [0], "row": odd})
    log.add({"step": "s", "reason": "r", "key": [1], "row": {"plain": "é ✓"}})
    log.close()
    first, second = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert first["row"]["text"] == f"half {LONE} pair"  # JSON escapes give the text back
    assert first["row"]["score"] is None and first["row"]["(1, 2)"] == "tuple key"
    assert first["row"]["blob"] == str(b"\xff\x00") and first["row"]["plain"] == "é ✓"
    assert second["row"] == {"plain": "é ✓"}
    assert "é ✓" in path.read_text(encoding="utf-8").splitlines()[1]  # readable text stays as is


def test_unencodable_and_why_missing_name_the_place() -> None:
    assert unencodable({"a": [{"b": "ok"}, {"b": f"x{LONE}"}]}) == (
        "a[1].b: unpaired surrogate '\\ud83d' at character 2"
    )
    assert unencodable(f"{LONE}") == "unpaired surrogate '\\ud83d' at character 1"
    assert unencodable({"a": ["😀", "fine", 3, None]}) is None
    row = {"p": {"q": None, "r": " ", "s": [1]}}
    assert [why_missing(row, p) for p in [("p", "q"), ("p", "r"), ("p", "x"), ("p", "s", 0)]] == [
        "null",
        "blank",
        "absent",
        None,
    ]
    assert why_missing(row, ("p", "q", "deeper")) == "null"


# -- objects where a prompt needs text ---------------------------------------------------------
def test_struct_column_printed_whole_is_refused_with_the_way_to_reach_the_text() -> None:
    model = echo()
    rows = [{"instruction": {"text": "Name a river.", "lang": "en"}}] * 2
    pipe = Pipeline([TextGeneration(output="r")], source=rows, models={"default": model})
    with pytest.raises(InputError) as err:
        pipe.run(None)
    assert str(err.value) == (
        "inline rows row 1: column 'instruction' holds an object, which step 1 (text_generation) "
        "would put into the prompt as Python text; write {{ instruction.text }} in the template"
    )
    assert model.calls == []
    # reaching into it is right
    ok = Pipeline(
        [TextGeneration(template="{{ instruction.text }}", output="r")],
        source=rows,
        models={"default": model},
    ).run(None)
    assert [r["r"] for r in ok.rows] == ["Name a river."] * 2


def test_list_printed_whole_is_refused_and_join_is_accepted() -> None:
    model = echo()
    rows = [{"steps": ["boil", "stir"]}]
    with pytest.raises(InputError, match=r"column 'steps' holds a list.*\{\{ steps \| join"):
        Pipeline(
            [TextGeneration(template="Do: {{ steps }}", output="r")],
            source=rows,
            models={"default": model},
        ).run(None)
    ok = Pipeline(
        [TextGeneration(template="Do: {{ steps | join(', ') }}", output="r")],
        source=rows,
        models={"default": model},
    ).run(None)
    assert ok.rows[0]["r"] == "Do: boil, stir"


def test_object_made_by_an_earlier_step_is_a_not_text_failure() -> None:
    model = echo()

    @step(reads=["q"], writes=["wrapped"])
    def wrap(row: dict) -> dict:
        return {**row, "wrapped": {"text": row["q"]} if row["q"] == "a" else row["q"]}

    result = Pipeline(
        [wrap, TextGeneration(template="{{ wrapped }}", output="r")],
        source=[{"q": "a"}, {"q": "b"}],
        models={"default": model},
    ).run(None)
    assert prompts(model) == ["b"]
    [failure] = result.failures
    assert failure["reason"] == "not text"
    assert "{{ wrapped.text }}" in failure["detail"]


def test_a_fixed_column_task_refuses_an_object_column_up_front() -> None:
    model = echo()
    with pytest.raises(InputError, match="point the step at a column that holds text"):
        Pipeline(
            [SelfInstruct(column="doc")],
            source=[{"doc": {"body": "text"}}],
            models={"default": model},
        ).run(None)
    assert model.calls == []


# -- Jinja in prompt fields --------------------------------------------------------------------
def test_system_prompt_is_a_template_over_the_row() -> None:
    model = echo()
    rows = [{"persona": "a pirate", "instruction": "Hi"}, {"persona": None, "instruction": "Yo"}]
    result = Pipeline(
        [TextGeneration(system_prompt="You are {{ persona }}. Be brief.", output="r")],
        source=rows,
        models={"default": model},
    ).run(None)
    assert [r["r"] for r in result.rows] == ["You are a pirate. Be brief. | Hi"]
    assert [f["detail"] for f in result.failures] == [
        "column 'persona' is null; text_generation needs a value there"
    ]


def test_unknown_variable_in_a_system_prompt_is_refused_before_any_call() -> None:
    for task in (
        TextGeneration(system_prompt="You are {{ persona }}.", output="r"),
        ResponsePool(system_prompt="You are {{ persona }}."),
        Magpie(template="chatml", system_prompt={"a": "You are {{ persona }}.", "b": "Plain."}),
    ):
        model = echo()
        pipe = Pipeline([task], source=[{"instruction": "Hi"}], models={"default": model})
        with pytest.raises(PipelineError, match="needs column 'persona'"):
            pipe.run(None)
        assert model.calls == []


def test_bad_jinja_in_a_system_prompt_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="text_generation system_prompt is not valid Jinja"):
        TextGeneration(system_prompt="You are {{ persona ")


def test_free_text_fields_that_are_not_templates_refuse_markup() -> None:
    with pytest.raises(ConfigError) as err:
        CritiqueRewrite(principles=["Be kind to {{ user }}."])
    assert str(err.value) == (
        "critique principles is sent as written, not as a template, so '{{ user }}' would reach "
        "the model verbatim; remove the markup"
    )
    with pytest.raises(ConfigError, match="self_instruct criteria is sent as written"):
        SelfInstruct(criteria=["{% if x %}short{% endif %}"])
    with pytest.raises(ConfigError, match="self_instruct application_description"):
        SelfInstruct(application_description="{{ app }}")
    literal = "<|im_start|>system\nYou are {{ persona }}<|im_end|>\n<|im_start|>user\n"
    with pytest.raises(ConfigError, match=r"magpie template .* '\{\{ persona \}\}' would reach"):
        Magpie(template=literal, stop=["<|im_end|>"])
    slot = "<|im_start|>system\n{{ system_prompt }}<|im_end|>\n<|im_start|>user\n"
    assert Magpie(
        template=slot, stop=["<|im_end|>"], system_prompt="Be {{ mood }}."
    ).required_columns() == ["mood"]


# -- the Python API's errors -------------------------------------------------------------------
def test_constructor_errors_are_one_line_config_errors() -> None:
    with pytest.raises(DatamillError) as err:
        TextGeneration(output="r", temprature=0.3)
    assert isinstance(err.value, ConfigError)
    assert str(err.value).startswith(
        "TextGeneration: unknown parameter 'temprature' (did you mean 'temperature'?); allowed: "
    )
    with pytest.raises(ConfigError) as err:
        TextGeneration(temperature=9)
    assert str(err.value) == (
        "TextGeneration: temperature: Input should be less than or equal to 5 (got 9)"
    )
    with pytest.raises(
        ConfigError, match=r"ResponsePool: unknown parameter 'modles' \(did you mean 'models'"
    ):
        ResponsePool(modles=["a"])
    with pytest.raises(ConfigError, match="parameters are named"):
        TextGeneration("{{ instruction }}")  # type: ignore[misc]
    with pytest.raises(ConfigError, match="Magpie: template: unknown template 'chatmll'"):
        Magpie(template="chatmll")
    for error in ("TextGeneration: unknown", "Magpie: template"):
        assert "\n" not in error


def test_magpie_system_prompt_is_rendered_per_row() -> None:
    def handler(request: Request, index: int) -> str:
        return "What should I plant?" if request.prompt is not None else "Basil."

    model = FakeModel(handler)
    rows = [{"persona": "a gardener"}, {"persona": " "}]
    result = Pipeline(
        [
            Magpie(
                template="chatml",
                system_prompt="You are {{ persona }}.",
                include_system_prompt=True,
            )
        ],
        source=rows,
        models={"default": model},
    ).run(None)
    assert [r["system_prompt"] for r in result.rows] == ["You are a gardener."]
    raw = [r.prompt for r in model.calls if r.prompt is not None]
    assert raw == ["<|im_start|>system\nYou are a gardener.<|im_end|>\n<|im_start|>user\n"]
    assert [f["detail"] for f in result.failures] == [
        "column 'persona' is blank; magpie needs a value there"
    ]


def test_parquet_struct_column_used_as_text_is_refused_before_any_call(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from datamill.io.sources import source_from_path

    path = tmp_path / "seeds.parquet"
    pq.write_table(
        pa.table(
            {"instruction": [{"text": "Name a river.", "lang": "en"}, {"text": "Hi", "lang": "fr"}]}
        ),
        path,
    )
    model = echo()
    pipe = Pipeline(
        [TextGeneration(output="r")], source=source_from_path(path), models={"default": model}
    )
    with pytest.raises(InputError, match=r"write \{\{ instruction\.text \}\} in the template$"):
        pipe.run(None)
    assert model.calls == []

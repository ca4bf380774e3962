"""Tool-calling SFT data (issue 15, item 3): schemas from functions, queries of four kinds, calls
under the schema, APIGen's three checks, TRL's conversational tool rows, replay.

Models: the scripted fake (no native tools: the tools-in-a-system-message path with a JSON
schema), the shipped OpenAI-compatible test server on 127.0.0.1 emitting ``tool_calls`` (the
native path), and, marked ``real``, the embedded SmolLM2 through its grammar.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from datamill import FakeModel, ModelSettings, Pipeline
from datamill.errors import ConfigError
from datamill.models.base import Request
from datamill.models.openai import OpenAIModel
from datamill.models.tool_answer import calls_schema, parse_answer, plain_messages, renders_tools
from datamill.recipes.loader import load_recipe
from datamill.tasks.tool_calls import ToolCalls, VerifyToolSemantics
from datamill.testing.server import serve_in_thread
from datamill.tools import load_tools
from datamill.tools.execute import check_call, replay

sys.path.insert(0, str(Path(__file__).parent))
from tool_scripts import script  # noqa: E402

pytestmark = pytest.mark.timeout(600)

EXAMPLES = [
    f"datamill.tools.examples:{n}"
    for n in ("convert_units", "add_days", "days_between", "weekday", "country_facts")
]


def fake(native: bool = False) -> FakeModel:
    return FakeModel(lambda r, i: script(r, i, native))


def on_fake(model: Any, overrides: list[str] | None = None) -> Pipeline:
    p = load_recipe("tool-calls", overrides)
    p.models = {n: ModelSettings(spec=model, sampling=s.sampling) for n, s in p.models.items()}
    return p


# -- schemas from the user's functions ------------------------------------------------------------
def test_schemas_come_from_signatures_and_docstrings() -> None:
    tools = {t.name: t for t in load_tools(EXAMPLES)}
    assert sorted(tools) == [
        "add_days",
        "convert_units",
        "country_facts",
        "days_between",
        "weekday",
    ]
    convert = tools["convert_units"].schema["function"]
    assert convert["description"].startswith("Convert a length, mass or temperature")
    params = convert["parameters"]
    assert params["required"] == ["value", "from_unit", "to_unit"]
    assert params["properties"]["value"]["type"] == "number"
    assert "furlong" not in params["properties"]["to_unit"]["enum"]
    assert "km" in params["properties"]["to_unit"]["enum"]
    assert tools["add_days"].parameters["properties"]["days"]["type"] == "integer"
    assert "return" not in convert  # OpenAI's function format


BAD_TOOLS = '''
def no_docstring(x: int) -> int:
    return x


def no_hints(x):
    """Double a number.

    Args:
        x: The number.
    """
    return 2 * x
'''


@pytest.mark.parametrize(
    ("name", "says"), [("no_docstring", "no docstring"), ("no_hints", "type hint")]
)
def test_a_function_without_docstring_or_hints_is_one_line_before_any_model_call(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    says: str,
) -> None:
    from datamill.cli import main

    (tmp_path / "my_bad_tools.py").write_text(BAD_TOOLS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=f"tool my_bad_tools:{name}: .*{says}"):
        ToolCalls(tools=[f"my_bad_tools:{name}"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: r\nmodels: {default: {spec: fake}}\nsource: {rows: [{kind: single, query: q}]}\n"
        f"steps:\n  - tool_calls:\n      tools: [my_bad_tools:{name}]\n"
    )
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(recipe), "--output", str(tmp_path / "out"), "--quiet"])
    assert exit_.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"my_bad_tools:{name}" in err[0] and "docstring" in err[0]
    assert not (tmp_path / "out" / "run.json").exists()  # refused before the run started


def test_an_unknown_tool_name_is_one_line() -> None:
    with pytest.raises(ConfigError, match="tool datamill.tools.examples:nope: .*has no 'nope'"):
        load_tools(["datamill.tools.examples:nope"])


# -- the answer format of models without native tools ---------------------------------------------
def test_calls_schema_parse_and_plain_messages() -> None:
    tools = [t.schema for t in load_tools(EXAMPLES[:2])]
    required = calls_schema(tools, "required")
    assert required["properties"]["tool_calls"]["minItems"] == 1
    assert "anyOf" in calls_schema(tools, "auto")  # calls or a plain answer
    one = calls_schema(tools, {"type": "function", "function": {"name": "add_days"}})
    assert one["properties"]["tool_calls"]["items"]["properties"]["name"] == {"const": "add_days"}
    calls, answer = parse_answer(
        '{"tool_calls": [{"name": "add_days", "arguments": {"date": "2024-01-01", "days": 3}}]}'
    )
    assert answer is None and calls[0]["name"] == "add_days"
    assert json.loads(calls[0]["arguments"]) == {"date": "2024-01-01", "days": 3}
    assert parse_answer('{"answer": "No tool needed."}') == ((), "No tool needed.")
    assert parse_answer("Just words.") == ((), "Just words.")
    assert parse_answer('{"tool_calls": [') == ((), None)
    text = plain_messages(
        [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c", "name": "f", "content": "3"},
        ]
    )
    assert [m["role"] for m in text] == ["user", "assistant", "user"]
    assert text[2]["content"] == "Result of f: 3"


def test_format_check_names_the_problem() -> None:
    tools = {t.name: t for t in load_tools(EXAMPLES)}
    ok = {"id": "c", "name": "weekday", "arguments": '{"date": "2024-01-01"}'}
    assert check_call(ok, tools) is None
    assert "unknown tool 'fly'" in str(check_call({**ok, "name": "fly"}, tools))
    assert "not JSON" in str(check_call({**ok, "arguments": "{date"}, tools))
    missing = check_call({**ok, "name": "add_days"}, tools)
    assert missing is not None and "'days' is a required property" in missing
    unit = {
        "id": "c",
        "name": "convert_units",
        "arguments": '{"value": 1, "from_unit": "km", "to_unit": "x"}',
    }
    assert "to_unit" in str(check_call(unit, tools))


# -- the recipe on the fake model -----------------------------------------------------------------
def check_row(row: dict[str, Any]) -> None:
    """A row in TRL's conversational tool format, with results matching their calls."""
    messages = row["messages"]
    assert messages[0]["role"] == "user" and messages[-1]["role"] == "assistant"
    assert messages[-1]["content"] and not messages[-1].get("tool_calls")  # parquet: None
    tools = json.loads(row["tools"])
    assert {t["function"]["name"] for t in tools} >= {"convert_units", "weekday"}
    ids = []
    for m in messages[1:-1]:
        if m["role"] == "assistant":
            assert m["tool_calls"]
            for call in m["tool_calls"]:
                assert call["type"] == "function"
                assert isinstance(json.loads(call["function"]["arguments"]), dict)
                ids.append(call["id"])
        else:
            assert m["role"] == "tool" and m["tool_call_id"] in ids and m["name"]
            json.loads(m["content"])  # the result as JSON text


def test_tool_calls_recipe_on_the_fake_model_writes_all_four_kinds(tmp_path: Path) -> None:
    model = fake()
    result = on_fake(model).run(tmp_path / "out", limit=5)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["rows"] == 5 and run["failures"] == {}
    by_kind = {r["kind"]: r for r in result.rows}
    assert set(by_kind) == {"single", "parallel", "sequential", "none"}
    for row in result.rows:
        check_row(row)
    calls = lambda row: [m for m in row["messages"] if m.get("tool_calls")]  # noqa: E731
    assert [len(m["tool_calls"]) for m in calls(by_kind["single"])] == [1]
    assert [len(m["tool_calls"]) for m in calls(by_kind["parallel"])] == [2]
    assert [len(m["tool_calls"]) for m in calls(by_kind["sequential"])] == [1, 1]
    assert by_kind["none"]["messages"] == [
        {"role": "user", "content": "Write a two-line poem about rain."},
        {"role": "assistant", "content": "Rain taps the glass."},
    ]
    seq = [m for m in by_kind["sequential"]["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in seq] == ['"2024-04-15"', '"Monday"']  # executed for real
    facts = [
        json.loads(m["content"]) for m in by_kind["parallel"]["messages"] if m["role"] == "tool"
    ]
    assert [f["capital"] for f in facts] == ["Tokyo", "Nairobi"]
    # the calls went out held to the calls schema, with the tools listed in a system message
    asked = [r for r in model.calls if r.json_schema and "tool_calls" in json.dumps(r.json_schema)]
    assert asked and all(r.messages[0]["content"].startswith("You can call") for r in asked)
    assert run["events"]["verify_tool_semantics"] == {"semantics skipped (no calls)": 1}


def test_a_rerun_calls_no_model_and_runs_no_tool_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "calls.sqlite"
    first = on_fake(fake()).run(tmp_path / "one", limit=5, cache=cache)

    async def no_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a cached tool call ran again")

    monkeypatch.setattr("datamill.tasks.tool_calls.run_call", no_run)
    second_model = fake()
    second = on_fake(second_model).run(tmp_path / "two", limit=5, cache=cache)
    assert second_model.calls == [] and second.rows == first.rows


def rows_for(kinds_queries: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [{"kind": k, "query": q} for k, q in kinds_queries]


def checks_pipeline(model: Any, rows: list[dict[str, Any]]) -> Pipeline:
    return Pipeline(
        [ToolCalls(tools=EXAMPLES), VerifyToolSemantics()],
        source=rows,
        models={"default": model},
    )


CHECK_CASES = [
    ("single", "How many kilometres is 26.2 miles?"),  # passes
    ("single", "How many furlongs is 3 km?"),  # format: furlong is not an allowed unit
    ("single", "What is the capital of Atlantis?"),  # execution: KeyError in the lookup
    ("single", "How many grams is 2 lb?"),  # semantics: the judge turns it down
    ("none", "How many kilometres is 26.2 miles?"),  # irrelevance: a call for a none query
    ("single", "Write a two-line poem about rain."),  # no call
    ("single", "What are the capitals of Japan and Kenya?"),  # call count: two for single
    ("parallel", "How many kilometres is 26.2 miles?"),  # call count: one for parallel
]


def test_each_check_drops_its_failures_with_their_reasons(tmp_path: Path) -> None:
    result = checks_pipeline(fake(), rows_for(CHECK_CASES)).run(tmp_path / "out")
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["failures"] == {
        "format": 1,
        "execution": 1,
        "semantics": 1,
        "irrelevance": 1,
        "no call": 1,
        "call count": 2,
    }
    assert [r["query"] for r in result.rows] == [CHECK_CASES[0][1]]
    records = [json.loads(line) for line in (tmp_path / "out" / "failures.jsonl").open()]
    detail = {r["reason"]: r.get("detail", "") for r in records}
    text = json.dumps(records)
    assert "furlong" in text and "KeyError" in text and "Atlantis" in text
    assert "wrong unit" in detail["semantics"]


# -- the shipped test server: native tools --------------------------------------------------------
def test_native_tool_calls_through_the_test_server(tmp_path: Path) -> None:
    model = fake(native=True)
    with serve_in_thread(model, name="caller", record_bodies=True) as server:
        openai = OpenAIModel("caller", server.url)
        result = on_fake(openai).run(tmp_path / "out", limit=5)
        bodies = list(server.server.bodies or [])
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["rows"] == 5 and run["failures"] == {}
    for row in result.rows:
        check_row(row)
    with_tools = [b for b in bodies if b.get("tools")]
    assert {b["tool_choice"] for b in with_tools} == {"required", "auto", "none"}
    assert all(not b.get("response_format") for b in with_tools)  # native: no schema trick
    # round 2 of the sequential query sent the calls and their results back in OpenAI's shape
    second = next(b for b in with_tools if any(m["role"] == "tool" for m in b["messages"]))
    sent = {m["role"]: m for m in second["messages"]}
    assert sent["assistant"]["tool_calls"][0]["function"]["name"] in {
        "add_days",
        "country_facts",
        "convert_units",
    }
    assert sent["tool"]["tool_call_id"] == sent["assistant"]["tool_calls"][-1]["id"]
    # the same calls and results whichever way they were asked for (the final answers differ:
    # the script echoes the results as each path shows them to the model)
    native = {r["kind"]: r["messages"][:-1] for r in result.rows}
    fallback = on_fake(fake()).run(tmp_path / "fb", limit=5).rows
    assert native == {r["kind"]: r["messages"][:-1] for r in fallback}


# -- the rows load in TRL and replay ---------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("rows") / "out"
    on_fake(fake()).run(out, limit=5)
    import datasets

    return list(
        datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"))["train"]
    )


def test_rows_render_with_trls_chat_template_helper_and_tools(
    fake_rows: list[dict[str, Any]],
) -> None:
    import trl
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from trl.data_utils import apply_chat_template

    word = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    word.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word, unk_token="[UNK]")
    qwen3 = Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja"  # renders tools
    tokenizer.chat_template = qwen3.read_text()
    for row in fake_rows:
        example = {"messages": row["messages"]}
        text = apply_chat_template(example, tokenizer, tools=json.loads(row["tools"]))["text"]
        assert "<tools>" in text and '"name": "country_facts"' in text
        calls = [c for m in row["messages"] for c in m.get("tool_calls") or ()]
        assert text.count('<tool_call>\n{"name": "') == len(calls)  # not the prompt's example
        assert text.count("<tool_response>") == len(calls)
        assert row["messages"][-1]["content"] in text


def test_a_generated_row_replays_to_its_stored_results(fake_rows: list[dict[str, Any]]) -> None:
    tools = load_tools(EXAMPLES)
    replayed = [call for row in fake_rows for call in replay(row, tools)]
    assert len(replayed) == 6  # 1 + 1 + 2 + 2 + 0 calls: single, single, parallel, sequential, none
    for _, stored, ok, now in replayed:
        assert ok and stored and now == stored


# -- the embedded engine ------------------------------------------------------------------------------
def test_templates_that_render_tools_are_told_apart() -> None:
    import trl

    from datamill.models.llamacpp import embedded_model_path
    from datamill.models.llamacpp_gguf import Weights

    qwen3 = (Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text()
    smol = Weights(embedded_model_path(), vocab_only=True).metadata("tokenizer.chat_template")
    assert renders_tools(qwen3) and not renders_tools(smol)


def test_the_embedded_backend_lists_the_tools_and_holds_the_answer_to_a_grammar() -> None:
    from datamill.models.llamacpp import LlamaCppModel

    model = LlamaCppModel()
    tools = tuple(t.schema for t in load_tools(EXAMPLES[:2]))
    request = Request.chat("What is 2024-01-01 plus 3 days?", tools=tools, tool_choice="required")
    rendered = model.render(request)
    assert "You can call these tools" in rendered and '"name": "add_days"' in rendered
    job = model.job(request)
    assert job.grammar is not None and "add_days" in job.grammar
    plain = model.job(Request.chat("hi", tools=tools, tool_choice="none"))
    assert plain.grammar is None and "You can call" not in plain.prompt
    assert model.capabilities().tools


@pytest.mark.real
@pytest.mark.timeout(900)
def test_tool_calls_recipe_runs_on_the_embedded_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datamill.cli import main

    out = tmp_path / "real"
    try:
        main(["run", "tool-calls", "--limit", "2", "--output", str(out), "--quiet"])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    printed = capsys.readouterr()
    run = json.loads((out / "run.json").read_text())
    steps = {k: (v["rows_in"], v["rows_out"]) for k, v in run["steps"].items()}
    print(
        f"\ntool-calls (embedded): exit {code}, rows {run['rows']}, steps {steps}, losses {run['failures']}"
    )
    assert run["model_calls"] >= 2 and run["steps"]["tool_queries"]["rows_in"] == 2
    if run["rows"] == 0:  # a 135M model rarely writes a fitting call: allowed, with reasons shown
        assert code != 0 and run["failures"]
        assert any(r in printed.out + printed.err for r in run["failures"])
    else:
        assert code == 0
        import datasets

        rows = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"))["train"]
        for row in rows:
            check_row(row)
            if any(m.get("tool_calls") for m in row["messages"]):
                results = replay(row, load_tools(EXAMPLES))
                assert all(ok and now == stored for _, stored, ok, now in results)


def test_a_query_cut_after_its_first_line_is_kept_and_one_cut_inside_it_is_lost(
    tmp_path: Path,
) -> None:
    from datamill.models.base import Completion
    from datamill.tasks.tool_calls import ToolQueries

    def writer(request: Request, i: int) -> Completion:
        kind_cue = "exactly one call" in str((request.messages or ())[-1]["content"])
        text = "How many feet is 3 m?\nAlso, here is why" if kind_cue else "How many feet is"
        return Completion(text=text, finish_reason="length")

    rows = [{"kind": "single"}, {"kind": "parallel"}]
    p = Pipeline([ToolQueries(tools=EXAMPLES)], source=rows, models={"default": FakeModel(writer)})
    result = p.run(tmp_path / "out")
    assert [r["query"] for r in result.rows] == ["How many feet is 3 m?"]
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["failures"] == {"truncated at max_tokens": 1}

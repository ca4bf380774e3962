"""Reasoning and tools through the model seam, the call cache, and the reasoning-distill recipe.

The server side is the shipped test server on 127.0.0.1 (real HTTP), told to send the thinking
apart (``reasoning_content`` as vLLM's and llama-server's reasoning parsers, ``reasoning`` as
Ollama's ``/v1``) or inline as a ``<think>`` block, and to send ``tool_calls``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from datamill import FakeModel, ModelSettings, Pipeline, Request, TextGeneration
from datamill.errors import ConfigError, ParseError
from datamill.models.base import Completion
from datamill.models.openai import OpenAIModel
from datamill.models.registry import load_model
from datamill.pipeline.cache import CallCache, call_key
from datamill.recipes.loader import load_recipe
from datamill.steps.reasoning import ReasoningGates, length_bucket, repetition_loop
from datamill.testing.server import ServerThread, serve_in_thread

pytestmark = pytest.mark.timeout(900)

TOOL = {
    "type": "function",
    "function": {
        "name": "convert_units",
        "description": "Convert a value between units.",
        "parameters": {
            "type": "object",
            "properties": {"value": {"type": "number"}, "to": {"type": "string"}},
            "required": ["value", "to"],
        },
    },
}
CALL = {"id": "call_7", "name": "convert_units", "arguments": '{"value": 3, "to": "km"}'}


@pytest.fixture
def servers() -> Iterator[Any]:
    started: list[ServerThread] = []

    def start(model: FakeModel, **options: Any) -> ServerThread:
        server = serve_in_thread(model, name="thinker", **options)
        started.append(server)
        return server

    yield start
    for s in started:
        s.stop()


async def call(model: OpenAIModel, request: Request) -> list[Completion]:
    try:
        return await model.generate(request)
    finally:
        await model.close()


def thinker(request: Request, i: int) -> str:
    question = request.messages[-1]["content"] if request.messages else request.prompt
    return f"<think>Let me think about {question} (try {i}).</think>The answer is {i + 4}."


# -- the openai backend ----------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_openai_backend_reads_the_reasoning_a_server_sends_apart(servers: Any, field: str) -> None:
    server = servers(FakeModel(thinker), reasoning_field=field, record_bodies=True)
    out = asyncio.run(call(OpenAIModel("thinker", server.url), Request.chat("2+2?", n=2)))
    assert [c.text for c in out] == ["The answer is 4.", "The answer is 5."]
    assert [c.reasoning for c in out] == [
        "Let me think about 2+2? (try 0).",
        "Let me think about 2+2? (try 1).",
    ]
    assert "<think>" not in json.dumps(server.server.bodies)  # nothing inline was sent


def test_openai_backend_keeps_an_inline_think_block_for_the_task_to_split(servers: Any) -> None:
    server = servers(FakeModel(thinker))  # a server with no reasoning parser
    [c] = asyncio.run(call(OpenAIModel("thinker", server.url), Request.chat("2+2?")))
    assert c.text.startswith("<think>Let me think") and c.reasoning is None
    step = TextGeneration(output="answer")
    checked = step.check_completion(c)
    assert (checked.text, checked.reasoning) == (
        "The answer is 4.",
        "Let me think about 2+2? (try 0).",
    )


def test_tools_tool_choice_and_thinking_switch_reach_the_server(servers: Any) -> None:
    fake = FakeModel(
        lambda r, i: Completion(text="", finish_reason="tool_calls", tool_calls=(CALL,))
    )
    server = servers(fake, record_bodies=True)
    request = Request.chat(
        "3000 m in km?",
        tools=[TOOL],
        tool_choice="required",
        enable_thinking=False,
        reasoning_effort="low",
    )
    [c] = asyncio.run(call(OpenAIModel("thinker", server.url), request))
    [body] = server.server.bodies
    assert body["tools"] == [TOOL] and body["tool_choice"] == "required"
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["reasoning_effort"] == "low"
    [seen] = fake.calls  # the server hands them on to the model's Request
    assert seen.tools == (TOOL,) and seen.tool_choice == "required"
    assert (seen.enable_thinking, seen.reasoning_effort) == (False, "low")
    assert c.finish_reason == "tool_calls" and c.tool_calls == (CALL,)


def test_a_request_without_the_new_fields_sends_none_of_them(servers: Any) -> None:
    server = servers(FakeModel(thinker), record_bodies=True)
    asyncio.run(call(OpenAIModel("thinker", server.url), Request.chat("hi")))
    [body] = server.server.bodies
    assert not {"tools", "tool_choice", "chat_template_kwargs", "reasoning_effort"} & set(body)


def test_a_task_that_offered_tools_accepts_a_tool_calls_finish() -> None:
    step = TextGeneration()
    called = Completion(text="", finish_reason="tool_calls", tool_calls=(CALL,))
    with_tools = Request.chat("3000 m in km?", tools=[TOOL])
    assert step.check_completion(called, with_tools).tool_calls == (CALL,)
    with pytest.raises(ParseError) as err:
        step.check_completion(called, Request.chat("3000 m in km?"))
    assert err.value.reason == "tool call instead of an answer"
    with pytest.raises(ValueError, match="tool_choice needs tools"):
        Request.chat("x", tool_choice="auto")


# -- splitting the thinking on every backend ------------------------------------------------------
def test_think_block_is_split_on_the_fake_model_and_written_where_asked(tmp_path: Path) -> None:
    step = TextGeneration(template="{{ q }}", output="answer", reasoning_output="thinking")
    result = Pipeline([step], source=[{"q": "2+2?"}], models=FakeModel(thinker)).run(tmp_path / "o")
    [row] = result.rows
    assert row["answer"] == "The answer is 4."
    assert row["thinking"] == "Let me think about 2+2? (try 0)."


def test_think_tags_are_set_per_model_and_per_step(tmp_path: Path) -> None:
    def odd(request: Request, i: int) -> str:
        return "[[R]]weighing it[[/R]] forty-two"

    model = load_model("fake", think_tags=["[[R]]", "[[/R]]"])
    model.handler = odd  # type: ignore[attr-defined]
    step = TextGeneration(template="{{ q }}", output="a", reasoning_output="r")
    [row] = Pipeline([step], source=[{"q": "x"}], models=model).run(tmp_path / "m").rows
    assert (row["a"], row["r"]) == ("forty-two", "weighing it")
    by_step = TextGeneration(
        template="{{ q }}", output="a", reasoning_output="r", think_tags=("[[R]]", "[[/R]]")
    )
    [row] = Pipeline([by_step], source=[{"q": "x"}], models=FakeModel(odd)).run(tmp_path / "s").rows
    assert (row["a"], row["r"]) == ("forty-two", "weighing it")
    with pytest.raises(ConfigError, match="think_tags must be two non-empty texts"):
        load_model("fake", think_tags=["<think>"])


# -- the call cache -------------------------------------------------------------------------------
def test_cache_round_trip_keeps_reasoning_and_tool_calls(tmp_path: Path) -> None:
    cache = CallCache(tmp_path / "c.sqlite")
    request = Request.chat("3000 m in km?", tools=[TOOL], n=3)
    key = call_key("fake:x", request)
    stored = [
        Completion(text="3 km", reasoning="1000 m per km", completion_tokens=4),
        Completion(text="", finish_reason="tool_calls", tool_calls=(CALL,)),
        Completion(text="", finish_reason="length", reasoning="still thinking"),
    ]
    cache.put(key, stored)
    cache.close()
    again = CallCache(tmp_path / "c.sqlite")
    got = again.get(key, 3)
    again.close()
    assert got is not None
    assert [(c.text, c.reasoning, c.tool_calls, c.finish_reason) for c in got] == [
        ("3 km", "1000 m per km", (), "stop"),
        ("", None, (CALL,), "tool_calls"),
        ("", "still thinking", (), "length"),
    ]
    assert all(c.cached for c in got)


def test_a_cache_file_of_the_older_layout_is_migrated_and_its_calls_served(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE calls (key TEXT NOT NULL, idx INTEGER NOT NULL, text TEXT NOT NULL, "
        "finish_reason TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, "
        "completion_tokens INTEGER NOT NULL, created REAL NOT NULL, PRIMARY KEY (key, idx)) "
        "WITHOUT ROWID;"
        "CREATE TABLE datamill_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO datamill_meta VALUES ('format', '1');"
        "INSERT INTO calls VALUES ('k', 0, 'an old answer', 'stop', 3, 4, 0);"
    )
    db.commit()
    db.close()
    cache = CallCache(path)
    [old] = cache.get("k", 1) or []
    assert (old.text, old.reasoning, old.tool_calls) == ("an old answer", None, ())
    cache.put("k2", [Completion(text="A", reasoning="R")])
    assert (cache.get("k2", 1) or [])[0].reasoning == "R"
    cache.close()
    cols = [r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(calls)")]
    assert cols[-1] == "extra"


#: keys computed by datamill before ``tools``/``tool_choice``/``enable_thinking``/
#: ``reasoning_effort`` existed (the code of commit b53216a): caches made then stay valid
OLD_KEYS = {
    "chat": "47b4867c3f01357cd09566e1846f960bfd0e441cc03c12bfe3ca89eba3e67d2e",
    "prompt": "4c3a80e328330dce58fecc4baf026346316dfab01d0a7a4b8d160c25e1e08b30",
}


def test_requests_without_the_new_fields_keep_their_old_cache_keys() -> None:
    chat = Request.chat("What is 2+2?", system="Be brief.", max_tokens=64, seed=7, stop=["END"])
    prompt = Request(prompt="<|im_start|>user\n", json_schema={"type": "object"})
    assert call_key("fake:old", chat) == OLD_KEYS["chat"]
    assert call_key("fake:old", prompt) == OLD_KEYS["prompt"]
    assert "tools" not in chat.cache_payload() and "enable_thinking" not in chat.cache_payload()
    # each new field, once set, is part of the key (and False is not the same as unset)
    variants = [
        chat.with_options(tools=(TOOL,)),
        chat.with_options(tools=(TOOL,), tool_choice="required"),
        chat.with_options(enable_thinking=False),
        chat.with_options(enable_thinking=True),
        chat.with_options(reasoning_effort="low"),
    ]
    keys = {call_key("fake:old", r) for r in variants}
    assert len(keys) == len(variants) and OLD_KEYS["chat"] not in keys
    # the cache key and the payload agree on it
    for r in variants:
        assert json.loads(r.cache_payload()).keys() >= {"messages", "max_tokens"}


def test_step_identities_do_not_move_for_steps_that_leave_the_new_options_unset() -> None:
    plain = TextGeneration(template="{{ q }}", output="a")
    with_reasoning = TextGeneration(template="{{ q }}", output="a", reasoning_output="r")
    assert with_reasoning.identity != plain.identity
    # the identity of the plain step, computed by datamill before these options existed
    assert plain.identity == "text_generation:7ab65f75ea9b"


# -- gates ------------------------------------------------------------------------------------------
def run_gate(gate: ReasoningGates, row: dict[str, Any], tmp_path: Path) -> tuple[list[Any], Any]:
    out = tmp_path / f"g{len(list(tmp_path.iterdir()))}"
    result = Pipeline([gate], source=[row]).run(out)
    return result.rows, json.loads((out / "run.json").read_text())


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"reasoning": "so far so", "response": "", "finish_reason": "length"}, "truncated trace"),
        (
            {"reasoning": "I think " + "wait no " * 9, "response": "4", "finish_reason": "stop"},
            "repetition loop",
        ),
        (
            {"reasoning": "2 and 2", "response": " ", "finish_reason": "stop"},
            "missing final answer",
        ),
        ({"reasoning": None, "response": "4", "finish_reason": "stop"}, "no reasoning"),
        (
            {
                "reasoning": " ".join(f"w{i}" for i in range(30)),
                "response": "4",
                "finish_reason": "stop",
            },
            "over length budget",
        ),
    ],
)
def test_gates_drop_bad_traces_with_their_reasons(
    row: dict[str, Any], reason: str, tmp_path: Path
) -> None:
    gate = ReasoningGates(max_reasoning_words=20, loop_repeats=6)
    rows, run = run_gate(gate, row, tmp_path)
    assert rows == [] and run["failures"] == {reason: 1}


def test_gates_keep_a_good_trace_and_count_its_length(tmp_path: Path) -> None:
    good = {"reasoning": "two plus two is four", "response": "\\boxed{4}", "finish_reason": "stop"}
    rows, run = run_gate(ReasoningGates(answer_pattern=r"\\boxed\{"), good, tmp_path)
    assert rows == [good]
    assert run["events"]["reasoning_gates"] == {"trace words 0-63": 1}
    rows, run = run_gate(
        ReasoningGates(answer_pattern=r"\\boxed\{"), {**good, "response": "4"}, tmp_path
    )
    assert rows == [] and run["failures"] == {"missing final answer": 1}
    assert repetition_loop("a b c a b c a b c".split(), 4, 3) == "a b c"
    assert repetition_loop("a b c a b d a b c".split(), 4, 3) is None
    assert [length_bucket(n) for n in (0, 64, 5000)] == [
        "trace words 0-63",
        "trace words 64-255",
        "trace words 4096+",
    ]
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        ReasoningGates(answer_pattern="(")


# -- the recipe -------------------------------------------------------------------------------------
def teacher(request: Request, i: int) -> str | Completion:
    """Right answers with thinking, one looping trace and one cut trace."""
    question = request.messages[-1]["content"] if request.messages else ""
    if "17 + 25" in question:
        return f"<think>17 + 20 = 37 and 37 + 5 = 42 (try {i}).</think>So \\boxed{{42}}."
    if "pencils" in question:  # cut inside its thinking
        return Completion(text="<think>45 / 3 = 15 cents, " + "then " * 50, finish_reason="length")
    if "2^10" in question:
        return "<think>1024 = " + "seven times " * 12 + "</think>\\boxed{2}"
    return f"<think>x = 27 / 3 (try {i}).</think>\\boxed{{9}}"


def on_fake(name: str, overrides: list[str] | None = None) -> Pipeline:
    p = load_recipe(name, overrides)
    p.models = {
        n: ModelSettings(spec=FakeModel(teacher), sampling=s.sampling) for n, s in p.models.items()
    }
    return p


def test_reasoning_distill_on_the_fake_model_writes_think_and_no_think_rows(tmp_path: Path) -> None:
    p = on_fake("reasoning-distill")
    result = p.run(tmp_path / "out", limit=4)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    # 4 questions x K=2 traces: 2 cut, 2 looping, 4 right → 8 rows (think + no_think each)
    assert run["failures"] == {"truncated trace": 2, "repetition loop": 2}
    assert run["steps"]["text_generation"]["rows_out"] == 8
    assert run["verification"]["verify_math"]["passed"] == 4
    assert sum(run["events"]["reasoning_gates"].values()) == 8  # every trace in a length bucket
    assert len(result.rows) == 8
    think = [r for r in result.rows if r["variant"] == "think"]
    plain = [r for r in result.rows if r["variant"] == "no_think"]
    assert len(think) == len(plain) == 4
    for row in think:
        assert row["chat_template_kwargs"] == {"enable_thinking": True}
        user, assistant = row["messages"]
        assert user == {"role": "user", "content": row["question"]}
        assert (
            assistant["content"].startswith("<think>\n") and "</think>\n\n" in assistant["content"]
        )
    for row in plain:
        assert row["chat_template_kwargs"] == {"enable_thinking": False}
        assert "<think>" not in row["messages"][1]["content"]
    assert {r["messages"][1]["content"] for r in plain} == {"So \\boxed{42}.", "\\boxed{9}"}
    fake = p.models["default"].spec
    assert all(c.enable_thinking is True and c.n == 2 for c in fake.calls)  # type: ignore[union-attr]


def test_reasoning_distill_keeps_the_thinking_in_reasoning_content_when_asked(
    tmp_path: Path,
) -> None:
    p = on_fake("reasoning-distill", ["format_reasoning_sft.thinking=field"])
    rows = p.run(tmp_path / "out", limit=1).rows
    think = [r for r in rows if r["variant"] == "think"]
    assert len(think) == 2
    for row in think:
        assistant = row["messages"][1]
        assert assistant["content"] == "So \\boxed{42}."
        assert assistant["reasoning_content"].startswith("17 + 20 = 37")


@pytest.mark.real
@pytest.mark.timeout(900)
def test_reasoning_distill_runs_on_the_embedded_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datamill.cli import main

    out = tmp_path / "real"
    args = ["run", "reasoning-distill", "--limit", "1", "--output", str(out), "--quiet"]
    args += ["--set", "text_generation.max_tokens=200"]
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    printed = capsys.readouterr()
    run = json.loads((out / "run.json").read_text())
    print(
        f"\nreasoning-distill (embedded): exit {code}, rows {run['rows']}, losses {run['failures']}"
    )
    assert run["model_calls"] >= 1
    if run["rows"] == 0:  # a 135M model rarely thinks in <think>: allowed, with the reasons shown
        assert code != 0 and run["failures"]
        assert any(r in printed.out + printed.err for r in run["failures"])
    else:
        assert code == 0


def test_the_fake_model_thinks_when_the_switch_is_on() -> None:
    fake = FakeModel()
    [plain] = asyncio.run(fake.generate(Request.chat("hi")))
    [thinking] = asyncio.run(fake.generate(Request.chat("hi", enable_thinking=True)))
    assert "<think>" not in plain.text
    assert thinking.text.startswith("<think>") and "</think>" in thinking.text
    reasoning = TextGeneration().check_completion(thinking).reasoning
    assert reasoning and reasoning.strip() and "<think>" not in reasoning


def test_response_pool_splits_with_the_model_think_tags(tmp_path: Path) -> None:
    from datamill.tasks.response_pool import ResponsePool

    model = load_model("fake", think_tags=["<reasoning>", "</reasoning>"])
    model.handler = lambda r, i: f"<reasoning>hmm {i}</reasoning>Answer {i}."  # type: ignore[attr-defined]
    result = Pipeline(
        [ResponsePool(n=2)], source=[{"instruction": "Name a colour."}], models=model
    ).run(tmp_path / "o")
    assert result.rows[0]["generations"] == ["Answer 0.", "Answer 1."]

"""The Anthropic Messages API backend: the pure body mapping and parsing, and the model against
the shipped fake Messages API on 127.0.0.1 (real HTTP)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from datamill import FakeModel, Request
from datamill.errors import ConfigError, ModelError, ModelUnavailable
from datamill.models.anthropic import AnthropicModel, messages_body, parse_message
from datamill.models.anthropic_messages import SCHEMA_TOOL, SCHEMA_VALUE_TOOL, BodyOptions
from datamill.models.base import Completion
from datamill.models.registry import load_model
from datamill.pricing import FREE, Price, PriceTable
from datamill.testing.anthropic import (
    AnthropicServerThread,
    Scripted,
    message_body,
    serve_anthropic,
    to_request,
)

pytestmark = pytest.mark.timeout(600)

OPTS = BodyOptions(model="claude-x")
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
SCHEMA = {
    "type": "object",
    "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["score"],
}


@pytest.fixture
def fakes() -> Iterator[Any]:
    started: list[AnthropicServerThread] = []

    def start(model: FakeModel | None = None, **options: Any) -> AnthropicServerThread:
        server = serve_anthropic(model or FakeModel(), **options)
        started.append(server)
        return server

    yield start
    for s in started:
        s.stop()


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)


async def call(model: AnthropicModel, request: Request) -> list[Completion]:
    try:
        return await model.generate(request)
    finally:
        await model.close()


# -- the body (pure) ------------------------------------------------------------------------------
def test_system_sampling_and_stop_map_to_anthropics_fields() -> None:
    request = Request.chat(
        "Name a river.",
        system="Be brief.",
        max_tokens=100,
        temperature=0.3,
        top_p=0.9,
        seed=7,
        stop=["END", "###"],
        n=3,
    )
    assert messages_body(request, OPTS) == {
        "model": "claude-x",
        "max_tokens": 100,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop_sequences": ["END", "###"],
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Name a river."}],
    }  # no n (one request per sample), no seed (Anthropic has none)
    # top_p 1 is Anthropic's default: not sent (newer Claude models refuse it with temperature)
    assert "top_p" not in messages_body(Request.chat("x"), OPTS)
    # a mapping works as the options, and extra_body goes in last
    body = messages_body(Request.chat("x"), {"model": "m", "extra_body": {"metadata": {"a": 1}}})
    assert body["model"] == "m" and body["metadata"] == {"a": 1}


def test_several_system_messages_join_and_the_turns_keep_their_order() -> None:
    request = Request(
        messages=(
            {"role": "system", "content": "Rule one."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "system", "content": "Rule two."},
            {"role": "user", "content": "Bye"},
        )
    )
    body = messages_body(request, OPTS)
    assert body["system"] == "Rule one.\n\nRule two."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]


@pytest.mark.parametrize(
    ("options", "budget"),
    [
        ({"enable_thinking": True}, 4096),
        ({"reasoning_effort": "low"}, 2048),
        ({"reasoning_effort": "high"}, 24576),
        ({"enable_thinking": True, "reasoning_effort": "minimal"}, 1024),
        ({"enable_thinking": False, "reasoning_effort": "high"}, None),
        ({}, None),
    ],
)
def test_thinking_asks_for_a_budget_on_top_of_the_answers_max_tokens(
    options: dict[str, Any], budget: int | None
) -> None:
    request = Request.chat("Why?", max_tokens=300, temperature=0.5, top_p=0.8, **options)
    body = messages_body(request, OPTS)
    if budget is None:
        assert "thinking" not in body and body["max_tokens"] == 300
        assert (body["temperature"], body["top_p"]) == (0.5, 0.8)
    else:
        assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
        assert body["max_tokens"] == 300 + budget
        # Anthropic fixes the temperature at 1 with thinking and refuses top_p below 0.95
        assert "temperature" not in body and "top_p" not in body


def test_the_thinking_budget_option_sets_enable_thinkings_budget() -> None:
    body = messages_body(
        Request.chat("x", enable_thinking=True), BodyOptions("m", thinking_budget=2000)
    )
    assert body["thinking"]["budget_tokens"] == 2000


def test_tools_choices_calls_and_results_map_to_anthropic_blocks() -> None:
    request = Request(
        messages=(
            {"role": "user", "content": "Weather in Oslo and Rome?"},
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [  # OpenAI's shape
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    },
                    {"id": "call_2", "name": "get_weather", "arguments": '{"city": "Rome"}'},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
            {"role": "tool", "tool_call_id": "call_2", "content": "sun"},
            {"role": "user", "content": "Thanks. Which is warmer?"},
        ),
        tools=(TOOL,),
        tool_choice="required",
    )
    body = messages_body(request, OPTS)
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather of a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    assert body["tool_choice"] == {"type": "any"}
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
        ],
    }
    # both results, then the user's words, in the one user turn after the calls
    assert body["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "rain"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "sun"},
            {"type": "text", "text": "Thanks. Which is warmer?"},
        ],
    }
    assert len(body["messages"]) == 3


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather"},
        ),
    ],
)
def test_tool_choice_maps_each_form(choice: Any, expected: dict[str, Any]) -> None:
    body = messages_body(Request.chat("x", tools=(TOOL,), tool_choice=choice), OPTS)
    assert body["tool_choice"] == expected


def test_a_json_schema_becomes_a_forced_tool_call() -> None:
    body = messages_body(Request.chat("Rate it.", json_schema=SCHEMA), OPTS)
    assert body["tools"][-1]["name"] == SCHEMA_TOOL
    assert body["tools"][-1]["input_schema"] == SCHEMA
    assert body["tool_choice"] == {"type": "tool", "name": SCHEMA_TOOL}
    # a schema that is not an object is wrapped (Anthropic's input_schema must be an object)
    listed = {"type": "array", "items": {"type": "string"}}
    body = messages_body(Request.chat("List.", json_schema=listed), OPTS)
    assert body["tools"][-1]["name"] == SCHEMA_VALUE_TOOL
    assert body["tools"][-1]["input_schema"]["properties"]["value"] == listed
    # with thinking Anthropic refuses a forced tool: offered, and the system prompt asks for it
    body = messages_body(Request.chat("Rate.", json_schema=SCHEMA, enable_thinking=True), OPTS)
    assert body["tool_choice"] == {"type": "auto"} and SCHEMA_TOOL in body["system"]
    # the other forms
    prompt = messages_body(
        Request.chat("Rate.", json_schema=SCHEMA), {"model": "m", "schema_format": "prompt"}
    )
    assert "tools" not in prompt and '"score"' in prompt["system"]
    none = messages_body(
        Request.chat("Rate.", json_schema=SCHEMA), {"model": "m", "schema_format": "none"}
    )
    assert "tools" not in none and "system" not in none


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (Request(prompt="raw text"), "chat messages only"),
        (Request.chat("x", temperature=1.5), "temperature 1.5 is outside Anthropic's range 0-1"),
        (
            Request.chat("x", tools=(TOOL,), tool_choice="required", enable_thinking=True),
            "forced tool_choice",
        ),
        (Request.chat("x", reasoning_effort="extreme"), "reasoning_effort 'extreme'"),
        (Request(messages=({"role": "narrator", "content": "x"},)), "role 'narrator'"),
    ],
)
def test_what_anthropic_cannot_take_is_refused_in_one_line(request_: Request, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        messages_body(request_, OPTS)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_the_body_is_pure() -> None:
    request = Request.chat("x", system="s", json_schema=SCHEMA, tools=(TOOL,))
    first = messages_body(request, OPTS)
    assert messages_body(request, OPTS) == first
    assert request.tools == (TOOL,)  # nothing of the request changed


# -- the answer (pure) ----------------------------------------------------------------------------
def message(
    content: list[dict[str, Any]], stop_reason: str | None = "end_turn", **usage: int
) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": content,
        "stop_reason": stop_reason,
        "usage": usage or {"input_tokens": 11, "output_tokens": 7},
    }


def test_text_thinking_and_tool_use_blocks_fill_the_completion() -> None:
    data = message(
        [
            {"type": "thinking", "thinking": "Oslo is north.", "signature": "s"},
            {"type": "text", "text": "Checking "},
            {"type": "text", "text": "both."},
            {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Oslo"}},
        ],
        "tool_use",
        input_tokens=20,
        cache_read_input_tokens=5,
        cache_creation_input_tokens=2,
        output_tokens=9,
    )
    c = parse_message(data)
    assert c.text == "Checking both." and c.reasoning == "Oslo is north."
    assert c.finish_reason == "tool_calls"
    assert c.tool_calls == (
        {"id": "toolu_a", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
    )
    assert (c.prompt_tokens, c.completion_tokens) == (27, 9)


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "other"),
        ("something_new", "other"),
        (None, "stop"),
    ],
)
def test_each_stop_reason_maps_to_a_finish_reason(stop_reason: str | None, finish: str) -> None:
    assert (
        parse_message(message([{"type": "text", "text": "a"}], stop_reason)).finish_reason == finish
    )


def test_the_schema_tools_input_is_the_answer() -> None:
    data = message(
        [
            {"type": "text", "text": "Here it is:"},
            {"type": "tool_use", "id": "t", "name": SCHEMA_TOOL, "input": {"score": 4}},
        ],
        "tool_use",
    )
    c = parse_message(data)
    assert json.loads(c.text) == {"score": 4} and c.finish_reason == "stop" and not c.tool_calls
    wrapped = message(
        [
            {
                "type": "tool_use",
                "id": "t",
                "name": SCHEMA_VALUE_TOOL,
                "input": {"value": ["a", "b"]},
            }
        ],
        "tool_use",
    )
    assert json.loads(parse_message(wrapped).text) == ["a", "b"]


@pytest.mark.parametrize("data", [{"type": "error"}, [], "x", {"content": "text"}])
def test_a_body_that_is_not_a_message_is_a_retryable_bad_response(data: Any) -> None:
    with pytest.raises(ModelError) as info:
        parse_message(data)
    assert info.value.reason == "bad response" and info.value.retryable


def test_a_body_goes_through_the_fake_and_back_unchanged_in_meaning() -> None:
    """The fake reads what the backend writes: schema, thinking and tools survive the trip."""
    body = messages_body(Request.chat("Rate.", system="s", json_schema=SCHEMA, max_tokens=50), OPTS)
    request, forced = to_request(body)
    assert request.json_schema == SCHEMA and forced is not None and request.messages is not None
    assert request.messages[0] == {"role": "system", "content": "s"}
    answer = message_body(Completion(text='{"score": 2}'), "claude-x", forced, "msg_9")
    assert json.loads(parse_message(answer).text) == {"score": 2}
    thinking = messages_body(Request.chat("Why?", enable_thinking=True, max_tokens=50), OPTS)
    request, _ = to_request(thinking)
    assert request.enable_thinking and request.max_tokens == 50


# -- the model against the fake -------------------------------------------------------------------
def test_spec_names_model_and_url_and_the_key_never_shows(
    fakes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-1")
    server = fakes(api_key="sk-ant-secret-1")
    model = load_model(f"anthropic:claude-x@{server.url}")
    assert isinstance(model, AnthropicModel) and model.model == "claude-x"
    assert model.info.identity == f"anthropic:claude-x@{server.url}"
    assert "sk-ant" not in repr(model) + model.info.identity + json.dumps(model.info.extra)
    [c] = asyncio.run(call(model, Request.chat("Hi", max_tokens=60)))
    assert c.text and c.finish_reason == "stop"
    # the fake took the request: the key and anthropic-version headers were there
    assert server.fake.stats.statuses == {200: 1}
    # a wrong key stops the model at start, in one line, without the key
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-wrong-2")
    with pytest.raises(ModelUnavailable) as info:
        asyncio.run(call(AnthropicModel("claude-x", server.url), Request.chat("Hi")))
    assert "401" in str(info.value) and "sk-ant" not in str(info.value)
    assert "\n" not in str(info.value) and server.fake.stats.requests == 1  # no message sent


def test_a_missing_key_for_anthropics_url_is_one_line_before_any_call() -> None:
    model = AnthropicModel("claude-sonnet-4-5")
    assert model.base_url == "https://api.anthropic.com/v1"
    with pytest.raises(ConfigError) as info:
        asyncio.run(call(model, Request.chat("Hi")))
    assert str(info.value).startswith("$ANTHROPIC_API_KEY is not set") and "\n" not in str(
        info.value
    )
    assert model._sent == 0 and model._session is None


def test_the_cli_says_the_key_is_missing_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datamill.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "run",
                "instructions-basic",
                "--limit",
                "2",
                "-o",
                str(tmp_path / "o"),
                "--model",
                "anthropic:claude-sonnet-4-5",
            ]
        )
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert errors == [
        "error: $ANTHROPIC_API_KEY is not set: export your Anthropic API key as "
        "ANTHROPIC_API_KEY (or name another variable with api_key_env) before the run"
    ]


@pytest.mark.parametrize(("status", "reason"), [(529, "overloaded"), (429, "rate limited")])
def test_overloaded_and_rate_limited_answers_wait_retry_after_and_are_retried(
    fakes: Any, status: int, reason: str
) -> None:
    server = fakes(script=[status, status], retry_after=0.25)
    model = AnthropicModel("claude-x", server.url, backoff=0)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    model._sleep = sleep  # type: ignore[method-assign]
    [c] = asyncio.run(call(model, Request.chat("Hi", max_tokens=20)))
    assert c.text
    assert waits == [0.25, 0.25]  # the server's retry-after, each time
    assert server.fake.stats.requests == 3 and server.fake.stats.statuses == {status: 2, 200: 1}
    assert model.run_facts()["retries_by_reason"] == {reason: 2}


def test_an_invalid_request_is_one_line_and_not_tried_again(fakes: Any) -> None:
    words = "messages.0.content: Input should be a valid list"
    server = fakes(script=[Scripted(400, message=words)])
    model = AnthropicModel("claude-x", server.url, backoff=0)
    with pytest.raises(ModelError) as info:
        asyncio.run(call(model, Request.chat("Hi")))
    assert info.value.reason == "bad request" and not info.value.retryable
    assert words in str(info.value) and "invalid_request_error" in str(info.value)
    assert "\n" not in str(info.value)
    assert server.fake.stats.requests == 1


def test_a_spent_credit_balance_stops_the_model_in_one_line(fakes: Any) -> None:
    words = "Your credit balance is too low to access the Anthropic API."
    server = fakes(script=[Scripted(400, message=words)])
    model = AnthropicModel("claude-x", server.url)
    with pytest.raises(ModelUnavailable) as info:
        asyncio.run(call(model, Request.chat("Hi")))
    assert words in str(info.value) and "add credit" in str(info.value)
    with pytest.raises(ModelUnavailable):  # every later call stops at once, nothing sent
        asyncio.run(call(model, Request.chat("Hi again")))
    assert server.fake.stats.requests == 1


def test_one_failed_sample_fails_the_call_after_the_others_finished(fakes: Any) -> None:
    server = fakes(script=[Scripted(400, message="bad sample")])
    model = AnthropicModel("claude-x", server.url)
    with pytest.raises(ModelError, match="bad sample"):
        asyncio.run(call(model, Request.chat("Hi", n=3, max_tokens=60)))
    assert server.fake.stats.statuses == {400: 1, 200: 2}  # none left running


def test_the_fake_refuses_what_the_real_api_refuses(fakes: Any) -> None:
    server = fakes()
    model = AnthropicModel("claude-x", server.url, backoff=0, extra_body={"seed": 1})
    with pytest.raises(ModelError, match="seed: Extra inputs are not permitted"):
        asyncio.run(call(model, Request.chat("Hi")))


def test_n_samples_are_n_requests(fakes: Any) -> None:
    server = fakes()
    model = AnthropicModel("claude-x", server.url)
    out = asyncio.run(call(model, Request.chat("Hi", max_tokens=30, n=3)))
    assert len(out) == 3 and server.fake.stats.requests == 3
    assert all("n" not in b for b in server.fake.bodies)
    assert model.run_facts()["samples_per_request"] == 1


def test_tool_use_comes_back_as_tool_calls(fakes: Any) -> None:
    def handler(request: Request, i: int) -> Completion:
        assert request.tools and request.tools[0]["function"]["name"] == "get_weather"
        call = {"id": "toolu_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'}
        return Completion(text="", finish_reason="tool_calls", tool_calls=(call,))

    server = fakes(FakeModel(handler))
    model = AnthropicModel("claude-x", server.url)
    [c] = asyncio.run(call(model, Request.chat("Weather?", tools=(TOOL,), tool_choice="auto")))
    assert c.finish_reason == "tool_calls"
    assert c.tool_calls == (
        {"id": "toolu_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
    )
    assert server.fake.bodies[0]["tool_choice"] == {"type": "auto"}


def test_thinking_blocks_come_back_as_reasoning(fakes: Any) -> None:
    server = fakes()
    model = AnthropicModel("claude-x", server.url)
    [c] = asyncio.run(call(model, Request.chat("Why?", max_tokens=40, enable_thinking=True)))
    assert c.reasoning and "<think>" not in c.text and c.text.strip()
    assert server.fake.bodies[0]["thinking"] == {"type": "enabled", "budget_tokens": 4096}


def test_a_structured_answer_comes_from_the_forced_tool_and_run_json_says_so(fakes: Any) -> None:
    server = fakes()
    model = AnthropicModel("claude-x", server.url)
    [c] = asyncio.run(call(model, Request.chat("Rate it.", json_schema=SCHEMA)))
    assert 1 <= json.loads(c.text)["score"] <= 5
    assert model.run_facts()["structured_output"] == "tool"
    assert server.fake.bodies[0]["tool_choice"] == {"type": "tool", "name": SCHEMA_TOOL}


def test_a_temperature_anthropic_refuses_stops_the_model_before_any_call(fakes: Any) -> None:
    server = fakes()
    model = AnthropicModel("claude-x", server.url)
    with pytest.raises(ModelUnavailable, match="outside Anthropic's range 0-1"):
        asyncio.run(call(model, Request.chat("Hi", temperature=1.3)))
    assert server.fake.stats.requests == 0


# -- end to end -----------------------------------------------------------------------------------
def test_cli_runs_a_builtin_recipe_on_the_fake(fakes: Any, tmp_path: Path) -> None:
    from datamill.cli import main

    server = fakes(script=[529])
    out = tmp_path / "o"
    main(
        [
            "run",
            "instructions-basic",
            "--limit",
            "3",
            "-q",
            "-o",
            str(out),
            "--model",
            f"anthropic:claude-x@{server.url}",
            "--set",
            "models.default.backoff=0",
        ]
    )
    run = json.loads((out / "run.json").read_text())
    facts = run["models"]["default"]
    assert facts["backend"] == "anthropic" and facts["retries_by_reason"] == {"overloaded": 1}
    # each call is one request; the 529 was tried once more
    assert server.fake.stats.requests == run["model_calls"] + 1 == 7
    assert all(b["system"].startswith("You write questions") for b in server.fake.bodies[1:4])
    rows = pq.read_table(out / "data" / "train-00000-of-00001.parquet").to_pylist()
    assert len(rows) == 3
    answers = {b["messages"][0]["content"] for b in server.fake.bodies[4:]}
    assert {r["question"] for r in rows} == answers  # each question went to Claude as asked


def test_cli_stops_on_an_endpoint_that_refuses_every_call_in_one_line(
    fakes: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datamill.cli import main

    server = fakes(script=[Scripted(400, message="max_tokens: too large")] * 40)
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "run",
                "instructions-basic",
                "--limit",
                "12",
                "-q",
                "-o",
                str(tmp_path / "o"),
                "--model",
                f"anthropic:claude-x@{server.url}",
            ]
        )
    assert exit_info.value.code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "max_tokens: too large" in errors[0]
    assert server.fake.stats.requests <= 12


def test_a_judged_recipe_gets_its_verdicts_through_the_forced_tool(
    fakes: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """preferences-basic on the fake: Anthropic refuses its 1.1 temperature, in one line and
    before any request; at 1.0 the judge's JSON verdicts come back as the answer tool's input."""
    from datamill.cli import main

    server = fakes()
    args = ["run", "preferences-basic", "--limit", "2", "-q", "-o", str(tmp_path / "o")]
    args += ["--model", f"anthropic:claude-x@{server.url}"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert exit_info.value.code == 1 and len(errors) == 1
    assert "temperature 1.1 is outside Anthropic's range 0-1" in errors[0]
    assert server.fake.stats.requests == 0

    main([*args, "--set", "models.b.temperature=1.0"])
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["models"]["judge"]["structured_output"] == "tool" and not run["failures"]
    forced = [b for b in server.fake.bodies if b.get("tool_choice", {}).get("type") == "tool"]
    assert forced and all(b["tools"][-1]["name"] == SCHEMA_TOOL for b in forced)
    rows = pq.read_table(tmp_path / "o" / "data" / "train-00000-of-00001.parquet").to_pylist()
    assert len(rows) == 2 and all(r["chosen"] != r["rejected"] for r in rows)


# -- prices ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "price"),
    [
        ("anthropic:claude-sonnet-4-5", Price(3.00, 15.00)),
        ("anthropic:claude-sonnet-4-20250514", Price(3.00, 15.00)),
        ("anthropic:claude-opus-4-1-20250805", Price(15.00, 75.00)),
        ("anthropic:claude-opus-4-5", Price(5.00, 25.00)),
        ("anthropic:claude-haiku-4-5", Price(1.00, 5.00)),
        ("anthropic:claude-3-5-haiku-latest", Price(0.80, 4.00)),
        ("anthropic:claude-x@http://127.0.0.1:9", FREE),
    ],
)
def test_claude_models_have_list_prices(spec: str, price: Price) -> None:
    assert PriceTable(user={}).for_spec(spec) == price

"""Magpie with reasoning and tool chat templates (Qwen3-style): the thinking switch and the tools
rendered by the model's own template, the answer's thinking in its own column, ``<tool_call>``
blocks parsed, and a one-line refusal before any call where the template cannot do it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from datamill import ConfigError, FakeModel, Pipeline, Request
from datamill.errors import ModelUnavailable, ParseError
from datamill.io.sources import EmptyRows
from datamill.models.toolcalls import message_tool_calls, parse_tool_calls
from datamill.tasks.magpie import TEMPLATES, Magpie, clean_instruction
from datamill.tasks.magpie_render import RenderedPreQuery, template_support
from gguf_helpers import QWEN3_STYLE_TEMPLATE

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
)
#: renders tools, but asks for calls as bare JSON (Llama-3.1 style): not a format datamill parses
JSON_CALLS_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nCall a function by answering with JSON "
    '{"name": ..., "parameters": ...}. Functions: {{ tools | tojson }}<|im_end|>\n{% endif %}'
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
)
CONVERT = {
    "name": "convert_units",
    "description": "Convert a length between units.",
    "parameters": {
        "type": "object",
        "properties": {"value": {"type": "number"}, "to": {"type": "string"}},
        "required": ["value", "to"],
    },
}
USER_HEADER = "<|im_start|>user\n"
NO_THINK = "<|im_start|>assistant\n<think>\n\n</think>\n\n"


def qwen3_model(handler: Any) -> FakeModel:
    model = FakeModel(handler)
    model.info.chat_template = QWEN3_STYLE_TEMPLATE
    return model


def run(task: Magpie, model: FakeModel, n: int = 1, out: Path | None = None) -> Any:
    return Pipeline([task], source=EmptyRows(n), models={"default": model}).run(out)


def failures(out: Path) -> dict[str, int]:
    return json.loads((out / "run.json").read_text())["failures"]


# -- the thinking switch ----------------------------------------------------------------------------
def test_thinking_off_is_rendered_into_the_answer_prompt() -> None:
    def handler(request: Request, i: int) -> str:
        assert request.prompt is not None  # both calls are raw: the template rendered them
        if request.prompt.endswith(USER_HEADER):
            return "How many metres are in a mile?"
        return "About 1609 metres."

    model = qwen3_model(handler)
    result = run(Magpie(enable_thinking=False), model)
    [row] = result.rows
    assert (row["instruction"], row["response"]) == (
        "How many metres are in a mile?",
        "About 1609 metres.",
    )
    ask, answer = model.calls
    assert ask.prompt == USER_HEADER
    assert answer.prompt == (
        "<|im_start|>user\nHow many metres are in a mile?<|im_end|>\n" + NO_THINK
    )
    assert "<|im_end|>" in answer.stop and answer.temperature == 0.0  # the paper's greedy answer
    assert "reasoning" not in row  # thinking off: no reasoning column unless asked


def test_thinking_on_splits_the_answer_thinking_into_reasoning() -> None:
    def handler(request: Request, i: int) -> str:
        assert request.prompt is not None
        if request.prompt.endswith(USER_HEADER):  # a model that thinks even in the user turn
            return "<think>I should ask about units.</think>How far is 5 km in miles?"
        assert request.prompt.endswith("<|im_start|>assistant\n")  # no empty block: it may think
        return "<think>5 / 1.609 = 3.1</think>\n\nAbout 3.1 miles."

    task = Magpie(enable_thinking=True, system_prompt="You help with unit conversions.")
    assert task.produces() == ["instruction", "response", "reasoning"]
    [row] = run(task, qwen3_model(handler)).rows
    assert row["instruction"] == "How far is 5 km in miles?"
    assert row["response"] == "About 3.1 miles."
    assert row["reasoning"] == "5 / 1.609 = 3.1"


def test_a_qwen3_template_without_options_keeps_the_chat_answer_and_its_thinking_apart() -> None:
    """No switch asked: the fixed ChatML pre-query and a chat request, as before; the thinking a
    Qwen3 model writes by default still never reaches ``response``."""

    def handler(request: Request, i: int) -> str:
        if request.prompt is not None:
            return "Name a prime number."
        return "<think>2 is prime.</think>Two."

    model = qwen3_model(handler)
    [row] = run(Magpie(reasoning_output="thinking"), model).rows
    assert (row["response"], row["thinking"]) == ("Two.", "2 is prime.")
    assert model.calls[0].prompt == TEMPLATES["chatml"].render(None)
    assert model.calls[1].messages == ({"role": "user", "content": "Name a prime number."},)


def test_multi_turn_keeps_each_thinking_on_its_message_and_out_of_later_prompts() -> None:
    def handler(request: Request, i: int) -> str:
        assert request.prompt is not None
        n = request.prompt.count(USER_HEADER)
        if request.prompt.endswith(USER_HEADER):
            return f"Question {n}?"
        return f"<think>secret plan {n}</think>Answer {n}."

    model = qwen3_model(handler)
    task = Magpie(n_turns=2, enable_thinking=True, system_prompt="Be brief.")
    [row] = run(task, model).rows
    assert row["conversation"] == [
        {"role": "user", "content": "Question 1?"},
        {"role": "assistant", "content": "Answer 1.", "reasoning_content": "secret plan 1"},
        {"role": "user", "content": "Question 2?"},
        {"role": "assistant", "content": "Answer 2.", "reasoning_content": "secret plan 2"},
    ]
    later = [c.prompt for c in model.calls[1:] if c.prompt is not None]
    assert later and not any("secret plan" in p for p in later)


@pytest.mark.parametrize(
    ("instruction", "reason"),
    [
        ("How do I <think>hmm</think> bake bread?", "instruction holds a thinking block"),
        ("Why is the sky blue?</think> it scatters", "instruction holds a thinking block"),
        ("<think>what should a user ask", "instruction: reasoning not finished"),
        ('<tool_call>{"name": "convert_units"}</tool_call>', "instruction holds a tool call"),
    ],
)
def test_an_instruction_never_holds_a_thinking_block_or_a_call(
    instruction: str, reason: str, tmp_path: Path
) -> None:
    def handler(request: Request, i: int) -> str:
        ends = request.prompt is not None and request.prompt.endswith(USER_HEADER)
        return instruction if ends else "An answer."

    out = tmp_path / "o"
    result = run(Magpie(enable_thinking=True), qwen3_model(handler), out=out)
    assert result.rows == [] and failures(out) == {reason: 1}


def test_clean_instruction_refuses_the_models_own_think_tags() -> None:
    tags = ("<reasoning>", "</reasoning>")
    chatml = TEMPLATES["chatml"]
    with pytest.raises(ParseError, match="thinking block"):
        clean_instruction("Plan a trip <reasoning>x</reasoning>", chatml, None, tags)
    assert clean_instruction("Explain <think> tags.", chatml, None, tags) == "Explain <think> tags."


# -- tools --------------------------------------------------------------------------------------
def tool_model(answer: str) -> FakeModel:
    def handler(request: Request, i: int) -> str:
        assert request.prompt is not None
        if request.prompt.endswith(USER_HEADER):
            return "Convert 3000 metres to kilometres, please."
        return answer

    return qwen3_model(handler)


def test_tools_are_rendered_into_both_prompts_and_calls_parsed() -> None:
    call = '<tool_call>\n{"name": "convert_units", "arguments": {"value": 3000, "to": "km"}}\n</tool_call>'
    model = tool_model(call)
    task = Magpie(tools=[CONVERT], enable_thinking=False, system_prompt="You convert units.")
    [row] = run(task, model).rows
    ask, answer = model.calls
    assert ask.prompt is not None and answer.prompt is not None
    assert ask.prompt.startswith("<|im_start|>system\nYou convert units.\n\n# Tools\n")
    assert json.dumps({"type": "function", "function": CONVERT}) in ask.prompt
    assert ask.prompt.endswith("<|im_end|>\n" + USER_HEADER)
    assert answer.prompt == (
        ask.prompt + "Convert 3000 metres to kilometres, please.<|im_end|>\n" + NO_THINK
    )
    assert row["tools"] == [{"type": "function", "function": CONVERT}]
    assert row["tool_calls"] == [
        {
            "id": "call_0",
            "type": "function",
            "function": {"name": "convert_units", "arguments": {"value": 3000, "to": "km"}},
        }
    ]
    assert row["response"] == ""  # the answer was the call alone
    assert "reasoning" not in row


def test_an_answer_without_a_call_keeps_its_text_and_no_calls() -> None:
    model = tool_model("<think>no tool needed</think>3000 m is 3 km.")
    [row] = run(Magpie(tools=[{"type": "function", "function": CONVERT}]), model).rows
    assert (row["response"], row["tool_calls"]) == ("3000 m is 3 km.", [])
    assert model.calls[0].prompt and model.calls[0].prompt.startswith("<|im_start|>system\n# Tools")


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("<tool_call>{not json}</tool_call>", "malformed tool call (tool call is not a JSON object)"),
        ('<tool_call>{"name": "convert_units"', "malformed tool call (tool call not closed)"),
        ('<tool_call>{"name": "weather", "arguments": {}}</tool_call>', "call to unknown tool 'weather'"),
    ],
)  # fmt: skip
def test_a_bad_call_drops_the_row_with_its_reason(answer: str, reason: str, tmp_path: Path) -> None:
    out = tmp_path / "o"
    result = run(Magpie(tools=[CONVERT]), tool_model(answer), out=out)
    assert result.rows == [] and failures(out) == {f"response: {reason}": 1}


# -- templates that cannot: one line, before any call -------------------------------------------
@pytest.mark.parametrize(
    ("template", "options", "message"),
    [
        (SMOLLM2_TEMPLATE, {"tools": [CONVERT]}, "does not render tools \\(it never reads `tools`\\)"),
        (SMOLLM2_TEMPLATE, {"enable_thinking": True}, "has no thinking switch"),
        (JSON_CALLS_TEMPLATE, {"tools": [CONVERT]}, "format datamill cannot parse"),
        (
            "{% if tools %}{% endif %}<tool_call>{% for m in messages %}<|im_start|>{{ m.role }}\n"
            "{{ m.content }}<|im_end|>\n{% endfor %}",
            {"tools": [CONVERT]},
            "prints none of them",
        ),
    ],
)  # fmt: skip
def test_a_template_that_cannot_is_refused_before_any_call(
    template: str, options: dict[str, Any], message: str
) -> None:
    model = FakeModel()
    model.info.chat_template = template
    with pytest.raises(ModelUnavailable, match=message) as err:
        run(Magpie(**options), model, n=3)
    assert "\n" not in str(err.value) and model.name in str(err.value)
    assert model.calls == []


def test_the_cli_prints_one_line_for_a_template_without_tools(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datamill.cli import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: t\nsource: {num_rows: 2}\nsteps:\n"
        f"  - magpie: {{tools: [{json.dumps(CONVERT)}]}}\n"
    )
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(recipe), "--model", "fake", "--output", str(tmp_path / "o"), "--quiet"])
    assert exit_.value.code != 0
    printed = capsys.readouterr()
    lines = [x for x in (printed.out + printed.err).splitlines() if "does not render tools" in x]
    assert len(lines) == 1 and "remove tools" in lines[0]


def test_options_the_step_alone_can_refuse() -> None:
    with pytest.raises(ConfigError, match="use template: auto, not 'chatml'"):
        Magpie(template="chatml", tools=[CONVERT])
    with pytest.raises(ConfigError, match="use template: auto"):
        Magpie(template="<|user|>\n", stop=["<|end|>"], enable_thinking=False)
    with pytest.raises(ConfigError, match="use n_turns: 1"):
        Magpie(tools=[CONVERT], n_turns=2)
    with pytest.raises(ConfigError, match="tools is empty"):
        Magpie(tools=[])
    with pytest.raises(ConfigError, match=r"tools\[0\] needs a function name"):
        Magpie(tools=[{"description": "no name"}])
    # options left unset keep the identity (so the seeds and cached calls) recipes had before
    assert Magpie().identity == "magpie:9d72502011e6"
    assert Magpie(n_turns=2, system_prompt="S.").identity == "magpie:e285b22207be"
    assert Magpie(enable_thinking=False).identity != Magpie().identity


def test_template_support_reads_the_syntax_tree() -> None:
    q = template_support(QWEN3_STYLE_TEMPLATE)
    assert (q.tools, q.thinking_switch, q.hermes_calls) == (True, True, True)
    s = template_support(SMOLLM2_TEMPLATE)
    assert (s.tools, s.thinking_switch, s.hermes_calls) == (False, False, False)
    # a template that only mentions the word is not one that reads it
    t = template_support("{{ 'tools and enable_thinking' }}{% for m in messages %}{% endfor %}")
    assert not t.tools and not t.thinking_switch


def test_rendered_continuation_matches_the_template_for_a_whole_conversation() -> None:
    import jinja2

    from datamill.tasks.magpie_render import rendered_pre_query

    pre = rendered_pre_query(TEMPLATES["chatml"], QWEN3_STYLE_TEMPLATE, "m", None, False)
    assert isinstance(pre, RenderedPreQuery)
    turns = [
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
    ]
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    full = env.from_string(QWEN3_STYLE_TEMPLATE).render(
        messages=[{"role": "system", "content": "S."}, *turns, {"role": "user", "content": "Q"}],
        enable_thinking=False,
    )
    assert pre.continuation("S.", turns) + "Q<|im_end|>\n" == full


# -- parsing calls ---------------------------------------------------------------------------------
def test_parse_tool_calls() -> None:
    text = (
        'Let me convert.\n<tool_call>\n{"name": "convert_units", "arguments": {"value": 1}}\n'
        '</tool_call>\n<tool_call>{"name": "lookup", "parameters": "{\\"q\\": \\"x\\"}"}</tool_call>'
    )
    rest, calls = parse_tool_calls(text)
    assert rest == "Let me convert."
    assert calls == (
        {"id": "call_0", "name": "convert_units", "arguments": '{"value":1}'},
        {"id": "call_1", "name": "lookup", "arguments": '{"q":"x"}'},
    )
    assert message_tool_calls(calls)[1] == {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup", "arguments": {"q": "x"}},
    }
    assert parse_tool_calls("No calls here.") == ("No calls here.", ())
    for bad, reason in [
        ('<tool_call>["x"]</tool_call>', "not a JSON object"),
        ('<tool_call>{"arguments": {}}</tool_call>', "has no name"),
        ('<tool_call>{"name": "f", "arguments": [1]}</tool_call>', "arguments are not an object"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_tool_calls(bad)


# -- the embedded model under a Qwen3-style template ------------------------------------------------
@pytest.mark.real
@pytest.mark.timeout(900)
def test_magpie_with_tools_and_no_thinking_on_a_qwen3_template_copy_of_the_embedded_model(
    qwen3_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow.parquet as pq

    from datamill.cli import main

    recipe = tmp_path / "magpie-tools.yaml"
    recipe.write_text(
        "name: magpie-tools\nsource: {num_rows: 4}\nsteps:\n"
        "  - magpie:\n"
        "      system_prompt: You help users convert units.\n"
        "      enable_thinking: false\n"
        "      truncated: keep\n"
        "      instruction_max_tokens: 48\n"
        "      response_max_tokens: 64\n"
        f"      tools: [{json.dumps(CONVERT)}]\n"
    )
    out = tmp_path / "out"
    args = ["run", str(recipe), "--model", f"llamacpp:{qwen3_gguf}", "--limit", "2"]
    try:
        main([*args, "--output", str(out), "--quiet"])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    printed = capsys.readouterr()
    run_json = json.loads((out / "run.json").read_text())
    print(f"\nmagpie tools (embedded, qwen3 template): exit {code}, rows {run_json['rows']}, "
          f"losses {run_json['failures']}")  # fmt: skip
    assert run_json["model_calls"] >= 2
    assert run_json["rows"] >= 1, printed.out + printed.err
    rows = pq.read_table(next(out.rglob("*.parquet"))).to_pylist()
    assert len(rows) == run_json["rows"]
    for row in rows:
        assert row["instruction"].strip() and "<think>" not in row["instruction"]
        assert row["tools"][0]["function"]["name"] == "convert_units"
        assert isinstance(row["tool_calls"], list)


def test_parse_tool_calls_reads_the_xml_body_of_qwen3_coder_templates() -> None:
    text = (
        "I will convert it.\n<tool_call>\n<function=convert_units>\n<parameter=value>\n3000\n"
        "</parameter>\n<parameter=to>\nkm\n</parameter>\n</function>\n</tool_call>"
    )
    rest, calls = parse_tool_calls(text)
    assert rest == "I will convert it."
    assert calls == (
        {"id": "call_0", "name": "convert_units", "arguments": '{"value":3000,"to":"km"}'},
    )
    with pytest.raises(ValueError, match="has no name"):
        parse_tool_calls("<tool_call><function= ></function></tool_call>")


def trl_template(name: str) -> str:
    """A chat template TRL ships (the published Qwen/Llama templates), read without importing TRL."""
    import importlib.util

    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("trl is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "chat_templates" / f"{name}.jinja"
    if not path.is_file():
        pytest.skip(f"this trl has no {name}.jinja")
    return path.read_text()


@pytest.mark.parametrize("name", ["qwen3", "qwen3_5_think", "qwen3_8"])
def test_published_qwen3_templates_render_tools_and_the_switch(name: str) -> None:
    """The real templates: the tools section before the user header, the switch rendered into the
    answer's prompt (``<think>`` opened by the template, or an empty block when off)."""
    from datamill.tasks.magpie_render import rendered_pre_query

    source = trl_template(name)
    tool = {"type": "function", "function": CONVERT}
    off = rendered_pre_query(TEMPLATES["chatml"], source, name, (tool,), False)
    head = off.render("You convert units.")
    assert head.endswith(USER_HEADER) and "convert_units" in head and "You convert units." in head
    turns = [{"role": "user", "content": "3 km in m?"}]
    assert off.answer_prompt(None, turns).endswith(NO_THINK)
    on = rendered_pre_query(TEMPLATES["chatml"], source, name, None, True)
    assert on.answer_prompt(None, turns).endswith(("<|im_start|>assistant\n", "<think>\n"))
    assert "convert_units" not in on.render(None)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("qwen2_5", {"enable_thinking": True}, "has no thinking switch"),
        ("qwen3_instruct_2507", {"enable_thinking": False}, "has no thinking switch"),
        ("llama3_1", {"tools": [CONVERT]}, "format datamill cannot parse"),
        ("smolvlm", {"tools": [CONVERT]}, "does not render tools"),
    ],
)
def test_published_templates_without_the_feature_are_refused(
    name: str, options: dict[str, Any], message: str
) -> None:
    model = FakeModel()
    model.info.chat_template = trl_template(name)
    with pytest.raises(ModelUnavailable, match=message):
        run(Magpie(**options), model)
    assert model.calls == []


def test_a_published_template_with_tools_runs_magpie_end_to_end() -> None:
    source = trl_template("qwen2_5")  # tools, no thinking switch
    call = (
        '<tool_call>\n{"name": "convert_units", "arguments": {"value": 3, "to": "m"}}\n</tool_call>'
    )

    def handler(request: Request, i: int) -> str:
        assert request.prompt is not None
        return "3 km in metres?" if request.prompt.endswith(USER_HEADER) else call

    model = FakeModel(handler)
    model.info.chat_template = source
    [row] = run(Magpie(tools=[CONVERT]), model).rows
    assert row["tool_calls"][0]["function"] == {
        "name": "convert_units",
        "arguments": {"value": 3, "to": "m"},
    }
    assert "# Tools" in (model.calls[0].prompt or "")

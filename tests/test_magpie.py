"""Magpie: pre-query templates, seeded system prompts, instruction cleaning, on the fake model."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from datamill import Completion, ConfigError, FakeModel, ModelInfo, Pipeline, Request
from datamill.errors import ModelUnavailable, ParseError
from datamill.io.sources import EmptyRows
from datamill.recipes.loader import recipe_from_dict
from datamill.recipes.registry import step_class
from datamill.tasks.magpie import (
    TEMPLATES,
    Magpie,
    clean_instruction,
    default_multi_turn_system,
    detect_template,
    literal_template,
)

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
)
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
)


def magpie_model(
    instruction: str = "How do I keep basil alive indoors?",
    response: str = "Give it sun and water.",
    **kw,
) -> FakeModel:
    def handler(request: Request, i: int) -> str:
        return instruction if request.prompt is not None else response

    return FakeModel(handler, **kw)


def run(task: Magpie, model: FakeModel, n: int = 1, tmp_path: Path | None = None, **kw):
    return Pipeline([task], source=EmptyRows(n), models={"default": model}).run(tmp_path, **kw)


# -- templates -------------------------------------------------------------------------------------


def test_detect_template_from_chat_templates() -> None:
    assert detect_template(SMOLLM2_TEMPLATE) is TEMPLATES["chatml"]
    assert detect_template(LLAMA3_TEMPLATE) is TEMPLATES["llama3"]
    assert detect_template("{{ '[INST] ' + content + ' [/INST]' }}") is None
    assert detect_template(None) is None
    assert TEMPLATES["qwen2"] is TEMPLATES["chatml"]


def test_pre_query_prompts_with_and_without_system() -> None:
    chatml, llama3 = TEMPLATES["chatml"], TEMPLATES["llama3"]
    assert chatml.render(None) == "<|im_start|>user\n"
    assert chatml.render("Be kind.") == "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\n"
    assert llama3.render(None) == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
    assert llama3.render("Be kind.") == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe kind.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n"
    )
    assert "<|im_end|>" in chatml.stop and "<|eot_id|>" in llama3.stop


def test_literal_template_with_system_slot() -> None:
    pre = literal_template("<s>[SYS]{{ system_prompt }}[/SYS][USER]", ["[/USER]"])
    assert pre.render("Be brief.") == "<s>[SYS]Be brief.[/SYS][USER]"
    assert pre.render(None) == "<s>[SYS][/SYS][USER]"
    assert pre.stop == ("[/USER]",)
    bare = literal_template("<|user|>\n", ["<|end|>"])
    assert bare.render(None) == "<|user|>\n"
    with pytest.raises(ConfigError, match="no system slot"):
        bare.render("x")


# -- instruction cleaning --------------------------------------------------------------------------


def test_clean_instruction_accepts_and_trims() -> None:
    chatml = TEMPLATES["chatml"]
    assert clean_instruction("  What is a prime number?  ", chatml) == "What is a prime number?"
    # ran past the end of turn into the next one: cut at the first special token
    assert (
        clean_instruction("Name a fruit.<|im_end|>\n<|im_start|>assistant\nApple", chatml)
        == "Name a fruit."
    )
    assert (
        clean_instruction("Name a fruit.<|eot_id|>more", chatml) == "Name a fruit."
    )  # any <|...|> token
    assert clean_instruction("user\nWhat is rain?", chatml) == "What is rain?"
    assert clean_instruction("What is 2 < 3 | 4 > 1?", chatml) == "What is 2 < 3 | 4 > 1?"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("   \n ", "empty instruction"),
        ("<|im_start|>assistant\nSure!", "instruction echoes template tokens"),
        ("<|im_end|>", "instruction echoes template tokens"),
        ("assistant", "instruction echoes template tokens"),
        ("User:", "instruction echoes template tokens"),
        ("?!...", "instruction echoes template tokens"),
        ("You help users with math.", "instruction repeats the system prompt"),
    ],
)
def test_clean_instruction_rejects_malformed_output(raw: str, reason: str) -> None:
    with pytest.raises(ParseError) as exc:
        clean_instruction(raw, TEMPLATES["chatml"], system="You help users with math.")
    assert exc.value.reason == reason and exc.value.raw == raw


# -- the task ----------------------------------------------------------------------------------------


def test_instruction_and_response_calls(tmp_path: Path) -> None:
    model = magpie_model()
    result = run(Magpie(system_prompt="You help gardeners."), model, n=2, tmp_path=tmp_path / "out")
    assert [(r["instruction"], r["response"]) for r in result.rows] == [
        ("How do I keep basil alive indoors?", "Give it sun and water.")
    ] * 2
    assert set(result.rows[0]) == {"row", "instruction", "response"}
    first, second = model.calls[0], model.calls[1]
    # instruction: raw pre-query prompt with the system prompt inside, paper sampling, stop at end of turn
    assert first.prompt == "<|im_start|>system\nYou help gardeners.<|im_end|>\n<|im_start|>user\n"
    assert (first.temperature, first.top_p) == (1.0, 1.0)
    assert "<|im_end|>" in first.stop and first.max_tokens == 128
    # response: a normal chat request, greedy
    assert second.messages == (
        {"role": "system", "content": "You help gardeners."},
        {"role": "user", "content": "How do I keep basil alive indoors?"},
    )
    assert second.temperature == 0.0 and second.max_tokens == 512
    # the two rows were sampled with different seeds
    assert model.calls[0].seed != model.calls[2].seed


def test_auto_template_follows_the_model_chat_template() -> None:
    model = magpie_model()
    model.info.chat_template = LLAMA3_TEMPLATE
    run(Magpie(), model)
    assert model.calls[0].prompt == TEMPLATES["llama3"].render(None)
    assert "<|eot_id|>" in model.calls[0].stop


def test_auto_template_unknown_stops_the_run_with_a_clear_message() -> None:
    model = magpie_model()
    model.info.chat_template = "{{ '[INST] ' + messages[0]['content'] + ' [/INST]' }}"
    with pytest.raises(ModelUnavailable, match="set template: chatml, llama3"):
        run(Magpie(), model, n=3)
    assert model.calls == []
    explicit = magpie_model()
    explicit.info.chat_template = model.info.chat_template
    assert len(run(Magpie(template="chatml"), explicit).rows) == 1


def test_model_without_raw_prompts_is_refused() -> None:
    class ChatOnly(FakeModel):
        @property
        def info(self) -> ModelInfo:
            info = super().info
            info.raw_prompt = False
            return info

    with pytest.raises(ModelUnavailable, match="raw prompts"):
        run(Magpie(), ChatOnly())


def test_only_instruction_makes_one_call_per_row() -> None:
    model = magpie_model()
    result = run(Magpie(only_instruction=True), model, n=3)
    assert len(model.calls) == 3 and all(c.prompt is not None for c in model.calls)
    assert all("response" not in r for r in result.rows)
    assert Magpie(only_instruction=True).produces() == ["instruction"]


def test_sampling_parameters_apply_to_their_own_call() -> None:
    model = magpie_model()
    run(
        Magpie(
            temperature=0.8,
            top_p=0.9,
            max_tokens=40,
            response_temperature=0.3,
            response_max_tokens=64,
            response_top_p=0.95,
        ),
        model,
    )
    first, second = model.calls
    assert (first.temperature, first.top_p, first.max_tokens) == (0.8, 0.9, 40)
    assert (second.temperature, second.top_p, second.max_tokens) == (0.3, 0.95, 64)


def test_system_prompt_list_choice_is_seeded_per_row() -> None:
    prompts = ["You help with math.", "You help with cooking.", "You help with travel."]

    def chosen(seed: int | None = None) -> list[str]:
        model = magpie_model()
        run(
            Magpie(system_prompt=prompts, only_instruction=True, seed=seed),
            model,
            n=30,
            cache=False,
        )
        return [next(p for p in prompts if p in c.prompt) for c in model.calls]

    first = chosen()
    assert first == chosen()  # re-runs choose the same prompt for each row
    assert set(first) == set(prompts)  # and rows do not all get the same one
    assert chosen(seed=5) != first


def test_weighted_dict_system_prompts_and_key_column() -> None:
    model = magpie_model()
    task = Magpie(
        system_prompt={
            "math": ["You help with math.", 0.9],
            "art": ("You help with art.", 0.1),
            "misc": "You help.",
        },
        only_instruction=True,
    )
    result = run(task, model, n=200, cache=False)
    keys = Counter(r["system_prompt_key"] for r in result.rows)
    assert set(keys) == {"math", "art", "misc"}
    # relative weights 0.9 : 0.1 : 1.0
    assert keys["art"] < keys["math"] and keys["art"] < keys["misc"]
    for row, call in zip(result.rows, model.calls, strict=True):
        expected = {
            "math": "You help with math.",
            "art": "You help with art.",
            "misc": "You help.",
        }[row["system_prompt_key"]]
        assert expected in call.prompt


def test_row_system_prompt_beats_the_parameter_and_include_system_prompt() -> None:
    model = magpie_model()
    task = Magpie(system_prompt="Parameter prompt.", include_system_prompt=True)
    result = Pipeline(
        [task],
        source=[{"system_prompt": "Row prompt."}, {"system_prompt": ""}],
        models={"default": model},
    ).run(None)
    assert [r["system_prompt"] for r in result.rows] == ["Row prompt.", "Parameter prompt."]
    prompts = sorted(c.prompt for c in model.calls if c.prompt is not None)
    assert prompts == [
        TEMPLATES["chatml"].render("Parameter prompt."),
        TEMPLATES["chatml"].render("Row prompt."),
    ]


def test_malformed_instructions_are_recorded_failures(tmp_path: Path) -> None:
    outputs = iter(["<|im_start|>assistant\nHello", "What is a leap year?", "user"])

    def handler(request: Request, i: int) -> str:
        return next(outputs) if request.prompt is not None else "Every four years, mostly."

    result = run(Magpie(), FakeModel(handler, max_concurrency=1), n=3, tmp_path=tmp_path / "out")
    assert [r["instruction"] for r in result.rows] == ["What is a leap year?"]
    run_json = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run_json["failures_by_step"]["magpie"] == {"instruction echoes template tokens": 2}
    raw = {
        json.loads(line)["raw_output"]
        for line in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()
    }
    assert raw == {"<|im_start|>assistant\nHello", "user"}


def test_truncated_calls_say_which_call_failed() -> None:
    def handler(request: Request, i: int) -> Completion:
        if request.prompt is not None:
            return Completion(
                "A long question that never", finish_reason="length" if request.seed % 2 else "stop"
            )
        return Completion("An answer that was cut", finish_reason="length")

    result = run(Magpie(), FakeModel(handler), n=12)
    assert result.rows == []
    reasons = result.stats.failures_by_step["magpie"]
    assert set(reasons) == {
        "instruction: truncated at max_tokens",
        "response: truncated at max_tokens",
    }
    assert sum(reasons.values()) == 12


def test_config_errors_are_clear() -> None:
    with pytest.raises(ConfigError, match="unknown template 'chatmll'"):
        Magpie(template="chatmll")
    with pytest.raises(ConfigError, match="needs stop"):
        Magpie(template="<|user|>\n")
    with pytest.raises(ConfigError, match="no system slot"):
        Magpie(template="<|user|>\n", stop=["<|end|>"], system_prompt="Be brief.")
    assert Magpie(
        template="<|system|>{{ system_prompt }}<|user|>\n",
        stop=["<|end|>"],
        system_prompt="Be brief.",
    )
    with pytest.raises(ConfigError, match="at least one non-empty"):
        Magpie(system_prompt=[])
    with pytest.raises(ConfigError, match="mapping is empty"):
        Magpie(system_prompt={})
    with pytest.raises(ConfigError, match="weights must be positive"):
        Magpie(system_prompt={"a": ["x", 0]})
    with pytest.raises(ConfigError, match=r"step 1 \(magpie\): template"):
        recipe_from_dict(
            {"name": "m", "source": {"num_rows": 2}, "steps": [{"magpie": {"template": "llama2"}}]}
        )


def test_literal_template_runs_with_its_stop() -> None:
    model = magpie_model()
    run(Magpie(template="<|user|>\n", stop=["<|end|>"]), model)
    assert model.calls[0].prompt == "<|user|>\n" and "<|end|>" in model.calls[0].stop
    # a row's own system prompt cannot go into a template without a slot: dropped, not sent
    task = Magpie(template="<|user|>\n", stop=["<|end|>"])
    result = Pipeline(
        [task], source=[{"system_prompt": "Be brief."}], models={"default": model}
    ).run(None)
    assert result.rows == [] and dict(result.stats.failures) == {"template has no system slot": 1}
    assert len(model.calls) == 2


def test_registry_and_columns() -> None:
    assert step_class("magpie") is Magpie
    assert Magpie(system_prompt={"a": "x"}, include_system_prompt=True).produces() == [
        "instruction",
        "response",
        "system_prompt_key",
        "system_prompt",
    ]
    p = recipe_from_dict(
        {"name": "m", "source": {"num_rows": 3}, "steps": [{"magpie": {}}, {"format_sft": {}}]}
    )
    assert p.check(["row"])[-1][-2:] == ["messages", "prompt_id"]


# -- multi-turn ------------------------------------------------------------------------------------


def scripted(overrides: dict[tuple[str, int], str | Completion] | None = None, **kw) -> FakeModel:
    """A fake that writes "Question n?" for the n-th user turn and "Answer n." for the n-th reply.

    ``overrides[(role, n)]`` replaces one turn's output (to make it bad).
    """

    def handler(request: Request, i: int) -> str | Completion:
        if request.prompt is not None:
            role, n = "user", request.prompt.count("<|im_start|>user\n")
        else:
            role, n = "assistant", sum(m["role"] == "user" for m in request.messages)
        default = f"Question {n}?" if role == "user" else f"Answer {n}."
        return (overrides or {}).get((role, n), default)

    return FakeModel(handler, **kw)


def raw_prompts(model: FakeModel) -> list[str]:
    return [c.prompt for c in model.calls if c.prompt is not None]


def chats(model: FakeModel) -> list[Request]:
    return [c for c in model.calls if c.messages is not None]


def test_three_turn_conversation_roles_and_raw_prompts() -> None:
    model = scripted()
    task = Magpie(n_turns=3, system_prompt="You help gardeners.")
    result = run(task, model)
    (row,) = result.rows
    assert set(row) == {"row", "conversation"} and task.produces() == ["conversation"]
    assert row["conversation"] == [
        {"role": "user", "content": "Question 1?"},
        {"role": "assistant", "content": "Answer 1."},
        {"role": "user", "content": "Question 2?"},
        {"role": "assistant", "content": "Answer 2."},
        {"role": "user", "content": "Question 3?"},
        {"role": "assistant", "content": "Answer 3."},
    ]
    # the user turns are raw prompts: the conversation so far in ChatML, ending at the user header
    first, second, third = raw_prompts(model)
    head = "<|im_start|>system\nYou help gardeners.<|im_end|>\n<|im_start|>user\n"
    assert first == head
    assert second == (
        head + "Question 1?<|im_end|>\n<|im_start|>assistant\nAnswer 1.<|im_end|>\n"
        "<|im_start|>user\n"
    )
    assert third == (
        second + "Question 2?<|im_end|>\n<|im_start|>assistant\nAnswer 2.<|im_end|>\n"
        "<|im_start|>user\n"
    )
    # the replies are chat requests with every message so far
    replies = chats(model)
    assert [len(c.messages) for c in replies] == [2, 4, 6]
    assert replies[-1].messages == (
        {"role": "system", "content": "You help gardeners."},
        *row["conversation"][:-1],
    )
    # paper decoding on every turn; every call has its own seed
    assert all((c.temperature, c.top_p) == (1.0, 1.0) for c in model.calls if c.prompt)
    assert all(c.temperature == 0.0 for c in replies)
    assert len({c.seed for c in model.calls}) == 6


def test_continuation_matches_the_models_own_chat_template() -> None:
    """Turn n's raw prompt is what the chat template renders for the turns so far + the user header."""
    import jinja2

    system = "Be brief."
    turns = [
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "How are you?"},
        {"role": "assistant", "content": "Fine."},
    ]
    messages = [{"role": "system", "content": system}, *turns]
    for name, source, header in [
        ("chatml", SMOLLM2_TEMPLATE, "<|im_start|>user\n"),
        ("llama3", LLAMA3_TEMPLATE, "<|start_header_id|>user<|end_header_id|>\n\n"),
    ]:
        rendered = jinja2.Template(source).render(messages=messages, bos_token="<|begin_of_text|>")
        assert TEMPLATES[name].continuation(system, turns) == rendered + header, name
        assert TEMPLATES[name].continuation(system, []) == TEMPLATES[name].render(system)


def test_llama3_multi_turn_prompts() -> None:
    def handler(request: Request, i: int) -> str:
        if request.prompt is None:
            return "Scattering."
        return ["Why is the sky blue?", "And sunsets?"][
            request.prompt.count("user<|end_header_id|>") - 1
        ]

    model = FakeModel(handler)
    model.info.chat_template = LLAMA3_TEMPLATE
    result = run(Magpie(n_turns=2, system_prompt="S."), model)
    assert [m["content"] for m in result.rows[0]["conversation"]] == [
        "Why is the sky blue?",
        "Scattering.",
        "And sunsets?",
        "Scattering.",
    ]
    second = raw_prompts(model)[1]
    assert second.endswith(
        "Why is the sky blue?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        "Scattering.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
    )
    assert all("<|eot_id|>" in c.stop for c in model.calls if c.prompt is not None)


def test_end_with_user_leaves_out_the_last_reply() -> None:
    model = scripted()
    result = run(Magpie(n_turns=2, end_with_user=True, system_prompt="S."), model)
    assert [m["role"] for m in result.rows[0]["conversation"]] == ["user", "assistant", "user"]
    assert result.rows[0]["conversation"][-1]["content"] == "Question 2?"
    assert len(raw_prompts(model)) == 2 and len(chats(model)) == 1  # no call for the last reply


def test_include_system_prompt_heads_the_conversation() -> None:
    kept = run(Magpie(n_turns=2, system_prompt="S.", include_system_prompt=True), scripted())
    conversation = kept.rows[0]["conversation"]
    assert conversation[0] == {"role": "system", "content": "S."}
    assert [m["role"] for m in conversation[1:]] == ["user", "assistant"] * 2
    assert "system_prompt" not in kept.rows[0]  # inside the conversation, not a column
    plain = run(Magpie(n_turns=2, system_prompt="S."), scripted())
    assert [m["role"] for m in plain.rows[0]["conversation"]] == ["user", "assistant"] * 2
    assert Magpie(n_turns=2, include_system_prompt=True).produces() == ["conversation"]


def test_default_system_prompt_only_for_multi_turn_without_one() -> None:
    default = default_multi_turn_system()
    assert "follow-up" in default and not default.startswith("{#")

    multi = scripted()
    result = run(Magpie(n_turns=2, include_system_prompt=True), multi)
    assert all(
        p.startswith(f"<|im_start|>system\n{default}<|im_end|>\n") for p in raw_prompts(multi)
    )
    assert all(c.messages[0] == {"role": "system", "content": default} for c in chats(multi))
    assert result.rows[0]["conversation"][0] == {"role": "system", "content": default}

    single = scripted()
    run(Magpie(), single)
    assert raw_prompts(single) == ["<|im_start|>user\n"]
    assert chats(single)[0].messages == ({"role": "user", "content": "Question 1?"},)

    given = scripted()
    run(Magpie(n_turns=2, system_prompt="You help with tax forms."), given)
    assert not any(default in p for p in raw_prompts(given))
    assert all(c.messages[0]["content"] == "You help with tax forms." for c in chats(given))


@pytest.mark.parametrize(
    ("turn", "output", "reason", "calls"),
    [
        (
            ("user", 2),
            "<|im_start|>assistant\nSure!",
            "user turn 2: instruction echoes template tokens",
            3,
        ),
        (("user", 2), "  Question 1? ", "user turn 2: follow-up repeats an earlier message", 3),
        (("user", 2), "Answer 1.", "user turn 2: follow-up repeats an earlier message", 3),
        (("user", 2), " \n", "user turn 2: empty completion", 3),
        (("user", 2), "S.", "user turn 2: instruction repeats the system prompt", 3),
        (
            ("user", 2),
            Completion("And what about", finish_reason="length"),
            "user turn 2: truncated at max_tokens",
            3,
        ),
        (
            ("assistant", 1),
            "Sure.<|im_start|>user\nMore?",
            "assistant turn 1: reply holds template tokens",
            2,
        ),
        (("assistant", 2), "", "assistant turn 2: empty completion", 4),
    ],
)
def test_a_bad_turn_drops_the_row_with_its_reason(
    tmp_path: Path, turn: tuple[str, int], output: str | Completion, reason: str, calls: int
) -> None:
    model = scripted({turn: output})
    result = run(Magpie(n_turns=3, system_prompt="S."), model, tmp_path=tmp_path / "out")
    assert result.rows == []
    assert result.stats.failures_by_step["magpie"] == {reason: 1}
    assert len(model.calls) == calls  # nothing is asked after the bad turn
    (failure,) = [
        json.loads(x) for x in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()
    ]
    assert failure["reason"] == reason
    assert failure["raw_output"] == (output.text if isinstance(output, Completion) else output)


def test_rerun_from_the_cache_makes_no_calls(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    # named: an unnamed step's seeds come from its parameters, and n_turns differs below
    task = Magpie(name="chat", n_turns=3, system_prompt="S.")
    first = run(task, scripted(), n=3, tmp_path=tmp_path / "a", cache=cache)
    assert first.stats.model_calls == 18 and len(first.rows) == 3
    again = scripted()
    second = run(task, again, n=3, tmp_path=tmp_path / "b", cache=cache)
    assert again.calls == [] and second.stats.model_calls == 0 and second.stats.cache_hits == 18
    assert second.rows == first.rows
    # turn 1 makes the same calls as a one-turn run of that step with that system prompt
    one = scripted()
    single = run(
        Magpie(name="chat", system_prompt="S."), one, n=3, tmp_path=tmp_path / "c", cache=cache
    )
    assert one.calls == [] and single.stats.cache_hits == 6


def test_multi_turn_config_errors() -> None:
    for bad in (0, -2, "2", 1.5, True):
        with pytest.raises(ConfigError, match="n_turns must be a whole number >= 1"):
            Magpie(n_turns=bad)
    with pytest.raises(ConfigError, match="only_instruction makes one user message"):
        Magpie(n_turns=2, only_instruction=True)
    with pytest.raises(ConfigError, match="end_with_user needs n_turns >= 2"):
        Magpie(end_with_user=True)
    with pytest.raises(ConfigError, match="n_turns > 1 needs a chat format"):
        Magpie(template="<|user|>\n", stop=["<|end|>"], n_turns=2)
    with pytest.raises(ConfigError, match=r"step 1 \(magpie\): .*n_turns must be"):
        recipe_from_dict(
            {"name": "m", "source": {"num_rows": 2}, "steps": [{"magpie": {"n_turns": 0}}]}
        )
    with pytest.raises(ConfigError, match="cannot continue a conversation"):
        literal_template("<|user|>\n", ["<|end|>"]).continuation(
            None, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
        )


@pytest.mark.real
def test_real_model_two_turn_conversation(embedded_model) -> None:  # type: ignore[no-untyped-def]
    """The built-in magpie-chat recipe on the embedded model, shortened: 2 conversations of 2
    turns become SFT messages with alternating roles."""
    from datamill import ModelSettings
    from datamill.recipes.loader import load_recipe

    p = load_recipe(
        "magpie-chat",
        [
            "steps.magpie.n_turns=2",
            "steps.magpie.max_tokens=32",
            "steps.magpie.response_max_tokens=32",
            "steps.magpie.truncated=keep",
        ],
    )
    p.models = {
        n: ModelSettings(spec=embedded_model, sampling=s.sampling) for n, s in p.models.items()
    }
    result = p.run(None, limit=2, cache=False)
    assert len(result.rows) + len(result.failures) == 2 and result.rows
    for row in result.rows:
        assert set(row) == {"messages", "prompt_id"}
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["user", "assistant", "user", "assistant"]
        assert all(m["content"].strip() for m in row["messages"])
    for failure in result.failures:
        assert failure["reason"].startswith(("user turn", "assistant turn"))


def test_magpie_chat_recipe_on_the_fake_model() -> None:
    from datamill import ModelSettings
    from datamill.recipes.loader import builtin_recipes, load_recipe

    assert "magpie-chat" in builtin_recipes()
    p = load_recipe("magpie-chat")
    assert p.steps[0].n_turns == 3  # type: ignore[attr-defined]
    p.models = {n: ModelSettings(spec=scripted(), sampling=s.sampling) for n, s in p.models.items()}
    result = p.run(None, limit=2)
    assert len(result.rows) == 2
    for row in result.rows:
        assert [m["content"] for m in row["messages"]] == [
            "Question 1?", "Answer 1.", "Question 2?", "Answer 2.", "Question 3?", "Answer 3."
        ]  # fmt: skip


def test_format_sft_takes_a_multi_turn_conversation() -> None:
    """magpie(n_turns) >> format_sft(conversation=...) gives TRL messages; a conversation whose
    roles do not alternate, or with an empty message, is dropped with its reason."""
    from datamill import FormatSFT
    from datamill.steps.base import step

    task = Magpie(n_turns=2, system_prompt="You help gardeners.", include_system_prompt=True)
    fmt = FormatSFT(conversation="conversation")
    result = Pipeline([task, fmt], source=EmptyRows(1), models={"default": scripted()}).run()
    (row,) = result.rows
    assert [m["role"] for m in row["messages"]] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert row["messages"][1:] == [
        {"role": "user", "content": "Question 1?"},
        {"role": "assistant", "content": "Answer 1."},
        {"role": "user", "content": "Question 2?"},
        {"role": "assistant", "content": "Answer 2."},
    ]
    assert fmt.required_columns() == ["conversation"]

    @step(reads=["conversation"], writes=["conversation"])
    def spoil(row):  # type: ignore[no-untyped-def]
        c = list(row["conversation"])
        if row["row"] == 0:
            c[2], c[3] = c[3], c[2]  # assistant answers before the user asks
        else:
            c[3] = {"role": "assistant", "content": "  "}
        return {"conversation": c}

    result = Pipeline(
        [Magpie(n_turns=2), spoil, FormatSFT(conversation="conversation")],
        source=EmptyRows(2),
        models={"default": scripted()},
    ).run()
    assert result.rows == []
    assert dict(result.stats.failures) == {"bad conversation": 1, "empty text": 1}

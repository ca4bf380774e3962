"""One sampling rule for every task: task defaults < model settings < step options, where a
task's per-call options (Magpie's ``response_max_tokens``, …) beat its step-wide ones."""

from __future__ import annotations

from typing import Any

import pytest

from datamill import FakeModel, Pipeline
from datamill.recipes.registry import STEP_KINDS, step_class
from datamill.tasks.base import Task

INSTRUCTION = "Write a short poem about a river in spring."
RESPONSE = "The river wakes and runs with melted snow past the green banks."
TEXT = (
    "The town library opened a repair cafe on Saturdays. Volunteers fix lamps, toasters and "
    "bicycles while visitors learn to mend things themselves, and nothing repaired goes to waste."
)

WEEKDAY = "datamill.tools.examples:weekday"
TOOL_TURNS = [
    {"role": "user", "content": "Which weekday was 2024-01-01?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_0",
                "type": "function",
                "function": {"name": "weekday", "arguments": '{"date": "2024-01-01"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_0", "name": "weekday", "content": '"Monday"'},
    {"role": "assistant", "content": "It was a Monday."},
]

#: kind → (parameters, source row, max_tokens of its requests when nothing else is set)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], set[int]]] = {
    "text_generation": ({}, {"instruction": INSTRUCTION}, {512}),
    "self_instruct": ({}, {"input": "Gardening on a balcony."}, {48 * 5 + 32}),
    "magpie": ({"template": "chatml"}, {"id": 1}, {128, 512}),
    "evol_instruct": ({"generate_answers": True}, {"instruction": INSTRUCTION}, {256, 512}),
    "evol_complexity": ({"generate_answers": True}, {"instruction": INSTRUCTION}, {256, 512}),
    "response_pool": ({}, {"instruction": INSTRUCTION}, {512}),
    "evol_quality": ({}, {"instruction": INSTRUCTION, "response": RESPONSE}, {512}),
    "ultrafeedback": (
        {"rationale_chars": 100},
        {"instruction": INSTRUCTION, "generations": [RESPONSE, "Water flows."]},
        {64 + (100 // 2 + 32) * 2},
    ),
    "critique": ({}, {"instruction": INSTRUCTION, "response": RESPONSE}, {256, 512}),
    "complexity_scorer": ({}, {"instruction": INSTRUCTION}, {12 + 16}),
    "quality_scorer": ({}, {"instruction": INSTRUCTION, "response": RESPONSE}, {12 + 16}),
    "classify": ({"labels": ["poem", "code"]}, {"instruction": INSTRUCTION}, {24}),
    "delta_pair": ({}, {"instruction": INSTRUCTION}, {512}),
    "text_to_persona": ({}, {"text": TEXT}, {96}),
    "persona_to_persona": ({}, {"persona": "A retired teacher who restores bicycles."}, {256}),
    "rewrite_text": ({}, {"text": TEXT, "style": "a limerick"}, {384}),
    "summarize": ({}, {"text": TEXT}, {384}),
    "simulated_chat": ({"n_turns": 1}, {"persona": "a student"}, {96, 256}),
    "tool_queries": ({"tools": [WEEKDAY]}, {"kind": "single"}, {128}),
    # the fake's date is no date: the call fails execution, so only the calls round is sent
    "tool_calls": ({"tools": [WEEKDAY]}, {"kind": "single", "query": INSTRUCTION}, {256}),
    "verify_tool_semantics": ({}, {"messages": TOOL_TURNS}, {128}),
}

TASK_KINDS = [k for k in STEP_KINDS if issubclass(step_class(k), Task)]


def test_every_task_kind_is_covered() -> None:
    assert sorted(CASES) == sorted(TASK_KINDS)


def sent(kind: str, step_options: dict[str, Any], model_settings: dict[str, Any]) -> list[Any]:
    params, row, _ = CASES[kind]
    model = FakeModel()
    step = step_class(kind)(**params, **step_options)
    settings = {"spec": model, **model_settings}  # every model the step names (delta_pair: two)
    pipeline = Pipeline([step], source=[row], models=dict.fromkeys(step.models(), settings))
    pipeline.run(None, cache=False)
    assert model.calls, f"{kind} sent no request"
    return model.calls


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_step_option_beats_model_setting_beats_task_default(kind: str) -> None:
    assert {r.max_tokens for r in sent(kind, {"max_tokens": 50}, {"max_tokens": 100})} == {50}
    assert {r.max_tokens for r in sent(kind, {}, {"max_tokens": 100})} == {100}
    assert {r.max_tokens for r in sent(kind, {}, {})} == CASES[kind][2]


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_temperature_follows_the_same_rule(kind: str) -> None:
    assert {r.temperature for r in sent(kind, {"temperature": 0.2}, {"temperature": 0.9})} == {0.2}
    assert {r.temperature for r in sent(kind, {}, {"temperature": 0.9})} == {0.9}


def test_magpie_per_call_options_beat_the_step_wide_ones() -> None:
    calls = sent(
        "magpie",
        {"max_tokens": 50, "response_max_tokens": 70, "instruction_temperature": 0.4},
        {"max_tokens": 100, "temperature": 0.9},
    )
    asks = [r for r in calls if r.prompt is not None]
    answers = [r for r in calls if r.messages is not None]
    assert asks and answers
    assert {(r.max_tokens, r.temperature) for r in asks} == {(50, 0.4)}
    assert {(r.max_tokens, r.temperature) for r in answers} == {(70, 0.9)}


def test_evol_instruct_answer_options_beat_the_step_wide_ones() -> None:
    calls = sent(
        "evol_instruct",
        {"max_tokens": 50, "answer_max_tokens": 70},
        {"max_tokens": 100},
    )
    # one evolution round, then one answer to it: the answer alone has its own option
    assert sorted(r.max_tokens for r in calls) == [50, 70]
    assert calls[-1].max_tokens == 70

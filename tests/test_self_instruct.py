"""SelfInstruct: the prompt, the forgiving line parser, and the task on the fake model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datamill import Completion, ConfigError, Expand, FakeModel, Pipeline
from datamill.recipes.loader import recipe_from_dict
from datamill.recipes.registry import step_class
from datamill.tasks.self_instruct import (
    DEFAULT_CRITERIA,
    SelfInstruct,
    clean_line,
    parse_instructions,
)

# -- parser ---------------------------------------------------------------------------------------


def test_parse_spec_invariants() -> None:
    assert parse_instructions("a\n\nb\n") == ["a", "b"]
    assert parse_instructions(None) == []
    assert parse_instructions("") == []
    assert parse_instructions("  \n\t\n") == []


@pytest.mark.parametrize(
    ("line", "clean"),
    [
        ("1. What is compost?", "What is compost?"),
        ("2) Explain the water cycle.", "Explain the water cycle."),
        ("(3) Name a planet.", "Name a planet."),
        ("10.Describe a tree.", "Describe a tree."),
        ("- List three fruits.", "List three fruits."),
        ("* List three fruits.", "List three fruits."),
        ("• List three fruits.", "List three fruits."),
        ("- 4. **Summarise the text.**", "Summarise the text."),
        ("**Request 2:** Compare cats and dogs.", "Compare cats and dogs."),
        ("Query 5: How do tides work?", "How do tides work?"),
        ("Q: How do tides work?", "How do tides work?"),
        ('"Why is the sea salty?"', "Why is the sea salty?"),
        ("“Why is the sea salty?”", "Why is the sea salty?"),
        ("3.5 inches of rain fell: is that a lot?", "3.5 inches of rain fell: is that a lot?"),
        ("Task-based learning: what is it?", "Task-based learning: what is it?"),
        ("Quantum dots: how do they glow?", "Quantum dots: how do they glow?"),
    ],
)
def test_clean_line_strips_markers_but_not_content(line: str, clean: str) -> None:
    assert clean_line(line) == clean


def test_parse_skips_lead_ins_headings_answers_and_duplicates() -> None:
    text = (
        "Sure! Here are three requests about compost:\n"
        "## Requests\n"
        "What is compost made of?\n"
        "\n"
        "   \n"
        "what is  compost made of?\n"  # duplicate up to case and spaces
        "Explain why a compost heap gets warm.\n"
        "A: Because microbes release heat.\n"
        "Translate the following into French:\n"
        "---\n"
        "Suggest a compost mix for a small garden.\n"
    )
    assert parse_instructions(text) == [
        "What is compost made of?",
        "Explain why a compost heap gets warm.",
        "Suggest a compost mix for a small garden.",
    ]


def test_parse_prefers_marked_lines_over_commentary() -> None:
    text = (
        "If your user needs a guide on composting, this is it\n\n"
        "1. How do I start a compost heap?\n"
        "2. What should never go into compost?\n\n"
        "Remember, composting takes patience and time."
    )
    assert parse_instructions(text) == [
        "How do I start a compost heap?",
        "What should never go into compost?",
    ]
    # a single marked line is not a list: the other lines still count
    assert parse_instructions("Why is soil dark?\n- Name a worm.") == [
        "Why is soil dark?",
        "Name a worm.",
    ]


def test_parse_limit_and_truncation() -> None:
    text = "One request here?\nTwo request here?\nThree request here?\nFour is cut off mid"
    assert parse_instructions(text, limit=2) == ["One request here?", "Two request here?"]
    assert parse_instructions(text, truncated=True) == [
        "One request here?",
        "Two request here?",
        "Three request here?",
    ]
    assert parse_instructions("Only a cut off li", truncated=True) == []
    assert parse_instructions("Done?\n\n", truncated=True) == []  # the last non-blank line goes


def test_parse_drops_lines_that_copy_the_prompt() -> None:
    context = "Composting turns kitchen scraps into soil. A well-kept heap warms up in the middle and is ready in two months."
    prompt = SelfInstruct().prompt(context)
    text = (
        f"{DEFAULT_CRITERIA[1]}\n"  # a guideline echoed back
        "Composting turns kitchen scraps into soil.\n"  # a context sentence copied
        "Why does a well-kept heap warm up in the middle?\n"  # reuses context words: a real request
        "Is compost ready in two months?\n"  # short lines are never judged copies
    )
    parts = prompt.splitlines()
    assert parse_instructions(text, prompt_parts=parts) == [
        "Why does a well-kept heap warm up in the middle?",
        "Is compost ready in two months?",
    ]
    assert len(parse_instructions(text)) == 4  # without the prompt nothing is judged a copy


# -- prompt -----------------------------------------------------------------------------------------


def test_prompt_carries_context_count_criteria_and_application() -> None:
    task = SelfInstruct(num_instructions=4, application_description="a cooking assistant")
    prompt = task.prompt("  Bread needs yeast, flour, water and salt.  ")
    assert "Bread needs yeast, flour, water and salt." in prompt
    assert "Write 4 different requests" in prompt
    assert "a cooking assistant" in prompt
    for line in DEFAULT_CRITERIA:
        assert line in prompt
    assert "no numbering" in prompt
    custom = SelfInstruct(criteria=["Ask only about safety."]).prompt("x")
    assert "Ask only about safety." in custom and DEFAULT_CRITERIA[0] not in custom


# -- task on the fake model -----------------------------------------------------------------------


def numbered(request, i) -> str:
    return "Here are the requests:\n1. How long does bread take to rise?\n2. Explain what salt does in dough.\n3. Suggest a quick bread recipe."


def test_task_writes_the_instructions_list_and_expands(tmp_path: Path) -> None:
    model = FakeModel(numbered)
    p = Pipeline(
        [
            SelfInstruct(num_instructions=3),
            Expand(columns=["instructions"], rename={"instructions": "instruction"}),
        ],
        source=[{"input": "Bread needs yeast."}],
        models={"default": model},
    )
    result = p.run(tmp_path / "out")
    assert [r["instruction"] for r in result.rows] == [
        "How long does bread take to rise?",
        "Explain what salt does in dough.",
        "Suggest a quick bread recipe.",
    ]
    assert all(r["input"] == "Bread needs yeast." for r in result.rows)
    (request,) = model.calls
    assert (
        request.messages[-1]["role"] == "user"
        and "Bread needs yeast." in request.messages[-1]["content"]
    )
    assert request.max_tokens == 48 * 3 + 32


def test_task_drops_echoed_guidelines() -> None:
    def echo(request, i) -> str:
        return f"{DEFAULT_CRITERIA[0]}\nHow do I shape a baguette at home?"

    result = Pipeline(
        [SelfInstruct()],
        source=[{"input": "Bread needs yeast."}],
        models={"default": FakeModel(echo)},
    ).run(None)
    assert result.rows[0]["instructions"] == ["How do I shape a baguette at home?"]


def test_unparsable_output_is_a_recorded_failure_with_the_raw_text(tmp_path: Path) -> None:
    p = Pipeline(
        [SelfInstruct()],
        source=[{"input": "ctx qqq"}, {"input": "ctx two"}],
        models={
            "default": FakeModel(
                lambda r, i: (
                    "Here are five requests:\n\n## Output\n---"
                    if "qqq" in r.messages[-1]["content"]
                    else "Why?"
                )
            )
        },
    )
    result = p.run(tmp_path / "out")
    assert [r["instructions"] for r in result.rows] == [["Why?"]]
    failure = json.loads((tmp_path / "out" / "failures.jsonl").read_text())
    assert failure["reason"] == "no instructions in output"
    assert failure["raw_output"].startswith("Here are five requests")


def test_truncated_output_keeps_its_complete_lines() -> None:
    def cut(request, i) -> Completion:
        return Completion(
            "What is rye?\nWhy does dough rise?\nHow hot should the ov", finish_reason="length"
        )

    result = Pipeline(
        [SelfInstruct()], source=[{"input": "x"}], models={"default": FakeModel(cut)}
    ).run(None)
    assert result.rows[0]["instructions"] == ["What is rye?", "Why does dough rise?"]
    strict = Pipeline(
        [SelfInstruct(truncated="drop")],
        source=[{"input": "x"}],
        models={"default": FakeModel(cut)},
    ).run(None)
    assert strict.rows == [] and strict.stats.failures["truncated at max_tokens"] == 1


def test_empty_input_is_dropped_before_any_call() -> None:
    model = FakeModel(numbered)
    steps = [
        SelfInstruct(),
        Expand(columns=["instructions"], rename={"instructions": "instruction"}),
    ]
    result = Pipeline(
        steps, source=[{"input": "  "}, {"input": "Bread."}], models={"default": model}
    ).run(None)
    assert [r["input"] for r in result.rows] == ["Bread."] * 3
    assert len(model.calls) == 1 and "Bread." in model.calls[0].messages[-1]["content"]
    assert dict(result.stats.failures) == {"empty input": 1}
    wrong = Pipeline([SelfInstruct()], source=[{"input": 42}], models={"default": model}).run(None)
    assert wrong.rows == [] and dict(wrong.stats.failures) == {"not text": 1}


def test_step_options_override_defaults_and_column_is_configurable() -> None:
    model = FakeModel(numbered)
    task = SelfInstruct(column="context", output="queries", max_tokens=99, temperature=0.2)
    result = Pipeline([task], source=[{"context": "x"}], models={"default": model}).run(None)
    assert result.rows[0]["queries"][0] == "How long does bread take to rise?"
    assert model.calls[0].max_tokens == 99 and model.calls[0].temperature == 0.2
    with pytest.raises(ConfigError, match="needs column 'context'"):
        Pipeline(
            [SelfInstruct(column="context")], source=[{"input": "x"}], models={"default": model}
        ).run(None)


def test_recipe_validation_and_registry() -> None:
    assert step_class("self_instruct") is SelfInstruct
    with pytest.raises(ConfigError, match=r"num_instructions"):
        recipe_from_dict(
            {
                "name": "x",
                "source": {"rows": [{"input": "a"}]},
                "steps": [{"self_instruct": {"num_instructions": 0}}],
            }
        )

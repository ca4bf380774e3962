"""EvolInstruct / EvolComplexity: parse, elimination rules, seeded mutations, on the fake model."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from datamill import Completion, ConfigError, FakeModel, Pipeline, Request
from datamill.errors import Dropped, InputError, ParseError
from datamill.recipes.loader import recipe_from_dict
from datamill.recipes.registry import step_class
from datamill.tasks.evol_instruct import (
    IN_DEPTH,
    MUTATIONS,
    EvolComplexity,
    EvolInstruct,
    check_answer,
    check_evolution,
    parse_evolution,
)

# -- parse ------------------------------------------------------------------------------------------


def test_parse_spec_invariants() -> None:
    assert parse_evolution("...#Rewritten Prompt#:\n X ") == "X"
    assert parse_evolution("...#Created Prompt#:\nY") == "Y"
    assert parse_evolution("  just the new prompt \n") == "just the new prompt"


def test_parse_takes_the_last_marker_and_strips_leftovers() -> None:
    text = "#Original Prompt#:\nName a fruit.\n#Rewritten Prompt#:\nName a tropical fruit that grows on trees.\n#End#"
    assert parse_evolution(text) == "Name a tropical fruit that grows on trees."
    assert parse_evolution('#New Prompt#:\n"Describe a rare bird."') == "Describe a rare bird."
    assert (
        parse_evolution("Rewritten prompt: Explain tides using the moon and sun.")
        == "Explain tides using the moon and sun."
    )
    assert (
        parse_evolution("#rewritten prompt# :\n#Rewritten Prompt#\nList two moons of Mars.")
        == "List two moons of Mars."
    )


@pytest.mark.parametrize(
    "raw", ["", "   ", "#Rewritten Prompt#:", "#Rewritten Prompt#:\n#End#\n", '#New Prompt#: ""']
)
def test_parse_empty_is_a_parse_error(raw: str) -> None:
    with pytest.raises(ParseError) as exc:
        parse_evolution(raw)
    assert exc.value.reason == "empty evolution" and exc.value.raw == raw


# -- elimination rules -----------------------------------------------------------------------------


def test_check_evolution_copies_prompt_words() -> None:
    for text in (
        "Rewrite the given prompt to ask about tides.",
        "#Rewritten Prompt# Explain tides in detail",
        "Answer the original prompt with more steps.",
    ):
        with pytest.raises(Dropped) as exc:
            check_evolution("Explain tides.", text)
        assert exc.value.reason == "copies prompt words"


@pytest.mark.parametrize(
    "evolved",
    [
        "Explain tides.",  # the same
        "explain   TIDES!",  # the same up to case and punctuation
        "Tides explain.",  # reordered, nothing new
        "Explain.",  # truncated
        "Explain tides clearly.",  # one new word (< 2)
    ],
)
def test_check_evolution_no_information_gain(evolved: str) -> None:
    with pytest.raises(Dropped) as exc:
        check_evolution("Explain tides.", evolved)
    assert exc.value.reason == "no information gain"


def test_check_evolution_accepts_real_changes() -> None:
    check_evolution(
        "Explain tides.", "Explain tides, using the moon's gravity and one worked example."
    )
    check_evolution("Explain tides.", "Explain tides clearly.", min_new_words=1)
    check_evolution("Explain tides.", "Describe how glaciers carve valleys over time.")  # breadth


def test_check_answer_rules() -> None:
    with pytest.raises(Dropped) as sorry:
        check_answer("Sorry, I don't know about that topic.")
    assert sorry.value.reason == "answer is a short apology"
    check_answer(
        "Sorry for the long answer: " + "tides rise and fall twice a day " * 12
    )  # >= 80 words
    check_answer("A tide is the rise and fall of the sea.")
    for empty in ("...", "It is what it is.", "Yes, and so on?!", ""):
        with pytest.raises(Dropped) as exc:
            check_answer(empty)
        assert exc.value.reason == "answer has no content words"


# -- mutation sets and choice ------------------------------------------------------------------------


def test_mutation_sets() -> None:
    assert set(EvolInstruct.ALL_MUTATIONS) == {
        "CONSTRAINTS",
        "DEEPENING",
        "CONCRETIZING",
        "INCREASED_REASONING_STEPS",
        "BREADTH",
    }
    assert EvolInstruct.ALL_MUTATIONS == MUTATIONS
    assert (
        EvolComplexity.ALL_MUTATIONS
        == IN_DEPTH
        == ("CONSTRAINTS", "DEEPENING", "CONCRETIZING", "INCREASED_REASONING_STEPS")
    )
    assert (
        step_class("evol_instruct") is EvolInstruct
        and step_class("evol_complexity") is EvolComplexity
    )


def test_prompts_per_mutation() -> None:
    task = EvolInstruct()
    breadth = task.prompt("BREADTH", "  Name a fruit. ")
    assert breadth.rstrip().endswith("#New Prompt#:") and "Name a fruit." in breadth
    methods = {}
    for m in IN_DEPTH:
        text = task.prompt(m, "Name a fruit.")
        assert text.rstrip().endswith("#Rewritten Prompt#:") and "Name a fruit." in text
        assert "10 to 20 words" in text
        methods[m] = text
    assert len(set(methods.values())) == 4  # each mutation asks for a different change
    assert (
        "constraint" in methods["CONSTRAINTS"]
        and "several steps" in methods["INCREASED_REASONING_STEPS"]
    )


def evolving_model(**kw) -> FakeModel:
    """Evolutions append a distinct clause; answers are plain sentences."""

    def handler(request: Request, i: int) -> str:
        content = request.messages[-1]["content"]
        if "#Original Prompt#" in content:
            original = content.split("#Original Prompt#:\n", 1)[1].split("\n\n#", 1)[0]
            return f"#Rewritten Prompt#:\n{original} Include aspect{request.seed % 1000} and angle{request.seed % 997}."
        return f"Answer about: {content[:40]}"

    return FakeModel(handler, **kw)


def mutation_of(request: Request) -> str:
    content = request.messages[-1]["content"]
    if "#New Prompt#" in content:
        return "BREADTH"
    for key, phrase in (
        ("CONSTRAINTS", "constraint"),
        ("DEEPENING", "more depth"),
        ("CONCRETIZING", "specific"),
        ("INCREASED_REASONING_STEPS", "several steps"),
    ):
        if phrase in content:
            return key
    raise AssertionError("no mutation found in the prompt")


def test_mutations_are_seeded_per_row_and_reproducible() -> None:
    rows = [{"instruction": f"Explain topic number {i}."} for i in range(40)]

    def run_once(seed: int | None = None) -> list[list[str]]:
        result = Pipeline(
            [EvolInstruct(num_evolutions=2, seed=seed)],
            source=rows,
            models={"default": evolving_model()},
        ).run(None, cache=False)
        return [r["mutations"] for r in result.rows]

    first = run_once()
    assert first == run_once()  # the same rows get the same mutations on a re-run
    assert len(first) == 40 and all(len(m) == 2 for m in first)
    used = Counter(m for ms in first for m in ms)
    assert set(used) == set(MUTATIONS)  # every mutation is used across rows
    assert run_once(seed=11) != first
    # EvolComplexity never picks BREADTH
    result = Pipeline(
        [EvolComplexity(num_evolutions=2)], source=rows, models={"default": evolving_model()}
    ).run(None)
    assert {m for r in result.rows for m in r["mutations"]} <= set(IN_DEPTH)


def test_evolutions_chain_and_the_prompt_matches_the_chosen_mutation() -> None:
    model = evolving_model(max_concurrency=1)
    result = Pipeline(
        [EvolInstruct(num_evolutions=3)],
        source=[{"instruction": "Name a fruit."}],
        models={"default": model},
    ).run(None)
    row = result.rows[0]
    assert len(model.calls) == 3
    assert [mutation_of(c) for c in model.calls] == row["mutations"]
    # each round rewrites the previous round's result
    assert "Name a fruit." in model.calls[0].messages[-1]["content"]
    for before, after in zip(model.calls, model.calls[1:], strict=False):
        previous = model.handler(before, 0).split(":\n", 1)[1]
        assert previous in after.messages[-1]["content"]
    assert row["evolved_instruction"].startswith("Name a fruit. Include aspect")
    assert row["evolved_instruction"].count("Include aspect") == 3
    assert len({c.seed for c in model.calls}) == 3


def test_store_evolutions_include_original_and_answers() -> None:
    model = evolving_model()
    task = EvolInstruct(
        num_evolutions=2,
        store_evolutions=True,
        include_original_instruction=True,
        generate_answers=True,
    )
    row = (
        Pipeline([task], source=[{"instruction": "Name a fruit."}], models={"default": model})
        .run(None)
        .rows[0]
    )
    assert (
        row["evolved_instructions"][0] == "Name a fruit." and len(row["evolved_instructions"]) == 3
    )
    assert len(row["answers"]) == 3
    assert all(a.startswith("Answer about: ") for a in row["answers"])
    assert set(task.produces()) == {"evolved_instructions", "mutations", "answers"}
    single = EvolInstruct(
        generate_answers=True,
        answer_max_tokens=77,
        answer_temperature=0.1,
        max_tokens=55,
        temperature=0.9,
    )
    model = evolving_model(max_concurrency=1)
    row = (
        Pipeline([single], source=[{"instruction": "Name a fruit."}], models={"default": model})
        .run(None)
        .rows[0]
    )
    assert row["answer"] == "Answer about: " + row["evolved_instruction"][:40]
    evolve_call, answer_call = model.calls
    assert (evolve_call.max_tokens, evolve_call.temperature) == (55, 0.9)
    assert (answer_call.max_tokens, answer_call.temperature) == (77, 0.1)
    assert answer_call.messages == ({"role": "user", "content": row["evolved_instruction"]},)


def scripted(outputs: dict[str, str], answer: str = "Tides are caused by the moon.") -> FakeModel:
    """Evolution output by the row's instruction; a fixed answer."""

    def handler(request: Request, i: int) -> str:
        content = request.messages[-1]["content"]
        for key, out in outputs.items():
            if f"\n{key}\n" in content:
                return out
        return answer

    return FakeModel(handler)


def test_elimination_rules_are_counted_in_run_json(tmp_path: Path) -> None:
    outputs = {
        "Explain tides.": "#Rewritten Prompt#:\nExplain tides.",
        "Name a fruit.": "#Rewritten Prompt#:\nAs the given prompt says, name a fruit.",
        "Describe rain.": "#Rewritten Prompt#:\nDescribe rain and how clouds form droplets.",
        "List planets.": "#Rewritten Prompt#:\n",
    }
    rows = [{"instruction": k} for k in outputs]
    result = Pipeline([EvolInstruct()], source=rows, models={"default": scripted(outputs)}).run(
        tmp_path / "out"
    )
    assert [r["evolved_instruction"] for r in result.rows] == [
        "Describe rain and how clouds form droplets."
    ]
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["failures_by_step"]["evol_instruct"] == {
        "no information gain": 1,
        "copies prompt words": 1,
        "evolution: empty evolution": 1,
    }


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("Sorry, I cannot help with that.", "answer is a short apology"),
        ("It is what it is.", "answer has no content words"),
    ],
)
def test_answer_elimination_rules(answer: str, reason: str) -> None:
    model = scripted(
        {"Explain tides.": "#Rewritten Prompt#:\nExplain tides using the moon."}, answer=answer
    )
    result = Pipeline(
        [EvolInstruct(generate_answers=True)],
        source=[{"instruction": "Explain tides."}],
        models={"default": model},
    ).run(None)
    assert result.rows == [] and dict(result.stats.failures_by_step["evol_instruct"]) == {reason: 1}


def test_truncated_answer_says_it_was_the_answer() -> None:
    def handler(request: Request, i: int) -> Completion:
        if "#Original Prompt#" in request.messages[-1]["content"]:
            return Completion("#Rewritten Prompt#:\nExplain tides using the moon.")
        return Completion("The moon pulls", finish_reason="length")

    result = Pipeline(
        [EvolInstruct(generate_answers=True)],
        source=[{"instruction": "Explain tides."}],
        models={"default": FakeModel(handler)},
    ).run(None)
    assert dict(result.stats.failures) == {"answer: truncated at max_tokens": 1}


def test_on_failure_stop_keeps_successful_rounds() -> None:
    def handler(request: Request, i: int) -> str:
        content = request.messages[-1]["content"]
        if "Explain tides using the moon." in content:
            return "#Rewritten Prompt#:\nExplain tides using the moon."  # round 2 adds nothing
        return "#Rewritten Prompt#:\nExplain tides using the moon."

    task = EvolInstruct(num_evolutions=3, on_failure="stop", store_evolutions=True)
    row = (
        Pipeline(
            [task],
            source=[{"instruction": "Explain tides."}],
            models={"default": FakeModel(handler)},
        )
        .run(None)
        .rows[0]
    )
    assert row["evolved_instructions"] == ["Explain tides using the moon."]
    assert len(row["mutations"]) == 1
    assert row["evolution_stopped"].startswith("round 2 (") and row["evolution_stopped"].endswith(
        "no information gain"
    )
    # a row whose first round fails is still dropped
    bad = Pipeline(
        [task],
        source=[{"instruction": "Explain tides using the moon."}],
        models={"default": FakeModel(handler)},
    ).run(None)
    assert bad.rows == [] and bad.stats.failures["no information gain"] == 1


def test_empty_instruction_is_dropped_without_a_call() -> None:
    model = evolving_model()
    result = Pipeline(
        [EvolInstruct()],
        source=[{"instruction": " "}, {"instruction": "Name a fruit."}],
        models={"default": model},
    ).run(None)
    assert len(result.rows) == 1 and len(model.calls) == 1
    assert dict(result.stats.failures) == {"empty input": 1}
    wrong = Pipeline(
        [EvolInstruct()], source=[{"instruction": ["a", "list"]}], models={"default": model}
    )
    with pytest.raises(InputError, match=r"column 'instruction' holds a list"):
        wrong.run(None)  # a list where text is expected is known before any call
    assert len(model.calls) == 1


def test_configuration_errors() -> None:
    assert EvolInstruct(mutations=["breadth", "constraints", "BREADTH"]).mutation_names() == (
        "BREADTH",
        "CONSTRAINTS",
    )
    with pytest.raises(ConfigError, match="unknown mutation 'COMPLICATE'"):
        EvolInstruct(mutations=["COMPLICATE"])
    with pytest.raises(ConfigError, match="evol_complexity knows CONSTRAINTS"):
        EvolComplexity(mutations=["BREADTH"])
    with pytest.raises(ConfigError, match=r"step 1 \(evol_instruct\): num_evolutions"):
        recipe_from_dict(
            {
                "name": "x",
                "source": {"rows": [{"instruction": "a"}]},
                "steps": [{"evol_instruct": {"num_evolutions": 0}}],
            }
        )
    with pytest.raises(ConfigError, match="needs column 'question'"):
        recipe_from_dict(
            {
                "name": "x",
                "source": {"rows": [{"instruction": "a"}]},
                "steps": [{"evol_instruct": {"column": "question"}}],
            }
        ).check(["instruction"])

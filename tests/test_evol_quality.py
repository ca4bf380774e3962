"""evol_quality: five response mutations, chained evolutions, originals kept, pool mode."""

from __future__ import annotations

import pytest

from datamill import ConfigError, EvolQuality, FakeModel, Pipeline, Request
from datamill.recipes.registry import step_class
from datamill.tasks.evol_quality import MUTATIONS, clean_rewrite


def rewriter(request: Request, i: int) -> str:
    """Answers "Improved answer: <previous answer> +" so each round is visible."""
    user = request.messages[-1]["content"]  # type: ignore[index]
    previous = user.split("Answer to improve:\n", 1)[1].split("\n\nImproved answer:", 1)[0]
    return f"Improved answer: {previous} +"


ROWS = [{"instruction": f"Explain topic {i}.", "response": f"base {i}"} for i in range(6)]


def test_mutation_names() -> None:
    assert set(MUTATIONS) == {"helpfulness", "relevance", "deepening", "creativity", "details"}


def test_evolutions_chain_on_the_latest_response_and_keep_the_original() -> None:
    model = FakeModel(rewriter)
    step = EvolQuality(num_evolutions=3, store_evolutions=True)
    result = Pipeline([step], source=ROWS[:1], models={"default": model}).run(None, cache=False)
    row = result.rows[0]
    assert row["response"] == "base 0"
    assert row["evolved_responses"] == ["base 0 +", "base 0 + +", "base 0 + + +"]
    assert row["evolved_response"] == "base 0 + + +"
    assert len(row["evolution_mutations"]) == 3 and set(row["evolution_mutations"]) <= set(
        MUTATIONS
    )
    assert len(model.calls) == 3
    assert "Prompt:\nExplain topic 0." in model.calls[0].messages[-1]["content"]  # type: ignore[index]


def test_each_mutation_has_its_own_goal_in_the_prompt() -> None:
    goals = set()
    for mutation in MUTATIONS:
        model = FakeModel(rewriter)
        Pipeline(
            [EvolQuality(mutations=[mutation])], source=ROWS[:1], models={"default": model}
        ).run(None, cache=False)
        text = model.calls[0].messages[-1]["content"]  # type: ignore[index]
        goal = next(line for line in text.splitlines() if line.startswith("Goal:"))
        assert (
            mutation.rstrip("s")[:5] in goal.lower() or mutation == "deepening" and "deeper" in goal
        )
        goals.add(goal)
    assert len(goals) == 5


def test_mutation_choice_is_random_per_row_but_repeatable() -> None:
    def picks() -> list[list[str]]:
        p = Pipeline(
            [EvolQuality(num_evolutions=2)], source=ROWS, models={"default": FakeModel(rewriter)}
        )
        return [r["evolution_mutations"] for r in p.run(None, cache=False).rows]

    first = picks()
    assert first == picks()
    assert len({m for row in first for m in row}) > 1
    reseeded = Pipeline(
        [EvolQuality(num_evolutions=2, seed=7)],
        source=ROWS,
        models={"default": FakeModel(rewriter)},
    ).run(None, cache=False)
    assert [r["evolution_mutations"] for r in reseeded.rows] != first


def test_pool_mode_appends_the_rewrite_with_a_label() -> None:
    model = FakeModel(rewriter, name="m")
    row = {
        "instruction": "q",
        "generations": ["one", "two"],
        "generation_models": ["a (m)", "b (m)"],
    }
    step = EvolQuality(model="evolver", pool=True, pool_index=1)
    out = Pipeline([step], source=[row], models={"evolver": model}).run(None, cache=False).rows[0]
    assert out["generations"] == ["one", "two", "two +"]
    assert out["generation_models"] == ["a (m)", "b (m)", "evolver (m) · evol_quality of #2"]
    assert step.required_columns() == ["instruction", "generations"]


def test_clean_rewrite() -> None:
    assert clean_rewrite("  #Rewritten Response#: Better.  ") == "Better."
    assert clean_rewrite("**Improved answer:** Better.") == "Better."
    assert clean_rewrite("Improved answers matter: yes") == "Improved answers matter: yes"
    assert clean_rewrite("Plain text.") == "Plain text."


def test_failures_are_recorded() -> None:
    empty = FakeModel(lambda r, i: "Improved answer:   ")
    result = Pipeline([EvolQuality()], source=ROWS[:1], models={"default": empty}).run(
        None, cache=False
    )
    assert result.failures[0]["reason"] == "empty rewrite"
    source = [{"instruction": "q", "response": " "}, {"instruction": "q", "response": "fine"}]
    blank = Pipeline([EvolQuality()], source=source, models={"default": FakeModel(rewriter)}).run(
        None, cache=False
    )
    assert len(blank.rows) == 1 and blank.failures[0]["reason"] in {"empty response", "empty input"}
    short_pool = Pipeline(
        [EvolQuality(pool=True, pool_index=3)],
        source=[{"instruction": "q", "generations": ["x"]}],
        models={"default": FakeModel(rewriter)},
    ).run(None, cache=False)
    assert short_pool.failures[0]["reason"] == "pool too small"


def test_bad_parameters() -> None:
    assert step_class("evol_quality") is EvolQuality
    with pytest.raises(ConfigError, match="unknown mutation 'breadth'"):
        EvolQuality(mutations=["breadth"])
    with pytest.raises(ConfigError, match="at least one mutation"):
        EvolQuality(mutations=[])
    assert EvolQuality(mutations=["DETAILS"]).mutations == ["details"]


@pytest.mark.real
def test_real_model_rewrites(embedded_model) -> None:  # type: ignore[no-untyped-def]
    row = {"instruction": "What is a list in Python?", "response": "A list holds items."}
    step = EvolQuality(mutations=["details"], max_tokens=48, truncated="keep")
    result = Pipeline([step], source=[row], models={"default": embedded_model}).run(
        None, cache=False
    )
    out = result.rows[0]
    assert out["response"] == "A list holds items."
    assert out["evolved_response"].strip() and not out["evolved_response"].lower().startswith(
        "improved answer"
    )
    assert out["evolution_mutations"] == ["details"]

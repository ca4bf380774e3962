"""critique: critique against principles, then a revision; revision-vs-original DPO pairs."""

from __future__ import annotations

import pytest

from datamill import ConfigError, CritiqueRewrite, FakeModel, FormatDPO, Pipeline, Request
from datamill.recipes.registry import step_class
from datamill.tasks.critique import DEFAULT_PRINCIPLES


def critic(request: Request, i: int) -> str:
    user = request.messages[-1]["content"]  # type: ignore[index]
    if user.rstrip().endswith("Critique:"):
        return "It is too vague."
    original = user.split("Original answer:\n", 1)[1].split("\n\nCritique:", 1)[0]
    return f"Rewritten answer: {original}, made specific."


ROW = {"instruction": "What is a tuple?", "response": "A thing."}


def test_critique_then_revision_sees_the_critique() -> None:
    model = FakeModel(critic)
    result = Pipeline([CritiqueRewrite()], source=[ROW], models={"default": model}).run(
        None, cache=False
    )
    row = result.rows[0]
    assert row["critique"] == "It is too vague."
    assert row["revision"] == "A thing., made specific."
    assert row["response"] == "A thing."
    assert row["revision_model"] == "default (fake)"
    assert row["critique_principles"] == list(DEFAULT_PRINCIPLES)
    first, second = (c.messages[-1]["content"] for c in model.calls)  # type: ignore[index]
    assert all(p in first for p in DEFAULT_PRINCIPLES)
    assert "Critique:\nIt is too vague." in second


def test_revision_becomes_chosen_and_original_rejected() -> None:
    p = Pipeline(
        [CritiqueRewrite(), FormatDPO(pair="revision_vs_original", keep_columns=False)],
        source=[ROW],
        models={"default": FakeModel(critic)},
    )
    pair = p.run(None, cache=False).rows[0]
    assert pair["chosen"][-1]["content"] == "A thing., made specific."
    assert pair["rejected"][-1]["content"] == "A thing."
    assert pair["score_chosen"] is None and pair["score_rejected"] is None
    assert pair["chosen_model"] == "default (fake)"


def test_a_revision_that_changes_nothing_is_dropped() -> None:
    def lazy(request: Request, i: int) -> str:
        user = request.messages[-1]["content"]  # type: ignore[index]
        return "Fine." if user.rstrip().endswith("Critique:") else "A  thing.\n"

    result = Pipeline([CritiqueRewrite()], source=[ROW], models={"default": FakeModel(lazy)}).run(
        None, cache=False
    )
    assert result.rows == []
    assert result.failures[0]["reason"] == "revision identical to the original"


def test_pool_mode_adds_the_revision_for_the_judge() -> None:
    row = {
        "instruction": "q",
        "generations": ["first", "second"],
        "generation_models": ["a (fake)", "b (fake)"],
    }
    out = (
        Pipeline(
            [CritiqueRewrite(model="editor", pool=True, pool_index=1)],
            source=[row],
            models={"editor": FakeModel(critic)},
        )
        .run(None, cache=False)
        .rows[0]
    )
    assert out["generations"] == ["first", "second", "second, made specific."]
    assert out["generation_models"][-1] == "editor (fake) · revision of #2"


def test_principles_per_row_are_sampled_repeatably() -> None:
    principles = ["P one.", "P two.", "P three.", "P four."]
    rows = [{"instruction": f"q{i}", "response": f"r{i}"} for i in range(6)]

    def picked() -> list[list[str]]:
        p = Pipeline(
            [CritiqueRewrite(principles=principles, principles_per_row=1)],
            source=rows,
            models={"default": FakeModel(critic)},
        )
        return [r["critique_principles"] for r in p.run(None, cache=False).rows]

    first = picked()
    assert first == picked()
    assert all(len(p) == 1 and p[0] in principles for p in first)
    assert len({p[0] for p in first}) > 1


def test_bad_parameters() -> None:
    assert step_class("critique") is CritiqueRewrite
    with pytest.raises(ConfigError, match="at least one principle"):
        CritiqueRewrite(principles=["  "])
    with pytest.raises(ConfigError, match="principles_per_row"):
        CritiqueRewrite(principles=["a"], principles_per_row=2)


@pytest.mark.real
def test_real_model_critique_and_revision(embedded_model) -> None:  # type: ignore[no-untyped-def]
    row = {"instruction": "What is a tuple in Python?", "response": "A thing."}
    step = CritiqueRewrite(principles=["Be specific."], max_tokens=40, truncated="keep")
    result = Pipeline([step], source=[row], models={"default": embedded_model}).run(
        None, cache=False
    )
    assert result.stats.model_calls == 2
    if result.rows:
        out = result.rows[0]
        assert out["critique"].strip() and out["revision"].strip()
        assert " ".join(out["revision"].split()) != "A thing."
    else:
        assert result.failures[0]["reason"] == "revision identical to the original"

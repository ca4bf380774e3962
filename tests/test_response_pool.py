"""response_pool: several models (or settings of one model) answer each prompt, grouped per row."""

from __future__ import annotations

from typing import Any

import pytest

from datamill import Completion, ConfigError, FakeModel, Pipeline, Request, ResponsePool
from datamill.recipes.loader import recipe_from_dict
from datamill.recipes.registry import step_class
from datamill.tasks.response_pool import extend_pool, model_label, parse_label


def echo(request: Request, i: int) -> str:
    return f"answer t={request.temperature} seed={request.seed} sample={i}"


def settings(model: FakeModel) -> dict[str, Any]:
    return {"a": {"spec": model, "temperature": 0.3}, "b": {"spec": model, "temperature": 1.1}}


def test_two_settings_of_one_model_make_a_pool_with_labels() -> None:
    model = FakeModel(echo, name="tiny")
    p = Pipeline(
        [ResponsePool(models=["a", "b"])],
        source=[{"instruction": "What is synthetic data?"}],
        models=settings(model),
    )
    row = p.run(None, cache=False).rows[0]
    assert row["generation_models"] == ["a (tiny)", "b (tiny)"]
    assert [g.split()[1] for g in row["generations"]] == ["t=0.3", "t=1.1"]
    # each setting gets its own seed, so even equal temperatures would sample differently
    assert model.calls[0].seed != model.calls[1].seed
    assert all(c.messages[-1]["content"] == "What is synthetic data?" for c in model.calls)  # type: ignore[index]


def test_n_samples_go_to_the_backend_as_one_request() -> None:
    model = FakeModel(echo)
    p = Pipeline(
        [ResponsePool(models=["a", "b"], n=3)],
        source=[{"instruction": "q"}],
        models=settings(model),
    )
    result = p.run(None, cache=False)
    assert [c.n for c in model.calls] == [3, 3]
    row = result.rows[0]
    assert len(row["generations"]) == 6 == len(set(row["generations"]))
    assert row["generation_models"] == ["a (fake)"] * 3 + ["b (fake)"] * 3


def test_template_and_system_prompt() -> None:
    model = FakeModel(echo)
    step = ResponsePool(template="Answer briefly: {{ question }}", system_prompt="You are terse.")
    Pipeline([step], source=[{"question": "why?"}], models={"default": model}).run(
        None, cache=False
    )
    assert model.calls[0].messages == (
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Answer briefly: why?"},
    )
    assert step.required_columns() == ["question"]


def test_a_truncated_sample_is_left_out_only_when_allowed() -> None:
    def handler(request: Request, i: int) -> Completion:
        if request.temperature > 1:
            return Completion("cut off mid", finish_reason="length")
        return Completion(f"full answer {i}")

    model = FakeModel(handler)
    strict = Pipeline(
        [ResponsePool(models=["a", "b"])], source=[{"instruction": "q"}], models=settings(model)
    ).run(None, cache=False)
    assert strict.rows == []
    assert strict.failures[0]["reason"] == "too few usable responses"
    assert "b (fake) sample 1: truncated at max_tokens" in strict.failures[0]["detail"]

    lenient = Pipeline(
        [ResponsePool(models=["a", "b"], n=2, min_responses=2)],
        source=[{"instruction": "q"}],
        models=settings(model),
    ).run(None, cache=False)
    assert lenient.rows[0]["generations"] == ["full answer 0", "full answer 1"]
    kept = Pipeline(
        [ResponsePool(models=["a", "b"], truncated="keep")],
        source=[{"instruction": "q"}],
        models=settings(model),
    ).run(None, cache=False)
    assert kept.rows[0]["generations"] == ["full answer 0", "cut off mid"]


def test_bad_parameters_fail_before_any_call() -> None:
    with pytest.raises(ConfigError, match="twice"):
        ResponsePool(models=["a", "a"])
    with pytest.raises(ConfigError, match="at least one model"):
        ResponsePool(models=[])
    with pytest.raises(ConfigError, match="min_responses"):
        ResponsePool(models=["a", "b"], min_responses=3)
    p = Pipeline(
        [ResponsePool(models=["a", "c"])],
        source=[{"instruction": "q"}],
        models=settings(FakeModel()),
    )
    with pytest.raises(ConfigError, match="'c'"):
        p.check(["instruction"])


def test_recipe_form_and_registry() -> None:
    assert step_class("response_pool") is ResponsePool
    p = recipe_from_dict(
        {
            "name": "pool",
            "models": {"a": "fake", "b": {"spec": "fake", "temperature": 1.0}},
            "source": {"rows": [{"instruction": "q"}]},
            "steps": [{"response_pool": {"models": ["a", "b"], "n": 2}}],
        }
    )
    step = p.steps[0]
    assert isinstance(step, ResponsePool) and step.models() == ["a", "b"] and step.expected() == 4
    with pytest.raises(ConfigError, match="n"):
        recipe_from_dict(
            {
                "name": "x",
                "source": {"rows": [{"instruction": "q"}]},
                "steps": [{"response_pool": {"n": 0}}],
            }
        )


def test_labels_round_trip_and_pools_extend() -> None:
    info = FakeModel(name="SmolLM2-135M-Instruct.Q4_1").info
    assert model_label("a", info) == "a (SmolLM2-135M-Instruct.Q4_1)"
    assert parse_label(model_label("editor", info, "revision of #2")) == (
        "editor",
        "SmolLM2-135M-Instruct.Q4_1",
    )
    assert parse_label("gpt-4") is None and parse_label(None) is None
    row = {"generations": ["x"], "other": 1}
    assert extend_pool(row, "generations", "generation_models", ["y"], ["e (m)"]) == {
        "generations": ["x", "y"],
        "generation_models": [None, "e (m)"],
    }


@pytest.mark.real
def test_real_model_two_settings(embedded_model) -> None:  # type: ignore[no-untyped-def]
    models = {
        "a": {"spec": embedded_model, "temperature": 0.2},
        "b": {"spec": embedded_model, "temperature": 1.2},
    }
    step = ResponsePool(models=["a", "b"], max_tokens=24, truncated="keep")
    result = Pipeline([step], source=[{"instruction": "Name a colour."}], models=models).run(
        None, cache=False
    )
    row = result.rows[0]
    assert result.stats.model_calls == 2
    assert len(row["generations"]) == 2 and all(g.strip() for g in row["generations"])
    name = embedded_model.info.name
    assert row["generation_models"] == [f"a ({name})", f"b ({name})"]

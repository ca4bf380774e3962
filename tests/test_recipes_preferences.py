"""The built-in preference recipes: they load, run end to end, and account for every prompt."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from datamill import FakeModel, FormatDPO, ModelSettings, Request, ResponsePool, UltraFeedback
from datamill.models.fake import default_text
from datamill.pipeline.graph import Pipeline
from datamill.recipes.loader import builtin_recipes, load_recipe

RECIPES = ["preferences-basic", "preferences-evolved", "preferences-judged"]
PAIR_COLUMNS = {
    "prompt",
    "prompt_id",
    "chosen",
    "rejected",
    "score_chosen",
    "score_rejected",
    "chosen_model",
    "rejected_model",
}
#: every reason a prompt may fail to become a pair in these recipes
KNOWN_LOSSES = {
    "all ratings equal",
    "identical responses",
    "judges disagree on order",
    "revision identical to the original",
    "fewer ratings than responses",
    "unparsable judgement",
    "unparsable rating",
    "rating out of range",
    "truncated at max_tokens",
    "empty completion",
    "empty rewrite",
    "too few usable responses",
}


def answers_of(request: Request) -> list[str]:
    user = request.messages[-1]["content"]  # type: ignore[index]
    parts = user.split("\n<text ")[1:]
    return [p.split(">\n", 1)[1].split("\n</text", 1)[0] for p in parts]


def length_judge(request: Request, i: int) -> str:
    """A fake judge that prefers longer answers whatever their order (so order-swap agrees)."""
    if request.json_schema is None:
        return default_text(request, i)
    answers = answers_of(request)
    ranked = sorted(set(len(a) for a in answers))
    return json.dumps(
        {
            f"text_{j}": {"explanation": "by length", "rating": 1 + min(4, ranked.index(len(a)))}
            for j, a in enumerate(answers, 1)
        }
    )


def on_model(p: Pipeline, model: Any) -> Pipeline:
    """The same pipeline with every named model served by ``model`` (its sampling settings kept)."""
    p.models = {
        name: ModelSettings(spec=model, sampling=s.sampling) for name, s in p.models.items()
    }
    return p


def check_accounting(out: Path, limit: int) -> dict[str, Any]:
    run = json.loads((out / "run.json").read_text())
    assert run["rows"] + run["failed_rows"] == limit
    assert set(run["failures"]) <= KNOWN_LOSSES, run["failures"]
    return run


def check_pairs(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        assert set(row) >= PAIR_COLUMNS
        assert row["chosen"][0] == row["rejected"][0] == {"role": "user", "content": row["prompt"]}
        assert row["chosen"][-1]["role"] == "assistant"
        assert row["chosen"][-1]["content"] != row["rejected"][-1]["content"]
        assert row["score_chosen"] > row["score_rejected"]
        assert 1 <= row["score_rejected"] < row["score_chosen"] <= 5


def test_recipes_are_listed_and_load() -> None:
    listed = builtin_recipes()
    for name in RECIPES:
        assert name in listed
        p = load_recipe(name)
        assert isinstance(p.steps[0], ResponsePool) and p.steps[0].models() == ["a", "b"]
        assert any(isinstance(s, UltraFeedback) for s in p.steps)
        assert any(isinstance(s, FormatDPO) for s in p.steps)
        assert {"a", "b", "judge"} <= set(p.models)
        p.check(["instruction"])
    judged = load_recipe("preferences-judged")
    uf = next(s for s in judged.steps if isinstance(s, UltraFeedback))
    assert uf.bias_control == "average" and uf.self_judging == "forbid_setting"


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_on_a_fake_model_makes_pairs(name: str, tmp_path: Path) -> None:
    p = on_model(load_recipe(name), FakeModel(length_judge))
    result = p.run(tmp_path / "out", limit=4)
    run = check_accounting(tmp_path / "out", 4)
    assert run["rows"] == 4
    check_pairs(result.rows)
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "out" / "data" / "train-00000-of-00001.parquet")
    assert set(table.column_names) >= PAIR_COLUMNS and table.num_rows == 4
    if name == "preferences-evolved":
        assert all(len(r["evolution_mutations"]) == 1 for r in result.rows)
    if name == "preferences-judged":  # a, b, the EvolQuality rewrite and the revision were judged
        assert all(len(r["ratings"]) == len(r["generation_models"]) == 4 for r in result.rows)
        assert all(r["generation_models"][2].startswith("editor (") for r in result.rows)
        assert all(r["critique"] for r in result.rows)


def position_judge(request: Request, i: int) -> str:
    """Rates answers by where they stand (1, 2, 3, …), never by what they say."""
    if request.json_schema is None:
        return default_text(request, i)
    k = len(request.json_schema["required"])
    return json.dumps(
        {f"text_{j}": {"explanation": "by position", "rating": j} for j in range(1, k + 1)}
    )


def test_judged_recipe_cancels_a_position_judge(tmp_path: Path) -> None:
    # averaged over both orders every answer gets the same rating, so no pair is made from it
    p = on_model(load_recipe("preferences-judged"), FakeModel(position_judge))
    result = p.run(tmp_path / "avg", limit=2)
    run = check_accounting(tmp_path / "avg", 2)
    assert result.rows == []
    assert run["failures_by_step"]["format_dpo"] == {"all ratings equal": 2}
    # the strict form drops it at the judge, counted as order disagreement
    strict = on_model(
        load_recipe("preferences-judged", ["ultrafeedback.bias_control=agree"]),
        FakeModel(position_judge),
    )
    assert strict.run(tmp_path / "agree", limit=2).rows == []
    run = check_accounting(tmp_path / "agree", 2)
    assert run["failures_by_step"]["ultrafeedback"] == {"judges disagree on order": 2}


# -- the real embedded model: one prompt per recipe, short answers -------------------------------
SHORT = [
    "response_pool.max_tokens=40",
    "evol_quality.max_tokens=48",
    "critique.max_tokens=48",
    "ultrafeedback.rationale_chars=48",
]


@pytest.mark.real
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_end_to_end_on_the_embedded_model(
    name: str, embedded_model: Any, tmp_path: Path
) -> None:
    overrides = [o for o in SHORT if name == "preferences-judged" or not o.startswith("critique")]
    if name == "preferences-basic":
        overrides = [o for o in overrides if not o.startswith("evol_quality")]
    p = on_model(load_recipe(name, overrides), embedded_model)
    result = p.run(tmp_path / "out", limit=1)
    check_accounting(tmp_path / "out", 1)
    check_pairs(result.rows)
    assert result.stats.model_calls >= 3  # two pool answers and at least one judgement

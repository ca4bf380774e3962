"""format_dpo: argmax/argmin pairs, explicit tie handling, TRL's preference layout."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest

from datamill import ConfigError, FormatDPO, Pipeline
from datamill.errors import Dropped
from datamill.recipes.registry import step_class
from datamill.steps.dpo import pick_pair


def run_step(step: FormatDPO, row: dict[str, Any]) -> dict[str, Any]:
    out = asyncio.run(step.process(row, None))  # type: ignore[arg-type]  # format_dpo uses no context
    assert len(out) == 1
    return out[0]


def dropped(step: FormatDPO, row: dict[str, Any]) -> Dropped:
    with pytest.raises(Dropped) as info:
        run_step(step, row)
    return info.value


ROW = {
    "instruction": "What is synthetic data?",
    "generations": ["alpha", "beta", "gamma"],
    "ratings": [1, 3, 2],
    "generation_models": ["a (m)", "b (m)", "c (m)"],
}


def test_best_is_chosen_worst_is_rejected_in_trl_layout() -> None:
    out = run_step(FormatDPO(), dict(ROW))
    assert out["prompt"] == "What is synthetic data?"
    assert out["prompt_id"] == hashlib.sha256(b"What is synthetic data?").hexdigest()
    assert out["chosen"] == [
        {"role": "user", "content": "What is synthetic data?"},
        {"role": "assistant", "content": "beta"},
    ]
    assert out["rejected"][-1] == {"role": "assistant", "content": "alpha"}
    assert (out["score_chosen"], out["score_rejected"]) == (3.0, 1.0)
    assert (out["chosen_model"], out["rejected_model"]) == ("b (m)", "a (m)")
    assert out["generations"] == ROW["generations"]  # keep_columns by default


def test_system_message_only_when_the_column_has_text() -> None:
    step = FormatDPO(system_prompt="system")
    with_system = run_step(step, {**ROW, "system": "Be brief."})
    assert [m["role"] for m in with_system["chosen"]] == ["system", "user", "assistant"]
    assert with_system["chosen"][0]["content"] == "Be brief."
    blank = run_step(step, {**ROW, "system": "  "})
    assert [m["role"] for m in blank["rejected"]] == ["user", "assistant"]


def test_all_equal_ratings_are_dropped_by_default_and_paired_with_ties_first() -> None:
    row = {**ROW, "ratings": [4, 4, 4]}
    assert dropped(FormatDPO(), row).reason == "all ratings equal"
    kept = run_step(FormatDPO(ties="first"), row)
    assert kept["chosen"][-1]["content"] == "alpha"
    assert kept["rejected"][-1]["content"] == "beta"
    assert kept["score_chosen"] == kept["score_rejected"] == 4.0


def test_shared_top_takes_the_first_and_keeps_a_real_margin() -> None:
    out = run_step(FormatDPO(), {**ROW, "ratings": [5, 5, 2]})
    assert out["chosen"][-1]["content"] == "alpha"
    assert out["rejected"][-1]["content"] == "gamma"


def test_chosen_never_equals_rejected() -> None:
    same = {**ROW, "generations": ["same text", "same  text\n", "same text"], "ratings": [4, 4, 4]}
    assert dropped(FormatDPO(ties="first"), same).reason == "identical responses"
    # different ratings for the same text (a confused judge) cannot make a pair either
    assert dropped(FormatDPO(), {**same, "ratings": [5, 3, 4]}).reason == "identical responses"
    # but another worst-rated response with a different text can
    out = run_step(FormatDPO(), {**ROW, "generations": ["x", "x", "y"], "ratings": [5, 1, 1]})
    assert out["rejected"][-1]["content"] == "y"
    with pytest.raises(Dropped):
        pick_pair(["x", "x"], [1, 1], ties="first")


def test_unrated_responses_are_left_out() -> None:
    out = run_step(FormatDPO(), {**ROW, "ratings": [None, 3, 2]})
    assert out["rejected"][-1]["content"] == "gamma"
    assert (
        dropped(FormatDPO(), {**ROW, "ratings": [None, 3, None]}).reason
        == "fewer than two rated responses"
    )


def test_min_margin() -> None:
    assert dropped(FormatDPO(min_margin=2.5), dict(ROW)).reason == "margin below min_margin"
    assert run_step(FormatDPO(min_margin=2), dict(ROW))["score_chosen"] == 3.0


def test_bad_rows_are_dropped_with_reasons() -> None:
    assert (
        dropped(FormatDPO(), {**ROW, "ratings": [1, 2]}).reason == "ratings do not match responses"
    )
    assert dropped(FormatDPO(), {**ROW, "ratings": [1, "5", 2]}).reason == "ratings are not numbers"
    assert dropped(FormatDPO(), {**ROW, "instruction": " "}).reason == "empty text"


def test_float_ratings_from_averaged_judgements() -> None:
    out = run_step(FormatDPO(), {**ROW, "ratings": [2.5, 4.0, 3.5]})
    assert (out["score_chosen"], out["score_rejected"]) == (4.0, 2.5)


def test_revision_vs_original() -> None:
    row = {
        "instruction": "Q?",
        "response": "old answer",
        "revision": "new answer",
        "revision_model": "ed (m) · revision of #1",
    }
    out = run_step(FormatDPO(pair="revision_vs_original", keep_columns=False), row)
    assert set(out) == {
        "prompt",
        "prompt_id",
        "chosen",
        "rejected",
        "score_chosen",
        "score_rejected",
        "chosen_model",
        "rejected_model",
    }
    assert out["chosen"][-1]["content"] == "new answer"
    assert out["rejected"][-1]["content"] == "old answer"
    assert out["score_chosen"] is None and out["score_rejected"] is None
    assert out["chosen_model"] == "ed (m) · revision of #1"
    same = {**row, "revision": "old  answer"}
    assert dropped(FormatDPO(pair="revision_vs_original"), same).reason == "identical responses"
    with pytest.raises(ConfigError, match="min_margin"):
        FormatDPO(pair="revision_vs_original", min_margin=1)


def test_column_check_and_registry() -> None:
    assert step_class("format_dpo") is FormatDPO
    p = Pipeline([FormatDPO()], source=[{"instruction": "q", "generations": ["a", "b"]}], models={})
    with pytest.raises(ConfigError, match="'ratings'"):
        p.check(["instruction", "generations"])
    flow = Pipeline([FormatDPO(keep_columns=False)], source=[ROW], models={}).check(list(ROW))
    assert flow[-1][:4] == ["prompt", "prompt_id", "chosen", "rejected"]


def test_pipeline_run_records_why_prompts_did_not_become_pairs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows = [
        dict(ROW),
        {**ROW, "ratings": [2, 2, 2]},
        {**ROW, "ratings": [1, 2]},
    ]
    result = Pipeline([FormatDPO()], source=rows, models={}).run(tmp_path / "out")
    assert len(result.rows) == 1
    import json

    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["failures_by_step"]["format_dpo"] == {
        "all ratings equal": 1,
        "ratings do not match responses": 1,
    }

"""preferences-delta: judge-free pairs, the chosen answer from a stronger model and the rejected
one from a weaker model on the same prompt (Delta Learning, arXiv:2507.06187). No judge calls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from datamill import FakeModel, ModelSettings, Request
from datamill.cli import app, main
from datamill.models.base import Completion
from datamill.pipeline.graph import Pipeline
from datamill.recipes.loader import builtin_recipes, load_recipe
from datamill.tasks.delta import DeltaPair


def user_text(request: Request) -> str:
    return next(m["content"] for m in request.messages or [] if m["role"] == "user")


def on_models(p: Pipeline, **models: Any) -> Pipeline:
    """The recipe with each named model served by the given object (its sampling kept)."""
    p.models = {n: ModelSettings(spec=models[n], sampling=s.sampling) for n, s in p.models.items()}
    return p


def test_two_models_make_the_pair_and_no_judge_is_asked(tmp_path: Path) -> None:
    assert "preferences-delta" in builtin_recipes()
    strong = FakeModel(lambda r, i: f"A careful answer to '{user_text(r)}', in three clear steps.")
    weak = FakeModel(lambda r, i: "Dunno, maybe.")
    p = on_models(load_recipe("preferences-delta"), strong=strong, weak=weak)
    assert set(p.models) == {"strong", "weak"}
    result = p.run(tmp_path / "out", limit=4)
    assert len(strong.calls) == len(weak.calls) == 4  # one call each per prompt, nothing else
    assert [user_text(r) for r in strong.calls] == [user_text(r) for r in weak.calls]
    # the models' own settings reached them: strong 0.7 / 1024 tokens, weak 1.5 / 48
    assert {(r.temperature, r.max_tokens) for r in strong.calls} == {(0.7, 1024)}
    assert {(r.temperature, r.max_tokens) for r in weak.calls} == {(1.5, 48)}
    assert len(result.rows) == 4
    for row in result.rows:
        user = {"role": "user", "content": row["prompt"]}
        assert row["chosen"] == [
            user,
            {
                "role": "assistant",
                "content": f"A careful answer to '{row['prompt']}', in three clear steps.",
            },
        ]
        assert row["rejected"] == [user, {"role": "assistant", "content": "Dunno, maybe."}]
        assert row["score_chosen"] is None and row["score_rejected"] is None
        assert row["chosen_model"].startswith("strong (") and row["rejected_model"].startswith(
            "weak ("
        )
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["model_calls"] == 8
    assert {m for step in run["usage"].values() for m in step} == {"strong", "weak"}


def scripted(
    chosen: str | Completion, rejected: str | Completion, **params: Any
) -> list[dict[str, Any]]:
    """Run one prompt through delta_pair with scripted answers; the failure records."""
    p = Pipeline(
        [DeltaPair(**params)],
        source=[{"instruction": "Explain rain."}],
        models={"strong": FakeModel(lambda r, i: chosen), "weak": FakeModel(lambda r, i: rejected)},
    )
    result = p.run(cache=False)  # each case scripts the same prompt anew
    return [{"rows": len(result.rows)}, *({"reason": f["reason"]} for f in result.failures)]


TEN = "one two three four five six seven eight nine ten"


@pytest.mark.parametrize(
    ("chosen", "rejected", "reason"),
    [
        (Completion(TEN, finish_reason="length"), "short", "chosen truncated"),
        (TEN, f"{TEN} {TEN} more", "rejected much longer"),
        (TEN, f"  {TEN}\n", "identical responses"),
        ("   ", "short", "empty completion"),
    ],
)
def test_the_sanity_rules_drop_a_pair_with_its_reason(
    chosen: Any, rejected: str, reason: str
) -> None:
    assert scripted(chosen, rejected) == [{"rows": 0}, {"reason": reason}]


def test_a_cut_weak_answer_and_a_twice_as_long_one_are_fine_and_sanity_can_be_off() -> None:
    cut_weak = Completion("one two", finish_reason="length")
    assert scripted(TEN, cut_weak) == [{"rows": 1}]
    assert scripted(TEN, f"{TEN} {TEN}") == [{"rows": 1}]  # exactly 2×: kept
    assert scripted(TEN, f"{TEN} {TEN} more", max_length_ratio=3) == [{"rows": 1}]
    cut_strong = Completion(TEN, finish_reason="length")
    assert scripted(cut_strong, f"{TEN} {TEN} more", sanity=False) == [{"rows": 1}]
    assert scripted(TEN, TEN, sanity=False) == [{"rows": 0}, {"reason": "identical responses"}]


def test_a_weak_system_prompt_reaches_only_the_weak_model_and_not_the_pair() -> None:
    strong, weak = FakeModel(lambda r, i: "good answer"), FakeModel(lambda r, i: "bad answer")
    p = Pipeline(
        [DeltaPair(system_prompt="Be helpful.", weak_system_prompt="Answer carelessly.")],
        source=[{"instruction": "Explain rain."}],
        models={"strong": strong, "weak": weak},
    )
    row = p.run(cache=False).rows[0]
    assert strong.calls[0].messages[0] == {"role": "system", "content": "Be helpful."}
    assert weak.calls[0].messages[0] == {"role": "system", "content": "Answer carelessly."}
    assert row["chosen"][0] == row["rejected"][0] == {"role": "system", "content": "Be helpful."}


def test_named_models_on_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["run", "preferences-delta", "--model", "strong=fake", "--model", "weak=fake"]
    result = CliRunner().invoke(app, [*args, "--limit", "2", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert {n: m["backend"] for n, m in run["models"].items()} == {"strong": "fake", "weak": "fake"}
    assert run["models"]["weak"]["sampling"] == {"temperature": 1.5, "max_tokens": 48}
    assert run["model_calls"] == 4 and run["rows"] + run["failed_rows"] == 2
    assert {m for step in run["usage"].values() for m in step} == {"strong", "weak"}


@pytest.mark.parametrize(
    ("models", "problem"),
    [
        (["judge=fake"], "the recipe declares no model 'judge'; its models: strong, weak"),
        (["strong=fake", "strong=fake"], "names model 'strong' twice"),
        (["fake", "llamacpp"], "give one spec for every model, or NAME=SPEC per model"),
        (["weak="], "give a spec after '='"),
    ],
)
def test_a_bad_model_option_is_one_line(
    models: list[str], problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [a for m in models for a in ("--model", m)]
    with pytest.raises(SystemExit) as done:
        main(["run", "preferences-delta", *args, "-o", str(tmp_path / "o")])
    assert done.value.code != 0
    err = capsys.readouterr().err.strip()
    assert problem in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_one_spec_beside_named_ones_serves_the_others() -> None:
    p = load_recipe("preferences-delta", models={"weak": "fake"}, model="fake:other")
    assert {n: s.spec for n, s in p.models.items()} == {"strong": "fake:other", "weak": "fake"}
    assert p.models["strong"].sampling == {"temperature": 0.7, "max_tokens": 1024}


@pytest.mark.real
def test_preferences_delta_on_the_embedded_model_at_two_settings(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["run", "preferences-delta", "--model", "strong=llamacpp", "--model", "weak=llamacpp"]
    result = CliRunner().invoke(app, [*args, "--limit", "2", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output  # the strong budget lets answers end (was 0 rows)
    run = json.loads((out / "run.json").read_text())
    assert run["rows"] >= 1
    assert set(run["models"]) == {"strong", "weak"}
    assert {m for step in run["usage"].values() for m in step} == {"strong", "weak"}  # no judge
    assert run["model_calls"] == 4 and run["rows"] + run["failed_rows"] == 2

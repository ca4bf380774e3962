"""Recipes: YAML → pipeline, --set overrides, errors that point at file:line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamill.cli import main
from datamill.errors import ConfigError, PipelineError
from datamill.recipes.loader import builtin_recipes, load_recipe


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_every_builtin_recipe_loads_and_checks_its_columns() -> None:
    assert {"instructions-basic"} <= set(builtin_recipes())
    for name in builtin_recipes():
        p = load_recipe(name)
        assert p.name == name
        if p.source is not None and name != "deita":
            rows = p.source.load()
            p.check(p.source.columns(rows))


def test_set_overrides_steps_by_kind_and_name_and_top_level_fields() -> None:
    p = load_recipe(
        "instructions-basic",
        [
            "text_generation.temperature=0.1",
            "text_generation_2.max_tokens=9",
            "source.repeat=1",
            "models.default.temperature=0.5",
        ],
    )
    assert p.steps[0].temperature == 0.1  # type: ignore[attr-defined]
    assert p.steps[1].max_tokens == 9  # type: ignore[attr-defined]
    # the same steps through "steps.": by kind or name, or by position
    q = load_recipe(
        "instructions-basic",
        ["steps.text_generation_2.max_tokens=7", "steps.0.text_generation.seed=3"],
    )
    assert q.steps[1].max_tokens == 7 and q.steps[0].seed == 3  # type: ignore[attr-defined]
    for bad in ("steps.9.text_generation.seed=3", "steps.x=1"):
        with pytest.raises(ConfigError, match="is not a setting of this recipe"):
            load_recipe("instructions-basic", [bad])
    assert len(p.source.load()) == 5  # type: ignore[union-attr]
    assert p.models["default"].sampling == {"temperature": 0.5}


def test_unknown_parameter_names_file_line_step_and_allowed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: x\nsource:\n  rows: [{instruction: hi}]\nsteps:\n  - text_generation:\n      tempreture: 1\n",
    )
    with pytest.raises(ConfigError) as err:
        load_recipe(str(path))
    msg = str(err.value)
    assert msg.startswith(
        f"{path}:6: step 1 (text_generation): tempreture: unknown parameter (did you mean "
        "'temperature'?); allowed: "
    )
    assert "temperature" in msg


def test_unknown_step_and_missing_column(tmp_path: Path) -> None:
    path = write(
        tmp_path, "name: x\nsource:\n  rows: [{instruction: hi}]\nsteps:\n  - magic_step: {}\n"
    )
    with pytest.raises(
        ConfigError, match=r"unknown step 'magic_step'; known steps: .*text_generation"
    ):
        load_recipe(str(path))
    path = write(
        tmp_path, "name: x\nsource:\n  rows: [{prompt: hi}]\nsteps:\n  - text_generation: {}\n"
    )
    p = load_recipe(str(path))
    with pytest.raises(
        PipelineError,
        match=r"step 1 \(text_generation\) needs column 'instruction', but rows only have: prompt",
    ):
        p.check(["prompt"])


def test_cli_reports_one_line_and_exit_code_before_any_model_call(tmp_path: Path, capsys) -> None:
    path = write(
        tmp_path, "name: x\nsource:\n  rows: [{prompt: hi}]\nsteps:\n  - text_generation: {}\n"
    )
    with pytest.raises(SystemExit) as exc:
        main(
            ["run", str(path), "--model", "fake:never", "--output", str(tmp_path / "o"), "--quiet"]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: step 1 (text_generation) needs column 'instruction', but rows only have: prompt; add a rename step or set the step's column parameter"
    ]
    assert not (tmp_path / "o" / "run.json").exists()


def test_recipes_command_lists_builtins(capsys) -> None:
    main(["recipes"])
    assert "instructions-basic" in capsys.readouterr().out

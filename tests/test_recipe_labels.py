"""Error lines name a built-in recipe by its name (``built-in recipe 'mixture', line 41``), never
by the path it is installed at; a recipe file of the user's keeps ``PATH:LINE``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from datamill.cli import main
from datamill.errors import ConfigError
from datamill.recipe_label import builtin_folder, folder_label, recipe_label
from datamill.recipes.loader import builtin_recipes, load_recipe
from datamill.steps.paths import where_looked

INSTALLED = str(builtin_folder())


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["target_rows=6"], "built-in recipe 'mixture', line 41: mix: 6 rows cannot meet"),
        (
            ["text_generation.bogus=1"],
            "built-in recipe 'mixture', line 28: step 1 (text_generation): bogus: unknown parameter",
        ),
        (["source.repeat=0"], "built-in recipe 'mixture', line "),
    ],
)
def test_builtin_errors_name_the_recipe(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_recipe("mixture", overrides)
    message = str(err.value)
    assert message.startswith(expected), message
    assert INSTALLED not in message and "site-packages" not in message and ".yaml" not in message


def test_a_copy_of_a_builtin_keeps_its_path_and_line(tmp_path: Path) -> None:
    copy = tmp_path / "mixture.yaml"
    shutil.copy(builtin_recipes()["mixture"], copy)
    with pytest.raises(ConfigError) as err:
        load_recipe(str(copy), ["target_rows=6"])
    assert str(err.value).startswith(f"{copy}:41: mix: 6 rows cannot meet")
    assert recipe_label(copy) == str(copy)
    assert recipe_label(builtin_recipes()["mixture"]) == "built-in recipe 'mixture'"


def test_cli_line_for_a_builtin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "run",
        "mixture",
        "--model",
        "fake",
        "--set",
        "target_rows=6",
        "-o",
        str(tmp_path / "o"),
    ]
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    line = " ".join(capsys.readouterr().err.split())
    assert "error: built-in recipe 'mixture', line 41: mix:" in line and INSTALLED not in line


def test_where_a_path_was_looked_for_names_the_builtin_folder(tmp_path: Path) -> None:
    looked = where_looked("bench.jsonl", builtin_folder())
    assert looked.startswith(" (looked in the built-in recipes' folder and ")
    assert INSTALLED not in looked
    assert folder_label(tmp_path) == str(tmp_path)

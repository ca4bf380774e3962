"""Every path a recipe file names is found beside the recipe first, then in the working folder
(``datamill.steps.paths``): source files, benchmarks, schema files, GGUF tokenizers, model and
embedder paths, and ``module:function`` modules — whatever the working folder is."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from datamill import ConfigError
from datamill.cli import main
from datamill.io.sources import JsonlSource
from datamill.models.llamacpp import embedded_model_path
from datamill.recipes.loader import load_recipe


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A recipe folder with its files; the working folder is another, empty one."""
    here = tmp_path / "project" / "recipes"
    here.mkdir(parents=True)
    (here / "rows.jsonl").write_text(
        "".join(json.dumps({"instruction": f"question {i}", "n": i}) + "\n" for i in range(4))
    )
    (here / "bench.jsonl").write_text(json.dumps({"text": "question 2"}) + "\n")
    (here / "schema.json").write_text(json.dumps({"type": "object"}))
    (here / "recipe_checks_mod.py").write_text("def ok(row):\n    return True\n")
    (here / "model.gguf").symlink_to(embedded_model_path())
    (here / "st-model").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the recipe folder added is undone
    return here


def write(folder: Path, recipe: dict[str, Any]) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_every_kind_of_path_is_found_beside_the_recipe(layout: Path) -> None:
    recipe = {
        "name": "paths",
        "models": {"default": "llamacpp:model.gguf", "judge": {"spec": "transformers:st-model"}},
        "source": {"path": "rows.jsonl"},
        "steps": [
            {
                "decontaminate": {
                    "columns": ["instruction"],
                    "against": ["bench.jsonl"],
                    "n": 2,
                    "min_words": 2,
                }
            },
            {"verify_json": {"column": "instruction", "schema": "schema.json"}},
            {"verify_python": {"fn": "recipe_checks_mod:ok", "reads": ["instruction"]}},
            {
                "filter_length": {
                    "column": "instruction",
                    "max": 100,
                    "unit": "tokens",
                    "tokenizer": "model.gguf",
                }
            },
            {"dedup_embedding": {"embedder": "st:st-model"}},
        ],
    }
    pipeline = load_recipe(str(write(layout, recipe)))
    assert isinstance(pipeline.source, JsonlSource)
    assert pipeline.source.path == layout / "rows.jsonl"
    decon, schema, python, length, dedup = pipeline.steps
    assert decon.against[0].path == str(layout / "bench.jsonl")
    assert schema.schema_ == str(layout / "schema.json")
    assert python.function({"instruction": "x"}) is True
    assert length.tokenizer == str(layout / "model.gguf")
    assert dedup.embedder == f"st:{layout / 'st-model'}"
    assert pipeline.models["default"].spec == f"llamacpp:{layout / 'model.gguf'}"
    assert pipeline.models["judge"].spec == f"transformers:{layout / 'st-model'}"
    assert pipeline.recipe is not None and pipeline.recipe["source"] == {"path": "rows.jsonl"}


def test_a_path_only_the_working_folder_has_is_still_found(layout: Path) -> None:
    """``--set`` values are typed relative to the working folder; so are older recipes."""
    Path("mine.jsonl").write_text(json.dumps({"instruction": "q"}) + "\n")
    Path("bench2.jsonl").write_text(json.dumps({"text": "q"}) + "\n")
    recipe = {
        "name": "paths",
        "source": {"path": "rows.jsonl"},
        "steps": [{"decontaminate": {"columns": ["instruction"], "against": ["bench2.jsonl"]}}],
    }
    pipeline = load_recipe(str(write(layout, recipe)), ["source.path=mine.jsonl"])
    assert isinstance(pipeline.source, JsonlSource) and pipeline.source.path == Path("mine.jsonl")
    assert pipeline.steps[0].against[0].path == "bench2.jsonl"


def test_a_recipe_file_beats_the_working_folder_when_both_have_it(layout: Path) -> None:
    Path("rows.jsonl").write_text(json.dumps({"instruction": "the working folder's"}) + "\n")
    recipe = {
        "name": "p",
        "source": {"path": "rows.jsonl"},
        "steps": [{"keep": {"columns": ["instruction"]}}],
    }
    pipeline = load_recipe(str(write(layout, recipe)))
    assert pipeline.source is not None and pipeline.source.path == layout / "rows.jsonl"


def test_a_missing_benchmark_names_both_places_looked(layout: Path) -> None:
    recipe = {
        "name": "p",
        "source": {"path": "rows.jsonl"},
        "steps": [{"decontaminate": {"columns": ["instruction"], "against": ["nope.jsonl"]}}],
    }
    with pytest.raises(ConfigError) as info:
        load_recipe(str(write(layout, recipe)))
    message = str(info.value)
    assert "'nope.jsonl' does not exist" in message
    assert f"looked in {layout} and {Path.cwd()}" in message and "\n" not in message


def test_a_recipe_run_from_another_folder_decontaminates_with_its_own_benchmark(
    layout: Path,
) -> None:
    recipe = {
        "name": "p",
        "models": {"default": "fake"},
        "source": {"path": "rows.jsonl"},
        "steps": [
            {
                "decontaminate": {
                    "columns": ["instruction"],
                    "against": ["bench.jsonl"],
                    "n": 2,
                    "min_words": 2,
                }
            },
            {"text_generation": {"output": "response"}},
        ],
    }
    out = Path("out")
    main(["run", str(write(layout, recipe)), "-o", str(out), "-q"])
    assert json.loads((out / "run.json").read_text())["rows"] == 3

"""What a first-time user of the command line meets: every command that takes ``--model`` reads
``SPEC`` and ``NAME=SPEC`` alike; ``batch export`` writes a model name vLLM serves (or refuses a
local model without one); a provider's model without its API key is one line before any call;
no flag shows a value type in ``--help``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer.main

from datamill import FakeModel
from datamill.cli import app, main
from datamill.testing.batch_server import run_batch_file

TWO_MODELS = """\
name: twomodels
models:
  writer: llamacpp
  answerer: llamacpp
source:
  rows:
    - instruction: Write a question about rivers.
    - instruction: Write a question about mills.
steps:
  - text_generation: {output: question, model: writer}
  - text_generation: {template: "{{ question }}", output: answer, model: answerer}
"""

ONE_MODEL = """\
name: onemodel
models:
  default: llamacpp
source:
  rows:
    - instruction: Write a question about rivers.
    - instruction: Write a question about mills.
steps:
  - text_generation: {output: question}
"""


def recipe(folder: Path, text: str) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]


def exit_code(args: list[str]) -> int:
    """``datamill ARGS``'s exit code (main returns, without SystemExit, on success)."""
    try:
        main(args)
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def lines_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(t) for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]


# -- 1. --model: one parser for run, plan and batch export --------------------------------------
def model_commands(path: Path, out: Path) -> dict[str, list[str]]:
    cache = str(out / "c.sqlite")
    return {
        "run": ["run", str(path), "-o", str(out / "o"), "-q", "--cache", cache],
        "plan": ["plan", str(path), "-o", str(out / "o"), "--cache", cache],
        "batch export": [
            "batch",
            "export",
            str(path),
            "-o",
            str(out / "x.jsonl"),
            "--cache",
            cache,
        ],
    }


@pytest.mark.parametrize("command", ["run", "plan", "batch export"])
@pytest.mark.parametrize(
    ("models", "problem"),
    [
        (["judge=fake"], "the recipe declares no model 'judge'; its models: writer, answerer"),
        (["writer=fake", "writer=fake"], "--model names model 'writer' twice; give it once"),
        (["fake", "llamacpp"], "give one spec for every model, or NAME=SPEC per model"),
        (["writer="], "--model writer=: give a spec after '=', e.g. --model writer=llamacpp"),
    ],
)
def test_every_model_option_refuses_the_same_bad_values_in_one_line(
    command: str,
    models: list[str],
    problem: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = model_commands(recipe(tmp_path, TWO_MODELS), tmp_path)[command]
    assert exit_code([*args, *(a for m in models for a in ("--model", m))]) == 2
    [line] = errors(capsys)
    assert problem in line
    assert not (tmp_path / "o").exists() and not (tmp_path / "x.jsonl").exists()


def test_batch_export_takes_named_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = model_commands(recipe(tmp_path, TWO_MODELS), tmp_path)["batch export"]
    named = ["--model", "writer=fake:writer-model", "--model", "answerer=fake:answerer-model"]
    assert exit_code([*args, *named]) == 0
    first = lines_of(tmp_path / "x.jsonl")
    assert [line["body"]["model"] for line in first] == ["writer-model"] * 2  # type: ignore[index]
    assert "--model writer-model" in capsys.readouterr().out
    # answered as run_batch would, the next export writes the answerer's calls
    results = tmp_path / "results.jsonl"
    assert run_batch_file(FakeModel(), tmp_path / "x.jsonl", results, served="writer-model") == 2
    assert exit_code(["batch", "import", str(results), "--cache", str(tmp_path / "c.sqlite")]) == 0
    assert exit_code([*args, *named]) == 0
    second = lines_of(tmp_path / "x.jsonl")
    assert [line["body"]["model"] for line in second] == ["answerer-model"] * 2  # type: ignore[index]


def test_run_and_plan_take_named_models(tmp_path: Path) -> None:
    path = recipe(tmp_path, TWO_MODELS)
    commands = model_commands(path, tmp_path)
    named = ["--model", "writer=fake:w", "--model", "answerer=fake:a"]
    assert exit_code([*commands["plan"], *named, "--preview", "1"]) == 0
    assert exit_code([*commands["run"], *named]) == 0
    run = json.loads((tmp_path / "o" / "run.json").read_text(encoding="utf-8"))
    assert {n: m["backend"] for n, m in run["models"].items()} == {
        "writer": "fake",
        "answerer": "fake",
    }


# -- 2. batch export: the model name run_batch serves --------------------------------------------
def test_a_local_gguf_model_without_a_served_name_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = model_commands(recipe(tmp_path, ONE_MODEL), tmp_path)["batch export"]
    assert exit_code(args) == 2
    [line] = errors(capsys)
    assert line.startswith("error: model 'default' is a local llamacpp model (")
    assert ".gguf) that vLLM knows by no name: pass --served-model NAME" in line
    assert not (tmp_path / "x.jsonl").exists()


def test_the_served_name_is_the_request_lines_model_and_the_answers_reach_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = "HuggingFaceTB/SmolLM2-135M-Instruct"
    args = model_commands(recipe(tmp_path, ONE_MODEL), tmp_path)["batch export"]
    assert exit_code([*args, "--served-model", served]) == 0
    assert f"--model {served};" in capsys.readouterr().out
    calls = tmp_path / "x.jsonl"
    assert {line["body"]["model"] for line in lines_of(calls)} == {served}  # type: ignore[index]
    # the GGUF file's name is not served: vLLM refuses such lines (the fault this fixes)
    results = tmp_path / "results.jsonl"
    assert run_batch_file(FakeModel(), calls, results, served=served) == 2
    assert exit_code(["batch", "import", str(results), "--cache", str(tmp_path / "c.sqlite")]) == 0
    # the cache keys are the llamacpp model's own: the next export finds every call answered
    assert exit_code([*args, "--served-model", served]) == 0
    assert "nothing to export: the cache answers every call (2)" in capsys.readouterr().out


def test_run_batch_refuses_a_name_it_does_not_serve(tmp_path: Path) -> None:
    """The stand-in answers as vLLM does: a line for another model is a 404, not an answer."""
    args = model_commands(recipe(tmp_path, ONE_MODEL), tmp_path)["batch export"]
    assert exit_code([*args, "--served-model", "my-gguf"]) == 0
    results = tmp_path / "results.jsonl"
    assert run_batch_file(FakeModel(), tmp_path / "x.jsonl", results, served="other") == 0
    [first, _] = lines_of(results)
    assert first["error"] == {
        "message": "The model `my-gguf` does not exist.",
        "type": "NotFoundError",
        "code": 404,
    }


def test_served_model_per_recipe_model_and_its_bad_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = model_commands(recipe(tmp_path, TWO_MODELS), tmp_path)["batch export"]
    per_model = ["--served-model", "writer=org/writer", "--served-model", "answerer=org/answerer"]
    assert exit_code([*args, *per_model]) == 0
    assert {line["body"]["model"] for line in lines_of(tmp_path / "x.jsonl")} == {"org/writer"}  # type: ignore[index]
    capsys.readouterr()
    for bad, problem in [
        (["writer=org/writer"], "model 'answerer' is a local llamacpp model ("),
        (["judge=org/x"], "--served-model names model 'judge', which the recipe does not have; "
         "its models: writer, answerer"),
        (["org/a", "org/b"], "give one name for every model, or MODEL=NAME per model"),
        (["org/a", "writer=org/b"], "give one NAME for every model or MODEL=NAME per model, not both"),
        (["writer="], "--served-model writer=: give a name after '='"),
    ]:  # fmt: skip
        assert exit_code([*args, *(a for b in bad for a in ("--served-model", b))]) == 2
        [line] = errors(capsys)
        assert problem in line


# -- 3. a provider's model without its key -------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "env", "provider"),
    [
        ("openai:gpt-4o-mini", "OPENAI_API_KEY", "OpenAI"),
        ("openai:gpt-4o-mini@https://api.openai.com/v1", "OPENAI_API_KEY", "OpenAI"),
        ("anthropic:claude-haiku-4-5", "ANTHROPIC_API_KEY", "Anthropic"),
    ],
)
@pytest.mark.parametrize("command", ["run", "plan"])
@pytest.mark.parametrize("batch", [[], ["--batch"]])
def test_a_missing_api_key_is_one_line_before_any_call(
    spec: str,
    env: str,
    provider: str,
    command: str,
    batch: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(env, raising=False)
    args = model_commands(recipe(tmp_path, ONE_MODEL), tmp_path)[command]
    assert exit_code([*args, "--model", spec, *batch]) == 2
    assert errors(capsys) == [
        f"error: ${env} is not set: export your {provider} API key as {env} "
        "(or name another variable with api_key_env) before the run"
    ]


# -- 5. flags show no value type in --help -------------------------------------------------------
def command_paths() -> list[list[str]]:
    paths: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        paths.append(path)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return paths


def test_every_commands_help_shows_flags_without_a_type(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    paths = command_paths()
    assert ["batch", "export"] in paths and ["run"] in paths and len(paths) >= 12
    for path in paths:
        main([*path, "--help"])
        text = capsys.readouterr().out
        assert "--help" in text, path
        assert "<bool>" not in text, path
    main(["run", "--help"])
    text = capsys.readouterr().out
    # options that take a value still say what: the type column is there
    assert "<int>" in text and "SPEC|NAME=SPEC" in text
    quiet = next(line for line in text.splitlines() if "--quiet" in line)
    assert quiet.split(" -q ", 1)[1].split()[:2] == ["No", "progress"]


def test_a_run_the_cache_answers_needs_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The calls of an api.openai.com model go into the cache through batch export/import (no
    key, nothing sent); a run they answer whole needs no key, as it needs no live server."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    commands = model_commands(recipe(tmp_path, ONE_MODEL), tmp_path)
    spec = ["--model", "openai:gpt-4o-mini"]
    assert exit_code([*commands["batch export"], *spec]) == 0
    results = tmp_path / "results.jsonl"
    assert run_batch_file(FakeModel(), tmp_path / "x.jsonl", results, served="gpt-4o-mini") == 2
    assert exit_code(["batch", "import", str(results), "--cache", str(tmp_path / "c.sqlite")]) == 0
    assert exit_code([*commands["run"], *spec]) == 0
    run = json.loads((tmp_path / "o" / "run.json").read_text(encoding="utf-8"))
    assert (run["rows"], run["model_calls"], run["cache_hits"]) == (2, 0, 2)
    assert errors(capsys) == []


@pytest.mark.parametrize(
    ("spec", "env", "host"),
    [
        ("openai:gpt-4o-mini", "OPENAI_API_KEY", "api.openai.com"),
        ("anthropic:claude-haiku-4-5", "ANTHROPIC_API_KEY", "api.anthropic.com"),
    ],
)
def test_the_model_and_its_batch_api_refuse_to_open_without_the_key(
    spec: str, env: str, host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every place that opens a session to a provider's own host checks the key first; any
    other URL (a local server, a gateway) may need none."""
    import asyncio

    from datamill.errors import ConfigError
    from datamill.models.batch_api import batch_api_for
    from datamill.models.registry import load_model

    monkeypatch.delenv(env, raising=False)
    model = load_model(spec)
    api = batch_api_for(model)
    for opening in (model.start, api.open):
        with pytest.raises(ConfigError, match=rf"^\${env} is not set: export your "):
            asyncio.run(opening())
    assert getattr(model, "_session", None) is None and api._session is None  # type: ignore[attr-defined]
    monkeypatch.setenv(env, "sk-test")
    asyncio.run(api.open())  # with the key it opens (nothing is sent)
    asyncio.run(api.close())
    from datamill.models.keys import missing_key

    assert missing_key(f"https://{host}/v1", env) is None
    monkeypatch.delenv(env)
    assert missing_key("http://127.0.0.1:8000/v1", env) is None
    assert missing_key(f"https://{host.upper()}/v1", env) is not None

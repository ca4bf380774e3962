"""Every built-in recipe against a REAL OpenAI-compatible server: llama-cpp-python's own.

A session fixture starts ``python -m llama_cpp.server`` on 127.0.0.1 (a free port) with the
embedded SmolLM2-135M GGUF, waits for ``/v1/models`` and kills it at the end. That server refuses
``response_format: {"type": "json_schema"}`` (HTTP 500), ignores ``n`` and has no ``/props``, so
these tests check the negotiated structured-output form, the asking-again for samples and
Magpie's template error against the real thing, not against datamill's own fake server.
Outputs stay short (``--limit`` 1-2, small ``max_tokens``): about 3 minutes on an idle machine.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.real, pytest.mark.timeout(900)]

if importlib.util.find_spec("llama_cpp.server") is None:  # pragma: no cover - a dev extra
    pytest.skip(
        "llama_cpp.server is not installed: pip install 'llama-cpp-python[server]'",
        allow_module_level=True,
    )
try:
    import llama_cpp.server  # noqa: F401 - its own dependencies (fastapi, uvicorn...) too
except ImportError as exc:  # pragma: no cover
    pytest.skip(f"llama_cpp.server cannot be imported: {exc}", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a running llama-cpp-python server serving the embedded model."""
    from datamill.models.llamacpp import embedded_model_path

    port = _free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(embedded_model_path()),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "2048",
                "--n_threads",
                "2",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"llama_cpp.server exited ({proc.returncode}): {log.read_text()[-800:]}"
                )
            try:
                with urllib.request.urlopen(url + "/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not answer in 120 s: {log.read_text()[-800:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_recipe(
    recipe: str, url: str, out: Path, *extra: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any], str]:
    """``datamill run RECIPE`` against the server: (exit code, run.json, stderr).

    The server runs one request at a time and keeps generating for a client that gave up, so
    each model keeps few requests in flight and waits long for the first answer (a loaded test
    machine may take minutes for it): a give-up would leave the server busy for later tests.
    """
    from datamill.cli import main
    from datamill.recipes.loader import load_recipe

    patient: list[str] = []
    for name in load_recipe(recipe).models:
        patient += ["--set", f"models.{name}.first_byte_timeout=600"]
        patient += ["--set", f"models.{name}.max_concurrency=2"]
    code = 0
    try:
        main(
            ["run", recipe, "-q", "-o", str(out), "--model", f"openai:smol@{url}"]
            + patient
            + list(extra)
        )
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    run_json = out / "run.json"
    return code, (json.loads(run_json.read_text()) if run_json.exists() else {}), err


# (recipe, extra CLI arguments, the model names whose steps ask for JSON)
def short(step: str, tokens: int = 64, key: str = "max_tokens") -> list[str]:
    """``--set`` arguments: ``step`` stops at ``tokens`` and keeps what it wrote."""
    return ["--set", f"{step}.{key}={tokens}", "--set", f"{step}.truncated=keep"]


RECIPES = [
    ("instructions-basic", ["--limit", "1", *short("text_generation_2")], []),
    ("instructions-seeded", ["--limit", "1", *short("text_generation")], []),
    ("instructions-evolved", ["--limit", "1", *short("evol_instruct")], []),
    (
        "magpie",
        ["--limit", "2", "--set", "magpie.template=chatml"]
        + short("magpie", key="response_max_tokens"),
        [],
    ),
    (
        "magpie-chat",
        ["--limit", "1", "--set", "magpie.template=chatml", "--set", "magpie.n_turns=2"]
        + short("magpie", key="response_max_tokens"),
        [],
    ),
    ("preferences-basic", ["--limit", "1", *short("response_pool", 48)], ["judge"]),
    ("preferences-evolved", ["--limit", "1", *short("response_pool", 48)], ["judge"]),
    ("preferences-judged", ["--limit", "1", *short("response_pool", 48)], ["judge"]),
]


@pytest.mark.parametrize(("recipe", "extra", "judges"), RECIPES, ids=[r[0] for r in RECIPES])
def test_builtin_recipe_writes_rows_against_llama_cpp_python_server(
    real_server: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    recipe: str,
    extra: list[str],
    judges: list[str],
) -> None:
    code, run, err = run_recipe(recipe, real_server, tmp_path / "out", *extra, capsys=capsys)
    assert code == 0, err
    assert run["complete"] and run["model_calls"] > 0
    assert run["rows"] >= 1, run["failures"]
    for name in judges:  # json_schema refused (HTTP 500) → json_object + schema, no row lost
        facts = run["models"][name]
        assert facts["structured_output"] == "json_object+schema"
        assert "json_schema" in facts["structured_output_refused"]
    assert "form refused" not in run["failures"]
    print(f"{recipe}: {run['rows']} rows, {run['model_calls']} calls, failures {run['failures']}")


def test_deita_scores_an_sft_file_against_the_server(
    real_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sft = tmp_path / "sft.jsonl"
    pairs = [
        ("What is 2 + 2?", "2 + 2 is 4."),
        ("Name a primary colour.", "Red is a primary colour."),
        ("Translate 'hello' to French.", "'Hello' in French is 'bonjour'."),
    ]
    sft.write_text("".join(json.dumps({"instruction": q, "response": a}) + "\n" for q, a in pairs))
    code, run, err = run_recipe(
        "deita", real_server, tmp_path / "out", "--input", str(sft), "--limit", "3", capsys=capsys
    )
    assert code == 0, err
    assert run["rows"] >= 1, run["failures"]
    assert run["models"]["default"]["structured_output"] == "json_object+schema"
    card = (tmp_path / "out" / "README.md").read_text()
    assert "structured output json_object+schema" in card
    print(f"deita: {run['rows']} rows, failures {run['failures']}")


def test_magpie_template_auto_says_the_server_does_not_tell_its_template(
    real_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, run, err = run_recipe(
        "magpie", real_server, tmp_path / "out", "--limit", "1", capsys=capsys
    )
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert code != 0 and len(errors) == 1, err
    assert "cannot tell the chat format" in errors[0] and "template: chatml" in errors[0]


def test_a_sample_count_the_server_ignores_is_asked_again(real_server: str) -> None:
    import asyncio

    from datamill import Request
    from datamill.models.openai import OpenAIModel

    model = OpenAIModel("smol", real_server)

    async def go() -> list[Any]:
        try:
            return await model.generate(Request.chat("Say a colour.", n=2, max_tokens=8, seed=3))
        finally:
            await model.close()

    out = asyncio.run(go())
    assert len(out) == 2 and all(c.text for c in out)
    assert model.counters["attempts"] == 2  # one sample per answer: asked twice

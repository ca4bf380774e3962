"""Secrets: an API key comes only from the environment and is never written anywhere.

A key is planted in ``$OPENAI_API_KEY`` (and in a custom variable named by ``api_key_env``), a
real CLI run talks to a local OpenAI-compatible server that requires it (with injected faults, so
failure records and retries happen too), and then every file of the output folder, the cache
file (with its WAL) and the captured stdout/stderr are searched for the key. Error paths (a key
refused, a server that echoes the key back, a key written into the recipe, ``DATAMILL_DEBUG``
tracebacks) are searched the same way. The cache key must not depend on the API key either.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from datamill import FakeModel
from reliability_helpers import cli_run

pytest.importorskip("aiohttp")

from datamill.testing.server import Faults, serve_in_thread  # noqa: E402


def planted(tag: str) -> str:
    return f"sk-{tag}-{secrets.token_hex(16)}"


def recipe(folder: Path, url: str, options: str = "", rows: int = 12, max_retries: int = 2) -> Path:
    items = ", ".join(f"{{instruction: 'Question {i}?'}}" for i in range(rows))
    text = (
        "name: secret-test\n"
        "models:\n"
        f"  default: {{spec: 'openai:fake@{url}', max_retries: {max_retries}, backoff: 0, max_backoff: 0, probe_timeout: 5, timeout: 10{options}}}\n"
        f"source:\n  rows: [{items}]\n"
        "steps:\n"
        "  - text_generation: {output: answer, max_tokens: 40}\n"
        "  - format_sft: {instruction: instruction, response: answer}\n"
    )
    path = folder / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def leaks(
    key: str, *texts: str, folders: tuple[Path, ...] = (), files: tuple[Path, ...] = ()
) -> list[str]:
    """Where ``key`` (or its first 16 characters) appears: file paths or 'stdout/stderr #i'."""
    needles = [key.encode(), key[:16].encode()]
    found = []
    for i, text in enumerate(texts):
        if any(n.decode() in text for n in needles):
            found.append(f"captured output #{i}")
    paths = [p for f in folders for p in f.rglob("*") if p.is_file()] + [
        p for p in files if p.exists()
    ]
    for path in paths:
        data = path.read_bytes()
        if any(n in data for n in needles):
            found.append(str(path))
    return found


@pytest.fixture
def server_key() -> str:
    return planted("server")


@pytest.fixture
def server(server_key: str) -> Iterator[object]:
    faults = Faults(rate=0.3, kinds=("500", "429", "empty", "garbage"), seed=3, retry_after=0.0)
    with serve_in_thread(FakeModel(), api_key=server_key, faults=faults) as thread:
        yield thread


def cache_files(cache: Path) -> tuple[Path, ...]:
    return (cache, cache.with_name(cache.name + "-wal"), cache.with_name(cache.name + "-shm"))


def test_key_from_openai_api_key_is_written_nowhere(
    server: object, server_key: str, tmp_path: Path
) -> None:
    # no retries: injected faults become failure records (with the server's messages) to search too
    path = recipe(tmp_path, server.url, options=", empty_retries: 0", rows=16, max_retries=0)  # type: ignore[attr-defined]
    cache = tmp_path / "cache.sqlite"
    done = cli_run(
        ["run", str(path), "-o", "out", "--cache", str(cache)],
        cwd=tmp_path,
        env={"OPENAI_API_KEY": server_key},
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "out" / "run.json").read_text())
    assert summary["model_calls"] > 0 and summary["rows"] > 0
    assert server.stats.faults  # type: ignore[attr-defined]  # retries and failure records happened
    assert (tmp_path / "out" / "failures.jsonl").read_text().strip(), (
        "faults left records to search"
    )
    assert (
        leaks(
            server_key,
            done.stdout,
            done.stderr,
            folders=(tmp_path / "out",),
            files=cache_files(cache),
        )
        == []
    )
    assert leaks(server_key, folders=(tmp_path,)) == []  # nothing anywhere under the run's folder


def test_key_rotation_keeps_the_cache(server: object, server_key: str, tmp_path: Path) -> None:
    """Two keys, one server that accepts both in turn: the second run is served from the cache."""
    path = recipe(tmp_path, server.url, rows=4)  # type: ignore[attr-defined]
    cache = tmp_path / "cache.sqlite"
    first = cli_run(
        ["run", str(path), "-o", "a", "-q", "--cache", str(cache)],
        cwd=tmp_path,
        env={"OPENAI_API_KEY": server_key},
    )
    assert first.returncode == 0, first.stderr
    rotated = planted("rotated")
    server.server.api_key = rotated  # type: ignore[attr-defined]
    second = cli_run(
        ["run", str(path), "-o", "b", "-q", "--cache", str(cache)],
        cwd=tmp_path,
        env={"OPENAI_API_KEY": rotated},
    )
    assert second.returncode == 0, second.stderr
    a = json.loads((tmp_path / "a" / "run.json").read_text())
    b = json.loads((tmp_path / "b" / "run.json").read_text())
    assert a["model_calls"] > 0 and b["model_calls"] == 0 and b["cache_hits"] >= a["model_calls"]
    assert (
        leaks(server_key, folders=(tmp_path,)) == [] and leaks(rotated, folders=(tmp_path,)) == []
    )


def test_key_from_a_custom_variable_is_written_nowhere(
    server: object, server_key: str, tmp_path: Path
) -> None:
    decoy = planted("decoy")  # $OPENAI_API_KEY holds another key that must not be sent or written
    path = recipe(tmp_path, server.url, options=", api_key_env: MY_PROVIDER_KEY", rows=4)  # type: ignore[attr-defined]
    cache = tmp_path / "cache.sqlite"
    done = cli_run(
        ["run", str(path), "-o", "out", "-q", "--cache", str(cache)],
        cwd=tmp_path,
        env={"MY_PROVIDER_KEY": server_key, "OPENAI_API_KEY": decoy},
    )
    assert done.returncode == 0, done.stderr  # the server accepted the custom variable's key
    for key in (server_key, decoy):
        assert leaks(key, done.stdout, done.stderr, folders=(tmp_path,)) == []


def test_refused_key_fails_in_one_line_without_the_key(server: object, tmp_path: Path) -> None:
    wrong = planted("wrong")
    path = recipe(tmp_path, server.url, rows=2)  # type: ignore[attr-defined]
    for debug in ({}, {"DATAMILL_DEBUG": "1"}):
        env = {"OPENAI_API_KEY": wrong, **debug}
        proc = subprocess.run(
            [*_cli(), "run", str(path), "-o", "out", "-q", "--cache", str(tmp_path / "c.sqlite")],
            cwd=tmp_path,
            env={**_env(), **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode != 0
        if not debug:
            assert proc.returncode == 1
            assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
            assert "$OPENAI_API_KEY was refused" in proc.stderr
        assert leaks(wrong, proc.stdout, proc.stderr, folders=(tmp_path,)) == [], proc.stderr


def test_server_echoing_the_key_back_is_scrubbed(tmp_path: Path) -> None:
    """A server whose error message repeats the Authorization header (some do) leaks nothing."""
    from aiohttp import web

    key = planted("echo")

    async def models(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        return web.json_response(
            {
                "error": {
                    "message": f"Incorrect API key provided: {auth}",
                    "code": "invalid_api_key",
                }
            },
            status=401,
        )

    url, stop = _serve_app(
        [web.get("/v1/models", models), web.post("/v1/chat/completions", models)]
    )
    try:
        path = recipe(tmp_path, url, rows=2)
        done = cli_run(
            ["run", str(path), "-o", "out", "-q"], cwd=tmp_path, env={"OPENAI_API_KEY": key}
        )
    finally:
        stop()
    assert done.returncode == 1
    assert "401" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert leaks(key, done.stdout, done.stderr, folders=(tmp_path,)) == [], done.stderr


def test_key_written_into_the_recipe_is_refused_without_echoing_it(tmp_path: Path) -> None:
    key = planted("inline")
    path = recipe(tmp_path, "http://127.0.0.1:9/v1", options=f", api_key: {key}", rows=2)
    done = cli_run(["run", str(path), "-o", "out", "-q"], cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "unknown option 'api_key'" in done.stderr
    assert leaks(key, done.stdout, done.stderr, folders=(tmp_path / "out",)) == []
    via_set = cli_run(
        [
            "run",
            str(recipe(tmp_path, "http://127.0.0.1:9/v1", rows=2)),
            "-o",
            "out",
            "-q",
            "--set",
            f"models.default.api_key={key}",
        ],
        cwd=tmp_path,
    )
    assert via_set.returncode == 2 and "unknown option 'api_key'" in via_set.stderr
    assert leaks(key, via_set.stdout, via_set.stderr, folders=(tmp_path / "out",)) == []


# -- small helpers ---------------------------------------------------------------------------


def _cli() -> list[str]:
    import sys

    return [sys.executable, "-c", "from datamill.cli import main; main()"]


def _env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DATAMILL_DEBUG", "OPENAI_API_KEY")}
    env["DATAMILL_REPORT_EMBEDDINGS"] = "0"
    return env


def _serve_app(routes: list[object]) -> tuple[str, object]:
    """Serve an aiohttp app on 127.0.0.1 in a thread; return (base URL, stop)."""
    import asyncio

    from aiohttp import web

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, object] = {}

    async def start() -> None:
        app = web.Application()
        app.add_routes(routes)  # type: ignore[arg-type]
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["runner"] = runner
        box["port"] = runner.addresses[0][1]

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(box["runner"].cleanup())  # type: ignore[attr-defined]
        loop.close()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    ready.wait(30)

    def stop() -> None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)

    return f"http://127.0.0.1:{box['port']}/v1", stop


def test_secret_looking_option_never_reaches_the_dataset_card(tmp_path: Path) -> None:
    """A token option no backend takes is refused in one line that does not echo it; a recipe
    that carries one anyway (a Python pipeline's recipe) reaches the card as ``***``."""
    from datamill.io.sinks import redact

    key = planted("card")
    text = (
        "name: card\nmodels:\n"
        f"  default: {{spec: fake, hf_token: {key}}}\n"
        "source:\n  rows: [{instruction: a}]\nsteps:\n  - text_generation: {output: answer}\n"
    )
    (tmp_path / "r.yaml").write_text(text, encoding="utf-8")
    done = cli_run(["run", "r.yaml", "-o", "out", "-q"], cwd=tmp_path)
    assert done.returncode == 2 and "unknown option 'hf_token'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert leaks(key, done.stdout, done.stderr, folders=(tmp_path / "out",)) == []
    recipe = {"models": {"default": {"spec": "fake", "hf_token": key}}}
    assert redact(recipe)["models"]["default"] == {"spec": "fake", "hf_token": "***"}

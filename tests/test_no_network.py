"""No hidden network: datamill makes no request the user did not ask for.

Each check runs in a fresh Python process whose ``socket`` module is guarded before datamill is
imported: a connect to, or a name lookup of, anything but the loopback interface is recorded and
refused, and (for the import check) every socket created is recorded. The Hugging Face offline
variables the test session sets are removed, so the processes see what a user's shell gives.

- importing datamill and running ``datamill recipes`` creates no socket at all;
- every built-in recipe runs to the end on the fake model with the network blocked;
- one recipe runs on the real embedded model, with the quality report's embedder, likewise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from datamill.recipes.loader import builtin_recipes

GUARD = textwrap.dedent(
    """
    import atexit, json, os, socket
    LOG = os.environ["NET_GUARD_LOG"]
    EVENTS = []
    LOOPBACK = {"127.0.0.1", "::1", "localhost", "0.0.0.0", "", None}

    def _host(address):
        if isinstance(address, (str, bytes)):  # AF_UNIX path
            return None
        return address[0] if address else None

    _connect, _connect_ex, _init = socket.socket.connect, socket.socket.connect_ex, socket.socket.__init__

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and _host(address) not in LOOPBACK:
            EVENTS.append(["connect", str(address)])
            raise OSError(101, "network blocked by the test")
        return _connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and _host(address) not in LOOPBACK:
            EVENTS.append(["connect", str(address)])
            return 101
        return _connect_ex(self, address)

    def init(self, family=-1, type=-1, proto=-1, fileno=None):
        _init(self, family, type, proto, fileno)
        EVENTS.append(["socket", int(self.family)])

    _getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name not in LOOPBACK:
            EVENTS.append(["lookup", name])
            raise socket.gaierror(socket.EAI_NONAME, "name lookup blocked by the test")
        return _getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.socket.__init__ = connect, connect_ex, init
    socket.getaddrinfo = getaddrinfo

    @atexit.register
    def _dump():
        with open(LOG, "w") as fh:
            json.dump(EVENTS, fh)
    """
)


def run_guarded(
    body: str, tmp_path: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], list[list]]:
    log = tmp_path / "net.json"
    clean = {
        k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE") and k != "DATAMILL_DEBUG"
    }
    clean.update(
        {"NET_GUARD_LOG": str(log), "DATAMILL_CACHE": str(tmp_path / "cache.sqlite"), **(env or {})}
    )
    proc = subprocess.run(
        [sys.executable, "-c", GUARD + textwrap.dedent(body)],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    events = json.loads(log.read_text()) if log.exists() else None
    assert events is not None, proc.stderr
    return proc, events


def test_the_guard_catches_a_request(tmp_path: Path) -> None:
    """The guard itself works: a lookup and a connect to the outside are recorded and refused."""
    proc, events = run_guarded(
        """
        import socket
        try:
            socket.getaddrinfo("huggingface.co", 443)
        except OSError:
            pass
        s = socket.socket()
        try:
            s.connect(("93.184.216.34", 80))
        except OSError:
            print("refused")
        """,
        tmp_path,
    )
    assert proc.stdout.strip() == "refused"
    assert ["lookup", "huggingface.co"] in events and ["connect", "('93.184.216.34', 80)"] in events


def test_import_and_recipes_command_open_no_socket(tmp_path: Path) -> None:
    proc, events = run_guarded(
        """
        import datamill
        from datamill.cli import main
        try:
            main(["recipes"])
        except SystemExit as exc:
            assert not exc.code, exc.code
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "instructions-basic" in proc.stdout
    assert events == []  # not even a local socket


def test_every_builtin_recipe_runs_offline_on_the_fake_model(tmp_path: Path) -> None:
    import yaml

    recipes = builtin_recipes()
    # recipes that curate an existing dataset (no source of their own) read instructions-basic's output
    needs_input = [
        n
        for n, p in recipes.items()
        if "source" not in yaml.safe_load(p.read_text(encoding="utf-8"))
    ]
    names = sorted(recipes, key=lambda n: (n in needs_input, n != "instructions-basic", n))
    # the fake model's answers are no math: verification keeps (and marks) the rows it fails
    settings = {"reasoning-distill": ["--set", "verify_math.on_fail=keep"]}
    assert names[0] == "instructions-basic"
    proc, events = run_guarded(
        f"""
        import json
        from datamill.cli import main
        codes = {{}}
        for name in {names!r}:
            extra = ["-i", "out/instructions-basic"] if name in {needs_input!r} else []
            extra += {settings!r}.get(name, [])
            try:
                main(["run", name, "--model", "fake", "--limit", "3", "-o", "out/" + name, "-q", *extra])
                codes[name] = 0
            except SystemExit as exc:
                codes[name] = exc.code
        print(json.dumps(codes))
        """,
        tmp_path,
        env={
            "DATAMILL_REPORT_EMBEDDINGS": "0"
        },  # the report's embedder runs in the real-model test
    )
    assert proc.returncode == 0, proc.stderr
    codes = json.loads(proc.stdout.strip().splitlines()[-1])
    # the fake's pseudo-sentences rarely pass a verifier: a verified recipe may write no rows,
    # and then exits 1 with its run.json saying why (every candidate was checked)
    verified = {n for n in names if "verify_" in recipes[n].read_text(encoding="utf-8")}
    expected = {n: (codes[n] if n in verified and codes.get(n) == 1 else 0) for n in names}
    assert codes == expected, proc.stderr
    assert [e for e in events if e[0] != "socket"] == [], events
    for name in names:
        run = json.loads((tmp_path / "out" / name / "run.json").read_text())
        if codes[name] == 1:
            assert run["rows"] == 0 and run["failed_rows"] > 0, run


@pytest.mark.real
def test_a_recipe_on_the_embedded_model_runs_offline(tmp_path: Path) -> None:
    proc, events = run_guarded(
        """
        from datamill.cli import main
        main(["run", "instructions-basic", "--limit", "1", "-o", "out", "-q",
              "--set", "text_generation.max_tokens=8", "--set", "text_generation_2.max_tokens=8",
              "--set", "text_generation_2.truncated=keep"])
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert [e for e in events if e[0] != "socket"] == [], events
    summary = json.loads((tmp_path / "out" / "run.json").read_text())
    assert summary["models"]["default"]["backend"] == "llamacpp"
    assert summary["model_calls"] >= 1

"""Helpers for the reliability tests (crash safety, concurrency, secrets, no network): run the
real CLI in a subprocess, read a call cache while a run writes it, read a fake model's call log.

Not a test module (no ``test_`` prefix); imported by ``tests/test_crash_safety.py`` and friends.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DATA_FILE = Path("data") / "train-00000-of-00001.parquet"

#: Seconds after which a subprocess or a wait is taken to hang. A bound that fails a stuck test,
#: never a measurement: a loaded 2-core machine can take minutes for what takes a second idle.
HANG = 600


def cli(
    args: list[str], *, cwd: Path, env: dict[str, str] | None = None, **popen: Any
) -> subprocess.Popen[str]:
    """Start ``datamill ARGS`` in a fresh Python process (the real entry point)."""
    # the quality report's embedding model costs seconds per finished run and is not under test here
    full_env = {**os.environ, "DATAMILL_REPORT_EMBEDDINGS": "0", **(env or {})}
    full_env.pop("DATAMILL_DEBUG", None)
    return subprocess.Popen(
        [sys.executable, "-c", "from datamill.cli import main; main()", *args],
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def cli_run(
    args: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = HANG
) -> subprocess.CompletedProcess[str]:
    """Run ``datamill ARGS`` to the end; return its exit code and output."""
    proc = cli(args, cwd=cwd, env=env)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def cache_keys(path: Path) -> set[str]:
    """Keys stored in a call cache, read while another process may be writing it (0 if none yet)."""
    if not path.exists():
        return set()
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            return {k for (k,) in db.execute("SELECT key FROM calls")}
        finally:
            db.close()
    except sqlite3.OperationalError:  # created but no table yet
        return set()


def cache_count(path: Path) -> int:
    return len(cache_keys(path))


def integrity(path: Path) -> str:
    db = sqlite3.connect(path, timeout=30)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def key_of(identity: str, payload: str) -> str:
    """The cache key of a call, as ``pipeline.cache.call_key`` computes it, from a logged payload."""
    from datamill import Request
    from datamill.pipeline.cache import call_key

    return call_key(identity, Request(**json.loads(payload)))


def call_events(log: Path, identity: str = "fake:fake") -> list[dict[str, Any]]:
    """The fake model's call log (``call_log`` option): one dict per start/end, with its cache key."""
    if not log.exists():
        return []
    events = []
    for line in log.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        record["key"] = key_of(identity, record["payload"])
        events.append(record)
    return events


def wait_until(
    condition: Callable[[], bool],
    proc: subprocess.Popen[str] | None = None,
    timeout: float = HANG,
    poll: float = 0.005,
) -> bool:
    """Poll ``condition`` until it holds (True), or the process ends / time runs out (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc is not None and proc.poll() is not None:
            return condition()
        time.sleep(poll)
    raise TimeoutError("condition not reached")


def parquet_rows(folder: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(folder / DATA_FILE).to_pylist()


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()

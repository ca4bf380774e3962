"""Concurrency safety: runs sharing one call cache at the same time neither corrupt it nor each
other (SQLite WAL + busy timeout, one transaction per call); two runs writing the same output
folder are refused with one clear line (an ``flock`` on the folder's lock file)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from reliability_helpers import (
    HANG,
    cache_count,
    cache_keys,
    call_events,
    cli,
    cli_run,
    integrity,
    parquet_rows,
    wait_until,
)

ROWS = 30


def recipe(folder: Path, name: str, latency: float, log: str = "calls.log", steps: int = 2) -> Path:
    rows = ", ".join(f"{{instruction: 'Ask about thing {i}.'}}" for i in range(ROWS))
    step_lines = ["  - text_generation: {output: answer, truncated: keep}"]
    if steps > 1:
        step_lines.append(
            '  - text_generation: {template: "More on: {{ answer }}", output: more, truncated: keep}'
        )
    text = (
        f"name: {name}\nmodels:\n  default: {{spec: fake, latency: {latency}, max_concurrency: 4, call_log: {log}}}\n"
        f"source:\n  rows: [{rows}]\nsteps:\n" + "\n".join(step_lines) + "\n"
    )
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_two_runs_sharing_one_cache_at_once(tmp_path: Path) -> None:
    cache = tmp_path / "shared.sqlite"
    path = recipe(tmp_path, "same", latency=0.01)
    other = recipe(tmp_path, "other", latency=0.01, steps=1)  # overlaps the first step's calls
    procs = [
        cli(["run", str(path), "-o", "a", "-q", "--cache", str(cache)], cwd=tmp_path),
        cli(["run", str(path), "-o", "b", "-q", "--cache", str(cache)], cwd=tmp_path),
        cli(["run", str(other), "-o", "c", "-q", "--cache", str(cache)], cwd=tmp_path),
    ]
    results = [p.communicate(timeout=HANG) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    assert integrity(cache) == "ok"
    a, b, c = (parquet_rows(tmp_path / x) for x in "abc")
    assert a == b and len(a) == ROWS
    assert [r["answer"] for r in c] == [r["answer"] for r in a]  # same calls, same answers
    assert cache_count(cache) == 2 * ROWS  # each distinct call stored once
    # every call the three runs made is in the cache, and a fourth run makes none
    sent = {e["key"] for e in call_events(tmp_path / "calls.log") if e["event"] == "end"}
    assert sent == cache_keys(cache)
    again = cli_run(["run", str(path), "-o", "d", "-q", "--cache", str(cache)], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "d" / "run.json").read_text())["model_calls"] == 0


WRITER = textwrap.dedent(
    """
    import sys
    from datamill import CallCache, Completion
    cache = CallCache(sys.argv[1])
    worker = int(sys.argv[2])
    for i in range(300):
        key = f"k{(i * 7 + worker) % 400}"          # keys overlap between writers
        cache.put(key, [Completion(text=f"{key}-a"), Completion(text=f"{key}-b")])
        got = cache.get(key, 2)
        assert got is not None and [c.text for c in got] == [f"{key}-a", f"{key}-b"], got
    cache.close()
    """
)


def test_many_processes_writing_one_cache_file(tmp_path: Path) -> None:
    """Four processes open a brand-new cache file at once and write overlapping keys: no
    'database is locked', no lost or torn entries (all samples of a call or none)."""
    path = tmp_path / "c.sqlite"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(w)], stderr=subprocess.PIPE, text=True
        )
        for w in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=HANG)
        assert p.returncode == 0, err
    assert integrity(path) == "ok"
    import sqlite3

    db = sqlite3.connect(path)
    per_key = db.execute("SELECT key, COUNT(*) FROM calls GROUP BY key").fetchall()
    db.close()
    expected = {f"k{(i * 7 + w) % 400}" for w in range(4) for i in range(300)}
    assert {k for k, _ in per_key} == expected
    assert all(n == 2 for _, n in per_key)


def test_second_run_into_the_same_folder_is_refused(tmp_path: Path) -> None:
    # the first run's calls take an hour: it holds the folder for the whole test whatever the
    # load, instead of racing the second run's start-up (no time is measured)
    path = recipe(tmp_path, "slow", latency=3600, log="a.log")
    cache = tmp_path / "cache.sqlite"
    first = cli(["run", str(path), "-o", "out", "-q", "--cache", str(cache)], cwd=tmp_path)
    try:
        wait_until(  # it holds the folder and is calling the model
            lambda: any(e["event"] == "start" for e in call_events(tmp_path / "a.log")), first
        )
        second = cli_run(
            [
                "run",
                str(path),
                "-o",
                "out",
                "-q",
                "--cache",
                str(cache),
                "--set",
                "models.default.call_log=b.log",
            ],
            cwd=tmp_path,
        )
        assert second.returncode == 1
        assert (
            second.stderr
            == f"error: another datamill run (pid {first.pid}) is writing to out; wait for it or choose another --output\n"
        )
        assert not (tmp_path / "b.log").exists()  # refused before any model call
        assert first.poll() is None  # the first run was not disturbed: still calling the model
        assert (tmp_path / "out" / ".datamill.lock").read_text() == str(first.pid)
    finally:
        first.send_signal(signal.SIGINT)  # stopped by us; its calls are cancelled
        _, err = first.communicate(timeout=HANG)
    assert first.returncode == 130, err
    # once it is gone, the folder is free again: the same command, with fast calls, completes
    third = cli_run(
        [
            "run",
            str(path),
            "-o",
            "out",
            "-q",
            "--cache",
            str(cache),
            "--set",
            "models.default.latency=0",
        ],
        cwd=tmp_path,
    )
    assert third.returncode == 0, third.stderr
    assert len(parquet_rows(tmp_path / "out")) == ROWS


def test_two_runs_started_together_on_one_folder_one_wins(tmp_path: Path) -> None:
    """Started at the same instant, exactly one run gets the folder; the other is refused."""
    path = recipe(tmp_path, "forever", latency=3600)  # never ends by itself
    args = ["run", str(path), "-o", "out", "-q", "--cache", str(tmp_path / "c.sqlite")]
    procs = [cli(args, cwd=tmp_path), cli(args, cwd=tmp_path)]
    try:
        wait_until(lambda: any(p.poll() is not None for p in procs), timeout=HANG)
        loser = next(p for p in procs if p.poll() is not None)
        winner = next(p for p in procs if p is not loser)
        _, err = loser.communicate(timeout=HANG)
        assert loser.returncode == 1
        assert (
            err
            == f"error: another datamill run (pid {winner.pid}) is writing to out; wait for it or choose another --output\n"
        )
        assert winner.poll() is None  # still running, undisturbed
        assert (tmp_path / "out" / ".datamill.lock").read_text() == str(winner.pid)
        starts = (
            {e["pid"] for e in call_events(tmp_path / "calls.log") if e["event"] == "start"}
            if (tmp_path / "calls.log").exists()
            else set()
        )
        assert loser.pid not in starts
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                p.communicate(timeout=HANG)

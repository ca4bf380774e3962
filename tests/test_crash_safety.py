"""Crash safety: SIGKILL a real CLI run at many points, run the same command again, and get
exactly the rows of a clean run, with no finished (cached) model call ever sent twice and no
half-written output passing as the dataset. Ctrl-C and SIGTERM stop promptly and cleanly.

The runs use the fake model in a subprocess with latency and a call log (``call_log``): every
call start/end is a line with its payload, so calls can be counted across killed attempts and
matched to cache keys. Kill points are chosen by watching the cache's row count grow.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from reliability_helpers import (
    DATA_FILE,
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

ROWS = 40
STEPS = 3
CALLS = ROWS * STEPS
CONCURRENCY = 3


def write_recipe(folder: Path, call_log: Path, latency: float = 0.03) -> Path:
    rows = "\n".join(
        f"    - instruction: Write question {i} about topic {i % 7}." for i in range(ROWS)
    )
    text = f"""\
name: crash
models:
  default: {{spec: fake, latency: {latency}, max_concurrency: {CONCURRENCY}, call_log: {call_log}}}
source:
  rows:
{rows}
steps:
  - text_generation: {{output: question, truncated: keep}}
  - text_generation: {{template: "{{{{ question }}}}", output: answer, truncated: keep}}
  - text_generation: {{template: "Improve: {{{{ answer }}}}", output: better, truncated: keep}}
  - format_sft: {{instruction: question, response: better}}
"""
    path = folder / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def check_output_folder(out: Path, complete_sets: list[list[dict[str, Any]]]) -> str:
    """After a kill the folder holds nothing that passes as output, or a complete, consistent set.

    Returns a word for what was found (for the failure message of the caller)."""
    data = out / DATA_FILE
    run_json = out / "run.json"
    visible = (
        sorted(p.name for p in (out / "data").glob("train-*.parquet"))
        if (out / "data").exists()
        else []
    )
    assert visible in ([], [DATA_FILE.name]), (
        visible
    )  # temporaries are hidden, never train-*.parquet
    if data.exists():
        rows = parquet_rows(out)  # never half-written: it always reads
        assert rows in complete_sets, (
            "the data file is neither the previous nor the final complete output"
        )
    if run_json.exists():
        summary = json.loads(run_json.read_text())
        assert summary["complete"] is True
        assert data.exists()
        rows = parquet_rows(out)
        assert summary["rows"] == len(rows)
        assert (out / "README.md").exists() and (out / "failures.jsonl").exists()
        return "complete"
    return "data without run.json" if data.exists() else "empty"


def test_sigkill_at_many_points_then_rerun_gives_the_clean_rows(tmp_path: Path) -> None:
    # 1. a clean run, never interrupted: the rows and the calls to expect
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    recipe = write_recipe(clean_dir, clean_dir / "calls.log", latency=0.0)
    done = cli_run(
        ["run", str(recipe), "-o", "out", "-q", "--cache", "cache.sqlite"], cwd=clean_dir
    )
    assert done.returncode == 0, done.stderr
    clean_rows = parquet_rows(clean_dir / "out")
    clean_keys = {e["key"] for e in call_events(clean_dir / "calls.log") if e["event"] == "start"}
    assert len(clean_rows) == ROWS and len(clean_keys) == CALLS

    # 2. a previous complete output in the folder (first 5 rows), then the full command, killed again and again
    work = tmp_path / "work"
    work.mkdir()
    log = work / "calls.log"
    cache = work / "cache.sqlite"
    # calls end in waves of CONCURRENCY every 0.1 s, so a kill lands within a few calls of its
    # target even when this process is slow to see the count
    recipe = write_recipe(work, log, latency=0.1)
    args = ["run", str(recipe), "-o", "out", "-q", "--cache", str(cache)]
    first = cli_run(args + ["--limit", "5"], cwd=work)
    assert first.returncode == 0, first.stderr
    previous_rows = parquet_rows(work / "out")
    assert previous_rows == clean_rows[:5]

    targets = [0, 16, 20, 27, 35, 46, 58, 70, 83, 95, 104, 112, CALLS]
    attempts: list[dict[str, Any]] = []
    states: list[str] = []
    for target in targets:
        before = cache_keys(cache)
        proc = cli(args, cwd=work)
        if target:  # at least one call past what the last attempt left: this kill lands mid-run
            target = max(target, len(before) + 1)
            wait_until(lambda t=target: cache_count(cache) >= t, proc, timeout=HANG)  # type: ignore[misc]
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=HANG)
        after = cache_keys(cache)
        attempts.append({"pid": proc.pid, "before": before, "after": after})
        assert integrity(cache) == "ok"
        assert before <= after  # nothing committed was lost
        states.append(check_output_folder(work / "out", [previous_rows, clean_rows]))
        if proc.returncode == 0:  # it finished before the kill landed
            break
    assert sum(1 for a in attempts if a["after"] != a["before"]) >= 10, (
        "fewer than 10 kills landed mid-run"
    )
    assert (
        "complete" in states
    )  # the previous complete output stayed readable while runs were killed

    # 3. the same command again, to the end
    final = cli(args, cwd=work)
    out, err = final.communicate(timeout=HANG)
    assert final.returncode == 0, err
    assert parquet_rows(work / "out") == clean_rows  # exactly the clean rows: none lost, none twice
    summary = json.loads((work / "out" / "run.json").read_text())
    assert summary["rows"] == ROWS and summary["complete"] is True
    before_final = attempts[-1]["after"]
    assert summary["model_calls"] == CALLS - len(before_final)
    assert summary["model_calls"] + summary["cache_hits"] >= CALLS
    assert not (work / "out" / ".datamill.lock").exists()
    assert not [p for p in (work / "out").rglob(".*tmp-*")], (
        "temporaries of killed runs are cleaned up"
    )

    # 4. calls, across every attempt
    events = call_events(log)
    starts: dict[int, set[str]] = {}
    ends: dict[int, set[str]] = {}
    for e in events:
        (starts if e["event"] == "start" else ends).setdefault(e["pid"], set()).add(e["key"])
    for a in attempts + [
        {"pid": final.pid, "before": attempts[-1]["after"], "after": cache_keys(cache)}
    ]:
        sent = starts.get(a["pid"], set())
        assert not sent & a["before"], "a call already in the cache was sent again"
        finished_not_saved = ends.get(a["pid"], set()) - a["after"]
        assert len(finished_not_saved) <= CONCURRENCY  # only calls caught between return and commit
    all_sent = set().union(*starts.values())
    assert all_sent == clean_keys  # the same calls as the clean run, none other
    assert cache_keys(cache) == clean_keys


def test_a_killed_first_run_leaves_no_output_that_passes_as_a_dataset(tmp_path: Path) -> None:
    """Killed before it finishes, a fresh folder holds no data file and no run.json; the lock
    dies with the process so the next run needs no clean-up."""
    recipe = write_recipe(tmp_path, tmp_path / "calls.log", latency=0.05)
    # the last step's calls take an hour: the run cannot finish before the kill, however slowly
    # this process sees the cache grow
    text = recipe.read_text(encoding="utf-8")
    default = next(line for line in text.splitlines() if line.startswith("  default:"))
    text = text.replace(
        default,
        default
        + "\n"
        + default.replace("default:", "slow:", 1).replace("latency: 0.05", "latency: 3600"),
    )
    text = text.replace(
        'text_generation: {template: "Improve:',
        'text_generation: {model: slow, template: "Improve:',
    )
    recipe.write_text(text, encoding="utf-8")
    cache = tmp_path / "cache.sqlite"
    args = ["run", str(recipe), "-o", "out", "-q", "--cache", str(cache)]
    proc = cli(args, cwd=tmp_path)
    wait_until(lambda: cache_count(cache) >= 30, proc, timeout=HANG)
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=HANG)
    out = tmp_path / "out"
    assert not (out / DATA_FILE).exists() and not (out / "run.json").exists()
    assert (out / ".datamill.lock").exists()  # left behind, but held by no one
    again = cli_run(args + ["--set", "models.slow.latency=0"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(parquet_rows(out)) == ROWS


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_stops_promptly_keeps_the_cache_and_says_how_to_resume(
    sig: signal.Signals, tmp_path: Path
) -> None:
    # calls take an hour each: the run can only end at all by cancelling the calls in flight, so
    # its ending proves that, whatever the load (no time is measured; the timeout bounds a hang)
    recipe = write_recipe(tmp_path, tmp_path / "calls.log", latency=0.02)
    cache = tmp_path / "cache.sqlite"
    slow = tmp_path / "slow.yaml"
    slow.write_text(recipe.read_text().replace("latency: 0.02", "latency: 3600"), encoding="utf-8")
    fast_args = ["run", str(recipe), "-o", "out", "-q", "--cache", str(cache), "--limit", "2"]
    assert cli_run(fast_args, cwd=tmp_path).returncode == 0  # 6 calls cached
    args = ["run", str(slow), "-o", "out", "-q", "--cache", str(cache)]
    proc = cli(args, cwd=tmp_path)
    wait_until(
        lambda: (
            sum(1 for e in call_events(tmp_path / "calls.log") if e["event"] == "start")
            >= 6 + CONCURRENCY
        ),
        proc,
    )
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=HANG)  # a bound on a hang, far less than one call's hour
    assert proc.returncode == 130
    assert err.strip() == (
        "interrupted: every finished model call is saved in the cache; to resume, run the same command again: "
        f"datamill run {slow} -o out -q --cache {cache}"
    )
    events = call_events(tmp_path / "calls.log")
    in_flight = [e for e in events if e["event"] == "start" and e["pid"] == proc.pid]
    assert len(in_flight) == CONCURRENCY and not [
        e for e in events if e["event"] == "end" and e["pid"] == proc.pid
    ]
    assert integrity(cache) == "ok" and cache_count(cache) == 6
    # the previous complete output is untouched, the folder is unlocked and holds no temporaries
    assert json.loads((tmp_path / "out" / "run.json").read_text())["rows"] == 2
    left = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"README.md", "data", "failures.jsonl", "run.json"} <= left
    assert not [n for n in left if n.startswith(".")], left  # no lock file, no temporaries


@pytest.mark.real
def test_sigkill_of_an_embedded_model_run_then_rerun(tmp_path: Path) -> None:
    """The same on the real embedded model, killed at two points (short: 4 rows, 2 steps, 12 tokens).

    A real model's text depends on what else shares its batch, so instead of a clean run's rows
    the check is that every completion cached before the last attempt is used as it was, only the
    missing calls are made, and a further run makes no call and gives the same rows."""
    text = """\
name: crash-real
models:
  default: {spec: llamacpp, n_ctx: 512, max_concurrency: 2}
source:
  rows: [{instruction: Name a fruit.}, {instruction: Name a colour.}, {instruction: Name a city.}, {instruction: Name a tool.}]
steps:
  - text_generation: {output: answer, max_tokens: 12, truncated: keep}
  - text_generation: {template: "Say this louder: {{ answer }}", output: loud, max_tokens: 12, truncated: keep}
"""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text, encoding="utf-8")
    cache = tmp_path / "cache.sqlite"
    args = ["run", str(recipe), "-o", "out", "-q", "--cache", str(cache)]
    for target in (2, 5):
        proc = cli(args, cwd=tmp_path)
        wait_until(lambda t=target: cache_count(cache) >= t, proc, timeout=HANG)  # type: ignore[misc]
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=HANG)
        assert integrity(cache) == "ok"
        assert not (tmp_path / "out" / "run.json").exists()
    saved = cache_texts(cache)
    assert 5 <= len(saved) < 8
    final = cli_run(args, cwd=tmp_path, timeout=HANG)
    assert final.returncode == 0, final.stderr
    summary = json.loads((tmp_path / "out" / "run.json").read_text())
    assert summary["model_calls"] == 8 - len(saved)  # only the calls not cached before
    rows = parquet_rows(tmp_path / "out")
    assert len(rows) == 4
    used = {r[c] for r in rows for c in ("answer", "loud")}
    assert {t.strip() for t in saved} <= used  # each saved completion went into the rows as it was
    again = cli_run(args, cwd=tmp_path, timeout=HANG)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "out" / "run.json").read_text())["model_calls"] == 0
    assert parquet_rows(tmp_path / "out") == rows


def cache_texts(path: Path) -> list[str]:
    import sqlite3

    db = sqlite3.connect(path)
    try:
        return [t for (t,) in db.execute("SELECT text FROM calls")]
    finally:
        db.close()

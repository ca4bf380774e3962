"""The call cache under faults: unusable or foreign files, a full disk, glitches of the server,
a dead server on a fully cached re-run, and several runs sharing one cache at once."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from datamill import (
    CacheError,
    CallCache,
    Completion,
    DatamillError,
    FakeModel,
    Model,
    Pipeline,
    Request,
    TextGeneration,
)
from datamill.cli import main
from datamill.errors import ModelUnavailable
from datamill.pipeline.cache import call_key, servable
from datamill.pipeline.runner import ModelHandle
from datamill.pipeline.stats import Stats

ROWS = 6


def pipeline(model: Model, rows: int = ROWS) -> Pipeline:
    return Pipeline(
        [
            TextGeneration(output="question", truncated="keep"),
            TextGeneration(template="{{ question }}", output="answer", truncated="keep"),
        ],
        source=[{"instruction": f"write about subject {i}"} for i in range(rows)],
        models={"default": model},
    )


def recipe(folder: Path, spec: str = "fake", rows: int = ROWS) -> Path:
    lines = "\n".join(f"    - instruction: Tell me about item {i}." for i in range(rows))
    path = folder / "recipe.yaml"
    path.write_text(
        f"""\
name: cachefaults
models:
  default: {{spec: "{spec}"}}
source:
  rows:
{lines}
steps:
  - text_generation: {{output: answer, truncated: keep}}
""",
        encoding="utf-8",
    )
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- unusable and foreign cache files ----------------------------------------------------------
def make_folder(tmp: Path) -> Path:
    path = tmp / "a-folder"
    path.mkdir()
    return path


def make_random_bytes(tmp: Path) -> Path:
    path = tmp / "random.sqlite"
    path.write_bytes(bytes((i * 7919 + 13) % 251 for i in range(8192)))
    return path


def make_under_a_file(tmp: Path) -> Path:
    blocker = tmp / "plain-file"
    blocker.write_text("not a folder", encoding="utf-8")
    return blocker / "sub" / "calls.sqlite"


def make_other_program_db(tmp: Path) -> Path:
    path = tmp / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    db.execute("INSERT INTO invoices VALUES (1, 9.5)")
    db.commit()
    db.close()
    return path


def make_calls_of_another_shape(tmp: Path) -> Path:
    path = tmp / "shape.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE calls (id INTEGER PRIMARY KEY, url TEXT, status INTEGER)")
    db.execute("INSERT INTO calls VALUES (1, 'http://x', 200)")
    db.commit()
    db.close()
    return path


def make_newer_format(tmp: Path) -> Path:
    path = tmp / "newer.sqlite"
    CallCache(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE datamill_meta SET value = '99' WHERE name = 'format'")
    db.commit()
    db.close()
    return path


UNUSABLE = {
    "folder": (make_folder, "is a folder"),
    "random bytes": (make_random_bytes, "cannot use"),
    "under a file": (make_under_a_file, "cannot create the folder"),
    "other program": (make_other_program_db, "another program's SQLite database"),
    "calls of another shape": (make_calls_of_another_shape, "not a datamill call cache"),
    "newer format": (make_newer_format, "newer datamill"),
}


class Recording(FakeModel):
    """A fake model that records whether it was started and closed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.events: list[str] = []

    async def start(self) -> None:
        self.events.append("start")

    async def close(self) -> None:
        self.events.append("close")


@pytest.mark.parametrize("kind", list(UNUSABLE))
def test_an_unusable_cache_is_one_datamill_error_before_any_model_starts(
    kind: str, tmp_path: Path
) -> None:
    make, words = UNUSABLE[kind]
    path = make(tmp_path)
    before = digest(path) if path.is_file() else None
    with pytest.raises(CacheError) as err:
        CallCache(path)
    message = str(err.value)
    assert str(path) in message and words in message and "--no-cache" in message
    assert "\n" not in message
    model = Recording()
    with pytest.raises(CacheError):
        pipeline(model).run(tmp_path / "out", cache=path)
    assert model.events == [] and model.calls == []  # no model built, started or called
    assert not (tmp_path / "out" / "run.json").exists()
    if before is not None:  # a file that is not ours is left exactly as it was
        assert digest(path) == before
    assert isinstance(err.value, DatamillError)


@pytest.mark.parametrize("how", ["--cache", "DATAMILL_CACHE"])
@pytest.mark.parametrize("kind", ["folder", "random bytes", "under a file", "other program"])
def test_cli_says_one_line_for_an_unusable_cache(
    kind: str,
    how: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = UNUSABLE[kind][0](tmp_path)
    args = ["run", str(recipe(tmp_path)), "-o", str(tmp_path / "out"), "-q"]
    if how == "--cache":
        args += ["--cache", str(path)]
    else:
        monkeypatch.setenv("DATAMILL_CACHE", str(path))
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code not in (0, None)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and "--no-cache" in err and "Traceback" not in err


def test_an_old_datamill_cache_without_meta_is_still_used(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE calls (key TEXT NOT NULL, idx INTEGER NOT NULL, text TEXT NOT NULL, "
        "finish_reason TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, "
        "completion_tokens INTEGER NOT NULL, created REAL NOT NULL, PRIMARY KEY (key, idx)) "
        "WITHOUT ROWID"
    )
    db.execute("INSERT INTO calls VALUES ('k', 0, 'kept answer', 'stop', 1, 2, 0)")
    db.commit()
    db.close()
    cache = CallCache(path)
    assert cache.get("k", 1) == [Completion("kept answer", "stop", 1, 2, cached=True)]
    cache.close()


# -- a full disk under the cache ---------------------------------------------------------------
class FullAfter:
    """Stands in for the cache's SQLite connection: the write of call number ``allowed + 1``
    fails as SQLite fails on a full disk. Records how many model calls had started then."""

    def __init__(self, db: sqlite3.Connection, allowed: int, model: FakeModel) -> None:
        self.db = db
        self.allowed = allowed
        self.model = model
        self.calls_at_failure: int | None = None

    def executemany(self, sql: str, values: Any) -> sqlite3.Cursor:
        if sql.startswith("INSERT INTO calls"):
            if self.allowed == 0:
                if self.calls_at_failure is None:
                    self.calls_at_failure = len(self.model.calls)
                raise sqlite3.OperationalError("database or disk is full")
            self.allowed -= 1
        return self.db.executemany(sql, values)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def test_a_failed_cache_write_stops_the_run_and_pays_for_no_further_call(tmp_path: Path) -> None:
    model = FakeModel(latency=0.01, max_concurrency=4)
    cache = CallCache(tmp_path / "calls.sqlite")
    full = FullAfter(cache._db, allowed=4, model=model)
    cache._db = full  # type: ignore[assignment]
    with pytest.raises(CacheError) as err:
        pipeline(model, rows=40).run(tmp_path / "out", cache=cache)
    message = str(err.value)
    assert "\n" not in message and str(cache.path) in message
    assert "4 calls it finished are saved" in message and "--cache" in message
    assert full.calls_at_failure is not None
    assert len(model.calls) == full.calls_at_failure  # not one call started after the failure
    assert not (tmp_path / "out" / "run.json").exists()
    cache._db = full.db  # type: ignore[assignment]
    assert len(cache) == 4
    with pytest.raises(CacheError):  # a broken cache refuses every later call
        cache.put("another", [Completion("text")])
    cache.close()


def test_cli_a_full_cache_disk_is_one_line_and_a_failing_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_put = CallCache.put
    done: list[int] = []

    def put(self: CallCache, key: str, completions: list[Completion]) -> None:
        if len(done) == 2:
            raise self._fail("write to", sqlite3.OperationalError("database or disk is full"))
        real_put(self, key, completions)
        done.append(1)

    monkeypatch.setattr(CallCache, "put", put)
    cache = tmp_path / "calls.sqlite"
    args = ["run", str(recipe(tmp_path)), "-o", str(tmp_path / "out"), "-q", "--cache", str(cache)]
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "database or disk is full" in err
    assert "2 calls it finished are saved" in err


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def test_a_really_full_disk_under_the_cache(tmp_path: Path) -> None:
    disk = tmp_path / "small"
    if os.geteuid() != 0 or not _mount_tmpfs(disk, "160k"):
        pytest.skip("cannot mount a small tmpfs here")
    try:
        model = FakeModel(lambda r, i: "word " * 400, max_concurrency=2)
        with pytest.raises(CacheError) as err:
            pipeline(model, rows=200).run(None, cache=disk / "calls.sqlite")
        assert "full" in str(err.value)
        paid = len(model.calls)
        check = sqlite3.connect(disk / "calls.sqlite")
        stored = check.execute("SELECT COUNT(DISTINCT key) FROM calls").fetchone()[0]
        check.close()
        # the calls paid for and not kept: at most those in flight when the write failed
        assert stored > 0 and paid - stored <= 2
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# -- glitches are never answers ----------------------------------------------------------------
BAD = {
    "empty": Completion(""),
    "blank": Completion("  \n "),
    "error": Completion("partial", "error"),
    "content_filter": Completion("", "content_filter"),  # type: ignore[arg-type]
    "tool_calls": Completion("{}", "tool_calls"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_glitch_is_not_cached_and_the_next_run_asks_again(kind: str, tmp_path: Path) -> None:
    glitched: list[Request] = []

    def flaky(request: Request, i: int) -> str | Completion:
        text = request.messages[-1]["content"]  # type: ignore[index]
        if text == "write about subject 2" and not glitched:  # once, for one row
            glitched.append(request)
            return BAD[kind]
        return f"an answer to {text}"

    cache = tmp_path / "calls.sqlite"
    pipeline(FakeModel(flaky)).run(tmp_path / "out", cache=cache)
    stored = CallCache(cache)
    assert stored.get(call_key("fake:fake", glitched[0]), 1) is None  # never kept
    stored.close()
    model = FakeModel(flaky)
    again = pipeline(model).run(tmp_path / "out", cache=cache)
    assert len(again.rows) == ROWS  # the row is asked again, and found
    assert again.rows[2]["question"] == "an answer to write about subject 2"
    # the glitched call, then the next step's call on its new answer; nothing else
    assert model.calls[0] == glitched[0] and again.stats.model_calls == 2 == len(model.calls)


def test_stored_glitches_are_not_served_and_are_replaced(tmp_path: Path) -> None:
    cache = CallCache(tmp_path / "calls.sqlite")
    with cache._lock:  # as an older datamill stored them
        cache._db.executemany(
            "INSERT INTO calls (key, idx, text, finish_reason, prompt_tokens, "
            "completion_tokens, created) VALUES (?, ?, ?, ?, 0, 0, 0)",
            [("k", 0, "", "stop"), ("k", 1, "fine", "stop"), ("k", 2, "x", "error")],
        )
    assert sorted(cache.get_partial("k", 3)) == [1]
    assert cache.get("k", 3) is None
    cache.put("k", [Completion("new 0"), Completion("other 1"), Completion("new 2", "length")])
    assert [c.text for c in cache.get("k", 3) or []] == ["new 0", "fine", "new 2"]
    cache.close()
    assert servable(Completion("ok", "length")) and not servable(Completion("ok", "other"))  # type: ignore[arg-type]


# -- a fully cached re-run needs no live model -------------------------------------------------
class DeadServer(FakeModel):
    """Answers like ``FakeModel`` while up; its ``start`` fails once the server is gone."""

    def __init__(self, up: bool) -> None:
        super().__init__()
        self.up = up
        self.events: list[str] = []

    async def start(self) -> None:
        self.events.append("start")
        if not self.up:
            raise ModelUnavailable("cannot reach http://127.0.0.1:9/v1: connection refused")

    async def close(self) -> None:
        self.events.append("close")


def test_a_fully_cached_rerun_does_not_need_the_server(tmp_path: Path) -> None:
    cache = tmp_path / "calls.sqlite"
    first = pipeline(DeadServer(up=True)).run(tmp_path / "out", cache=cache)
    dead = DeadServer(up=False)
    again = pipeline(dead).run(tmp_path / "out", cache=cache)
    assert again.rows == first.rows and again.stats.model_calls == 0
    assert dead.events == ["start"] and dead.calls == []  # never closed: it never started
    # one row more needs one call: the run stops with the model's own line
    more = DeadServer(up=False)
    with pytest.raises(ModelUnavailable, match="connection refused"):
        pipeline(more, rows=ROWS + 1).run(tmp_path / "out2", cache=cache)
    assert more.calls == [] and more.events == ["start"]
    # without a cache nothing can be answered: it stops at start, as before
    with pytest.raises(ModelUnavailable):
        pipeline(DeadServer(up=False)).run(None, cache=False)


def test_cli_a_fully_cached_rerun_against_a_stopped_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datamill.testing import serve_in_thread

    cache = tmp_path / "calls.sqlite"
    with serve_in_thread(FakeModel(), name="tiny") as server:
        spec = f"openai:tiny@{server.url}"
        args = ["run", str(recipe(tmp_path, spec)), "-o", str(tmp_path / "out"), "-q"]
        main([*args, "--cache", str(cache)])
    first = (tmp_path / "out" / "data" / "train-00000-of-00001.parquet").read_bytes()
    capsys.readouterr()
    main([*args, "--cache", str(cache)])  # the server is gone: every call is in the cache
    text = " ".join(capsys.readouterr().out.split())
    assert f"wrote {ROWS} rows" in text and "model calls 0" in text
    assert (tmp_path / "out" / "data" / "train-00000-of-00001.parquet").read_bytes() == first
    with pytest.raises(SystemExit) as stop:  # a call that is not cached: the one line, exit 1
        main([*args, "--cache", str(tmp_path / "empty.sqlite")])
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot reach" in err


# -- claims: runs sharing one cache pay once per call ------------------------------------------
def test_a_claim_is_held_renewed_released_and_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    a, b = CallCache(path, lease=30), CallCache(path, lease=30)
    assert a.claim("k") and a.claim("k")  # ours, and ours again
    assert not b.claim("k")  # live and someone else's
    a.release("k")
    assert b.claim("k")  # released without an answer: the next run takes the call
    a.put("j", [Completion("answer")])
    with b._lock:  # a claim whose owner died: its lease ran out
        b._db.execute("INSERT INTO claims VALUES ('dead', 'gone-host:1:x', 0)")
    assert b.claim("dead") and not a.claim("dead")
    b.put("dead", [Completion("done")])  # storing the answer releases the claim
    assert a.claim("dead")
    a.close()
    b.close()


def test_a_claim_of_a_dead_process_on_this_machine_is_taken_at_once(tmp_path: Path) -> None:
    import socket
    import sys

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    cache = CallCache(tmp_path / "calls.sqlite")
    far = 4_000_000_000  # a lease that would outlive the test
    with cache._lock:
        cache._db.execute(
            "INSERT INTO claims VALUES ('k', ?, ?)",
            (f"{socket.gethostname()}:{gone.stdout.strip()}:x", far),
        )
        cache._db.execute(
            "INSERT INTO claims VALUES ('j', ?, ?)",
            (f"{socket.gethostname()}:{os.getppid()}:x", far),
        )
    assert cache.claim("k")  # its owner exited
    assert not cache.claim("j")  # its owner (our parent) is alive
    cache.close()


def test_a_handle_waits_for_the_call_another_run_is_making(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    other, ours = CallCache(path), CallCache(path)
    model = FakeModel()
    request = Request.chat("shared question")
    key = call_key(model.info.identity, request)
    assert other.claim(key)
    handle = ModelHandle("default", model, None, ours, Stats(), claim_poll=0.01)

    async def scenario() -> list[Completion]:
        task = asyncio.create_task(handle.generate(request))
        for _ in range(20):  # let it look, meet the claim and poll a few times
            await asyncio.sleep(0.01)
        assert not task.done() and model.calls == []
        other.put(key, [Completion("paid for by the other run")])
        return await task

    answer = asyncio.run(scenario())
    assert [c.text for c in answer] == ["paid for by the other run"]
    assert model.calls == [] and handle.stats.cache_hits == 1
    other.close()
    ours.close()


def test_three_runs_started_together_on_one_cache_pay_each_call_once(tmp_path: Path) -> None:
    from reliability_helpers import call_events, cli, parquet_rows

    rows, steps = 30, 2
    log = tmp_path / "calls.log"
    lines = "\n".join(f"    - instruction: Shared question {i}." for i in range(rows))
    shared = tmp_path / "recipe.yaml"
    shared.write_text(
        f"""\
name: shared
models:
  default: {{spec: fake, latency: 0.02, max_concurrency: 4, call_log: {log}}}
source:
  rows:
{lines}
steps:
  - text_generation: {{output: question, truncated: keep}}
  - text_generation: {{template: "{{{{ question }}}}", output: answer, truncated: keep}}
""",
        encoding="utf-8",
    )
    cache = tmp_path / "cache.sqlite"
    procs = [
        cli(["run", str(shared), "-o", f"out{i}", "-q", "--cache", str(cache)], cwd=tmp_path)
        for i in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    started = [e["key"] for e in call_events(log) if e["event"] == "start"]
    assert len(set(started)) == rows * steps  # every call was made …
    assert len(started) == rows * steps  # … once, by one of the three runs
    outputs = [parquet_rows(tmp_path / f"out{i}") for i in range(3)]
    assert outputs[0] == outputs[1] == outputs[2] and len(outputs[0]) == rows

"""The call cache: content-addressed, in one SQLite file, written as each call completes.

Key: sha256 of (model identity, the request's canonical JSON without ``n``); each sample is stored
under (key, sample index), so asking for more samples later reuses the ones already paid for.
A row is committed the moment its call finishes (WAL journal), so a crash or Ctrl-C loses only
calls that had not finished. Several runs may share one file at once (WAL + busy timeout).

Deliberately not here: deciding *whether* to call a model (the runner's ``ModelHandle``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import fields
from pathlib import Path

from ..models.base import Completion, Request

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT NOT NULL,
    idx INTEGER NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (key, idx)
) WITHOUT ROWID;
"""


def default_cache_path() -> Path:
    """``$DATAMILL_CACHE`` or ``~/.cache/datamill/calls.sqlite``."""
    env = os.environ.get("DATAMILL_CACHE")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "datamill" / "calls.sqlite"


def open_cache_db(path: Path, schema: str) -> sqlite3.Connection:
    """A connection to the cache file ``path`` (its folder made), with ``schema`` applied.

    The settings every table of the file shares: autocommit (callers open their own
    transactions), usable from any thread (callers hold a lock), WAL journal with
    ``synchronous=NORMAL``, and a 60 s busy timeout so several runs can share the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=60, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=60000")
    db.executescript(schema)
    return db


#: the request fields that decide the output: all but ``n`` (as in ``Request.cache_payload``)
_KEY_FIELDS = tuple(f.name for f in fields(Request) if f.name != "n")


def call_key(identity: str, request: Request) -> str:
    """The content address of a request sent to a model.

    Hashes the same JSON as ``Request.cache_payload()``, built from the fields directly: the
    ``asdict`` deep copy there was the largest cost of a re-run served from the cache.
    """
    payload = json.dumps(
        {name: getattr(request, name) for name in _KEY_FIELDS},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    digest = hashlib.sha256()
    digest.update(identity.encode())
    digest.update(b"\0")
    digest.update(payload.encode())
    return digest.hexdigest()


class CallCache:
    """A thread-safe SQLite store of completions."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self._lock = threading.Lock()
        self._db = open_cache_db(self.path, _SCHEMA)

    def get(self, key: str, n: int) -> list[Completion] | None:
        """All ``n`` samples of ``key``, or ``None`` when any is missing."""
        found = self.get_partial(key, n)
        if len(found) < n:
            return None
        return [found[i] for i in range(n)]

    def get_partial(self, key: str, n: int) -> dict[int, Completion]:
        """The samples of ``key`` below index ``n`` that are stored, by index."""
        with self._lock:
            rows = self._db.execute(
                "SELECT idx, text, finish_reason, prompt_tokens, completion_tokens FROM calls "
                "WHERE key = ? AND idx < ? ORDER BY idx",
                (key, n),
            ).fetchall()
        return {
            i: Completion(
                text=t, finish_reason=f, prompt_tokens=p, completion_tokens=c, cached=True
            )
            for i, t, f, p, c in rows
        }

    def put(self, key: str, completions: list[Completion]) -> None:
        """Store samples 0..len-1 of ``key``; samples already stored are kept as they were."""
        now = time.time()
        values = [
            (key, i, c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens, now)
            for i, c in enumerate(completions)
        ]
        with self._lock:  # one transaction: a kill leaves all samples of a call or none
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?)", values
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

"""Provider batches in flight, kept in the cache file so a killed run finds them again.

Two tables beside ``calls`` (same SQLite file, same settings: ``cachefile.open_cache_db``):

- ``batches``: one row per batch this machine made — a local id, the model identity, the
  provider, the endpoint path, its state (``new`` → ``uploaded`` → ``submitted`` → ``done``),
  the provider's input-file id and batch id once known, the request count, the times;
- ``batch_calls``: its custom ids and the call each one answers: (batch, custom id, call key,
  ``n``, first sample index, samples).

Every row is committed *before* the provider hears of the batch (``begin``), each id the moment
the provider gives it (``update``), so a ``kill -9`` at any point leaves enough to find the batch
again (``models.batch`` resumes every unfinished batch of its model when it starts). A finished
batch keeps its ``batches`` row (state ``done``) and drops its ``batch_calls`` rows: the answers
live in ``calls``.

Deliberately not here: talking to providers (``models.batch_*``), the answers themselves
(``pipeline.cache``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..cachefile import open_cache_db
from ..errors import CacheError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    provider TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    state TEXT NOT NULL,
    file_id TEXT,
    remote_id TEXT,
    requests INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batch_calls (
    batch TEXT NOT NULL,
    custom_id TEXT NOT NULL,
    key TEXT NOT NULL,
    n INTEGER NOT NULL,
    first INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    PRIMARY KEY (batch, custom_id)
) WITHOUT ROWID;
"""

#: states of a batch, in order; ``done`` batches are never resumed
STATES = ("new", "uploaded", "submitted", "done")


@dataclass(frozen=True)
class Entry:
    """One request line of a batch: ``samples`` samples of call ``key`` (asked with ``n``),
    from sample index ``first``."""

    custom_id: str
    key: str
    n: int
    first: int = 0
    samples: int = 1


@dataclass
class BatchRecord:
    """A batch as stored: see the module docstring for the fields."""

    id: str
    identity: str
    provider: str
    endpoint: str
    state: str
    file_id: str | None
    remote_id: str | None
    requests: int
    created: float
    entries: list[Entry]


class BatchStore:
    """The two batch tables of the cache file ``path`` (thread-safe; every write committed)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_cache_db(self.path, _SCHEMA)

    def begin(
        self, batch_id: str, identity: str, provider: str, endpoint: str, entries: list[Entry]
    ) -> None:
        """Record a batch about to be sent and its custom-id → call map, in one transaction."""
        now = time.time()
        self._write(
            [
                (
                    "INSERT INTO batches VALUES (?, ?, ?, ?, 'new', NULL, NULL, ?, ?, ?)",
                    [(batch_id, identity, provider, endpoint, len(entries), now, now)],
                ),
                (
                    "INSERT INTO batch_calls VALUES (?, ?, ?, ?, ?, ?)",
                    [(batch_id, e.custom_id, e.key, e.n, e.first, e.samples) for e in entries],
                ),
            ]
        )

    def update(
        self,
        batch_id: str,
        state: str,
        *,
        file_id: str | None = None,
        remote_id: str | None = None,
    ) -> None:
        """Move a batch to ``state``, recording the provider's ids given (others kept)."""
        if state not in STATES:
            raise ValueError(f"unknown batch state {state!r}")
        sql = (
            "UPDATE batches SET state = ?, file_id = coalesce(?, file_id), "
            "remote_id = coalesce(?, remote_id), updated = ? WHERE id = ?"
        )
        self._write([(sql, [(state, file_id, remote_id, time.time(), batch_id)])])

    def finish(self, batch_id: str) -> None:
        """Mark a batch ``done`` and drop its call map (its answers are in ``calls``)."""
        self._write(
            [
                (
                    "UPDATE batches SET state = 'done', updated = ? WHERE id = ?",
                    [(time.time(), batch_id)],
                ),
                ("DELETE FROM batch_calls WHERE batch = ?", [(batch_id,)]),
            ]
        )

    def forget(self, batch_id: str) -> None:
        """Delete a batch the provider never heard of (creating it failed)."""
        self._write(
            [
                ("DELETE FROM batch_calls WHERE batch = ?", [(batch_id,)]),
                ("DELETE FROM batches WHERE id = ?", [(batch_id,)]),
            ]
        )

    def unfinished(self, identity: str) -> list[BatchRecord]:
        """The batches of model ``identity`` not ``done``, oldest first, with their entries."""
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT id, identity, provider, endpoint, state, file_id, remote_id, "
                    "requests, created FROM batches WHERE identity = ? AND state != 'done' "
                    "ORDER BY created",
                    (identity,),
                ).fetchall()
                out = []
                for row in rows:
                    entries = [
                        Entry(*e)
                        for e in self._db.execute(
                            "SELECT custom_id, key, n, first, samples FROM batch_calls "
                            "WHERE batch = ?",
                            (row[0],),
                        )
                    ]
                    batch_id, identity, provider, endpoint, state, file_id, remote_id = row[:7]
                    out.append(
                        BatchRecord(
                            str(batch_id),
                            str(identity),
                            str(provider),
                            str(endpoint),
                            str(state),
                            file_id,
                            remote_id,
                            int(row[7]),
                            float(row[8]),
                            entries,
                        )
                    )
        except sqlite3.Error as exc:
            raise CacheError(f"cannot read the batches in {self.path} ({exc})") from None
        return out

    def known_remote_ids(self) -> set[str]:
        """Every provider batch id recorded here (a batch found after a crash must be new)."""
        with self._lock:
            rows = self._db.execute("SELECT remote_id FROM batches WHERE remote_id IS NOT NULL")
            return {str(r[0]) for r in rows}

    def all(self) -> list[tuple[str, str, str, int]]:
        """(local id, provider, state, requests) of every batch, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, provider, state, requests FROM batches ORDER BY created"
            ).fetchall()
        return [(str(a), str(b), str(c), int(d)) for a, b, c, d in rows]

    def _write(self, statements: list[tuple[str, list[tuple[object, ...]]]]) -> None:
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for sql, values in statements:
                        self._db.executemany(sql, values)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise CacheError(
                f"cannot write the batch records to {self.path} ({exc}); no batch was sent. "
                "Free space there or point --cache at another disk, then run again"
            ) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

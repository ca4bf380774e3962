"""The call cache: content-addressed, in one SQLite file, written as each call completes.

Key: sha256 of (model identity, the request's canonical JSON without ``n``); each sample is stored
under (key, sample index), so asking for more samples later reuses the ones already paid for.
A row is committed the moment its call finishes (WAL journal), so a crash or Ctrl-C loses only
calls that had not finished. Several runs may share one file at once (WAL + busy timeout).

Results of work that is not a model call (a verifier's verdict, ``pipeline.results``) live in a
``results`` table beside ``calls``: a content key → a JSON text, committed as each one finishes.

Only answers are kept: a completion is stored and served only when its ``finish_reason`` is
``stop`` or ``length`` and its text (or the reasoning sent apart) is not blank, or it is a
``tool_calls`` finish with its calls (:func:`servable`), so a glitch of the server (an empty or
refused answer) is asked again on the next run instead of being lost forever. What a completion
holds besides its text (the ``reasoning`` a server sent apart, ``tool_calls``) is kept as JSON
in the nullable ``extra`` column (added to older files when opened: ``cachefile``).

Runs sharing the file do not pay twice for one call: the process about to call records a *claim*
(key, owner, lease expiry) and renews its lease while the call runs; another process that meets a
live claim polls the file for the answer, and takes the call over when the claim is released
without an answer, its lease expires, or its owner was a process of this machine that is gone.

The file is checked when opened: a folder, another program's SQLite file, a ``calls`` table of
another shape or bytes that are no database are refused in one line (:class:`CacheError`), as is
a write that fails (disk full): the run stops there, so no call is paid for that cannot be kept.

Deliberately not here: deciding *whether* to call a model (the runner's ``ModelHandle``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import fields
from pathlib import Path

from .._process import pid_alive
from ..cachefile import default_cache_path, open_cache_db
from ..errors import CacheError
from ..models.base import OPTIONAL_KEY_FIELDS, Completion, Request
from ..rows import unencodable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT NOT NULL,
    idx INTEGER NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created REAL NOT NULL,
    extra TEXT,
    PRIMARY KEY (key, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created REAL NOT NULL
) WITHOUT ROWID;
"""

#: finish reasons of a completion that is an answer (anything else is a failure, never kept)
SERVABLE_FINISH = ("stop", "length")


def servable(completion: Completion) -> bool:
    """Whether ``completion`` is an answer worth keeping: finished by ``stop`` or ``length``, with
    text (or reasoning sent apart) that is not blank, or finished by ``tool_calls`` with calls;
    all of it storable as UTF-8 (no lone surrogate). Empty, refused, failed or unencodable
    completions are asked again next run."""
    if completion.finish_reason == "tool_calls":
        said = bool(completion.tool_calls)
    else:
        said = completion.finish_reason in SERVABLE_FINISH and bool(
            completion.text.strip() or (completion.reasoning or "").strip()
        )
    return (
        said
        and unencodable(completion.text) is None
        and unencodable(completion.reasoning) is None
        and unencodable(json.dumps(completion.tool_calls, ensure_ascii=False)) is None
    )


def _extra(completion: Completion) -> str | None:
    """The ``extra`` column of a completion: JSON of its reasoning and tool calls, or NULL."""
    data: dict[str, object] = {}
    if completion.reasoning is not None:
        data["reasoning"] = completion.reasoning
    if completion.tool_calls:
        data["tool_calls"] = list(completion.tool_calls)
    return json.dumps(data, ensure_ascii=False) if data else None


def _stored(text: str, finish: str, prompt: int, done: int, extra: str | None) -> Completion:
    """A completion read back from a ``calls`` row."""
    data = json.loads(extra) if extra else {}
    return Completion(
        text=text,
        finish_reason=finish,  # type: ignore[arg-type]
        prompt_tokens=prompt,
        completion_tokens=done,
        cached=True,
        reasoning=data.get("reasoning"),
        tool_calls=tuple(data.get("tool_calls", ())),
    )


#: the request fields that decide the output: all but ``n`` (as in ``Request.cache_payload``);
#: those in ``OPTIONAL_KEY_FIELDS`` only when set, so older keys stay valid
_KEY_FIELDS = tuple(
    f.name for f in fields(Request) if f.name != "n" and f.name not in OPTIONAL_KEY_FIELDS
)


def call_key(identity: str, request: Request) -> str:
    """The content address of a request sent to a model.

    Hashes the same JSON as ``Request.cache_payload()``, built from the fields directly: the
    ``asdict`` deep copy there was the largest cost of a re-run served from the cache.
    """
    data = {name: getattr(request, name) for name in _KEY_FIELDS}
    for name in OPTIONAL_KEY_FIELDS:
        value = getattr(request, name)
        if value is not None:
            data[name] = value
    payload = json.dumps(
        data,
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    digest = hashlib.sha256()
    digest.update(identity.encode())
    digest.update(b"\0")
    digest.update(payload.encode())
    return digest.hexdigest()


def _owner_died(owner: str) -> bool:
    """Whether the claim owner ``host:pid:id`` was a process of this machine that is gone."""
    host, _, rest = owner.rpartition(":")
    host, _, pid = host.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    return not pid_alive(int(pid))


class CallCache:
    """A thread-safe SQLite store of completions, with claims on calls in flight.

    ``lease``: seconds a claim lives without renewal (renewed every ``lease / 3`` s while held).
    Every method raises :class:`CacheError` (and remembers it in :attr:`broken`) when the file
    cannot be read or written; a broken cache refuses every later write."""

    def __init__(self, path: str | Path | None = None, *, lease: float = 30.0) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self.lease = lease
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.broken: CacheError | None = None
        self.stored = 0  #: calls this object has stored (the count a write failure reports)
        self._lock = threading.Lock()
        self._db = open_cache_db(self.path, _SCHEMA)
        self._claims: set[str] = set()
        self._renewer: threading.Thread | None = None
        self._closing = threading.Event()

    # -- reading -------------------------------------------------------------------------------
    def get(self, key: str, n: int) -> list[Completion] | None:
        """All ``n`` samples of ``key``, or ``None`` when any is missing."""
        found = self.get_partial(key, n)
        if len(found) < n:
            return None
        return [found[i] for i in range(n)]

    def get_partial(self, key: str, n: int) -> dict[int, Completion]:
        """The servable samples of ``key`` below index ``n`` that are stored, by index."""
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT idx, text, finish_reason, prompt_tokens, completion_tokens, extra "
                    "FROM calls "
                    "WHERE key = ? AND idx < ? ORDER BY idx",
                    (key, n),
                ).fetchall()
        except sqlite3.Error as exc:
            raise self._fail("read from", exc) from None
        try:
            found = {i: _stored(t, f, p, c, x) for i, t, f, p, c, x in rows}
        except (ValueError, TypeError, AttributeError) as exc:  # JSON another program wrote
            raise self._fail(
                "read from", sqlite3.DatabaseError(f"bad extra column: {exc}")
            ) from None
        return {i: c for i, c in found.items() if servable(c)}

    # -- writing -------------------------------------------------------------------------------
    def put(self, key: str, completions: list[Completion]) -> None:
        """Store the servable samples of ``key`` (by index) and release this process's claim on
        it. Servable samples already stored are kept as they were; unservable ones (stored by
        an older datamill) are replaced. Raises :class:`CacheError` when the write fails."""
        self.check()
        now = time.time()
        values = [
            (key, i, c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens, now, _extra(c))
            for i, c in enumerate(completions)
            if servable(c)
        ]
        try:
            with self._lock:  # one transaction: a kill leaves all samples of a call or none
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(
                        "INSERT INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (key, idx) DO UPDATE SET text = excluded.text, "
                        "finish_reason = excluded.finish_reason, "
                        "prompt_tokens = excluded.prompt_tokens, "
                        "completion_tokens = excluded.completion_tokens, created = excluded.created, "
                        "extra = excluded.extra "
                        "WHERE calls.finish_reason NOT IN ('stop', 'length', 'tool_calls') "
                        "OR (trim(calls.text, ' ' || char(9, 10, 13)) = '' AND calls.extra IS NULL)",
                        values,
                    )
                    self._db.execute(
                        "DELETE FROM claims WHERE key = ? AND owner = ?", (key, self.owner)
                    )
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                self._claims.discard(key)
        except sqlite3.Error as exc:
            raise self._fail("write to", exc) from None
        if values:
            self.stored += 1

    # -- results of other work (verifications) -------------------------------------------------
    def get_result(self, key: str) -> str | None:
        """The JSON text stored under ``key`` in the ``results`` table, or ``None``."""
        try:
            with self._lock:
                row = self._db.execute("SELECT value FROM results WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise self._fail("read from", exc) from None
        return None if row is None else str(row[0])

    def put_result(self, key: str, value: str) -> None:
        """Store the JSON text ``value`` under ``key`` (committed at once; a value already there
        is kept). Raises :class:`CacheError` when the write fails."""
        self.check()
        try:
            with self._lock:
                self._db.execute(
                    "INSERT OR IGNORE INTO results VALUES (?, ?, ?)", (key, value, time.time())
                )
        except sqlite3.Error as exc:
            raise self._fail("write to", exc) from None

    def check(self) -> None:
        """Raise the write failure met earlier, if any (a broken cache takes no more calls)."""
        if self.broken is not None:
            raise self.broken

    def _fail(self, doing: str, exc: sqlite3.Error) -> CacheError:
        self._claims.clear()  # stop renewing: other runs take the calls over when leases expire
        self.broken = CacheError(
            f"cannot {doing} the call cache {self.path} ({exc}); the run stopped so that no call "
            f"is paid for that cannot be kept: the {self.stored} calls it finished are saved. "
            "Free space there or point --cache (or DATAMILL_CACHE) at another disk, then run the "
            "same command again"
        )
        return self.broken

    # -- claims on calls in flight -------------------------------------------------------------
    def claim(self, key: str) -> bool:
        """Claim the call ``key`` for this process: True when taken (or already ours), False
        while another process holds a live claim on it. Raises :class:`CacheError`."""
        self.check()
        try:
            with self._lock:
                row = self._db.execute(  # a read first: waiting runs poll without writing
                    "SELECT owner, expires FROM claims WHERE key = ?", (key,)
                ).fetchone()
                if row is not None and row[0] != self.owner and row[1] >= time.time():
                    if not _owner_died(row[0]):
                        return False
                    self._db.execute(  # its owner died on this machine: no need to wait
                        "DELETE FROM claims WHERE key = ? AND owner = ?", (key, row[0])
                    )
                taken = self._upsert_claim(key)
                if taken:
                    self._claims.add(key)
        except sqlite3.Error as exc:
            raise self._fail("write to", exc) from None
        if taken and self._renewer is None:
            self._renewer = threading.Thread(
                target=self._renew, name="datamill-cache-claims", daemon=True
            )
            self._renewer.start()
        return taken

    def _upsert_claim(self, key: str) -> bool:
        now = time.time()
        cursor = self._db.execute(
            "INSERT INTO claims VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
            "owner = excluded.owner, expires = excluded.expires "
            "WHERE claims.owner = excluded.owner OR claims.expires < ?",
            (key, self.owner, now + self.lease, now),
        )
        return cursor.rowcount == 1

    def release(self, key: str) -> None:
        """Give up this process's claim on ``key`` (its call failed); never raises."""
        self._claims.discard(key)
        try:
            with self._lock:
                self._db.execute(
                    "DELETE FROM claims WHERE key = ? AND owner = ?", (key, self.owner)
                )
        except sqlite3.Error:
            pass  # the lease expires by itself

    def _renew(self) -> None:
        while not self._closing.wait(self.lease / 3):
            if not self._claims or self.broken is not None:
                continue
            try:
                with self._lock:
                    self._db.execute(
                        "UPDATE claims SET expires = ? WHERE owner = ?",
                        (time.time() + self.lease, self.owner),
                    )
            except sqlite3.Error:
                pass  # a claim that lapses only lets another run make the call

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def close(self) -> None:
        self._closing.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        with self._lock:
            if self._claims:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("DELETE FROM claims WHERE owner = ?", (self.owner,))
                self._claims.clear()
            self._db.close()

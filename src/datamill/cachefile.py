"""The cache file: where it lives and how it is opened, for every table kept in it.

The call cache (``pipeline.cache``) and the vector cache (``models.embeddings``) share one SQLite
file; this module says where it is (``$DATAMILL_CACHE``) and opens it with the settings both
need, refusing a file that is not a datamill cache in one line (:class:`CacheError`).

Deliberately not here: what is stored (``pipeline.cache``, ``models.embeddings``).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from .errors import CacheError

#: the version of the file's layout, kept in ``datamill_meta``; a newer one is refused
FORMAT = 1

_META = "CREATE TABLE IF NOT EXISTS datamill_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"

#: tables any datamill cache file may hold (the call cache's and ``models.embeddings``')
_OURS = {"calls", "claims", "results", "embeddings", "datamill_meta", "batches", "batch_calls"}

#: nullable columns added to a table after its first layout: (table, column) → SQL type. A file
#: whose table lacks only some of these, at its end, gets them when opened (``ALTER TABLE``);
#: older datamills then refuse the file as another layout, but nothing stored is lost.
_ADDED = {("calls", "extra"): "TEXT"}

_FIX = "point --cache (or DATAMILL_CACHE) at a file, or run with --no-cache"


def resume_hint(cached: bool) -> str:
    """How a stopped run is resumed: with the call cache its finished calls are kept and the
    same command goes on from them; without one (``--no-cache``) nothing was kept."""
    if cached:
        return "finished calls are cached: run the same command again to resume"
    return (
        "nothing was cached (--no-cache): the same command starts over; drop --no-cache "
        "to keep finished calls so that a stopped run can resume"
    )


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
    ``synchronous=NORMAL``, and a 60 s busy timeout so several runs can share the file.

    Raises :class:`CacheError` (one line: the path and what to do) when ``path`` is a folder,
    its folder cannot be made, it is no SQLite database, or it is another program's database
    (tables datamill does not make, a table of ``schema`` with other columns, a newer format)."""
    path = Path(path)
    if path.is_dir():
        raise CacheError(
            f"the call cache {path} is a folder; {_FIX} (e.g. {path / 'calls.sqlite'})"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(
            f"cannot create the folder of the call cache {path}: {exc.strerror or exc}; {_FIX}"
        ) from None
    db: sqlite3.Connection | None = None
    try:
        db = sqlite3.connect(path, timeout=60, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA busy_timeout=60000")
        _check_foreign(db, path, schema)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(schema + _META)
        db.execute("INSERT OR IGNORE INTO datamill_meta VALUES ('format', ?)", (str(FORMAT),))
    except sqlite3.Error as exc:
        if db is not None:
            db.close()
        raise CacheError(f"cannot use {path} as the call cache ({exc}); {_FIX}") from None
    except CacheError:
        if db is not None:
            db.close()
        raise
    return db


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def _add_column(db: sqlite3.Connection, table: str, column: str) -> None:
    """``ALTER TABLE`` for one of :data:`_ADDED`; another run adding it at once is fine."""
    try:
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {_ADDED[table, column]}")
    except sqlite3.OperationalError as exc:
        if "duplicate column" not in str(exc):
            raise


def _check_foreign(db: sqlite3.Connection, path: Path, schema: str) -> None:
    """Refuse a file that is not a datamill cache (see :func:`open_cache_db`)."""
    tables = {
        name
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not name.startswith("sqlite_")
    }
    foreign = sorted(tables - _OURS)
    meta: dict[str, str] = {}
    if "datamill_meta" in tables:
        meta = dict(db.execute("SELECT name, value FROM datamill_meta").fetchall())
        fmt = meta.get("format", "")
        if not fmt.isdigit():
            raise CacheError(f"{path} is not a datamill call cache (no format in it); {_FIX}")
        if int(fmt) > FORMAT:
            raise CacheError(
                f"the call cache {path} was written by a newer datamill (format {fmt}, this one "
                f"reads {FORMAT}); upgrade datamill, {_FIX}"
            )
    elif foreign:
        shown = ", ".join(foreign[:5]) + (", …" if len(foreign) > 5 else "")
        raise CacheError(
            f"{path} is another program's SQLite database (tables {shown}), not a datamill call "
            f"cache; {_FIX}"
        )
    expected = sqlite3.connect(":memory:")
    try:
        expected.executescript(schema)
        for table in tables & _OURS:
            want = _columns(expected, table)
            have = _columns(db, table)
            missing = want[len(have) :]
            if have == want[: len(have)] and all((table, c) in _ADDED for c in missing):
                for column in missing:  # an older layout: add the nullable columns it lacks
                    _add_column(db, table, column)
                have = want
            if want and have != want:
                raise CacheError(
                    f"{path} is not a datamill call cache (its table {table!r} has columns "
                    f"{', '.join(_columns(db, table))}); {_FIX}"
                )
    finally:
        expected.close()

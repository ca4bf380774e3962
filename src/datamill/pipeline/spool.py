"""Finished rows kept in key order without holding them all in memory.

The runner starts source rows in key order and at most N are in flight, so rows finish roughly
in key order. A :class:`RowSpool` keeps a small *reorder buffer*: the runner tells it the
smallest key still in flight (the watermark, :meth:`RowSpool.advance`) and every buffered row
below it is appended, in order, to the current *run*. A run keeps one batch of rows in memory
and pickles full batches to a file in a private temporary folder. A row that holds the watermark
back for long (a slow retry) lets the buffer grow; past ``buffer_rows`` the buffer is sorted and
becomes a run of its own. Reading (:meth:`RowSpool.__iter__`) merges the runs (``heapq.merge``),
so memory stays bounded by the buffer plus one batch per run, whatever the number of rows.

Rows are pickled: what a step produced is exactly what the next step, the sink and
``RunResult.rows`` see. The folder (under ``TMPDIR``) is removed by :meth:`RowSpool.close`, or
when the spool is garbage collected. :class:`SpooledRows` is the read-only sequence of the
spooled rows that ``RunResult.rows`` holds for runs larger than ``KEEP_ROWS``.

Deliberately not here: what the rows are for (``pipeline.runner``, ``io.sinks``).
"""

from __future__ import annotations

import heapq
import itertools
import pickle
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, overload

from ..rows import Row, RowKey

KeyedRow = tuple[RowKey, Row]
#: rows of a run held in memory before they are written to its file
BATCH_ROWS = 1_000
#: rows the reorder buffer may hold before it is spilled as a run of its own
BUFFER_ROWS = 10_000
#: runs up to this many rows give ``RunResult.rows`` as a plain list; larger ones a SpooledRows
KEEP_ROWS = 10_000

_Item = tuple[RowKey, int, Row]  # key, arrival number (ties keep arrival order), row


class _Folder:
    """The spool's temporary folder, made at the first file (never refers to the spool, so
    the spool can be garbage collected and its folder removed then)."""

    def __init__(self, parent: Path | None) -> None:
        self.parent = parent
        self.path: Path | None = None
        self._names = itertools.count()

    def new_file(self) -> Path:
        if self.path is None:
            if self.parent is not None:
                self.parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix="datamill-rows-", dir=self.parent))
        return self.path / f"run-{next(self._names):05d}.pickle"


class _Run:
    """Rows in ascending key order: full batches in a file, the last batch in memory."""

    def __init__(self, folder: _Folder, batch_rows: int) -> None:
        self.folder = folder
        self.batch_rows = batch_rows
        self.tail: list[_Item] = []
        self.last: RowKey | None = None
        self.path: Path | None = None
        self._file: IO[bytes] | None = None

    def append(self, item: _Item) -> None:
        self.tail.append(item)
        self.last = item[0]
        if len(self.tail) >= self.batch_rows:
            if self._file is None:
                self.path = self.folder.new_file()
                self._file = self.path.open("ab")
            pickle.dump(self.tail, self._file, protocol=pickle.HIGHEST_PROTOCOL)
            self.tail = []

    def __iter__(self) -> Iterator[_Item]:
        if self._file is not None:
            self._file.flush()
        if self.path is not None:
            with self.path.open("rb") as fh:
                while True:
                    try:
                        batch = pickle.load(fh)
                    except EOFError:
                        break
                    yield from batch
        yield from list(self.tail)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class RowSpool:
    """Keyed rows added in any order, read back in key order (ties in the order added).

    ``add`` a row as it finishes, ``advance(watermark)`` when the smallest key still in flight
    moves (``None``: nothing more is in flight), ``finish()`` once all rows are in; then iterate
    (any number of times) for ``(key, row)`` pairs in key order. ``len`` is the rows added."""

    def __init__(
        self,
        folder: str | Path | None = None,
        *,
        buffer_rows: int | None = None,
        batch_rows: int | None = None,
    ) -> None:
        self._folder = _Folder(Path(folder) if folder is not None else None)
        self.buffer_rows = max(1, buffer_rows or BUFFER_ROWS)
        self.batch_rows = max(1, batch_rows or BATCH_ROWS)
        self._buffer: list[_Item] = []
        self._runs: list[_Run] = []
        self._seq = itertools.count()
        self._count = 0
        self._cleanup = weakref.finalize(self, _remove, self._folder, self._runs)

    @classmethod
    def of(cls, rows: Iterable[KeyedRow], **options: Any) -> RowSpool:
        """A finished spool of ``rows`` (any order)."""
        spool = cls(**options)
        for key, row in rows:
            spool.add(key, row)
        spool.finish()
        return spool

    # -- writing ---------------------------------------------------------------------------
    def _run(self) -> _Run:
        run = _Run(self._folder, self.batch_rows)
        self._runs.append(run)
        return run

    def add(self, key: RowKey, row: Row) -> None:
        heapq.heappush(self._buffer, (key, next(self._seq), row))
        self._count += 1
        if len(self._buffer) > self.buffer_rows:  # a straggler holds the watermark back: spill
            run = self._run()
            while self._buffer:
                run.append(heapq.heappop(self._buffer))

    def advance(self, watermark: RowKey | None) -> None:
        """Move the buffered rows with keys below ``watermark`` (all, for ``None``) to a run."""
        buffer = self._buffer
        while buffer and (watermark is None or buffer[0][0] < watermark):
            item = heapq.heappop(buffer)
            run = self._runs[-1] if self._runs else None
            if run is None or (run.last is not None and item[0] < run.last):
                run = self._run()
            run.append(item)

    def finish(self) -> RowSpool:
        self.advance(None)
        return self

    # -- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    @property
    def runs(self) -> int:
        """How many sorted runs reading merges (1 when rows came in key order)."""
        return len(self._runs)

    @property
    def spilled(self) -> bool:
        """Whether any row was written to disk."""
        return self._folder.path is not None

    def __iter__(self) -> Iterator[KeyedRow]:
        if self._buffer:
            raise RuntimeError("RowSpool read before finish()")
        if len(self._runs) == 1:
            items: Iterable[_Item] = self._runs[0]
        else:
            items = heapq.merge(*self._runs, key=lambda item: (item[0], item[1]))
        for key, _, row in items:
            yield key, row

    def rows(self) -> SpooledRows:
        """The rows (without keys) as a read-only sequence."""
        return SpooledRows(self)

    def close(self) -> None:
        """Remove the spool's files (reading afterwards is an error)."""
        self._cleanup()
        self._runs.clear()
        self._buffer.clear()


def _remove(folder: _Folder, runs: list[_Run]) -> None:
    for run in runs:
        run.close()
    if folder.path is not None:
        shutil.rmtree(folder.path, ignore_errors=True)


class SpooledRows(Sequence[Row]):
    """The rows of a finished :class:`RowSpool`, in order, read from disk as they are used.

    ``len``, iteration (streams; the way to go through a large run), ``rows[i]`` and slices
    (each reads from the start up to the wanted rows: fine for ``rows[:10]``, slow in a loop
    over indexes) and ``==`` with a list. ``list(rows)`` loads them all."""

    def __init__(self, spool: RowSpool) -> None:
        self._spool = spool

    def __len__(self) -> int:
        return len(self._spool)

    def __iter__(self) -> Iterator[Row]:
        for _, row in self._spool:
            yield row

    @overload
    def __getitem__(self, index: int) -> Row: ...

    @overload
    def __getitem__(self, index: slice) -> list[Row]: ...

    def __getitem__(self, index: int | slice) -> Row | list[Row]:
        n = len(self)
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            if step < 0:
                return list(self)[index]
            return list(itertools.islice(self, start, stop, step))
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise IndexError("row index out of range")
        return next(itertools.islice(self, i, None))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SpooledRows | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<SpooledRows: {len(self)} rows; iterate them, or list(rows) to load all>"


__all__ = ["KEEP_ROWS", "RowSpool", "SpooledRows"]

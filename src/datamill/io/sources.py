"""Sources: where rows come from. Each knows its columns and size before any model is called.

- ``RowsSource`` — a list of dicts (inline in a recipe or from Python)
- ``JsonlSource`` / ``ParquetSource`` — local files
- ``HFSource`` — a ``datasets`` dataset or a dataset already on disk (``datasets`` extra)
- ``EmptyRows`` — N empty rows, for techniques that generate from nothing (Magpie)
- ``SamplerSource`` (``io.samplers``) — N rows of sampled columns (categories, ranges, people)

Bad input fails here with one line naming the file, line and problem: unreadable files, bad JSON,
non-UTF-8 lines, NaN, no rows, oversized lines. :func:`check_rows` checks the *values* of the
columns (and places inside them, ``person.address.street``) the steps read, before any model
call: a column missing from some rows, empty in every row, holding different types in different
rows, or an object/list printed whole into a prompt is one clear error, as is text anywhere in a
row that cannot be written as UTF-8 (a lone surrogate; refused up front rather than per row, since
it is known before any call and no output file could hold it). A value empty in only some rows is
not an error here: the runner records those rows as ``empty input`` and keeps the rest.
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import InputError, MissingDependency
from ..rows import Path as RowPath
from ..rows import Row, is_missing, lookup, path_text, unencodable

MAX_ROW_BYTES = 8 * 1024 * 1024
#: rows read from a Parquet file at a time
BATCH_ROWS = 1024


class SourceScan(NamedTuple):
    """What one pass over a source found (:meth:`Source.scan`)."""

    rows: int  #: how many rows (up to the limit)
    columns: list[str]  #: columns present in *any* row, in first-seen order
    common: list[str]  #: columns present in *every* row, in first-seen order


class Source:
    """Rows with known columns. ``limit`` caps how many are read.

    A subclass gives its rows by :meth:`iter_rows` (one at a time, so a large file is never
    held whole) or :meth:`rows` (a list). :meth:`stream` is what a run reads (checked, capped);
    it can be started again for another pass."""

    name = "source"

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit

    def rows(self) -> list[Row]:
        raise NotImplementedError

    def iter_rows(self) -> Iterator[Row]:
        """The raw rows one at a time (up to ``limit`` or beyond: :meth:`stream` caps them)."""
        return iter(self.rows())

    def stream(self) -> Generator[Row, None, None]:
        """The rows (up to ``limit``), one at a time, each checked to be a dict."""
        for i, row in enumerate(self.iter_rows()):
            if self.limit is not None and i >= self.limit:
                break
            if not isinstance(row, dict):
                raise InputError(
                    f"{self.where(i)}: the row is {kind_of(row)}, not an object with columns"
                )
            yield row

    def load(self) -> list[Row]:
        """All rows (up to ``limit``), checked: at least one row, each a dict."""
        rows = list(self.stream())
        if not rows:
            raise InputError(f"{self.name} has no rows: give at least one input row")
        return rows

    def scan(self) -> SourceScan:
        """One pass over the rows without keeping them: their number and columns. Raises
        :class:`InputError` like :meth:`load` (no rows, a row that is not an object)."""
        count = 0
        seen: dict[str, None] = {}
        common: list[str] | None = None
        for row in self.stream():
            count += 1
            seen.update(dict.fromkeys(row))
            common = list(row) if common is None else [c for c in common if c in row]
        if not count:
            raise InputError(f"{self.name} has no rows: give at least one input row")
        return SourceScan(count, list(seen), common or [])

    def where(self, index: int) -> str:
        """Where row ``index`` (0-based) comes from, for error messages: ``file:line`` or ``name row N``."""
        return f"{self.name} row {index + 1}"

    @staticmethod
    def columns(rows: list[Row]) -> list[str]:
        """Columns present in *every* row, in first-seen order."""
        if not rows:
            return []
        common = set(rows[0])
        for r in rows[1:]:
            common &= set(r)
        return [c for c in rows[0] if c in common]


class RowsSource(Source):
    name = "inline rows"

    def __init__(
        self, data: list[Row], limit: int | None = None, repeat: int = 1, name: str | None = None
    ) -> None:
        super().__init__(limit)
        self.data = data
        self.repeat = repeat
        if name is not None:
            self.name = name

    def rows(self) -> list[Row]:
        return list(self.iter_rows())

    def iter_rows(self) -> Iterator[Row]:
        for _ in range(self.repeat):
            for r in self.data:
                yield dict(r) if isinstance(r, dict) else r


class EmptyRows(Source):
    """``n`` rows with only an index column (``row``) — for generation from nothing."""

    name = "generated rows"

    def __init__(
        self, n: int, limit: int | None = None, fields: dict[str, Any] | None = None
    ) -> None:
        super().__init__(limit)
        if n < 1:
            raise InputError("num_rows must be at least 1")
        self.n = n
        self.fields = fields or {}

    def rows(self) -> list[Row]:
        return list(self.iter_rows())

    def row(self, index: int) -> Row:
        """Row ``index`` (0-based; past ``n`` too: the top-up's new rows)."""
        return {"row": index, **self.fields}

    def iter_rows(self) -> Iterator[Row]:
        n = min(self.n, self.limit) if self.limit is not None else self.n
        for i in range(n):
            yield self.row(i)


class JsonlSource(Source):
    def __init__(self, path: str | Path, limit: int | None = None) -> None:
        super().__init__(limit)
        self.path = Path(path)
        self.name = str(self.path)
        self.lines = array("q")  #: the file line of each row read so far (for messages)

    def where(self, index: int) -> str:
        if index < len(self.lines):
            return f"{self.path}:{self.lines[index]}"
        return super().where(index)

    def rows(self) -> list[Row]:
        return list(self.iter_rows())

    def iter_rows(self) -> Iterator[Row]:
        if not self.path.exists():
            raise InputError(f"{self.path}: no such file")
        count = 0
        self.lines = array("q")
        with self.path.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if self.limit is not None and count >= self.limit:
                    break
                if len(raw) > MAX_ROW_BYTES:
                    raise InputError(
                        f"{self.path}:{lineno}: line is {len(raw)} bytes, over the {MAX_ROW_BYTES}-byte limit per row; shorten or split that row"
                    )
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InputError(
                        f"{self.path}:{lineno}: not UTF-8 (byte {exc.start}); re-encode the file as UTF-8"
                    ) from None
                if not text.strip():
                    continue
                try:
                    value = json.loads(text, parse_constant=_reject_constant)
                except _NonJsonConstant as exc:
                    raise InputError(
                        f"{self.path}:{lineno}: {exc} is not valid JSON; write null for a missing value"
                    ) from None
                except json.JSONDecodeError as exc:
                    raise InputError(
                        f"{self.path}:{lineno}: not valid JSON ({exc.msg} at column {exc.pos + 1}); each line must be one JSON object"
                    ) from None
                if not isinstance(value, dict):
                    raise InputError(
                        f"{self.path}:{lineno}: each line must be a JSON object, got {kind_of(value)}"
                    )
                self.lines.append(lineno)
                count += 1
                yield value


class _NonJsonConstant(Exception):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonJsonConstant(name)


class ParquetSource(Source):
    def __init__(self, path: str | Path, limit: int | None = None) -> None:
        super().__init__(limit)
        self.path = Path(path)
        self.name = str(self.path)

    def rows(self) -> list[Row]:
        return list(self.iter_rows())

    def iter_rows(self) -> Iterator[Row]:
        """The rows, one record batch (:data:`BATCH_ROWS`) at a time."""
        import pyarrow.parquet as pq

        files = sorted(self.path.rglob("*.parquet")) if self.path.is_dir() else [self.path]
        if not files or not files[0].exists():
            raise InputError(f"{self.path}: no parquet files found")
        count = 0
        for f in files:
            try:
                try:
                    reader = pq.ParquetFile(f)
                except (OSError, ValueError):
                    pq.read_table(f)  # raises the error people know (names the file)
                    raise
                for batch in reader.iter_batches(batch_size=BATCH_ROWS):
                    for row in batch.to_pylist():
                        yield _clean_nan(row)
                        count += 1
                    if self.limit is not None and count >= self.limit:
                        return
            except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
                raise InputError(
                    f"{f}: not a readable parquet file ({str(exc).splitlines()[0]})"
                ) from None


def _clean_nan(row: Row) -> Row:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


class HFSource(Source):
    """A Hugging Face dataset: a ``datasets.Dataset`` object, a ``save_to_disk`` folder or a hub id."""

    def __init__(self, dataset: Any, split: str = "train", limit: int | None = None) -> None:
        super().__init__(limit)
        self.dataset = dataset
        self.split = split
        self.name = str(dataset) if isinstance(dataset, str) else "dataset"

    def rows(self) -> list[Row]:
        try:
            import datasets
        except ImportError as exc:
            raise MissingDependency("reading Hugging Face datasets", "hf") from exc
        ds = self.dataset
        if isinstance(ds, str):
            ds = (
                datasets.load_from_disk(ds)
                if Path(ds).exists()
                else datasets.load_dataset(ds, split=self.split)
            )
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[self.split]
        if self.limit is not None:
            ds = ds.select(range(min(self.limit, len(ds))))
        return [_clean_nan(r) for r in ds.to_list()]


def source_from_path(path: str | Path, limit: int | None = None) -> Source:
    """Pick a source by file type: ``.jsonl``, ``.json``, ``.parquet``, a datamill output folder."""
    p = Path(path)
    if p.is_dir():
        if (p / "data").is_dir():
            return ParquetSource(p / "data", limit)
        if (p / "dataset_info.json").exists() or (p / "state.json").exists():
            return HFSource(str(p), limit=limit)
        return ParquetSource(p, limit)
    if p.suffix in (".jsonl", ".ndjson"):
        return JsonlSource(p, limit)
    if p.suffix == ".json":
        if not p.exists():
            raise InputError(f"{p}: no such file")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"{p}: not valid UTF-8 JSON ({exc})") from None
        if not isinstance(data, list):
            raise InputError(
                f"{p}: a .json source must hold a list of objects, got {kind_of(data)}"
            )
        return RowsSource(data, limit, name=str(p))
    if p.suffix == ".parquet":
        return ParquetSource(p, limit)
    raise InputError(f"{p}: unknown input type; use .jsonl, .json, .parquet or a dataset folder")


def kind_of(value: Any) -> str:
    """A JSON-ish name of a value's type, for messages: text, a number, a list, an object …"""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


class Read(NamedTuple):
    """How the steps read a place of the source rows (see :func:`source_reads`)."""

    who: str  #: ``step 1 (text_generation)``
    model_reads: bool  #: a model step needs a value there (empty in every row is refused)
    as_text: bool = False  #: printed whole into a prompt: must be text or a number
    template: bool = False  #: read by a template (the fix is a template expression)


class _Seen:
    """What one pass found about one read place: only first occurrences and counts."""

    def __init__(self) -> None:
        self.missing = 0  #: rows without the column
        self.first_missing: int | None = None
        self.present: tuple[int, Any] | None = None  #: the first row with a value there
        self.other_kind: tuple[int, Any] | None = None  #: the first value of another kind
        self.not_text: tuple[int, Any] | None = None  #: the first value that is not text


def check_rows(source: Source, rows: Iterable[Row], reads: dict[str | RowPath, Read]) -> None:
    """Check the values the steps read straight from the source, before any call.

    ``reads`` maps a column (or a place inside one: ``("person", "address", "street")``) to a
    :class:`Read`. Raises :class:`InputError` when a row holds text that cannot be written as
    UTF-8 (a lone surrogate: no model, cache or output file could take it), when a column is
    missing from some (not all: the pipeline check reports that) rows, when a place a model
    reads is empty in every row or holds different types in different rows, or when a place
    printed whole into a prompt holds an object, a list or bytes in any row.

    ``rows`` is read once, one row at a time (a source's :meth:`Source.stream` is fine): only
    the first occurrence of each problem is kept, and the one reported is the one a check of
    all rows at once would report.
    """
    checker = _RowChecker(reads)
    for i, row in enumerate(rows):
        checker.feed(i, row)
    checker.finish(source)


def scan_and_check(source: Source, steps: list[Any]) -> SourceScan:
    """:meth:`Source.scan` and :func:`check_rows` (with the places ``steps`` read:
    :func:`source_reads`) in one pass over the source when its first row has every column of
    the others (the usual case); otherwise the check takes a second pass."""
    rows = source.stream()
    first = next(rows, None)
    rows.close()
    guess = source_reads(steps, list(first) if first is not None else [])
    checker = _RowChecker(guess)
    count = 0
    seen: dict[str, None] = {}
    common: list[str] | None = None
    for i, row in enumerate(source.stream()):
        count += 1
        if len(row) != len(seen) or any(c not in seen for c in row):
            seen.update(dict.fromkeys(row))
        if common is None:
            common = list(row)
        elif len(row) != len(common) or any(c not in row for c in common):
            common = [c for c in common if c in row]
        checker.feed(i, row)
    if not count:
        raise InputError(f"{source.name} has no rows: give at least one input row")
    scan = SourceScan(count, list(seen), common or [])
    reads = source_reads(steps, scan.columns)
    if reads == guess:
        checker.finish(source)
    else:
        check_rows(source, source.stream(), reads)
    return scan


class _RowChecker:
    """:func:`check_rows`, fed one row at a time."""

    def __init__(self, reads: dict[str | RowPath, Read]) -> None:
        from ..tasks.base import not_text

        self._not_text = not_text
        self.places = [
            (key if isinstance(key, tuple) else (key,), read) for key, read in reads.items()
        ]
        self.seen = [_Seen() for _ in self.places]
        self.bad_text: tuple[int, str] | None = None
        self.total = 0

    def feed(self, i: int, row: Row) -> None:
        self.total += 1
        if self.bad_text is None:
            bad = unencodable(row)
            if bad is not None:
                self.bad_text = (i, bad)
        for (path, read), state in zip(self.places, self.seen, strict=True):
            if len(path) == 1 and path[0] not in row:
                state.missing += 1
                if state.first_missing is None:
                    state.first_missing = i
                continue
            if not read.model_reads and not read.as_text:
                continue
            value, broken = lookup(row, path)
            if broken is not None or is_missing(value):
                continue
            if state.present is None:
                state.present = (i, value)
            elif (
                read.model_reads
                and state.other_kind is None
                and kind_of(value) != kind_of(state.present[1])
            ):
                state.other_kind = (i, value)
            if read.as_text and state.not_text is None and self._not_text(value) is not None:
                state.not_text = (i, value)

    def finish(self, source: Source) -> None:
        """Raise the error a check of all rows at once would raise first, if any."""
        total = self.total
        if self.bad_text is not None:
            i, bad = self.bad_text
            raise InputError(
                f"{source.where(i)}: {bad}; that text cannot be written as UTF-8 (half of an emoji "
                "or other two-part character): fix or remove it in the source"
            )
        for (path, read), state in zip(self.places, self.seen, strict=True):
            column, name = path[0], path_text(path)
            what = f"column {column!r}" if len(path) == 1 else name
            if state.missing and state.first_missing is not None:
                if state.missing < total:
                    raise InputError(
                        f"{source.where(state.first_missing)}: the row has no column {column!r} ({state.missing} of {total} rows lack it); "
                        f"{read.who} needs it in every row"
                    )
                continue
            if not read.model_reads and not read.as_text:
                continue
            if read.model_reads and state.present is None:
                plural = "s" if total != 1 else ""
                empty = "empty" if len(path) == 1 else "empty or absent"
                raise InputError(
                    f"{source.name}: {what} is {empty} in all {total} row{plural}; {read.who} needs a value there"
                )
            if read.model_reads and state.present is not None and state.other_kind is not None:
                (first_i, first_v), (i, v) = state.present, state.other_kind
                raise InputError(
                    f"{source.where(i)}: {what} holds {kind_of(v)} here but {kind_of(first_v)} in {source.where(first_i)}; "
                    f"{read.who} reads it: give it one type in every row"
                )
            if read.as_text and state.not_text is not None:
                _check_text(source, path, what, read, [state.not_text])


def _check_text(
    source: Source, path: RowPath, what: str, read: Read, present: list[tuple[int, Any]]
) -> None:
    from ..tasks.base import how_to_reach, not_text

    for i, value in present:
        kind = not_text(value)
        if kind is None:
            continue
        fix = (
            f"write {how_to_reach(path, value)} in the template"
            if read.template
            else "point the step at a column that holds text"
        )
        raise InputError(
            f"{source.where(i)}: {what} holds {kind}, which {read.who} would put into the prompt "
            f"as Python text; {fix}"
        )


def all_columns(rows: list[Row]) -> list[str]:
    """Columns present in *any* row, in first-seen order."""
    seen: dict[str, None] = {}
    for r in rows:
        seen.update(dict.fromkeys(r))
    return list(seen)


def source_reads(steps: list[Any], columns: list[str]) -> dict[str | RowPath, Read]:
    """Which source columns (and places inside them) the steps read before any step has
    changed them, for :func:`check_rows`.

    A column counts as changed once a step writes it, drops it, or a non-model step reads it
    (a rename or an expand may change its values). Places inside a column
    (``Step.required_paths``) are keyed by their path tuple; places printed whole into a prompt
    (``Step.text_paths``) are marked ``as_text``.
    """
    reads: dict[str | RowPath, Read] = {}
    touched: set[str] = set()
    available = list(columns)
    for i, step in enumerate(steps, start=1):
        is_model = bool(step.models())
        required = step.required_columns()
        who = f"step {i} ({step.label})"
        for c in required:
            if (
                c in columns
                and c not in touched
                and (c not in reads or (is_model and not reads[c].model_reads))
            ):
                reads[c] = Read(who, is_model)
        if is_model:
            fresh = [p for p in step.required_paths() if p[0] in columns and p[0] not in touched]
            for p in fresh:
                if len(p) > 1:
                    reads.setdefault(p, Read(who, True))
            for p in step.text_paths():
                if p[0] not in columns or p[0] in touched:
                    continue
                key: str | RowPath = str(p[0]) if len(p) == 1 else p
                old = reads.get(key) or Read(who, p in fresh)
                reads[key] = old._replace(as_text=True, template=hasattr(step, "template"))
        try:
            after = step.output_columns(available)
        except Exception:  # the pipeline check reports what is wrong with this step
            break
        touched |= (
            set(step.produces()) | (set(available) - set(after)) | (set(after) - set(available))
        )
        if not is_model:
            touched |= set(required)
        available = after
    return reads

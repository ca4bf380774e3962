"""Sources: where rows come from. Each knows its columns and size before any model is called.

- ``RowsSource`` — a list of dicts (inline in a recipe or from Python)
- ``JsonlSource`` / ``ParquetSource`` — local files
- ``HFSource`` — a ``datasets`` dataset or a dataset already on disk (``datasets`` extra)
- ``EmptyRows`` — N empty rows, for techniques that generate from nothing (Magpie)

Bad input fails here with one line naming the file, line and problem: unreadable files, bad JSON,
non-UTF-8 lines, NaN, no rows, oversized lines. :func:`check_rows` checks the *values* of the
columns the steps read, before any model call: a column missing from some rows, empty in every
row, or holding different types in different rows is one clear error. A value empty in only some
rows is not an error here: the runner records those rows as ``empty input`` and keeps the rest.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import InputError, MissingDependency
from ..rows import Row, is_missing

MAX_ROW_BYTES = 8 * 1024 * 1024


class Source:
    """Rows with known columns. ``limit`` caps how many are read."""

    name = "source"

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit

    def rows(self) -> list[Row]:
        raise NotImplementedError

    def load(self) -> list[Row]:
        """All rows (up to ``limit``), checked: at least one row, each a dict."""
        rows = self.rows()
        if self.limit is not None:
            rows = rows[: self.limit]
        if not rows:
            raise InputError(f"{self.name} has no rows: give at least one input row")
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise InputError(
                    f"{self.where(i)}: the row is {kind_of(row)}, not an object with columns"
                )
        return rows

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
        return [
            dict(r) if isinstance(r, dict) else r for _ in range(self.repeat) for r in self.data
        ]


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
        n = min(self.n, self.limit) if self.limit is not None else self.n
        return [{"row": i, **self.fields} for i in range(n)]


class JsonlSource(Source):
    def __init__(self, path: str | Path, limit: int | None = None) -> None:
        super().__init__(limit)
        self.path = Path(path)
        self.name = str(self.path)
        self.lines: list[int] = []

    def where(self, index: int) -> str:
        if index < len(self.lines):
            return f"{self.path}:{self.lines[index]}"
        return super().where(index)

    def rows(self) -> list[Row]:
        if not self.path.exists():
            raise InputError(f"{self.path}: no such file")
        rows: list[Row] = []
        self.lines = []
        with self.path.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if self.limit is not None and len(rows) >= self.limit:
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
                rows.append(value)
                self.lines.append(lineno)
        return rows


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
        import pyarrow.parquet as pq

        files = sorted(self.path.rglob("*.parquet")) if self.path.is_dir() else [self.path]
        if not files or not files[0].exists():
            raise InputError(f"{self.path}: no parquet files found")
        rows: list[Row] = []
        for f in files:
            try:
                table = pq.read_table(f)
            except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
                raise InputError(
                    f"{f}: not a readable parquet file ({str(exc).splitlines()[0]})"
                ) from None
            rows.extend(table.to_pylist())
            if self.limit is not None and len(rows) >= self.limit:
                break
        return [_clean_nan(r) for r in rows]


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


def check_rows(source: Source, rows: list[Row], reads: dict[str, tuple[str, bool]]) -> None:
    """Check the values of the columns steps read straight from the source, before any call.

    ``reads`` maps a column to (who reads it, e.g. ``step 1 (text_generation)``, whether a model
    step reads its value). Raises :class:`InputError` when a column is missing from some (not
    all: the pipeline check reports that) rows, or — for columns a model reads — when it is empty
    in every row or holds different types in different rows.
    """
    total = len(rows)
    for column, (who, model_reads) in reads.items():
        missing = [i for i, r in enumerate(rows) if column not in r]
        if missing and len(missing) < total:
            raise InputError(
                f"{source.where(missing[0])}: the row has no column {column!r} ({len(missing)} of {total} rows lack it); "
                f"{who} needs it in every row"
            )
        if missing or not model_reads:
            continue
        values = [r[column] for r in rows]
        present = [(i, v) for i, v in enumerate(values) if not is_missing(v)]
        if not present:
            plural = "s" if total != 1 else ""
            raise InputError(
                f"{source.name}: column {column!r} is empty in all {total} row{plural}; {who} needs a value there"
            )
        first_i, first_v = present[0]
        first_kind = kind_of(first_v)
        for i, v in present:
            if kind_of(v) != first_kind:
                raise InputError(
                    f"{source.where(i)}: column {column!r} holds {kind_of(v)} here but {first_kind} in {source.where(first_i)}; "
                    f"{who} reads it: give it one type in every row"
                )


def all_columns(rows: list[Row]) -> list[str]:
    """Columns present in *any* row, in first-seen order."""
    seen: dict[str, None] = {}
    for r in rows:
        seen.update(dict.fromkeys(r))
    return list(seen)


def source_reads(steps: list[Any], columns: list[str]) -> dict[str, tuple[str, bool]]:
    """Which source columns the steps read before any step has changed them.

    Returns column → (``step N (label)``, whether a model step reads its value), for
    :func:`check_rows`. A column counts as changed once a step writes it, drops it, or a
    non-model step reads it (a rename or an expand may change its values).
    """
    reads: dict[str, tuple[str, bool]] = {}
    touched: set[str] = set()
    available = list(columns)
    for i, step in enumerate(steps, start=1):
        is_model = bool(step.models())
        required = step.required_columns()
        for c in required:
            if (
                c in columns
                and c not in touched
                and (c not in reads or (is_model and not reads[c][1]))
            ):
                reads[c] = (f"step {i} ({step.label})", is_model)
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

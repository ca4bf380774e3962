"""Sources: where rows come from. Each knows its columns and size before any model is called.

- ``RowsSource`` — a list of dicts (inline in a recipe or from Python)
- ``JsonlSource`` / ``ParquetSource`` — local files
- ``HFSource`` — a ``datasets`` dataset or a dataset already on disk (``datasets`` extra)
- ``EmptyRows`` — N empty rows, for techniques that generate from nothing (Magpie)

Bad input fails here with one line naming the file, line and problem.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import InputError, MissingDependency
from ..rows import Row

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
                raise InputError(f"{self.name}: row {i + 1} is a {type(row).__name__}, not an object with columns")
        return rows

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

    def __init__(self, data: list[Row], limit: int | None = None, repeat: int = 1) -> None:
        super().__init__(limit)
        self.data = data
        self.repeat = repeat

    def rows(self) -> list[Row]:
        return [dict(r) if isinstance(r, dict) else r for _ in range(self.repeat) for r in self.data]


class EmptyRows(Source):
    """``n`` rows with only an index column (``row``) — for generation from nothing."""

    name = "generated rows"

    def __init__(self, n: int, limit: int | None = None, fields: dict[str, Any] | None = None) -> None:
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

    def rows(self) -> list[Row]:
        if not self.path.exists():
            raise InputError(f"{self.path}: no such file")
        rows: list[Row] = []
        with self.path.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if self.limit is not None and len(rows) >= self.limit:
                    break
                if len(raw) > MAX_ROW_BYTES:
                    raise InputError(f"{self.path}:{lineno}: line is {len(raw)} bytes, over the {MAX_ROW_BYTES}-byte limit per row")
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InputError(f"{self.path}:{lineno}: not UTF-8 (byte {exc.start}); re-encode the file as UTF-8") from None
                if not text.strip():
                    continue
                try:
                    value = json.loads(text, parse_constant=_reject_constant)
                except ValueError as exc:
                    raise InputError(f"{self.path}:{lineno}: not valid JSON ({exc})") from None
                if not isinstance(value, dict):
                    raise InputError(f"{self.path}:{lineno}: each line must be a JSON object, got {type(value).__name__}")
                rows.append(value)
        return rows


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


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
            rows.extend(pq.read_table(f).to_pylist())
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
            ds = datasets.load_from_disk(ds) if Path(ds).exists() else datasets.load_dataset(ds, split=self.split)
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
            raise InputError(f"{p}: a .json source must hold a list of objects")
        return RowsSource(data, limit)
    if p.suffix == ".parquet":
        return ParquetSource(p, limit)
    raise InputError(f"{p}: unknown input type; use .jsonl, .json, .parquet or a dataset folder")

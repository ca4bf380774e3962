"""Column steps: keep, drop, rename, expand lists into rows, group columns into a list."""

from __future__ import annotations

from typing import ClassVar

from ..errors import Dropped, PipelineError
from ..rows import Row
from .base import Context, Step


class Keep(Step):
    """Keep only ``columns``, in this order."""

    kind: ClassVar[str] = "keep"
    columns: list[str]

    def required_columns(self) -> list[str]:
        return list(self.columns)

    def output_columns(self, columns: list[str]) -> list[str]:
        return list(self.columns)

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        return [{c: row[c] for c in self.columns}]


class Drop(Step):
    """Remove ``columns``."""

    kind: ClassVar[str] = "drop"
    columns: list[str]

    def required_columns(self) -> list[str]:
        return list(self.columns)

    def output_columns(self, columns: list[str]) -> list[str]:
        return [c for c in columns if c not in self.columns]

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        return [{k: v for k, v in row.items() if k not in self.columns}]


def _refuse_collisions(label: str, mapping: dict[str, str], columns: list[str]) -> None:
    """Refuse a ``{old: new}`` mapping that would lose a column: two olds onto one new name,
    or a new name the rows already have (unless that column is itself renamed away)."""
    seen: dict[str, str] = {}
    for old, new in mapping.items():
        if new in seen:
            raise PipelineError(
                f"step {label}: {seen[new]!r} and {old!r} are both renamed to {new!r}, so one "
                "would be lost; give them different names or drop one first"
            )
        seen[new] = old
        if new != old and new in columns and new not in mapping:
            raise PipelineError(
                f"step {label}: renaming {old!r} to {new!r} would replace the column {new!r} the "
                f"rows already have; drop or rename {new!r} first, or pick another name"
            )


class Rename(Step):
    """Rename columns: ``{old: new}``. Refused (before any call) when it would lose a column:
    two columns renamed to one name, or a new name the rows already have (swaps are fine)."""

    kind: ClassVar[str] = "rename"
    columns: dict[str, str]

    def required_columns(self) -> list[str]:
        return list(self.columns)

    def output_columns(self, columns: list[str]) -> list[str]:
        _refuse_collisions(self.label, self.columns, columns)
        out = [
            self.columns.get(c, c)
            for c in columns
            if c not in self.columns.values() or c in self.columns
        ]
        return list(dict.fromkeys(out))

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        out = {k: v for k, v in row.items() if k not in self.columns.values() or k in self.columns}
        return [{self.columns.get(k, k): v for k, v in out.items()}]


class Expand(Step):
    """Turn list columns into one row per item (lists zipped; ``rename`` maps list → item column).

    Refused before any call when an item column would replace a column the rows keep, or two
    lists would land in one column."""

    kind: ClassVar[str] = "expand"
    columns: list[str]
    rename: dict[str, str] = {}

    def required_columns(self) -> list[str]:
        return list(self.columns)

    def output_columns(self, columns: list[str]) -> list[str]:
        stray = [c for c in self.rename if c not in self.columns]
        if stray:
            raise PipelineError(
                f"step {self.label}: rename names {stray[0]!r}, which is not one of the expanded "
                f"columns {self.columns}; list it in columns or use a rename step"
            )
        kept = [c for c in columns if c not in self.columns]  # the expanded lists are replaced
        _refuse_collisions(self.label, {c: self.rename.get(c, c) for c in self.columns}, kept)
        out = [self.rename.get(c, c) for c in columns]
        return list(dict.fromkeys(out))

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        lists = []
        for c in self.columns:
            value = row[c]
            if not isinstance(value, list):
                raise Dropped(
                    "not a list", f"column {c!r} holds {type(value).__name__}, expand needs a list"
                )
            lists.append(value)
        lengths = {len(v) for v in lists}
        if len(lengths) > 1:
            raise Dropped(
                "lists of different lengths",
                f"columns {self.columns} have lengths {sorted(lengths)}",
            )
        if lengths == {0}:
            raise Dropped("empty list", f"column {self.columns[0]!r} is empty")
        base = {k: v for k, v in row.items() if k not in self.columns}
        out = []
        for items in zip(*lists, strict=True):
            new = dict(base)
            for c, item in zip(self.columns, items, strict=True):
                new[self.rename.get(c, c)] = item
            out.append(new)
        return out


class Group(Step):
    """Collect several columns of a row into one list column ``output`` (e.g. two answers → pool)."""

    kind: ClassVar[str] = "group"
    columns: list[str]
    output: str

    def required_columns(self) -> list[str]:
        return list(self.columns)

    def produces(self) -> list[str]:
        return [self.output]

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        return [{**row, self.output: [row[c] for c in self.columns]}]

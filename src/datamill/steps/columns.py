"""Column steps: keep, drop, rename, expand lists into rows, group columns into a list."""

from __future__ import annotations

from typing import ClassVar

from ..errors import Dropped
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


class Rename(Step):
    """Rename columns: ``{old: new}``. A renamed column replaces one that had the new name."""

    kind: ClassVar[str] = "rename"
    columns: dict[str, str]

    def required_columns(self) -> list[str]:
        return list(self.columns)

    def output_columns(self, columns: list[str]) -> list[str]:
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
    """Turn list columns into one row per item (lists zipped; ``rename`` maps list → item column)."""

    kind: ClassVar[str] = "expand"
    columns: list[str]
    rename: dict[str, str] = {}

    def required_columns(self) -> list[str]:
        return list(self.columns)

    def output_columns(self, columns: list[str]) -> list[str]:
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

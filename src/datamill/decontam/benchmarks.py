"""A benchmark to decontaminate against: a local file or dataset folder, read as items.

A benchmark is named in a step's ``against`` list either by its path (a JSONL/JSON/Parquet file, a
datamill output folder, a Hugging Face ``save_to_disk`` folder, or a pack made by ``datamill
decontam pack``) or by a mapping ``{path: F, columns: [question, answer], id: COLUMN, name: N}``.
Raw files are read from their ``text`` column unless ``columns`` says otherwise; each column of
an item is a separate text (an n-gram never spans two columns). An item's id is the value of its
``id`` column, else its 0-based row number; ids (never texts) are what drops are recorded with.

Deliberately not here: downloading (benchmarks are local), hashing (``decontam.text``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError, InputError
from ..io.sources import source_from_path
from ..steps.paths import RecipePath, where_looked

PACK_SUFFIX = ".npz"


class BenchmarkSpec(BaseModel):
    """One entry of ``against``: where the benchmark is and how to read it."""

    model_config = ConfigDict(extra="forbid")
    path: RecipePath
    columns: list[str] = Field(default_factory=lambda: ["text"], min_length=1)
    id: str | None = None
    name: str | None = None

    @property
    def is_pack(self) -> bool:
        return Path(self.path).suffix == PACK_SUFFIX

    @property
    def label(self) -> str:
        """The benchmark's name: ``name``, else the file's (or folder's) name without suffix."""
        return self.name or Path(self.path).stem or str(self.path)


@dataclass(frozen=True)
class Item:
    """A benchmark item: its id and its texts (one per column that holds one)."""

    id: str
    texts: tuple[str, ...]


def _texts(value: Any) -> list[str]:
    """The texts of a benchmark cell: a string, a number, or a list of them / of chat messages."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [str(value)]
    if isinstance(value, list):
        out: list[str] = []
        for v in value:
            out += _texts(v.get("content") if isinstance(v, dict) else v)
        return out
    return []


def read_items(spec: BenchmarkSpec) -> list[Item]:
    """The items of a raw benchmark (not a pack). Raises :class:`InputError` naming the file
    when it cannot be read or has none of the columns."""
    try:
        rows = source_from_path(spec.path).load()
    except InputError as exc:
        raise InputError(f"benchmark {spec.label!r}: {exc}") from None
    have: set[str] = set()
    for r in rows[:1000]:
        have.update(r)
    missing = [c for c in [*spec.columns, *([spec.id] if spec.id else [])] if c not in have]
    if missing:
        raise InputError(
            f"benchmark {spec.path} has no column {missing[0]!r} (its columns: "
            f"{', '.join(sorted(have)) or 'none'}); choose its text and id columns "
            f"({{path: {spec.path}, columns: [...], id: ...}} in a recipe, --column/--id for a pack)"
        )
    items = []
    for i, row in enumerate(rows):
        texts = tuple(t for c in spec.columns for t in _texts(row.get(c)))
        ident = row.get(spec.id) if spec.id else None
        items.append(Item(str(i) if ident is None else str(ident), texts))
    return items


def check_path(spec: BenchmarkSpec, recipe_dir: Path | None = None) -> None:
    """Refuse, with one line, a benchmark that is not there or a pack given a column mapping
    (``recipe_dir``: the folder of the recipe that names it, for the message)."""
    p = Path(spec.path)
    if not p.exists():
        where = where_looked(spec.path, recipe_dir)
        raise ConfigError(
            f"benchmark {spec.path!r} does not exist{where}: give a JSONL/Parquet file, a "
            "dataset folder, or a pack made by 'datamill decontam pack'"
        )
    if spec.is_pack and (spec.id is not None or spec.columns != ["text"]):
        raise ConfigError(
            f"benchmark {spec.path!r} is a pack: its columns and ids were chosen when it was "
            "made; give only path (and name)"
        )


__all__ = ["PACK_SUFFIX", "BenchmarkSpec", "Item", "check_path", "read_items"]

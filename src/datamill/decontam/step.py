"""The ``decontaminate`` step: drop (or tag) rows whose texts overlap an evaluation benchmark.

    decontaminate:
      columns: [instruction, response]
      against: [gsm8k_test.jsonl, {path: mmlu.parquet, columns: [question], id: qid}, packs/math.npz]
      n: 13                 # words per n-gram (GPT-3, Tulu 3: 13; s1, open-r1: 8)
      min_words: 8          # a benchmark item shorter than n words counts inside a text from here
      fuzzy: 95             # optional: rapidfuzz ratio ≥ 95 with a whole item (OpenThoughts)
      embedding: {embedder: minilm, threshold: 0.95}   # optional: cosine with an item
      action: drop          # or tag: adds `contaminated` (bool) and `contamination` (matches)

Each text of each chosen column (a string, or the contents of a list of chat messages) is looked
up in every benchmark (``decontam.index`` says how); fuzzy and embedding matchers only run for
benchmarks the n-grams did not already match, and only for raw benchmarks (a pack holds no text).
A dropped row is recorded with reason ``contaminated: BENCH`` (its first benchmark in ``against``
order) and a detail naming the item id, the method, the column and the matching span.

Counted in ``run.json`` ``events`` for the report's per-benchmark table (``report.build``):
``decontamination/BENCH/checked`` per row, and per row that matches ``BENCH``:
``decontamination/BENCH/flagged`` and ``decontamination/BENCH/<ngram|fuzzy|embedding>``.

A relative benchmark path in a recipe is found in the recipe's folder, else the working folder
(``steps.paths``, as every path a recipe names).
The index is built once per process, on the first row (in a worker thread, under a lock) and
kept for the next run with the same files; benchmarks that are missing, packs made with another
``n`` or normalisation, and unknown parameters are refused when the step is built.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from .._sync import run_sync
from ..errors import ConfigError, Dropped, MissingDependency
from ..models.embeddings import embed_cached, load_embedder, normalize
from ..rows import Row
from ..steps.base import Context, Step
from ..steps.embed import EmbedderSpec
from ..steps.paths import recipe_dir
from .benchmarks import BenchmarkSpec, check_path, read_items
from .index import Index, Match
from .pack import NgramTable, read_header
from .text import words

EVENT = "decontamination"

_INDEXES: dict[str, Index] = {}
_LOCK = threading.Lock()


class EmbeddingMatch(BaseModel):
    """``embedding:`` — flag a text whose cosine with a benchmark item is ≥ ``threshold``."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    embedder: EmbedderSpec = "minilm"
    threshold: float = Field(default=0.95, gt=0.0, le=1.0)


class Decontaminate(Step):
    """Drop or tag rows that overlap a benchmark (see the module note)."""

    kind: ClassVar[str] = "decontaminate"
    columns: list[str] = Field(min_length=1)
    against: list[BenchmarkSpec] = Field(min_length=1)
    n: int = Field(default=13, ge=1, le=64)
    min_words: int = Field(default=8, ge=1)
    fuzzy: float | None = Field(default=None, gt=0.0, le=100.0)
    embedding: EmbeddingMatch | None = None
    action: Literal["drop", "tag"] = "drop"
    _index: Index | None = PrivateAttr(default=None)

    @field_validator("against", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        if isinstance(value, (str, Path)):
            value = [value]
        if isinstance(value, list):
            return [{"path": str(v)} if isinstance(v, (str, Path)) else v for v in value]
        return value

    @model_validator(mode="after")
    def _check(self) -> Decontaminate:
        if self.min_words > self.n:
            raise ConfigError(
                f"decontaminate: min_words ({self.min_words}) is larger than n ({self.n})"
            )
        names: set[str] = set()
        raw = 0
        for spec in self.against:
            check_path(spec, recipe_dir())
            if spec.is_pack:
                head = read_header(spec.path)
                if head["n"] != self.n:
                    raise ConfigError(
                        f"pack {spec.path} holds {head['n']}-grams but the step asks n: {self.n}; "
                        f"set n: {head['n']} or make the pack again with --n {self.n}"
                    )
                labels = [spec.name] if spec.name else [b["name"] for b in head["benchmarks"]]
            else:
                raw += 1
                labels = [spec.label]
            for label in labels:
                if label in names:
                    raise ConfigError(
                        f"two benchmarks are called {label!r}: give one another name "
                        f"({{path: ..., name: ...}})"
                    )
                names.add(label)
        if (self.fuzzy is not None or self.embedding is not None) and not raw:
            raise ConfigError(
                "decontaminate: fuzzy and embedding matching compare texts, and packs hold only "
                "hashes: give at least one benchmark as a JSONL/Parquet file"
            )
        if self.fuzzy is not None:
            try:
                import rapidfuzz  # noqa: F401
            except ImportError:
                raise MissingDependency("decontaminate with fuzzy", "decontam") from None
        return self

    def required_columns(self) -> list[str]:
        return list(self.columns)

    def produces(self) -> list[str]:
        return ["contaminated", "contamination"] if self.action == "tag" else []

    def updates(self) -> list[str]:
        return []

    # -- the index ------------------------------------------------------------------------------

    def _key(self) -> str:
        files = []
        for spec in self.against:
            st = Path(spec.path).stat()
            files.append(
                [str(Path(spec.path).resolve()), st.st_mtime_ns, st.st_size, spec.model_dump()]
            )
        emb = None
        if self.embedding is not None:
            embedder = self.embedding.embedder
            emb = [
                embedder if isinstance(embedder, str) else embedder.identity,
                self.embedding.threshold,
            ]
        return json.dumps([files, self.n, self.fuzzy is not None, emb])

    def load_index(self) -> Index:
        """The index of ``against`` (built on first use in this process, then shared)."""
        if self._index is None:
            key = self._key()
            with _LOCK:
                if key not in _INDEXES:
                    _INDEXES[key] = self._build()
                self._index = _INDEXES[key]
        return self._index

    def _build(self) -> Index:
        tables: list[NgramTable] = []
        texts: dict[int, tuple[list[str], list[str]]] = {}
        raw_texts: dict[int, tuple[list[str], list[str]]] = {}
        bench = 0
        for spec in self.against:
            if spec.is_pack:
                table = NgramTable.load(spec.path)
                if spec.name:
                    table = table.renamed(spec.name)
            else:
                items = read_items(spec)
                table = NgramTable.from_items(spec.label, items, self.n)
                pairs = [(it.id, t) for it in items for t in it.texts]
                raw_texts[bench] = ([i for i, _ in pairs], [t for _, t in pairs])
                if self.fuzzy is not None:
                    texts[bench] = (
                        [i for i, _ in pairs],
                        [" ".join(words(t)) for _, t in pairs],
                    )
            tables.append(table)
            bench += len(table.benchmarks)
        index = Index(NgramTable.merge(tables), self.min_words, texts)
        if self.embedding is not None:
            embedder = load_embedder(self.embedding.embedder)
            for b, (ids, items_text) in raw_texts.items():
                vectors = run_sync(embed_cached(embedder, items_text)) if items_text else None
                if vectors is not None:
                    index.vectors[b] = (ids, normalize(vectors))
        return index

    # -- rows -----------------------------------------------------------------------------------

    async def matches(self, row: Row) -> list[Match]:
        """Every benchmark ``row`` overlaps (the first match in each), in ``against`` order."""
        index = self._index
        if index is None:  # the first row: build (or find) the index off the event loop
            index = await asyncio.to_thread(self.load_index)
        found: dict[int, Match] = {}
        for column in self.columns:
            for text in _texts(row, column):
                for b, m in index.ngram_matches(text, column).items():
                    found.setdefault(b, m)
                if self.fuzzy is not None and index.texts:
                    for b, m in index.fuzzy_matches(text, column, self.fuzzy, set(found)).items():
                        found.setdefault(b, m)
                if self.embedding is not None and index.vectors:
                    embedder = load_embedder(self.embedding.embedder)
                    vector = normalize(await embed_cached(embedder, [text]))[0]
                    for b, m in index.embedding_matches(
                        text, vector, column, self.embedding.threshold, set(found)
                    ).items():
                        found.setdefault(b, m)
        return [found[b] for b in sorted(found)]

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        matched = await self.matches(row)
        assert self._index is not None
        for name in self._index.benchmarks:
            ctx.count(f"{EVENT}/{name}/checked")
        for m in matched:
            ctx.count(f"{EVENT}/{m.benchmark}/flagged")
            ctx.count(f"{EVENT}/{m.benchmark}/{_method(m.method)}")
        if self.action == "tag":
            return [
                {
                    **row,
                    "contaminated": bool(matched),
                    "contamination": [m.as_dict() for m in matched] or None,
                }
            ]
        if matched:
            also = [m.benchmark for m in matched[1:]]
            detail = matched[0].detail() + (f"; also {', '.join(also)}" if also else "")
            raise Dropped(f"contaminated: {matched[0].benchmark}", detail)
        return [row]


def _method(method: str) -> str:
    return method if method in ("fuzzy", "embedding") else "ngram"


def _texts(row: Row, column: str) -> list[str]:
    """The texts of ``row[column]``: a string, or the strings (or message contents) of a list."""
    value = row.get(column)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        out = []
        for v in value:
            v = v.get("content") if isinstance(v, dict) else v
            if isinstance(v, str):
                out.append(v)
        return out
    raise Dropped(
        "not text", f"column {column!r} holds {type(value).__name__}; decontaminate reads text"
    )


__all__ = ["Decontaminate", "EmbeddingMatch"]

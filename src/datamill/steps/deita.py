"""Deita's score-first, diversity-aware selection (Liu et al., "What Makes Good Data for
Alignment?", arXiv:2312.15685, ICLR 2024).

- :func:`deita_score` / :class:`DeitaScore` — evol score = complexity × quality; for multi-turn
  rows (lists of per-turn scores) the per-turn products are summed, as in the paper's code. With
  only one of the two, that one is the score.
- :class:`DeitaSelect` — the paper's Repr Filter: walk the rows in descending score order and keep
  a row only if its cosine similarity to its nearest neighbour among the rows *already selected*
  is below τ (default 0.9); stop when ``budget`` rows are selected. (distilabel's DeitaFiltering
  instead compares every row with all rows and uses a distance threshold; this follows the paper.)

Memory model of the selection: rows are walked in score order in chunks of ``chunk_size``; each
chunk is embedded on demand (through the vector cache, so re-runs embed nothing) and tested
against the selected vectors, then thrown away. Only the selected rows' unit vectors stay in
memory (``budget × dim × 4`` bytes: 10,000 × 384 → 15 MB) plus one chunk and one block of
similarities (``chunk_size × 4096`` floats: 16 MB at the default 1024); the walk stops as soon as
the budget is full, so rows past that point are never embedded at all. When rows already carry
vectors (``embedding:`` column) those are used instead — they are in memory because the rows are.

Deliberately not here: the scorers that produce complexity and quality (``tasks.deita``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from ..errors import Dropped, PipelineError
from ..models.embeddings import DEFAULT_EMBEDDER
from ..rows import Row
from .base import Context, GlobalStep, Step
from .embed import DiverseSet, EmbedderSpec, row_text, text_columns_for, unit_vectors

CITATION = "Liu et al., What Makes Good Data for Alignment? A Comprehensive Study of Automatic Data Selection in Instruction Tuning, ICLR 2024, arXiv:2312.15685"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def deita_score(complexity: Any, quality: Any) -> float | None:
    """complexity × quality; lists (per-turn scores) give the sum of per-turn products; a missing
    side leaves the other; ``None`` when neither side has a number."""
    c_list = isinstance(complexity, (list, tuple))
    q_list = isinstance(quality, (list, tuple))
    if c_list and q_list:
        pairs = [(_number(c), _number(q)) for c, q in zip(complexity, quality, strict=False)]
        products = [c * q for c, q in pairs if c is not None and q is not None]
        return sum(products) if products else None
    if c_list or q_list:
        values = [_number(v) for v in (complexity if c_list else quality)]
        other = _number(quality if c_list else complexity)
        numbers = [v for v in values if v is not None]
        if not numbers:
            return other
        return sum(numbers) * other if other is not None else sum(numbers)
    c, q = _number(complexity), _number(quality)
    if c is not None and q is not None:
        return c * q
    return c if c is not None else q


class DeitaScore(Step):
    """Per-row ``deita_score`` = complexity × quality (see :func:`deita_score`)."""

    kind: ClassVar[str] = "deita_score"
    citation: ClassVar[str] = CITATION
    complexity: str = "complexity_score"
    quality: str = "quality_score"
    output: str = "deita_score"

    def output_columns(self, columns: list[str]) -> list[str]:
        if self.complexity not in columns and self.quality not in columns:
            raise PipelineError(
                f"step {self.label} needs column {self.complexity!r} or {self.quality!r}; run complexity_scorer / quality_scorer first"
            )
        return columns + ([self.output] if self.output not in columns else [])

    def produces(self) -> list[str]:
        return [self.output]

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        score = deita_score(row.get(self.complexity), row.get(self.quality))
        if score is None:
            raise Dropped(
                "no deita score", f"neither {self.complexity!r} nor {self.quality!r} holds a number"
            )
        return [{**row, self.output: score}]


class DeitaSelect(GlobalStep):
    """Select ``budget`` rows: best score first, skipping rows whose cosine similarity to an
    already-selected row is ≥ ``threshold`` (τ)."""

    kind: ClassVar[str] = "deita_select"
    citation: ClassVar[str] = CITATION
    budget: int = Field(ge=1)
    threshold: float = Field(default=0.9, gt=-1.0, le=1.0)
    complexity: str = "complexity_score"
    quality: str = "quality_score"
    score: str = "deita_score"  #: read when present, else computed from complexity × quality
    columns: list[str] | None = (
        None  #: the text to embed (default: conversation or instruction+response)
    )
    embedding: str | None = None  #: a column with precomputed vectors (then nothing is embedded)
    embedder: EmbedderSpec = DEFAULT_EMBEDDER
    chunk_size: int = Field(default=1024, ge=1)
    order: Literal["score", "input"] = "score"
    similarity_output: str = "deita_nearest_similarity"

    def required_columns(self) -> list[str]:
        return ([self.embedding] if self.embedding else []) + list(self.columns or [])

    def output_columns(self, columns: list[str]) -> list[str]:
        if not any(c in columns for c in (self.score, self.complexity, self.quality)):
            raise PipelineError(
                f"step {self.label} needs a score: column {self.score!r}, {self.complexity!r} or {self.quality!r}; "
                "run complexity_scorer / quality_scorer first"
            )
        if not self.embedding and not self.columns and not text_columns_for(columns):
            raise PipelineError(
                f"step {self.label}: no text to embed among {', '.join(columns)}; set columns: [...] or embedding: COLUMN"
            )
        extra = [c for c in (self.score, self.similarity_output) if c not in columns]
        return columns + extra

    def produces(self) -> list[str]:
        return [self.score, self.similarity_output]

    def updates(self) -> list[str]:
        return [*self.required_columns(), self.score]  # a score present is read, not replaced

    def row_score(self, row: Row) -> float | None:
        given = _number(row.get(self.score))
        if given is not None:
            return given
        return deita_score(row.get(self.complexity), row.get(self.quality))

    async def vectors_for(self, rows: list[Row]) -> np.ndarray:
        """Unit vectors of ``rows`` (precomputed column or embedded now, through the cache)."""
        return await unit_vectors(rows, self.text_of, column=self.embedding, embedder=self.embedder)

    def text_of(self, row: Row) -> str:
        return row_text(row, self.columns or text_columns_for(list(row)))

    async def aprocess_all(
        self, rows: list[Row], drop: Callable[[Row, str, str | None], None], ctx: Context
    ) -> list[Row]:
        scores: list[float] = []
        order: list[int] = []
        for i, row in enumerate(rows):
            s = self.row_score(row)
            if s is None:
                drop(
                    row,
                    "no deita score",
                    f"neither {self.score!r}, {self.complexity!r} nor {self.quality!r} holds a number",
                )
                continue
            scores.append(s)
            order.append(i)
        score_of = dict(zip(order, scores, strict=True))
        order.sort(key=lambda i: (-score_of[i], i))  # best first; ties keep input order
        chosen = DiverseSet(self.threshold, capacity=min(self.budget, len(order), 65536))
        similarity: dict[int, float | None] = {}
        walked = 0
        while walked < len(order) and chosen.size < self.budget:
            chunk = order[walked : walked + self.chunk_size]
            verdicts = chosen.offer(
                await self.vectors_for([rows[i] for i in chunk]), chunk, limit=self.budget
            )
            for i, v in zip(chunk, verdicts, strict=False):
                if v.kept:
                    similarity[i] = v.similarity
                else:
                    assert v.nearest is not None and v.similarity is not None
                    near = chosen.ids[v.nearest]
                    drop(
                        rows[i],
                        "too similar to a selected row",
                        f"cosine {v.similarity:.4f} >= {self.threshold} with input row {near} (score {score_of[near]:g})",
                    )
            walked += len(verdicts)
        for i in order[walked:]:
            drop(
                rows[i],
                "over budget",
                f"{self.budget} rows were selected before this one (score {score_of[i]:g})",
            )
        picked = list(chosen.ids) if self.order == "score" else sorted(chosen.ids)
        return [
            {**rows[i], self.score: score_of[i], self.similarity_output: similarity[i]}
            for i in picked
        ]


__all__ = ["DeitaScore", "DeitaSelect", "deita_score"]

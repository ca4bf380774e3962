"""Embeddings in pipelines: the ``embed`` step, the text a row is embedded by, and the greedy
"keep it unless it is too close to one already kept" set that Deita selection and embedding
dedup share.

- :class:`Embed` writes each row's vector to a column (a global step, so the embedder sees large
  batches). Only needed when a later step or the dataset itself wants the vectors; ``deita_select``
  and ``dedup_embedding`` embed on demand, chunk by chunk, without it.
- :data:`EmbedderSpec` — the type of a step's ``embedder`` field (a checked spec or an Embedder);
  :func:`unit_vectors` — a chunk's unit vectors, from a column of precomputed vectors or embedded.
- :func:`row_text` — the text of a row: the named columns joined, chat ``messages`` rendered as
  ``role: content`` lines.
- :class:`DiverseSet` — unit vectors kept so far (a growing float32 matrix), and the test of a
  chunk of candidates against it *and* against the candidates of the same chunk kept before them.
  Memory: ``kept × dim × 4`` bytes, one chunk of candidates and one ``chunk × 4096`` block of
  similarities; candidates that are not kept are never stored.

Deliberately not here: loading embedders and the vector cache (``models.embeddings``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import AfterValidator, BeforeValidator

from ..models.embeddings import (
    DEFAULT_EMBEDDER,
    Embedder,
    check_embedder_spec,
    embed_cached,
    load_embedder,
    normalize,
)
from ..rows import Row
from .base import Context, GlobalStep
from .paths import recipe_dir, resolve_spec


def _checked_embedder(value: str | Embedder) -> str | Embedder:
    return value if isinstance(value, Embedder) else check_embedder_spec(value)


def _embedder_path(value: Any) -> Any:
    """An ``st:PATH`` spec in a recipe: the folder found beside the recipe (``steps.paths``)."""
    if isinstance(value, str) and value.strip().startswith("st:"):
        return resolve_spec(value.strip(), recipe_dir())
    return value


#: a step's ``embedder`` field: a spec (see models.embeddings), checked when the step is built, or an Embedder
EmbedderSpec = Annotated[
    str | Embedder, BeforeValidator(_embedder_path), AfterValidator(_checked_embedder)
]


async def unit_vectors(
    rows: list[Row], text_of: Callable[[Row], str], *, column: str | None, embedder: str | Embedder
) -> np.ndarray:
    """L2-normalised vectors of ``rows``: column ``column``'s precomputed vectors when it is given,
    else ``text_of`` each row embedded now by ``embedder`` (through the vector cache)."""
    if column:
        return normalize(np.asarray([r[column] for r in rows], dtype=np.float32))
    return normalize(await embed_cached(load_embedder(embedder), [text_of(r) for r in rows]))


def row_text(row: Row, columns: list[str]) -> str:
    """The text of ``row`` over ``columns``: strings as they are, chat messages as
    ``role: content`` lines, lists of strings one per line; missing columns are skipped."""
    parts: list[str] = []
    for c in columns:
        value = row.get(c)
        if value is None:
            continue
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict) and "content" in item:
                    parts.append(f"{item.get('role', 'user')}: {item['content']}")
                elif item is not None:
                    parts.append(str(item))
        else:
            parts.append(str(value))
    return "\n\n".join(p for p in parts if p)


def text_columns_for(columns: list[str]) -> list[str]:
    """A sensible default text for similarity: the conversation if there is one, else the
    instruction/response (or prompt/completion) columns that exist."""
    if "messages" in columns:
        return ["messages"]
    pair: tuple[str, ...]
    for pair in (
        ("instruction", "response"),
        ("prompt", "completion"),
        ("prompt", "chosen"),
        ("question", "response"),
    ):
        found: list[str] = [c for c in pair if c in columns]
        if found:
            return found
    return []


@dataclass
class Verdict:
    """The outcome for one candidate: kept or not, and its nearest kept row before it."""

    kept: bool
    nearest: int | None  #: position (in :attr:`DiverseSet.ids`) of the most similar kept row
    similarity: float | None  #: its cosine similarity (None when nothing was kept before)


class DiverseSet:
    """Greedy diverse selection: a candidate is kept when its cosine similarity to every row kept
    before it is below ``threshold`` (Deita's Repr Filter, arXiv:2312.15685)."""

    #: kept vectors compared per matrix product (bounds the similarity matrix to chunk × block)
    block: int = 4096

    def __init__(self, threshold: float, capacity: int = 1024) -> None:
        self.threshold = threshold
        self._vectors: np.ndarray | None = None
        self._capacity = max(16, capacity)
        self.size = 0
        self.ids: list[Any] = []  #: caller's id of each kept row, in the order kept

    @property
    def vectors(self) -> np.ndarray:
        """The kept unit vectors, ``(size, dim)``."""
        if self._vectors is None:
            return np.zeros((0, 0), dtype=np.float32)
        return self._vectors[: self.size]

    def _append(self, vector: np.ndarray, ident: Any) -> None:
        if self._vectors is None:
            self._vectors = np.empty((self._capacity, vector.shape[0]), dtype=np.float32)
        elif self.size == self._vectors.shape[0]:
            grown = np.empty((self._vectors.shape[0] * 2, self._vectors.shape[1]), dtype=np.float32)
            grown[: self.size] = self._vectors[: self.size]
            self._vectors = grown
        self._vectors[self.size] = vector
        self.size += 1
        self.ids.append(ident)

    def offer(self, vectors: np.ndarray, ids: list[Any], limit: int | None = None) -> list[Verdict]:
        """Test a chunk of candidates in order; keep those far enough from all kept before them.

        ``vectors`` are unit rows. Stops keeping once ``size`` reaches ``limit``; the remaining
        candidates of the chunk get no verdict (the returned list is shorter).
        """
        if vectors.shape[0] == 0:
            return []
        kept_before = self.size
        best_sim = np.full(vectors.shape[0], -np.inf, dtype=np.float32)
        best_at = np.full(vectors.shape[0], -1, dtype=np.int64)
        rows = np.arange(vectors.shape[0])
        for start in range(0, kept_before, self.block):  # (chunk × block) similarities at a time
            sims = vectors @ self.vectors[start : start + self.block].T
            at = sims.argmax(axis=1)
            sim = sims[rows, at]
            better = sim > best_sim
            best_sim[better] = sim[better]
            best_at[better] = at[better] + start
        verdicts: list[Verdict] = []
        for i in range(vectors.shape[0]):
            if limit is not None and self.size >= limit:
                break
            sim, at = float(best_sim[i]), int(best_at[i])
            if self.size > kept_before:  # also test the rows kept from this chunk so far
                new = self._vectors[kept_before : self.size] @ vectors[i]  # type: ignore[index]
                j = int(new.argmax())
                if float(new[j]) > sim:
                    sim, at = float(new[j]), kept_before + j
            has_any = self.size > 0
            keep = (not has_any) or sim < self.threshold
            verdicts.append(Verdict(keep, at if has_any else None, sim if has_any else None))
            if keep:
                self._append(vectors[i], ids[i])
        return verdicts


class Embed(GlobalStep):
    """Write each row's embedding (a list of floats) to ``output``.

    The text is ``columns`` joined (default: the conversation or instruction/response).
    Vectors are L2-normalised when ``normalize`` is set (the default), and cached.
    """

    kind: ClassVar[str] = "embed"
    columns: list[str] | None = None
    output: str = "embedding"
    embedder: EmbedderSpec = DEFAULT_EMBEDDER
    normalize: bool = True
    chunk_size: int = 1024

    def required_columns(self) -> list[str]:
        return list(self.columns or [])

    def output_columns(self, columns: list[str]) -> list[str]:
        if not self.columns and not text_columns_for(columns):
            from ..errors import PipelineError

            raise PipelineError(
                f"step {self.label}: no text to embed in columns {', '.join(columns) or '(none)'}; set columns: [...]"
            )
        return columns + ([self.output] if self.output not in columns else [])

    def produces(self) -> list[str]:
        return [self.output]

    def text_of(self, row: Row) -> str:
        return row_text(row, self.columns or text_columns_for(list(row)))

    async def aprocess_all(
        self, rows: list[Row], drop: Callable[[Row, str, str | None], None], ctx: Context
    ) -> list[Row]:
        embedder = load_embedder(self.embedder)
        out: list[Row] = []
        for start in range(0, len(rows), self.chunk_size):
            chunk = rows[start : start + self.chunk_size]
            vectors = await embed_cached(embedder, [self.text_of(r) for r in chunk])
            if self.normalize:
                vectors = normalize(vectors)
            out.extend({**r, self.output: v.tolist()} for r, v in zip(chunk, vectors, strict=True))
        return out


__all__ = [
    "DiverseSet",
    "Embed",
    "EmbedderSpec",
    "Verdict",
    "row_text",
    "text_columns_for",
    "unit_vectors",
]

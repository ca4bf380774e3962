"""Deduplication: exact, MinHash near-duplicates, embedding near-duplicates. Global steps.

Each keeps the first row of a group (input order) and drops the others through the runner's
failure records, with a pointer to the row it duplicated (``detail``: its input row number and
what matched), so ``run.json`` counts how many rows each step removed and ``failures.jsonl``
says which row every removed one repeated.

- :class:`ExactDedup` — sha256 of the normalised text (Unicode NFKC, case-folded, whitespace
  collapsed).
- :class:`MinHashDedup` — MinHash signatures of character (or word) n-gram shingles, candidates
  from an LSH index (``datasketch``; Broder 1997, the near-duplicate filter used for pretraining
  corpora) tuned a little below ``threshold`` so that fewer pairs slip through, then confirmed by
  the signatures' estimated Jaccard similarity ≥ ``threshold``.
- :class:`EmbeddingDedup` — cosine similarity of sentence embeddings ≥ ``threshold`` to a row
  kept before it (semantic duplicates that share few words). Memory: the kept rows' unit vectors.

Deliberately not here: choosing *which* of a group is best (that is ``deita_select``).
"""

from __future__ import annotations

import hashlib
import itertools
import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Literal

from pydantic import Field

from ..errors import MissingDependency, PipelineError
from ..models.embeddings import DEFAULT_EMBEDDER, load_embedder
from ..rows import Row
from .base import Context, GlobalStep
from .embed import DiverseSet, EmbedderSpec, row_text, text_columns_for, unit_vectors

Drop = Callable[[Row, str, "str | None"], None]
_WORD = re.compile(r"[^\W_]")


def normalize_text(text: str) -> str:
    """The text exact dedup compares: NFKC, case-folded, runs of whitespace → one space."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def text_hash(text: str) -> str:
    return hashlib.sha256(normalize_text(text).encode("utf-8", "surrogatepass")).hexdigest()


def shingles(text: str, ngram: int, unit: Literal["char", "word"]) -> set[str]:
    """The set of n-grams of the normalised text (a shorter text is one shingle)."""
    norm = normalize_text(text)
    if unit == "word":
        words = re.findall(r"\w+", norm)
        if len(words) <= ngram:
            return {" ".join(words)} if words else set()
        return {" ".join(words[i : i + ngram]) for i in range(len(words) - ngram + 1)}
    if len(norm) <= ngram:
        return {norm} if norm else set()
    return {norm[i : i + ngram] for i in range(len(norm) - ngram + 1)}


def has_features(text: str) -> bool:
    """Whether ``text`` holds a letter or digit: texts without one (punctuation, emoji, empty)
    give similarity measures nothing to tell them apart, so dedup compares them exactly."""
    return _WORD.search(text) is not None


def _exact_repeat(
    row: Row, index: int, text: str, first: dict[str, int], drop: Drop, reason: str
) -> bool:
    """Drop ``row`` (and say so) when its normalised text equals an earlier featureless one."""
    key = normalize_text(text)
    if key in first:
        drop(row, reason, f"same text as input row {first[key]} (no words to compare)")
        return True
    first[key] = index
    return False


class _TextDedup(GlobalStep):
    columns: list[str] | None = (
        None  #: the text compared (default: conversation or instruction+response)
    )

    def required_columns(self) -> list[str]:
        return list(self.columns or [])

    def output_columns(self, columns: list[str]) -> list[str]:
        if not self.columns and not text_columns_for(columns):
            raise PipelineError(
                f"step {self.label}: no text to compare among {', '.join(columns) or '(none)'}; set columns: [...]"
            )
        return columns

    def text_of(self, row: Row) -> str:
        return row_text(row, self.columns or text_columns_for(list(row)))

    def flags(self, rows: Iterable[Row], drop: Drop) -> bytearray:
        """One pass over ``rows``: 1 for each row kept, 0 for each dropped (and ``drop`` called
        with it). Only what the comparison needs (hashes, signatures) is held, never the rows,
        so the runner can stream spilled rows through it (``keep_flags``)."""
        raise NotImplementedError

    async def keep_flags(self, rows: Iterable[Row], drop: Drop, ctx: Context | None) -> bytearray:
        """:meth:`flags`, for the runner (global steps that embed override this one)."""
        return self.flags(rows, drop)

    def process_all(self, rows: list[Row], drop: Drop) -> list[Row]:
        return [r for r, keep in zip(rows, self.flags(rows, drop), strict=True) if keep]

    async def aprocess_all(self, rows: list[Row], drop: Drop, ctx: Context | None) -> list[Row]:
        flags = await self.keep_flags(rows, drop, ctx)
        return [r for r, keep in zip(rows, flags, strict=True) if keep]


class ExactDedup(_TextDedup):
    """Drop rows whose normalised text equals an earlier row's."""

    kind: ClassVar[str] = "dedup_exact"

    def flags(self, rows: Iterable[Row], drop: Drop) -> bytearray:
        first: dict[str, int] = {}
        kept = bytearray()
        for i, row in enumerate(rows):
            h = text_hash(self.text_of(row))
            if h in first:
                drop(row, "exact duplicate", f"same text as input row {first[h]} (sha256 {h[:16]})")
                kept.append(0)
                continue
            first[h] = i
            kept.append(1)
        return kept


class MinHashDedup(_TextDedup):
    """Drop rows whose estimated Jaccard similarity to an earlier kept row is ≥ ``threshold``."""

    kind: ClassVar[str] = "dedup_minhash"
    threshold: float = Field(default=0.8, gt=0.0, le=1.0)
    num_perm: int = Field(default=128, ge=16, le=1024)
    ngram: int = Field(default=5, ge=1)
    unit: Literal["char", "word"] = "char"
    seed: int = 1

    def flags(self, rows: Iterable[Row], drop: Drop) -> bytearray:
        try:
            from datasketch import MinHash, MinHashLSH
        except ImportError as exc:
            raise MissingDependency("dedup_minhash", "curation") from exc
        template = MinHash(num_perm=self.num_perm, seed=self.seed)
        # the permutations are drawn once, not per row (datasketch ≥ 2 also wants their scheme)
        reuse: dict[str, Any] = {"permutations": template.permutations}
        if hasattr(template, "scheme"):
            reuse["scheme"] = template.scheme
        # the index looks a little below the threshold (fewer missed pairs); the estimate decides
        lsh = MinHashLSH(threshold=min(0.9, max(0.1, self.threshold - 0.1)), num_perm=self.num_perm)
        signatures: dict[int, Any] = {}
        featureless: dict[str, int] = {}
        kept = bytearray()
        for i, row in enumerate(rows):
            text = self.text_of(row)
            grams = shingles(text, self.ngram, self.unit)
            if not grams:  # every empty signature looks alike: compare such texts exactly
                kept.append(
                    0
                    if _exact_repeat(row, i, text, featureless, drop, "near duplicate (minhash)")
                    else 1
                )
                continue
            m = MinHash(num_perm=self.num_perm, seed=self.seed, **reuse)
            m.update_batch(g.encode("utf-8", "surrogatepass") for g in sorted(grams))
            best, best_j = -1, -1.0
            for cand in lsh.query(m):
                j = m.jaccard(signatures[cand])
                if j > best_j or (j == best_j and cand < best):
                    best, best_j = cand, j
            if best >= 0 and best_j >= self.threshold:
                drop(
                    row,
                    "near duplicate (minhash)",
                    f"estimated Jaccard {best_j:.3f} >= {self.threshold} with input row {best}",
                )
                kept.append(0)
                continue
            signatures[i] = m
            lsh.insert(i, m)
            kept.append(1)
        return kept


class EmbeddingDedup(_TextDedup):
    """Drop rows whose cosine similarity to an earlier kept row is ≥ ``threshold``."""

    kind: ClassVar[str] = "dedup_embedding"
    threshold: float = Field(default=0.95, gt=-1.0, le=1.0)
    embedding: str | None = None  #: a column with precomputed vectors (then nothing is embedded)
    embedder: EmbedderSpec = DEFAULT_EMBEDDER
    chunk_size: int = Field(default=1024, ge=1)

    def required_columns(self) -> list[str]:
        return super().required_columns() + ([self.embedding] if self.embedding else [])

    def output_columns(self, columns: list[str]) -> list[str]:
        if self.embedding:
            return columns
        return super().output_columns(columns)

    def flags(self, rows: Iterable[Row], drop: Drop) -> bytearray:
        raise NotImplementedError("EmbeddingDedup embeds: use keep_flags")

    async def keep_flags(self, rows: Iterable[Row], drop: Drop, ctx: Context | None) -> bytearray:
        """Rows are read ``chunk_size`` at a time; the unit vectors of kept rows are held."""
        kept_set = DiverseSet(self.threshold, capacity=4096)
        embedder = (
            self.embedder if self.embedding else load_embedder(self.embedder)
        )  # loaded once, before any chunk
        kept = bytearray()
        featureless: dict[str, int] = {}
        it = iter(rows)
        start = 0
        while chunk := list(itertools.islice(it, self.chunk_size)):
            ids = list(range(start, start + len(chunk)))
            start += len(chunk)
            # texts without a letter or digit are all unknown tokens to an embedder (one vector
            # for every emoji-only text, say): they are compared exactly instead
            exact = {
                i
                for i, row in zip(ids, chunk, strict=True)
                if not self.embedding and not has_features(self.text_of(row))
            }
            embedded = [(i, r) for i, r in zip(ids, chunk, strict=True) if i not in exact]
            verdicts: dict[int, Any] = {}
            if embedded:
                vectors = await unit_vectors(
                    [r for _, r in embedded], self.text_of, column=self.embedding, embedder=embedder
                )
                offered = kept_set.offer(vectors, [i for i, _ in embedded])
                verdicts = {i: v for (i, _), v in zip(embedded, offered, strict=True)}
            for i, row in zip(ids, chunk, strict=True):
                if i in exact:
                    text = self.text_of(row)
                    repeat = _exact_repeat(
                        row, i, text, featureless, drop, "near duplicate (embedding)"
                    )
                    kept.append(0 if repeat else 1)
                    continue
                v = verdicts[i]
                kept.append(1 if v.kept else 0)
                if not v.kept:
                    assert v.nearest is not None and v.similarity is not None
                    drop(
                        row,
                        "near duplicate (embedding)",
                        f"cosine {v.similarity:.4f} >= {self.threshold} with input row {kept_set.ids[v.nearest]}",
                    )
        return kept


__all__ = [
    "EmbeddingDedup",
    "ExactDedup",
    "MinHashDedup",
    "has_features",
    "normalize_text",
    "shingles",
    "text_hash",
]

"""The lookup a ``decontaminate`` step makes for every text of every row.

:class:`Index` holds the n-gram hashes of all its benchmarks in one sorted array
(``decontam.pack.NgramTable``) and, for benchmarks given as raw files, their normalised texts for
the optional fuzzy matcher (``rapidfuzz`` ``fuzz.ratio`` on normalised texts, 0–100) and their unit
vectors for the optional embedding matcher (cosine). :meth:`Index.ngram_matches` hashes a text's
windows and looks them up with ``np.searchsorted``: memory is the index's, whatever the number of
rows; a row costs a few numpy operations per window length.

Which windows a text of ``m`` words is looked up with:

- every ``n``-word window (when ``m >= n``);
- for each length ``k < n`` of a benchmark item shorter than ``n`` words: every ``k``-word window
  when ``k >= min_words`` (the short item appears whole inside the text), else only the whole
  text when ``m == k`` (a very short item matches only a text that is exactly it, so that
  "yes", or "what is the capital", flags nothing else).

A text shorter than ``n`` words that is part of a longer item is not flagged (it shares no
``n``-gram with it), which is the usual rule (GPT-3, Tulu 3); fuzzy matching catches a short text
that is almost all of an item.

Deliberately not here: what to do with a match (``decontam.step``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .pack import NgramTable
from .text import window_hashes, word_hashes, words

SPAN_CHARS = 200


@dataclass(frozen=True)
class Match:
    """Where a text of a row overlaps a benchmark item."""

    benchmark: str
    item: str  #: the item's id
    method: str  #: ``13-gram``, ``whole item (5 words)``, ``fuzzy``, ``embedding``
    column: str
    span: str  #: the row's normalised words that matched (at most SPAN_CHARS characters)
    score: float  #: share of the text's windows found (n-gram), ratio/100, or cosine

    def as_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "item": self.item,
            "method": self.method,
            "column": self.column,
            "span": self.span,
            "score": round(float(self.score), 4),
        }

    def detail(self) -> str:
        return (
            f"{self.benchmark} item {self.item!r} ({self.method}, score {self.score:.2f}): "
            f"column {self.column!r} {self.span!r}"
        )


def _clip(text: str) -> str:
    return text if len(text) <= SPAN_CHARS else text[: SPAN_CHARS - 1] + "…"


def _longest_run(positions: list[int]) -> tuple[int, int]:
    """The first and last of the longest run of consecutive numbers in sorted ``positions``."""
    best = (positions[0], positions[0])
    start = prev = positions[0]
    for p in positions[1:]:
        if p != prev + 1:
            start = p
        prev = p
        if prev - start > best[1] - best[0]:
            best = (start, prev)
    return best


@dataclass
class Index:
    """All benchmarks of one step, ready to look texts up (see the module note)."""

    table: NgramTable
    min_words: int
    #: benchmark number → (item ids, normalised texts) of raw benchmarks, for the fuzzy matcher
    texts: dict[int, tuple[list[str], list[str]]] = field(default_factory=dict)
    #: benchmark number → (item ids, unit vectors (items, dim)) for the embedding matcher
    vectors: dict[int, tuple[list[str], np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A bitmap of the hashes' top bits (about 64 bits per n-gram: a clean window passes it
        # with probability ≤ 1/64), so most windows are ruled out with one gather instead of a
        # binary search of the whole table.
        count = max(len(self.table.hashes), 1)
        self._bits = min(32, max(16, (count - 1).bit_length() + 6))
        self._shift = np.uint64(64 - self._bits)
        top = (self.table.hashes >> self._shift).astype(np.int64)
        bitmap = np.zeros(1 << (self._bits - 3), dtype=np.uint8)
        np.bitwise_or.at(bitmap, top >> 3, (1 << (top & 7)).astype(np.uint8))
        self._bitmap = bitmap

    @property
    def benchmarks(self) -> list[str]:
        return self.table.benchmarks

    def _maybe(self, query: np.ndarray) -> np.ndarray:
        """Positions of ``query`` hashes that may be in the table (the bitmap's verdict)."""
        top = (query >> self._shift).astype(np.int64)
        return np.flatnonzero((self._bitmap[top >> 3] >> (top & 7).astype(np.uint8)) & 1)

    def _windows(self, m: int) -> list[int]:
        n = self.table.n
        lengths = [n] if m >= n else []
        for k in self.table.short_lengths:
            if (k >= self.min_words and k <= m) or k == m:
                lengths.append(k)
        return lengths

    def ngram_matches(self, text: str, column: str) -> dict[int, Match]:
        """Benchmark number → the first match of ``text`` in it, by n-gram (or whole short item)."""
        tokens = words(text)
        t = self.table
        if not tokens or not len(t.hashes):
            return {}
        lengths = self._windows(len(tokens))
        if not lengths:
            return {}
        query, counts = window_hashes(word_hashes(tokens), lengths)
        hit = self._maybe(query)
        if not len(hit):
            return {}
        pos = np.searchsorted(t.hashes, query[hit])
        hit = hit[t.hashes[np.minimum(pos, len(t.hashes) - 1)] == query[hit]]
        if not len(hit):
            return {}
        pos = np.searchsorted(t.hashes, query[hit])
        right = np.searchsorted(t.hashes, query[hit], side="right")
        starts = np.cumsum([0, *counts]).tolist()
        found: dict[int, Match] = {}
        for segment, k in enumerate(lengths):  # n first, then short items by length
            lo_j, hi_j = starts[segment], starts[segment + 1]
            chosen = (hit >= lo_j) & (hit < hi_j)
            if not chosen.any():
                continue
            by_bench: dict[int, list[tuple[int, int]]] = {}  # bench → (window, item)
            for j, lo, hi in zip(
                hit[chosen].tolist(), pos[chosen].tolist(), right[chosen].tolist(), strict=True
            ):
                for item in t.items[lo:hi].tolist():
                    by_bench.setdefault(int(t.item_bench[item]), []).append((j - lo_j, item))
            for bench, hits in by_bench.items():
                if bench in found:
                    continue
                windows = sorted({j for j, _ in hits})
                first, last = _longest_run(windows)
                item = next(i for j, i in hits if j == first)
                method = f"{k}-gram" if k == t.n else f"whole item ({k} words)"
                found[bench] = Match(
                    benchmark=t.benchmarks[bench],
                    item=t.ids[item],
                    method=method,
                    column=column,
                    span=_clip(" ".join(tokens[first : last + k])),
                    score=len(windows) / counts[segment],
                )
        return found

    def fuzzy_matches(
        self, text: str, column: str, threshold: float, skip: set[int]
    ) -> dict[int, Match]:
        """Benchmark number → the best item whose ``fuzz.ratio`` with ``text`` (both normalised)
        is at least ``threshold`` (0–100), for the raw benchmarks not in ``skip``."""
        from rapidfuzz import fuzz, process

        query = " ".join(words(text))
        found: dict[int, Match] = {}
        if not query:
            return found
        for bench, (ids, choices) in self.texts.items():
            if bench in skip:
                continue
            best = process.extractOne(query, choices, scorer=fuzz.ratio, score_cutoff=threshold)
            if best is not None:
                _, score, i = best
                found[bench] = Match(
                    self.benchmarks[bench], ids[i], "fuzzy", column, _clip(query), score / 100
                )
        return found

    def embedding_matches(
        self, text: str, vector: np.ndarray, column: str, threshold: float, skip: set[int]
    ) -> dict[int, Match]:
        """Benchmark number → the nearest item whose cosine with ``vector`` (a unit vector of
        ``text``) is at least ``threshold``."""
        found: dict[int, Match] = {}
        for bench, (ids, matrix) in self.vectors.items():
            if bench in skip or not len(ids):
                continue
            sims = matrix @ vector
            i = int(np.argmax(sims))
            if sims[i] >= threshold:
                span = _clip(" ".join(words(text)))
                found[bench] = Match(
                    self.benchmarks[bench], ids[i], "embedding", column, span, float(sims[i])
                )
        return found


__all__ = ["SPAN_CHARS", "Index", "Match"]

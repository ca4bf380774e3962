"""Quality metrics of a set of texts: pure functions over lists of strings, cheap by sampling.

- :func:`distinct_n` — unique n-grams / all n-grams over the corpus (Li et al. 2016,
  arXiv:1510.03055): higher is more lexically diverse.
- :func:`rouge_self_overlap` — mean ROUGE-L F over random pairs of texts (lower is more diverse;
  Self-Instruct's novelty measure, arXiv:2212.10560).
- :func:`mean_pairwise_cosine` — mean cosine similarity of all pairs of a sample of unit vectors.
- :func:`summary` / :func:`histogram` — length and rating distributions.

Every function is deterministic (a fixed seed chooses the samples). Deliberately not here:
finding the texts in rows (``report.build``) and drawing (``report.plots``).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

_WORD = re.compile(r"[^\W_]+")
SEED = 0


def words(text: str) -> list[str]:
    """Lowercase runs of letters and digits."""
    return _WORD.findall(text.lower())


def sample(items: Sequence[Any], k: int, seed: int = SEED) -> list[Any]:
    """At most ``k`` items, chosen without replacement by a fixed seed (all of them when fewer)."""
    if len(items) <= k:
        return list(items)
    return random.Random(seed).sample(list(items), k)


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Distinct-n over the corpus; ``None`` when the texts have no n-gram at all."""
    total = 0
    seen: set[tuple[str, ...]] = set()
    for t in texts:
        w = words(t)
        grams = [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else None


def rouge_self_overlap(
    texts: Sequence[str], pairs: int = 300, max_tokens: int = 128, seed: int = SEED
) -> dict[str, Any] | None:
    """Mean ROUGE-L F-measure over up to ``pairs`` random pairs of distinct texts (each cut to
    its first ``max_tokens`` words, which keeps the cost flat for long responses)."""
    from ..steps.filters import lcs_length

    tokens = [words(t)[:max_tokens] for t in texts]
    tokens = [t for t in tokens if t]
    if len(tokens) < 2:
        return None
    rng = random.Random(seed)
    all_pairs = len(tokens) * (len(tokens) - 1) // 2
    if all_pairs <= pairs:
        chosen = [(i, j) for i in range(len(tokens)) for j in range(i + 1, len(tokens))]
    else:
        chosen_set: set[tuple[int, int]] = set()
        while len(chosen_set) < pairs:
            i, j = rng.sample(range(len(tokens)), 2)
            chosen_set.add((min(i, j), max(i, j)))
        chosen = sorted(chosen_set)
    scores = [
        2 * lcs_length(tokens[i], tokens[j]) / (len(tokens[i]) + len(tokens[j])) for i, j in chosen
    ]
    return {
        "mean": round(float(np.mean(scores)), 4),
        "pairs": len(scores),
        "max_tokens": max_tokens,
    }


def mean_pairwise_cosine(vectors: np.ndarray) -> dict[str, Any] | None:
    """Mean (and spread) of the cosine similarity of every pair of rows of ``vectors``."""
    n = vectors.shape[0]
    if n < 2:
        return None
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms == 0, 1.0, norms)
    sims = unit @ unit.T
    upper = sims[np.triu_indices(n, k=1)]
    return {
        "mean": round(float(upper.mean()), 4),
        "p90": round(float(np.percentile(upper, 90)), 4),
        "max": round(float(upper.max()), 4),
        "pairs": int(upper.size),
        "values": upper,  # for the plot; removed before writing JSON
    }


def summary(values: Sequence[float]) -> dict[str, float] | None:
    """min, p10, median, mean, p90, max of a list of numbers."""
    if not values:
        return None
    arr = np.asarray(values, dtype=np.float64)
    return {
        "min": round(float(arr.min()), 3),
        "p10": round(float(np.percentile(arr, 10)), 3),
        "median": round(float(np.median(arr)), 3),
        "mean": round(float(arr.mean()), 3),
        "p90": round(float(np.percentile(arr, 90)), 3),
        "max": round(float(arr.max()), 3),
    }


def histogram(values: Sequence[float], bins: int = 10) -> dict[str, int]:
    """Counts per value when there are few whole-number values (ratings), else per equal bin."""
    if not values:
        return {}
    if all(float(v).is_integer() for v in values) and len(set(values)) <= 20:
        counts = Counter(int(v) for v in values)
        return {str(k): counts[k] for k in sorted(counts)}
    counts_arr, edges = np.histogram(np.asarray(values, dtype=np.float64), bins=bins)
    return {f"{edges[i]:.3g}-{edges[i + 1]:.3g}": int(c) for i, c in enumerate(counts_arr)}


def first_words(texts: Sequence[str], top: int = 15) -> list[tuple[str, int]]:
    """The most common first words (what kinds of requests the data holds, at a glance)."""
    counts = Counter(w[0] for w in (words(t) for t in texts) if w)
    return counts.most_common(top)


__all__ = [
    "distinct_n",
    "first_words",
    "histogram",
    "mean_pairwise_cosine",
    "rouge_self_overlap",
    "sample",
    "summary",
    "words",
]

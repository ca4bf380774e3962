"""Benchmark: Deita selection (``deita_select``) on 10k and 100k rows — time and peak memory.

Rows carry a text and a score; their 384-dimensional vectors (the size of all-MiniLM-L6-v2's)
come from a synthetic embedder that computes each one on demand from the text — clustered, so
that many candidates are near duplicates of earlier ones and the τ test does real work. The
embedding model's own cost is left out on purpose (it is the same whatever the selection does);
``--embedder minilm`` measures the whole thing with the real model instead (slow on a CPU).

Printed per size: wall seconds of the selection (and the part spent making vectors), the peak of memory allocated during it
(tracemalloc, numpy included), the process's max RSS, how many rows were embedded (the walk stops
when the budget is full), and what holding every row's vector at once would take.

    python bench/deita.py                 # 10k and 100k rows, budget 10% of the rows
    python bench/deita.py --sizes 2000 --embedder minilm
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
import tracemalloc

import numpy as np

from datamill.models.embeddings import Embedder, embedding_cache
from datamill.steps.deita import DeitaSelect

DIM = 384


class ClusteredEmbedder(Embedder):
    """``"row N"`` → a unit vector near one of ``clusters`` centres (spread drawn per row)."""

    batch_size = 4096

    def __init__(self, clusters: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.centres = rng.normal(size=(clusters, DIM)).astype(np.float32) / np.sqrt(DIM)
        self.seed = seed
        self.identity = f"bench-clustered:{clusters}:{seed}"
        self.name = "clustered"
        self.embedded = 0
        self.seconds = 0.0

    async def _embed(self, texts: list[str]) -> np.ndarray:
        began = time.perf_counter()
        self.embedded += len(texts)
        ids = np.array([int(t.rsplit(" ", 1)[1]) for t in texts])
        out = np.empty((len(ids), DIM), dtype=np.float32)
        for k, i in enumerate(ids):
            rng = np.random.default_rng((self.seed, int(i)))
            spread = rng.uniform(0.1, 0.6)  # cos to a same-cluster row ≈ 1 / (1 + spread²)
            out[k] = self.centres[i % len(self.centres)] + spread * rng.normal(size=DIM).astype(
                np.float32
            ) / np.sqrt(DIM)
        self.seconds += time.perf_counter() - began
        return out


def bench(n: int, budget: int, threshold: float, embedder_spec: str | None) -> None:
    rng = np.random.default_rng(n)
    scores = rng.integers(1, 7, size=n) * rng.integers(1, 7, size=n)  # complexity × quality, 1..36
    rows = [{"instruction": f"row {i}", "deita_score": float(scores[i])} for i in range(n)]
    embedder: Embedder | None = (
        ClusteredEmbedder(clusters=max(10, n // 20)) if embedder_spec is None else None
    )
    step = DeitaSelect(
        budget=budget,
        threshold=threshold,
        columns=["instruction"],
        embedder=embedder or embedder_spec or "minilm",
    )
    reasons: dict[str, int] = {}

    def drop(row: dict, reason: str, detail: str | None) -> None:
        reasons[reason] = reasons.get(reason, 0) + 1

    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    began = time.perf_counter()
    with embedding_cache(None):  # measure the selection, not SQLite
        kept = asyncio.run(step.aprocess_all(rows, drop, None))  # type: ignore[arg-type]
    seconds = time.perf_counter() - began
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB → MiB on Linux
    embedded = embedder.embedded if isinstance(embedder, ClusteredEmbedder) else "?"
    in_embedder = (
        f" (embedder {embedder.seconds:.2f} s)" if isinstance(embedder, ClusteredEmbedder) else ""
    )
    print(
        f"rows {n:>7,}  budget {budget:>6,}  τ {threshold}  selected {len(kept):>6,}  "
        f"too similar {reasons.get('too similar to a selected row', 0):>6,}  over budget {reasons.get('over budget', 0):>6,}  "
        f"embedded {embedded:>7,}  |  {seconds:6.2f} s{in_embedder}  peak alloc {(peak - base) / 2**20:6.1f} MiB  max RSS {rss:6.0f} MiB  "
        f"(all vectors at once: {n * DIM * 4 / 2**20:.0f} MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--budget-fraction", type=float, default=0.1)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument(
        "--embedder",
        default=None,
        help="a real embedder spec (e.g. minilm) instead of the synthetic one",
    )
    args = parser.parse_args()
    for n in args.sizes:
        bench(n, max(1, int(n * args.budget_fraction)), args.threshold, args.embedder)


if __name__ == "__main__":
    main()

"""Benchmark: the ``decontaminate`` step on 100,000 rows against a pack of 1,000,000 n-grams.

A synthetic benchmark (``datamill.testing.contamination``: sentences of pseudo-words from a
fixed vocabulary, seeded) is generated until its items hold ``--ngrams`` 13-gram windows, packed
(``datamill.decontam.pack``, as ``datamill decontam pack`` does) and saved; the rows are then
generated one at a time and checked by the step against the pack (``step.matches``, what
``process`` does before dropping or tagging): 1 % hold a benchmark item verbatim, 1 % one with
its case, whitespace and punctuation changed, the rest are clean.

Printed: seconds to build and load the pack, seconds (wall and CPU) spent checking rows (row
generation is left out), rows/s, the process's peak RSS before and after checking (the
difference is what checking costs in memory: it does not grow with the rows, which are never
kept), the pack's size, the accuracy (planted items found, clean rows flagged), and the load
average (the machine may be shared).

    python bench/decontam.py                       # 100,000 rows, 1,000,000 n-grams
    python bench/decontam.py --rows 10000 --ngrams 100000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import time
from pathlib import Path

from datamill.decontam.benchmarks import Item
from datamill.decontam.pack import NgramTable
from datamill.decontam.step import Decontaminate
from datamill.testing.contamination import Generator


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--ngrams", type=int, default=1_000_000)
    ap.add_argument("--n", type=int, default=13)
    ap.add_argument(
        "--planted", type=float, default=0.01, help="share of verbatim (and of perturbed) rows"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    gen = Generator(seed=args.seed)

    began = time.perf_counter()
    bench: list[dict[str, str]] = []
    windows = 0
    while windows < args.ngrams:
        item = gen.benchmark(1)[0]
        item["id"] = f"item-{len(bench)}"
        bench.append(item)
        windows += max(len(item["text"].split()) - args.n + 1, 1)
    print(f"benchmark: {len(bench):,} items generated in {time.perf_counter() - began:.1f} s")

    folder = Path(tempfile.mkdtemp(prefix="datamill-bench-decontam-"))
    pack_path = folder / "synthetic.npz"
    began = time.perf_counter()
    table = NgramTable.from_items("synthetic", (Item(b["id"], (b["text"],)) for b in bench), args.n)
    table.save(pack_path)
    built = time.perf_counter() - began
    print(
        f"pack: {len(table.hashes):,} {args.n}-gram hashes, {pack_path.stat().st_size / 2**20:.1f} MiB, "
        f"built and saved in {built:.1f} s"
    )
    del table

    step = Decontaminate(columns=["instruction", "response"], against=[str(pack_path)], n=args.n)
    rss_before_pack = peak_rss_mib()
    began = time.perf_counter()
    step.load_index()
    print(f"pack loaded in {time.perf_counter() - began:.2f} s")

    async def run() -> tuple[float, float, dict[str, list[int]]]:
        wall = cpu = 0.0
        seen = {"clean": [0, 0], "verbatim": [0, 0], "perturbed": [0, 0]}  # [rows, flagged/found]
        for i in range(args.rows):
            r = gen.rng.random()
            label = (
                "verbatim" if r < args.planted else "perturbed" if r < 2 * args.planted else "clean"
            )
            row, item = gen.row(label, bench)
            w0, c0 = time.perf_counter(), time.process_time()
            matches = await step.matches(row)
            wall += time.perf_counter() - w0
            cpu += time.process_time() - c0
            seen[label][0] += 1
            seen[label][1] += any(m.item == item for m in matches) if item else bool(matches)
            if i == 1000:
                seen["_rss_1000"] = [int(peak_rss_mib())]
        return wall, cpu, seen

    rss_loaded = peak_rss_mib()
    wall, cpu, seen = asyncio.run(run())
    rss_1000 = seen.pop("_rss_1000", [0])[0]
    print(
        f"checked {args.rows:,} rows in {wall:.1f} s wall ({cpu:.1f} s CPU): "
        f"{args.rows / wall:,.0f} rows/s wall, {args.rows / cpu:,.0f} rows/s CPU"
    )
    print(
        f"peak RSS: {rss_before_pack:.0f} MiB before the pack, {rss_loaded:.0f} MiB with it loaded, "
        f"{rss_1000} MiB after 1,000 rows, {peak_rss_mib():.0f} MiB after {args.rows:,} rows"
    )
    for label, (rows, hit) in seen.items():
        what = "flagged" if label == "clean" else "found"
        print(f"{label}: {rows:,} rows, {hit:,} {what} ({100 * hit / max(rows, 1):.2f} %)")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

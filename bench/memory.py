"""bench/memory: peak memory (RSS) and rows/s of one pipeline at growing row counts.

The pipeline is one text_generation (topic → response) and format_sft over short source rows
(``{"topic": "topic number N"}``, read from a JSONL file as a user's run would), on the fake
model, written to an output folder (Parquet, run.json, card, quality report). Each size runs in
a fresh Python process, so one size's memory never counts against another's; the peak is the
process's ``ru_maxrss``. CPU per row (the run's CPU seconds / rows) moves less with the load
of a shared machine than rows/s; the load average is printed beside it. The target: the peak at 1M rows within 1.5x of that at 10k (memory
bounded by the rows in flight, not the rows in the run), and rows/s not lower. Usage::

    python bench/memory.py                      # 10k, 100k and 1M rows
    python bench/memory.py --sizes 2000,20000   # quick
    python bench/memory.py --cache              # with the call cache (a fresh SQLite file)
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(rows: int, folder: Path, cache: bool) -> dict[str, float | int]:
    """One run of ``rows`` rows in this process: seconds, rows written, peak RSS in MB."""
    from datamill import FakeModel, FormatSFT, Pipeline, TextGeneration
    from datamill.io.sources import source_from_path

    source = folder / "seeds.jsonl"
    with source.open("w", encoding="utf-8") as fh:
        for i in range(rows):
            fh.write(json.dumps({"topic": f"topic number {i}"}) + "\n")
    model = FakeModel(max_concurrency=64)
    # FakeModel logs every request for tests (model.calls); that log is the test double's
    # memory, not the pipeline's: keep none of it here
    model.calls = collections.deque(maxlen=0)  # type: ignore[assignment]
    pipeline = Pipeline(
        [
            TextGeneration(
                template="Write one question about {{ topic }}.",
                output="response",
                truncated="keep",
            ),
            FormatSFT(instruction="topic", response="response"),
        ],
        source=source_from_path(source),
        models={"default": model},
    )
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    result = pipeline.run(folder / "out", cache=folder / "cache.sqlite" if cache else False)
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    written = json.loads((folder / "out" / "run.json").read_text())["rows"]
    return {
        "rows": rows,
        "written": written,
        "failed": result.stats.failed_rows,
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds, 1),
        "cpu_ms_per_row": round(1000 * cpu / rows, 3),
        "load": round(os.getloadavg()[0], 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated rows")
    parser.add_argument("--cache", action="store_true", help="use a fresh call-cache file")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.dir, args.cache)))
        return
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    results = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="datamill-mem-") as tmp:
            cmd = [sys.executable, __file__, "--child", str(n), "--dir", tmp]
            if args.cache:
                cmd.append("--cache")
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                sys.exit(f"{n} rows failed:\n{out.stderr}")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(
                f"{r['rows']:>9,} rows  {r['peak_rss_mb']:>8.1f} MB peak RSS  "
                f"{r['rows_per_s']:>8.1f} rows/s  {r['cpu_ms_per_row']:.3f} ms CPU/row  "
                f"({r['seconds']} s, {r['written']:,} written, load {r['load']})",
                flush=True,
            )
    if len(results) > 1:
        first, last = results[0], results[-1]
        print(
            f"peak RSS {last['rows']:,} / {first['rows']:,} rows: "
            f"{last['peak_rss_mb'] / first['peak_rss_mb']:.2f}x (target <= 1.5x); "
            f"rows/s {last['rows_per_s'] / first['rows_per_s']:.2f}x (target >= 1.0x)"
        )


if __name__ == "__main__":
    main()

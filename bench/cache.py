"""bench/cache: re-running a finished 10k-row pipeline from the call cache, in seconds.

The pipeline is the course's basic instruction shape: text_generation (seed → question),
text_generation (question → answer), format_sft, over N source rows, on the fake model (so the
first run is quick too). The first run fills a fresh cache file; the re-run, in a new process as
a user would start it, must make no model call and is timed from ``run_pipeline`` to the
written output folder (Parquet, run.json, card, quality report); a second re-run without an
output folder shows how much of that is the rows themselves. Usage::

    python bench/cache.py                 # 10,000 rows
    python bench/cache.py --rows 2000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_once(rows: int, cache: Path, output: Path | None) -> dict[str, float | int]:
    from datamill import FakeModel, FormatSFT, Pipeline, TextGeneration

    pipeline = Pipeline(
        [
            TextGeneration(
                template="Write one question about {{ topic }}.",
                output="instruction",
                truncated="keep",
            ),
            TextGeneration(template="{{ instruction }}", output="response", truncated="keep"),
            FormatSFT(instruction="instruction", response="response"),
        ],
        source=[{"topic": f"topic number {i}"} for i in range(rows)],
        models={"default": FakeModel(max_concurrency=64)},
    )
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    result = pipeline.run(output, cache=cache)
    return {
        "seconds": time.perf_counter() - t0,
        "cpu": time.process_time() - cpu0,
        "rows": len(result.rows),
        "model_calls": result.stats.model_calls,
        "cache_hits": result.stats.cache_hits,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--phase", choices=["fill", "rerun", "rerun-rows"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        output = None if args.phase == "rerun-rows" else args.dir / f"out-{args.phase}"
        out = run_once(args.rows, args.dir / "calls.sqlite", output)
        print(json.dumps(out))
        return
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src"))
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for phase in ("fill", "rerun", "rerun-rows"):
            t0 = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--rows",
                    str(args.rows),
                    "--phase",
                    phase,
                    "--dir",
                    tmp,
                ],
                capture_output=True,
                text=True,
                env=env,
            )
            if done.returncode != 0:
                raise SystemExit(f"{phase} failed:\n{done.stderr[-3000:]}")
            results[phase] = json.loads(done.stdout.strip().splitlines()[-1])
            results[phase]["process_seconds"] = time.perf_counter() - t0
        size = (Path(tmp) / "calls.sqlite").stat().st_size
    fill, rerun, rows_only = results["fill"], results["rerun"], results["rerun-rows"]
    assert rerun["model_calls"] == 0 and rows_only["model_calls"] == 0, "a re-run called the model"
    print(
        f"first run : {fill['rows']} rows, {fill['model_calls']} model calls, {fill['seconds']:.2f} s"
    )
    print(
        f"re-run    : {rerun['rows']} rows from cache ({rerun['cache_hits']} hits, {rerun['model_calls']} calls) in "
        f"{rerun['seconds']:.2f} s ({rerun['cpu']:.2f} s CPU; {rerun['process_seconds']:.2f} s with interpreter start and imports)"
    )
    print(f"re-run, no output folder: {rows_only['seconds']:.2f} s ({rows_only['cpu']:.2f} s CPU)")
    print(f"cache file: {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()

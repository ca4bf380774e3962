"""Does verification help? SmolLM2-135M base vs LoRA-SFT on verified vs unverified constraint data.

1. data (timed apart): ``datamill run constraints --set target_rows=ROWS`` (rejection sampling:
   4 samples per prompt, the first that meets its constraint), then ``constraints-unverified``
   over the same prompt keys (sample 0 of the same calls, from the shared cache, kept whether or
   not it passes); the unverified rows of exactly the prompts of the verified rows are written
   to ``OUT/unverified-matched.jsonl``, the verified rows of those prompts to
   ``OUT/verified-matched.jsonl``: both sets have the same prompts and size.
2. ``datamill eval verified-matched.jsonl unverified-matched.jsonl`` on the built-in held-out constraint set:
   base, tuned-on-verified, tuned-on-unverified, with 95% bootstrap intervals.

Usage: ``python bench/eval_constraints.py [--rows 300] [--max-attempts 330]
[--heldout constraints:120] [--out out/bench-eval] [--eval-args "--max-new-tokens 200"]``. Prints wall times and the machine load (``uptime``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq


def datamill(*args: str) -> None:
    cmd = [sys.executable, "-c", "from datamill.cli import main; main()", *args]
    print("$ datamill " + shlex.join(args), flush=True)
    subprocess.run(cmd, check=True)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--heldout", default="constraints:120")
    ap.add_argument("--out", type=Path, default=Path("out/bench-eval"))
    ap.add_argument(
        "--cache", type=Path, default=None, help="call cache (default: OUT/calls.sqlite)"
    )
    ap.add_argument(
        "--max-attempts", type=int, default=None, help="try at most N prompts (caps data time)"
    )
    ap.add_argument("--eval-args", default="", help="extra arguments for datamill eval")
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cache = str(args.cache or out / "calls.sqlite")
    print("load at start:", uptime(), flush=True)

    t0 = time.monotonic()
    datamill(
        "run",
        "constraints",
        "-o",
        str(out / "verified"),
        "-q",
        "--cache",
        cache,
        "--set",
        f"target_rows={args.rows}",
        *(["--set", f"max_attempts={args.max_attempts}"] if args.max_attempts else []),
    )
    run = json.loads((out / "verified" / "run.json").read_text())
    tried = int(run.get("attempts") or run["rows"])
    datamill(  # exactly the prompt keys the verified run tried: every call is in the cache
        "run",
        "constraints-unverified",
        "-o",
        str(out / "unverified"),
        "-q",
        "--cache",
        cache,
        "--set",
        f"target_rows={tried}",
        "--set",
        f"max_attempts={tried}",
    )
    verified = pq.read_table(out / "verified" / "data").to_pylist()
    unverified = pq.read_table(out / "unverified" / "data").to_pylist()
    by_prompt = {r["instruction"]: r for r in unverified}
    # a prompt whose sample 0 was cut at max_tokens has no unverified row: both sets keep the
    # prompts that have a row in each
    matched = [by_prompt[r["instruction"]] for r in verified if r["instruction"] in by_prompt]
    both = [r for r in verified if r["instruction"] in by_prompt]
    for name, rows in (("verified-matched", both), ("unverified-matched", matched)):
        with (out / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    passing = sum(1 for r in matched if r.get("verified") is True)
    data_s = time.monotonic() - t0
    print(
        f"data: {len(verified)} verified rows from {tried} prompts; {len(matched)} of their prompts "
        f"have an unverified row ({passing} of those happen to pass); {data_s:.0f} s",
        flush=True,
    )

    n = len(matched)
    print("load before eval:", uptime(), flush=True)
    t1 = time.monotonic()
    datamill(
        "eval",
        str(out / "verified-matched.jsonl"),
        str(out / "unverified-matched.jsonl"),
        "--heldout",
        args.heldout,
        "--rows",
        str(n),
        "-o",
        str(out / "eval"),
        *shlex.split(args.eval_args),
    )
    print(f"eval (training + evaluation): {time.monotonic() - t1:.0f} s", flush=True)
    print("load after eval:", uptime(), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()

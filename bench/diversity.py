"""bench/diversity: persona- (or sampler-) conditioned instructions against plain prompting.

Runs two built-in recipes on the same model at the same budget (the same ``--limit`` rows, the
same question and answer settings): ``instructions-basic`` (five seed prompts asking for a
question) and ``instructions-personas`` (a sampled persona and topic in the question prompt; the
offline persona sampler, no download). Each run writes its report; the table shows, for the
instructions (the first user turn), the two diversity figures of ``datamill report``: mean
pairwise embedding similarity (lower is more diverse) and distinct-2 (higher is more diverse),
plus ROUGE-L self-overlap and the rows kept. Usage::

    python bench/diversity.py                       # the embedded model, 20 rows each
    python bench/diversity.py --limit 40 --model llamacpp:/models/other.gguf
    python bench/diversity.py --recipes instructions-basic,my-recipe.yaml

It is a model run: on the 2-core development machine the embedded 135M model takes a few
minutes for 20 rows of each. Outputs go to a temporary folder (``--keep`` prints it and keeps it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COLUMNS = ("rows", "embedding_similarity", "distinct_2", "distinct_1", "rouge_l_self")


def run_one(recipe: str, out: Path, limit: int, model: str | None, extra: list[str]) -> dict:
    """Run ``recipe`` into ``out`` and return its report's diversity figures (+ rows, seconds)."""
    cmd = [sys.executable, "-c", "from datamill.cli import main; main()", "run", recipe]
    cmd += ["--limit", str(limit)]
    cmd += ["--output", str(out), "--quiet", *(["--model", model] if model else []), *extra]
    # a fresh call cache: every figure comes from calls made now
    env = {**os.environ, "DATAMILL_REPORT_EMBEDDINGS": "1", "DATAMILL_CACHE": str(out) + ".sqlite"}
    began = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    took = time.monotonic() - began
    if proc.returncode != 0:
        raise SystemExit(
            f"{recipe}: datamill run failed ({proc.returncode}): {proc.stderr.strip()[-600:]}"
        )
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    figures = dict(report.get("diversity") or {})
    figures.update(rows=report.get("rows"), seconds=round(took, 1), calls=run.get("model_calls"))
    figures["losses"] = run.get("failures") or {}
    figures["notes"] = report.get("notes") or []
    return figures


def fmt(value: object, key: str = "") -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if key == "seconds" else f"{value:.3f}"
    return "-" if value is None else str(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", default="instructions-basic,instructions-personas")
    ap.add_argument("--limit", type=int, default=20, help="rows per recipe (the same budget)")
    ap.add_argument("--model", default=None, help="a model spec for both (default: the recipes')")
    ap.add_argument("--set", action="append", default=[], help="--set for both runs")
    ap.add_argument("--keep", action="store_true", help="keep the output folders")
    args = ap.parse_args()
    extra = [x for s in args.set for x in ("--set", s)]
    root = Path(tempfile.mkdtemp(prefix="datamill-diversity-"))
    results = {}
    try:
        for recipe in args.recipes.split(","):
            name = Path(recipe).stem
            print(f"running {name} (--limit {args.limit}) …", file=sys.stderr, flush=True)
            results[name] = run_one(recipe, root / name, args.limit, args.model, extra)
    finally:
        if args.keep:
            print(f"outputs kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    names = list(results)
    first = len("embedding_similarity (lower: more diverse)") + 2
    width = max(len(n) for n in names) + 2
    print(
        f"instructions (first user turn); model {args.model or 'the recipes’ default'}; --limit {args.limit}"
    )
    print("figure".ljust(first) + "".join(n.rjust(width) for n in names))
    labels = {"embedding_similarity": "embedding_similarity (lower: more diverse)", "distinct_2": "distinct_2 (higher: more diverse)"}  # fmt: skip
    for key in (*COLUMNS, "calls", "seconds"):
        print(
            labels.get(key, key).ljust(first)
            + "".join(fmt(results[n].get(key), key).rjust(width) for n in names)
        )
    for n in names:
        if results[n]["losses"] or results[n]["notes"]:
            print(f"{n}: losses {results[n]['losses']}; notes {results[n]['notes']}")


if __name__ == "__main__":
    main()

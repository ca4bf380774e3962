"""bench/batch: N rows through the fake OpenAI and Anthropic batch endpoints, killed mid-poll.

For each provider, a fake server of it (``datamill.testing``: FakeModel answers, batch routes
from ``testing.batch_server``) runs in this process; ``datamill run`` runs in its own process:

1. ``datamill run RECIPE`` (two model steps, ``batch: true``) while the fake holds the first
   batch in progress; once it has been polled a few times the run gets SIGKILL;
2. the same command again, with the fake let go: it must find the batch in the cache file and
   resume polling (no request line sent again), then send the second step's batch;
3. ``datamill run`` of the same recipe online on the same fake (another cache): its rows must be
   the batch run's rows;
4. ``datamill plan`` (in process) online and ``--batch`` with a price for the model: the batch
   forecast must be half the online one.

Prints, per provider: rows, request lines counted at the fake and unique calls, lines sent again,
batches (resumed), seconds of each run, rows equal, forecast online vs batch. Usage::

    python bench/batch.py                 # 10,000 rows, both providers
    python bench/batch.py --rows 2000 --providers openai
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NAMES = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}


def start_fake(provider: str) -> tuple[Any, Any, str]:
    """(thread, batch endpoints, spec) of a fake server of ``provider``, held."""
    from datamill import FakeModel
    from datamill.testing.anthropic import AnthropicServer, AnthropicServerThread
    from datamill.testing.batch_server import BatchBehaviour, add_batch_routes
    from datamill.testing.server import OpenAIServer, ServerThread

    behaviour = BatchBehaviour(hold=True)
    if provider == "openai":
        server: Any = OpenAIServer(FakeModel(), name=NAMES[provider])
        endpoints = add_batch_routes(server, behaviour)
        thread: Any = ServerThread(server).start()
    else:
        server = AnthropicServer(FakeModel())
        endpoints = add_batch_routes(server, behaviour)
        thread = AnthropicServerThread(server)
        thread.start()
    return thread, endpoints, f"{provider}:{NAMES[provider]}@{thread.url}"


def write_recipe(folder: Path, spec: str, rows: int, batch: bool, poll: float) -> Path:
    model = f'{{spec: "{spec}"' + (
        f", batch: {{poll_seconds: {poll}, flush_seconds: 0.5}}}}" if batch else "}"
    )
    source = folder / "seeds.jsonl"
    with source.open("w", encoding="utf-8") as f:
        for i in range(rows):
            f.write(json.dumps({"instruction": f"Write a question about subject {i}."}) + "\n")
    path = folder / ("batch.yaml" if batch else "online.yaml")
    path.write_text(
        f"""\
name: batchbench
models:
  default: {model}
source: {{path: {source}}}
steps:
  - text_generation: {{output: question, temperature: 0.7}}
  - text_generation: {{template: "{{{{ question }}}}", output: answer, temperature: 0.7}}
""",
        encoding="utf-8",
    )
    return path


def datamill(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "DATAMILL_REPORT_EMBEDDINGS": "0"}
    return subprocess.Popen(
        [sys.executable, "-c", "from datamill.cli import main; main()", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> None:
    out, err = proc.communicate(timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"datamill failed ({proc.returncode}): {err[-2000:]}")


def rows_of(folder: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    table = pq.read_table(folder / "data" / "train-00000-of-00001.parquet").to_pylist()
    return [{k: r[k] for k in ("instruction", "question", "answer")} for r in table]


def forecast(spec: str, rows: int, work: Path) -> tuple[float | None, float | None]:
    from datamill import Pipeline, TextGeneration
    from datamill.pipeline.plan import plan_pipeline
    from datamill.pricing import Price, PriceTable

    prices = PriceTable({spec.split(":")[1].split("@")[0]: Price(0.15, 0.60)})
    pipe = Pipeline(
        [
            TextGeneration(output="question", temperature=0.7),
            TextGeneration(template="{{ question }}", output="answer", temperature=0.7),
        ],
        source=[{"instruction": f"Write a question about subject {i}."} for i in range(rows)],
        models={"default": spec},
    )
    kwargs: dict[str, Any] = {"prices": prices, "cache": work / "plan.sqlite", "preview_rows": 3}
    online = plan_pipeline(pipe, **kwargs).cost
    batched = plan_pipeline(pipe, batch=True, **kwargs).cost
    return online, batched


def bench(provider: str, rows: int, poll: float) -> dict[str, Any]:
    thread, endpoints, spec = start_fake(provider)
    stats = endpoints.stats
    try:
        with tempfile.TemporaryDirectory(prefix="datamill-batch-") as tmp:
            work = Path(tmp)
            recipe = write_recipe(work, spec, rows, True, poll)
            args = ["run", str(recipe), "-o", "batch-out", "-q", "--cache", "batch.sqlite"]
            began = time.monotonic()
            proc = datamill(args, work)
            while not (stats.batches >= 1 and stats.polls >= 3):
                if proc.poll() is not None:
                    raise SystemExit(f"the run ended before the kill: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            killed_after = time.monotonic() - began
            lines_before = stats.lines
            endpoints.behaviour.hold = False
            began = time.monotonic()
            finish(datamill(args, work))
            resumed_seconds = time.monotonic() - began
            summary = json.loads((work / "batch-out" / "run.json").read_text())["batch"]["default"]

            online_recipe = write_recipe(work, spec, rows, False, poll)
            began = time.monotonic()
            finish(
                datamill(
                    [
                        "run",
                        str(online_recipe),
                        "-o",
                        "online-out",
                        "-q",
                        "--cache",
                        "online.sqlite",
                    ],
                    work,
                )
            )
            online_seconds = time.monotonic() - began
            same = rows_of(work / "batch-out") == rows_of(work / "online-out")
            cost_online, cost_batch = forecast(spec, rows, work)
            return {
                "provider": provider,
                "rows": rows,
                "unique_calls": stats.unique,
                "lines_at_fake": stats.lines,
                "lines_sent_again": stats.repeats,
                "lines_before_kill": lines_before,
                "batches": stats.batches,
                "resumed_batches": summary["resumed_batches"],
                "killed_after_s": round(killed_after, 1),
                "resumed_run_s": round(resumed_seconds, 1),
                "online_run_s": round(online_seconds, 1),
                "rows_equal_online": same,
                "forecast_online_usd": cost_online,
                "forecast_batch_usd": cost_batch,
                "forecast_ratio": None
                if not cost_online or cost_batch is None
                else round(cost_batch / cost_online, 4),
            }
    finally:
        thread.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--providers", nargs="+", default=["openai", "anthropic"])
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between polls")
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.1f}", flush=True)
    for provider in args.providers:
        print(json.dumps(bench(provider, args.rows, args.poll)), flush=True)


if __name__ == "__main__":
    main()

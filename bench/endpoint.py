"""bench/endpoint: requests/s and framework CPU per call against a fake endpoint with fixed latency.

Starts ``python -m datamill.testing.server`` (FakeModel behind it, every answer delayed by
``--latency``, 200 ms by default) in its own process, then runs each engine in its own process
against it and prints one line per engine:

- ``datamill``        — a full pipeline run (TextGeneration over N rows through the runner, the
                         call cache and the ``openai`` backend): what a user gets
- ``datamill-model``  — the ``openai`` backend alone (``OpenAIModel.generate`` under a semaphore):
                         the HTTP client's own share of the cost
- ``distilabel``      — distilabel 1.5.3's ``OpenAILLM`` + ``TextGeneration`` on the same server,
                         run from ``bench/.venv-distilabel`` (``--setup-distilabel`` creates it)

Figures: sustained requests/s (requests the server saw / seconds from its first request in to
its last answer out, so engine start-up is left out), end-to-end requests/s (calls / wall
seconds of the whole run, start-up included), the server's mean and peak requests in flight,
and framework CPU per call (CPU seconds of the engine's processes during the run / calls; the
server's CPU is not counted). Usage::

    python bench/endpoint.py                       # datamill + datamill-model (+ distilabel if set up)
    python bench/endpoint.py --rows 20000 --concurrency 512 --latency 0.2
    python bench/endpoint.py --setup-distilabel    # pip install distilabel==1.5.3 into the venv
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from _distilabel import (  # bench/ is on sys.path
    DISTILABEL_PY,
    DISTILABEL_VENV,
    ensure_distilabel_venv,
)

HERE = Path(__file__).resolve().parent


# -- CPU accounting (works in either venv: psutil is in both) -------------------------------------
class TreeCPU:
    """CPU seconds used by this process and its children from ``start()`` to ``stop()``.

    Children are sampled every 0.2 s (distilabel runs steps in subprocesses); a child's CPU after
    its last sample is not seen, so the figure for multi-process engines is a slight undercount.
    """

    def __init__(self) -> None:
        import psutil

        self._me = psutil.Process()
        self._base: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _tree(self) -> dict[int, float]:
        import psutil

        out = {}
        for p in [self._me, *self._me.children(recursive=True)]:
            try:
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
            except psutil.Error:
                pass
        return out

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self._last.update(self._tree())

    def start(self) -> None:
        self._base = self._tree()
        self._last = dict(self._base)
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self._last.update(self._tree())
        return sum(v - self._base.get(pid, 0.0) for pid, v in self._last.items())


def rows(n: int) -> list[dict[str, str]]:
    return [{"instruction": f"Write a short note about topic number {i}."} for i in range(n)]


# -- workers (each runs in its own process) ---------------------------------------------------------
def worker_datamill(url: str, n: int, concurrency: int, max_tokens: int) -> dict[str, Any]:
    from datamill import Pipeline, TextGeneration

    with tempfile.TemporaryDirectory() as tmp:
        pipeline = Pipeline(
            [TextGeneration(output="generation", max_tokens=max_tokens, truncated="keep")],
            source=rows(n),
            models={
                "default": {
                    "spec": f"openai:fake@{url}",
                    "max_concurrency": concurrency,
                    "timeout": 60,
                }
            },
        )
        cpu = TreeCPU()
        cpu.start()
        t0 = time.perf_counter()
        result = pipeline.run(None, cache=Path(tmp) / "calls.sqlite")
        wall = time.perf_counter() - t0
        used = cpu.stop()
    calls = result.stats.model_calls
    return {
        "calls": calls,
        "rows": len(result.rows),
        "failed": result.stats.failed_rows,
        "wall": wall,
        "cpu": used,
    }


def worker_model(url: str, n: int, concurrency: int, max_tokens: int) -> dict[str, Any]:
    import asyncio

    from datamill import Request
    from datamill.models.openai import OpenAIModel

    async def go() -> tuple[int, float, float]:
        model = OpenAIModel("fake", url, max_concurrency=concurrency, timeout=60)
        await model.start()
        gate = asyncio.Semaphore(concurrency)
        done = 0

        async def one(row: dict[str, str]) -> None:
            nonlocal done
            async with gate:
                await model.generate(
                    Request.chat(row["instruction"], max_tokens=max_tokens, seed=1)
                )
                done += 1

        cpu = TreeCPU()
        cpu.start()
        t0 = time.perf_counter()
        await asyncio.gather(*(one(r) for r in rows(n)))
        wall = time.perf_counter() - t0
        used = cpu.stop()
        await model.close()
        return done, wall, used

    calls, wall, used = asyncio.run(go())
    return {"calls": calls, "rows": calls, "failed": n - calls, "wall": wall, "cpu": used}


def worker_distilabel(url: str, n: int, concurrency: int, max_tokens: int) -> dict[str, Any]:
    import logging

    logging.disable(logging.WARNING)
    from distilabel.models import OpenAILLM
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts
    from distilabel.steps.tasks import TextGeneration

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DISTILABEL_CACHE_DIR"] = tmp
        with Pipeline(name="bench-endpoint", cache_dir=tmp) as pipeline:
            load = LoadDataFromDicts(data=rows(n), batch_size=concurrency)
            llm = OpenAILLM(
                model="fake",
                base_url=url,
                api_key="not-needed",
                max_retries=0,
                timeout=60,
                generation_kwargs={"max_new_tokens": max_tokens, "temperature": 0.7},
            )
            generate = TextGeneration(llm=llm, input_batch_size=concurrency)
            load >> generate
        cpu = TreeCPU()
        cpu.start()
        t0 = time.perf_counter()
        distiset = pipeline.run(use_cache=False)
        wall = time.perf_counter() - t0
        used = cpu.stop()
        out = distiset["default"]["train"]
        ok = sum(1 for g in out["generation"] if g)
    return {"calls": len(out), "rows": ok, "failed": len(out) - ok, "wall": wall, "cpu": used}


WORKERS = {
    "datamill": worker_datamill,
    "datamill-model": worker_model,
    "distilabel": worker_distilabel,
}


# -- the driver -------------------------------------------------------------------------------------------
def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    cmd = [
        sys.executable,
        "-m",
        "datamill.testing.server",
        "--port",
        "0",
        "--latency",
        str(latency),
        "--name",
        "fake",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if " at " not in line:
        proc.kill()
        raise SystemExit(f"the test server did not start: {line!r}")
    return proc, line.split(" at ")[1].split()[0]


def server_call(url: str, path: str, method: str = "GET") -> dict[str, Any]:
    root = url.rsplit("/v1", 1)[0]
    req = urllib.request.Request(root + path, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=10) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def process_cpu(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def run_engine(
    engine: str, url: str, args: argparse.Namespace, server_pid: int
) -> dict[str, Any] | None:
    python = str(DISTILABEL_PY) if engine == "distilabel" else sys.executable
    if engine == "distilabel" and not DISTILABEL_PY.exists():
        print(f"distilabel: skipped ({DISTILABEL_VENV} missing; run with --setup-distilabel)")
        return None
    server_call(url, "/stats/reset", "POST")
    server_cpu = process_cpu(server_pid)
    cmd = [
        python,
        str(Path(__file__).resolve()),
        "--worker",
        engine,
        "--url",
        url,
        "--rows",
        str(args.rows),
        "--concurrency",
        str(args.concurrency),
        "--max-tokens",
        str(args.max_tokens),
    ]
    env = (
        dict(os.environ, PYTHONPATH=str(HERE.parent / "src"))
        if engine != "distilabel"
        else dict(os.environ)
    )
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        print(f"{engine}: failed\n{done.stderr[-3000:]}")
        return None
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    server_cpu = process_cpu(server_pid) - server_cpu
    server = server_call(url, "/stats")
    result.update(
        engine=engine,
        rps=result["calls"] / result["wall"],
        cpu_ms=1000 * result["cpu"] / max(1, result["calls"]),
        mean_in_flight=server["mean_in_flight"],
        peak_in_flight=server["peak_in_flight"],
        server_requests=server["requests"],
        sustained=server["requests"] / max(1e-9, server["active_seconds"]),
        server_cpu_ms=1000 * server_cpu / max(1, server["requests"]),
    )
    return result


def setup_distilabel() -> None:
    ensure_distilabel_venv(["requests", "openai", "psutil"], ["requests", "openai", "psutil"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=512, help="requests kept in flight")
    parser.add_argument(
        "--latency", type=float, default=0.2, help="the fake server's delay per request (s)"
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--engines", default="datamill,datamill-model,distilabel")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--setup-distilabel", action="store_true")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(
            json.dumps(WORKERS[args.worker](args.url, args.rows, args.concurrency, args.max_tokens))
        )
        return
    if args.setup_distilabel:
        setup_distilabel()
    server, url = start_server(args.latency)
    results = []
    try:
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(
            f"fake server at {url}, latency {args.latency * 1000:.0f} ms; {args.rows} rows, {args.concurrency} in flight"
        )
        for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
            r = run_engine(engine, url, args, server.pid)
            if r is None:
                continue
            results.append(r)
            print(
                f"{engine:15s} {r['sustained']:7.0f} req/s sustained ({r['rps']:.0f} end to end)  "
                f"{r['cpu_ms']:6.3f} ms CPU/call  in flight mean {r['mean_in_flight']:.0f} peak {r['peak_in_flight']}"
                f"  ({r['calls']} calls, {r['failed']} failed, {r['wall']:.1f} s; server {r['server_cpu_ms']:.2f} ms CPU/request)"
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

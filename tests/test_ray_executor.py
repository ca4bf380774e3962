"""The Ray executor: same rows as a local run, real model on 2 workers, a killed worker survived."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from datamill import FakeModel, Request  # noqa: E402
from datamill.cli import main  # noqa: E402
from datamill.executors.ray import RayExecutor  # noqa: E402
from datamill.recipes.loader import load_recipe  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test model travels by value


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _rows(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(out / "data" / "train-00000-of-00001.parquet").to_pylist()


def test_ray_gives_the_same_rows_as_local(ray_cluster, tmp_path: Path, capsys) -> None:
    local, remote = tmp_path / "local", tmp_path / "ray"
    main(
        [
            "run",
            "instructions-basic",
            "--model",
            "fake",
            "--output",
            str(local),
            "--quiet",
            "--no-cache",
        ]
    )
    main(
        [
            "run",
            "instructions-basic",
            "--model",
            "fake",
            "--output",
            str(remote),
            "--quiet",
            "--no-cache",
            "--executor",
            "ray",
            "--workers",
            "2",
        ]
    )
    assert _rows(remote) == _rows(local)
    assert len(_rows(local)) > 0
    a, b = (json.loads((p / "run.json").read_text()) for p in (local, remote))
    for key in ("rows", "model_calls", "failed_rows", "failures", "tokens", "steps"):
        assert a[key] == b[key], key


KILL_AT = 10  # calls logged before the test kills a worker


class PidLoggingModel(FakeModel):
    """A fake that appends ``pid`` to a file on each call (to find and kill a worker). From the
    ``KILL_AT``-th call on, calls wait until the kill is done (``LOG.killed`` exists), so the run
    cannot finish before the test has killed a worker, however slow or fast the machine."""

    def __init__(self, log: str, **kw) -> None:
        super().__init__(latency=0.05, max_concurrency=2, **kw)
        self.log = log

    async def generate(self, request: Request):  # type: ignore[override]
        import asyncio

        with open(self.log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        killed = Path(self.log + ".killed")
        for _ in range(30000):  # a bound on a hang (5 min), not a timing
            if killed.exists() or len(Path(self.log).read_text().split()) < KILL_AT:
                break
            await asyncio.sleep(0.01)
        return await super().generate(request)


def test_killed_worker_is_retried_and_the_run_completes(ray_cluster, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    log.touch()
    recipe = load_recipe("instructions-basic")
    recipe.models["default"].spec = PidLoggingModel(str(log))
    recipe.source.data = [{"instruction": f"seed question {i}"} for i in range(30)]  # type: ignore[union-attr]
    recipe.source.repeat = 1  # type: ignore[union-attr]
    killed: list[int] = []

    def killer() -> None:
        for _ in range(6000):  # a bound on a hang (5 min): the calls wait for this kill
            pids = [int(p) for p in log.read_text().split()]
            if len(pids) >= KILL_AT:
                os.kill(pids[-1], signal.SIGKILL)  # a worker whose call is waiting
                killed.append(pids[-1])
                Path(f"{log}.killed").touch()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer)
    thread.start()
    result = recipe.run(tmp_path / "out", executor=RayExecutor(workers=2, max_retries=3))
    thread.join()
    assert killed, "the test never killed a worker"
    assert len(result.rows) + result.stats.failed_rows == 30
    clean = load_recipe("instructions-basic")
    clean.models["default"].spec = FakeModel()
    clean.source.data = recipe.source.data  # type: ignore[union-attr]
    clean.source.repeat = 1  # type: ignore[union-attr]
    reference = clean.run(None, cache=False)
    assert [r["messages"] for r in result.rows] == [r["messages"] for r in reference.rows]


@pytest.mark.real
def test_embedded_model_on_two_ray_workers(ray_cluster, tmp_path: Path) -> None:
    out = tmp_path / "real"
    main(
        [
            "run",
            "instructions-basic",
            "--limit",
            "2",
            "--output",
            str(out),
            "--quiet",
            "--executor",
            "ray",
            "--workers",
            "2",
            "--set",
            "text_generation.max_tokens=24",
            "--set",
            "text_generation_2.max_tokens=32",
            "--set",
            "text_generation_2.truncated=keep",
        ]
    )
    run = json.loads((out / "run.json").read_text())
    assert run["rows"] + run["failed_rows"] == 2
    assert run["model_calls"] >= 2
    assert all(r["messages"][-1]["role"] == "assistant" for r in _rows(out))

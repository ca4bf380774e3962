"""Provider batch APIs (``pipeline.batch``) against the fake batch endpoints of OpenAI and
Anthropic (``testing.batch_server``): rows identical to an online run on the same fake, every
unique call sent once (counted at the fake), partial failures and expiry resubmitted, refusals
recorded per row, chunking to the limits, a ``kill -9`` while polling resumed without sending a
request again, batch prices in plan and run.json, and the vLLM ``run_batch`` file round trip."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from datamill import ConfigError, FakeModel, Pipeline, Request, TextGeneration
from datamill.pipeline.batch import BatchModel
from datamill.pipeline.batches import BatchStore
from datamill.pipeline.cache import CallCache
from datamill.pipeline.run import run_pipeline
from datamill.pricing import Price, PriceTable
from datamill.testing.anthropic import AnthropicServer, AnthropicServerThread
from datamill.testing.batch_server import (
    BatchBehaviour,
    BatchEndpoints,
    add_batch_routes,
    run_batch_file,
)
from datamill.testing.server import OpenAIServer, ServerThread
from reliability_helpers import cli, cli_run, parquet_rows, wait_until

ROWS = 200
FAST = {"poll_seconds": 0.02, "flush_seconds": 0.05}
NAMES = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}


class Fake:
    """A fake server of one provider with its batch endpoints, in a thread."""

    def __init__(self, provider: str, behaviour: BatchBehaviour | None = None) -> None:
        self.provider = provider
        server: Any
        if provider == "openai":
            server = OpenAIServer(FakeModel(), name=NAMES[provider])
            self.endpoints: BatchEndpoints = add_batch_routes(server, behaviour)
            self.thread: ServerThread = ServerThread(server).start()
        else:
            server = AnthropicServer(FakeModel())
            self.endpoints = add_batch_routes(server, behaviour)
            self.thread = AnthropicServerThread(server)
            self.thread.start()
        self.server = server

    @property
    def spec(self) -> str:
        return f"{self.provider}:{NAMES[self.provider]}@{self.thread.url}"

    @property
    def online_requests(self) -> int:
        return int(self.server.stats.requests)

    def stop(self) -> None:
        self.thread.stop()


@pytest.fixture(params=["openai", "anthropic"])
def fake(request: pytest.FixtureRequest) -> Iterator[Fake]:
    server = Fake(request.param)
    yield server
    server.stop()


def pipeline(spec: str, rows: int = ROWS, batch: dict[str, Any] | None = None) -> Pipeline:
    model: dict[str, Any] = {"spec": spec}
    if batch is not None:
        model["batch"] = batch
    return Pipeline(
        [
            TextGeneration(output="question", temperature=0.7),
            TextGeneration(template="{{ question }}", output="answer", temperature=0.7),
        ],
        source=[{"instruction": f"Write a question about subject {i}."} for i in range(rows)],
        models={"default": model},
    )


def rows_of(result: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in result.rows]


# -- a batch run gives the rows of an online run, each call sent once ---------------------------
def test_batch_rows_equal_online_rows_and_each_call_is_sent_once(
    fake: Fake, tmp_path: Path
) -> None:
    batched = run_pipeline(
        pipeline(fake.spec, batch=FAST), tmp_path / "out", cache=tmp_path / "b.sqlite"
    )
    stats = fake.endpoints.stats
    assert stats.lines == stats.unique == 2 * ROWS  # one request line per unique call
    assert stats.repeats == 0 and stats.batches == 2  # step 1's calls, then step 2's
    assert fake.online_requests == 0  # nothing went to the online route

    online = run_pipeline(pipeline(fake.spec), None, cache=tmp_path / "o.sqlite")
    assert fake.online_requests == 2 * ROWS
    assert len(batched.rows) == ROWS
    assert rows_of(batched) == rows_of(online)

    facts = batched.summary["models"]["default"]["batch"]
    assert facts["provider"] == fake.provider
    assert facts["requests"] == 2 * ROWS and facts["answered"] == 2 * ROWS
    summary = json.loads((tmp_path / "out" / "run.json").read_text())
    assert summary["batch"]["default"]["calls"] == 2 * ROWS
    steps = summary["batch"]["default"]["steps"]
    assert steps == {"text_generation": ROWS, "text_generation_2": ROWS}
    card = (tmp_path / "out" / "README.md").read_text()
    assert (
        f"{2 * ROWS} calls of text_generation ({ROWS}), text_generation_2 ({ROWS}) through the "
        f"{fake.provider} batch API in 2 batches"
    ) in card

    # a re-run is served from the cache: no batch, no request
    again = run_pipeline(pipeline(fake.spec, batch=FAST), None, cache=tmp_path / "b.sqlite")
    assert rows_of(again) == rows_of(online)
    assert stats.lines == 2 * ROWS and again.stats.model_calls == 0


# -- partial failures, expiry, refusals ------------------------------------------------------------
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_failed_and_expired_lines_are_sent_again_and_finished_ones_kept(
    provider: str, tmp_path: Path
) -> None:
    fake = Fake(provider, BatchBehaviour(fail_rate=0.2, expire_after=35, seed=3))
    try:
        rows = 50
        result = run_pipeline(
            pipeline(fake.spec, rows, batch=FAST), None, cache=tmp_path / "c.sqlite"
        )
        stats = fake.endpoints.stats
        facts = result.summary["models"]["default"]["batch"]
        assert len(result.rows) == rows and not result.failures
        assert stats.unique == 2 * rows
        # every line sent again was one the fake did not answer: failed once, or expired
        assert stats.repeats == facts["resubmitted"] > 0
        assert stats.answered == 2 * rows  # no answered line was ever asked for again
        online = run_pipeline(pipeline(fake.spec, rows), None, cache=tmp_path / "o.sqlite")
        assert rows_of(result) == rows_of(online)
    finally:
        fake.stop()


def test_refused_lines_are_recorded_for_their_rows(tmp_path: Path) -> None:
    refused = "subject 7."

    def refuse(body: dict[str, Any]) -> bool:
        return any(refused in str(m.get("content")) for m in body.get("messages", []))

    fake = Fake("openai", BatchBehaviour(refuse=refuse))
    try:
        result = run_pipeline(
            pipeline(fake.spec, 20, batch=FAST), None, cache=tmp_path / "c.sqlite"
        )
        assert len(result.rows) == 19
        [failure] = result.failures
        assert failure["reason"] == "batch request failed"
        assert "refused by the fake" in failure["detail"]
        assert refused in failure["row"]["instruction"]
        assert fake.endpoints.stats.repeats == 0  # a refusal is not sent again
    finally:
        fake.stop()


def test_batches_are_cut_to_the_request_and_byte_limits(tmp_path: Path) -> None:
    fake = Fake("openai")
    try:
        limits = {**FAST, "max_requests": 64}
        run_pipeline(pipeline(fake.spec, ROWS, batch=limits), None, cache=tmp_path / "a.sqlite")
        stats = fake.endpoints.stats
        assert stats.lines == 2 * ROWS and stats.repeats == 0
        sizes = sorted(len(b.lines) for b in fake.endpoints.batches.values())
        assert max(sizes) == 64 and stats.batches >= -(-2 * ROWS // 64)  # none over the limit

        before = stats.batches
        line_bytes = 2_000  # a line of these requests is well under this, two are not
        run_pipeline(
            pipeline(fake.spec, 10, batch={**FAST, "max_bytes": line_bytes}),
            None,
            cache=tmp_path / "b.sqlite",
        )
        for batch in list(fake.endpoints.batches.values())[before:]:
            assert sum(len(json.dumps(line)) + 1 for line in batch.lines) <= line_bytes
    finally:
        fake.stop()


# -- crash safety ------------------------------------------------------------------------------
def write_recipe(folder: Path, spec: str, rows: int) -> Path:
    lines = "\n".join(
        f"    - instruction: Write a question about subject {i}." for i in range(rows)
    )
    path = folder / "recipe.yaml"
    path.write_text(
        f"""\
name: batchkill
models:
  default: {{spec: "{spec}", batch: {{poll_seconds: 0.05, flush_seconds: 0.1}}}}
source:
  rows:
{lines}
steps:
  - text_generation: {{output: question, temperature: 0.7}}
  - text_generation: {{template: "{{{{ question }}}}", output: answer, temperature: 0.7}}
""",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_kill_9_while_polling_then_the_same_command_resumes_the_batch(
    provider: str, tmp_path: Path
) -> None:
    rows = 60
    fake = Fake(provider, BatchBehaviour(hold=True))
    try:
        recipe = write_recipe(tmp_path, fake.spec, rows)
        cache = tmp_path / "cache.sqlite"
        args = ["run", str(recipe), "-o", "out", "-q", "--cache", str(cache)]
        stats = fake.endpoints.stats
        proc = cli(args, cwd=tmp_path)
        # the batch is made and polled (held in progress): kill the run mid-poll
        wait_until(lambda: stats.batches == 1 and stats.polls >= 3, proc, timeout=60)
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        assert stats.lines == rows
        [record] = BatchStore(cache).unfinished(_identity(fake))
        assert record.state == "submitted" and record.remote_id in fake.endpoints.batches
        assert len(record.entries) == rows

        fake.endpoints.behaviour.hold = False
        done = cli_run(args, cwd=tmp_path, timeout=120)
        assert done.returncode == 0, done.stderr
        assert stats.lines == stats.unique == 2 * rows  # step 1 resumed, never sent again
        assert stats.repeats == 0
        summary = json.loads((tmp_path / "out" / "run.json").read_text())
        assert summary["batch"]["default"]["resumed_batches"] == 1
        assert summary["batch"]["default"]["requests"] == rows  # this run sent step 2 only

        online = run_pipeline(pipeline(fake.spec, rows), None, cache=tmp_path / "o.sqlite")
        got = parquet_rows(tmp_path / "out")
        assert [{k: r[k] for k in ("instruction", "question", "answer")} for r in got] == [
            {k: r[k] for k in ("instruction", "question", "answer")} for r in rows_of(online)
        ]
    finally:
        fake.stop()


def _identity(fake: Fake) -> str:
    from datamill.models.registry import load_model

    return load_model(fake.spec).info.identity


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_batch_made_just_before_a_crash_is_found_not_made_again(
    provider: str, tmp_path: Path
) -> None:
    """The crash comes after the provider made the batch and before its id was recorded: the
    next start finds it at the provider (OpenAI: by its metadata; Anthropic: by its size and
    time) instead of sending its requests again."""
    from datamill.models.registry import load_model

    fake = Fake(provider)
    requests = [Request.chat(f"say {i}", seed=i) for i in range(12)]

    class Crash(BaseException):  # not an error the model handles: the process dies here
        pass

    async def first() -> None:
        cache = CallCache(tmp_path / "c.sqlite")
        model = BatchModel(load_model(fake.spec), **FAST)  # type: ignore[arg-type]
        model.bind(cache)
        await model.start()
        assert model.store is not None
        record = model.store.update

        def crash_on_submitted(batch_id: str, state: str, **ids: Any) -> None:
            if state == "submitted":
                raise Crash  # the id the provider just gave is never written
            record(batch_id, state, **ids)

        model.store.update = crash_on_submitted  # type: ignore[method-assign]
        calls = [asyncio.ensure_future(model.generate(r)) for r in requests]
        while fake.endpoints.stats.batches == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert not any(c.done() for c in calls)
        for c in calls:
            c.cancel()
        await model.close()
        cache.close()

    async def second() -> list[list[Any]]:
        cache = CallCache(tmp_path / "c.sqlite")
        model = BatchModel(load_model(fake.spec), **FAST)  # type: ignore[arg-type]
        model.bind(cache)
        await model.start()
        answers = await asyncio.gather(*(model.generate(r) for r in requests))
        assert model.counters["resumed_batches"] == 1 and model.counters["requests"] == 0
        await model.close()
        cache.close()
        return answers

    try:
        asyncio.run(first())
        assert fake.endpoints.stats.lines == len(requests)
        answers = asyncio.run(second())
        assert fake.endpoints.stats.lines == len(requests)  # found, not made again
        assert fake.endpoints.stats.batches == 1
        assert all(a[0].text for a in answers)
    finally:
        fake.stop()


# -- refusals before any call --------------------------------------------------------------------
def test_batch_on_a_backend_without_a_batch_api_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="batch: true needs a backend with a batch API"):
        run_pipeline(pipeline("fake", 3, batch={}), None, cache=tmp_path / "c.sqlite")
    with pytest.raises(ConfigError, match="--batch: no model of this run has a batch API"):
        run_pipeline(pipeline("fake", 3), None, cache=tmp_path / "c.sqlite", batch=True)
    with pytest.raises(ConfigError, match="option batch must be true, false or a mapping"):
        run_pipeline(pipeline("fake", 3, batch="yes"), None, cache=tmp_path / "c.sqlite")  # type: ignore[arg-type]


def test_batch_needs_the_cache(tmp_path: Path) -> None:
    fake = Fake("openai")
    try:
        with pytest.raises(ConfigError, match="batch calls need the call cache"):
            run_pipeline(pipeline(fake.spec, 3, batch=FAST), None, cache=False)
        assert fake.endpoints.stats.lines == 0
    finally:
        fake.stop()


# -- prices ------------------------------------------------------------------------------------
def test_batch_price_is_half_unless_the_table_says_otherwise(tmp_path: Path) -> None:
    assert Price(2.0, 8.0).batch() == Price(1.0, 4.0)
    assert Price(2.0, 8.0, batch_input=1.5).batch() == Price(1.5, 4.0)
    file = tmp_path / "prices.yaml"
    file.write_text("m: {input: 2, output: 8, batch_output: 3}\n", encoding="utf-8")
    table = PriceTable.load(file)
    assert table.lookup("openai", "m", batch=True) == Price(1.0, 3.0)
    file.write_text("m: {input: 2, output: 8, batch: 1}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="batch_input and batch_output"):
        PriceTable.load(file)


def test_plan_with_batch_forecasts_half_the_online_cost(fake: Fake, tmp_path: Path) -> None:
    from datamill.pipeline.plan import plan_pipeline

    prices = PriceTable({NAMES[fake.provider]: Price(1.0, 4.0)})
    kwargs: dict[str, Any] = {"prices": prices, "cache": tmp_path / "c.sqlite", "preview_rows": 3}
    online = plan_pipeline(pipeline(fake.spec, 40), **kwargs)
    batched = plan_pipeline(pipeline(fake.spec, 40), batch=True, **kwargs)
    assert online.cost is not None and online.cost > 0
    assert batched.cost == pytest.approx(online.cost / 2)
    assert batched.models["default"]["batch"] is True
    assert fake.endpoints.stats.lines == 0  # the preview ran online


def test_run_json_costs_the_batched_calls_at_the_batch_price(tmp_path: Path) -> None:
    fake = Fake("openai")
    try:
        from datamill.pipeline.budget import Budget

        prices = PriceTable({NAMES["openai"]: Price(1.0, 4.0)})
        result = run_pipeline(
            pipeline(fake.spec, 20, batch=FAST),
            None,
            cache=tmp_path / "c.sqlite",
            budget=Budget(prices=prices),
        )
        batch = result.summary["batch"]["default"]
        assert batch["price"]["input"] == 0.5 and batch["price"]["output"] == 2.0
        # run.json rounds dollars to 6 places
        assert batch["cost_usd"] == pytest.approx(batch["online_cost_usd"] / 2, abs=1e-6)
        expected = (batch["prompt_tokens"] * 0.5 + batch["completion_tokens"] * 2.0) / 1e6
        assert batch["cost_usd"] == pytest.approx(expected, abs=1e-6)
        assert result.summary["budget"]["used"]["cost_usd"] == pytest.approx(expected, rel=1e-3)
    finally:
        fake.stop()


# -- one JSONL file for a GPU box: export, run_batch, import ------------------------------------
def test_export_run_batch_import_until_the_run_finishes_from_the_cache(tmp_path: Path) -> None:
    fake = Fake("openai")  # only for the online reference run: export and import call nothing
    try:
        rows = 30
        recipe = write_recipe(tmp_path, fake.spec, rows)
        cache = tmp_path / "cache.sqlite"
        for step in (1, 2):
            calls, results = tmp_path / f"calls{step}.jsonl", tmp_path / f"results{step}.jsonl"
            done = cli_run(
                ["batch", "export", str(recipe), "-o", str(calls), "--cache", str(cache)],
                cwd=tmp_path,
            )
            assert done.returncode == 0, done.stderr
            assert f"wrote {rows} requests" in done.stdout
            assert run_batch_file(FakeModel(), calls, results) == rows
            done = cli_run(["batch", "import", str(results), "--cache", str(cache)], cwd=tmp_path)
            assert done.returncode == 0, done.stderr
            assert f"imported {rows} answers" in done.stdout
        done = cli_run(
            [
                "batch",
                "export",
                str(recipe),
                "-o",
                str(tmp_path / "x.jsonl"),
                "--cache",
                str(cache),
                "--limit",
                str(rows),
                "--set",
                "name=batch kill",
            ],
            cwd=tmp_path,
        )
        # the command to run next carries the user's arguments (not export's -o)
        assert done.stdout.strip() == (
            f"nothing to export: the cache answers every call ({2 * rows}); "
            f"`datamill run {recipe} --limit {rows} --set 'name=batch kill' --cache {cache}` "
            "finishes from it"
        )

        done = cli_run(["run", str(recipe), "-o", "out", "-q", "--cache", str(cache)], cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        summary = json.loads((tmp_path / "out" / "run.json").read_text())
        assert summary["model_calls"] == 0 and summary["cache_hits"] == 2 * rows
        assert fake.endpoints.stats.lines == 0 and fake.online_requests == 0
        online = run_pipeline(pipeline(fake.spec, rows), None, cache=tmp_path / "o.sqlite")
        got = parquet_rows(tmp_path / "out")
        keys = ("instruction", "question", "answer")
        assert [{k: r[k] for k in keys} for r in got] == [
            {k: r[k] for k in keys} for r in rows_of(online)
        ]
    finally:
        fake.stop()


def test_import_refuses_a_file_that_is_not_json(tmp_path: Path) -> None:
    bad = tmp_path / "results.jsonl"
    bad.write_text("not json\n", encoding="utf-8")
    done = cli_run(
        ["batch", "import", str(bad), "--cache", str(tmp_path / "c.sqlite")], cwd=tmp_path
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {bad}:1: not JSON; give the output file of run_batch (-o)"
    ]


def test_the_batch_flag_batches_every_model_with_a_batch_api(tmp_path: Path) -> None:
    fake = Fake("openai", BatchBehaviour(polls=1))  # done at the first poll: no 30 s poll wait
    try:
        rows = 20
        recipe = write_recipe(tmp_path, fake.spec, rows)
        text = recipe.read_text(encoding="utf-8")
        recipe.write_text(
            text.replace(", batch: {poll_seconds: 0.05, flush_seconds: 0.1}", ""), encoding="utf-8"
        )
        done = cli_run(
            ["run", str(recipe), "-o", "out", "-q", "--cache", "c.sqlite", "--batch"], cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
        assert fake.endpoints.stats.lines == 2 * rows and fake.online_requests == 0
        summary = json.loads((tmp_path / "out" / "run.json").read_text())
        assert summary["batch"]["default"]["calls"] == 2 * rows
    finally:
        fake.stop()


def test_each_provider_sends_its_own_key_header(monkeypatch: pytest.MonkeyPatch) -> None:
    from datamill.models.anthropic import AnthropicModel
    from datamill.models.batch_anthropic import AnthropicBatch
    from datamill.models.batch_openai import OpenAIBatch
    from datamill.models.openai import OpenAIModel

    monkeypatch.setenv("OPENAI_API_KEY", "sk-o")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-a")
    openai = OpenAIBatch(OpenAIModel.from_spec("gpt-4o-mini@http://127.0.0.1:9/v1")).headers()
    anthropic = AnthropicBatch(AnthropicModel.from_spec("claude-haiku-4-5")).headers()
    assert openai == {"Accept": "application/json", "Authorization": "Bearer sk-o"}
    assert anthropic == {
        "Accept": "application/json",
        "anthropic-version": "2023-06-01",
        "x-api-key": "sk-a",
    }
    monkeypatch.delenv("OPENAI_API_KEY")
    assert "Authorization" not in OpenAIBatch(OpenAIModel.from_spec("m@http://h/v1")).headers()


# -- a server with no batch API stops the run in one line, it loses no row ----------------------
def test_a_server_without_batch_endpoints_stops_the_run_in_one_line(tmp_path: Path) -> None:
    thread = ServerThread(
        OpenAIServer(FakeModel(), name=NAMES["openai"])
    ).start()  # no batch routes
    try:
        spec = f"openai:{NAMES['openai']}@{thread.url}"
        recipe = write_recipe(tmp_path, spec, 2)
        done = cli_run(["run", str(recipe), "-o", "out", "-q", "--cache", "c.sqlite"], cwd=tmp_path)
        assert done.returncode == 1
        root = thread.url.split("/v1")[0]
        assert done.stderr.strip().splitlines() == [
            f"error: the endpoint at {root} has no batch API (POST /v1/files: HTTP 404); "
            "run without --batch (or drop batch: from the model)"
        ]
        assert "rows lost" not in done.stdout + done.stderr
        assert not (tmp_path / "out" / "failures.jsonl").exists()
        store = BatchStore(tmp_path / "c.sqlite")
        try:  # nothing half-made stays recorded
            assert store.all() == []
        finally:
            store.close()
    finally:
        thread.stop()


def test_the_no_batch_api_line_names_the_server_the_call_and_what_to_do() -> None:
    from datamill.models.batch_api import no_batch_api

    assert no_batch_api("POST", "http://h:1/v1/files", 404) == (
        "the endpoint at http://h:1 has no batch API (POST /v1/files: HTTP 404); run without "
        "--batch (or drop batch: from the model)"
    )
    assert "check the API key may use batches" in no_batch_api(
        "POST", "https://api.example.com/v1/batches", 401, "bad key"
    )


def test_import_refuses_the_request_file_of_export_in_one_line(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, "openai:gpt-4o-mini@http://127.0.0.1:9/v1", 2)
    calls = tmp_path / "calls.jsonl"
    done = cli_run(
        ["batch", "export", str(recipe), "-o", str(calls), "--cache", "c.sqlite"], cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    done = cli_run(["batch", "import", str(calls), "--cache", "c.sqlite"], cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {calls} is a request file from `datamill batch export`; give the output file of "
        "vLLM's run_batch (its -o)"
    ]


def test_a_result_line_without_a_status_never_says_http_none() -> None:
    from datamill.models.batch_openai import outcome_of

    kind, why = outcome_of({"custom_id": "x", "response": {"body": {}}}, None)
    assert kind == "fail" and "None" not in str(why)
    assert "no response.status_code and no error" in str(why)
    kind, why = outcome_of({"custom_id": "x", "response": {"status_code": 400, "body": {}}}, None)
    assert (kind, why) == ("fail", "batch request refused: HTTP 400")

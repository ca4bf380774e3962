"""The OpenAI-compatible backend against the shipped test server on 127.0.0.1 (real HTTP)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from datamill import FakeModel, Pipeline, Request, TextGeneration
from datamill.errors import ConfigError, ModelError, ModelUnavailable
from datamill.models.adaptive import AdaptiveLimiter
from datamill.models.base import Completion
from datamill.models.openai import OpenAIModel
from datamill.models.registry import load_model
from datamill.testing.server import Faults, ServerThread, serve_in_thread

pytestmark = pytest.mark.timeout(900)  # bounds a hang; a loaded machine is slow


@pytest.fixture
def servers() -> Iterator[Any]:
    started: list[ServerThread] = []

    def start(model: FakeModel | None = None, **options: Any) -> ServerThread:
        options.setdefault("name", "smollm")
        server = serve_in_thread(model or FakeModel(), **options)
        started.append(server)
        return server

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def closed_url() -> Iterator[str]:
    """The URL of a port bound but not listening, held for the whole test: connecting is refused,
    and no other program can take the port in between (a port picked, released and used later
    can be)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}/v1"


async def call(model: OpenAIModel, request: Request) -> list[Completion]:
    try:
        return await model.generate(request)
    finally:
        await model.close()


# -- specs and options ----------------------------------------------------------------------------
def test_spec_names_model_and_url_and_the_identity_holds_no_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-123")
    m = load_model("openai:gpt-4o-mini@https://api.openai.com/v1/", max_concurrency=16)
    assert isinstance(m, OpenAIModel)
    assert (m.model, m.base_url) == ("gpt-4o-mini", "https://api.openai.com/v1")
    assert m.info.identity == "openai:gpt-4o-mini@https://api.openai.com/v1"
    assert m.info.max_concurrency == 16 and m.limiter.maximum == 16
    assert "sk-secret" not in repr(m) + repr(m.info) + m.info.identity
    assert load_model("openai:smollm@http://127.0.0.1:8000").base_url == "http://127.0.0.1:8000/v1"  # type: ignore[attr-defined]
    other = load_model("openai:smollm", base_url="http://10.0.0.1:9000/v1")
    assert other.info.identity != load_model("openai:smollm@http://127.0.0.1:8000/v1").info.identity


@pytest.mark.parametrize(
    ("spec", "options", "message"),
    [
        ("openai", {}, "needs a model name"),
        ("openai:m@ftp://host", {}, "must start with http"),
        (
            "openai:m@http://h/v1",
            {"tiemout": 3},
            r"^openai: unknown option 'tiemout' \(did you mean 'timeout'\?\); allowed: api_key_env, ",
        ),
        (
            "openai:m@http://h/v1",
            {"timeout": 0},
            "option 'timeout' should be greater than 0, got 0",
        ),
        ("openai:m@http://h/v1", {"min_concurrency": 9, "max_concurrency": 4}, "min_concurrency"),
        ("openai:m@http://h/v1", {"schema_format": "xml"}, "schema_format"),
        ("openai:m@http://h/v1", {"base_url": "http://other/v1"}, "keep one"),
    ],
)
def test_bad_options_fail_with_one_line(spec: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_model(spec, **options)
    assert "\n" not in str(info.value)


# -- the wire ---------------------------------------------------------------------------------------
def test_chat_request_reaches_the_server_with_every_sampling_field(servers: Any) -> None:
    fake = FakeModel(lambda r, i: f"answer {i} to {r.messages[-1]['content']}")  # type: ignore[index]
    server = servers(fake, record_bodies=True)
    model = OpenAIModel("smollm", server.url)
    request = Request.chat(
        "hello",
        system="be brief",
        max_tokens=33,
        temperature=0.3,
        top_p=0.9,
        seed=7,
        stop=["END"],
        n=3,
    )
    out = asyncio.run(call(model, request))
    assert [c.text for c in out] == ["answer 0 to hello", "answer 1 to hello", "answer 2 to hello"]
    assert all(c.finish_reason == "stop" for c in out)
    assert sum(c.completion_tokens for c in out) == 3 * 4  # the server's usage, split over samples
    [seen] = fake.calls
    assert seen.messages == request.messages and seen.n == 3
    assert (seen.max_tokens, seen.temperature, seen.top_p, seen.seed, seen.stop) == (
        33,
        0.3,
        0.9,
        7,
        ("END",),
    )
    [body] = server.server.bodies
    assert body["model"] == "smollm" and "response_format" not in body


def test_raw_prompt_goes_to_completions_untouched(servers: Any) -> None:
    fake = FakeModel(lambda r, i: "What is a river?")
    server = servers(fake)
    prompt = "<|im_start|>user\n"
    out = asyncio.run(
        call(OpenAIModel("smollm", server.url), Request(prompt=prompt, max_tokens=20))
    )
    assert out[0].text == "What is a river?"
    assert fake.calls[0].prompt == prompt and fake.calls[0].messages is None
    assert server.stats.statuses[200] == 1


SCHEMA = {
    "title": "Rating",
    "type": "object",
    "properties": {"score": {"type": "integer"}},
    "required": ["score"],
}


JSON_SCHEMA_FORM = {
    "type": "json_schema",
    "json_schema": {"name": "Rating", "schema": SCHEMA, "strict": True},
}


@pytest.mark.parametrize(
    ("takes", "schema_format", "expected", "form", "refused"),
    [
        ("any", "auto", JSON_SCHEMA_FORM, "json_schema", 0),
        ("json_object", "auto", {"type": "json_object", "schema": SCHEMA}, "json_object+schema", 1),
        ("any", "llamacpp", {"type": "json_object", "schema": SCHEMA}, "json_object+schema", 0),
        ("any", "openai", JSON_SCHEMA_FORM, "json_schema", 0),
        ("none", "auto", None, "none", 4),
    ],
)
def test_json_schema_travels_in_the_form_the_server_takes(
    servers: Any,
    takes: str,
    schema_format: str,
    expected: dict[str, Any] | None,
    form: str,
    refused: int,
) -> None:
    fake = FakeModel(lambda r, i: '{"score": 4}')
    server = servers(fake, structured_output=takes, record_bodies=True)
    model = OpenAIModel("smollm", server.url, schema_format=schema_format)  # type: ignore[arg-type]

    async def go() -> list[list[Completion]]:
        try:  # the second and third calls go straight to the form that worked
            return [
                await model.generate(Request.chat(f"rate {i}", json_schema=SCHEMA))
                for i in range(3)
            ]
        finally:
            await model.close()

    outs = asyncio.run(go())
    assert [json.loads(out[0].text) for out in outs] == [{"score": 4}] * 3
    bodies = server.server.bodies
    assert bodies[-1].get("response_format") == expected
    assert len(bodies) - 3 == refused  # each refused form cost one request, once per run
    assert model.run_facts()["structured_output"] == form
    assert len(fake.calls) == 3
    if form == "none":  # nothing constrained: the server saw no schema at all
        assert fake.calls[-1].json_schema is None and "json_schema" not in bodies[-1]
    else:
        assert fake.calls[-1].json_schema == SCHEMA  # the server decoded it back


def test_a_refused_form_falls_back_once_for_every_call_in_flight(servers: Any) -> None:
    server = servers(
        FakeModel(lambda r, i: '{"score": 2}'), structured_output="json_object", record_bodies=True
    )
    model = OpenAIModel("smollm", server.url)

    async def go() -> list[list[Completion]]:
        try:
            return await asyncio.gather(
                *(model.generate(Request.chat(f"q{i}", json_schema=SCHEMA)) for i in range(20))
            )
        finally:
            await model.close()

    outs = asyncio.run(go())
    assert len(outs) == 20 and all(json.loads(o[0].text) == {"score": 2} for o in outs)
    assert server.stats.statuses[500] <= 20 and server.stats.ok == 20
    assert model.counters["retries"] == 0  # a refused form is no retry: no backoff, no lost row
    facts = model.run_facts()
    assert facts["structured_output"] == "json_object+schema"
    assert "Input should be" in facts["structured_output_refused"]["json_schema"]


def test_chat_template_comes_from_props_on_any_server_that_tells_it(servers: Any) -> None:
    fake = FakeModel()
    server = servers(fake, any_model=True, record_bodies=True)
    model = OpenAIModel("smollm", server.url)

    async def go() -> str | None:
        await model.start()
        await model.close()
        return model.info.chat_template

    assert asyncio.run(go()) == fake.info.chat_template


def test_truncated_output_comes_back_with_finish_reason_length(servers: Any) -> None:
    server = servers(FakeModel(lambda r, i: "one two three four five six seven"))
    [c] = asyncio.run(call(OpenAIModel("smollm", server.url), Request.chat("go", max_tokens=3)))
    assert c.finish_reason == "length" and c.text == "one two three"


def test_a_server_that_ignores_n_is_asked_again_for_the_missing_samples(servers: Any) -> None:
    fake = FakeModel()
    server = servers(fake, ignore_n=True)
    out = asyncio.run(call(OpenAIModel("smollm", server.url), Request.chat("q", n=3, seed=5)))
    assert len(out) == 3 and len({c.text for c in out}) == 3
    assert [r.seed for r in fake.calls] == [5, 5 + 7919, 5 + 2 * 7919]


def test_embeddings_are_batched_and_ordered(servers: Any) -> None:
    server = servers()
    model = OpenAIModel("smollm", server.url, embed_batch_size=2)

    async def go() -> list[list[float]]:
        await model.start()
        try:
            return await model.embed(["red apple", "green apple", "red apple", "a bicycle"])
        finally:
            await model.close()

    vectors = asyncio.run(go())
    assert len(vectors) == 4 and all(len(v) == 64 for v in vectors)
    # the two "red apple" vectors came in different requests (batches): equal to float32
    # rounding, not compared bit for bit; "green apple" is far outside that tolerance
    np.testing.assert_allclose(vectors[2], vectors[0], rtol=0, atol=1e-6)
    assert max(abs(a - b) for a, b in zip(vectors[0], vectors[1], strict=True)) > 1e-2
    dot = sum(a * b for a, b in zip(vectors[0], vectors[1], strict=True))
    far = sum(a * b for a, b in zip(vectors[0], vectors[3], strict=True))
    assert dot > far  # shared words → closer
    assert server.stats.requests == 2


# -- the API key ---------------------------------------------------------------------------------
def test_api_key_comes_from_the_environment_and_never_shows(
    servers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = servers(api_key="sk-right-key")
    monkeypatch.setenv("MY_KEY", "sk-right-key")
    ok = asyncio.run(
        call(OpenAIModel("smollm", server.url, api_key_env="MY_KEY"), Request.chat("hi"))
    )
    assert ok[0].text

    monkeypatch.setenv("MY_KEY", "sk-wrong-key")
    with pytest.raises(ModelUnavailable) as wrong:
        asyncio.run(OpenAIModel("smollm", server.url, api_key_env="MY_KEY").start())
    assert (
        "401" in str(wrong.value)
        and "$MY_KEY" in str(wrong.value)
        and "sk-wrong-key" not in str(wrong.value)
    )

    monkeypatch.delenv("MY_KEY")
    with pytest.raises(ModelUnavailable, match=r"set \$MY_KEY"):
        asyncio.run(OpenAIModel("smollm", server.url, api_key_env="MY_KEY").start())


# -- failing fast ------------------------------------------------------------------------------------
def test_unreachable_server_fails_at_start_with_one_line(closed_url: str) -> None:
    url = closed_url
    with pytest.raises(ModelUnavailable) as info:
        asyncio.run(OpenAIModel("smollm", url).start())
    assert f"cannot reach {url}: connection refused" in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_model_fails_at_start_and_lists_what_is_served(servers: Any) -> None:
    server = servers()
    with pytest.raises(ModelUnavailable, match="does not serve model 'gpt-5'; it serves: smollm"):
        asyncio.run(OpenAIModel("gpt-5", server.url).start())
    # without the check, the first call's 404 stops the model for good
    model = OpenAIModel("gpt-5", server.url, check_model=False)
    with pytest.raises(ModelUnavailable, match="404"):
        asyncio.run(call(model, Request.chat("x")))


def test_a_pipeline_on_an_unreachable_endpoint_stops_before_any_row(
    tmp_path: Any, closed_url: str
) -> None:
    url = closed_url
    p = Pipeline(
        [TextGeneration(output="g")],
        source=[{"instruction": str(i)} for i in range(200)],
        models={"default": f"openai:smollm@{url}"},
    )
    with pytest.raises(ModelUnavailable, match="cannot reach"):
        p.run(tmp_path / "out")
    assert not (tmp_path / "out" / "data").exists()


def test_cli_reports_an_unreachable_endpoint_in_one_line(
    tmp_path: Any, closed_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from datamill.cli import main

    url = closed_url
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "run",
                "instructions-basic",
                "--limit",
                "3",
                "--output",
                str(tmp_path / "o"),
                "--model",
                f"openai:smollm@{url}",
            ]
        )
    assert exit_info.value.code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: cannot reach {url}: connection refused"
    )


def test_server_lost_mid_run_stops_the_model_instead_of_failing_each_row(servers: Any) -> None:
    server = servers()
    model = OpenAIModel("smollm", server.url, max_retries=2, backoff=0.01)

    async def go() -> None:
        await model.start()
        try:
            await model.generate(Request.chat("first"))
            server.stop()
            with pytest.raises(
                ModelUnavailable, match="lost .*connection refused.*run again once it answers"
            ):
                await model.generate(Request.chat("second"))
            with pytest.raises(ModelUnavailable):  # later calls are refused without trying
                await model.generate(Request.chat("third"))
        finally:
            await model.close()

    asyncio.run(go())
    # 1 try + 2 retries (the first may meet the pooled connection's reset), nothing for "third"
    assert model.counters["connection refused"] + model.counters.get("connection reset", 0) == 3
    assert model.counters["attempts"] == 1 + 3


# -- retries ------------------------------------------------------------------------------------------
def recording_sleep(model: OpenAIModel) -> list[float]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    model._sleep = sleep  # type: ignore[method-assign]
    return waits


def test_retry_after_is_honoured(servers: Any) -> None:
    server = servers(faults=Faults(rate=1.0, kinds=("429-retry-after",), retry_after=2.5))
    model = OpenAIModel("smollm", server.url, max_retries=2)
    waits = recording_sleep(model)
    with pytest.raises(ModelError) as info:
        asyncio.run(call(model, Request.chat("x")))
    assert info.value.reason == "rate limited" and info.value.retryable
    assert waits == [2.5, 2.5]
    assert server.stats.requests == 3 and server.stats.statuses[429] == 3


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("429", "rate limited"),
        ("500", "server error 500"),
        ("503", "server error 503"),
        ("reset", "connection reset"),
    ],
)
def test_failures_are_retried_with_growing_jittered_backoff(
    servers: Any, kind: str, reason: str
) -> None:
    server = servers(faults=Faults(rate=1.0, kinds=(kind,)))
    model = OpenAIModel("smollm", server.url, max_retries=4, backoff=0.1, max_backoff=0.5)
    waits = recording_sleep(model)
    with pytest.raises(ModelError) as info:
        asyncio.run(call(model, Request.chat("x")))
    assert info.value.reason == reason and "5 tries" in str(info.value)
    assert len(waits) == 4
    for attempt, wait in enumerate(waits):  # equal jitter: between half and all of the cap
        cap = min(0.5, 0.1 * 2**attempt)
        assert cap / 2 <= wait <= cap
    assert server.stats.requests == 5


def test_a_timeout_is_retried_and_cuts_concurrency(servers: Any) -> None:
    server = servers(faults=Faults(rate=1.0, kinds=("timeout",), hang=30))
    model = OpenAIModel(
        "smollm", server.url, timeout=0.2, max_retries=1, backoff=0.01, max_concurrency=32
    )
    with pytest.raises(ModelError) as info:
        asyncio.run(call(model, Request.chat("x")))
    assert info.value.reason == "timeout" and "timeout option" in str(info.value)
    assert model.limiter.limit == 8  # 32 → 16 → 8: two separate rounds, two cuts


def test_non_retryable_errors_fail_at_once(servers: Any) -> None:
    def handler(request: Request, i: int) -> str:
        raise ModelError("prompt is too long for the context window", reason="request too long")

    server = servers(FakeModel(handler))
    with pytest.raises(ModelError) as info:
        asyncio.run(call(OpenAIModel("smollm", server.url), Request.chat("x" * 100)))
    assert info.value.reason == "request too long" and not info.value.retryable
    assert server.stats.requests == 1


def test_empty_completion_is_asked_again_once(servers: Any) -> None:
    server = servers(faults=Faults(rate=1.0, kinds=("empty",)))
    [c] = asyncio.run(
        call(OpenAIModel("smollm", server.url, empty_retries=1), Request.chat("x", seed=3))
    )
    assert c.text == "" and server.stats.requests == 2  # still empty: the task will record it

    answers = iter(["", "now an answer"])
    fake = FakeModel(lambda r, i: next(answers))
    server = servers(fake)
    [c] = asyncio.run(
        call(OpenAIModel("smollm", server.url, empty_retries=1), Request.chat("y", seed=3))
    )
    assert c.text == "now an answer"
    assert [r.seed for r in fake.calls] == [3, 3 + 7919]  # the second try is a new sample


# -- adaptive concurrency ------------------------------------------------------------------------------
def test_limiter_halves_once_per_round_and_probes_back_up() -> None:
    async def go() -> None:
        limiter = AdaptiveLimiter(16, minimum=2)
        epochs = [await limiter.acquire() for _ in range(16)]
        assert limiter.in_flight == 16 and limiter.limit == 16
        for e in epochs[:4]:  # four calls of one round report overload: one cut
            limiter.release(e, overloaded=True)
        assert limiter.limit == 8 and limiter.cuts == 1
        for e in epochs[4:]:
            limiter.release(e)
        assert limiter.in_flight == 0
        e = await limiter.acquire()
        limiter.release(e, overloaded=True)  # a new round: cut again
        assert limiter.limit == 4
        for _ in range(3):
            e = await limiter.acquire()
            limiter.release(e, overloaded=True)
        assert limiter.limit == 2  # never below the minimum
        for _ in range(200):
            e = await limiter.acquire()
            limiter.release(e)
        assert limiter.limit == 16  # back at the maximum, never above it

    asyncio.run(go())


def test_limiter_queues_in_order_and_a_cancelled_waiter_leaks_no_slot() -> None:
    async def go() -> None:
        limiter = AdaptiveLimiter(1)
        order: list[str] = []
        first = await limiter.acquire()

        async def wait(name: str) -> None:
            async with limiter.slot():
                order.append(name)

        a, b, c = (asyncio.create_task(wait(n)) for n in "abc")
        await asyncio.sleep(0)
        b.cancel()
        limiter.release(first)
        await asyncio.gather(a, c)
        assert b.cancelled() and order == ["a", "c"]
        assert limiter.in_flight == 0

    asyncio.run(go())


def test_rate_limits_shrink_concurrency_and_recovery_grows_it_back(servers: Any) -> None:
    server = servers(FakeModel(latency=0.005), faults=Faults(rate=0.3, kinds=("429",), seed=4))
    model = OpenAIModel(
        "smollm",
        server.url,
        max_concurrency=32,
        min_concurrency=2,
        backoff=0.001,
        max_backoff=0.01,
        max_retries=20,
    )

    async def burst(tag: str, n: int) -> None:
        await asyncio.gather(*(model.generate(Request.chat(f"{tag} {i}")) for i in range(n)))

    async def go() -> tuple[int, int]:
        await model.start()
        try:
            await burst("faulty", 200)
            low = model.limiter.limit
            server.server.faults = Faults(rate=0.0)
            await burst("clean", 800)  # ~500 successes lift 2 → 32
            return low, model.limiter.limit
        finally:
            await model.close()

    low, recovered = asyncio.run(go())
    assert model.limiter.cuts > 0 and low < 32
    assert recovered == 32
    assert server.server.stats.peak_in_flight <= 32


# -- specs that name a host, answers with odd bookkeeping, deterministic and hung endpoints -------
@pytest.mark.parametrize(
    "spec",
    [
        "openai:fake@127.0.0.1:8000/v1",
        "openai:fake@localhost:8000",
        "openai:fake@ftp://127.0.0.1/v1",
        "openai:fake@http://",
        "openai:fake@",
        "openai:fake@http://127.0.0.1:99999/v1",
        "openai:fake@http:/127.0.0.1/v1",
    ],
)
def test_an_at_in_the_spec_must_be_a_url_or_nothing_is_contacted(
    spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # would be the wrong host
    with pytest.raises(ConfigError, match="must start with http:// or https://"):
        load_model(spec)


def test_the_cli_refuses_a_schemeless_endpoint_in_one_line(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from datamill.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(
            ["run", "instructions-basic", "--limit", "2", "-o", str(tmp_path / "o")]
            + ["--model", "openai:fake@127.0.0.1:8000/v1"]
        )
    assert exit_info.value.code == 2  # a configuration error, found before any call
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "'127.0.0.1:8000/v1' must start with http://" in errors[0]
    assert not (tmp_path / "o" / "data").exists()


@pytest.mark.parametrize(
    "edit",
    [
        {"usage": {"prompt_tokens": "many", "completion_tokens": 1.5}},
        {"usage": None},
        {"usage": "n/a"},
        {"usage": {"prompt_tokens": -3, "completion_tokens": True}},
        {"usage": {"prompt_tokens": "7", "completion_tokens": 4.0}},
        {"usage": []},
    ],
)
def test_odd_bookkeeping_in_an_answer_keeps_the_text(servers: Any, edit: dict[str, Any]) -> None:
    def patch(body: dict[str, Any]) -> dict[str, Any]:
        body.update(edit)
        body["choices"][0]["index"] = "first"
        body["choices"][0]["finish_reason"] = None
        return body

    server = servers(FakeModel(lambda r, i: "kept answer"), edit_answer=patch)
    [c] = asyncio.run(call(OpenAIModel("smollm", server.url), Request.chat("q")))
    assert c.text == "kept answer" and c.finish_reason == "stop"
    usage = edit["usage"] if isinstance(edit["usage"], dict) else {}
    assert c.prompt_tokens == (7 if usage.get("prompt_tokens") == "7" else 0)
    assert c.completion_tokens == (4 if usage.get("completion_tokens") == 4.0 else 0)


def test_content_given_as_parts_and_missing_usage_are_read(servers: Any) -> None:
    def patch(body: dict[str, Any]) -> dict[str, Any]:
        del body["usage"]
        text = body["choices"][0]["message"]["content"]
        body["choices"][0]["message"]["content"] = [
            {"type": "text", "text": text[:3]},
            {"type": "image"},
            {"type": "text", "text": text[3:]},
        ]
        return body

    server = servers(FakeModel(lambda r, i: "split answer"), edit_answer=patch)
    [c] = asyncio.run(call(OpenAIModel("smollm", server.url), Request.chat("q")))
    assert (c.text, c.prompt_tokens, c.completion_tokens) == ("split answer", 0, 0)


def refusing(message: str) -> FakeModel:
    def handler(request: Request, i: int) -> str:
        raise ModelError(message, reason="broken")  # the server answers 500 with this message

    return FakeModel(handler)


def test_the_same_error_answer_twice_is_not_tried_again(servers: Any) -> None:
    server = servers(refusing("unsupported sampler 'mirostat' for this model"))
    model = OpenAIModel("smollm", server.url, backoff=0.01)
    with pytest.raises(ModelError) as info:
        asyncio.run(call(model, Request.chat("x")))
    assert server.stats.requests == 2 and not info.value.retryable
    assert "the same answer twice" in str(info.value)
    assert model.run_facts()["retries_by_reason"] == {"server error 500": 1}


def test_first_calls_failing_alike_stop_the_model_with_one_line(servers: Any) -> None:
    server = servers(refusing("unsupported sampler 'mirostat' for this model"))
    model = OpenAIModel("smollm", server.url, backoff=0.01, fail_fast_after=4)

    async def go() -> list[Any]:
        try:
            return [
                await asyncio.gather(model.generate(Request.chat(f"q{i}")), return_exceptions=True)
                for i in range(6)
            ]
        finally:
            await model.close()

    outcomes = [o[0] for o in asyncio.run(go())]
    assert [type(o).__name__ for o in outcomes] == ["ModelError"] * 3 + ["ModelUnavailable"] * 3
    assert "refused the first 4 /chat/completions calls alike" in str(outcomes[3])
    assert "mirostat" in str(outcomes[3]) and "\n" not in str(outcomes[3])
    assert server.stats.requests == 8  # nothing is sent once the model is down


def test_failures_that_differ_or_follow_a_success_never_stop_the_model(servers: Any) -> None:
    def handler(request: Request, i: int) -> str:
        text = request.messages[-1]["content"]  # type: ignore[index]
        if text != "q0":
            raise ModelError(f"prompt {text} has too many tokens for the context", reason="x")
        return "fine"

    server = servers(FakeModel(handler))
    model = OpenAIModel("smollm", server.url, backoff=0.01, fail_fast_after=2)

    async def go() -> list[Any]:
        try:
            return [
                (
                    await asyncio.gather(
                        model.generate(Request.chat(f"q{i}")), return_exceptions=True
                    )
                )[0]
                for i in range(5)
            ]
        finally:
            await model.close()

    outcomes = asyncio.run(go())
    assert outcomes[0][0].text == "fine"
    assert all(type(o) is ModelError for o in outcomes[1:])


def test_a_hung_endpoint_stops_the_run_with_one_line(servers: Any) -> None:
    server = servers(faults=Faults(rate=1.0, kinds=("timeout",), hang=60))
    model = OpenAIModel("smollm", server.url, first_byte_timeout=0.2, backoff=0.01)

    async def go() -> list[Any]:
        try:
            return await asyncio.gather(
                *(model.generate(Request.chat(f"q{i}")) for i in range(4)), return_exceptions=True
            )
        finally:
            await model.close()

    outcomes = asyncio.run(go())
    assert all(isinstance(o, ModelUnavailable) for o in outcomes)
    message = str(outcomes[0])
    assert "answered none in" in message and "first_byte_timeout" in message
    assert f"accepted {model.counters['attempts']} requests" in message
    assert model.waiting == 0 and model.counters["attempts"] == server.stats.requests
    assert model.counters["attempts"] < 4 * 7  # stopped well before every retry ran out


def test_the_first_byte_deadline_lapses_once_the_endpoint_has_answered(servers: Any) -> None:
    server = servers(FakeModel(lambda r, i: "ok"), latency=0.3)
    model = OpenAIModel("smollm", server.url, first_byte_timeout=0.1, timeout=5, backoff=0.01)

    async def go() -> list[Completion]:
        model._answered = True  # as after a first answer: only the generation deadline applies
        return await call(model, Request.chat("slow"))

    assert asyncio.run(go())[0].text == "ok"
    assert model.counters["attempts"] == 1


def test_a_server_that_refuses_n_gets_one_sample_per_request(servers: Any) -> None:
    fake = FakeModel()
    server = servers(fake, refuse_n=True)
    model = OpenAIModel("smollm", server.url)

    async def go() -> list[list[Completion]]:
        try:
            return [await model.generate(Request.chat(f"q{i}", n=3, seed=5)) for i in range(2)]
        finally:
            await model.close()

    first, second = asyncio.run(go())
    assert len(first) == len(second) == 3 and len({c.text for c in first}) == 3
    assert server.stats.statuses[400] == 1  # refused once; every later call asks for one
    assert len(fake.calls) == 6 and all(r.n == 1 for r in fake.calls)
    assert model.run_facts()["samples_per_request"] == 1


def test_after_a_first_answer_the_generation_deadline_still_holds(servers: Any) -> None:
    server = servers(faults=Faults(rate=1.0, kinds=("timeout",), hang=20))
    model = OpenAIModel("smollm", server.url, timeout=0.3, first_byte_timeout=60, max_retries=0)
    model._answered = True  # as after a first answer: the first-byte deadline is over
    with pytest.raises(ModelError) as info:
        asyncio.run(call(model, Request.chat("x")))
    assert info.value.reason == "timeout" and "0.3s (timeout option)" in str(info.value)


def test_run_json_and_the_summary_say_how_many_attempts_were_retried_and_why(
    servers: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from datamill.cli import main

    server = servers(faults=Faults(rate=0.4, kinds=("503", "429"), seed=3))
    args = ["run", "instructions-basic", "--limit", "4", "-q", "-o", str(tmp_path / "o")]
    args += ["--model", f"openai:smollm@{server.url}", "--set", "models.default.backoff=0"]
    main(args)
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    facts = run["models"]["default"]
    by_reason = facts["retries_by_reason"]
    assert set(by_reason) <= {"server error 503", "rate limited"} and facts["retries"] > 0
    assert sum(by_reason.values()) == facts["retries"]
    # every request the server saw is an answered call, a retried attempt or a call's last try
    exhausted = sum(n for r, n in run["failures"].items() if r in by_reason)
    assert server.stats.requests == run["model_calls"] + facts["retries"] + exhausted
    printed = capsys.readouterr().out
    assert f"model default: {facts['retries']} attempts retried (" in printed

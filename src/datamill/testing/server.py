"""A local OpenAI-compatible server that serves any datamill model, with latency and faults.

Routes: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions``,
``POST /v1/embeddings`` (and ``GET /stats``, ``POST /stats/reset`` for the server's counters). The answers come from
a datamill :class:`~datamill.models.base.Model`: :class:`~datamill.models.fake.FakeModel` for
tests and benchmarks, or the embedded llama.cpp model for a real one.

Fault injection: each generation or embedding request draws, with probability ``Faults.rate``
from a seeded generator, one fault kind (uniformly among ``Faults.kinds``):

- ``timeout`` — hold the request for ``hang`` seconds (the client's timeout fires first)
- ``reset`` — drop the TCP connection with a reset, no answer
- ``429`` / ``429-retry-after`` — rate limited, without / with a ``Retry-After`` header
- ``500`` / ``503`` — server errors
- ``empty`` — a completion with empty text; ``length`` — the text cut short with
  ``finish_reason: "length"``; ``garbage`` — junk characters instead of the model's answer

Server differences: ``structured_output`` says which structured-output forms it takes —
``"any"`` (default), ``"json_object"`` (refuses ``response_format: {"type": "json_schema"}``
with HTTP 500 and a request-validation message, as llama-cpp-python's server does) or ``"none"``
(refuses every schema form with HTTP 400); ``ignore_n`` answers one sample whatever ``n`` asks,
``refuse_n`` answers ``n > 1`` with HTTP 400 (as llama.cpp's llama-server does);
``edit_answer`` rewrites each successful answer body before it goes out (odd ``usage`` fields…).

Reasoning and tools: ``reasoning_field`` (``"reasoning_content"`` as vLLM's and llama-server's
reasoning parsers, ``"reasoning"`` as Ollama's ``/v1``) sends a model's thinking apart from the
answer — its ``Completion.reasoning``, or a leading ``<think>…</think>`` block split off its text;
without it the thinking stays in the content as a ``<think>`` block (a server with no parser).
A completion's ``tool_calls`` go out as the message's ``tool_calls`` (OpenAI's shape, content
null). A request's ``tools``, ``tool_choice``, ``chat_template_kwargs.enable_thinking`` and
``reasoning_effort`` reach the model's :class:`Request`.

Run it: ``python -m datamill.testing.server --port 8000 --latency 0.2 --faults 0.2``; in tests,
``with serve_in_thread(FakeModel(), faults=Faults(rate=0.2)) as server: server.url``.

Deliberately not here: streaming, running tools, tokenization endpoints, batching across requests
(the model behind it decides how it runs concurrent calls).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import math
import os
import random
import signal
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..errors import ModelError
from ..models.base import THINK_TAGS, Completion, Model, Request, split_reasoning

try:
    import orjson

    def _dumps(value: Any) -> bytes:
        return orjson.dumps(value)

    def _loads(raw: bytes | str) -> Any:
        return orjson.loads(raw)
except ImportError:  # pragma: no cover
    import json

    def _dumps(value: Any) -> bytes:
        return json.dumps(value).encode()

    def _loads(raw: bytes | str) -> Any:
        return json.loads(raw)


FAULT_KINDS = (
    "timeout",
    "reset",
    "429",
    "429-retry-after",
    "500",
    "503",
    "empty",
    "length",
    "garbage",
)
_HTTP_FAULTS = {"timeout", "reset", "429", "429-retry-after", "500", "503"}
_JUNK = "}{][#@%&*~^|<>;:=+"
STRUCTURED_OUTPUT = ("any", "json_object", "none")


@dataclass
class Faults:
    """Which faults to inject and how often (``rate`` is the chance per request)."""

    rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    seed: int = 0
    retry_after: float = 1.0  #: seconds sent in ``Retry-After`` by ``429-retry-after``
    hang: float = 600.0  #: seconds a ``timeout`` fault holds the request

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be between 0 and 1, got {self.rate}")
        self.kinds = tuple(self.kinds)
        unknown = [k for k in self.kinds if k not in FAULT_KINDS]
        if unknown or not self.kinds:
            raise ValueError(
                f"unknown fault kind {unknown[0] if unknown else '(none)'!r}; known: {', '.join(FAULT_KINDS)}"
            )


@dataclass
class ServerStats:
    """What the server saw: requests, answers by status, faults by kind, concurrency."""

    requests: int = 0
    ok: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    peak_in_flight: int = 0
    in_flight_at_arrival: int = 0  #: summed over requests; / requests = mean concurrency seen
    started: float = field(default_factory=time.monotonic)
    first_arrival: float | None = None  #: when the first request came in (monotonic)
    last_answer: float | None = None  #: when the latest answer went out

    @property
    def active_seconds(self) -> float:
        """From the first request in to the last answer out: the span a client kept it busy."""
        if self.first_arrival is None or self.last_answer is None:
            return 0.0
        return max(0.0, self.last_answer - self.first_arrival)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "faults": dict(sorted(self.faults.items())),
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "mean_in_flight": round(self.in_flight_at_arrival / self.requests, 1)
            if self.requests
            else 0.0,
            "seconds": round(time.monotonic() - self.started, 3),
            "active_seconds": round(self.active_seconds, 3),
        }


class OpenAIServer:
    """An aiohttp app serving ``model`` under ``name``; ``await start()`` → URL, ``await stop()``."""

    def __init__(
        self,
        model: Model,
        *,
        name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        jitter: float = 0.0,
        faults: Faults | None = None,
        api_key: str | None = None,
        any_model: bool = False,
        owned_by: str = "datamill",
        embedding_dim: int = 64,
        ignore_n: bool = False,
        record_bodies: bool = False,
        structured_output: str = "any",
        refuse_n: bool = False,
        edit_answer: Callable[[dict[str, Any]], Any] | None = None,
        reasoning_field: str | None = None,
    ) -> None:
        if structured_output not in STRUCTURED_OUTPUT:
            raise ValueError(
                f"structured_output must be one of {', '.join(STRUCTURED_OUTPUT)}, got {structured_output!r}"
            )
        self.model = model
        self.name = name or model.info.name
        self.host = host
        self.port = port
        self.latency = latency
        self.jitter = jitter
        self.faults = faults or Faults()
        self.api_key = api_key
        self.any_model = any_model
        self.owned_by = owned_by
        self.embedding_dim = embedding_dim
        self.ignore_n = ignore_n  #: answer one sample whatever ``n`` asks (as Ollama does)
        self.bodies: list[dict[str, Any]] | None = [] if record_bodies else None
        self.structured_output = structured_output
        self.edit_answer = edit_answer
        self.reasoning_field = reasoning_field  #: where thinking goes; None: inline ``<think>``
        self.refuse_n = refuse_n  #: answer n > 1 with HTTP 400, as llama.cpp's llama-server does
        self.stats = ServerStats()
        self._rng = random.Random(self.faults.seed)
        self._runner: web.AppRunner | None = None
        self._ids = 0
        self.app = web.Application(client_max_size=64 << 20)
        self.app.add_routes(
            [
                web.get("/v1/models", self._models),
                web.post("/v1/chat/completions", self._chat),
                web.post("/v1/completions", self._completions),
                web.post("/v1/embeddings", self._embeddings),
                web.get("/props", self._props),
                web.get("/stats", self._stats),
                web.post("/stats/reset", self._reset_stats),
            ]
        )

    @property
    def url(self) -> str:
        """The base URL clients use (``http://127.0.0.1:PORT/v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> str:
        await self.model.start()
        self._runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=4096)
        await site.start()
        if self.port == 0:
            sockets = list(getattr(site._server, "sockets", None) or [])
            if not sockets:
                raise RuntimeError(f"the test server did not bind {self.host}")
            self.port = int(sockets[0].getsockname()[1])
        self.stats = ServerStats()
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.model.close()

    async def __aenter__(self) -> OpenAIServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- routes -----------------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.StreamResponse:
        denied = self._check_key(request)
        if denied is not None:
            return denied
        data = [{"id": self.name, "object": "model", "created": 0, "owned_by": self.owned_by}]
        return self._json({"object": "list", "data": data})

    async def _props(self, request: web.Request) -> web.StreamResponse:
        """llama.cpp's server route that tells the chat template."""
        return self._json({"chat_template": self.model.info.chat_template or ""})

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        return self._json(self.stats.as_dict())

    async def _reset_stats(self, request: web.Request) -> web.StreamResponse:
        self.stats = ServerStats()
        return self._json(self.stats.as_dict())

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=True)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=False)

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=None)

    async def _serve(self, request: web.Request, chat: bool | None) -> web.StreamResponse:
        stats = self.stats
        stats.requests += 1
        if stats.first_arrival is None:
            stats.first_arrival = time.monotonic()
        stats.in_flight_at_arrival += stats.in_flight
        stats.in_flight += 1
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        try:
            response = await self._answer(request, chat)
            stats.statuses[response.status] += 1
            if response.status == 200:
                stats.ok += 1
            return response
        finally:
            stats.in_flight -= 1
            stats.last_answer = time.monotonic()

    async def _answer(self, request: web.Request, chat: bool | None) -> web.StreamResponse:
        denied = self._check_key(request)
        if denied is not None:
            return denied
        try:
            body = _loads(await request.read())
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as exc:
            return self._error(400, f"invalid JSON body: {exc}")
        if self.bodies is not None:
            self.bodies.append(body)
        if not self.any_model and body.get("model") != self.name:
            return self._error(
                404, f"The model `{body.get('model')}` does not exist.", code="model_not_found"
            )
        if body.get("stream"):
            return self._error(400, "this test server does not stream; send stream: false")
        refused = self._refuse_form(body, chat)
        if refused is not None:
            return refused
        if self.refuse_n and chat is not None and body.get("n") not in (None, 1):
            return self._error(400, "Only one completion choice is allowed")
        fault = self._draw()
        if self.latency or self.jitter:
            await asyncio.sleep(
                max(
                    0.0,
                    self.latency
                    + (self._rng.uniform(-self.jitter, self.jitter) if self.jitter else 0.0),
                )
            )
        if fault in _HTTP_FAULTS or (fault is not None and chat is None):
            self.stats.faults[fault] += 1
            return await self._http_fault(request, fault)
        if chat is None:
            return await self._embed(body)
        try:
            req = _to_request(body, chat)
            if self.ignore_n and req.n > 1:
                req = req.with_options(n=1)
        except (ValueError, TypeError, KeyError) as exc:
            return self._error(400, f"bad request: {exc}")
        try:
            completions = await self.model.generate(req)
        except ModelError as exc:
            status = 400 if exc.reason == "request too long" else 500
            return self._error(status, str(exc))
        if fault is not None:
            self.stats.faults[fault] += 1
            completions = [self._spoil(c, fault) for c in completions]
        answer: Any = self._completion_body(completions, chat)
        if self.edit_answer is not None:
            answer = self.edit_answer(answer)
        return self._json(answer)

    # -- pieces -----------------------------------------------------------------------------
    def _refuse_form(self, body: dict[str, Any], chat: bool | None) -> web.Response | None:
        """The refusal a server without some structured-output form sends, or None."""
        if chat is None or self.structured_output == "any":
            return None
        response_format = body.get("response_format")
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind == "json_schema":  # llama-cpp-python: a pydantic validation error as HTTP 500
            message = (
                "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', "
                "'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}"
            )
            return self._error(500, message)
        if self.structured_output == "none" and (
            kind not in (None, "text") or "json_schema" in body
        ):
            return self._error(400, "this server supports no response_format or grammar")
        return None

    def _draw(self) -> str | None:
        if self.faults.rate <= 0.0 or self._rng.random() >= self.faults.rate:
            return None
        return self._rng.choice(self.faults.kinds)

    async def _http_fault(self, request: web.Request, fault: str) -> web.StreamResponse:
        if fault == "timeout":
            await asyncio.sleep(self.faults.hang)
            return self._error(504, "held past the client's timeout")
        if fault == "reset":
            transport = request.transport
            if transport is not None:
                sock = transport.get_extra_info("socket")
                if sock is not None:  # SO_LINGER 0: close sends RST, not FIN
                    with contextlib.suppress(OSError):
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                transport.abort()
            raise asyncio.CancelledError  # nothing can be written to an aborted connection
        if fault == "429":
            return self._error(429, "Rate limit reached; slow down.", code="rate_limit_exceeded")
        if fault == "429-retry-after":
            wait = self.faults.retry_after
            header = str(int(wait)) if float(wait).is_integer() else f"{wait:g}"
            return self._error(
                429,
                "Rate limit reached; retry later.",
                code="rate_limit_exceeded",
                headers={"Retry-After": header},
            )
        status = int(fault)
        return self._error(
            status, "The server is overloaded." if status == 503 else "Internal server error."
        )

    def _spoil(self, completion: Completion, fault: str) -> Completion:
        if fault == "empty":
            return Completion(text="", finish_reason="stop", prompt_tokens=completion.prompt_tokens)
        if fault == "length":
            text = completion.text[: max(1, len(completion.text) // 2)]
            return Completion(
                text=text,
                finish_reason="length",
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=len(text.split()),
            )
        junk = "".join(self._rng.choice(_JUNK) for _ in range(24))
        return Completion(
            text=junk,
            finish_reason="stop",
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=3,
        )

    def _completion_body(self, completions: list[Completion], chat: bool) -> dict[str, Any]:
        self._ids += 1
        choices: list[dict[str, Any]] = []
        for i, c in enumerate(completions):
            reasoning, text = c.reasoning, c.text
            if self.reasoning_field is not None and reasoning is None:
                reasoning, answer = split_reasoning(text)
                text = text if reasoning is None else answer or ""
            apart: dict[str, Any] = {}
            if reasoning is not None and self.reasoning_field is not None:
                apart[self.reasoning_field] = reasoning
            elif reasoning is not None:
                text = f"{THINK_TAGS[0]}{reasoning}{THINK_TAGS[1]}{text}"
            if chat:
                message: dict[str, Any] = {"role": "assistant", "content": text, **apart}
                if c.tool_calls:
                    message["content"] = text or None
                    message["tool_calls"] = [
                        {
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["name"], "arguments": call["arguments"]},
                        }
                        for call in c.tool_calls
                    ]
                choices.append(
                    {
                        "index": i,
                        "message": message,
                        "finish_reason": c.finish_reason,
                        "logprobs": None,
                    }
                )
            else:
                choices.append(
                    {
                        "index": i,
                        "text": text,
                        "finish_reason": c.finish_reason,
                        "logprobs": None,
                        **apart,
                    }
                )
        prompt = completions[0].prompt_tokens if completions else 0
        generated = sum(c.completion_tokens for c in completions)
        return {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{self._ids}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": generated,
                "total_tokens": prompt + generated,
            },
        }

    async def _embed(self, body: dict[str, Any]) -> web.StreamResponse:
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return self._error(400, "input must be a string or a list of strings")
        embed = getattr(self.model, "embed", None)
        vectors = (
            await embed(texts)
            if callable(embed)
            else [hashed_embedding(t, self.embedding_dim) for t in texts]
        )
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        tokens = sum(len(t.split()) for t in texts)
        return self._json(
            {
                "object": "list",
                "data": data,
                "model": self.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    def _check_key(self, request: web.Request) -> web.StreamResponse | None:
        if self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return self._error(401, "Incorrect API key provided.", code="invalid_api_key")

    def _json(
        self, body: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> web.Response:
        return web.Response(
            body=_dumps(body), status=status, content_type="application/json", headers=headers
        )

    def _error(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        error = {
            "message": message,
            "type": "invalid_request_error" if status < 500 else "server_error",
            "code": code,
        }
        return self._json({"error": error}, status=status, headers=headers)


def hashed_embedding(text: str, dim: int = 64) -> list[float]:
    """A deterministic unit vector from the words of ``text`` (texts sharing words are close)."""
    vector = [0.0] * dim
    for word in text.lower().split():
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        slot = int.from_bytes(digest[:4], "little") % dim
        vector[slot] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def _to_request(body: dict[str, Any], chat: bool) -> Request:
    """An OpenAI request body → a datamill :class:`Request`."""
    schema = None
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema")
        elif response_format.get("type") == "json_object":
            schema = response_format.get("schema") or {"type": "object"}
    if isinstance(body.get("json_schema"), dict):
        schema = body["json_schema"]
    stop = body.get("stop") or ()
    common: dict[str, Any] = {
        "max_tokens": int(body.get("max_tokens") or body.get("max_completion_tokens") or 256),
        "temperature": float(body.get("temperature", 1.0)),
        "top_p": float(body.get("top_p", 1.0)),
        "seed": int(body["seed"]) if body.get("seed") is not None else None,
        "stop": (stop,) if isinstance(stop, str) else tuple(stop),
        "n": int(body.get("n") or 1),
        "json_schema": schema,
    }
    if body.get("tools"):
        common["tools"] = tuple(body["tools"])
        common["tool_choice"] = body.get("tool_choice")
    kwargs = body.get("chat_template_kwargs")
    if isinstance(kwargs, dict) and isinstance(kwargs.get("enable_thinking"), bool):
        common["enable_thinking"] = kwargs["enable_thinking"]
    if isinstance(body.get("reasoning_effort"), str):
        common["reasoning_effort"] = body["reasoning_effort"]
    if chat:
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list")
        return Request(
            messages=tuple(
                {"role": str(m["role"]), "content": _content(m.get("content"))} for m in messages
            ),
            **common,
        )
    prompt = body["prompt"]
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise ValueError("this server takes one prompt string per request")
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ValueError("prompt must be a string")
    return Request(prompt=prompt, **common)


def _content(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    raise ValueError("message content must be a string or a list of parts")


class ServerThread:
    """An :class:`OpenAIServer` running on its own event loop in a daemon thread."""

    def __init__(self, server: OpenAIServer) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="datamill-test-server", daemon=True)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def stats(self) -> ServerStats:
        return self.server.stats

    def start(self) -> ServerThread:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.server.stop())
        self._loop.close()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self.start() if not self._thread.is_alive() else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_in_thread(model: Model | None = None, **options: Any) -> ServerThread:
    """Start a server in a background thread (``FakeModel()`` by default); use it as a context manager."""
    if model is None:
        from ..models.fake import FakeModel

        model = FakeModel()
    return ServerThread(OpenAIServer(model, **options)).start()


def main(argv: list[str] | None = None) -> None:
    """``python -m datamill.testing.server``: serve a model until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m datamill.testing.server", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--model",
        default="fake",
        help="datamill model spec to serve (fake, llamacpp, llamacpp:PATH)",
    )
    parser.add_argument(
        "--name", default=None, help="the model name clients must send (default: the model's own)"
    )
    parser.add_argument(
        "--any-model", action="store_true", help="accept any model name in requests"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument(
        "--jitter", type=float, default=0.0, help="± seconds of random extra latency"
    )
    parser.add_argument(
        "--faults", type=float, default=0.0, help="chance (0-1) that a request gets a fault"
    )
    parser.add_argument(
        "--fault-kinds",
        default=",".join(FAULT_KINDS),
        help="comma-separated subset of: " + ", ".join(FAULT_KINDS),
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--retry-after", type=float, default=1.0, help="seconds sent with 429-retry-after"
    )
    parser.add_argument(
        "--hang", type=float, default=600.0, help="seconds a timeout fault holds a request"
    )
    parser.add_argument(
        "--api-key-env", default=None, help="require the key held in this environment variable"
    )
    parser.add_argument(
        "--reasoning-field",
        default=None,
        help="send the thinking apart in this field (reasoning_content, reasoning); default inline",
    )
    args = parser.parse_args(argv)

    from ..models.registry import load_model

    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not api_key:
        parser.error(f"${args.api_key_env} is not set")
    try:
        faults = Faults(
            args.faults,
            tuple(k.strip() for k in args.fault_kinds.split(",") if k.strip()),
            args.seed,
            args.retry_after,
            args.hang,
        )
    except ValueError as exc:
        parser.error(str(exc))
    server = OpenAIServer(
        load_model(args.model),
        name=args.name,
        host=args.host,
        port=args.port,
        latency=args.latency,
        jitter=args.jitter,
        faults=faults,
        api_key=api_key,
        any_model=args.any_model,
        reasoning_field=args.reasoning_field,
    )

    async def serve() -> None:
        url = await server.start()
        print(
            f"serving {server.name} at {url} (latency {args.latency:g}s, faults {args.faults:g})",
            flush=True,
        )
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, done.set)
        try:
            await done.wait()
        finally:
            await server.stop()

    asyncio.run(serve())


if __name__ == "__main__":
    main()

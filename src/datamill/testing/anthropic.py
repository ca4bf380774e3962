"""A local fake of the Anthropic Messages API: ``POST /v1/messages`` and ``GET /v1/models``.

The answers come from a datamill :class:`~datamill.models.base.Model` (``FakeModel()`` by
default) turned into Message objects: ``text`` blocks, ``thinking`` blocks (a completion's
``reasoning``, or a leading ``<think>`` block of its text when the request turned thinking on),
``tool_use`` blocks (its ``tool_calls``), ``stop_reason`` and ``usage``. A request that forces a
tool (``tool_choice: {type: tool}``), or offers datamill's answer tool, is answered by that tool's
call with a value of its ``input_schema`` (the model gets the schema as ``json_schema``), as a
model doing what it is told.

It checks requests as the real API does, answering HTTP 400 ``invalid_request_error``: a missing
``anthropic-version`` header or ``max_tokens``, an unknown body field (``n``, ``seed``…), a
message role other than user/assistant, a temperature outside 0-1, thinking with a budget under
1024 or not under ``max_tokens``, with a temperature or ``top_p`` it does not allow, or with a
forced tool. A wrong ``x-api-key`` (when ``api_key`` is set) is 401; an unlisted model (when
``models`` is set) 404.

Scripting: ``script`` is a list consumed one entry per ``POST /v1/messages``, before the model:
an ``int`` answers that status with Anthropic's error body (429 and 529 with a ``retry-after``
header when ``retry_after`` is set), a ``dict`` is sent as the 200 body as it is, a
:class:`Scripted` gives status, body and headers. When the list is empty the model answers.

Counting: ``stats`` (:class:`~datamill.testing.server.ServerStats`: requests, answers by
status) and ``bodies`` (every request body, in order of arrival).

In tests: ``with serve_anthropic(FakeModel(), script=[529]) as server: server.url``.

Deliberately not here: streaming, Message Batches, token counting, images, running tools.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import web

from ..errors import ModelError
from ..models.anthropic_messages import SCHEMA_TOOL, SCHEMA_VALUE_TOOL
from ..models.base import Completion, Message, Model, Request, split_reasoning
from .server import ServerStats, ServerThread

#: Anthropic's error ``type`` per HTTP status
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
#: the request fields the Messages API takes (anything else is refused, as the API does)
BODY_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "tools",
        "tool_choice",
        "thinking",
        "metadata",
        "stream",
        "service_tier",
    }
)
#: finish reason → Anthropic's ``stop_reason``
STOP_REASON = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


@dataclass
class Scripted:
    """One scripted answer: ``status``, the JSON ``body`` (default: Anthropic's error body for
    the status, with ``message``) and extra ``headers``."""

    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    message: str | None = None


class AnthropicServer:
    """An aiohttp app answering the Messages API from ``model``; ``await start()`` → URL."""

    def __init__(
        self,
        model: Model,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        models: Iterable[str] | None = None,
        script: Iterable[int | dict[str, Any] | Scripted] = (),
        retry_after: float | None = None,
        latency: float = 0.0,
    ) -> None:
        self.model = model
        self.host, self.port = host, port
        self.api_key = api_key  #: the ``x-api-key`` required; None: any or none
        self.models = None if models is None else tuple(models)  #: None: any model name
        self.script: deque[int | dict[str, Any] | Scripted] = deque(script)
        self.retry_after = retry_after  #: seconds sent in ``retry-after`` with 429/529
        self.latency = latency
        self.stats = ServerStats()
        self.bodies: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.app = web.Application(client_max_size=64 << 20)
        self.app.add_routes(
            [web.get("/v1/models", self._list), web.post("/v1/messages", self._messages)]
        )

    @property
    def url(self) -> str:
        """The base URL (``http://127.0.0.1:PORT/v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> str:
        await self.model.start()
        self._runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            sockets = list(getattr(site._server, "sockets", None) or [])
            self.port = int(sockets[0].getsockname()[1])
        self.stats = ServerStats()
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.model.close()

    # -- routes -----------------------------------------------------------------------------------
    async def _list(self, request: web.Request) -> web.StreamResponse:
        denied = self._check_headers(request)
        if denied is not None:
            return denied
        names = self.models or (self.model.info.name,)
        data = [{"type": "model", "id": n, "display_name": n, "created_at": ""} for n in names]
        return _json({"data": data, "has_more": False, "first_id": names[0], "last_id": names[-1]})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        stats.requests += 1
        stats.first_arrival = stats.first_arrival or time.monotonic()
        stats.in_flight += 1
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        try:
            response = await self._answer(request)
            stats.statuses[response.status] += 1
            stats.ok += response.status == 200
            return response
        finally:
            stats.in_flight -= 1
            stats.last_answer = time.monotonic()

    async def _answer(self, request: web.Request) -> web.Response:
        denied = self._check_headers(request)
        if denied is not None:
            return denied
        try:
            body = json.loads(await request.read())
        except ValueError as exc:
            return self.error(400, f"invalid JSON body: {exc}")
        if not isinstance(body, dict):
            return self.error(400, "the body must be a JSON object")
        self.bodies.append(body)
        if self.script:
            return self._scripted(self.script.popleft())
        problem = check_body(body)
        if problem is not None:
            return self.error(400, problem)
        if self.models is not None and body["model"] not in self.models:
            return self.error(404, f"model: {body['model']}")
        if self.latency:
            await asyncio.sleep(self.latency)
        try:
            req, forced = to_request(body)
            completion = (await self.model.generate(req))[0]
            answer = message_body(completion, body["model"], forced, f"msg_fake_{next(self._ids)}")
        except ModelError as exc:
            return self.error(500, str(exc))
        except ValueError as exc:  # the model's answer to a forced tool is not JSON
            return self.error(500, f"the model's tool input is not JSON: {exc}")
        return _json(answer)

    # -- pieces -----------------------------------------------------------------------------------
    def _check_headers(self, request: web.Request) -> web.Response | None:
        if self.api_key is not None and request.headers.get("x-api-key") != self.api_key:
            return self.error(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self.error(400, "anthropic-version: header is required")
        return None

    def _scripted(self, entry: int | dict[str, Any] | Scripted) -> web.Response:
        if isinstance(entry, dict):
            return _json(entry)
        scripted = entry if isinstance(entry, Scripted) else Scripted(status=entry)
        if scripted.body is not None:
            return _json(scripted.body, scripted.status, scripted.headers)
        return self.error(scripted.status, scripted.message, scripted.headers)

    def error(
        self, status: int, message: str | None = None, headers: dict[str, str] | None = None
    ) -> web.Response:
        """Anthropic's error body for ``status`` (``retry-after`` on 429/529 when set)."""
        kind = ERROR_TYPES.get(status, "api_error")
        headers = dict(headers or {})
        if status in (429, 529) and self.retry_after is not None:
            headers.setdefault("retry-after", f"{self.retry_after:g}")
        text = message or {429: "Rate limited", 529: "Overloaded"}.get(status, kind)
        return _json({"type": "error", "error": {"type": kind, "message": text}}, status, headers)


def check_body(body: dict[str, Any]) -> str | None:
    """What the real API would refuse in ``body`` (its 400 message), or None."""
    extra = sorted(set(body) - BODY_FIELDS)
    if extra:
        return f"{extra[0]}: Extra inputs are not permitted"
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        return "max_tokens: Field required (a whole number >= 1)"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            role = m.get("role") if isinstance(m, dict) else None
            return f'messages.{i}.role: Input should be "user" or "assistant", got {role!r}'
    if body.get("stream"):
        return "stream: this fake does not stream"
    temperature = body.get("temperature")
    if temperature is not None and not 0 <= temperature <= 1:
        return "temperature: Input should be less than or equal to 1"
    for tool in body.get("tools") or ():
        if "input_schema" in tool and (tool.get("input_schema") or {}).get("type") != "object":
            return "tools.input_schema.type: Input should be 'object'"
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        if budget >= max_tokens:
            return "`max_tokens` must be greater than `thinking.budget_tokens`"
        if temperature is not None and temperature != 1:
            return "`temperature` may only be set to 1 when thinking is enabled"
        if body.get("top_p") is not None and body["top_p"] < 0.95:
            return "`top_p` must be greater than or equal to 0.95 when thinking is enabled"
        if (body.get("tool_choice") or {}).get("type") in ("any", "tool"):
            return "Thinking may not be enabled when tool_choice forces tool use."
    return None


def to_request(body: dict[str, Any]) -> tuple[Request, dict[str, Any] | None]:
    """A checked Messages body → (a datamill :class:`Request`, the tool its answer must call:
    forced, or datamill's answer tool offered; None when it answers freely)."""
    messages: list[Message] = []
    system = body.get("system")
    if isinstance(system, list):
        system = "".join(b.get("text", "") for b in system if isinstance(b, dict))
    if system:
        messages.append({"role": "system", "content": str(system)})
    for m in body["messages"]:
        messages.append({"role": m["role"], "content": _text(m.get("content"))})
    tools = [t for t in body.get("tools") or () if isinstance(t, dict) and "name" in t]
    choice = body.get("tool_choice") or {}
    forced = next(
        (
            t
            for t in tools
            if (choice.get("type") == "tool" and t["name"] == choice.get("name"))
            or t["name"] in (SCHEMA_TOOL, SCHEMA_VALUE_TOOL)
        ),
        None,
    )
    options: dict[str, Any] = {
        "max_tokens": int(body["max_tokens"]),
        "temperature": float(body.get("temperature", 1.0)),
        "top_p": float(body.get("top_p", 1.0)),
        "stop": tuple(body.get("stop_sequences") or ()),
    }
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        options["enable_thinking"] = True
        options["max_tokens"] -= int(thinking["budget_tokens"])
    if forced is not None:
        options["json_schema"] = forced.get("input_schema") or {"type": "object"}
    elif tools:
        options["tools"] = tuple(
            {
                "type": "function",
                "function": {
                    "name": t["name"],
                    "description": t.get("description", ""),
                    "parameters": t.get("input_schema", {}),
                },
            }
            for t in tools
        )
        kinds = {"auto": "auto", "none": "none", "any": "required"}
        if choice.get("type") in kinds:
            options["tool_choice"] = kinds[choice["type"]]
    return Request(messages=tuple(messages), **options), forced


def message_body(
    completion: Completion, model: str, forced: dict[str, Any] | None, ident: str
) -> dict[str, Any]:
    """A :class:`Completion` as Anthropic's Message object."""
    content: list[dict[str, Any]] = []
    reasoning, text = completion.reasoning, completion.text
    if reasoning is None:
        reasoning, answer = split_reasoning(text)
        text = text if reasoning is None else answer or ""
    if reasoning is not None:
        content.append({"type": "thinking", "thinking": reasoning, "signature": "fake-signature"})
    stop_reason = STOP_REASON.get(completion.finish_reason, "end_turn")
    if forced is not None and completion.finish_reason != "length":
        value = json.loads(text)
        if forced["name"] == SCHEMA_VALUE_TOOL:
            value = {"value": value}
        content.append(_tool_use(f"{ident}_0", forced["name"], value))
        stop_reason = "tool_use"
    elif text or not completion.tool_calls:
        content.append({"type": "text", "text": text})
    for i, call in enumerate(completion.tool_calls):
        content.append(_tool_use(call.get("id") or f"{ident}_{i}", call["name"], call["arguments"]))
        stop_reason = "tool_use"
    return {
        "id": ident,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": completion.prompt_tokens,
            "output_tokens": completion.completion_tokens,
        },
    }


def _tool_use(ident: str, name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else {}
    return {"type": "tool_use", "id": ident, "name": name, "input": value}


def _text(content: Any) -> str:
    """A message's text: a string, or its text blocks and tool results' text joined."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_result":
            parts.append(_text(block.get("content", "")))
        elif block.get("type") == "tool_use":
            parts.append(json.dumps(block.get("input", {})))
    return "\n".join(parts)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json.dumps(body), status=status, content_type="application/json", headers=headers
    )


class AnthropicServerThread(ServerThread):
    """An :class:`AnthropicServer` on its own event loop in a daemon thread; ``fake`` is it."""

    def __init__(self, server: AnthropicServer) -> None:
        super().__init__(cast(Any, server))  # the thread needs only start/stop/url/stats
        self.fake = server


def serve_anthropic(model: Model | None = None, **options: Any) -> AnthropicServerThread:
    """Start a fake Anthropic API in a background thread (``FakeModel()`` by default); use it as
    a context manager."""
    if model is None:
        from ..models.fake import FakeModel

        model = FakeModel()
    thread = AnthropicServerThread(AnthropicServer(model, **options))
    thread.start()
    return thread

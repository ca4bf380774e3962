"""A scripted, deterministic model for tests and dry runs.

``FakeModel(handler)`` answers each request with ``handler(request, sample_index)``. Without a
handler it writes a few short pseudo-sentences derived from a hash of the request, so the same
request always gives the same text and different requests (or seeds) give different text. It
records every request it was sent (``calls``) so tests can count model calls exactly. A handler
may return a :class:`Completion` to script a finish reason (``"content_filter"``, or a backend's
own spelling such as ``"max_tokens"``, mapped as the real backends map it).
With a request's thinking switch on (``enable_thinking``) the default text opens with a
``<think>`` block, as a thinking model's does. ``call_log=PATH`` also appends one JSON line per call start and end to a file, so a test can count
the calls of a run in another process (a CLI run it kills, say).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from .base import (
    FINISH_REASONS,
    THINK_TAGS,
    BackendOptions,
    Capabilities,
    Completion,
    Model,
    ModelInfo,
    Request,
    finish_reason_of,
)

Handler = Callable[[Request, int], "str | Completion"]

_WORDS = (
    "explain describe compare list summarize outline design write suggest evaluate the a of "
    "data model garden river market planet recipe budget engine language school music history "
    "simple practical careful modern small local daily quick clear useful how why what which "
    "for with about between during each process method reason example step plan idea"
).split()


def _default_lines(request: Request, index: int) -> str:
    """Three deterministic lines of 8-12 words each, seeded by the request content."""
    digest = hashlib.sha256((request.cache_payload() + f"#{index}").encode()).digest()
    lines = []
    for line_no in range(3):
        count = 8 + digest[line_no] % 5
        words = [
            _WORDS[digest[(line_no * 11 + i) % len(digest)] * (i + 1) % len(_WORDS)]
            for i in range(count)
        ]
        lines.append(" ".join(words).capitalize() + "?")
    return "\n".join(lines)


def schema_instance(schema: dict[str, Any], digest: bytes, depth: int = 0) -> Any:
    """A deterministic value that satisfies the JSON schemas tasks send (objects, arrays with
    min/max items, enums, bounded numbers, strings), picked by the bytes of ``digest``."""
    pick = digest[depth % len(digest)]
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][pick % len(schema["enum"])]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return schema_instance(schema[key][0], digest, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        return {
            name: schema_instance(sub, digest, depth + 1 + i)
            for i, (name, sub) in enumerate(schema.get("properties", {}).items())
        }
    if kind == "array":
        low = schema.get("minItems", 1)
        high = schema.get("maxItems", max(low, 3))
        count = low + pick % (high - low + 1)
        return [
            schema_instance(schema.get("items", {}), digest, depth + 1 + i) for i in range(count)
        ]
    if kind in ("integer", "number"):
        low = schema.get("minimum", 1)
        high = schema.get("maximum", low + 4)
        return int(low + pick % (int(high - low) + 1))
    if kind == "boolean":
        return bool(pick % 2)
    if kind == "null":
        return None
    return " ".join(_WORDS[(pick + 7 * i) % len(_WORDS)] for i in range(3 + pick % 4)).capitalize()


def default_text(request: Request, index: int) -> str:
    """Deterministic text seeded by the request content: a JSON value that satisfies
    ``request.json_schema`` when one is given, else three lines of 8-12 words; with the thinking
    switch on (``enable_thinking``), those lines come after a ``<think>`` block of their own, as
    a thinking model writes."""
    if request.json_schema is not None:
        digest = hashlib.sha256((request.cache_payload() + f"#{index}").encode()).digest()
        return json.dumps(schema_instance(request.json_schema, digest))
    if request.enable_thinking:
        thinking = _default_lines(request, index + 1000).replace("?", ".")
        return f"{THINK_TAGS[0]}{thinking}{THINK_TAGS[1]}{_default_lines(request, index)}"
    return _default_lines(request, index)


class FakeModel(Model):
    """Deterministic scripted model. ``latency`` (seconds) may be a number or ``f(request)``."""

    backend = "fake"
    CAPABILITIES = Capabilities(
        local=True,
        gpu=False,
        renders_chat=False,
        raw_prompt=True,
        structured=("json_schema",),
        n=False,  # each sample is scripted (and counted) on its own
        embeddings=False,
        tools=False,
        reasoning=False,
        threads_option=None,
        local_files=False,
    )

    class Options(BackendOptions):
        """``fake`` options."""

        name: str = "fake"
        """display name (``fake:NAME`` sets it)"""
        latency: Annotated[float, Field(ge=0)] | Callable[[Request], float] = 0.0
        """seconds each call waits, or ``f(request)`` giving them"""
        max_concurrency: Annotated[int, Field(ge=1)] = 64
        """requests the runner keeps in flight"""
        json_schema: bool = True
        """whether it says it honours ``Request.json_schema``"""
        call_log: str | Path | None = None
        """a file that gets one JSON line per call start and end (tests of crash safety)"""

    def __init__(self, handler: Handler | None = None, **options: Any) -> None:
        o: FakeModel.Options = self.parse_options(options)
        self.handler = handler
        self.call_log = o.call_log
        self.name = o.name
        self.latency = o.latency
        self.calls: list[Request] = []
        self._info = ModelInfo(
            name=o.name,
            identity=f"fake:{o.name}",
            max_concurrency=o.max_concurrency,
            raw_prompt=True,
            json_schema=o.json_schema,
            chat_template="{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}",
            capabilities=self.capabilities(),
        )

    @classmethod
    def from_spec(cls, arg: str | None, **options: Any) -> FakeModel:
        return cls(name=arg or "fake", **options)

    @property
    def info(self) -> ModelInfo:
        return self._info

    async def generate(self, request: Request) -> list[Completion]:
        self.calls.append(request)
        self._log("start", request)
        delay = self.latency(request) if callable(self.latency) else self.latency
        if delay:
            await asyncio.sleep(delay)
        out = []
        for i in range(request.n):
            result = self.handler(request, i) if self.handler else default_text(request, i)
            if isinstance(result, Completion):
                if result.finish_reason not in FINISH_REASONS:  # a backend's own spelling
                    result = replace(result, finish_reason=finish_reason_of(result.finish_reason))
                out.append(result)
                continue
            prompt_text = request.prompt or "".join(m["content"] for m in request.messages or ())
            words = result.split()
            finish = "stop"
            if len(words) > request.max_tokens and request.json_schema is None:
                result, finish = " ".join(words[: request.max_tokens]), "length"
            out.append(
                Completion(
                    text=result,
                    finish_reason=finish,  # type: ignore[arg-type]
                    prompt_tokens=len(prompt_text.split()),
                    completion_tokens=min(len(words), request.max_tokens),
                )
            )
        self._log("end", request)
        return out

    def _log(self, event: str, request: Request) -> None:
        """Append one line ``{"event", "pid", "n", "payload"}`` to ``call_log`` (one write)."""
        if self.call_log is None:
            return
        line = json.dumps(
            {
                "event": event,
                "pid": os.getpid(),
                "n": request.n,
                "payload": request.cache_payload(),
            },
            ensure_ascii=False,
        )
        fd = os.open(self.call_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

"""The seam between the batch machinery (``pipeline.batch``) and a provider's batch API.

A :class:`BatchAPI` turns a call into request lines, sends a batch of them, tells its status and
reads its results; it keeps no state of its own that a crash could lose (``pipeline.batches``
keeps that). One adapter per provider: ``models.batch_openai`` (OpenAI's ``/v1/files`` +
``/v1/batches``; also the JSONL vLLM's ``run_batch`` reads) and ``models.batch_anthropic``
(Anthropic's Message Batches). :func:`batch_api_for` picks the adapter of a model's backend.

Each result line becomes an :data:`Outcome`: ``("ok", completions)``, ``("retry", why)`` for a
request the provider did not run (expired, cancelled, a server error: sent again in a later
batch), or ``("fail", why)`` for one it refused (a bad request: recorded for its row).

Deliberately not here: queueing calls, chunking, the crash-safe records, the cache
(``pipeline.batch``).
"""

from __future__ import annotations

import asyncio
import json
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError, ModelError, ModelUnavailable
from .base import Completion, Model, Request

#: what one result line says: answers, a request to send again, or a refusal for the row
Outcome = tuple[Literal["ok", "retry", "fail"], "list[Completion] | str"]


@dataclass(frozen=True)
class Line:
    """One request line of a batch: ``samples`` samples of a call from index ``first``."""

    custom_id: str
    endpoint: str  #: the API path its body goes to (``/v1/chat/completions``, ``/v1/messages``)
    body: dict[str, Any]
    first: int = 0
    samples: int = 1


@dataclass
class Status:
    """A batch as its provider sees it: its own state word, whether it has ended (completed,
    expired, cancelled, failed: nothing more will run) and what :meth:`BatchAPI.results` needs."""

    state: str
    ended: bool
    refs: dict[str, Any] = field(default_factory=dict)
    failed: str | None = None  #: why the whole batch failed (validation), if it did


class BatchAPI(ABC):
    """A provider's batch endpoints for one model (``model``: the online model it wraps)."""

    provider: str = ""
    #: most requests and bytes of request lines in one batch (the provider's limits)
    max_requests: int = 50_000
    max_bytes: int = 200 * 1024 * 1024

    def __init__(self, model: Model) -> None:
        self.model = model
        self.sent_requests = 0  #: request lines this object handed to the provider
        self._session: Any = None  #: the aiohttp session, from :meth:`open` to :meth:`close`

    @abstractmethod
    def lines(self, key: str, request: Request) -> list[Line]:
        """The request lines of one call (``key``: its cache key, the custom ids' root)."""

    def encode(self, line: Line) -> bytes:
        """``line`` as the provider's JSONL line (with its newline)."""
        return (json.dumps(self.wire(line), ensure_ascii=False) + "\n").encode()

    @abstractmethod
    def wire(self, line: Line) -> dict[str, Any]:
        """``line`` in the provider's request-line shape."""

    def headers(self) -> dict[str, str]:
        """The HTTP headers of every call (the API key read from the model's ``api_key_env``)."""
        return {"Accept": "application/json"}

    async def open(self) -> None:
        """Open the HTTP session (once; reads the API key)."""
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self.headers(), timeout=aiohttp.ClientTimeout(total=600, sock_connect=30)
            )

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    @abstractmethod
    async def create(self, batch_id: str, endpoint: str, data: list[bytes], on_file: Any) -> str:
        """Send a batch of encoded lines; the provider's batch id. ``on_file(file_id)`` is
        called (to be recorded) once an input file is uploaded, before the batch is created."""

    @abstractmethod
    async def find(
        self, batch_id: str, file_id: str | None, requests: int, since: float, known: set[str]
    ) -> str | None:
        """The provider's id of the batch made for local ``batch_id`` before a crash that kept
        its id from being recorded (``None``: it was never created)."""

    @abstractmethod
    async def status(self, remote_id: str) -> Status:
        """Where batch ``remote_id`` stands."""

    @abstractmethod
    async def results(self, status: Status) -> list[tuple[str, Outcome]]:
        """(custom id, outcome) of every line the ended batch reports on."""

    @abstractmethod
    async def cancel(self, remote_id: str) -> None:
        """Ask the provider to stop batch ``remote_id``."""


#: backend name → (module, class) of its batch adapter
ADAPTERS: dict[str, tuple[str, str]] = {
    "openai": ("datamill.models.batch_openai", "OpenAIBatch"),
    "anthropic": ("datamill.models.batch_anthropic", "AnthropicBatch"),
}


def batch_api_for(model: Model, label: str = "") -> BatchAPI:
    """The batch adapter of ``model``'s backend; a :class:`ConfigError` line when it has none."""
    import importlib

    found = ADAPTERS.get(model.backend)
    if found is None:
        names = ", ".join(sorted(ADAPTERS))
        raise ConfigError(
            f"{label or model.info.name}: batch: true needs a backend with a batch API "
            f"({names}); the {model.backend or type(model).__name__} backend has none. "
            "Drop batch: true (or --batch) for this model"
        )
    module = importlib.import_module(found[0])
    adapter: BatchAPI = getattr(module, found[1])(model)
    return adapter


#: settings a model's ``batch`` option may give besides ``true`` (``pipeline.batch.BatchModel``)
BATCH_SETTINGS = (
    "poll_seconds",
    "flush_seconds",
    "max_requests",
    "max_bytes",
    "resubmits",
    "max_poll_failures",
)


def batch_settings(value: Any, label: str = "model") -> dict[str, Any] | None:
    """The ``batch`` model option: ``None``/``false`` → ``None`` (online), ``true`` → ``{}``, or a
    mapping of :data:`BATCH_SETTINGS` (positive numbers); anything else one ConfigError line."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in BATCH_SETTINGS:
                raise ConfigError(
                    f"{label}: unknown batch setting {k!r}; allowed: {', '.join(BATCH_SETTINGS)}"
                )
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ConfigError(f"{label}: batch setting {k!r} must be a number >= 0, got {v!r}")
        return dict(value)
    raise ConfigError(
        f"{label}: option batch must be true, false or a mapping of {', '.join(BATCH_SETTINGS)}; "
        f"got {value!r}"
    )


def batch_card_lines(summary: dict[str, Any]) -> list[str]:
    """The dataset card's lines about calls made through a batch API (``run.json``'s
    ``batch`` key, ``pipeline.batch.batch_summary``); none when no call was."""
    batched = {n: b for n, b in (summary.get("batch") or {}).items() if "calls" in b}
    if not batched:
        return []
    lines = ["## Batch API\n"]
    for name, b in batched.items():
        cost = "unknown" if b.get("cost_usd") is None else f"${b['cost_usd']:,.4f}"
        online = (
            "" if b.get("online_cost_usd") is None else f" (online: ${b['online_cost_usd']:,.4f})"
        )
        steps = ", ".join(f"{step} ({n})" for step, n in (b.get("steps") or {}).items())
        lines.append(
            f"- `{name}`: {b['calls']} calls"
            + (f" of {steps}" if steps else "")
            + f" through the {b['provider']} batch API in "
            f"{b['batches']} batches ({b['resubmitted']} requests sent again, {b['failed']} "
            f"failed), {b['prompt_tokens']} prompt + {b['completion_tokens']} completion tokens, "
            f"cost {cost}{online}"
        )
    return [*lines, ""]


# -- HTTP for the control calls (few: upload, create, poll, download) ---------------------------
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529}


async def http(
    session: Any,
    method: str,
    url: str,
    *,
    retries: int = 6,
    backoff: float = 0.5,
    what: str = "",
    raw: bool = False,
    gate: bool = False,
    **kwargs: Any,
) -> Any:
    """One control request with bounded retries on transport failures and busy answers; the
    decoded JSON body (or the bytes, ``raw``). A refusal (other 4xx) raises :class:`ModelError`
    at once with the provider's message; so do the retries running out.

    ``gate``: the request is to a batch endpoint itself (upload, create, list), so its refusal
    as missing or forbidden (:data:`GATE_STATUS`) means the server has no batch API for this
    key: :class:`ModelUnavailable` (one line; stops the run), not a loss for each row."""
    import aiohttp

    last = ""
    for attempt in range(retries + 1):
        if attempt:
            await asyncio.sleep(min(30.0, backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0))
        try:
            async with session.request(method, url, **kwargs) as resp:
                status, body = resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            last = f"{type(exc).__name__}: {exc}"
            continue
        if status == 200:
            return body if raw else json.loads(body)
        message = _message(body)
        if status in _RETRY_STATUS:
            last = f"HTTP {status}: {message}"
            continue
        if gate and status in GATE_STATUS:
            raise ModelUnavailable(no_batch_api(method, url, status, message))
        raise ModelError(
            f"{what or method + ' ' + url} refused: HTTP {status}: {message}",
            reason=f"{what or 'batch request'} refused",
        )
    raise ModelError(
        f"{what or method + ' ' + url} failed after {retries + 1} tries ({last})",
        retryable=True,
        reason=f"{what or 'batch request'} failed",
    )


#: answers of a batch endpoint that mean the server offers no batch API (to this key)
GATE_STATUS = (401, 403, 404, 405)


def no_batch_api(method: str, url: str, status: int, message: str = "") -> str:
    """The one line for a batch endpoint refused with ``status`` (:data:`GATE_STATUS`)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    where = f"{parts.scheme}://{parts.netloc}"
    if status in (404, 405):
        return (
            f"the endpoint at {where} has no batch API ({method} {parts.path}: HTTP {status}); "
            "run without --batch (or drop batch: from the model)"
        )
    said = f": {message}" if message and message != "(empty body)" else ""
    return (
        f"the endpoint at {where} refused its batch API ({method} {parts.path}: HTTP {status}"
        f"{said}); check the API key may use batches, or run without --batch"
    )


def _message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace") or "(empty body)"
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)[:300]
    return str(data)[:300]


__all__ = [
    "ADAPTERS",
    "BATCH_SETTINGS",
    "BatchAPI",
    "GATE_STATUS",
    "batch_card_lines",
    "Line",
    "Outcome",
    "Status",
    "batch_api_for",
    "batch_settings",
    "http",
    "no_batch_api",
]

"""Anthropic's Message Batches API for an ``anthropic`` model: ``POST /v1/messages/batches``,
``GET /v1/messages/batches/{id}``, its ``results_url``, ``POST …/{id}/cancel``.

A request is ``{"custom_id", "params"}`` with ``params`` the body the model sends online
(``models.anthropic.messages_body``); Anthropic has no ``n``, so a call of ``n`` samples is ``n``
requests, custom ids ``KEY48-nN-sI`` (the first 48 hex digits of the call's cache key, ``n`` and
the sample: at most 64 characters of ``[A-Za-z0-9_-]``, as Anthropic requires). Results are
read with ``models.anthropic.parse_message``. Limits: 100,000 requests or 256 MB per batch.

Anthropic's batches carry no metadata: a batch created just before a crash that kept its id
from being recorded is found again among the listed batches by its request count and creation
time (the newest unrecorded batch made after the local record with that many requests).

Deliberately not here: what is batched when, records, the cache (``pipeline.batch``).
"""

from __future__ import annotations

import calendar
import json
import os
import time
from typing import Any

from ..errors import ModelError
from .base import Request
from .batch_api import BatchAPI, Line, Outcome, Status, http
from .keys import require_key

#: error types of a request worth sending again (the provider's trouble, not the request's)
RETRY_ERRORS = ("api_error", "overloaded_error", "rate_limit_error", "timeout_error")


def custom_ids(key: str, n: int) -> list[str]:
    """The custom ids of the ``n`` sample requests of call ``key``."""
    return [f"{key[:48]}-n{n}-s{i}" for i in range(n)]


def outcome_of(result: Any, parse: Any) -> Outcome:
    """The outcome of one results line's ``result`` (``parse``: a Message → Completion)."""
    kind = result.get("type") if isinstance(result, dict) else None
    if kind == "succeeded":
        try:
            return ("ok", [parse(result.get("message"))])
        except ModelError as exc:
            return ("fail", str(exc))
    if kind in ("expired", "canceled"):
        return ("retry", kind)
    if kind == "errored":
        error = result.get("error") or {}
        error = error.get("error", error) if isinstance(error, dict) else {}
        what = str(error.get("type") or "error")
        if what in RETRY_ERRORS:
            return ("retry", what)
        return ("fail", f"batch request refused: {what}: {error.get('message', '')}"[:300])
    return ("fail", f"batch result of unknown type {kind!r}")


class AnthropicBatch(BatchAPI):
    """The Message Batches API of the endpoint an ``anthropic`` model talks to."""

    provider = "anthropic"
    max_requests = 100_000
    max_bytes = 256 * 1024 * 1024

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        self.online: Any = model  #: the online model, with its backend's own helpers
        base = str(model.base_url).rstrip("/")
        self.root = base[: -len("/v1")] if base.endswith("/v1") else base

    def lines(self, key: str, request: Request) -> list[Line]:
        from .anthropic import messages_body

        body = messages_body(request.with_options(n=1), self.online.body_options)
        ids = custom_ids(key, request.n)
        return [Line(cid, "/v1/messages", body, i, 1) for i, cid in enumerate(ids)]

    def wire(self, line: Line) -> dict[str, Any]:
        return {"custom_id": line.custom_id, "params": line.body}

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        headers["anthropic-version"] = str(getattr(self.model, "anthropic_version", "2023-06-01"))
        env = getattr(self.model, "api_key_env", "ANTHROPIC_API_KEY")
        require_key(str(getattr(self.model, "base_url", "")), env)
        secret = os.environ.get(env)
        if secret:
            headers["x-api-key"] = secret
        return headers

    async def create(self, batch_id: str, endpoint: str, data: list[bytes], on_file: Any) -> str:
        await self.open()
        body = b'{"requests":[' + b",".join(d.rstrip(b"\n") for d in data) + b"]}"
        self.sent_requests += len(data)
        created = await http(
            self._session,
            "POST",
            f"{self.root}/v1/messages/batches",
            data=body,
            headers={"Content-Type": "application/json"},
            what="batch creation",
            gate=True,
        )
        return str(created["id"])

    async def find(
        self, batch_id: str, file_id: str | None, requests: int, since: float, known: set[str]
    ) -> str | None:
        await self.open()
        found: list[tuple[float, str]] = []
        after: str | None = None
        for _ in range(50):
            params = {"limit": "100", **({"after_id": after} if after else {})}
            page = await http(
                self._session,
                "GET",
                f"{self.root}/v1/messages/batches",
                params=params,
                what="batch listing",
                gate=True,
            )
            data = page.get("data") or []
            for batch in data:
                created = _epoch(batch.get("created_at"))
                total = sum(int(v or 0) for v in (batch.get("request_counts") or {}).values())
                if batch.get("id") not in known and total == requests and created >= since - 5:
                    found.append((created, str(batch["id"])))
            if not page.get("has_more") or not data:
                break
            after = str(page.get("last_id") or data[-1]["id"])
        return min(found)[1] if found else None

    async def status(self, remote_id: str) -> Status:
        await self.open()
        data = await http(
            self._session,
            "GET",
            f"{self.root}/v1/messages/batches/{remote_id}",
            what="batch status",
        )
        state = str(data.get("processing_status"))
        return Status(state, state == "ended", {"results_url": data.get("results_url")})

    async def results(self, status: Status) -> list[tuple[str, Outcome]]:
        from .anthropic import parse_message

        url = status.refs.get("results_url")
        if not url:
            return []
        raw = await http(self._session, "GET", url, raw=True, what="batch results download")
        out: list[tuple[str, Outcome]] = []
        for text in raw.decode("utf-8").splitlines():
            if text.strip():
                record = json.loads(text)
                out.append(
                    (str(record.get("custom_id")), outcome_of(record.get("result"), parse_message))
                )
        return out

    async def cancel(self, remote_id: str) -> None:
        await self.open()
        await http(
            self._session,
            "POST",
            f"{self.root}/v1/messages/batches/{remote_id}/cancel",
            what="batch cancel",
        )


def _epoch(value: Any) -> float:
    """Seconds since the epoch of an RFC 3339 time (``2025-01-01T00:00:00Z``); 0 if unreadable."""
    if not isinstance(value, str):
        return 0.0
    try:
        return float(calendar.timegm(time.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return 0.0


__all__ = ["AnthropicBatch", "custom_ids", "outcome_of"]

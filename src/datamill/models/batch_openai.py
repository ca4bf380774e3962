"""OpenAI's Batch API for an ``openai`` model: ``POST /files`` (purpose ``batch``), ``POST
/batches``, ``GET /batches/{id}``, ``GET /files/{id}/content``, ``POST /batches/{id}/cancel``.

A line is ``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}`` with the body
the model sends online (:meth:`OpenAIModel.request_body`; all ``n`` samples in one line); the
custom id is ``KEY-nN`` (the call's cache key and ``n``), so a results file can be read back
without any map (vLLM's ``run_batch`` writes the same shape: ``datamill batch import``). Limits:
50,000 requests and 200 MB per input file. A batch carries ``metadata.datamill_batch`` (the local
id), by which a batch created just before a crash is found again (:meth:`OpenAIBatch.find`).

Deliberately not here: what is batched when, records, the cache (``pipeline.batch``).
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import ModelError
from .base import Completion, Request
from .batch_api import BatchAPI, Line, Outcome, Status, http
from .keys import require_key

#: statuses after which nothing more runs
ENDED = ("completed", "failed", "expired", "cancelled")
#: per-request error codes of requests the batch never ran (sent again)
NOT_RUN = ("batch_expired", "batch_cancelled", "batch_failed")


def custom_id(key: str, n: int) -> str:
    """The custom id of a call: its cache key and ``n`` (``KEY-nN``)."""
    return f"{key}-n{n}"


def parse_custom_id(value: str) -> tuple[str, int] | None:
    """(cache key, n) of a custom id made by :func:`custom_id`; ``None`` for any other."""
    key, sep, n = value.rpartition("-n")
    if not sep or len(key) != 64 or not n.isdigit():
        return None
    return key, int(n)


def outcome_of(record: dict[str, Any], parse: Any) -> Outcome:
    """The outcome of one line of an output or error file (OpenAI's and vLLM's shape);
    ``parse(body, chat, want)`` reads an answer body."""
    error = record.get("error")
    response = record.get("response") if isinstance(record.get("response"), dict) else {}
    status = response.get("status_code") if isinstance(response, dict) else None
    body = response.get("body") if isinstance(response, dict) else None
    if isinstance(error, str) and error:  # vLLM's run_batch writes the message alone
        return ("fail", f"batch request failed: {error}"[:300])
    if isinstance(error, dict) and error:
        code = str(error.get("code") or "")
        message = str(error.get("message") or code or error)
        if code in NOT_RUN:
            return ("retry", code)
        return ("fail", f"batch request failed: {message}"[:300])
    if status == 200 and isinstance(body, dict):
        choices = body.get("choices") or []
        chat = bool(choices) and isinstance(choices[0], dict) and "message" in choices[0]
        try:
            completions: list[Completion] = parse(body, chat, max(1, len(choices)))
        except ModelError as exc:
            return ("fail", str(exc))
        return ("ok", completions)
    message = ""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = str(body["error"].get("message") or "")
    if not isinstance(status, int):  # no status to quote: say what the line lacks
        return (
            "fail",
            "the line has no response.status_code and no error: not a batch output line",
        )
    if status in (408, 429) or status >= 500:
        return ("retry", f"HTTP {status}")
    said = f": {message}" if message else ""
    return ("fail", f"batch request refused: HTTP {status}{said}"[:300])


class OpenAIBatch(BatchAPI):
    """The Batch API of the server an ``openai`` model talks to (see the module docstring)."""

    provider = "openai"
    max_requests = 50_000
    max_bytes = 200 * 1024 * 1024

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        self.online: Any = model  #: the online model, with its backend's own helpers
        self.base = str(model.base_url)

    def lines(self, key: str, request: Request) -> list[Line]:
        path, body = self.online.request_body(request)
        return [Line(custom_id(key, request.n), "/v1" + path, body, 0, request.n)]

    def wire(self, line: Line) -> dict[str, Any]:
        return {
            "custom_id": line.custom_id,
            "method": "POST",
            "url": line.endpoint,
            "body": line.body,
        }

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        env = getattr(self.model, "api_key_env", "OPENAI_API_KEY")
        require_key(str(getattr(self.model, "base_url", "")), env)
        secret = os.environ.get(env)
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        return headers

    async def create(self, batch_id: str, endpoint: str, data: list[bytes], on_file: Any) -> str:
        import aiohttp

        await self.open()
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field(
            "file",
            b"".join(data),
            filename=f"datamill-{batch_id}.jsonl",
            content_type="application/jsonl",
        )
        uploaded = await http(
            self._session,
            "POST",
            f"{self.base}/files",
            data=form,
            what="batch file upload",
            gate=True,
        )
        file_id = str(uploaded["id"])
        on_file(file_id)
        self.sent_requests += len(data)
        created = await http(
            self._session,
            "POST",
            f"{self.base}/batches",
            json={
                "input_file_id": file_id,
                "endpoint": endpoint,
                "completion_window": "24h",
                "metadata": {"datamill_batch": batch_id},
            },
            what="batch creation",
            gate=True,
        )
        return str(created["id"])

    async def find(
        self, batch_id: str, file_id: str | None, requests: int, since: float, known: set[str]
    ) -> str | None:
        await self.open()
        after: str | None = None
        for _ in range(50):  # 5,000 most recent batches at most
            params = {"limit": "100", **({"after": after} if after else {})}
            page = await http(
                self._session,
                "GET",
                f"{self.base}/batches",
                params=params,
                what="batch listing",
                gate=True,
            )
            for batch in page.get("data") or []:
                meta = batch.get("metadata") or {}
                if meta.get("datamill_batch") == batch_id or (
                    file_id is not None and batch.get("input_file_id") == file_id
                ):
                    return str(batch["id"])
            if not page.get("has_more") or not page.get("data"):
                return None
            after = str(page["data"][-1]["id"])
        return None

    async def status(self, remote_id: str) -> Status:
        await self.open()
        data = await http(
            self._session, "GET", f"{self.base}/batches/{remote_id}", what="batch status"
        )
        state = str(data.get("status"))
        failed = None
        if state == "failed":
            errors = (data.get("errors") or {}).get("data") or []
            failed = "; ".join(str(e.get("message")) for e in errors[:3]) or "failed"
        refs = {k: data.get(k) for k in ("output_file_id", "error_file_id")}
        return Status(state, state in ENDED, refs, failed)

    async def results(self, status: Status) -> list[tuple[str, Outcome]]:
        import json

        out: list[tuple[str, Outcome]] = []
        for ref in ("output_file_id", "error_file_id"):
            file_id = status.refs.get(ref)
            if not file_id:
                continue
            raw = await http(
                self._session,
                "GET",
                f"{self.base}/files/{file_id}/content",
                raw=True,
                what="batch results download",
            )
            for text in raw.decode("utf-8").splitlines():
                if text.strip():
                    record = json.loads(text)
                    out.append((str(record.get("custom_id")), outcome_of(record, self._parse)))
        return out

    def _parse(self, body: Any, chat: bool, want: int) -> list[Completion]:
        parsed: list[Completion] = self.online.parse_answer(body, chat, want)
        return parsed

    async def cancel(self, remote_id: str) -> None:
        await self.open()
        await http(
            self._session, "POST", f"{self.base}/batches/{remote_id}/cancel", what="batch cancel"
        )


__all__ = ["OpenAIBatch", "custom_id", "outcome_of", "parse_custom_id"]

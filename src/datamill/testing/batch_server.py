"""Fake batch endpoints of OpenAI and Anthropic on the local test server (``testing.server``).

:func:`add_batch_routes` adds them to an :class:`OpenAIServer` before it starts; the answers come
from the server's model as its online routes' do, so a batch run and an online run on one server
give the same rows. Routes:

- OpenAI (on an :class:`OpenAIServer`): ``POST /v1/files`` (multipart, ``purpose=batch``), ``GET /v1/files/{id}/content``,
  ``POST /v1/batches``, ``GET /v1/batches`` (newest first, ``limit``/``after``),
  ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``;
- Anthropic (on a ``testing.anthropic.AnthropicServer``): ``POST /v1/messages/batches``, ``GET /v1/messages/batches`` (``limit``/
  ``after_id``), ``GET /v1/messages/batches/{id}``, ``POST …/{id}/cancel``, and the
  ``results_url`` ``GET /v1/messages/batches/{id}/results``.

Behaviour (:class:`BatchBehaviour`): a batch ends on its ``polls``-th status poll (never while
``hold`` is set: a test kills its client meanwhile); ``expire_after``: only that many lines run,
then the batch expires (the rest reported ``batch_expired`` / ``expired``); ``fail_rate``: the
chance a line fails with a server error the first time its custom id is sent (a resubmission
succeeds); ``refuse``: a predicate on a line's body that makes it a 400 refusal every time.

Counted at the fake (:class:`BatchStats`): request lines submitted, per custom id (``repeats``:
lines sent more than once), batches, files, polls. Deliberately not here: the 24 h window, rate
limits of the batch API, streaming.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..errors import ModelError
from .server import OpenAIServer, _to_request

if TYPE_CHECKING:
    from .anthropic import AnthropicServer


@dataclass
class BatchBehaviour:
    """How the fake batch endpoints behave (see the module docstring)."""

    polls: int = 2
    hold: bool = False
    expire_after: int | None = None
    fail_rate: float = 0.0
    refuse: Callable[[dict[str, Any]], bool] | None = None
    seed: int = 0


@dataclass
class BatchStats:
    """What the fake batch endpoints saw."""

    lines: int = 0  #: request lines submitted, over all batches
    batches: int = 0
    files: int = 0
    polls: int = 0
    answered: int = 0  #: lines the model answered
    per_id: Counter[str] = field(default_factory=Counter, repr=False)

    @property
    def repeats(self) -> int:
        """Lines whose custom id had been submitted before."""
        return sum(c - 1 for c in self.per_id.values() if c > 1)

    @property
    def unique(self) -> int:
        return len(self.per_id)


@dataclass
class _Batch:
    id: str
    openai: bool  #: OpenAI's shapes (else Anthropic's)
    lines: list[dict[str, Any]]
    endpoint: str
    created: float
    meta: dict[str, Any]
    input_file_id: str | None = None
    polls: int = 0
    state: str = "in_progress"
    results: list[dict[str, Any]] = field(default_factory=list)


class BatchEndpoints:
    """The batch routes of one :class:`OpenAIServer` and their state."""

    def __init__(
        self, server: OpenAIServer | AnthropicServer, behaviour: BatchBehaviour | None = None
    ) -> None:
        self.server = server
        self.openai = isinstance(server, OpenAIServer)  #: OpenAI's routes, else Anthropic's
        self.behaviour = behaviour or BatchBehaviour()
        self.stats = BatchStats()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, _Batch] = {}
        self._rng = random.Random(self.behaviour.seed)
        self._ids = 0
        if self.openai:
            routes = [
                web.post("/v1/files", self._upload),
                web.get("/v1/files/{id}/content", self._file),
                web.post("/v1/batches", self._create_openai),
                web.get("/v1/batches", self._list_openai),
                web.get("/v1/batches/{id}", self._get_openai),
                web.post("/v1/batches/{id}/cancel", self._cancel),
            ]
        else:
            routes = [
                web.post("/v1/messages/batches", self._create_anthropic),
                web.get("/v1/messages/batches", self._list_anthropic),
                web.get("/v1/messages/batches/{id}", self._get_anthropic),
                web.post("/v1/messages/batches/{id}/cancel", self._cancel),
                web.get("/v1/messages/batches/{id}/results", self._anthropic_results),
            ]
        server.app.add_routes(routes)

    def _next(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}{self._ids:06d}"

    # -- OpenAI ---------------------------------------------------------------------------
    async def _upload(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        upload = form.get("file")
        if form.get("purpose") != "batch" or upload is None or not hasattr(upload, "file"):
            return _error(400, "send purpose=batch and a file")
        data = upload.file.read()
        file_id = self._next("file-")
        self.files[file_id] = data
        self.stats.files += 1
        return _json({"id": file_id, "object": "file", "bytes": len(data), "purpose": "batch"})

    async def _file(self, request: web.Request) -> web.StreamResponse:
        data = self.files.get(request.match_info["id"])
        if data is None:
            return _error(404, "no such file")
        return web.Response(body=data, content_type="application/octet-stream")

    async def _create_openai(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        data = self.files.get(str(body.get("input_file_id")))
        if data is None:
            return _error(400, "input_file_id names no uploaded file")
        lines = [json.loads(t) for t in data.decode().splitlines() if t.strip()]
        if any(line.get("url") != body.get("endpoint") for line in lines):
            return _error(400, "every line's url must be the batch's endpoint")
        batch = self._add(True, lines, str(body.get("endpoint")), body.get("metadata") or {})
        batch.input_file_id = str(body["input_file_id"])
        return _json(self._openai_view(batch))

    async def _list_openai(self, request: web.Request) -> web.StreamResponse:
        return _json(self._page(True, request, "after"))

    async def _get_openai(self, request: web.Request) -> web.StreamResponse:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "no such batch")
        await self._poll(batch)
        return _json(self._openai_view(batch))

    def _openai_view(self, batch: _Batch) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "input_file_id": batch.input_file_id,
            "completion_window": "24h",
            "status": batch.state,
            "created_at": int(batch.created),
            "metadata": batch.meta,
            "output_file_id": None,
            "error_file_id": None,
            "request_counts": {"total": len(batch.lines), "completed": 0, "failed": 0},
        }
        if batch.state in ("completed", "expired", "cancelled"):
            ok = [r for r in batch.results if (r.get("response") or {}).get("status_code") == 200]
            bad = [r for r in batch.results if r not in ok]
            if ok:
                view["output_file_id"] = self._store_file(batch.id + "-out", ok)
            if bad:
                view["error_file_id"] = self._store_file(batch.id + "-err", bad)
            view["request_counts"] = {
                "total": len(batch.lines),
                "completed": len(ok),
                "failed": len(bad),
            }
        return view

    def _store_file(self, file_id: str, records: list[dict[str, Any]]) -> str:
        self.files[file_id] = "".join(json.dumps(r) + "\n" for r in records).encode()
        return file_id

    # -- Anthropic ------------------------------------------------------------------------
    async def _create_anthropic(self, request: web.Request) -> web.StreamResponse:
        if not request.headers.get("anthropic-version"):
            return _error(400, "anthropic-version: header is required")
        body = await request.json()
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return _error(400, "requests must be a non-empty list")
        ids = [r.get("custom_id") for r in requests]
        if len(set(ids)) != len(ids):
            return _error(400, "custom_id values must be unique within a batch")
        batch = self._add(False, requests, "/v1/messages", {})
        return _json(self._anthropic_view(batch, request))

    async def _list_anthropic(self, request: web.Request) -> web.StreamResponse:
        page = self._page(False, request, "after_id")
        page["data"] = [self._anthropic_view(self.batches[b["id"]], request) for b in page["data"]]
        return _json(page)

    async def _get_anthropic(self, request: web.Request) -> web.StreamResponse:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "no such batch")
        await self._poll(batch)
        return _json(self._anthropic_view(batch, request))

    def _anthropic_view(self, batch: _Batch, request: web.Request) -> dict[str, Any]:
        ended = batch.state in ("completed", "expired", "cancelled")
        counts = Counter(r["result"]["type"] for r in batch.results) if ended else Counter()
        root = f"{request.scheme}://{request.host}"
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": {
                "processing": 0 if ended else len(batch.lines),
                "succeeded": counts["succeeded"],
                "errored": counts["errored"],
                "canceled": counts["canceled"],
                "expired": counts["expired"],
            },
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(batch.created)),
            "results_url": f"{root}/v1/messages/batches/{batch.id}/results" if ended else None,
        }

    async def _anthropic_results(self, request: web.Request) -> web.StreamResponse:
        batch = self.batches.get(request.match_info["id"])
        if batch is None or batch.state == "in_progress":
            return _error(404, "no results for this batch (yet)")
        text = "".join(json.dumps(r) + "\n" for r in batch.results)
        return web.Response(body=text.encode(), content_type="application/binary")

    # -- shared ---------------------------------------------------------------------------
    def _add(
        self, openai: bool, lines: list[dict[str, Any]], endpoint: str, meta: dict[str, Any]
    ) -> _Batch:
        batch = _Batch(
            self._next("batch_" if openai else "msgbatch_"),
            openai,
            lines,
            endpoint,
            time.time(),
            dict(meta),
        )
        self.batches[batch.id] = batch
        self.stats.batches += 1
        self.stats.lines += len(lines)
        for line in lines:
            self.stats.per_id[str(line.get("custom_id"))] += 1
        return batch

    def _page(self, openai: bool, request: web.Request, after_key: str) -> dict[str, Any]:
        mine = [b for b in reversed(list(self.batches.values())) if b.openai == openai]
        after = request.query.get(after_key)
        if after:
            ids = [b.id for b in mine]
            mine = mine[ids.index(after) + 1 :] if after in ids else []
        limit = int(request.query.get("limit", "20"))
        page = mine[:limit]
        data = [self._openai_view(b) if openai else {"id": b.id} for b in page]
        return {
            "object": "list",
            "data": data,
            "has_more": len(mine) > limit,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
        }

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "no such batch")
        if batch.state == "in_progress":
            batch.state = "cancelled"
            batch.results = [self._not_run(batch, line, "cancelled") for line in batch.lines]
        view = self._openai_view(batch) if batch.openai else self._anthropic_view(batch, request)
        return _json(view)

    async def _poll(self, batch: _Batch) -> None:
        self.stats.polls += 1
        if batch.state != "in_progress" or self.behaviour.hold:
            return
        batch.polls += 1
        if batch.polls < self.behaviour.polls:
            return
        limit = self.behaviour.expire_after
        run = batch.lines if limit is None else batch.lines[:limit]
        answered = await asyncio.gather(*(self._answer(batch, line) for line in run))
        batch.results = list(answered) + [
            self._not_run(batch, line, "expired") for line in batch.lines[len(run) :]
        ]
        batch.state = "completed" if limit is None or limit >= len(batch.lines) else "expired"

    async def _answer(self, batch: _Batch, line: dict[str, Any]) -> dict[str, Any]:
        cid = str(line.get("custom_id"))
        body = line.get("body") if batch.openai else line.get("params")
        body = body if isinstance(body, dict) else {}
        if self.behaviour.refuse is not None and self.behaviour.refuse(body):
            return self._error_line(batch, cid, 400, "invalid_request_error", "refused by the fake")
        if self.stats.per_id[cid] == 1 and self._rng.random() < self.behaviour.fail_rate:
            return self._error_line(batch, cid, 500, "api_error", "Internal server error.")
        try:
            if batch.openai:
                return await self._answer_openai(batch, cid, body)
            return await self._answer_anthropic(cid, body)
        except (ValueError, TypeError, KeyError, ModelError) as exc:
            return self._error_line(batch, cid, 400, "invalid_request_error", str(exc))

    async def _answer_openai(self, batch: _Batch, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        assert isinstance(self.server, OpenAIServer)
        chat = batch.endpoint.endswith("/chat/completions")
        completions = await self.server.model.generate(_to_request(body, chat))
        self.stats.answered += 1
        answer = self.server._completion_body(completions, chat)
        return {
            "id": self._next("batch_req_"),
            "custom_id": cid,
            "response": {"status_code": 200, "request_id": self._next("req_"), "body": answer},
            "error": None,
        }

    async def _answer_anthropic(self, cid: str, params: dict[str, Any]) -> dict[str, Any]:
        from .anthropic import check_body, message_body, to_request

        problem = check_body(params)
        if problem is not None:
            raise ValueError(problem)
        req, forced = to_request(params)  # as the fake Messages API answers online
        completion = (await self.server.model.generate(req))[0]
        self.stats.answered += 1
        message = message_body(completion, str(params["model"]), forced, self._next("msg_"))
        return {"custom_id": cid, "result": {"type": "succeeded", "message": message}}

    def _error_line(
        self, batch: _Batch, cid: str, status: int, kind: str, message: str
    ) -> dict[str, Any]:
        if batch.openai:
            error = {"error": {"message": message, "type": kind, "code": None}}
            return {
                "id": self._next("batch_req_"),
                "custom_id": cid,
                "response": {
                    "status_code": status,
                    "request_id": self._next("req_"),
                    "body": error,
                },
                "error": None,
            }
        inner = {"type": "error", "error": {"type": kind, "message": message}}
        return {"custom_id": cid, "result": {"type": "errored", "error": inner}}

    def _not_run(self, batch: _Batch, line: dict[str, Any], why: str) -> dict[str, Any]:
        cid = str(line.get("custom_id"))
        if batch.openai:
            code = "batch_expired" if why == "expired" else "batch_cancelled"
            return {
                "id": self._next("batch_req_"),
                "custom_id": cid,
                "response": None,
                "error": {"code": code, "message": f"This request was {why} before it ran."},
            }
        return {"custom_id": cid, "result": {"type": "expired" if why == "expired" else "canceled"}}


def run_batch_file(
    model: Any, source: str | Path, target: str | Path, *, served: str | None = None
) -> int:
    """A stand-in for vLLM's ``run_batch`` (``-i source -o target``): answer each request line
    of ``source`` with ``model`` and write vLLM's output lines (``{"id", "custom_id",
    "response": {"status_code", "request_id", "body"}, "error"}``); the lines answered.
    ``served``: the one model name served (run_batch's ``--model``/``--served-model-name``); a
    line asking for another gets vLLM's 404 ``The model `X` does not exist.`` (not answered)."""
    server = OpenAIServer(model, any_model=True)

    async def answer_all() -> list[dict[str, Any]]:
        await model.start()
        try:
            out: list[dict[str, Any]] = []
            for text in Path(source).read_text(encoding="utf-8").splitlines():
                if not text.strip():
                    continue
                line = json.loads(text)
                chat = str(line["url"]).endswith("/chat/completions")
                asked = line["body"].get("model")
                if served is not None and asked != served:
                    message = f"The model `{asked}` does not exist."
                    error = {"message": message, "type": "NotFoundError", "code": 404}
                    response = {"status_code": 404, "request_id": f"vllm-{len(out)}", "body": None}
                    out.append(
                        {
                            "id": f"vllm-{len(out)}",
                            "custom_id": line["custom_id"],
                            "response": response,
                            "error": error,
                        }
                    )
                    continue
                completions = await model.generate(_to_request(line["body"], chat))
                body = server._completion_body(completions, chat)
                response = {"status_code": 200, "request_id": f"vllm-{len(out)}", "body": body}
                out.append(
                    {
                        "id": f"vllm-{len(out)}",
                        "custom_id": line["custom_id"],
                        "response": response,
                        "error": None,
                    }
                )
            return out
        finally:
            await model.close()

    records = asyncio.run(answer_all())
    Path(target).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return sum(1 for r in records if r["error"] is None)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "api_error"
    return _json({"error": {"message": message, "type": kind, "code": None}}, status)


def add_batch_routes(
    server: OpenAIServer | AnthropicServer, behaviour: BatchBehaviour | None = None
) -> BatchEndpoints:
    """Add the fake batch endpoints of ``server``'s provider to it (before it starts): OpenAI's
    to an :class:`OpenAIServer`, Anthropic's to a ``testing.anthropic.AnthropicServer`` (answered
    as its online ``/v1/messages`` answers). Returns their state and counters."""
    return BatchEndpoints(server, behaviour)


__all__ = [
    "BatchBehaviour",
    "BatchEndpoints",
    "BatchStats",
    "add_batch_routes",
    "run_batch_file",
]

"""The OpenAI-compatible HTTP backend: vLLM, TGI, llama.cpp server, Ollama, OpenAI, HF endpoints.

Spec ``openai:MODEL@URL`` (``openai:gpt-4o-mini@https://api.openai.com/v1``,
``openai:smollm@http://127.0.0.1:8000/v1``); without ``@URL`` the ``base_url`` option, then
``$OPENAI_BASE_URL``, then OpenAI itself. A URL with no path gets ``/v1``.

- Chat requests go to ``/chat/completions``, raw prompts (Magpie) to ``/completions``; ``n``
  samples are asked for in one call, and a server that ignores ``n`` is asked again for the rest.
- ``Request.json_schema`` becomes ``response_format``: the OpenAI/vLLM form
  (``json_schema``) or the llama.cpp server form (``json_object`` + ``schema``), chosen by
  ``schema_format`` (``auto`` looks at who owns the served model).
- :meth:`OpenAIModel.embed` calls ``/embeddings``.
- One pooled aiohttp session per model. Every attempt goes through an :class:`AdaptiveLimiter`
  that halves concurrency on 429/503/timeouts and probes back up; failed attempts are retried
  with exponential backoff and jitter (``Retry-After`` honoured), at most ``max_retries`` times,
  then the call fails with a short reason (``rate limited``, ``timeout``, ``server error 503``,
  ``connection reset``…) that the runner records for the row.
- :meth:`start` probes ``GET /models`` with a short timeout, so an unreachable server, a refused
  key or an unknown model stops the run with one line before any row is sent.

The API key is read from ``$OPENAI_API_KEY`` (or the variable ``api_key_env`` names) when the
model starts. It lives only in the session's request headers: never in the identity, the
``ModelInfo``, the repr, an error message or the cache.

Deliberately not here: streaming (datamill wants whole completions), tool calls, caching.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import os
import random
import re
import time
from typing import Any, Literal

from ..errors import ConfigError, MissingDependency, ModelError, ModelUnavailable
from .adaptive import AdaptiveLimiter
from .base import Completion, FinishReason, Model, ModelInfo, Request, finish_reason_of

try:
    import aiohttp
except ImportError as exc:  # pragma: no cover - the extra is part of dev installs
    raise MissingDependency("the openai backend (aiohttp missing)", "openai") from exc

try:
    import orjson

    def _dumps(value: Any) -> bytes:
        return orjson.dumps(value)

    def _loads(raw: bytes | str) -> Any:
        return orjson.loads(raw)
except ImportError:  # pragma: no cover - orjson comes with the openai extra

    def _dumps(value: Any) -> bytes:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()

    def _loads(raw: bytes | str) -> Any:
        return json.loads(raw)


DEFAULT_BASE_URL = "https://api.openai.com/v1"
SchemaFormat = Literal["auto", "openai", "llamacpp"]

#: statuses worth another try, and those among them that mean "slow down"
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529}
_OVERLOAD_STATUS = {429, 503, 529}
_SPEC = re.compile(r"^(?P<model>.+?)@(?P<url>[A-Za-z][A-Za-z0-9+.-]*://\S+)$")


class _Retry(Exception):
    """One failed attempt that may succeed when tried again."""

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        overload: bool = False,
        wait: float | None = None,
        refused: bool = False,
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.overload = overload
        self.wait = wait
        self.refused = refused


class OpenAIModel(Model):
    """A model behind an OpenAI-compatible HTTP API."""

    backend = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 300.0,
        connect_timeout: float = 10.0,
        probe_timeout: float = 10.0,
        max_retries: int = 6,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_retry_after: float = 120.0,
        max_concurrency: int = 64,
        min_concurrency: int = 1,
        initial_concurrency: int | None = None,
        schema_format: SchemaFormat = "auto",
        schema_strict: bool = True,
        raw_prompt: bool = True,
        chat_template: str | None = None,
        check_model: bool = True,
        empty_retries: int = 1,
        embed_batch_size: int = 128,
        extra_body: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        if not model or not isinstance(model, str):
            raise ConfigError(
                "the openai backend needs a model name: openai:MODEL@URL, e.g. openai:gpt-4o-mini@https://api.openai.com/v1"
            )
        self.model = model
        self.base_url = normalize_url(
            base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        )
        for label, value in (
            ("timeout", timeout),
            ("connect_timeout", connect_timeout),
            ("probe_timeout", probe_timeout),
        ):
            if not value or value <= 0:
                raise ConfigError(
                    f"openai option {label} must be a positive number of seconds, got {value!r}"
                )
        if max_retries < 0 or empty_retries < 0:
            raise ConfigError("openai options max_retries and empty_retries must be 0 or more")
        if backoff < 0 or max_backoff < 0 or max_retry_after < 0:
            raise ConfigError(
                "openai options backoff, max_backoff and max_retry_after must be 0 or more"
            )
        if not 1 <= min_concurrency <= max_concurrency:
            raise ConfigError(
                f"openai options need 1 <= min_concurrency <= max_concurrency, got {min_concurrency} and {max_concurrency}"
            )
        if schema_format not in ("auto", "openai", "llamacpp"):
            raise ConfigError(
                f"openai option schema_format must be auto, openai or llamacpp, got {schema_format!r}"
            )
        if embed_batch_size < 1:
            raise ConfigError("openai option embed_batch_size must be at least 1")
        if extra_body is not None and not isinstance(extra_body, dict):
            raise ConfigError("openai option extra_body must be a mapping of extra request fields")
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.probe_timeout = float(probe_timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_retry_after = float(max_retry_after)
        self.schema_format: SchemaFormat = schema_format
        self.schema_strict = schema_strict
        self.check_model = check_model
        self.empty_retries = int(empty_retries)
        self.embed_batch_size = int(embed_batch_size)
        self.extra_body = dict(extra_body or {})
        self.limiter = AdaptiveLimiter(
            max_concurrency, minimum=min_concurrency, initial=initial_concurrency
        )
        #: attempts, retries and failures by reason, for reports and tests
        self.counters: dict[str, int] = {"requests": 0, "attempts": 0, "retries": 0}
        self._session: aiohttp.ClientSession | None = None
        self._secret: str | None = None
        self._down: ModelUnavailable | None = None
        self._sleep = asyncio.sleep  # a seam for tests that check the waits
        self._starting: asyncio.Lock | None = None
        self._urls = {
            path: self.base_url + path
            for path in ("/chat/completions", "/completions", "/embeddings", "/models")
        }
        identity = f"openai:{model}@{self.base_url}"
        if self.extra_body:
            identity += (
                "#"
                + hashlib.sha256(
                    json.dumps(self.extra_body, sort_keys=True, default=str).encode()
                ).hexdigest()[:12]
            )
        self._info = ModelInfo(
            name=name or model,
            identity=identity,
            max_concurrency=max_concurrency,
            raw_prompt=raw_prompt,
            json_schema=True,
            chat_template=chat_template,
            extra={"base_url": self.base_url},
        )

    @classmethod
    def from_spec(cls, arg: str | None, **options: Any) -> OpenAIModel:
        """``MODEL@URL`` or ``MODEL`` (then ``base_url=`` or ``$OPENAI_BASE_URL``)."""
        known = _option_names()
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"unknown openai option {unknown[0]!r}; known options: {', '.join(sorted(known - {'model'}))}"
            )
        if arg:
            match = _SPEC.match(arg.strip())
            if match:
                if options.get("base_url"):
                    raise ConfigError(
                        f"openai:{arg} names a URL and the base_url option names another; keep one"
                    )
                options["base_url"] = match["url"]
                arg = match["model"]
            options["model"] = arg
        if not options.get("model"):
            raise ConfigError(
                "the openai backend needs a model name: openai:MODEL@URL, e.g. openai:smollm@http://127.0.0.1:8000/v1"
            )
        return cls(**options)

    @property
    def info(self) -> ModelInfo:
        return self._info

    def __repr__(self) -> str:
        return f"OpenAIModel(model={self.model!r}, base_url={self.base_url!r})"

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Open the connection pool and check that the server answers (one short probe)."""
        if self._session is not None:
            return
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:  # calls that arrive before start() share one session
            if self._session is None:
                await self._open()

    async def _open(self) -> None:
        self._secret = os.environ.get(self.api_key_env) or None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._secret:
            headers["Authorization"] = f"Bearer {self._secret}"
        connector = aiohttp.TCPConnector(
            limit=self.limiter.maximum + 4, ttl_dns_cache=300, keepalive_timeout=30
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=self.connect_timeout),
            json_serialize=lambda v: _dumps(v).decode(),
            skip_auto_headers=("User-Agent",),
        )
        try:
            await self._probe()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._starting = None  # a later start() may run on another event loop

    async def _probe(self) -> None:
        assert self._session is not None
        url = self._urls["/models"]
        timeout = aiohttp.ClientTimeout(total=self.probe_timeout)
        body: Any = None
        for attempt in range(self.max_retries + 1):
            try:
                async with self._session.get(url, timeout=timeout) as resp:
                    status, raw = resp.status, await resp.read()
            except TimeoutError:
                raise ModelUnavailable(
                    f"{self.base_url} did not answer within {self.probe_timeout:g}s (probe_timeout); is the server up?"
                ) from None
            except aiohttp.ClientConnectorError as exc:
                raise ModelUnavailable(
                    f"cannot reach {self.base_url}: {self._scrub(_why(exc))}; start the server or fix the URL"
                ) from None
            except aiohttp.ClientError as exc:
                raise ModelUnavailable(
                    f"cannot talk to {self.base_url}: {self._scrub(_why(exc))}"
                ) from None
            if status in (401, 403):
                raise ModelUnavailable(self._auth_message(status, raw))
            if (
                status in _RETRY_STATUS and attempt < self.max_retries
            ):  # e.g. 503 while loading weights
                await self._sleep(self._backoff(attempt))
                continue
            if status == 200:
                try:
                    body = _loads(raw)
                except ValueError:
                    body = None
            elif status != 404 and status < 500:  # 404: no model listing here; fine
                raise ModelUnavailable(
                    f"{self.base_url} answered {status} to GET /models: {self._message(raw)}"
                )
            break
        listed = body.get("data") if isinstance(body, dict) else None
        if not isinstance(listed, list):
            return
        served = [m for m in listed if isinstance(m, dict) and isinstance(m.get("id"), str)]
        llamacpp = any(m.get("owned_by") == "llamacpp" for m in served)
        if self.schema_format == "auto":
            self.schema_format = "llamacpp" if llamacpp else "openai"
        if llamacpp and self._info.chat_template is None:
            self._info.chat_template = await self._llamacpp_template()
        ids = [m["id"] for m in served]
        if (
            self.check_model
            and ids
            and not llamacpp
            and self.model not in ids
            and f"{self.model}:latest" not in ids
        ):
            shown = ", ".join(ids[:10]) + (", …" if len(ids) > 10 else "")
            raise ModelUnavailable(
                f"{self.base_url} does not serve model {self.model!r}; it serves: {shown} "
                "(use one of them, or set check_model: false)"
            )

    async def _llamacpp_template(self) -> str | None:
        """llama.cpp's server tells its chat template at ``/props`` (Magpie needs it)."""
        assert self._session is not None
        root = re.sub(r"/v1$", "", self.base_url)
        try:
            async with self._session.get(
                root + "/props", timeout=aiohttp.ClientTimeout(total=self.probe_timeout)
            ) as resp:
                if resp.status != 200:
                    return None
                props = _loads(await resp.read())
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        template = props.get("chat_template") if isinstance(props, dict) else None
        return template if isinstance(template, str) and template else None

    # -- generation -----------------------------------------------------------------------
    async def generate(self, request: Request) -> list[Completion]:
        if self._session is None:
            await self.start()
        self.counters["requests"] += 1
        chat = request.messages is not None
        path = "/chat/completions" if chat else "/completions"
        out: list[Completion] = []
        empty_rounds = 0
        rounds = 0
        while len(out) < request.n:
            rounds += 1
            if rounds > request.n + self.empty_retries + 1:
                raise ModelError(
                    f"{self.base_url} returned {len(out)} of {request.n} samples",
                    retryable=True,
                    reason="too few samples",
                )
            want = request.n - len(out)
            seed = request.seed
            if seed is not None and rounds > 1:  # new samples must not repeat the ones we have
                seed += 7919 * (rounds - 1)
            body = await self._post(path, self._payload(request, chat, want, seed))
            got = self._completions(body, chat, want)
            if not got:
                continue
            empty = [c for c in got if not c.text.strip() and c.finish_reason != "length"]
            if empty and empty_rounds < self.empty_retries:
                empty_rounds += 1
                self.counters["empty_retries"] = self.counters.get("empty_retries", 0) + len(empty)
                got = [c for c in got if c not in empty]
            out.extend(got[:want])
        return out

    def _payload(self, request: Request, chat: bool, n: int, seed: int | None) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model}
        if chat:
            payload["messages"] = request.messages
        else:
            payload["prompt"] = request.prompt
        payload["max_tokens"] = request.max_tokens
        payload["temperature"] = request.temperature
        payload["top_p"] = request.top_p
        if n > 1:
            payload["n"] = n
        if seed is not None:
            payload["seed"] = seed
        if request.stop:
            payload["stop"] = request.stop
        if request.json_schema is not None:
            payload.update(self._schema_fields(request.json_schema, chat))
        if self.extra_body:
            payload.update(self.extra_body)
        return payload

    def _schema_fields(self, schema: dict[str, Any], chat: bool) -> dict[str, Any]:
        if self.schema_format == "llamacpp":
            if chat:
                return {"response_format": {"type": "json_object", "schema": schema}}
            return {"json_schema": schema}
        name = re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title") or "output"))[:64]
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": schema, "strict": self.schema_strict},
            }
        }

    def _completions(self, body: Any, chat: bool, want: int) -> list[Completion]:
        try:
            choices = sorted(body["choices"], key=lambda c: c.get("index", 0))
            usage = body.get("usage") or {}
            texts: list[tuple[str, FinishReason]] = []
            for choice in choices[:want]:
                text = (choice.get("message") or {}).get("content") if chat else choice.get("text")
                # every reason mapped on purpose; an absent one is taken as a normal stop
                texts.append((text or "", finish_reason_of(choice.get("finish_reason"))))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ModelError(
                f"{self.base_url} sent a response without choices: {exc}",
                retryable=True,
                reason="bad response",
            ) from None
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        total = int(usage.get("completion_tokens") or 0)
        lengths = [len(t) for t, _ in texts]
        out = []
        for i, (text, finish) in enumerate(texts):
            share = total if len(texts) == 1 else round(total * lengths[i] / max(1, sum(lengths)))
            out.append(
                Completion(
                    text=text,
                    finish_reason=finish,
                    prompt_tokens=prompt_tokens if i == 0 else 0,
                    completion_tokens=share,
                )
            )
        return out

    # -- embeddings -----------------------------------------------------------------------
    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, from ``/embeddings``, in batches of ``embed_batch_size``."""
        if self._session is None:
            await self.start()
        texts = list(texts)
        batches = [
            texts[i : i + self.embed_batch_size]
            for i in range(0, len(texts), self.embed_batch_size)
        ]

        async def one(batch: list[str]) -> list[list[float]]:
            body = await self._post(
                "/embeddings", {"model": self.model, "input": batch, "encoding_format": "float"}
            )
            try:
                items = sorted(body["data"], key=lambda d: d.get("index", 0))
                vectors = [list(map(float, d["embedding"])) for d in items]
            except (KeyError, TypeError, ValueError) as exc:
                raise ModelError(
                    f"{self.base_url} sent an embeddings response without vectors: {exc}",
                    reason="bad response",
                ) from None
            if len(vectors) != len(batch):
                raise ModelError(
                    f"{self.base_url} returned {len(vectors)} embeddings for {len(batch)} texts",
                    reason="bad response",
                )
            return vectors

        results = await asyncio.gather(*(one(b) for b in batches))
        return [v for part in results for v in part]

    # -- HTTP with retries -------------------------------------------------------------------
    async def _post(self, path: str, payload: dict[str, Any]) -> Any:
        """POST with bounded retries; returns the decoded JSON body or raises ModelError."""
        if self._down is not None:
            raise self._down
        session = self._session
        assert session is not None
        url = self._urls[path]
        data = _dumps(payload)
        attempt = 0
        while True:
            try:
                return await self._attempt(session, url, path, data)
            except _Retry as retry:
                failure = retry
            attempt += 1
            self.counters[failure.reason] = self.counters.get(failure.reason, 0) + 1
            if attempt > self.max_retries:
                if (
                    failure.refused
                ):  # the server went away mid-run: stop instead of failing each row
                    self._down = ModelUnavailable(
                        f"lost {self.base_url}: {failure} after {attempt} tries; finished calls are cached, run again to resume"
                    )
                    raise self._down
                tries = f"{attempt} tr{'y' if attempt == 1 else 'ies'}"
                raise ModelError(
                    f"{self.model} at {self.base_url}: {failure} ({tries})",
                    retryable=True,
                    reason=failure.reason,
                )
            self.counters["retries"] += 1
            wait = self._backoff(attempt - 1)
            if failure.wait is not None:
                wait = min(self.max_retry_after, max(failure.wait, 0.0))
            await self._sleep(wait)

    async def _attempt(
        self, session: aiohttp.ClientSession, url: str, path: str, data: bytes
    ) -> Any:
        self.counters["attempts"] += 1
        wait: float | None = None
        async with self.limiter.slot() as slot:
            try:
                async with session.post(url, data=data) as resp:
                    status = resp.status
                    raw = await resp.read()
                    if status != 200:
                        wait = _retry_after(resp.headers)
            except TimeoutError:
                slot.overloaded()
                raise _Retry(
                    "timeout", f"no answer within {self.timeout:g}s (timeout option)", overload=True
                ) from None
            except aiohttp.ClientConnectorError as exc:
                slot.failed()
                raise _Retry("connection refused", self._scrub(_why(exc)), refused=True) from None
            except (
                aiohttp.ClientOSError,
                aiohttp.ServerDisconnectedError,
                aiohttp.ClientPayloadError,
            ) as exc:
                slot.failed()
                raise _Retry(
                    "connection reset", f"connection reset ({self._scrub(_why(exc))})"
                ) from None
            except aiohttp.ClientError as exc:
                slot.failed()
                raise _Retry("connection error", self._scrub(_why(exc))) from None
            if status == 200:
                try:
                    return _loads(raw)
                except ValueError:
                    slot.failed()
                    raise _Retry(
                        "bad response", f"invalid JSON from {path}: {raw[:120]!r}"
                    ) from None
            if status in _OVERLOAD_STATUS:
                slot.overloaded()
            else:
                slot.failed()
        message = self._message(raw)
        if status == 429 and "insufficient_quota" in message:
            self._down = ModelUnavailable(
                f"{self.base_url}: quota exhausted ({message}); add credit or use another key"
            )
            raise self._down
        if status in _RETRY_STATUS:
            reason = (
                "rate limited"
                if status == 429
                else ("timeout" if status == 408 else f"server error {status}")
            )
            raise _Retry(
                reason, f"HTTP {status}: {message}", overload=status in _OVERLOAD_STATUS, wait=wait
            )
        if status in (401, 403):
            self._down = ModelUnavailable(self._auth_message(status, raw))
            raise self._down
        if status == 404:
            self._down = ModelUnavailable(
                f"{self.base_url} answered 404 to {path} for model {self.model!r}: {message}"
            )
            raise self._down
        if status in (400, 413, 422):
            lowered = message.lower()
            too_long = status == 413 or any(
                w in lowered
                for w in (
                    "context length",
                    "maximum context",
                    "too long",
                    "too many tokens",
                    "exceeds",
                )
            )
            raise ModelError(
                f"{self.base_url} refused the request (HTTP {status}): {message}",
                reason="request too long" if too_long else "bad request",
            )
        raise ModelError(
            f"{self.base_url} answered HTTP {status}: {message}", reason=f"http {status}"
        )

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with equal jitter: half fixed, half random."""
        cap = min(self.max_backoff, self.backoff * (2**attempt))
        return cap / 2 + random.uniform(0, cap / 2)

    # -- messages ----------------------------------------------------------------------------
    def _message(self, raw: bytes) -> str:
        """The server's error message, short and without the API key."""
        text = raw.decode("utf-8", "replace")
        try:
            body = _loads(raw)
            error = body.get("error", body) if isinstance(body, dict) else body
            if isinstance(error, dict):
                text = str(error.get("message") or error.get("detail") or error)
                code = error.get("code") or error.get("type")
                if code and str(code) not in text:
                    text += f" [{code}]"
            elif isinstance(error, str):
                text = error
        except ValueError:
            pass
        return self._scrub(" ".join(text.split())[:300]) or "(empty body)"

    def _auth_message(self, status: int, raw: bytes) -> str:
        what = "unauthorized" if status == 401 else "forbidden"
        if self._secret:
            hint = f"the key in ${self.api_key_env} was refused; check it"
        else:
            hint = (
                f"set ${self.api_key_env} to an API key (or name another variable with api_key_env)"
            )
        return f"{self.base_url} answered {status} {what}: {self._message(raw)}; {hint}"

    def _scrub(self, text: str) -> str:
        if self._secret and self._secret in text:
            text = text.replace(self._secret, "***")
        return text


def normalize_url(url: str) -> str:
    """``http://host:8000`` → ``http://host:8000/v1``; trailing slashes dropped."""
    url = url.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", url):
        raise ConfigError(
            f"endpoint URL {url!r} must start with http:// or https://, e.g. http://127.0.0.1:8000/v1"
        )
    if re.fullmatch(r"https?://[^/]+", url):
        url += "/v1"
    return url


def _retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000.0
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _why(exc: BaseException) -> str:
    """A short description of a connection failure (``ConnectionRefusedError: ...`` → ``connection refused``)."""
    cause = getattr(exc, "os_error", None) or exc.__cause__ or exc
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve host ({cause})"
    return str(exc) or type(exc).__name__


def _option_names() -> set[str]:
    import inspect

    return {p for p in inspect.signature(OpenAIModel.__init__).parameters if p != "self"}

"""The OpenAI-compatible HTTP backend: vLLM, TGI, llama.cpp server, Ollama, OpenAI, HF endpoints.

Spec ``openai:MODEL@URL`` (``openai:gpt-4o-mini@https://api.openai.com/v1``,
``openai:smollm@http://127.0.0.1:8000/v1``); without ``@URL`` the ``base_url`` option, then
``$OPENAI_BASE_URL``, then OpenAI itself. A URL with no path gets ``/v1``. Whatever follows an
``@`` is a URL and must start with ``http://`` or ``https://`` and name a host: a spec such as
``openai:m@127.0.0.1:8000/v1`` is refused, never read as a model name sent to another host.

- Chat requests go to ``/chat/completions``, raw prompts (Magpie) to ``/completions``; ``n``
  samples are asked for in one call, and a server that ignores ``n`` is asked again for the rest.
- ``Request.json_schema`` travels in a structured-output form (``models.structured``). With
  ``schema_format: auto`` the best form is tried first and a refusal about the form (an error
  answer that names ``response_format``, ``json_schema``, ``grammar``…) falls back to the next,
  down to no constraint; the form that worked is remembered per endpoint path and reported in
  ``run.json`` (:meth:`OpenAIModel.run_facts`). An explicit form is used as given.
- :meth:`OpenAIModel.embed` calls ``/embeddings``.
- One pooled aiohttp session per model. Every attempt goes through an :class:`AdaptiveLimiter`
  that halves concurrency on 429/503/timeouts and probes back up; failed attempts are retried
  with exponential backoff and jitter (``Retry-After`` honoured), at most ``max_retries`` times,
  then the call fails with a short reason (``rate limited``, ``timeout``, ``server error 503``,
  ``connection reset``…) that the runner records for the row. The same error answer twice
  (status and message) is deterministic: it is not tried again. When the first
  ``fail_fast_after`` calls of one kind (path and form) all end with the same error answer and
  none succeeded, the model stops the run with that answer in one line.
- Until the endpoint has answered anything, an attempt waits at most ``first_byte_timeout``
  (doubling per retry, never above ``timeout``): non-streamed answers come whole, so the time to
  the first byte is the generation time and only the first answer tells that the server works.
  When nothing has answered ``3 x first_byte_timeout`` after the first request went out, the
  endpoint is taken as hung and the run stops with one line.
- :meth:`start` probes ``GET /models`` with a short timeout, so an unreachable server, a refused
  key or an unknown model stops the run with one line before any row is sent.

The API key is read from ``$OPENAI_API_KEY`` (or the variable ``api_key_env`` names) when the
model starts. It lives only in the session's request headers: never in the identity, the
``ModelInfo``, the repr, an error message or the cache.

Deliberately not here: streaming (datamill wants whole completions), running tools, caching.
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
import urllib.parse
from dataclasses import replace
from typing import Any, Literal, Self

from pydantic import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from ..errors import ConfigError, MissingDependency, ModelError, ModelUnavailable
from .adaptive import AdaptiveLimiter, _Slot
from .base import (
    BackendOptions,
    Capabilities,
    Completion,
    FinishReason,
    Model,
    ModelInfo,
    Request,
    ToolCall,
    finish_reason_of,
)
from .structured import (
    ALIASES,
    FORMS,
    is_format_refusal,
    is_n_refusal,
    next_form,
    schema_fields,
)

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
SchemaFormat = Literal[
    "auto",
    "openai",
    "llamacpp",
    "json_schema",
    "json_object+schema",
    "json_object+value",
    "schema_field",
    "none",
]
#: words of error messages that tell nothing about the request (a busy or broken server): such
#: an answer twice is not taken as a deterministic refusal
_GENERIC = ("internal server error", "server had an error", "(empty body)", "try again", "overload")
#: with nothing answered this many first-byte deadlines after the first request, stop
_HUNG_ROUNDS = 3

#: statuses worth another try, and those among them that mean "slow down"
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529}
_OVERLOAD_STATUS = {429, 503, 529}


class HTTPOptions(BackendOptions):
    """Options of every backend on :class:`OpenAIModel`'s HTTP layer (a backend's own class
    adds its fields and may change a default)."""

    api_key_env: str = "OPENAI_API_KEY"
    """the environment variable holding the API key (read at start, never stored)"""
    timeout: PositiveFloat = 300.0
    """seconds one attempt may take in all"""
    first_byte_timeout: PositiveFloat = 60.0
    """seconds an attempt waits for a first answer until the endpoint has answered anything"""
    connect_timeout: PositiveFloat = 10.0
    """seconds to open a connection"""
    probe_timeout: PositiveFloat = 10.0
    """seconds the start-up probe (``GET /models``) waits"""
    max_retries: NonNegativeInt = 6
    """retries of a failed attempt"""
    backoff: NonNegativeFloat = 0.5
    """seconds before the first retry (doubling, with jitter)"""
    max_backoff: NonNegativeFloat = 30.0
    """most seconds between retries"""
    max_retry_after: NonNegativeFloat = 120.0
    """most seconds a server's ``Retry-After`` is honoured for"""
    max_concurrency: PositiveInt = 64
    """most requests in flight"""
    min_concurrency: PositiveInt = 1
    """fewest requests in flight when the server pushes back"""
    initial_concurrency: PositiveInt | None = None
    """requests in flight at first (default: max_concurrency)"""
    empty_retries: NonNegativeInt = 1
    """retries of an empty answer"""
    fail_fast_after: PositiveInt = 8
    """stop the run when this many first calls of one kind fail alike"""
    extra_body: dict[str, Any] | None = None
    """extra request fields sent with every call (part of the cache identity)"""
    name: str | None = None
    """display name (default: the model)"""

    @model_validator(mode="after")
    def _concurrency_order(self) -> Self:
        if self.min_concurrency > self.max_concurrency:
            raise ValueError(
                f"needs 1 <= min_concurrency <= max_concurrency, got {self.min_concurrency} and {self.max_concurrency}"
            )
        return self


class OpenAIOptions(HTTPOptions):
    """``openai`` options (besides the model and ``base_url``, which the spec may carry)."""

    schema_format: SchemaFormat = "auto"
    """structured-output form: ``auto`` negotiates, or one of ``models.structured.FORMS``"""
    schema_strict: bool = True
    """``strict`` in the ``json_schema`` form"""
    raw_prompt: bool = True
    """the server takes raw prompts on ``/completions`` (Magpie)"""
    chat_template: str | None = None
    """the served model's chat template, when the server does not tell it"""
    check_model: bool = True
    """refuse at start a model the server does not list"""
    embed_batch_size: PositiveInt = 128
    """texts per ``/embeddings`` call"""


def _identity(model: str, base_url: str, extra_body: dict[str, Any]) -> str:
    """The cache identity: model and URL, plus a digest of ``extra_body`` when there is one."""
    identity = f"openai:{model}@{base_url}"
    if extra_body:
        body = json.dumps(extra_body, sort_keys=True, default=str).encode()
        identity += "#" + hashlib.sha256(body).hexdigest()[:12]
    return identity


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
        #: (status, message) of an error answer that may be deterministic; None when transient
        self.signature: tuple[int, str] | None = None


class _Refused(Exception):
    """The server refused the request's structured-output form (``what="form"``) or ``n``."""

    def __init__(self, status: int, message: str, what: str = "form") -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.what = what


class OpenAIModel(Model):
    """A model behind an OpenAI-compatible HTTP API."""

    backend = "openai"
    CAPABILITIES = Capabilities(
        local=False,  # a server on this machine is free by its URL (``pricing``)
        gpu=False,  # the server holds the model
        renders_chat=False,  # the server applies the template
        raw_prompt=True,  # ``/completions``; the ``raw_prompt`` option turns it off
        structured=tuple(f for f in FORMS if f != "none"),  # negotiated (``models.structured``)
        n=True,  # ``n=`` in one call, the prompt billed once
        embeddings=True,  # :meth:`embed`
        tools=True,  # ``tools``/``tool_choice`` sent as they are; ``tool_calls`` read back
        reasoning=False,  # thinking blocks come inside the text (``split_reasoning``)
        threads_option=None,
        local_files=False,
    )
    SPEC_KEYS = ("model", "base_url")
    Options = OpenAIOptions

    def __init__(self, model: str, base_url: str | None = None, **options: Any) -> None:
        o: OpenAIOptions = self._http_settings(model, base_url, options)
        self.check_model = o.check_model
        self.schema_strict, self.schema_format = o.schema_strict, o.schema_format
        self.embed_batch_size = o.embed_batch_size
        #: the structured-output form in use per path; fixed when the user named one
        fixed = None if o.schema_format == "auto" else ALIASES.get(o.schema_format, o.schema_format)
        self._negotiate = fixed is None
        self.forms = {p: fixed or FORMS[0] for p in ("/chat/completions", "/completions")}
        self.limiter = AdaptiveLimiter(
            o.max_concurrency, minimum=o.min_concurrency, initial=o.initial_concurrency
        )
        self._init_state()
        self._urls = {
            p: self.base_url + p
            for p in ("/chat/completions", "/completions", "/embeddings", "/models")
        }
        self._info = ModelInfo(
            name=o.name or model,
            identity=_identity(model, self.base_url, self.extra_body),
            max_concurrency=o.max_concurrency,
            raw_prompt=o.raw_prompt,
            json_schema=True,
            chat_template=o.chat_template,
            extra={"base_url": self.base_url},
            capabilities=replace(self.capabilities(), raw_prompt=o.raw_prompt),
        )

    def _init_state(self) -> None:
        """What the model learns while it runs (forms, refusals, retries) and its connection."""
        self._form_worked: dict[str, str] = {}  #: path → the form an answer came back with
        self.refusals: dict[str, str] = {}  #: form → the server's message refusing it
        self.retried: dict[str, int] = {}  #: retries by reason
        self.waiting = 0  #: attempts sent and not answered yet (a progress hook)
        self.one_sample = False  #: the server refused n > 1: one sample per request from now on
        self._answered = False  # any HTTP answer at all has come back
        self._first_sent: float | None = None
        self._sent = 0
        self._first_failures: dict[tuple[str, str | None], list[tuple[int, str] | None]] = {}
        #: attempts, retries and failures by reason, for reports and tests
        self.counters: dict[str, int] = {"requests": 0, "attempts": 0, "retries": 0}
        self._session: aiohttp.ClientSession | None = None
        self._secret: str | None = None
        self._down: ModelUnavailable | None = None
        self._sleep = asyncio.sleep  # a seam for tests that check the waits
        self._starting: asyncio.Lock | None = None

    # what ``from_spec``/``spec_endpoint`` say and read; a subclass on another API sets its own
    BASE_URL_ENV = "OPENAI_BASE_URL"
    SPEC_EXAMPLE = "openai:MODEL@URL, e.g. openai:smollm@http://127.0.0.1:8000/v1"
    DEFAULT_URL = DEFAULT_BASE_URL

    def _http_settings(self, model: str, base_url: str | None, options: dict[str, Any]) -> Any:
        """Check the model name, parse ``options`` (this class's ``Options``) and set what the
        HTTP layer reads (URL, key variable, timeouts, retries, extra body); the parsed options."""
        if not model or not isinstance(model, str):
            raise ConfigError(f"the {self.backend} backend needs a model name: {self.SPEC_EXAMPLE}")
        o = self.parse_options(options)
        self.model = model
        self.base_url = normalize_url(
            base_url or os.environ.get(self.BASE_URL_ENV) or self.DEFAULT_URL
        )
        self.api_key_env = o.api_key_env
        self.timeout, self.first_byte_timeout = o.timeout, o.first_byte_timeout
        self.connect_timeout, self.probe_timeout = o.connect_timeout, o.probe_timeout
        self.max_retries, self.empty_retries = o.max_retries, o.empty_retries
        self.backoff, self.max_backoff = o.backoff, o.max_backoff
        self.max_retry_after, self.fail_fast_after = o.max_retry_after, o.fail_fast_after
        self.extra_body = dict(o.extra_body or {})
        return o

    @classmethod
    def from_spec(cls, arg: str | None, **options: Any) -> Self:
        """``MODEL@URL`` or ``MODEL`` (then ``base_url=``, ``$BASE_URL_ENV`` or the API's own)."""
        cls.parse_options({k: v for k, v in options.items() if k not in cls.SPEC_KEYS})
        if arg:
            arg = arg.strip()
            if "@" in arg:  # everything after the first @ is the URL, and it must be one
                arg, _, url = arg.partition("@")
                if options.get("base_url"):
                    raise ConfigError(
                        f"{cls.backend}:{arg}@{url} names a URL and the base_url option names "
                        "another; keep one"
                    )
                options["base_url"] = normalize_url(url)
            options["model"] = arg
        if not options.get("model"):
            raise ConfigError(f"the {cls.backend} backend needs a model name: {cls.SPEC_EXAMPLE}")
        return cls(**options)

    @classmethod
    def spec_endpoint(cls, arg: str | None) -> tuple[str | None, str | None]:
        """``MODEL@URL`` → (MODEL, URL); without ``@URL`` the URL is ``$BASE_URL_ENV``."""
        name, _, url = (arg or "").partition("@")
        return name or None, url or os.environ.get(cls.BASE_URL_ENV) or None

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

    #: whether :meth:`start` probes the endpoint (a subclass may make it an option)
    probe: bool = True

    def _headers(self) -> dict[str, str]:
        """The headers of every request (the API key as :meth:`_open` read it)."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._secret:
            headers["Authorization"] = f"Bearer {self._secret}"
        return headers

    async def _open(self) -> None:
        from .keys import require_key

        require_key(self.base_url, self.api_key_env)  # a provider's host without a key: one line
        self._secret = os.environ.get(self.api_key_env) or None
        connector = aiohttp.TCPConnector(
            limit=self.limiter.maximum + 4, ttl_dns_cache=300, keepalive_timeout=30
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers(),
            timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=self.connect_timeout),
            json_serialize=lambda v: _dumps(v).decode(),
            skip_auto_headers=("User-Agent",),
        )
        try:
            if self.probe:
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
        if self._info.chat_template is None and not self.base_url.startswith(DEFAULT_BASE_URL):
            self._info.chat_template = await self._server_template()
        ids = [m["id"] for m in served]
        # llama-cpp-python's server lists its one model by file path and serves it under any name
        one_file = len(ids) == 1 and ids[0].endswith(".gguf")
        if (
            self.check_model
            and ids
            and not llamacpp
            and not one_file
            and self.model not in ids
            and f"{self.model}:latest" not in ids
        ):
            shown = ", ".join(ids[:10]) + (", …" if len(ids) > 10 else "")
            raise ModelUnavailable(
                f"{self.base_url} does not serve model {self.model!r}; it serves: {shown} "
                "(use one of them, or set check_model: false)"
            )

    async def _server_template(self) -> str | None:
        """The chat template from ``GET /props`` (llama.cpp's llama-server tells it; Magpie needs it).

        Other servers answer 404 or something else; then None, and Magpie asks for ``template:``.
        """
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
            body = await self._post(
                path, self._payload(request, chat, want, seed), request.json_schema
            )
            got = self._completions(body, chat, want)
            if not got:
                continue
            empty = [
                c
                for c in got
                if not c.text.strip() and c.finish_reason != "length" and not c.tool_calls
            ]
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
        if n > 1 and not self.one_sample:
            payload["n"] = n
        if seed is not None:
            payload["seed"] = seed
        if request.stop:
            payload["stop"] = request.stop
        if request.tools:
            payload["tools"] = list(request.tools)
            if request.tool_choice is not None:
                payload["tool_choice"] = request.tool_choice
        if request.enable_thinking is not None:  # vLLM's, SGLang's and llama-server's switch
            payload["chat_template_kwargs"] = {"enable_thinking": request.enable_thinking}
        if request.reasoning_effort is not None:  # OpenAI reasoning models
            payload["reasoning_effort"] = request.reasoning_effort
        if self.extra_body:
            kwargs = self.extra_body.get("chat_template_kwargs")
            payload.update(self.extra_body)
            if isinstance(kwargs, dict) and "chat_template_kwargs" in payload:
                payload["chat_template_kwargs"] = {**kwargs, **payload["chat_template_kwargs"]}
        return payload

    def request_body(self, request: Request) -> tuple[str, dict[str, Any]]:
        """The path (``/chat/completions`` or ``/completions``) and JSON body of one call asking
        for all ``request.n`` samples, as it would be sent online (a schema in the path's
        current structured-output form): the body of a batch line (``models.batch_openai``)."""
        chat = request.messages is not None
        path = "/chat/completions" if chat else "/completions"
        payload = self._payload(request, chat, request.n, request.seed)
        form = self.forms[path]
        if request.json_schema is not None and form != "none":
            fields = schema_fields(form, request.json_schema, chat, self.schema_strict)
            payload = {**payload, **fields, **self.extra_body}
        return path, payload

    def parse_answer(self, body: Any, chat: bool, want: int) -> list[Completion]:
        """The completions of one answer body (a batch result line's ``response.body``)."""
        return self._completions(body, chat, want)

    def _completions(self, body: Any, chat: bool, want: int) -> list[Completion]:
        """The texts of an answer; odd bookkeeping (usage, index, finish_reason) reads as unknown."""
        choices = body.get("choices") if isinstance(body, dict) else None
        if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
            raise ModelError(
                f"{self.base_url} sent a response without choices: {str(body)[:120]}",
                retryable=True,
                reason="bad response",
            )
        choices = sorted(choices, key=lambda c: _count(c.get("index")))
        texts: list[tuple[str, FinishReason]] = []
        apart: list[tuple[str | None, tuple[ToolCall, ...]]] = []
        for choice in choices[:want]:
            if chat:
                message = choice.get("message")
                message = message if isinstance(message, dict) else {}
                text = _text(message.get("content"))
                apart.append((_reasoning(message), _tool_calls(message.get("tool_calls"))))
            else:
                text = _text(choice.get("text"))
                apart.append((_reasoning(choice), ()))
            # every reason mapped on purpose; an absent one is a normal stop, an odd one "other"
            texts.append((text, finish_reason_of(choice.get("finish_reason"))))
        usage = body.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        prompt_tokens = _count(usage.get("prompt_tokens"))
        total = _count(usage.get("completion_tokens"))
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
                    reasoning=apart[i][0],
                    tool_calls=apart[i][1],
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
                items = sorted(body["data"], key=lambda d: _count(d.get("index")))
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
    async def _post(
        self, path: str, payload: dict[str, Any], schema: dict[str, Any] | None = None
    ) -> Any:
        """POST with bounded retries; returns the decoded JSON body or raises ModelError.

        ``schema`` is put into the payload in this path's structured-output form; a refusal of
        the form moves this path to the next form (when negotiating) and the call goes on.
        """
        if self._down is not None:
            raise self._down
        session = self._session
        assert session is not None
        url = self._urls[path]
        form = self.forms.get(path) if schema is not None else None
        data = self._data(payload, path, schema, form)
        attempt = 0
        last: tuple[int, str] | None = None
        while True:
            if self._down is not None:  # another call found the model gone meanwhile
                raise self._down
            try:
                many = _count(payload.get("n")) > 1
                body = await self._attempt(session, url, path, data, attempt, form, many)
            except _Refused as refusal:
                if refusal.what == "n":  # ask for one sample; generate() asks again for the rest
                    self.one_sample = True
                    self.counters["n refused"] = self.counters.get("n refused", 0) + 1
                    payload = {k: v for k, v in payload.items() if k != "n"}
                    data = self._data(payload, path, schema, form)
                    continue
                assert form is not None and schema is not None
                self.refusals.setdefault(form, f"HTTP {refusal.status}: {refusal.message}")
                if self.forms[path] == form:  # the first call refused moves every later one
                    self.forms[path] = next_form(form)
                form = self.forms[path]
                data = self._data(payload, path, schema, form)
                self.counters["form refused"] = self.counters.get("form refused", 0) + 1
                continue
            except _Retry as retry:
                failure = retry
            except ModelUnavailable:
                raise
            except ModelError as exc:
                self._tally(path, form, getattr(exc, "signature", None))
                raise
            else:
                if form is not None:
                    self._form_worked.setdefault(path, form)
                self._first_failures[(path, form)] = [None]  # this kind of call can succeed
                return body
            attempt += 1
            self.counters[failure.reason] = self.counters.get(failure.reason, 0) + 1
            repeated = failure.signature is not None and failure.signature == last
            last = failure.signature
            if attempt > self.max_retries or repeated:
                if (
                    failure.refused
                ):  # the server went away mid-run: stop instead of failing each row
                    self._down = ModelUnavailable(
                        f"lost {self.base_url}: {failure} after {attempt} tries; run again once it answers (the finished calls are kept in the call cache, if the run has one)"
                    )
                    raise self._down
                self._tally(path, form, failure.signature)
                tries = f"{attempt} tr{'y' if attempt == 1 else 'ies'}"
                if repeated:
                    tries += ", the same answer twice: not tried again"
                raise ModelError(
                    f"{self.model} at {self.base_url}: {failure} ({tries})",
                    retryable=not repeated,
                    reason=failure.reason,
                )
            self.counters["retries"] += 1
            self.retried[failure.reason] = self.retried.get(failure.reason, 0) + 1
            wait = self._backoff(attempt - 1)
            if failure.wait is not None:
                wait = min(self.max_retry_after, max(failure.wait, 0.0))
            await self._sleep(wait)

    def _data(
        self, payload: dict[str, Any], path: str, schema: dict[str, Any] | None, form: str | None
    ) -> bytes:
        if schema is None or form is None:
            return _dumps(payload)
        fields = schema_fields(form, schema, path == "/chat/completions", self.schema_strict)
        return _dumps({**payload, **fields, **self.extra_body})

    def _tally(self, path: str, form: str | None, signature: tuple[int, str] | None) -> None:
        """Count a failed call; the first ``fail_fast_after`` failing alike stop the model."""
        seen = self._first_failures.setdefault((path, form), [])
        if seen and seen[0] is None or len(seen) >= self.fail_fast_after:
            return  # a success, or a transient failure, came first: calls of this kind can work
        seen.append(signature)
        if signature is None or seen[0] != signature:
            seen[:] = [None]
            return
        if len(seen) == self.fail_fast_after:
            status, message = signature
            self._down = ModelUnavailable(
                f"{self.base_url} refused the first {len(seen)} {path} calls alike "
                f"(HTTP {status}: {message}) and none succeeded; fix the server or the request "
                "(model name, options, extra_body) before running again"
            )
            raise self._down

    async def _attempt(
        self,
        session: aiohttp.ClientSession,
        url: str,
        path: str,
        data: bytes,
        attempt: int = 0,
        form: str | None = None,
        many: bool = False,
    ) -> Any:
        """One request: the decoded JSON body of a 200 answer. Raises ``_Retry`` for what a retry
        may cure, ``_Refused`` for a structured-output form or ``n`` the server will not take, and
        ``ModelUnavailable``/``ModelError`` for the rest (see ``_http_error``)."""
        self.counters["attempts"] += 1
        deadline = self.timeout
        if not self._answered:  # no proof yet that the endpoint answers at all
            deadline = min(self.timeout, self.first_byte_timeout * 2**attempt)
        # always explicit: aiohttp reads timeout=None as "no deadline at all"
        timeout = aiohttp.ClientTimeout(total=deadline, sock_connect=self.connect_timeout)
        async with self.limiter.slot() as slot:
            status, raw, wait = await self._send(session, url, data, timeout, deadline, slot)
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
        raise self._http_error(status, raw, wait, path, form, many)

    async def _send(
        self,
        session: aiohttp.ClientSession,
        url: str,
        data: bytes,
        timeout: aiohttp.ClientTimeout,
        deadline: float,
        slot: _Slot,
    ) -> tuple[int, bytes, float | None]:
        """POST ``data`` inside a limiter ``slot``: (HTTP status, body, ``Retry-After`` seconds
        of a non-200 answer or None). A timeout or connection failure tells the slot and raises
        ``_Retry``; ``deadline`` (seconds) is the total one ``timeout`` carries."""
        if self._first_sent is None:
            self._first_sent = time.monotonic()
        self._sent += 1
        self.waiting += 1
        wait: float | None = None
        got = False
        try:
            async with session.post(url, data=data, timeout=timeout) as resp:
                self._answered = got = True
                self.waiting -= 1
                status = resp.status
                raw = await resp.read()
                if status != 200:
                    wait = _retry_after(resp.headers)
        except TimeoutError:
            slot.overloaded()
            self._check_hung()
            option = "timeout" if deadline >= self.timeout else "first_byte_timeout"
            raise _Retry(
                "timeout", f"no answer within {deadline:g}s ({option} option)", overload=True
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
        finally:
            if not got:
                self.waiting -= 1
        return status, raw, wait

    def _http_error(
        self, status: int, raw: bytes, wait: float | None, path: str, form: str | None, many: bool
    ) -> Exception:
        """The error to raise for a non-200 answer: ``_Refused`` (the structured-output ``form``
        or, when ``many``, ``n`` refused), ``_Retry`` (``wait``: the server's ``Retry-After``
        seconds), ``ModelUnavailable`` (quota, auth, unknown model: also kept as the backend's
        down state) or ``ModelError``."""
        message = self._message(raw)
        if form not in (None, "none") and self._negotiate and is_format_refusal(status, message):
            return _Refused(status, message)
        if many and is_n_refusal(status, message):
            return _Refused(status, message, what="n")
        if status == 429 and "insufficient_quota" in message:
            self._down = ModelUnavailable(
                f"{self.base_url}: quota exhausted ({message}); add credit or use another key"
            )
            return self._down
        if status in _RETRY_STATUS:
            reason = (
                "rate limited"
                if status == 429
                else ("timeout" if status == 408 else f"server error {status}")
            )
            retry = _Retry(
                reason, f"HTTP {status}: {message}", overload=status in _OVERLOAD_STATUS, wait=wait
            )
            if status in (409, 425, 500) and not any(w in message.lower() for w in _GENERIC):
                retry.signature = (status, message)  # e.g. a 500 the request itself causes
            return retry
        if status in (401, 403):
            self._down = ModelUnavailable(self._auth_message(status, raw))
            return self._down
        if status == 404:
            self._down = ModelUnavailable(
                f"{self.base_url} answered 404 to {path} for model {self.model!r}: {message}"
            )
            return self._down
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
            error = ModelError(
                f"{self.base_url} refused the request (HTTP {status}): {message}",
                reason="request too long" if too_long else "bad request",
            )
        else:
            error = ModelError(
                f"{self.base_url} answered HTTP {status}: {message}", reason=f"http {status}"
            )
        error.signature = (status, message)  # type: ignore[attr-defined]
        return error

    def _check_hung(self) -> None:
        """Stop when requests went out ``_HUNG_ROUNDS`` first-byte deadlines ago and none came back."""
        if self._answered or self._first_sent is None:
            return
        waited = time.monotonic() - self._first_sent
        if waited >= self.first_byte_timeout * _HUNG_ROUNDS:
            self._down = ModelUnavailable(
                f"{self.base_url} accepted {self._sent} requests and answered none in {waited:.0f}s; "
                "check the server, or raise --set models.default.first_byte_timeout=SECONDS "
                f"(now {self.first_byte_timeout:g})"
            )
            raise self._down

    def run_facts(self) -> dict[str, Any]:
        """What ``run.json`` records for this model: structured-output form, retries by reason."""
        facts: dict[str, Any] = {}
        chat = self._form_worked.get("/chat/completions")
        prompt = self._form_worked.get("/completions")
        if chat or prompt:
            facts["structured_output"] = chat or prompt
            if chat and prompt and chat != prompt:
                facts["structured_output_raw_prompts"] = prompt
        if self.refusals:
            facts["structured_output_refused"] = dict(self.refusals)
        if self.one_sample:
            facts["samples_per_request"] = 1  # the server refused n > 1
        facts["retries"] = sum(self.retried.values())
        if self.retried:
            facts["retries_by_reason"] = dict(sorted(self.retried.items(), key=lambda kv: -kv[1]))
        return facts

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with equal jitter: half fixed, half random."""
        cap: float = min(self.max_backoff, self.backoff * (2**attempt))
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
    """``http://host:8000`` → ``http://host:8000/v1``; trailing slashes dropped.

    Raises ConfigError unless the URL has an http/https scheme and a host.
    """
    url = str(url).strip().rstrip("/")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or not re.match(r"^https?://[^/\s]+", url)
        or re.search(r"\s", url)
    ):
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


def _count(value: Any) -> int:
    """A token count or index from an answer; anything not a whole number ≥ 0 is unknown (0)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, float) and value.is_integer():
        return max(0, int(value))
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return 0


def _text(content: Any) -> str:
    """A message's text: a string, a list of content parts (their text joined), else empty."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


#: where OpenAI-compatible servers put the thinking they parse out of the answer: vLLM's and
#: SGLang's reasoning parsers, llama-server (``--reasoning-format``) and DeepSeek's API send
#: ``reasoning_content``; newer vLLM and Ollama's ``/v1`` send ``reasoning``; Ollama's own API
#: sends ``thinking``. The first that holds text wins.
REASONING_FIELDS = ("reasoning_content", "reasoning", "thinking")


def _reasoning(message: dict[str, Any]) -> str | None:
    """The thinking a server sent apart from the answer (see :data:`REASONING_FIELDS`), or None."""
    for name in REASONING_FIELDS:
        text = _text(message.get(name))
        if text.strip():
            return text
    return None


def _tool_calls(raw: Any) -> tuple[ToolCall, ...]:
    """The ``tool_calls`` of a chat message as ``{id, name, arguments}`` (arguments: JSON text;
    a server that sends an object gets it dumped). Entries without a function name are skipped."""
    if not isinstance(raw, list):
        return ()
    calls: list[ToolCall] = []
    for i, call in enumerate(raw):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            continue
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
        ident = call.get("id")
        calls.append(
            {
                "id": ident if isinstance(ident, str) and ident else f"call_{i}",
                "name": function["name"],
                "arguments": arguments,
            }
        )
    return tuple(calls)


def _why(exc: BaseException) -> str:
    """A short description of a connection failure (``ConnectionRefusedError: ...`` → ``connection refused``)."""
    cause = getattr(exc, "os_error", None) or exc.__cause__ or exc
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve host ({cause})"
    return str(exc) or type(exc).__name__

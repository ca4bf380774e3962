"""The Anthropic Messages API backend (Claude), online.

Spec ``anthropic:MODEL`` (``anthropic:claude-sonnet-4-5``) talks to Anthropic itself;
``anthropic:MODEL@URL`` (``anthropic:claude-x@http://127.0.0.1:8123``) to another endpoint
(a gateway, or the fake in :mod:`datamill.testing.anthropic`); without ``@URL`` the
``base_url`` option, then ``$ANTHROPIC_BASE_URL``. A URL with no path gets ``/v1``.

- Each sample is one ``POST /v1/messages`` (Anthropic has no ``n``): ``n`` samples are ``n``
  requests, each billed for the prompt (``Capabilities.n`` is false, so forecasts count that).
- The bodies are built and read by :func:`messages_body` and :func:`parse_message`
  (``models.anthropic_messages``, pure; the batch path uses them too): system prompt, stop
  sequences, tools and ``tool_use``, thinking blocks, and ``Request.json_schema`` as a forced
  tool call (``schema_format: tool``) or in the prompt (``prompt``). ``run.json`` says which
  (``models.NAME.structured_output``).
- Retries, rate limits, the adaptive concurrency limiter, ``Retry-After``, the "same error
  answer twice is not tried again" rule, the stop after the first calls all fail alike, and the
  hung-endpoint stop are the OpenAI-compatible backend's (:class:`OpenAIModel` is the base
  class, its HTTP layer used as it is): HTTP 429 is ``rate limited`` and 529 ``overloaded``,
  both slow the limiter down and are retried.
- The key comes from ``$ANTHROPIC_API_KEY`` (or the variable ``api_key_env`` names) when the
  model starts and travels as ``x-api-key`` with ``anthropic-version: 2023-06-01``. With no key
  and Anthropic's own URL the model refuses to start, in one line, before any call. The key is
  never in the identity, the ``ModelInfo``, the repr, an error message or the cache.
- :meth:`start` probes ``GET /v1/models`` (Anthropic's model listing) so a refused key stops
  the run before any row is sent; the model name is not checked there (aliases such as
  ``claude-sonnet-4-5`` are not listed), an unknown one fails on the first call (HTTP 404).

Deliberately not here: embeddings (Anthropic has none), raw prompts, streaming, prompt caching.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Annotated, Any

import aiohttp
from pydantic import (
    Field,
    PositiveFloat,
    PositiveInt,
)

from ..errors import ConfigError, ModelError, ModelUnavailable
from .adaptive import AdaptiveLimiter
from .anthropic_messages import (
    ANTHROPIC_VERSION,
    MIN_THINKING_BUDGET,
    BodyOptions,
    SchemaMode,
    messages_body,
    parse_message,
)
from .base import Capabilities, Completion, ModelInfo, Request
from .keys import PROVIDER_HOSTS
from .openai import HTTPOptions, OpenAIModel, _Retry, _why

DEFAULT_BASE_URL = "https://api.anthropic.com/v1"
#: hosts where a missing key is known to fail (other URLs may be keyless gateways or fakes);
#: the check itself is ``models.keys`` (shared with the openai backend and the batch APIs)
ANTHROPIC_HOSTS = frozenset(h for h, p in PROVIDER_HOSTS.items() if p == "Anthropic")

__all__ = ["AnthropicModel", "AnthropicOptions", "messages_body", "parse_message"]


class AnthropicOptions(HTTPOptions):
    """``anthropic`` options (besides the model and ``base_url``, which the spec may carry); the
    HTTP layer's own are :class:`~datamill.models.openai.HTTPOptions`'s, some defaults changed."""

    api_key_env: str = "ANTHROPIC_API_KEY"
    """the environment variable holding the API key (read at start, never stored)"""
    anthropic_version: str = ANTHROPIC_VERSION
    """the ``anthropic-version`` header"""
    schema_format: SchemaMode = "tool"
    """how ``Request.json_schema`` travels: ``tool`` (a forced tool call), ``prompt``, ``none``"""
    thinking_budget: Annotated[int, Field(ge=MIN_THINKING_BUDGET)] = 4096
    """thinking tokens when a step turns thinking on (``enable_thinking: true``)"""
    timeout: PositiveFloat = 600.0
    """seconds one attempt may take in all"""
    first_byte_timeout: PositiveFloat = 120.0
    """seconds an attempt waits for a first answer until the endpoint has answered anything"""
    probe_timeout: PositiveFloat = 10.0
    """seconds the start-up probe (``GET /v1/models``) waits"""
    probe: bool = True
    """check the endpoint and the key at start with ``GET /v1/models``"""
    max_concurrency: PositiveInt = 16
    """most requests in flight"""


class AnthropicModel(OpenAIModel):
    """A Claude model behind the Anthropic Messages API (the HTTP layer is :class:`OpenAIModel`'s)."""

    backend = "anthropic"
    CAPABILITIES = Capabilities(
        local=False,
        gpu=False,
        renders_chat=False,  # the API applies the template
        raw_prompt=False,  # messages only
        structured=("tool",),  # a forced tool call carries the schema (``schema_format``)
        n=False,  # one request per sample, each billed for its prompt
        embeddings=False,
        tools=True,  # ``tools`` / ``tool_use`` blocks
        reasoning=True,  # ``thinking`` blocks come apart from the answer
        threads_option=None,
        local_files=False,  # the spec names a model on the API, never a file
    )
    SPEC_KEYS = ("model", "base_url")
    BASE_URL_ENV = "ANTHROPIC_BASE_URL"
    SPEC_EXAMPLE = "anthropic:MODEL, e.g. anthropic:claude-sonnet-4-5"
    DEFAULT_URL = DEFAULT_BASE_URL
    Options = AnthropicOptions  # type: ignore[assignment]  # its own options, not the base's

    def __init__(self, model: str, base_url: str | None = None, **options: Any) -> None:
        o: AnthropicOptions = self._http_settings(model, base_url, options)
        self.anthropic_version, self.probe = o.anthropic_version, o.probe
        self.body_options = BodyOptions(
            model=model,
            schema_format=o.schema_format,
            thinking_budget=o.thinking_budget,
            extra_body=self.extra_body,
        )
        # the base class's structured-output negotiation is not used: the body carries the schema
        self.schema_strict, self._negotiate = True, False
        self.forms = {}
        self.limiter = AdaptiveLimiter(
            o.max_concurrency, minimum=o.min_concurrency, initial=o.initial_concurrency
        )
        self._init_state()
        self._schema_calls: dict[str, int] = {}  #: structured answers by how the schema went
        self._urls = {p: self.base_url + p for p in ("/messages", "/models")}
        self._info = ModelInfo(
            name=o.name or model,
            identity=_identity(model, self.base_url, self.body_options),
            max_concurrency=o.max_concurrency,
            raw_prompt=False,
            json_schema=True,
            extra={"base_url": self.base_url},
            capabilities=replace(self.capabilities()),
        )

    def __repr__(self) -> str:
        return f"AnthropicModel(model={self.model!r}, base_url={self.base_url!r})"

    # -- lifecycle ------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "accept": "application/json",
            "anthropic-version": self.anthropic_version,
        }
        if self._secret:
            headers["x-api-key"] = self._secret
        return headers

    async def _probe(self) -> None:
        """``GET /models``: the endpoint answers and takes the key (404: no listing; fine)."""
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=self.probe_timeout)
        for attempt in range(self.max_retries + 1):
            try:
                async with self._session.get(self._urls["/models"], timeout=timeout) as resp:
                    status, raw = resp.status, await resp.read()
            except TimeoutError:
                raise ModelUnavailable(
                    f"{self.base_url} did not answer within {self.probe_timeout:g}s (probe_timeout); is it up?"
                ) from None
            except aiohttp.ClientError as exc:
                raise ModelUnavailable(
                    f"cannot reach {self.base_url}: {self._scrub(_why(exc))}; check the URL or the network"
                ) from None
            if status in (401, 403):
                raise ModelUnavailable(self._auth_message(status, raw))
            if status in (429, 500, 502, 503, 504, 529) and attempt < self.max_retries:
                await self._sleep(self._backoff(attempt))
                continue
            if status != 200 and status != 404 and status < 500:
                raise ModelUnavailable(
                    f"{self.base_url} answered {status} to GET /models: {self._message(raw)}"
                )
            return

    # -- generation -----------------------------------------------------------------------------
    async def generate(self, request: Request) -> list[Completion]:
        """``request.n`` completions, one ``POST /messages`` each (concurrently)."""
        try:
            body = messages_body(request, self.body_options)
        except ConfigError as exc:  # every call of this kind would be refused alike: stop
            self._down = ModelUnavailable(f"{self.model}: {exc}")
            raise self._down from None
        if self._session is None:
            await self.start()
        self.counters["requests"] += 1
        # every sample runs to its end (no orphan request); the first failure fails the call
        results = await asyncio.gather(
            *(self._sample(body) for _ in range(request.n)), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
        samples = [r for r in results if isinstance(r, Completion)]
        if request.json_schema is not None:
            how: str = self.body_options.schema_format
            if how == "tool" and body.get("tool_choice", {}).get("type") == "auto":
                how = "tool (offered, not forced: thinking on)"
            self._schema_calls[how] = self._schema_calls.get(how, 0) + 1
        return samples

    async def _sample(self, body: dict[str, Any]) -> Completion:
        """One sample; an empty answer (no text, no tool call, not cut) is asked again."""
        for tries in range(self.empty_retries + 1):
            completion = parse_message(await self._post("/messages", body))
            empty = not completion.text.strip() and not completion.tool_calls
            if not empty or completion.finish_reason == "length" or tries == self.empty_retries:
                return completion
            self.counters["empty_retries"] = self.counters.get("empty_retries", 0) + 1
        raise AssertionError("unreachable")  # pragma: no cover

    def _http_error(
        self, status: int, raw: bytes, wait: float | None, path: str, form: str | None, many: bool
    ) -> Exception:
        """The base class's reading, with Anthropic's words: 529 is ``overloaded``; a 400 about
        the credit balance stops the model (every call would get it)."""
        error = super()._http_error(status, raw, wait, path, form, many)
        if isinstance(error, _Retry) and status == 529:
            error.reason = "overloaded"
        if status == 400 and "credit balance" in self._message(raw).lower():
            self._down = ModelUnavailable(
                f"{self.base_url}: {self._message(raw)}; add credit or use another key"
            )
            return self._down
        return error

    async def embed(self, texts: list[str]) -> list[list[float]]:
        raise ModelError("the anthropic backend has no embeddings; use an embedder spec")

    def run_facts(self) -> dict[str, Any]:
        """What ``run.json`` records: how structured answers were asked for, retries by reason."""
        facts: dict[str, Any] = {}
        if self._schema_calls:
            facts["structured_output"] = max(self._schema_calls, key=self._schema_calls.__getitem__)
            if len(self._schema_calls) > 1:
                facts["structured_output_calls"] = dict(self._schema_calls)
        facts["samples_per_request"] = 1  # Anthropic has no n
        facts["retries"] = sum(self.retried.values())
        if self.retried:
            facts["retries_by_reason"] = dict(sorted(self.retried.items(), key=lambda kv: -kv[1]))
        return facts


#: the default thinking budget, left out of the identity (as every default is)
_BUDGET = AnthropicOptions.model_fields["thinking_budget"].default


def _identity(model: str, base_url: str, body: BodyOptions) -> str:
    """The cache identity: model and URL, plus a digest of what else shapes the body."""
    identity = f"anthropic:{model}@{base_url}"
    shaping: Mapping[str, Any] = {
        k: v
        for k, v in {
            "schema_format": body.schema_format if body.schema_format != "tool" else None,
            "thinking_budget": body.thinking_budget if body.thinking_budget != _BUDGET else None,
            "extra_body": dict(body.extra_body) or None,
        }.items()
        if v is not None
    }
    if shaping:
        digest = json.dumps(shaping, sort_keys=True, default=str).encode()
        identity += "#" + hashlib.sha256(digest).hexdigest()[:12]
    return identity

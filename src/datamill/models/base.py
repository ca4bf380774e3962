"""The model seam: one small async interface every backend implements.

A task builds a :class:`Request` (chat messages *or* a raw prompt, sampling parameters, ``n``,
stop strings, an optional JSON schema) and awaits ``model.generate(request)``, which returns
``request.n`` :class:`Completion` objects. A backend never sees a row and a task never sees a
backend: batching, retries and concurrency live behind ``generate``.

Deliberately not here: caching (``pipeline.cache``), failure records (``pipeline.runner``).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

Message = dict[str, str]
FinishReason = Literal["stop", "length", "error"]

#: Request fields that sampling settings (recipe model settings, step options) may override.
SAMPLING_FIELDS = ("max_tokens", "temperature", "top_p", "seed", "stop")


@dataclass(frozen=True)
class Request:
    """One generation request. Exactly one of ``messages`` and ``prompt`` is set."""

    messages: tuple[Message, ...] | None = None
    prompt: str | None = None
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    json_schema: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a Request needs exactly one of messages= or prompt=")
        if self.messages is not None and not isinstance(self.messages, tuple):
            object.__setattr__(self, "messages", tuple(dict(m) for m in self.messages))
        if not isinstance(self.stop, tuple):
            object.__setattr__(self, "stop", tuple(self.stop))
        if self.n < 1:
            raise ValueError("n must be at least 1")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")

    @classmethod
    def chat(cls, user: str, system: str | None = None, **kwargs: Any) -> Request:
        """A request with an optional system message and one user message."""
        messages: list[Message] = []
        if system:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": user})
        return cls(messages=tuple(messages), **kwargs)

    def with_options(self, **options: Any) -> Request:
        """A copy with some fields replaced (``None`` values are ignored)."""
        changes = {k: v for k, v in options.items() if v is not None}
        return replace(self, **changes) if changes else self

    def cache_payload(self) -> str:
        """Canonical JSON of everything that decides the output, except ``n``.

        ``n`` is left out because the cache stores each sample under its own index, so a later
        request for more samples reuses the ones already paid for.
        """
        data = asdict(self)
        data.pop("n")
        return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class Completion:
    """One sampled output of a request."""

    text: str
    finish_reason: FinishReason = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False


@dataclass
class ModelInfo:
    """What the runner and tasks may ask of a model without calling it."""

    name: str  #: short display name, e.g. ``smollm2-135m-instruct``
    identity: str  #: stable identity for the cache key (backend + weights + revision)
    max_concurrency: int = 8  #: requests the runner keeps in flight for this model
    raw_prompt: bool = True  #: accepts ``Request.prompt`` (needed by Magpie)
    json_schema: bool = False  #: honours ``Request.json_schema`` (constrained decoding)
    chat_template: str | None = None  #: Jinja chat template, when known (Magpie "auto")
    extra: dict[str, Any] = field(default_factory=dict)


class Model(ABC):
    """A text generation backend. Subclasses implement :meth:`generate` and :attr:`info`."""

    #: registry name, e.g. ``"llamacpp"``
    backend: str = ""

    @property
    @abstractmethod
    def info(self) -> ModelInfo:
        """Identity and capabilities."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load weights / open connections. Called once before the first request."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Free weights / close connections."""

    @abstractmethod
    async def generate(self, request: Request) -> list[Completion]:
        """Return ``request.n`` completions. Raise :class:`datamill.errors.ModelError` on failure."""

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` for this model; backends with a tokenizer override this."""
        return max(1, len(text) // 4) if text else 0

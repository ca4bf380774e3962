"""The model seam: one small async interface every backend implements.

A task builds a :class:`Request` (chat messages *or* a raw prompt, sampling parameters, ``n``,
stop strings, an optional JSON schema) and awaits ``model.generate(request)``, which returns
``request.n`` :class:`Completion` objects. A backend never sees a row and a task never sees a
backend: batching, retries and concurrency live behind ``generate``.

Deliberately not here: caching (``pipeline.cache``), failure records (``pipeline.runner``).
"""

from __future__ import annotations

import difflib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import ConfigError

Message = dict[str, str]
#: Why a completion ended. ``stop``: the model finished (end of text or a stop string);
#: ``length``: cut at ``max_tokens``; ``content_filter``: the provider withheld or cut the answer;
#: ``tool_calls``: the model asked to call a tool instead of answering; ``error``: the backend
#: failed mid-answer; ``other``: a reason this library does not know (never taken as finished).
FinishReason = Literal["stop", "length", "content_filter", "tool_calls", "error", "other"]
FINISH_REASONS: tuple[str, ...] = FinishReason.__args__  # type: ignore[attr-defined]

#: Backend spellings of each finish reason (OpenAI-compatible servers, vLLM, Anthropic-style
#: gateways). Anything not listed maps to ``other``.
_FINISH_ALIASES: dict[str, FinishReason] = {
    "stop": "stop",
    "eos": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "max_tokens": "length",
    "model_length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "tool_use": "tool_calls",
    "error": "error",
    "abort": "error",
}

#: The reasoning block a thinking model writes before its answer (DeepSeek-R1, Qwen3, ...).
THINK_TAGS = ("<think>", "</think>")

#: Request fields that sampling settings (recipe model settings, step options) may override.
SAMPLING_FIELDS = (
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "enable_thinking",
    "reasoning_effort",
)

#: Request fields added after the cache's key was fixed: left out of the key while unset
#: (``None``), so every request that sets none of them keeps the key it always had.
OPTIONAL_KEY_FIELDS = ("tools", "tool_choice", "enable_thinking", "reasoning_effort")

#: One tool call a model asked for: ``{"id", "name", "arguments"}`` (arguments: JSON text).
ToolCall = dict[str, str]


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
    #: tools the model may call: JSON schemas in OpenAI's function format
    #: (``{"type": "function", "function": {"name", "description", "parameters"}}``)
    tools: tuple[dict[str, Any], ...] | None = None
    #: ``"auto"``, ``"none"``, ``"required"`` or ``{"type": "function", "function": {"name"}}``
    tool_choice: str | dict[str, Any] | None = None
    #: the thinking switch of models that have one (``chat_template_kwargs.enable_thinking``)
    enable_thinking: bool | None = None
    #: OpenAI reasoning models' effort: ``"minimal"``, ``"low"``, ``"medium"``, ``"high"``
    reasoning_effort: str | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a Request needs exactly one of messages= or prompt=")
        if self.messages is not None and not isinstance(self.messages, tuple):
            object.__setattr__(self, "messages", tuple(dict(m) for m in self.messages))
        if not isinstance(self.stop, tuple):
            object.__setattr__(self, "stop", tuple(self.stop))
        if self.tools is not None and not isinstance(self.tools, tuple):
            object.__setattr__(self, "tools", tuple(self.tools))
        if self.tool_choice is not None and not self.tools:
            raise ValueError("tool_choice needs tools")
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
        for name in OPTIONAL_KEY_FIELDS:
            if data[name] is None:
                data.pop(name)
        return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def finish_reason_of(raw: str | None, missing: FinishReason = "stop") -> FinishReason:
    """Map a backend's finish reason to :data:`FinishReason`: known spellings explicitly,
    ``None``/empty to ``missing`` (servers that omit it), anything else to ``other``."""
    if not raw:
        return missing
    return _FINISH_ALIASES.get(str(raw).strip().lower(), "other")


@dataclass(frozen=True)
class Completion:
    """One sampled output of a request.

    ``text`` is what the model wrote. ``reasoning`` is its thinking: sent apart by the server
    (``reasoning_content``; then ``text`` is the answer already) or split off the front of
    ``text`` by :func:`split_reasoning` (then ``text`` is the answer alone); ``None`` when there
    was none or the text has not been split yet (backends and the cache hold raw text).
    ``tool_calls``: the calls the model asked for (finish ``tool_calls``), each a
    :data:`ToolCall`; empty when none.
    """

    text: str
    finish_reason: FinishReason = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    reasoning: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()


def split_reasoning(text: str, tags: tuple[str, str] = THINK_TAGS) -> tuple[str | None, str | None]:
    """Split a leading reasoning block off a model's text: ``(reasoning, answer)``.

    ``"<think>R</think> A"`` → ``("R", "A")`` (both stripped). A close tag with no open tag
    before it (chat templates that open the block inside the prompt) splits the same way. An
    open tag never closed (thinking cut off or never finished) → ``(R, None)``: no answer.
    Text without the tags → ``(None, text)`` unchanged. ``Task.check_completion`` applies it
    once per completion, after the cache (which keeps the raw text), so every parser and every
    written answer reads the answer only.
    """
    open_tag, close_tag = tags
    body = text.lstrip()
    if body.startswith(open_tag):
        end = body.find(close_tag, len(open_tag))
        if end < 0:
            return body[len(open_tag) :].strip(), None
        return body[len(open_tag) : end].strip(), body[end + len(close_tag) :].strip()
    end = text.find(close_tag)
    if end < 0 or open_tag in text[:end]:
        return None, text
    return text[:end].strip(), text[end + len(close_tag) :].strip()


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, declared by each backend class (``Model.CAPABILITIES``) and carried
    on its :class:`ModelInfo`. Every field is required: a backend states each one, and code
    decides by these fields, never by a backend's name.
    """

    local: bool  #: runs on this machine: its calls cost nothing (pricing, budgets, plan)
    gpu: bool  #: needs a GPU (a Ray worker reserves one for it)
    renders_chat: bool  #: applies the chat template itself (not a server); see :meth:`Model.render`
    raw_prompt: bool  #: can take ``Request.prompt`` untouched (Magpie)
    #: the structured-output forms it can honour for ``Request.json_schema`` (empty: none);
    #: ``json_schema`` is the generic "constrained to the schema" form
    structured: tuple[str, ...]
    n: bool  #: answers ``n`` samples in one call, reading (and billing) the prompt once
    embeddings: bool  #: has ``embed(texts)``
    tools: bool  #: can be asked to call tools
    reasoning: bool  #: returns a model's reasoning apart from its answer
    #: the option that sets its CPU threads (a Ray worker's share), or ``None``
    threads_option: str | None
    #: its spec's argument may name a local file or folder (``llamacpp:PATH.gguf``): a recipe's
    #: relative path there is found beside the recipe (``steps.paths``)
    local_files: bool


@dataclass
class ModelInfo:
    """What the runner and tasks may ask of a model without calling it.

    ``raw_prompt`` and ``json_schema`` are this model object's switches as configured (e.g. the
    ``openai`` option ``raw_prompt: false``); ``capabilities`` is what its backend declares.
    """

    name: str  #: short display name, e.g. ``smollm2-135m-instruct``
    identity: str  #: stable identity for the cache key (backend + weights + revision)
    max_concurrency: int = 8  #: requests the runner keeps in flight for this model
    raw_prompt: bool = True  #: accepts ``Request.prompt`` (needed by Magpie)
    json_schema: bool = False  #: honours ``Request.json_schema`` (constrained decoding)
    chat_template: str | None = None  #: Jinja chat template, when known (Magpie "auto")
    extra: dict[str, Any] = field(default_factory=dict)
    capabilities: Capabilities = field(kw_only=True)  #: the backend's declared capabilities


class BackendOptions(BaseModel):
    """A backend's options (``Model.Options`` subclasses this): typed, bounded, unknown keys
    refused. Field docstrings are the options' documentation."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, arbitrary_types_allowed=True, use_attribute_docstrings=True
    )


def options_problem(
    exc: ValidationError, fields: Iterable[str], label: str, values: Mapping[str, Any]
) -> ConfigError:
    """One line for the first problem of a validation: an unknown key (with the closest allowed
    one and the allowed list) or a bad value (what it should be, and the value given). The value
    of an unknown key is never shown (it may be a secret written in the wrong place)."""
    allowed = sorted(fields)
    err = exc.errors()[0]
    key = str(err["loc"][0]) if err["loc"] else "options"  # the option, not a union member
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return ConfigError(f"{label}: unknown option {key!r}{hint}; allowed: {', '.join(allowed)}")
    msg = " ".join(str(err["msg"]).split())
    msg = msg[len("Input ") :] if msg.startswith("Input ") else msg
    msg = msg[len("Value error, ") :] if msg.startswith("Value error, ") else msg
    if not err["loc"]:  # a rule across options (e.g. min <= max)
        return ConfigError(f"{label}: options {msg}")
    shown = f", got {values[key]!r}" if key in values else ""
    return ConfigError(f"{label}: option {key!r} {msg}{shown}")


class Model(ABC):
    """A text generation backend. Subclasses implement :meth:`generate` and :attr:`info`, declare
    :attr:`CAPABILITIES` (every field; their :class:`ModelInfo` carries them) and, when they take
    options, an :attr:`Options` model that their constructor validates (:meth:`parse_options`)."""

    #: registry name, e.g. ``"llamacpp"`` (for display and records; decisions use capabilities)
    backend: str = ""
    #: what the backend can do; every backend class declares its own
    CAPABILITIES: ClassVar[Capabilities]
    #: the backend's options (a :class:`BackendOptions` subclass)
    Options: ClassVar[type[BackendOptions]] = BackendOptions
    #: keys a spec's options may carry besides ``Options`` (taken by ``from_spec``, e.g. ``model``)
    SPEC_KEYS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def capabilities(cls) -> Capabilities:
        """The capabilities this backend class declares (no model object needed)."""
        return cls.CAPABILITIES

    @classmethod
    def parse_options(cls, options: Mapping[str, Any], label: str | None = None) -> Any:
        """``options`` validated as :attr:`Options`; one :class:`ConfigError` line otherwise,
        prefixed with ``label`` (default: the backend name)."""
        try:
            return cls.Options.model_validate(dict(options))
        except ValidationError as exc:
            fields = [*cls.Options.model_fields, *cls.SPEC_KEYS]
            raise options_problem(exc, fields, label or cls.backend, options) from None

    @classmethod
    def spec_endpoint(cls, arg: str | None) -> tuple[str | None, str | None]:
        """(served model name, base URL) a spec's argument names, for pricing without building
        the model. Default: the argument itself, no URL."""
        return arg, None

    def render(self, request: Request) -> str:
        """The text the backend decodes for ``request`` (backends that render chats themselves,
        ``Capabilities.renders_chat``, may override it; others cannot tell)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its rendered prompt")

    @property
    @abstractmethod
    def info(self) -> ModelInfo:
        """Identity and capabilities."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load weights / open connections. A run calls it once before its first request and
        :meth:`close` once after its last (``pipeline.assembly``), however many named models
        share this object."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Free weights / close connections."""

    @abstractmethod
    async def generate(self, request: Request) -> list[Completion]:
        """Return ``request.n`` completions. Raise :class:`datamill.errors.ModelError` on failure."""

    def run_facts(self) -> dict[str, Any]:
        """What this model learned during a run that ``run.json`` records under its name (e.g.
        the structured-output form a server accepted, retries by reason). Default: nothing."""
        return {}

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` for this model; backends with a tokenizer override this."""
        return max(1, len(text) // 4) if text else 0

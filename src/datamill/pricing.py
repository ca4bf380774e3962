"""What model calls cost: a price table in USD per million input (prompt) and output (completion)
tokens, used by ``datamill plan`` (forecast) and by budgets (``--max-cost``).

Where a price comes from, first match wins:

1. the user's table: ``--prices FILE``, else ``$DATAMILL_PRICES``, else
   ``~/.config/datamill/prices.yaml`` (``$XDG_CONFIG_HOME`` honoured), when it exists::

       # USD per million tokens
       gpt-4o-mini: {input: 0.15, output: 0.60}
       openai:my-finetune: {input: 1.0, output: 2.0}   # backend:name is matched before name
       "claude-3-5-*": {input: 3.0, output: 15.0}     # shell-style wildcards
       gpt-4.1: {input: 2.0, output: 8.0, batch_input: 1.0, batch_output: 4.0}  # batch API price
       my-org/my-model: {input: 0.2, output: 0.2, licence: apache-2.0}  # its outputs' licence
       local-llama: {licence: llama3.1}               # a licence alone (no price)

   (``licence`` is read for the card's provenance section: ``datamill.provenance``.)

2. local models cost 0: a backend that declares ``Capabilities.local`` (the embedded model,
   ``transformers``, ``vllm``, the ``fake`` model), and an OpenAI-compatible server on this
   machine (localhost, 127.0.0.1, ::1);
3. the built-in defaults below, for a few hosted API models;
4. otherwise the price is unknown (``None``): a forecast says so, and ``--max-cost`` refuses to
   start rather than guess.

The built-in prices are the providers' list prices as of early 2025; providers change them, so
set your own in the user file when it matters.

Through a provider's batch API (``batch: true``, ``--batch``) a price's ``batch_input``/
``batch_output`` apply, else :data:`BATCH_DISCOUNT` (half) of the online price.

Deliberately not here: counting tokens (the models do that) or enforcing caps (``pipeline.budget``).
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import yaml

from .errors import ConfigError

T = TypeVar("T")

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})


#: what a provider's batch API charges, as a share of its online price (OpenAI's and
#: Anthropic's batch APIs: half); a price's own ``batch_input``/``batch_output`` win over it
BATCH_DISCOUNT = 0.5


@dataclass(frozen=True)
class Price:
    """USD per million input (prompt) tokens and per million output (completion) tokens;
    ``batch_input``/``batch_output``: the same through the provider's batch API (``None``:
    :data:`BATCH_DISCOUNT` of the online price)."""

    input: float
    output: float
    batch_input: float | None = None
    batch_output: float | None = None

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float:
        """USD for this many tokens."""
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000

    def as_dict(self) -> dict[str, float]:
        """``{input, output}``, plus ``batch_input``/``batch_output`` when set (for JSON)."""
        data = {"input": self.input, "output": self.output}
        if self.batch_input is not None:
            data["batch_input"] = self.batch_input
        if self.batch_output is not None:
            data["batch_output"] = self.batch_output
        return data

    def batch(self) -> Price:
        """The price of the same tokens through the provider's batch API."""
        return Price(
            self.input * BATCH_DISCOUNT if self.batch_input is None else self.batch_input,
            self.output * BATCH_DISCOUNT if self.batch_output is None else self.batch_output,
        )


FREE = Price(0.0, 0.0)

#: list prices of a few hosted models, USD per million tokens (early 2025)
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "o3-mini": Price(1.10, 4.40),
    "claude-3-5-sonnet*": Price(3.00, 15.00),
    "claude-3-5-haiku*": Price(0.80, 4.00),
    # Anthropic list prices (https://docs.anthropic.com/en/docs/about-claude/pricing and the
    # batch table of .../build-with-claude/batch-processing, read 2025-11; check them there).
    # Patterns match the dated ids and the aliases (claude-sonnet-4-5, claude-opus-4-1...);
    # the more specific pattern comes first. Sonnet 4/4.5 prompts over 200K tokens cost more.
    "claude-opus-4-5*": Price(5.00, 25.00),  # check: newest, from the launch announcement
    "claude-opus-4*": Price(15.00, 75.00),  # Opus 4 and 4.1
    "claude-sonnet-4*": Price(3.00, 15.00),  # Sonnet 4 and 4.5
    "claude-3-7-sonnet*": Price(3.00, 15.00),
    "claude-haiku-4-5*": Price(1.00, 5.00),
    "claude-3-haiku*": Price(0.25, 1.25),
}


def default_prices_path() -> Path:
    """``$DATAMILL_PRICES`` or ``~/.config/datamill/prices.yaml``."""
    env = os.environ.get("DATAMILL_PRICES")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "datamill" / "prices.yaml"


_PRICE_KEYS = {"input", "output", "batch_input", "batch_output"}


def _parse_price(where: str, key: str, value: Any) -> Price:
    if (
        not isinstance(value, dict)
        or not {"input", "output"} <= set(value)
        or not set(value) <= _PRICE_KEYS
    ):
        raise ConfigError(
            f"{where}: price of {key!r} must be a mapping {{input: USD, output: USD}} per million "
            "tokens (optionally batch_input and batch_output: the batch API's price; licence: ID)"
        )
    try:
        batch = [
            None if value.get(k) is None else float(value[k])
            for k in ("batch_input", "batch_output")
        ]
        price = Price(float(value["input"]), float(value["output"]), *batch)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where}: price of {key!r}: input, output, batch_input and batch_output must be "
            "numbers (USD per million tokens)"
        ) from None
    if any(
        v is not None and v < 0
        for v in (price.input, price.output, price.batch_input, price.batch_output)
    ):
        raise ConfigError(f"{where}: price of {key!r} is negative")
    return price


class PriceTable:
    """User prices over the built-in ones; see the module docstring for the order of lookup."""

    def __init__(
        self,
        user: dict[str, Price] | None = None,
        defaults: dict[str, Price] | None = None,
        source: str | None = None,
    ) -> None:
        self.user = dict(user or {})
        self.defaults = dict(DEFAULT_PRICES if defaults is None else defaults)
        self.source = source  #: the user file the table was read from, if any
        self.licences: dict[str, str] = {}  #: model name (or pattern) → licence of its outputs

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        """Defaults plus the user's file (``path``, or the default location when it exists).

        A ``path`` given explicitly must exist; a bad file is one ``ConfigError`` line.
        """
        explicit = path is not None
        file = Path(path) if path is not None else default_prices_path()
        if not file.exists():
            if explicit or os.environ.get("DATAMILL_PRICES"):
                raise ConfigError(f"price file {file} does not exist")
            return cls()
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read price file {file}: {exc}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{file}:{mark.line + 1}" if mark else str(file)
            raise ConfigError(f"{where}: not valid YAML") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(
                f"{file}: a price file maps model names to {{input: USD, output: USD}} per million tokens"
            )
        user: dict[str, Price] = {}
        licences: dict[str, str] = {}
        for k, v in data.items():
            if isinstance(v, dict) and "licence" in v:
                v = dict(v)
                licences[str(k)] = str(v.pop("licence"))
                if not v:  # a licence alone
                    continue
            user[str(k)] = _parse_price(str(file), str(k), v)
        table = cls(user, source=str(file))
        table.licences = licences
        return table

    def _match(self, table: dict[str, T], names: list[str]) -> T | None:
        for name in names:
            if name in table:
                return table[name]
        for name in names:
            for pattern, price in table.items():
                if any(ch in pattern for ch in "*?[") and fnmatch.fnmatchcase(name, pattern):
                    return price
        return None

    def lookup(
        self,
        backend: str,
        name: str,
        base_url: str | None = None,
        *,
        local: bool | None = None,
        batch: bool = False,
    ) -> Price | None:
        """The price of model ``name`` served by ``backend`` (``None`` when unknown); through
        its provider's batch API with ``batch`` (:meth:`Price.batch`).

        ``local``: the model runs on this machine (``Capabilities.local``); ``None``: what the
        registered backend ``backend`` declares (not local when no backend has that name)."""
        price = self._lookup(backend, name, base_url, local)
        return price.batch() if batch and price is not None else price

    def _lookup(
        self, backend: str, name: str, base_url: str | None, local: bool | None
    ) -> Price | None:
        names = _names(backend, name)
        found = self._match(self.user, names)
        if found is not None:
            return found
        if local is None:
            local = _declared_local(backend)
        if local:
            return FREE
        if base_url and (urlparse(base_url).hostname or "") in LOCAL_HOSTS:
            return FREE
        return self._match(self.defaults, names)

    def licence(self, backend: str, name: str) -> str | None:
        """The licence the user's table gives model ``name`` of ``backend`` (``None``: none)."""
        return self._match(self.licences, _names(backend, name))

    def for_model(self, model: Any, *, batch: bool = False) -> Price | None:
        """The price of a :class:`~datamill.models.base.Model` object (free when its
        capabilities say it is local); the batch price when it calls its provider's batch API
        (``ModelInfo.extra["batch"]``, set by ``pipeline.batch.BatchModel``) or ``batch``."""
        extra = model.info.extra if isinstance(model.info.extra, dict) else {}
        name = getattr(model, "model", None) or model.info.name
        base_url = extra.get("base_url")
        local = model.info.capabilities.local
        batched = batch or bool(extra.get("batch"))
        return self.lookup(model.backend, str(name), base_url, local=local, batch=batched)

    def for_spec(self, spec: str) -> Price | None:
        """The price of a model spec (``llamacpp``, ``openai:MODEL@URL``…) without building it:
        the backend class says whether it is local and which name and URL the spec serves."""
        from .models.registry import parse_spec, spec_class

        backend, arg = parse_spec(spec)
        cls = spec_class(spec)
        name, url = cls.spec_endpoint(arg)
        return self.lookup(backend, name or backend, url, local=cls.capabilities().local)


def _names(backend: str, name: str) -> list[str]:
    """The names a model is looked up by, most specific first."""
    names = [f"{backend}:{name}", name]
    if "/" in name:  # provider/model (OpenRouter, HF ids): try the model part too
        names.append(name.rsplit("/", 1)[1])
    return names


def _declared_local(backend: str) -> bool:
    """Whether the backend registered as ``backend`` declares itself local (False if none is)."""
    from .errors import MissingDependency
    from .models.registry import BACKENDS, backend_class

    if backend not in BACKENDS:
        return False
    try:
        return backend_class(backend).capabilities().local
    except MissingDependency:
        return False


def format_cost(value: float | None) -> str:
    """``$0``, ``$0.0123``, ``$12.34``, or ``unknown``."""
    if value is None:
        return "unknown"
    if value == 0:
        return "$0"
    if value < 1:
        return f"${value:.4f}"
    return f"${value:,.2f}"

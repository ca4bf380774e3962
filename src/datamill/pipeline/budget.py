"""Budgets: caps on a run's tokens, cost and wall time, checked before every model call.

``Budget(max_cost=..., max_total_tokens=..., deadline=...)`` implements the runner's ``Budget`` hook.
The runner asks ``before_call`` right before a call is sent (cache hits never reach it, so a
resumed run spends nothing on work already done) and reports the call's completions to
``after_call``. When a call *would* cross a cap, ``before_call`` raises
:class:`~datamill.errors.BudgetExceeded`: the runner stops sending calls, lets the calls already
on their way finish (they land in the cache), writes the rows that went through every step and
marks ``run.json`` ``complete: false`` with ``stopped_by``. The same command resumes the run.

How a call is estimated before it is sent:

- prompt tokens: counted with the model's own tokenizer (``Model.count_tokens``) on the prompt,
  or on the chat as the model sees it (the backend's ``render(request)`` when it has one, else
  the messages rendered with the model's chat template, else their contents);
- completion tokens: ``max_tokens × n`` (the worst case) until three calls to the same model
  with the same ``max_tokens`` have returned; from then on the mean completion those calls
  actually wrote (never above ``max_tokens``), times ``n``;
- cost: those tokens at the model's price (``datamill.pricing``); local models cost 0.

Tokens and cost already used count as reported by the backend; calls in flight count at their
estimate until they return. So a cap holds exactly while completions are no longer than their
estimate: the first calls of each kind are estimated at the worst case, later ones at what the
model has been writing. The deadline is wall clock from the moment the budget is made: no call
starts once it has passed, nor one that the mean duration of this model's calls says would end
after it. A step that runs long without calling a model is not interrupted.

Once one cap stops a call, every later call is refused too (a stop is final for the run).

Deliberately not here: what happens to rows on a stop (``pipeline.runner``), price data
(``datamill.pricing``).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ..errors import BudgetExceeded, ConfigError
from ..models.base import Completion, Model, Request
from ..pricing import Price, PriceTable, format_cost

if TYPE_CHECKING:
    from .runner import ModelHandle

#: completions of a (model, max_tokens) kind that must return before their mean replaces max_tokens
LEARN_AFTER = 3

_DURATION = re.compile(
    r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$"
)


def parse_duration(text: str | float | int) -> float:
    """``90``, ``90s``, ``10m``, ``1h30m``, ``1.5h`` → seconds. Anything else is a ``ConfigError``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        raw = str(text).strip().lower().replace(" ", "")
        try:
            seconds = float(raw)
        except ValueError:
            match = _DURATION.match(raw)
            if not raw or match is None or not any(match.groupdict().values()):
                raise ConfigError(
                    f"--deadline {text!r} is not a duration: use e.g. 90s, 10m, 1h30m"
                ) from None
            parts = match.groupdict()
            seconds = sum(
                float(parts[u] or 0) * mult for u, mult in (("h", 3600), ("m", 60), ("s", 1))
            )
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"--deadline must be a positive duration, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


@lru_cache(maxsize=16)
def _chat_template(source: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


def render_chat(template: str | None, messages: tuple[dict[str, str], ...]) -> str | None:
    """The chat messages as the model sees them, or ``None`` when the template is unknown/broken."""
    if not template:
        return None
    try:
        return str(
            _chat_template(template).render(
                messages=list(messages), add_generation_prompt=True, bos_token="", eos_token=""
            )
        )
    except Exception:  # a template we cannot render: fall back to counting the contents
        return None


def prompt_tokens(model: Model, request: Request) -> int:
    """Prompt tokens of ``request`` counted with ``model``'s tokenizer (and chat template)."""
    if request.prompt is not None:
        return model.count_tokens(request.prompt)
    if model.info.capabilities.renders_chat:  # the backend renders its chats itself (llamacpp)
        try:
            return model.count_tokens(model.render(request))
        except Exception:  # no template after all, or it cannot tell: count as below
            pass
    messages = request.messages or ()
    rendered = render_chat(model.info.chat_template, messages)
    if rendered is not None:
        return model.count_tokens(rendered)
    return sum(model.count_tokens(m.get("content", "")) for m in messages) + 4 * len(messages)


@dataclass
class Usage:
    """What the calls to one named model used."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": None if self.cost is None else round(self.cost, 6),
        }


@dataclass
class _Reservation:
    tokens: int
    cost: float
    started: float
    kind: tuple[str, int]


@dataclass
class _Learned:
    count: int = 0
    total: int = 0
    seconds: list[float] = field(default_factory=list)


class Budget:
    """Caps on a run: ``max_cost`` (USD), ``max_total_tokens`` (prompt + completion tokens of
    the whole run; not a step's per-answer ``max_tokens``), ``deadline``.

    ``max_tokens`` is the old, deprecated name of ``max_total_tokens`` (still accepted, with a
    ``DeprecationWarning``). Each cap is optional; a budget without caps only keeps accounts (tokens and cost per
    model), which end up in ``run.json``. ``prices`` defaults to :meth:`PriceTable.load`.

    >>> from datamill import Budget
    >>> budget = Budget(max_total_tokens=50_000, deadline="10m")
    >>> # pipeline.run("out", budget=budget); result.stopped says which cap stopped it, if any
    """

    def __init__(
        self,
        *,
        max_cost: float | None = None,
        max_total_tokens: int | None = None,
        deadline: float | str | None = None,
        prices: PriceTable | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_tokens: int | None = None,
    ) -> None:
        if max_tokens is not None:
            if max_total_tokens is not None:
                raise ConfigError("give max_total_tokens only (max_tokens is its old name)")
            warnings.warn(
                "Budget(max_tokens=...) is deprecated: it caps the whole run's tokens; "
                "use Budget(max_total_tokens=...)",
                DeprecationWarning,
                stacklevel=2,
            )
            max_total_tokens = max_tokens
        if max_cost is not None and (not math.isfinite(max_cost) or max_cost < 0):
            raise ConfigError(f"--max-cost must be 0 or more US dollars, got {max_cost!r}")
        if max_total_tokens is not None and max_total_tokens < 1:
            raise ConfigError(f"--max-total-tokens must be at least 1, got {max_total_tokens!r}")
        self.max_cost = max_cost
        self.max_total_tokens = max_total_tokens
        self.deadline = parse_duration(deadline) if deadline is not None else None
        self.prices = prices if prices is not None else PriceTable.load()
        self.clock = clock
        self.started = clock()
        self.usage: dict[str, Usage] = {}
        self.stopped_by: str | None = (
            None  #: "max_cost" | "max_total_tokens" | "deadline" | "price unknown"
        )
        self.message: str | None = None
        self.first_call_at: float | None = None
        self.last_call_end: float | None = None
        self._pending: dict[Any, list[_Reservation]] = {}
        self._learned: dict[tuple[str, int], _Learned] = {}
        self._prices: dict[str, Price | None] = {}

    # -- accounting ------------------------------------------------------------------------
    @property
    def tokens(self) -> int:
        return sum(u.prompt_tokens + u.completion_tokens for u in self.usage.values())

    @property
    def cost(self) -> float | None:
        """USD spent so far; ``None`` when a model without a known price was called."""
        costs = [u.cost for u in self.usage.values()]
        return None if any(c is None for c in costs) else sum(c for c in costs if c is not None)

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    def _price(self, handle: ModelHandle) -> Price | None:
        identity = handle.model.info.identity
        if identity not in self._prices:
            self._prices[identity] = self.prices.for_model(handle.model)
        return self._prices[identity]

    def _reserved(self) -> tuple[int, float]:
        items = [r for stack in self._pending.values() for r in stack]
        return sum(r.tokens for r in items), sum(r.cost for r in items)

    @staticmethod
    def _task_key() -> Any:
        try:
            return asyncio.current_task()
        except RuntimeError:  # no running loop (called from plain code, e.g. tests)
            return None

    def completion_estimate(self, model: Model, request: Request) -> int:
        """Expected completion tokens of ``request`` (see the module docstring)."""
        learned = self._learned.get((model.info.identity, request.max_tokens))
        if learned is not None and learned.count >= LEARN_AFTER:
            per_sample = min(request.max_tokens, math.ceil(learned.total / learned.count))
        else:
            per_sample = request.max_tokens
        return per_sample * request.n

    # -- the runner's hook -----------------------------------------------------------------
    def _stop(self, cap: str, message: str) -> BudgetExceeded:
        self.stopped_by = cap
        self.message = message
        return BudgetExceeded(message)

    def before_call(self, handle: ModelHandle, request: Request) -> None:
        """Refuse (raise ``BudgetExceeded``) a call that would cross a cap; else reserve it."""
        if self.message is not None:
            raise BudgetExceeded(self.message)
        now = self.clock()
        kind = (handle.model.info.identity, request.max_tokens)
        if self.deadline is not None:
            elapsed = now - self.started
            learned = self._learned.get(kind)
            expected = (
                sum(learned.seconds) / len(learned.seconds)
                if learned and len(learned.seconds) >= LEARN_AFTER
                else 0.0
            )
            if elapsed >= self.deadline or elapsed + expected > self.deadline:
                detail = f"{format_duration(elapsed)} elapsed" + (
                    f", a call takes about {format_duration(expected)}" if expected else ""
                )
                raise self._stop(
                    "deadline", f"--deadline {format_duration(self.deadline)} reached ({detail})"
                )
        tokens = 0
        cost = 0.0
        price = self._price(handle) if self.max_cost is not None else None
        if self.max_cost is not None and price is None:
            raise self._stop(
                "price unknown",
                f"--max-cost cannot be checked: no price is known for model {handle.model.info.name!r}; "
                "add it to ~/.config/datamill/prices.yaml or pass --prices FILE",
            )
        if self.max_total_tokens is not None or self.max_cost is not None:
            completion = self.completion_estimate(handle.model, request)
            prompt = prompt_tokens(handle.model, request) * (
                1 if _shares_prompt(handle) else request.n
            )
            tokens = prompt + completion
            cost = price.cost(prompt, completion) if price is not None else 0.0
            reserved_tokens, reserved_cost = self._reserved()
            cap = self.max_total_tokens
            if cap is not None and self.tokens + reserved_tokens + tokens > cap:
                if self.tokens + reserved_tokens == 0:
                    message = f"--max-total-tokens {cap} is below one call's estimate ({tokens} tokens): raise the cap"
                else:
                    message = (
                        f"--max-total-tokens {cap} would be crossed: {self.tokens} used, {reserved_tokens} "
                        f"reserved by calls in flight, the next call needs up to {tokens}"
                    )
                raise self._stop("max_total_tokens", message)
            spent = self.cost or 0.0
            if self.max_cost is not None and spent + reserved_cost + cost > self.max_cost:
                raise self._stop(
                    "max_cost",
                    f"--max-cost {format_cost(self.max_cost)} would be crossed: {format_cost(spent)} spent, "
                    f"{format_cost(reserved_cost)} reserved by calls in flight, the next call costs up to {format_cost(cost)}",
                )
        if self.first_call_at is None:
            self.first_call_at = now
        self._pending.setdefault(self._task_key(), []).append(_Reservation(tokens, cost, now, kind))

    def after_call(self, handle: ModelHandle, completions: list[Completion]) -> None:
        """Account a returned call; an empty list releases the reservation of a failed call."""
        now = self.clock()
        self.last_call_end = now
        key = self._task_key()
        stack = self._pending.get(key)
        reservation = stack.pop() if stack else None
        if stack is not None and not stack:
            del self._pending[key]
        if not completions:
            return
        usage = self.usage.setdefault(handle.name, Usage())
        prompt = sum(c.prompt_tokens for c in completions)
        completion = sum(c.completion_tokens for c in completions)
        usage.calls += 1
        usage.prompt_tokens += prompt
        usage.completion_tokens += completion
        price = self._price(handle)
        if price is None:
            usage.cost = None
        elif usage.cost is not None:
            usage.cost += price.cost(prompt, completion)
        if reservation is not None:
            learned = self._learned.setdefault(reservation.kind, _Learned())
            learned.count += len(completions)
            learned.total += completion
            learned.seconds.append(now - reservation.started)

    # -- reporting -------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        """The budget's caps, what was used and what stopped the run (``run.json["budget"]``)."""
        cost = self.cost
        return {
            "caps": {
                "max_cost_usd": self.max_cost,
                "max_total_tokens": self.max_total_tokens,
                "deadline_s": self.deadline,
            },
            "used": {
                "calls": sum(u.calls for u in self.usage.values()),
                "tokens": self.tokens,
                "cost_usd": None if cost is None else round(cost, 6),
                "seconds": round(self.elapsed, 3),
                "by_model": {name: u.as_dict() for name, u in self.usage.items()},
            },
            "stopped_by": self.stopped_by,
            "message": self.message,
            "estimate": "prompt tokens counted with the model's tokenizer; completion tokens at max_tokens x n "
            f"until {LEARN_AFTER} calls of the same model and max_tokens returned, then their mean",
        }


def _shares_prompt(handle: ModelHandle) -> bool:
    """Whether the backend bills a prompt once for ``n`` samples (``Capabilities.n``, e.g. HTTP
    ``n=``), not once per sample."""
    return handle.model.info.capabilities.n


__all__ = ["Budget", "Usage", "format_duration", "parse_duration", "prompt_tokens", "render_chat"]

"""Tasks: steps that ask a model. A task turns a row into request(s) and the completions back
into columns; it never knows which backend answers.

Subclasses implement :meth:`Task.requests` and :meth:`Task.parse` (one round of calls), or
override :meth:`Task.process` for techniques that need several dependent calls (Magpie, evolution).
Unparsable output raises :class:`~datamill.errors.ParseError`; the runner records it with the
raw text. Prompts live in ``tasks/templates/*.jinja2`` beside the code.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal

import jinja2
from pydantic import Field

from ..errors import ParseError
from ..models.base import Completion, Request, split_reasoning
from ..rows import Row, row_seed
from ..steps.base import Context, Step

TEMPLATES = Path(__file__).parent / "templates"
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=False,
    autoescape=False,
)


@cache
def template(name: str) -> jinja2.Template:
    """A prompt template from ``tasks/templates``."""
    return _ENV.get_template(name)


@lru_cache(maxsize=256)
def _compiled(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


def render_string(source: str, **values: Any) -> str:
    """Render an inline template (e.g. a user's ``template:`` parameter); compiled once."""
    return _compiled(source).render(**values)


@lru_cache(maxsize=256)
def _variables(source: str) -> frozenset[str]:
    from jinja2 import meta

    return frozenset(meta.find_undeclared_variables(_ENV.parse(source)))


def template_variables(source: str) -> set[str]:
    """Names an inline template reads (to check columns before any call)."""
    return set(_variables(source))


class Task(Step):
    """A step that calls a model.

    Sampling has one precedence, applied in one place (the runner's ``ModelHandle.prepare``):
    the task's :attr:`defaults` < the model's settings (``models.NAME.max_tokens``) < the step's
    options (``max_tokens`` on the step; a task making several kinds of call may also have
    per-call options, e.g. Magpie's ``response_max_tokens``, which beat the step-wide ones)
    < the command line (``--set``, which edits the recipe). Fields left ``None`` set nothing.
    """

    model: str = "default"
    temperature: float | None = Field(default=None, ge=0, le=5)
    max_tokens: int | None = Field(default=None, ge=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    truncated: Literal["drop", "keep"] = "drop"

    #: the sampling this task's requests start from, per kind of call (declared once per task;
    #: the lowest precedence: model settings and step options beat it)
    defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    def models(self) -> list[str]:
        return [self.model]

    def contract_error(self) -> str | None:
        cls = type(self)
        if cls.process is not Task.process:
            return None
        missing = [m for m in ("requests", "parse") if getattr(cls, m) is getattr(Task, m)]
        if missing:
            return (
                f"{cls.__name__} implements neither requests(row, ctx) + parse(completions, row) "
                f"nor process(row, ctx) (missing: {', '.join(missing)})"
            )
        return None

    def sampling(self) -> dict[str, Any]:
        """Sampling options set explicitly on this step, for every call it makes."""
        return _given(temperature=self.temperature, max_tokens=self.max_tokens, top_p=self.top_p)

    def request_defaults(self, kind: str) -> dict[str, Any]:
        """The :attr:`defaults` of one kind of call (a copy; ``KeyError`` names a kind not declared)."""
        return dict(self.defaults[kind])

    def requests(self, row: Row, ctx: Context) -> list[Request]:
        raise NotImplementedError

    def parse(self, completions: list[list[Completion]], row: Row) -> Row | list[Row]:
        raise NotImplementedError

    async def call(
        self,
        ctx: Context,
        request: Request,
        salt: str = "",
        model: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> list[Completion]:
        """Send one request (built with the task's defaults) through the cache, with this row's
        seed. The step's options, then ``options`` (this kind of call's own, ``None`` values
        ignored), go along as overrides; the runner applies model settings under them, once."""
        if request.seed is None:
            request = request.with_options(seed=self.row_seed(ctx, salt))
        overrides = {**self.sampling(), **_given(**(options or {}))}
        completions = await ctx.generate(model or self.model, request, overrides)
        return [self.check_completion(c) for c in completions]

    def row_seed(self, ctx: Context, salt: str = "") -> int:
        """This row's seed for one use (``salt``) in this step: from the step's ``seed`` (else
        the pipeline's), the row key and the step's :attr:`identity` (not its position)."""
        return row_seed(
            self.seed if self.seed is not None else ctx.seed, ctx.key, self.identity + salt
        )

    def check_completion(self, completion: Completion) -> Completion:
        """The answer a task may read from one raw completion, or :class:`ParseError`.

        Every completion a task reads passes here once, after the cache (which keeps the raw
        text): a leading ``<think>…</think>`` block is split off into ``reasoning`` (kept on the
        returned completion, not written to any column), and the text becomes the answer alone.
        Refused, each with its own failure reason: ``content filtered`` (the provider withheld or
        cut the answer), ``tool call instead of an answer`` (no task asks for tools: ``Request``
        carries none), ``model error``, ``unknown finish reason``, ``reasoning not finished`` (a
        thinking block never closed), ``truncated at max_tokens`` (unless ``truncated: keep``),
        and ``empty completion``.
        """
        raw = completion.text
        finish = completion.finish_reason
        if finish == "content_filter":
            raise ParseError("content filtered", raw)
        if finish == "tool_calls":
            raise ParseError("tool call instead of an answer", raw)
        if finish == "error":
            raise ParseError("model error", raw)
        if finish not in ("stop", "length"):
            raise ParseError("unknown finish reason", f"finish_reason {finish!r}: {raw}")
        reasoning, answer = split_reasoning(raw)
        if answer is None:
            raise ParseError("reasoning not finished", raw)
        if finish == "length" and self.truncated == "drop":
            raise ParseError("truncated at max_tokens", raw)
        if not answer.strip():
            raise ParseError("empty completion", raw)
        if reasoning is None:
            return completion
        return replace(completion, text=answer, reasoning=reasoning)

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        requests = self.requests(row, ctx)
        results = await asyncio.gather(
            *(self.call(ctx, r, salt=f"#{i}") for i, r in enumerate(requests))
        )
        parsed = self.parse(list(results), row)
        if isinstance(parsed, dict):
            return [{**row, **parsed}]
        return [{**row, **p} for p in parsed]


def _given(**options: Any) -> dict[str, Any]:
    """The options that are set (not ``None``)."""
    return {k: v for k, v in options.items() if v is not None}

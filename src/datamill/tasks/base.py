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
from typing import Any, Literal

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
    """A step that calls a model. Sampling fields left ``None`` keep the task's own defaults."""

    model: str = "default"
    temperature: float | None = Field(default=None, ge=0, le=5)
    max_tokens: int | None = Field(default=None, ge=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    truncated: Literal["drop", "keep"] = "drop"

    def models(self) -> list[str]:
        return [self.model]

    def sampling(self) -> dict[str, Any]:
        """Sampling options set explicitly on this step (they beat model settings)."""
        return {
            k: v
            for k, v in {
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
                "top_p": self.top_p,
            }.items()
            if v is not None
        }

    def requests(self, row: Row, ctx: Context) -> list[Request]:
        raise NotImplementedError

    def parse(self, completions: list[list[Completion]], row: Row) -> Row | list[Row]:
        raise NotImplementedError

    async def call(
        self, ctx: Context, request: Request, salt: str = "", model: str | None = None
    ) -> list[Completion]:
        """Send one request through the cache, with this row's seed and this step's options."""
        if request.seed is None:
            request = request.with_options(
                seed=row_seed(
                    self.seed if self.seed is not None else ctx.seed, ctx.key, self.label + salt
                )
            )
        completions = await ctx.generate(
            model or self.model, request.with_options(**self.sampling())
        )
        return [self.check_completion(c) for c in completions]

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

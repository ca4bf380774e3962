"""What the steps that rewrite a response share (``evol_quality``, ``critique``).

:class:`RewriteTask` holds their common settings — which columns hold the instruction and the
response, or which entry of a response pool (``pool: true``) is rewritten — and the three
things both do the same way: read the texts (:func:`rewrite_source`), make one rewrite call
whose answer must not be empty (:meth:`RewriteTask.rewrite`), and label a rewrite and append
it to the pool (:meth:`RewriteTask.rewrite_label`, :meth:`RewriteTask.join_pool`).

Deliberately not here: the prompts and what is asked (each technique's own module).
"""

from __future__ import annotations

import re

from ..errors import Dropped, ParseError
from ..models.base import Request
from ..rows import Path, Row
from ..steps.base import Context
from .base import Task
from .response_pool import extend_pool, model_label, pool_of

_LEADING_LABEL = re.compile(
    r"^\s*(?:#+\s*)?\**\s*(?:improved|rewritten|revised|new|better)\s+(?:answer|response|version)\s*#?\s*\**\s*:\s*\**\s*",
    re.IGNORECASE,
)


def clean_rewrite(text: str) -> str:
    """The rewrite without a leading "Improved answer:"-style label, stripped."""
    return _LEADING_LABEL.sub("", text.strip(), count=1).strip()


def rewrite_source(
    row: Row,
    *,
    instruction: str,
    response: str,
    pool: bool,
    pool_index: int,
    generations: str,
    generation_models: str,
) -> tuple[str, str]:
    """``(instruction, response to rewrite)`` of a row, for the steps that rewrite a response
    (``evol_quality``, ``critique``): the response is column ``response``, or with ``pool`` entry
    ``pool_index`` of the pool. ``Dropped`` when either text is empty or the pool is too small."""
    asked = row[instruction]
    if not isinstance(asked, str) or not asked.strip():
        raise Dropped("empty instruction", f"column {instruction!r} is empty or not text")
    if pool:
        texts, _ = pool_of(row, generations, generation_models)
        if not -len(texts) <= pool_index < len(texts):
            raise Dropped(
                "pool too small",
                f"pool_index {pool_index} but the pool holds {len(texts)} responses",
            )
        return asked, texts[pool_index]
    value = row[response]
    if not isinstance(value, str) or not value.strip():
        raise Dropped("empty response", f"column {response!r} is empty or not text")
    return asked, value


class RewriteTask(Task):
    """A task that rewrites ``response`` (or pool entry ``pool_index``) given ``instruction``."""

    instruction: str = "instruction"
    response: str = "response"
    pool: bool = False
    pool_index: int = 0
    generations: str = "generations"
    generation_models: str = "generation_models"

    def required_columns(self) -> list[str]:
        return [self.instruction, self.generations if self.pool else self.response]

    def text_paths(self) -> list[Path]:
        paths: list[Path] = [(self.instruction,)]
        return paths if self.pool else [*paths, (self.response,)]

    def pool_columns(self) -> list[str]:
        """The pool's columns when the rewrite joins the pool, else none."""
        return [self.generations, self.generation_models] if self.pool else []

    def updates(self) -> list[str]:
        # with ``pool`` the rewrite joins the pool: both pool columns grow in place
        return self.required_columns() + self.pool_columns()

    def source(self, row: Row) -> tuple[str, str]:
        """``(instruction, response to rewrite)``: see :func:`rewrite_source`."""
        return rewrite_source(
            row,
            instruction=self.instruction,
            response=self.response,
            pool=self.pool,
            pool_index=self.pool_index,
            generations=self.generations,
            generation_models=self.generation_models,
        )

    async def rewrite(self, ctx: Context, request: Request, salt: str) -> str:
        """One rewrite call: the answer without a leading label; :class:`ParseError` when empty."""
        completion = (await self.call(ctx, request, salt=salt))[0]
        text = clean_rewrite(completion.text)
        if not text:
            raise ParseError("empty rewrite", completion.text)
        return text

    def rewrite_label(self, row: Row, ctx: Context, what: str) -> str:
        """The rewriting model's label; with ``pool`` also ``"<what> of #i"`` (the entry)."""
        note = f"{what} of #{self.pool_index % len(row[self.generations]) + 1}" if self.pool else ""
        return model_label(self.model, ctx.model_info(self.model), note)

    def join_pool(self, row: Row, added: list[str], label: str) -> Row:
        """The pool columns with ``added`` rewrites appended under ``label``."""
        return extend_pool(
            row, self.generations, self.generation_models, added, [label] * len(added)
        )


__all__ = ["RewriteTask", "clean_rewrite", "rewrite_source"]

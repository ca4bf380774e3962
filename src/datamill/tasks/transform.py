"""Text tasks in the SmolTalk mould (Allal et al. 2025, arXiv:2502.02737): a text in, a new
version of it out.

- :class:`RewriteText` (``rewrite_text``): the text rewritten ``target`` (a template: "for
  {{ audience }}", "as {{ persona }} would write it") → ``rewrite``.
- :class:`Summarize` (``summarize``): the text → ``summary`` in ``length``.

Each writes ``instruction`` (the request as the model saw it: the SFT row's user message) and
reads the text from column ``text`` (seed texts), or, with ``write`` (a template: "Write a
short {{ genre }} about {{ topic }}."), first asks the model for it and stores it in ``text``.
Their own checks (:class:`ParseError`, the raw answer kept): a generated text under
``min_text_words`` (one cut at ``max_tokens``, or ``write_max_tokens``, is first trimmed to its
last full sentence); a summary not shorter than ``max_ratio`` of its text or identical to it; a
rewrite identical to its text, barely changed (``difflib`` ratio ≥ ``max_similarity``) or more
than three times as long. A seed text under ``min_text_words`` is dropped (``text too short``).

Deliberately not here: multi-turn chats (``tasks.chat``).
"""

from __future__ import annotations

import difflib
import re
from typing import Any, ClassVar

from pydantic import Field, model_validator

from ..errors import Dropped, ParseError
from ..models.base import Request
from ..rows import Path, Row, is_missing
from ..steps.base import Context
from ..steps.dedup import normalize_text
from .base import TemplateTask, check_template, render_row, template

_LABEL = re.compile(
    r"^\s*(?:#+\s*)?\**\s*(?:(?:here\s+is|here's)\s+(?:the\s+|a\s+|my\s+)?)?"
    r"(?:rewritten\s+(?:text|version)|rewrite|summary|text)\s*\**\s*:\s*\**\s*",
    re.IGNORECASE,
)


_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*(?=\s|$)")


def full_sentences(text: str) -> str:
    """``text`` up to the end of its last full sentence ('' when it has none)."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]].strip() if ends else ""


def clean_answer(text: str) -> str:
    """An answer without a leading "Summary:" / "Here is the rewritten text:" label, stripped."""
    return _LABEL.sub("", text.strip(), count=1).strip()


class TextTask(TemplateTask):
    """What rewrite and summarize share: the text (from ``text`` or written from ``write``),
    one call on it, and the checks of :meth:`check`."""

    text: str = "text"
    #: a template: when set, the model first writes the text from it (stored in ``text``)
    write: str | None = None
    min_text_words: int = Field(default=20, ge=1)
    #: max_tokens of the call that writes the text (default: the step's)
    write_max_tokens: int | None = Field(default=None, ge=1)
    #: a column for the request as the model saw it (the SFT row's user message); none: not kept
    instruction: str | None = "instruction"
    defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "write": {"max_tokens": 256, "temperature": 0.9},
        "task": {"max_tokens": 384, "temperature": 0.7},
    }

    @model_validator(mode="after")
    def _check_templates(self) -> TextTask:
        for source, where in self._templates():
            check_template(source, f"{self.kind} {where}")
        return self

    def _templates(self) -> list[tuple[str, str]]:
        return [(self.write, "write")] if self.write is not None else []

    def required_columns(self) -> list[str]:
        own = super().required_columns()
        return own if self.write is not None else sorted({*own, self.text})

    def text_paths(self) -> list[Path]:
        own = super().text_paths()
        return own if self.write is not None else [*own, (self.text,)]

    def produces(self) -> list[str]:
        written = [self.text] if self.write is not None else []
        return [self.output_column(), *written, *([self.instruction] if self.instruction else [])]

    def output_column(self) -> str:
        raise NotImplementedError

    def prompt(self, text: str, row: Row) -> str:
        raise NotImplementedError

    def check(self, answer: str, text: str, raw: str) -> str:
        raise NotImplementedError

    async def source_text(self, row: Row, ctx: Context) -> str:
        """The seed text of the row, or the one the model writes from ``write``."""
        if self.write is None:
            value = row[self.text]
            if is_missing(value) or not isinstance(value, str):
                raise Dropped("empty text", f"column {self.text!r} is empty or not text")
            if len(value.split()) < self.min_text_words:
                raise Dropped("text too short", f"under {self.min_text_words} words")
            return value
        asked = render_row(self.write, row, self.label).strip()
        if not asked:
            raise Dropped("empty prompt", f"write template {self.write!r} rendered to nothing")
        request = Request.chat(asked, **self.request_defaults("write"))
        options = {"max_tokens": self.write_max_tokens}
        completion = (await self.call(ctx, request, "write", options=options, keep_cut=True))[0]
        text = clean_answer(completion.text)
        if completion.finish_reason == "length":  # cut at max_tokens: keep the full sentences
            text = full_sentences(text)
        if len(text.split()) < self.min_text_words:
            raise ParseError(
                f"written text too short (< {self.min_text_words} words)", completion.text
            )
        return text

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        text = await self.source_text(row, ctx)
        prompt = self.prompt(text, row)
        completion = (
            await self.call(ctx, Request.chat(prompt, **self.request_defaults("task")), "task")
        )[0]
        out = {
            self.output_column(): self.check(clean_answer(completion.text), text, completion.text)
        }
        if self.write is not None:
            out[self.text] = text
        if self.instruction:
            out[self.instruction] = prompt
        return [{**row, **out}]


class RewriteText(TextTask):
    """``text`` → ``output``: the text rewritten ``target`` (smol-rewrite)."""

    kind: ClassVar[str] = "rewrite_text"
    #: how to rewrite it: a template over the row, read after "Rewrite the text above …"
    target: str = "in a {{ style }} style"
    output: str = "rewrite"
    #: a rewrite this close to its text (``difflib`` ratio, 0-1) has barely changed: refused
    max_similarity: float = Field(default=0.95, gt=0, le=1)

    def _templates(self) -> list[tuple[str, str]]:
        return [*super()._templates(), (self.target, "target")]

    def output_column(self) -> str:
        return self.output

    def prompt(self, text: str, row: Row) -> str:
        target = render_row(self.target, row, self.label).strip()
        return template("rewrite-text.jinja2").render(text=text, target=target).strip()

    def check(self, answer: str, text: str, raw: str) -> str:
        if not answer:
            raise ParseError("empty rewrite", raw)
        a, t = normalize_text(answer), normalize_text(text)
        if a == t:
            raise ParseError("rewrite identical to the text", raw)
        if difflib.SequenceMatcher(None, a, t, autojunk=False).ratio() >= self.max_similarity:
            raise ParseError("rewrite barely changed", raw)
        if len(answer.split()) > 3 * len(text.split()) + 20:
            raise ParseError("rewrite over 3x its text", raw)
        return answer


class Summarize(TextTask):
    """``text`` → ``output``: a summary in ``length``, shorter than ``max_ratio`` of the text."""

    kind: ClassVar[str] = "summarize"
    output: str = "summary"
    length: str = "two or three sentences"
    #: an optional template: what the summary is for ("for {{ audience }}")
    focus: str | None = None
    #: a summary must have fewer words than this share of its text's
    max_ratio: float = Field(default=0.7, gt=0, le=1)

    def _templates(self) -> list[tuple[str, str]]:
        focus = [(self.focus, "focus")] if self.focus is not None else []
        return [*super()._templates(), *focus]

    def output_column(self) -> str:
        return self.output

    def prompt(self, text: str, row: Row) -> str:
        focus = render_row(self.focus, row, self.label).strip() if self.focus else ""
        return (
            template("summarize-text.jinja2")
            .render(text=text, length=self.length, focus=focus)
            .strip()
        )

    def check(self, answer: str, text: str, raw: str) -> str:
        if not answer:
            raise ParseError("empty summary", raw)
        if normalize_text(answer) == normalize_text(text):
            raise ParseError("summary identical to the text", raw)
        if len(answer.split()) >= self.max_ratio * len(text.split()):
            raise ParseError("summary not shorter than its text", raw)
        return answer


__all__ = ["RewriteText", "Summarize", "TextTask", "clean_answer", "full_sentences"]

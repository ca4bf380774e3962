"""Text generation: render a prompt from row columns, write the model's answer to a column.

The basic prompting technique of the course (smol-course ch. 6, "instruction datasets"): the same
step, chained, turns a seed prompt into a question and the question into an answer.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import model_validator

from ..models.base import Completion, Request
from ..rows import Row
from ..steps.base import Context
from .base import TemplateTask, check_template, render_row


class TextGeneration(TemplateTask):
    """``template`` (Jinja, over the row's columns) → user message; the answer → ``output``.

    ``system_prompt`` is a template too (``"You are {{ persona }}."``); when the step sets none,
    a row column ``system_prompt`` is used as the system message as it is.
    """

    kind: ClassVar[str] = "text_generation"
    template: str = "{{ instruction }}"
    system_prompt: str | None = None
    output: str = "generation"
    #: a column for the model's thinking (``Completion.reasoning``; null when it wrote none)
    reasoning_output: str | None = None
    #: a column for each sample's finish reason (``stop``, ``length``…), e.g. for trace gates;
    #: with ``truncated: keep`` a sample cut inside its thinking is kept too (empty answer,
    #: finish ``length``) for the gate to count, instead of failing the row
    finish_output: str | None = None
    later_fields: ClassVar[tuple[str, ...]] = (
        "think_tags",
        "reasoning_output",
        "finish_output",
    )
    defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "generation": {"max_tokens": 512, "temperature": 0.7}
    }

    @model_validator(mode="after")
    def _check_template(self) -> TextGeneration:
        for source, where in self._templates():
            check_template(source, f"text_generation {where}")
        return self

    def _templates(self) -> list[tuple[str, str]]:
        out = [(self.template, "template")]
        if self.system_prompt is not None:
            out.append((self.system_prompt, "system_prompt"))
        return out

    def produces(self) -> list[str]:
        extra = [c for c in (self.reasoning_output, self.finish_output) if c]
        return [self.output, *extra]

    def requests(self, row: Row, ctx: Context) -> list[Request]:
        user = render_row(self.template, row, self.label).strip()
        if not user:
            from ..errors import Dropped

            raise Dropped("empty prompt", f"template {self.template!r} rendered to nothing")
        system: str | None
        if self.system_prompt is not None:
            system = render_row(self.system_prompt, row, self.label).strip()
        else:
            system = row.get("system_prompt")
        return [Request.chat(user, system=system or None, **self.request_defaults("generation"))]

    def keeps_cut(self) -> bool:
        return self.finish_output is not None and self.truncated == "keep"

    def parse(self, completions: list[list[Completion]], row: Row) -> Row:
        completion = completions[0][0]
        out: Row = {self.output: completion.text.strip()}
        if self.reasoning_output:
            out[self.reasoning_output] = completion.reasoning
        if self.finish_output:
            out[self.finish_output] = completion.finish_reason
        return out

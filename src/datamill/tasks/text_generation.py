"""Text generation: render a prompt from row columns, write the model's answer to a column.

The basic prompting technique of the course (smol-course ch. 6, "instruction datasets"): the same
step, chained, turns a seed prompt into a question and the question into an answer.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import model_validator

from ..errors import ConfigError
from ..models.base import Completion, Request
from ..rows import Row
from ..steps.base import Context
from .base import Task, render_string, template_variables


class TextGeneration(Task):
    """``template`` (Jinja, over the row's columns) → user message; the answer → ``output``.

    A row column ``system_prompt`` is used as the system message when the step sets none.
    """

    kind: ClassVar[str] = "text_generation"
    template: str = "{{ instruction }}"
    system_prompt: str | None = None
    output: str = "generation"
    defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "generation": {"max_tokens": 512, "temperature": 0.7}
    }

    @model_validator(mode="after")
    def _check_template(self) -> TextGeneration:
        try:
            template_variables(self.template)
        except Exception as exc:
            raise ConfigError(f"text_generation template is not valid Jinja: {exc}") from None
        return self

    def required_columns(self) -> list[str]:
        return sorted(template_variables(self.template))

    def produces(self) -> list[str]:
        return [self.output]

    def requests(self, row: Row, ctx: Context) -> list[Request]:
        values: dict[str, Any] = dict(row)
        user = render_string(self.template, **values).strip()
        if not user:
            from ..errors import Dropped

            raise Dropped("empty prompt", f"template {self.template!r} rendered to nothing")
        system = self.system_prompt if self.system_prompt is not None else row.get("system_prompt")
        return [Request.chat(user, system=system or None, **self.request_defaults("generation"))]

    def parse(self, completions: list[list[Completion]], row: Row) -> Row:
        return {self.output: completions[0][0].text.strip()}

"""Classify: tag each row with one label of a fixed set, asked of the model and parse-checked.

``classify: {labels: [qa, code, chat], template: "{{ instruction }}", output: category}`` asks
the model which label fits the rendered text (``question`` says by what: "task category",
"difficulty", "language") and writes the label, spelled as in ``labels``, to ``output``. The tags
feed a mixture with targets (``mix: {by: category, ...}``, ``pipeline.mixture``), as Magpie tags
its instructions by task category and difficulty (Xu et al., arXiv:2406.08464).

With a model that honours a JSON schema (``structured: auto``) the answer is constrained to
``{"label": one of the labels}``; otherwise the answer is read as text: the label itself (any
case, quotes or a final full stop around it), or an answer that starts with one label, or one
that names exactly one label. Anything else is a :class:`~datamill.errors.ParseError`
(``no label in answer``, ``several labels in answer``, ``label not in the label set``), never a
guess. Greedy by default (``temperature: 0``).

Deliberately not here: acting on the tags (``mix`` in the recipe, ``pipeline.mix``).
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ..errors import ParseError
from ..models.base import Completion, Request
from ..rows import Row
from ..steps.base import Context
from .base import TemplateTask, check_template, render_row, template

CITATION = "Magpie task tags: Xu et al., 2024, arXiv:2406.08464"


def label_schema(labels: list[str]) -> dict[str, Any]:
    """``{"label": one of labels}`` as a JSON schema."""
    return {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": list(labels)}},
        "required": ["label"],
        "additionalProperties": False,
    }


def _plain(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().strip("\"'`*.:!").strip()).casefold()


def parse_label(text: str, labels: list[str]) -> str:
    """The label ``text`` names (spelled as in ``labels``), or :class:`ParseError`."""
    by_plain = {_plain(label): label for label in labels}
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except ValueError:
            raise ParseError("unparsable JSON label", text) from None
        answer = value.get("label") if isinstance(value, dict) else None
        if not isinstance(answer, str) or _plain(answer) not in by_plain:
            raise ParseError("label not in the label set", text)
        return by_plain[_plain(answer)]
    plain = _plain(stripped)
    if plain in by_plain:
        return by_plain[plain]
    found = [
        (m.start(), label)
        for key, label in by_plain.items()
        for m in [re.search(rf"(?<!\w){re.escape(key)}(?!\w)", plain)]
        if m is not None
    ]
    first = [label for start, label in found if start == 0]
    if len(first) == 1:
        return first[0]
    if not found:
        raise ParseError("no label in answer", text)
    if len(found) > 1:
        raise ParseError("several labels in answer", text)
    return found[0][1]


class Classify(TemplateTask):
    """``template`` (over the row) → one of ``labels`` in ``output``."""

    kind: ClassVar[str] = "classify"
    citation: ClassVar[str] = CITATION
    labels: list[str] = Field(min_length=2)
    template: str = "{{ instruction }}"
    question: str = "task category"
    output: str = "category"
    #: ``auto``: a JSON schema when the model honours one, else a plain-text label
    structured: Literal["auto", "json", "text"] = "auto"
    truncated: Literal["drop", "keep"] = "keep"  # the label comes first; a cut tail is harmless
    defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "classify": {"temperature": 0.0, "max_tokens": 24}
    }

    @field_validator("labels")
    @classmethod
    def _distinct(cls, labels: list[str]) -> list[str]:
        plain = [_plain(label) for label in labels]
        if any(not p for p in plain):
            raise ValueError("a label must be non-empty text")
        if len(set(plain)) != len(plain):
            raise ValueError("two labels are the same (ignoring case)")
        return labels

    @model_validator(mode="after")
    def _check_template(self) -> Classify:
        check_template(self.template, "classify template")
        return self

    def _templates(self) -> list[tuple[str, str]]:
        return [(self.template, "template")]

    def produces(self) -> list[str]:
        return [self.output]

    def written_values(self, column: str) -> list[str] | None:
        return list(self.labels) if column == self.output else None

    def requests(self, row: Row, ctx: Context) -> list[Request]:
        text = render_row(self.template, row, self.label).strip()
        structured = self.structured == "json" or (
            self.structured == "auto" and bool(ctx.model_info(self.model).json_schema)
        )
        prompt = (
            template("classify.jinja2")
            .render(text=text, labels=self.labels, question=self.question, structured=structured)
            .strip()
        )
        return [
            Request.chat(
                prompt,
                **self.request_defaults("classify"),
                json_schema=label_schema(self.labels) if structured else None,
            )
        ]

    def parse(self, completions: list[list[Completion]], row: Row) -> Row:
        return {self.output: parse_label(completions[0][0].text, self.labels)}


__all__ = ["Classify", "label_schema", "parse_label"]

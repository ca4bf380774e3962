"""Persona-driven generation, as in PersonaHub (Ge et al. 2024, arXiv:2406.20094).

- :class:`TextToPersona` (``text_to_persona``): a seed text → ``persona``, the person likely to
  read, write, like or dislike it (the relation drawn per row from ``relations``).
- :class:`PersonaToPersona` (``persona_to_persona``): a persona → ``num_personas`` rows of people
  in close relationship with it (``persona``; the one it came from in ``persona_source``; with
  ``keep_source`` the original row stays too, first).

Near-duplicate removal is datamill's own dedup (``dedup_minhash: {columns: [persona]}``); the
``personas`` recipe chains all three. Any template then reads ``{{ persona }}``; the offline
default persona, with no model call, is the ``persona`` sampler (``io.samplers``).

Checks: a persona is a description of a person, not the text again: empty, under ``min_words``,
over ``max_words``, or copying the text (or the source persona) is a :class:`ParseError`.
Deliberately not here: the persona-conditioned prompts (a recipe's ``text_generation``).
"""

from __future__ import annotations

import random
import re
from typing import ClassVar

from pydantic import Field

from ..errors import Dropped, ParseError
from ..models.base import Completion, Request
from ..rows import Path, Row, is_missing
from ..steps.base import Context
from ..steps.dedup import normalize_text
from .base import Task, template
from .self_instruct import _LEAD_IN, clean_line

_LABEL = re.compile(
    r"^\s*(?:\**\s*)?(?:persona(?:\s+description)?|description)\s*\**\s*:\s*\**\s*", re.I
)


def clean_persona(text: str) -> str:
    """A persona answer without a "Persona:" label, list marker or lead-in, on one line."""
    lines = [clean_line(x) for x in text.strip().splitlines()]
    lines = [x for x in lines if x and not _LEAD_IN.match(x)]
    return _LABEL.sub("", " ".join(lines[:3])).strip()


def check_persona(persona: str, copied: str, min_words: int, max_words: int, raw: str) -> str:
    """``persona`` when it reads as one; :class:`ParseError` when empty, too short or long, or
    a copy of ``copied`` (the text or persona it came from)."""
    words = len(persona.split())
    if not words:
        raise ParseError("empty persona", raw)
    if words < min_words:
        raise ParseError(f"persona too short (< {min_words} words)", raw)
    if words > max_words:
        raise ParseError(f"persona too long (> {max_words} words)", raw)
    norm = normalize_text(persona)
    if norm == normalize_text(copied) or (len(norm) > 40 and norm in normalize_text(copied)):
        raise ParseError("persona copies its source", raw)
    return persona


def _text(row: Row, column: str, what: str) -> str:
    value = row[column]
    if is_missing(value) or not isinstance(value, str):
        raise Dropped(f"empty {what}", f"column {column!r} is empty or not text")
    return value


class TextToPersona(Task):
    """``text`` → ``output`` (a persona who would read/write/like/dislike it; PersonaHub fig. 4)."""

    kind: ClassVar[str] = "text_to_persona"
    text: str = "text"
    output: str = "persona"
    #: the relations asked about, one drawn per row (from its seed)
    relations: list[str] = Field(default=["read", "write", "like", "dislike"], min_length=1)
    min_words: int = Field(default=5, ge=1)
    max_words: int = Field(default=80, ge=1)
    defaults: ClassVar[dict[str, dict[str, object]]] = {
        "persona": {"max_tokens": 96, "temperature": 0.7}
    }

    def required_columns(self) -> list[str]:
        return [self.text]

    def text_paths(self) -> list[Path]:
        return [(self.text,)]

    def produces(self) -> list[str]:
        return [self.output]

    def requests(self, row: Row, ctx: Context) -> list[Request]:
        relation = random.Random(self.row_seed(ctx, "relation")).choice(self.relations)
        prompt = template("text-to-persona.jinja2").render(
            text=_text(row, self.text, "text"), relation=relation
        )
        return [Request.chat(prompt.strip(), **self.request_defaults("persona"))]

    def parse(self, completions: list[list[Completion]], row: Row) -> Row:
        raw = completions[0][0].text
        persona = check_persona(
            clean_persona(raw), row[self.text], self.min_words, self.max_words, raw
        )
        return {self.output: persona}


class PersonaToPersona(Task):
    """``persona`` → ``num_personas`` rows, each a person close to it (PersonaHub fig. 5)."""

    kind: ClassVar[str] = "persona_to_persona"
    persona: str = "persona"
    output: str = "persona"
    source_output: str = "persona_source"  #: the persona each new one came from
    num_personas: int = Field(default=3, ge=1, le=20)
    keep_source: bool = True  #: keep the original row too (its ``persona_source`` is null)
    min_words: int = Field(default=5, ge=1)
    max_words: int = Field(default=80, ge=1)
    defaults: ClassVar[dict[str, dict[str, object]]] = {
        "personas": {"max_tokens": 256, "temperature": 0.8}
    }

    def required_columns(self) -> list[str]:
        return [self.persona]

    def text_paths(self) -> list[Path]:
        return [(self.persona,)]

    def produces(self) -> list[str]:
        return [self.output, self.source_output]

    def requests(self, row: Row, ctx: Context) -> list[Request]:
        prompt = template("persona-to-persona.jinja2").render(
            persona=_text(row, self.persona, "persona"), num_personas=self.num_personas
        )
        return [Request.chat(prompt.strip(), **self.request_defaults("personas"))]

    def parse(self, completions: list[list[Completion]], row: Row) -> list[Row]:
        completion = completions[0][0]
        source = row[self.persona]
        lines = completion.text.strip().splitlines()
        if completion.finish_reason == "length" and len(lines) > 1:
            lines = lines[:-1]  # cut at max_tokens: the last line is unfinished
        found: list[str] = []
        seen = {normalize_text(source)}
        for line in lines:
            persona = clean_persona(line)
            try:
                check_persona(persona, source, self.min_words, self.max_words, line)
            except ParseError:
                continue
            if normalize_text(persona) not in seen:
                seen.add(normalize_text(persona))
                found.append(persona)
        if not found:
            raise ParseError("no personas in output", completion.text)
        out = [{self.output: p, self.source_output: source} for p in found[: self.num_personas]]
        return ([{self.output: source, self.source_output: None}] if self.keep_source else []) + out


__all__ = ["PersonaToPersona", "TextToPersona", "check_persona", "clean_persona"]

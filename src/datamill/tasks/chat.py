"""Simulated multi-turn chats in the SmolTalk mould (Allal et al. 2025, arXiv:2502.02737):
``system-chats`` (an assistant following a system prompt over several turns) and
``everyday-chats`` (short small talk).

:class:`SimulatedChat` (``simulated_chat``): one model plays both sides. For each of ``n_turns``
rounds it writes the user's message (``tasks/templates/chat-user.jinja2``: who the user is,
``scenario``; what the assistant was told, ``system_prompt``; the chat so far) and then the
assistant's answer to the conversation so far, under ``system_prompt``. The row gets
``conversation``: ``[system?, user, assistant, …]``, the shape ``format_sft: {conversation: …}``
reads.

Each message is checked as it comes (:class:`ParseError`, raw text kept): a role label the model
wrote ("User:", "Assistant:") is cut off, and a second speaker's line cuts the message there;
with ``trim_cut`` a message cut at ``max_tokens`` keeps its full sentences (else the row fails:
``truncated``); then an empty message, one over ``max_words``, one repeating an earlier message or the system
prompt is refused. Roles alternate by construction and are checked again at the end.

Deliberately not here: Magpie's template-prefix conversations (``tasks.magpie``).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import Field, model_validator

from ..errors import Dropped, ParseError
from ..models.base import Request
from ..rows import Row
from ..steps.base import Context
from ..steps.dedup import normalize_text
from .base import TemplateTask, check_template, render_row, template
from .transform import full_sentences

_SPEAKER = re.compile(r"^\s*\**\s*(user|assistant|ai|human|me|you)\s*\**\s*:\s*", re.IGNORECASE)
_QUOTES = "\"'“”"


def clean_message(text: str) -> str:
    """A message without a leading role label or wrapping quotes, cut where a line opens with
    another speaker's label (a model writing both sides)."""
    lines = text.strip().splitlines()
    kept: list[str] = []
    for i, line in enumerate(lines):
        if _SPEAKER.match(line):
            if i > 0 and any(k.strip() for k in kept):
                break
            line = _SPEAKER.sub("", line, count=1)
        kept.append(line)
    message = "\n".join(kept).strip()
    if len(message) >= 2 and message[0] in _QUOTES and message[-1] in _QUOTES:
        message = message[1:-1].strip()
    return message


def check_turns(turns: list[dict[str, str]]) -> None:
    """:class:`ParseError` unless ``turns`` alternate user/assistant (after an optional system
    message) and none is empty."""
    body = turns[1:] if turns and turns[0]["role"] == "system" else turns
    roles = [t["role"] for t in body]
    if not body or roles != ["user", "assistant"] * (len(body) // 2) + ["user"] * (len(body) % 2):
        raise ParseError("roles do not alternate", ", ".join(roles))
    for t in turns:
        if not t["content"].strip():
            raise ParseError("empty turn", t["role"])


class SimulatedChat(TemplateTask):
    """``n_turns`` rounds of a simulated user and the assistant → ``output`` (messages)."""

    kind: ClassVar[str] = "simulated_chat"
    #: the assistant's system prompt (a template; none: no system message)
    system_prompt: str | None = None
    #: who the simulated user is and what they want (a template: "{{ persona }}, asking about …")
    scenario: str | None = None
    n_turns: int = Field(default=3, ge=1, le=20)
    #: at most this many words per message (everyday small talk is short); none: no limit
    max_words: int | None = Field(default=None, ge=1)
    output: str = "conversation"
    #: a message cut at max_tokens keeps its full sentences (else the row fails, ``truncated``)
    trim_cut: bool = False
    user_max_tokens: int | None = Field(default=None, ge=1)
    response_max_tokens: int | None = Field(default=None, ge=1)
    defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "user": {"max_tokens": 96, "temperature": 0.9},
        "response": {"max_tokens": 256, "temperature": 0.7},
    }

    @model_validator(mode="after")
    def _check_templates(self) -> SimulatedChat:
        for source, where in self._templates():
            check_template(source, f"simulated_chat {where}")
        return self

    def _templates(self) -> list[tuple[str, str]]:
        named = (("system_prompt", self.system_prompt), ("scenario", self.scenario))
        return [(source, where) for where, source in named if source is not None]

    def produces(self) -> list[str]:
        return [self.output]

    def _render(self, source: str | None, row: Row) -> str:
        return render_row(source, row, self.label).strip() if source is not None else ""

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        system, scenario = self._render(self.system_prompt, row), self._render(self.scenario, row)
        if self.system_prompt is not None and not system:
            raise Dropped("empty prompt", "system_prompt rendered to nothing")
        turns: list[dict[str, str]] = []
        for i in range(self.n_turns):
            asked = template("chat-user.jinja2").render(
                scenario=scenario, system=system, turns=turns, max_words=self.max_words
            )
            user = await self._message(
                ctx,
                Request.chat(asked.strip(), **self.request_defaults("user")),
                f"user#{i}",
                {"max_tokens": self.user_max_tokens},
                turns,
                system,
            )
            turns.append({"role": "user", "content": user})
            head = [{"role": "system", "content": system}] if system else []
            request = Request(messages=tuple(head + turns), **self.request_defaults("response"))
            answer = await self._message(
                ctx,
                request,
                f"assistant#{i}",
                {"max_tokens": self.response_max_tokens},
                turns,
                system,
            )
            turns.append({"role": "assistant", "content": answer})
        conversation = ([{"role": "system", "content": system}] if system else []) + turns
        check_turns(conversation)
        return [{**row, self.output: conversation}]

    async def _message(
        self,
        ctx: Context,
        request: Request,
        salt: str,
        options: dict[str, Any],
        turns: list[dict[str, str]],
        system: str,
    ) -> str:
        completion = (await self.call(ctx, request, salt, options=options, keep_cut=self.trim_cut))[
            0
        ]
        raw = completion.text
        message = clean_message(raw)
        if completion.finish_reason == "length" and self.trim_cut:
            message = full_sentences(message)
        if not message:
            raise ParseError("empty turn", raw)
        if self.max_words is not None and len(message.split()) > self.max_words:
            raise ParseError(f"turn too long (> {self.max_words} words)", raw)
        norm = normalize_text(message)
        if system and norm == normalize_text(system):
            raise ParseError("turn repeats the system prompt", raw)
        if any(norm == normalize_text(t["content"]) for t in turns):
            raise ParseError("turn repeats an earlier one", raw)
        return message


__all__ = ["SimulatedChat", "check_turns", "clean_message"]

"""Formatting into the shapes TRL trains on.

- ``format_sft``: conversational SFT, ``messages = [system?, user, assistant]``
  (the layout of HuggingFaceH4/ultrachat_200k and of TRL's ``SFTTrainer`` conversational data),
  from ``instruction`` + ``response`` columns, or from a multi-turn ``conversation`` column
  (Magpie with ``n_turns > 1``), checked: roles alternate user/assistant after an optional system
  message, and no message is empty.
"""

from __future__ import annotations

import hashlib
from typing import ClassVar

from ..errors import Dropped
from ..rows import Row, is_missing
from .base import Context, Step


def prompt_id(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()


class FormatSFT(Step):
    """``instruction`` + ``response`` (+ optional system prompt column) → ``messages``; or, with
    ``conversation`` set, that column's list of ``{role, content}`` messages, checked."""

    kind: ClassVar[str] = "format_sft"
    instruction: str = "instruction"
    response: str = "response"
    conversation: str | None = None  #: column holding a whole conversation (replaces the two above)
    system_prompt: str | None = None  #: column holding a system prompt, if any
    output: str = "messages"
    keep_columns: bool = True

    def required_columns(self) -> list[str]:
        texts = [self.conversation] if self.conversation else [self.instruction, self.response]
        return texts + ([self.system_prompt] if self.system_prompt else [])

    def output_columns(self, columns: list[str]) -> list[str]:
        base = columns if self.keep_columns else []
        return base + [c for c in (self.output, "prompt_id") if c not in base]

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        if self.conversation:
            return [self._from_conversation(row)]
        instruction, response = row[self.instruction], row[self.response]
        for col, value in ((self.instruction, instruction), (self.response, response)):
            if is_missing(value) or not isinstance(value, str):
                raise Dropped("empty text", f"column {col!r} is empty or not text")
        messages = []
        system = row.get(self.system_prompt) if self.system_prompt else None
        if isinstance(system, str) and system.strip():
            messages.append({"role": "system", "content": system})
        messages += [
            {"role": "user", "content": instruction},
            {"role": "assistant", "content": response},
        ]
        new = {self.output: messages, "prompt_id": prompt_id(instruction)}
        return [{**row, **new} if self.keep_columns else new]

    def _from_conversation(self, row: Row) -> Row:
        value = row[self.conversation or ""]
        if is_missing(value) or not isinstance(value, list) or not value:
            raise Dropped("empty text", f"column {self.conversation!r} holds no messages")
        messages = []
        system = row.get(self.system_prompt) if self.system_prompt else None
        if isinstance(system, str) and system.strip() and value[0].get("role") != "system":
            messages.append({"role": "system", "content": system})
        for i, m in enumerate(value):
            if not isinstance(m, dict) or not isinstance(m.get("content"), str):
                raise Dropped("bad conversation", f"message {i} is not a {{role, content}} pair")
            if not m["content"].strip():
                raise Dropped("empty text", f"message {i} ({m.get('role')}) is empty")
            messages.append({"role": str(m.get("role")), "content": m["content"]})
        turns = messages[1:] if messages[0]["role"] == "system" else messages
        expected = ["user", "assistant"] * ((len(turns) + 1) // 2)
        if [m["role"] for m in turns] != expected[: len(turns)]:
            roles = ", ".join(str(m["role"]) for m in turns)
            raise Dropped("bad conversation", f"roles must alternate user, assistant: got {roles}")
        new = {self.output: messages, "prompt_id": prompt_id(turns[0]["content"])}
        return {**row, **new} if self.keep_columns else new

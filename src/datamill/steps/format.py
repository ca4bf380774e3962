"""Formatting into the shapes TRL trains on.

- ``format_sft``: conversational SFT, ``messages = [system?, user, assistant]``
  (the layout of HuggingFaceH4/ultrachat_200k and of TRL's ``SFTTrainer`` conversational data).
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
    """``instruction`` + ``response`` (+ optional system prompt column) → ``messages``."""

    kind: ClassVar[str] = "format_sft"
    instruction: str = "instruction"
    response: str = "response"
    system_prompt: str | None = None  #: column holding a system prompt, if any
    output: str = "messages"
    keep_columns: bool = True

    def required_columns(self) -> list[str]:
        return [self.instruction, self.response] + ([self.system_prompt] if self.system_prompt else [])

    def output_columns(self, columns: list[str]) -> list[str]:
        base = columns if self.keep_columns else []
        return base + [c for c in (self.output, "prompt_id") if c not in base]

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        instruction, response = row[self.instruction], row[self.response]
        for col, value in ((self.instruction, instruction), (self.response, response)):
            if is_missing(value) or not isinstance(value, str):
                raise Dropped("empty text", f"column {col!r} is empty or not text")
        messages = []
        system = row.get(self.system_prompt) if self.system_prompt else None
        if isinstance(system, str) and system.strip():
            messages.append({"role": "system", "content": system})
        messages += [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}]
        new = {self.output: messages, "prompt_id": prompt_id(instruction)}
        return [{**row, **new} if self.keep_columns else new]

"""``instruction_response``: bring any instruction dataset to ``instruction`` + ``response`` columns.

Accepts, per dataset (decided from the columns, before any model call):

- chat ``messages`` (datamill SFT outputs, TRL conversational data): the first user turn is the
  instruction, the first assistant turn after it the response;
- ``instruction``/``response`` already there (kept as they are);
- common pairs under other names: ``prompt``/``completion``, ``prompt``/``response``,
  ``question``/``answer``, ``question``/``response``, ``input``/``output``, ``query``/``response``.

Rows without a usable pair are dropped with a reason. Deliberately not here: multi-turn
flattening (later turns are ignored) and writing ``messages`` (that is ``format_sft``).
"""

from __future__ import annotations

import json
from typing import ClassVar

from ..errors import Dropped, PipelineError
from ..rows import Row, is_missing
from .base import Context, Step

#: other names of an instruction/response pair, tried in this order
ALIASES: list[tuple[str, str]] = [
    ("prompt", "completion"),
    ("prompt", "response"),
    ("question", "answer"),
    ("question", "response"),
    ("input", "output"),
    ("query", "response"),
]


class InstructionResponse(Step):
    """Derive ``instruction`` and ``response`` from ``messages`` or from a known column pair."""

    kind: ClassVar[str] = "instruction_response"
    messages: str = "messages"
    instruction: str = "instruction"
    response: str = "response"

    def source_of(self, columns: list[str]) -> tuple[str, str] | str | None:
        """Where the pair comes from: the messages column, a column pair, or None."""
        if self.instruction in columns and self.response in columns:
            return (self.instruction, self.response)
        if self.messages in columns:
            return self.messages
        for pair in ALIASES:
            if pair[0] in columns and pair[1] in columns:
                return pair
        return None

    def output_columns(self, columns: list[str]) -> list[str]:
        if self.source_of(columns) is None:
            names = ", ".join(f"{a}/{b}" for a, b in ALIASES)
            raise PipelineError(
                f"step {self.label}: the rows have neither {self.messages!r} nor {self.instruction!r}+{self.response!r} "
                f"(nor {names}); they have: {', '.join(columns) or '(none)'}. Rename the columns or set messages:/instruction:/response:"
            )
        return columns + [c for c in (self.instruction, self.response) if c not in columns]

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        src = self.source_of(list(row))
        if isinstance(src, tuple):
            instruction, response = row.get(src[0]), row.get(src[1])
        elif isinstance(src, str):
            instruction, response = first_exchange(row.get(src))
        else:
            raise Dropped(
                "no instruction/response",
                "the row has neither messages nor an instruction/response pair",
            )
        for name, value in (("instruction", instruction), ("response", response)):
            if is_missing(value) or not isinstance(value, str):
                raise Dropped("no instruction/response", f"no {name} text in this row")
        return [{**row, self.instruction: instruction, self.response: response}]


def first_exchange(messages: object) -> tuple[str | None, str | None]:
    """The first user message and the first assistant message after it (``messages`` may also
    be the JSON text that mixed-type columns are stored as)."""
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)
        except ValueError:
            return None, None
    if not isinstance(messages, list):
        return None, None
    instruction: str | None = None
    for m in messages:
        if not isinstance(m, dict):
            continue
        if instruction is None and m.get("role") == "user":
            instruction = m.get("content")
        elif instruction is not None and m.get("role") == "assistant":
            return instruction, m.get("content")
    return instruction, None


__all__ = ["ALIASES", "InstructionResponse", "first_exchange"]

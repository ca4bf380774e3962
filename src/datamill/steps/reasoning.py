"""Steps for reasoning traces (a thinking model's ``<think>`` text kept apart from its answer).

- ``reasoning_gates`` (:class:`ReasoningGates`): the gates distillation recipes put between a
  teacher and the training rows (OpenThoughts, s1, Bespoke-Stratos): a trace cut at
  ``max_tokens`` (``truncated trace``), a repetition loop (``repetition loop``: one n-gram said
  ``loop_repeats`` times back to back), no thinking (``no reasoning``), no final answer
  (``missing final answer``: empty, or not matching ``answer_pattern``) and a thinking longer
  than ``max_reasoning_words`` (``over length budget``). Each drop is a
  :class:`~datamill.errors.Dropped` with its reason, so ``run.json`` counts the losses per gate;
  every trace that reaches the step is also counted in a length bucket (``run.json`` events
  ``trace words 0-63`` …), the trace length distribution of the report.
- ``format_reasoning_sft`` (:class:`FormatReasoningSFT`): conversational SFT rows in the layout
  TRL and SmolLM3's chat template read: the assistant turn's thinking as ``reasoning_content``
  on the message (``thinking: field``) or as a ``<think>`` block inside the content
  (``thinking: inline``), with ``chat_template_kwargs: {enable_thinking: true}`` per row; and
  (``variants: both`` / ``no_think``) the answer alone with ``enable_thinking: false`` from the
  same row, told apart by the ``variant`` column (``think`` / ``no_think``).

Deliberately not here: checking the answer is right (``steps.verify``), generating traces
(``text_generation`` with ``reasoning_output``).
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field

from ..errors import ConfigError, Dropped
from ..models.base import THINK_TAGS
from ..rows import Row, is_missing
from .base import Context, Step
from .format import prompt_id

#: upper bounds (words) of the trace-length buckets counted by ``reasoning_gates``
LENGTH_BUCKETS = (64, 256, 1024, 4096)


def length_bucket(words: int) -> str:
    """The event name of a trace of ``words`` words: ``trace words 0-63``, …, ``trace words 4096+``."""
    low = 0
    for high in LENGTH_BUCKETS:
        if words < high:
            return f"trace words {low}-{high - 1}"
        low = high
    return f"trace words {low}+"


def repetition_loop(words: list[str], max_ngram: int, repeats: int) -> str | None:
    """The first n-gram (n ≤ ``max_ngram``) that ``words`` say ``repeats`` times back to back,
    as text, or None. ``"a b a b a b"`` with repeats 3 → ``"a b"``. A stretch where every word
    equals the one ``n`` before it, ``(repeats - 1) · n`` words long, is such a run; O(len · n)."""
    for n in range(1, max_ngram + 1):
        need = (repeats - 1) * n
        run = 0
        for j in range(n, len(words)):
            run = run + 1 if words[j] == words[j - n] else 0
            if run >= need:
                start = j - need + 1 - n
                return " ".join(words[start : start + n])
    return None


class ReasoningGates(Step):
    """Drop traces a student should not learn from, each with its reason (see the module)."""

    kind: ClassVar[str] = "reasoning_gates"
    reasoning: str = "reasoning"  #: the column with the thinking
    answer: str = "response"  #: the column with the final answer
    finish: str | None = "finish_reason"  #: the column with each sample's finish reason, if any
    require_reasoning: bool = True  #: drop answers written without thinking (``no reasoning``)
    max_reasoning_words: int | None = Field(default=4096, ge=1)  #: the length budget
    loop_ngram: int = Field(default=8, ge=1)  #: longest n-gram looked for in a loop
    loop_repeats: int = Field(default=6, ge=2)  #: back-to-back repeats that make a loop
    answer_pattern: str | None = None  #: a regex the final answer must match (e.g. ``\\boxed``)

    def model_post_init(self, __context: object) -> None:
        if self.answer_pattern is not None:
            try:
                re.compile(self.answer_pattern)
            except re.error as exc:
                raise ConfigError(
                    f"reasoning_gates answer_pattern {self.answer_pattern!r} is not a valid "
                    f"regular expression ({exc}); fix it or remove it"
                ) from None

    def required_columns(self) -> list[str]:
        return [self.answer] + ([self.finish] if self.finish else [])

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        thinking = row.get(self.reasoning)
        thinking = thinking if isinstance(thinking, str) and thinking.strip() else ""
        words = thinking.split()
        ctx.count(length_bucket(len(words)))
        if self.finish and row.get(self.finish) == "length":
            raise Dropped("truncated trace", f"cut at max_tokens after {len(words)} words")
        if self.require_reasoning and not words:
            raise Dropped("no reasoning", "the answer came without any thinking")
        loop = repetition_loop(words, self.loop_ngram, self.loop_repeats)
        if loop is not None:
            raise Dropped(
                "repetition loop", f"{loop[:60]!r} repeated {self.loop_repeats}+ times in a row"
            )
        answer = row.get(self.answer)
        if is_missing(answer) or not isinstance(answer, str) or not answer.strip():
            raise Dropped("missing final answer", "nothing after the thinking")
        if self.answer_pattern is not None and not re.search(self.answer_pattern, answer):
            raise Dropped("missing final answer", f"no match for {self.answer_pattern!r}")
        if self.max_reasoning_words is not None and len(words) > self.max_reasoning_words:
            raise Dropped("over length budget", f"{len(words)} words > {self.max_reasoning_words}")
        return [row]


class FormatReasoningSFT(Step):
    """``instruction`` + ``reasoning`` + ``response`` → ``messages`` + ``chat_template_kwargs``
    (see the module); ``variants``: ``think``, ``no_think`` or ``both`` (two rows per row)."""

    kind: ClassVar[str] = "format_reasoning_sft"
    instruction: str = "instruction"
    reasoning: str = "reasoning"
    response: str = "response"
    system_prompt: str | None = None  #: column holding a system prompt, if any
    thinking: Literal["field", "inline"] = "inline"
    variants: Literal["think", "no_think", "both"] = "both"
    think_tags: tuple[str, str] = THINK_TAGS  #: the tags of ``thinking: inline``
    output: str = "messages"

    def required_columns(self) -> list[str]:
        return [self.instruction, self.response] + (
            [self.system_prompt] if self.system_prompt else []
        )

    def produces(self) -> list[str]:
        return [self.output, "chat_template_kwargs", "variant", "prompt_id"]

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        instruction, answer = row[self.instruction], row[self.response]
        for col, value in ((self.instruction, instruction), (self.response, answer)):
            if is_missing(value) or not isinstance(value, str) or not value.strip():
                raise Dropped("empty text", f"column {col!r} is empty or not text")
        thinking = row.get(self.reasoning)
        head: list[dict[str, str]] = []
        system = row.get(self.system_prompt) if self.system_prompt else None
        if isinstance(system, str) and system.strip():
            head.append({"role": "system", "content": system})
        head.append({"role": "user", "content": instruction})
        common = {"prompt_id": prompt_id(instruction)}
        out: list[Row] = []
        if self.variants in ("think", "both"):
            if not isinstance(thinking, str) or not thinking.strip():
                raise Dropped("no reasoning", f"column {self.reasoning!r} holds no thinking")
            turn: dict[str, str] = {"role": "assistant", "content": answer.strip()}
            if self.thinking == "field":
                turn["reasoning_content"] = thinking.strip()
            else:
                open_tag, close_tag = self.think_tags
                turn["content"] = f"{open_tag}\n{thinking.strip()}\n{close_tag}\n\n{answer.strip()}"
            out.append(
                {
                    **row,
                    **common,
                    self.output: [*head, turn],
                    "chat_template_kwargs": {"enable_thinking": True},
                    "variant": "think",
                }
            )
        if self.variants in ("no_think", "both"):
            plain = {"role": "assistant", "content": answer.strip()}
            out.append(
                {
                    **row,
                    **common,
                    self.output: [*head, plain],
                    "chat_template_kwargs": {"enable_thinking": False},
                    "variant": "no_think",
                }
            )
        return out

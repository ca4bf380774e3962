"""Magpie: instructions from nothing, by letting an aligned model write the user's turn.

Magpie (Xu et al., 2406.08464) sends a chat model only its *pre-query template* — the chat
format up to the start of a user message, e.g. ``<|im_start|>user\\n`` — as a raw prompt. The
model fills in a plausible user request and stops at the end-of-turn token. The request then goes
through the normal chat template to get the answer. A system prompt inside the pre-query
template steers the domain ("You help users with math problems", not "You write math problems").

Decoding follows the paper: the instruction is sampled at temperature 1.0, top_p 1.0; the
response is greedy (temperature 0). On this task ``temperature``/``top_p``/``max_tokens`` apply
to the instruction call and ``response_temperature``/``response_top_p``/``response_max_tokens``
to the response call. They are set on each request (not as step-wide overrides), so sampling
settings given on the *model* (``models.default.temperature``) override both.

Deliberately not here: multi-turn conversations (one turn only), Magpie's tagging and
reward-model filters (use ``filter_*`` steps and the curation steps).
"""

from __future__ import annotations

import random
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field, PrivateAttr, field_validator, model_validator

from ..errors import ConfigError, Dropped, ModelUnavailable, ParseError
from ..models.base import Completion, Request
from ..rows import Row, is_missing, row_seed
from ..steps.base import Context
from .base import Task


@dataclass(frozen=True)
class PreQuery:
    """A chat format's pre-query template (with and without a system turn) and its stop tokens."""

    name: str
    bare: str
    with_system: str | None  #: ``{system}`` marks the system prompt
    stop: tuple[str, ...]
    markers: tuple[str, ...]  #: special tokens that must never appear inside an instruction

    def render(self, system: str | None) -> str:
        if not system:
            return self.bare
        if self.with_system is None:
            raise ConfigError(
                f"the {self.name} pre-query template has no system slot; remove system_prompt"
            )
        return self.with_system.replace("{system}", system)


_CHATML_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
_LLAMA3_TOKENS = (
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|end_of_text|>",
)

TEMPLATES: dict[str, PreQuery] = {
    "chatml": PreQuery(
        "chatml",
        bare="<|im_start|>user\n",
        with_system="<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n",
        stop=("<|im_end|>", "<|im_start|>", "<|endoftext|>"),
        markers=_CHATML_TOKENS,
    ),
    "llama3": PreQuery(
        "llama3",
        bare="<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n",
        with_system="<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n",
        stop=("<|eot_id|>", "<|start_header_id|>", "<|end_of_text|>"),
        markers=_LLAMA3_TOKENS,
    ),
}
TEMPLATES["qwen2"] = TEMPLATES["chatml"]  # distilabel's name for ChatML

_ROLE_WORDS = {"user", "assistant", "system", "human", "gpt", "model"}
_ANY_MARKER = re.compile(r"<\|[a-z_]+\|>", re.IGNORECASE)  # <|im_start|>, <|eot_id|>, ...


def detect_template(chat_template: str | None) -> PreQuery | None:
    """The pre-query template matching a model's Jinja chat template, if datamill knows it."""
    if not chat_template:
        return None
    if "<|im_start|>" in chat_template:
        return TEMPLATES["chatml"]
    if "<|start_header_id|>" in chat_template:
        return TEMPLATES["llama3"]
    return None


def literal_template(text: str, stop: list[str]) -> PreQuery:
    """A user-given pre-query string; ``{{ system_prompt }}`` (if present) takes the system prompt."""
    slot = re.search(r"\{\{\s*system_prompt\s*\}\}", text)
    with_system = text[: slot.start()] + "{system}" + text[slot.end() :] if slot else None
    bare = with_system.replace("{system}", "") if with_system else text
    markers = tuple(sorted(set(_ANY_MARKER.findall(text)) | set(stop)))
    return PreQuery(
        "literal", bare=bare, with_system=with_system, stop=tuple(stop), markers=markers
    )


def clean_instruction(text: str, template: PreQuery, system: str | None = None) -> str:
    """The user request in a raw pre-query completion, or ``ParseError`` when there is none.

    The text is cut at the first special token (a model that skips the end-of-turn token runs on
    into the next turn), a leading role word line ("user") is removed, and what is left must be
    more than whitespace, a role name or a copy of the system prompt.
    """
    cut = len(text)
    for token in template.markers:
        at = text.find(token)
        if at != -1:
            cut = min(cut, at)
    found = _ANY_MARKER.search(text)
    if found:
        cut = min(cut, found.start())
    instruction = text[:cut].strip()
    first, _, rest = instruction.partition("\n")
    if first.strip().strip(":").lower() in _ROLE_WORDS and rest.strip():
        instruction = rest.strip()
    if not text.strip():
        raise ParseError("empty instruction", text)
    if not instruction:
        raise ParseError("instruction echoes template tokens", text)
    if instruction.strip(":").lower() in _ROLE_WORDS or not re.search(r"[^\W_]", instruction):
        raise ParseError("instruction echoes template tokens", text)
    if system and " ".join(instruction.split()) == " ".join(system.split()):
        raise ParseError("instruction repeats the system prompt", text)
    return instruction


SystemPrompts = str | list[str] | dict[str, str | tuple[str, float] | list[Any]]


class Magpie(Task):
    """Generate ``instruction`` (and ``response``) rows from empty rows (``source: {num_rows: N}``).

    - ``template``: ``auto`` (from the model's chat template: ChatML or Llama-3), ``chatml``
      (alias ``qwen2``), ``llama3``, or a literal pre-query string (then give ``stop``; put
      ``{{ system_prompt }}`` where the system prompt goes).
    - ``system_prompt``: one text; a list (one chosen per row, uniformly); or a mapping
      ``name → text`` or ``name → [text, weight]`` (chosen by relative weight; the row gets
      ``system_prompt_key``). The choice is seeded by the row key, so re-runs choose the same.
      A row column ``system_prompt`` beats the parameter.
    - ``only_instruction``: stop after the instruction (no response call).
    - ``include_system_prompt``: also write the chosen prompt to ``system_prompt`` (for
      ``format_sft: {system_prompt: system_prompt}``).
    """

    kind: ClassVar[str] = "magpie"
    template: str = "auto"
    system_prompt: SystemPrompts | None = None
    only_instruction: bool = False
    include_system_prompt: bool = False
    stop: list[str] | None = None
    response_temperature: float | None = Field(default=None, ge=0.0)
    response_top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    response_max_tokens: int | None = Field(default=None, ge=1)
    _choices: list[tuple[str | None, str, float]] = PrivateAttr(default_factory=list)
    _fixed: PreQuery | None = PrivateAttr(default=None)

    @field_validator("template")
    @classmethod
    def _known(cls, v: str) -> str:
        if v == "auto" or v in TEMPLATES:
            return v
        if re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            known = ", ".join(["auto", *TEMPLATES])
            raise ValueError(
                f"unknown template {v!r}; use one of {known} or a literal pre-query string such as '<|im_start|>user\\n'"
            )
        return v

    @model_validator(mode="after")
    def _setup(self) -> Magpie:
        self._choices = _system_choices(self.system_prompt)
        if self.template in TEMPLATES:
            self._fixed = TEMPLATES[self.template]
        elif self.template != "auto":
            if not self.stop:
                raise ConfigError(
                    "magpie: a literal template needs stop (the end-of-turn token(s)), e.g. stop: ['<|im_end|>']"
                )
            self._fixed = literal_template(self.template, self.stop)
        if self._fixed is not None and any(p for _, p, _ in self._choices):
            self._fixed.render("x")  # a template without a system slot fails now, not per row
        return self

    def produces(self) -> list[str]:
        cols = ["instruction"] if self.only_instruction else ["instruction", "response"]
        if isinstance(self.system_prompt, dict):
            cols.append("system_prompt_key")
        if self.include_system_prompt:
            cols.append("system_prompt")
        return cols

    def sampling(self) -> dict[str, Any]:
        return {}  # per-call settings are put on each request (see the module docstring)

    def pre_query(self, ctx: Context) -> PreQuery:
        if self._fixed is not None:
            return self._fixed
        info = ctx.model_info(self.model)
        found = detect_template(getattr(info, "chat_template", None))
        if found is None:
            raise ModelUnavailable(
                f"magpie: cannot tell the chat format of model {info.name!r} (not ChatML or Llama-3); "
                "set template: chatml, llama3 or a literal pre-query string with stop"
            )
        return found

    def choose_system(self, row: Row, ctx: Context) -> tuple[str | None, str | None]:
        """(key, prompt): the row's own ``system_prompt`` column, else a seeded choice."""
        own = row.get("system_prompt")
        if isinstance(own, str) and not is_missing(own):
            return None, own
        if not self._choices:
            return None, None
        if len(self._choices) == 1:
            key, prompt, _ = self._choices[0]
            return key, prompt
        rng = random.Random(
            row_seed(
                self.seed if self.seed is not None else ctx.seed, ctx.key, self.label + "/system"
            )
        )
        key, prompt, _ = rng.choices(self._choices, weights=[w for _, _, w in self._choices])[0]
        return key, prompt

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        info = ctx.model_info(self.model)
        if not getattr(info, "raw_prompt", True):
            raise ModelUnavailable(
                f"magpie needs raw prompts, which model {info.name!r} does not accept; use llamacpp, vllm, transformers or an endpoint with /v1/completions"
            )
        pre = self.pre_query(ctx)
        key, system = self.choose_system(row, ctx)
        try:
            prompt = pre.render(system)
        except ConfigError:  # a row's own system prompt, and a template without a slot for it
            raise Dropped("template has no system slot", f"system prompt {system!r}") from None
        first = Request(
            prompt=prompt,
            stop=tuple(dict.fromkeys([*pre.stop, *(self.stop or [])])),
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            max_tokens=self.max_tokens or 128,
        )
        raw = (await _labelled(self.call(ctx, first, salt="/instruction"), "instruction"))[0].text
        instruction = clean_instruction(raw, pre, system)
        out: Row = {**row, "instruction": instruction}
        if isinstance(self.system_prompt, dict):
            out["system_prompt_key"] = key
        if self.include_system_prompt:
            out["system_prompt"] = system
        if self.only_instruction:
            return [out]
        second = Request.chat(
            instruction,
            system=system,
            temperature=0.0 if self.response_temperature is None else self.response_temperature,
            top_p=1.0 if self.response_top_p is None else self.response_top_p,
            max_tokens=self.response_max_tokens or 512,
        )
        answer = await _labelled(self.call(ctx, second, salt="/response"), "response")
        out["response"] = answer[0].text.strip()
        return [out]


async def _labelled(call: Awaitable[list[Completion]], what: str) -> list[Completion]:
    """Await a call; a ``ParseError`` (empty, truncated) says which of the two calls it was."""
    try:
        return await call
    except ParseError as exc:
        raise ParseError(f"{what}: {exc.reason}", exc.raw) from None


def _system_choices(value: SystemPrompts | None) -> list[tuple[str | None, str, float]]:
    """Normalise ``system_prompt`` into (key, prompt, weight) triples; bad shapes are ConfigErrors."""
    if value is None:
        return []
    if isinstance(value, str):
        return [(None, value, 1.0)] if value.strip() else []
    if isinstance(value, list):
        if not value or not all(isinstance(p, str) and p.strip() for p in value):
            raise ConfigError("magpie: system_prompt list must hold at least one non-empty text")
        return [(None, p, 1.0) for p in value]
    if not value:
        raise ConfigError("magpie: system_prompt mapping is empty; give name: text pairs")
    out: list[tuple[str | None, str, float]] = []
    for name, item in value.items():
        if isinstance(item, str):
            prompt, weight = item, 1.0
        elif (
            isinstance(item, (list, tuple))
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], (int, float))
        ):
            prompt, weight = item[0], float(item[1])
        else:
            raise ConfigError(f"magpie: system_prompt[{name!r}] must be a text or [text, weight]")
        if weight <= 0:
            raise ConfigError(
                f"magpie: system_prompt[{name!r}] has weight {weight}; weights must be positive"
            )
        out.append((str(name), prompt, weight))
    return out

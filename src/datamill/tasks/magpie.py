"""Magpie: instructions from nothing, by letting an aligned model write the user's turn.

Magpie (Xu et al., 2406.08464) sends a chat model only its *pre-query template* — the chat
format up to the start of a user message, e.g. ``<|im_start|>user\\n`` — as a raw prompt. The
model fills in a plausible user request and stops at the end-of-turn token. The request then goes
through the normal chat template to get the answer. A system prompt inside the pre-query
template steers the domain ("You help users with math problems", not "You write math problems").

Multi-turn (``n_turns > 1``), as in the paper: after each answer the conversation so far is
written out in the chat format and the *user* header appended, so the model writes the user's
next message, a follow-up; that message is answered through the chat request as before. The row
gets ``conversation`` (``[{role, content}, ...]``, the shape TRL's conversational SFT reads)
instead of ``instruction``/``response``. Every user turn passes the same checks as a single
instruction, and a follow-up that copies an earlier message is refused too (as is a reply holding
the format's special tokens, which would corrupt the next raw prompt); one bad turn drops the
whole row with a reason naming the turn (``user turn 2: ...``).

Decoding follows the paper by default: the instruction is sampled at temperature 1.0, top_p
1.0; the response is greedy (temperature 0). Sampling follows datamill's one rule (task defaults
< model settings < step options): the step's ``temperature``/``top_p``/``max_tokens`` apply to
every call, and ``instruction_temperature``/``instruction_top_p``/``instruction_max_tokens``
(user-turn calls) and ``response_temperature``/``response_top_p``/``response_max_tokens``
(response calls) beat them for their kind of call.

Reasoning and tool templates (Qwen3-style: ``enable_thinking``, a ``# Tools`` system section,
``<tool_call>`` calls): with ``tools`` (JSON schemas) or ``enable_thinking`` set, the pre-query
and the answer's prompt are rendered by the model's own chat template with them
(``tasks.magpie_render``) and both calls are raw, so the query is written under the tools and
the switch, and the answer sees the same. The answer's thinking (a leading ``<think>`` block, split
off every answer) goes to ``reasoning_output``; Hermes ``<tool_call>{...}</tool_call>`` blocks in
the answer go to ``tool_calls`` (``models.toolcalls``). A template without what was asked is
refused in one line before any call. An instruction never holds a thinking block or a tool call.

Deliberately not here: multi-turn with a literal pre-query string (datamill cannot know how that
format closes a turn; use ``chatml``/``llama3``/``auto``), Magpie's tagging and reward-model
filters (use ``filter_*`` steps and the curation steps).
"""

from __future__ import annotations

import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, TypeVar

from pydantic import Field, PrivateAttr, field_validator, model_validator

from ..errors import ConfigError, Dropped, ModelUnavailable, ParseError
from ..models.base import THINK_TAGS, Completion, Message, Request
from ..models.toolcalls import TOOL_CALL_TAGS, message_tool_calls, parse_tool_calls
from ..rows import Path, Row, is_missing, path_text, why_missing
from ..steps.base import Context
from .base import Task, check_template, no_markup, render_row, template, template_reads


@dataclass(frozen=True)
class PreQuery:
    """A chat format's pre-query template (with and without a system turn) and its stop tokens.

    ``to_assistant`` and ``to_user`` are what a conversation needs besides: the text between a
    user message and the assistant's reply, and between a reply and the next user message (the
    end of the turn plus the user header). A literal template has neither: it makes one turn.
    """

    name: str
    bare: str
    with_system: str | None  #: ``{system}`` marks the system prompt
    stop: tuple[str, ...]
    markers: tuple[str, ...]  #: special tokens that must never appear inside an instruction
    to_assistant: str | None = None
    to_user: str | None = None

    def render(self, system: str | None) -> str:
        if not system:
            return self.bare
        if self.with_system is None:
            raise ConfigError(
                f"the {self.name} pre-query template has no system slot; remove system_prompt"
            )
        return self.with_system.replace("{system}", system)

    def continuation(self, system: str | None, turns: list[Message]) -> str:
        """The raw prompt after finished ``turns`` (user, assistant, ...): it ends at the user header.

        With no turns this is :meth:`render`; the model completes it with the next user message.
        """
        if len(turns) % 2 or any(
            m["role"] != ("user", "assistant")[i % 2] for i, m in enumerate(turns)
        ):
            raise ValueError("turns must alternate user, assistant and end with an assistant reply")
        text = self.render(system)
        if not turns:
            return text
        if self.to_assistant is None or self.to_user is None:
            raise ConfigError(
                f"the {self.name} pre-query template cannot continue a conversation; "
                "use n_turns: 1 or template: chatml, llama3 or auto"
            )
        for i, message in enumerate(turns):
            text += message["content"] + (self.to_assistant if i % 2 == 0 else self.to_user)
        return text


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
        to_assistant="<|im_end|>\n<|im_start|>assistant\n",
        to_user="<|im_end|>\n<|im_start|>user\n",
    ),
    "llama3": PreQuery(
        "llama3",
        bare="<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n",
        with_system="<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n",
        stop=("<|eot_id|>", "<|start_header_id|>", "<|end_of_text|>"),
        markers=_LLAMA3_TOKENS,
        to_assistant="<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        to_user="<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n",
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


def clean_instruction(
    text: str,
    template: PreQuery,
    system: str | None = None,
    think_tags: tuple[str, str] = THINK_TAGS,
) -> str:
    """The user request in a raw pre-query completion, or ``ParseError`` when there is none.

    The text is cut at the first special token (a model that skips the end-of-turn token runs on
    into the next turn), a leading role word line ("user") is removed, and what is left must be
    more than whitespace, a role name or a copy of the system prompt, and hold no thinking tag
    (``think_tags``; a leading block was split off before) and no ``<tool_call>`` tag.
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
    if any(tag in instruction for tag in think_tags):
        raise ParseError("instruction holds a thinking block", text)
    if any(tag in instruction for tag in TOOL_CALL_TAGS):
        raise ParseError("instruction holds a tool call", text)
    return instruction


SystemPrompts = str | list[str] | dict[str, str | tuple[str, float] | list[Any]]
T = TypeVar("T")


class Magpie(Task):
    """Generate ``instruction`` (and ``response``) rows from empty rows (``source: {num_rows: N}``).

    - ``template``: ``auto`` (from the model's chat template: ChatML or Llama-3), ``chatml``
      (alias ``qwen2``), ``llama3``, or a literal pre-query string (then give ``stop``; put
      ``{{ system_prompt }}`` where the system prompt goes).
    - ``system_prompt``: one text; a list (one chosen per row, uniformly); or a mapping
      ``name → text`` or ``name → [text, weight]`` (chosen by relative weight; the row gets
      ``system_prompt_key``). The choice is seeded by the row key, so re-runs choose the same.
      Each text is a Jinja template over the row (``"You are {{ persona }}."``); a row missing
      a value the chosen text reads is recorded as ``empty input``. A row column
      ``system_prompt`` beats the parameter (used as it is).
    - ``only_instruction``: stop after the instruction (no response call).
    - ``include_system_prompt``: also write the chosen prompt to ``system_prompt`` (for
      ``format_sft: {system_prompt: system_prompt}``); with ``n_turns > 1``, keep it as the
      first message of ``conversation`` instead.
    - ``n_turns``: user/assistant exchanges per row; above 1 the row gets ``conversation``
      (rename it to ``messages`` for SFT; ``format_sft`` takes single turns only). Without a
      system prompt, a multi-turn one (``magpie-multi-turn-system.jinja2``) asks for follow-ups.
    - ``end_with_user``: end the conversation on the last user message, without its answer
      (needs ``n_turns >= 2``; for one user message use ``only_instruction``).
    - ``tools``: tools (JSON schemas, OpenAI's ``{"type": "function", "function": {...}}`` or
      the bare ``{"name", "description", "parameters"}``) rendered into the prompt by the model's
      template, so the queries are tool-directed; the row gets ``tools`` and ``tool_calls``
      (the answer's ``<tool_call>`` blocks, TRL's message layout; the answer's text without
      them is ``response``). Needs ``template: auto``, a template that renders tools and asks for
      ``<tool_call>`` calls, and ``n_turns: 1``.
    - ``enable_thinking``: the template's thinking switch, rendered into both prompts (needs
      ``template: auto`` and a template that reads ``enable_thinking``).
    - ``reasoning_output``: the column for the answer's thinking (default ``reasoning`` when
      ``enable_thinking: true``, else none: the thinking is left out); with ``n_turns > 1`` it
      is kept on each assistant message as ``reasoning_content`` instead.
    """

    kind: ClassVar[str] = "magpie"
    template: str = "auto"
    system_prompt: SystemPrompts | None = None
    only_instruction: bool = False
    include_system_prompt: bool = False
    n_turns: int = 1
    end_with_user: bool = False
    stop: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    enable_thinking: bool | None = None
    reasoning_output: str | None = None
    instruction_temperature: float | None = Field(default=None, ge=0.0)
    instruction_top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    instruction_max_tokens: int | None = Field(default=None, ge=1)
    response_temperature: float | None = Field(default=None, ge=0.0)
    response_top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    response_max_tokens: int | None = Field(default=None, ge=1)
    defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "instruction": {"temperature": 1.0, "top_p": 1.0, "max_tokens": 128},
        "response": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 512},
    }
    later_fields: ClassVar[tuple[str, ...]] = (
        "think_tags",
        "tools",
        "enable_thinking",
        "reasoning_output",
    )
    _choices: list[tuple[str | None, str, float]] = PrivateAttr(default_factory=list)
    _fixed: PreQuery | None = PrivateAttr(default=None)
    _rendered: dict[str, PreQuery] = PrivateAttr(default_factory=dict)

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

    @field_validator("n_turns", mode="before")
    @classmethod
    def _turns(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"magpie: n_turns must be a whole number >= 1, not {v!r}")
        return v

    @field_validator("tools")
    @classmethod
    def _tools(cls, v: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        return None if v is None else [_function_tool(t, i) for i, t in enumerate(v)]

    @model_validator(mode="after")
    def _setup(self) -> Magpie:
        if self.tools is not None and not self.tools:
            raise ConfigError("magpie: tools is empty; give at least one tool or remove tools")
        if (self.tools or self.enable_thinking is not None) and self.template != "auto":
            raise ConfigError(
                "magpie: tools and enable_thinking are rendered by the model's own chat template; "
                f"use template: auto, not {self.template!r}"
            )
        if self.tools and self.n_turns > 1:
            raise ConfigError(
                "magpie: tools make one exchange (a call needs its result before a follow-up); "
                "use n_turns: 1"
            )
        if self.enable_thinking and self.reasoning_output is None:
            self.reasoning_output = "reasoning"
        if self.n_turns > 1 and self.only_instruction:
            raise ConfigError(
                "magpie: only_instruction makes one user message, so n_turns must be 1; "
                "for conversations that end on a user message use end_with_user: true"
            )
        if self.end_with_user and self.n_turns < 2:
            raise ConfigError(
                "magpie: end_with_user needs n_turns >= 2; for one user message use only_instruction: true"
            )
        self._choices = _system_choices(self.system_prompt)
        for key, prompt, _ in self._choices:
            where = "magpie system_prompt" + (f"[{key!r}]" if key is not None else "")
            check_template(prompt, where)
        if self.template in TEMPLATES:
            self._fixed = TEMPLATES[self.template]
        elif self.template != "auto":
            if not self.stop:
                raise ConfigError(
                    "magpie: a literal template needs stop (the end-of-turn token(s)), e.g. stop: ['<|im_end|>']"
                )
            rest = re.sub(r"\{\{\s*system_prompt\s*\}\}", "", self.template)
            no_markup(
                "magpie template (a literal pre-query string)",
                rest,
                "only {{ system_prompt }} is filled in there; put per-row text in system_prompt, "
                "which is a template ('You are {{ persona }}.')",
            )
            self._fixed = literal_template(self.template, self.stop)
            if self.n_turns > 1:
                raise ConfigError(
                    "magpie: n_turns > 1 needs a chat format datamill knows (template: auto, chatml or llama3), not a literal pre-query string"
                )
        if self._fixed is not None and any(p for _, p, _ in self._choices):
            self._fixed.render("x")  # a template without a system slot fails now, not per row
        return self

    def required_columns(self) -> list[str]:
        return sorted({c for _, p, _ in self._choices for c in template_reads(p).columns})

    def required_paths(self) -> list[Path]:
        if len(self._choices) != 1:  # only the chosen text's places matter: checked per row
            return []
        return list(template_reads(self._choices[0][1]).paths)

    def text_paths(self) -> list[Path]:
        paths = [p for _, prompt, _ in self._choices for p in template_reads(prompt).rendered]
        return list(dict.fromkeys(paths))

    def produces(self) -> list[str]:
        if self.n_turns > 1:
            cols = ["conversation"]
        elif self.only_instruction:
            cols = ["instruction"]
        else:
            cols = ["instruction", "response"]
            if self.reasoning_output:
                cols.append(self.reasoning_output)
            if self.tools:
                cols.append("tool_calls")
        if self.tools and self.n_turns == 1:
            cols.append("tools")
        if isinstance(self.system_prompt, dict):
            cols.append("system_prompt_key")
        if self.include_system_prompt and self.n_turns == 1:
            cols.append("system_prompt")
        return cols

    def updates(self) -> list[str]:
        return ["system_prompt"]  # a row's own system prompt is read, and written back unchanged

    def options(self, kind: str) -> dict[str, Any]:
        """The step's own options for ``instruction`` or ``response`` calls (``None``: unset)."""
        return {
            "temperature": getattr(self, f"{kind}_temperature"),
            "top_p": getattr(self, f"{kind}_top_p"),
            "max_tokens": getattr(self, f"{kind}_max_tokens"),
        }

    def pre_query(self, ctx: Context) -> PreQuery:
        if self._fixed is not None:
            return self._fixed
        info = ctx.model_info(self.model)
        found = detect_template(getattr(info, "chat_template", None))
        if found is None:
            template = getattr(info, "chat_template", None)
            extra = getattr(info, "extra", None) or {}
            why = (
                "its chat template is neither ChatML nor Llama-3"
                if template
                else f"the server at {extra['base_url']} does not tell its chat template "
                "(llama.cpp's llama-server does, at /props)"
                if extra.get("base_url")
                else "it does not tell its chat template"
            )
            raise ModelUnavailable(
                f"magpie: cannot tell the chat format of model {info.name!r}: {why}; "
                "set template: chatml, llama3 or a literal pre-query string with stop"
            )
        if not self.tools and self.enable_thinking is None:
            return found
        source: str = info.chat_template
        if source not in self._rendered:
            from .magpie_render import rendered_pre_query

            tools = tuple(self.tools) if self.tools else None
            self._rendered[source] = rendered_pre_query(
                found, source, info.name, tools, self.enable_thinking
            )
        return self._rendered[source]

    def choose_system(self, row: Row, ctx: Context) -> tuple[str | None, str | None]:
        """(key, prompt): the row's own ``system_prompt`` column, else a seeded choice."""
        own = row.get("system_prompt")
        if isinstance(own, str) and not is_missing(own):
            return None, own
        if not self._choices:
            return None, None
        if len(self._choices) == 1:
            key, prompt, _ = self._choices[0]
        else:
            rng = random.Random(self.row_seed(ctx, "/system"))
            key, prompt, _ = rng.choices(self._choices, weights=[w for _, _, w in self._choices])[0]
        for path in template_reads(prompt).paths:
            what = why_missing(row, path)
            if what is not None:
                raise Dropped(
                    "empty input",
                    f"{path_text(path)} is {what}; the system prompt of {self.label} reads it",
                )
        return key, render_row(prompt, row, self.label).strip()

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        info = ctx.model_info(self.model)
        if not getattr(info, "raw_prompt", True):
            raise ModelUnavailable(
                f"magpie needs raw prompts, which model {info.name!r} does not accept; use llamacpp, vllm, transformers or an endpoint with /v1/completions"
            )
        pre = self.pre_query(ctx)
        key, system = self.choose_system(row, ctx)
        if system is None and self.n_turns > 1:
            system = default_multi_turn_system()
        try:
            pre.render(system)
        except ConfigError:  # a row's own system prompt, and a template without a slot for it
            raise Dropped("template has no system slot", f"system prompt {system!r}") from None
        out: Row = dict(row)
        if isinstance(self.system_prompt, dict):
            out["system_prompt_key"] = key
        if self.n_turns > 1:
            out["conversation"] = await self.converse(ctx, pre, system)
            return [out]
        tags = self.tags_for(ctx, self.model)
        raw = await _labelled(
            self.call_user(ctx, self.ask(pre, system, []), "/instruction", tags), "instruction"
        )
        instruction = clean_instruction(raw[0].text, pre, system, tags)
        out["instruction"] = instruction
        if self.include_system_prompt:
            out["system_prompt"] = system
        if self.tools:
            out["tools"] = list(self.tools)
        if self.only_instruction:
            return [out]
        request = self.answer(system, [{"role": "user", "content": instruction}], pre)
        answer = await _labelled(
            self.call(ctx, request, salt="/response", options=self.options("response")),
            "response",
        )
        text = answer[0].text.strip()
        if self.tools:
            text, calls = _labelled_parse(lambda: self.tool_calls(answer[0]), "response")
            out["tool_calls"] = message_tool_calls(calls)
        out["response"] = text
        if self.reasoning_output:
            out[self.reasoning_output] = answer[0].reasoning
        return [out]

    def tool_calls(self, completion: Completion) -> tuple[str, tuple[Any, ...]]:
        """(answer text without the calls, the calls): ``<tool_call>`` blocks in the text, after
        any a server sent apart; ``ParseError`` for a malformed block or an unknown tool."""
        try:
            text, calls = parse_tool_calls(completion.text)
        except ValueError as exc:
            raise ParseError(f"malformed tool call ({exc})", completion.text) from None
        calls = (*completion.tool_calls, *calls)
        known = {t["function"]["name"] for t in self.tools or []}
        for call in calls:
            if call["name"] not in known:
                raise ParseError(f"call to unknown tool {call['name']!r}", completion.text)
        return text.strip(), calls

    async def converse(self, ctx: Context, pre: PreQuery, system: str | None) -> list[Message]:
        """``n_turns`` user/assistant exchanges; a bad turn raises ``ParseError`` naming it.

        With ``reasoning_output``, each assistant message keeps its thinking as
        ``reasoning_content`` (the prompts of later turns never hold it)."""
        turns: list[Message] = []
        thoughts: dict[int, str] = {}
        tags = self.tags_for(ctx, self.model)
        for n in range(1, self.n_turns + 1):
            salt = "" if n == 1 else f"#{n}"  # turn 1 makes the very calls of a one-turn run
            what = f"user turn {n}"
            raw = await _labelled(
                self.call_user(ctx, self.ask(pre, system, turns), "/instruction" + salt, tags),
                what,
            )
            try:
                user = clean_instruction(raw[0].text, pre, system, tags)
                if _normal(user) in {_normal(m["content"]) for m in turns}:
                    raise ParseError("follow-up repeats an earlier message", raw[0].text)
            except ParseError as exc:
                raise ParseError(f"{what}: {exc.reason}", exc.raw) from None
            turns.append({"role": "user", "content": user})
            if n == self.n_turns and self.end_with_user:
                break
            what = f"assistant turn {n}"
            reply = await _labelled(
                self.call(
                    ctx,
                    self.answer(system, turns, pre),
                    salt="/response" + salt,
                    options=self.options("response"),
                ),
                what,
            )
            text = reply[0].text.strip()
            if any(token in text for token in pre.markers):  # it would corrupt the next raw prompt
                raise ParseError(f"{what}: reply holds template tokens", reply[0].text)
            if self.reasoning_output and reply[0].reasoning:
                thoughts[len(turns)] = reply[0].reasoning
            turns.append({"role": "assistant", "content": text})
        head: list[Message] = (
            [{"role": "system", "content": system}] if system and self.include_system_prompt else []
        )
        kept = [
            {**m, "reasoning_content": thoughts[i]} if i in thoughts else m
            for i, m in enumerate(turns)
        ]
        return head + kept

    async def call_user(
        self, ctx: Context, request: Request, salt: str, tags: tuple[str, str]
    ) -> list[Completion]:
        """:meth:`call` for a user turn. A leading thinking block is split off and dropped, but
        the pre-query never opens one, so text before a lone close tag is no thinking: it is
        kept whole, and :func:`clean_instruction` refuses it."""
        sent = await self.send(ctx, request, salt, options=self.options("instruction"))
        out = []
        for completion in sent:
            checked = self.checked(completion, request, tags, False)
            split = checked.reasoning != completion.reasoning
            if split and not completion.text.lstrip().startswith(tags[0]):
                checked = replace(checked, text=completion.text, reasoning=completion.reasoning)
            out.append(checked)
        return out

    def ask(self, pre: PreQuery, system: str | None, turns: list[Message]) -> Request:
        """The raw request whose completion is the next user message."""
        return Request(
            prompt=pre.continuation(system, turns),
            stop=tuple(dict.fromkeys([*pre.stop, *(self.stop or [])])),
            **self.request_defaults("instruction"),
        )

    def answer(
        self, system: str | None, turns: list[Message], pre: PreQuery | None = None
    ) -> Request:
        """The request whose completion is the assistant's reply to the last user message: a
        chat request, or the raw prompt the model's template renders when ``pre`` is rendered
        (tools, thinking switch)."""
        from .magpie_render import RenderedPreQuery

        if isinstance(pre, RenderedPreQuery):
            return Request(
                prompt=pre.answer_prompt(system, turns),
                stop=tuple(dict.fromkeys([*pre.stop, *(self.stop or [])])),
                **self.request_defaults("response"),
            )
        head: list[Message] = [{"role": "system", "content": system}] if system else []
        return Request(messages=tuple(head + turns), **self.request_defaults("response"))


def default_multi_turn_system() -> str:
    """The system prompt of a multi-turn run given none: it asks for a conversation with follow-ups."""
    return template("magpie-multi-turn-system.jinja2").render().strip()


def _normal(text: str) -> str:
    return " ".join(text.split()).casefold()


def _labelled_parse(parse: Callable[[], T], what: str) -> T:
    """Run a parse; a ``ParseError`` says which of the two calls' output it was about."""
    try:
        return parse()
    except ParseError as exc:
        raise ParseError(f"{what}: {exc.reason}", exc.raw) from None


def _function_tool(tool: Any, index: int) -> dict[str, Any]:
    """A tool in OpenAI's ``{"type": "function", "function": {...}}`` layout (the bare
    ``{"name", "description", "parameters"}`` is wrapped); ``ValueError`` without a name."""
    if not isinstance(tool, dict):
        raise ValueError(f"tools[{index}] must be a JSON schema object, not {type(tool).__name__}")
    function = tool.get("function", tool) if tool.get("type", "function") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise ValueError(
            f"tools[{index}] needs a function name: "
            '{"type": "function", "function": {"name": ..., "parameters": {...}}}'
        )
    return {"type": "function", "function": dict(function)}


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

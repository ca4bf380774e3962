"""Magpie's pre-query rendered from the model's own Jinja chat template (tools, thinking switch).

The fixed ChatML / Llama-3 pre-queries (``tasks.magpie.TEMPLATES``) cannot hold what a modern
template adds around the user turn: a ``# Tools`` system section listing JSON schemas (Qwen3,
Hermes), or the ``<think>\\n\\n</think>`` a template writes after the assistant header when its
``enable_thinking`` switch is off. :class:`RenderedPreQuery` renders the conversation with the
template itself (messages, ``tools``, ``enable_thinking``) up to a placeholder user message and
cuts there: the text before it is the pre-query, whatever the template puts in. The assistant's
prompt is rendered the same way (generation prompt on), so the answer sees the very tools and
switch the query was written under.

:func:`template_support` says what a template can do (it reads ``tools``; it reads
``enable_thinking``; it asks for Hermes ``<tool_call>`` calls), from the template's own syntax
tree; :func:`rendered_pre_query` refuses, in one line, a template that lacks what was asked.

Deliberately not here: the fixed templates and the instruction cleaning (``tasks.magpie``),
parsing tool calls (``models.toolcalls``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ModelUnavailable
from ..models.base import Message
from ..models.toolcalls import TOOL_CALL_TAGS, writes_tool_calls
from .magpie import PreQuery

#: the user message the template renders, cut at to get the pre-query (plain letters: templates
#: may trim or escape the content)
PLACEHOLDER = "DATAMILLMAGPIEQUERY7F3A"

#: bos/eos texts a template may print, per chat format (ChatML templates print neither)
_SPECIAL = {"chatml": ("", "<|im_end|>"), "llama3": ("<|begin_of_text|>", "<|eot_id|>")}


@dataclass(frozen=True)
class TemplateSupport:
    """What a Jinja chat template can render: ``tools`` (it reads the ``tools`` variable),
    ``thinking_switch`` (it reads ``enable_thinking``), ``hermes_calls`` (it asks for calls in
    ``<tool_call>`` blocks, JSON or Qwen3-Coder XML inside, which datamill parses)."""

    tools: bool
    thinking_switch: bool
    hermes_calls: bool


def compile_template(source: str, family: str) -> Any:
    """The template compiled as the embedded backend renders chats (``llamacpp.ChatTemplate``:
    sandboxed jinja2, Hugging Face's globals), with the format's bos/eos texts."""
    from ..models.llamacpp import ChatTemplate  # jinja2 only; no llama.cpp import

    return ChatTemplate(source, *_SPECIAL.get(family, ("", "")))


def template_support(source: str) -> TemplateSupport:
    """What ``source`` (a Jinja chat template) reads, from its syntax tree."""
    import jinja2.ext
    from jinja2 import meta
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(extensions=[jinja2.ext.loopcontrols])
    names = meta.find_undeclared_variables(env.parse(source))
    return TemplateSupport(
        tools="tools" in names,
        thinking_switch="enable_thinking" in names,
        hermes_calls=writes_tool_calls(source, TOOL_CALL_TAGS),
    )


@dataclass(frozen=True)
class RenderedPreQuery(PreQuery):
    """A :class:`PreQuery` whose prompts the model's chat template renders (see the module
    docstring). ``render``/``continuation`` give the raw prompt that ends at the user header;
    :meth:`answer_prompt` the raw prompt that ends at the assistant header."""

    chat: Any = None  #: the compiled template (``llamacpp.ChatTemplate``)
    tools: tuple[dict[str, Any], ...] | None = None
    enable_thinking: bool | None = None
    model: str = ""

    def _render(self, messages: list[Message], generation: bool) -> str:
        import jinja2

        kwargs: dict[str, Any] = {}
        if self.tools:
            kwargs["tools"] = list(self.tools)
        if self.enable_thinking is not None:
            kwargs["enable_thinking"] = self.enable_thinking
        try:
            text: str = self.chat.template.render(
                messages=messages,
                bos_token=self.chat.bos_token,
                eos_token=self.chat.eos_token,
                add_generation_prompt=generation,
                **kwargs,
            )
        except jinja2.TemplateError as exc:
            raise ModelUnavailable(
                f"magpie: the chat template of model {self.model!r} cannot render a "
                f"conversation: {exc}; set template: chatml or llama3 (without tools/enable_thinking)"
            ) from exc
        return text

    @staticmethod
    def _messages(system: str | None, turns: list[Message]) -> list[Message]:
        head: list[Message] = [{"role": "system", "content": system}] if system else []
        return head + [{"role": m["role"], "content": m["content"]} for m in turns]

    def render(self, system: str | None) -> str:
        return self.continuation(system, [])

    def continuation(self, system: str | None, turns: list[Message]) -> str:
        messages = self._messages(system, turns)
        text = self._render([*messages, {"role": "user", "content": PLACEHOLDER}], False)
        if text.count(PLACEHOLDER) != 1:
            raise ModelUnavailable(
                f"magpie: the chat template of model {self.model!r} does not print a user "
                "message as it was given, so no pre-query can be cut from it; set template: "
                "chatml or llama3 (without tools/enable_thinking)"
            )
        return text[: text.index(PLACEHOLDER)]

    def answer_prompt(self, system: str | None, turns: list[Message]) -> str:
        """The raw prompt whose completion is the assistant's reply to the last user message."""
        return self._render(self._messages(system, turns), True)


def rendered_pre_query(
    found: PreQuery,
    source: str,
    model: str,
    tools: tuple[dict[str, Any], ...] | None,
    enable_thinking: bool | None,
) -> RenderedPreQuery:
    """The pre-query of ``source`` with ``tools`` and the thinking switch rendered in.

    ``found`` is the chat format detected from the template (its stop tokens and markers are
    kept). Raises
    :class:`ModelUnavailable` (one line, before any call) when the template lacks what is asked:
    it never reads ``tools``, asks for calls in a format other than ``<tool_call>``, never reads
    ``enable_thinking``, or renders the tools nowhere in the prompt.
    """
    support = template_support(source)
    where = f"magpie: the chat template of model {model!r}"
    if tools and not support.tools:
        raise ModelUnavailable(
            f"{where} does not render tools (it never reads `tools`); remove tools, or use a "
            "model whose template has a tools section (Qwen3, Hermes: <tool_call> calls)"
        )
    if tools and not support.hermes_calls:
        raise ModelUnavailable(
            f"{where} asks for tool calls in a format datamill cannot parse (only Hermes/Qwen "
            "<tool_call>{...}</tool_call>); remove tools, or use a Qwen3/Hermes-style model"
        )
    if enable_thinking is not None and not support.thinking_switch:
        raise ModelUnavailable(
            f"{where} has no thinking switch (it never reads `enable_thinking`); remove "
            "enable_thinking, or use a model whose template has one (Qwen3-style)"
        )
    pre = RenderedPreQuery(
        f"{found.name} (rendered)",
        bare="",
        with_system="{system}",
        stop=found.stop,
        markers=found.markers,
        chat=compile_template(source, found.name),
        tools=tools,
        enable_thinking=enable_thinking,
        model=model,
    )
    if tools:
        name = str(tools[0].get("function", tools[0]).get("name"))
        if name not in pre.render(None):
            raise ModelUnavailable(
                f"{where} reads `tools` but prints none of them before the user turn; remove "
                "tools, or use a model whose template has a tools section (Qwen3, Hermes)"
            )
    return pre

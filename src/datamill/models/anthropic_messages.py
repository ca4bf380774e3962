"""The Anthropic Messages API's request and answer bodies, to and from the model seam (pure).

:func:`messages_body` turns a :class:`~datamill.models.base.Request` into the JSON body of
``POST /v1/messages`` (the same body is a Message Batches request's ``params``);
:func:`parse_message` turns a Message object back into a :class:`~datamill.models.base.Completion`.
Neither touches the network, the environment or a clock: the same input gives the same output.

The mapping:

- ``system`` messages (and ``developer`` ones) → the top-level ``system`` text, joined by blank
  lines; ``user``/``assistant`` messages stay in order. An assistant message's ``tool_calls``
  (OpenAI's shape, or the seam's ``{id, name, arguments}``) → ``tool_use`` blocks; ``tool``
  messages (``tool_call_id``, ``content``) → ``tool_result`` blocks of one user turn.
- ``max_tokens`` is required by Anthropic and always sent: the request's, plus the thinking
  budget when thinking is on (``max_tokens`` stays the room the *answer* has).
- ``temperature`` (Anthropic allows 0-1: above is refused here in one line) and ``top_p`` (only
  when not 1). With thinking on Anthropic takes neither (temperature is fixed at 1, ``top_p``
  only from 0.95), so neither is sent then. ``seed`` has no Anthropic field: it is not sent.
- ``stop`` → ``stop_sequences``; ``stop_reason`` → finish reason: ``end_turn``/``stop_sequence``
  → ``stop``, ``max_tokens``/``model_context_window_exceeded`` → ``length``, ``tool_use`` →
  ``tool_calls``, ``refusal`` → ``content_filter``, anything else → ``other``.
- ``Request.tools`` (OpenAI function schemas) → ``tools: [{name, description, input_schema}]``;
  ``tool_choice`` ``auto``/``none``/``required``/a named function → ``auto``/``none``/``any``/
  ``tool``. ``tool_use`` blocks → ``Completion.tool_calls`` (``arguments``: the input as JSON).
- Thinking: ``enable_thinking: true`` (budget ``thinking_budget``) or ``reasoning_effort``
  (:data:`EFFORT_BUDGETS`) → ``thinking: {type: enabled, budget_tokens}``; ``thinking`` blocks →
  ``Completion.reasoning``; ``enable_thinking: false`` wins over an effort.
- ``Request.json_schema``: Anthropic has no schema-constrained output form, so with
  ``schema_format: tool`` (default) the schema becomes the ``input_schema`` of a tool named
  :data:`SCHEMA_TOOL` the model is made to call (``tool_choice: {type: tool}``), and that call's
  input is the completion's text, as JSON. A schema that is not an object is wrapped as
  ``{"value": schema}`` (tool :data:`SCHEMA_VALUE_TOOL`) and unwrapped again. With thinking on
  Anthropic refuses a forced tool, so the tool is offered (``auto``) and the system prompt asks
  for it. ``schema_format: prompt`` writes the schema into the system prompt instead (the tasks'
  parsers read the JSON from the text); ``none`` sends nothing.
- Usage: ``input_tokens`` (plus cache writes and reads) → ``prompt_tokens``, ``output_tokens``
  → ``completion_tokens``.

Deliberately not here: HTTP, retries, keys (``models.anthropic``), batches, images, prompt
caching, streaming.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from ..errors import ConfigError, ModelError
from .base import Completion, FinishReason, Request, ToolCall

#: the Anthropic API version every request names (``anthropic-version`` header)
ANTHROPIC_VERSION = "2023-06-01"
#: the tool whose input is a structured answer (an object schema)
SCHEMA_TOOL = "datamill_answer"
#: the same for a schema that is not an object: its input is ``{"value": ANSWER}``
SCHEMA_VALUE_TOOL = "datamill_answer_value"
#: thinking budget (tokens) per ``reasoning_effort``; Anthropic's minimum budget is 1024
EFFORT_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}
MIN_THINKING_BUDGET = 1024

#: every ``stop_reason`` Anthropic documents, mapped on purpose (anything else is ``other``)
STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "other",
}

SchemaMode = Literal["tool", "prompt", "none"]


@dataclass(frozen=True)
class BodyOptions:
    """What a body needs besides the request: the model, how a schema travels, the thinking
    budget of ``enable_thinking: true`` (tokens, at least 1024) and extra body fields (merged
    last)."""

    model: str
    schema_format: SchemaMode = "tool"
    thinking_budget: int = 4096
    extra_body: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, options: BodyOptions | Mapping[str, Any]) -> BodyOptions:
        """``options`` as a :class:`BodyOptions` (a mapping may hold other keys too)."""
        if isinstance(options, BodyOptions):
            return options
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in options.items() if k in known and v is not None})


def messages_body(request: Request, options: BodyOptions | Mapping[str, Any]) -> dict[str, Any]:
    """The ``POST /v1/messages`` body for one sample of ``request`` (Anthropic has no ``n``).

    Raises :class:`ConfigError` (one line) for what Anthropic cannot take: a raw prompt, a
    temperature above 1, a forced tool together with thinking.
    """
    o = BodyOptions.of(options)
    if request.messages is None:
        raise ConfigError(
            "the anthropic backend takes chat messages only, not a raw prompt (Magpie needs a "
            "backend with raw_prompt, e.g. llamacpp or openai:MODEL@URL)"
        )
    system, messages = _messages(request.messages)
    budget = _thinking_budget(request, o.thinking_budget)
    body: dict[str, Any] = {"model": o.model, "max_tokens": request.max_tokens + (budget or 0)}
    if budget:
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    else:
        if not 0.0 <= request.temperature <= 1.0:
            raise ConfigError(
                f"temperature {request.temperature:g} is outside Anthropic's range 0-1; "
                "set a temperature from 0 to 1 for this model"
            )
        body["temperature"] = request.temperature
        if request.top_p != 1.0:
            body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    tools = [_tool(t) for t in request.tools or ()]
    choice = _tool_choice(request.tool_choice) if request.tool_choice is not None else None
    if request.json_schema is not None and o.schema_format == "tool":
        name, schema = _schema_tool(request.json_schema)
        tools.append(
            {
                "name": name,
                "description": "Give your answer as this tool's input, matching its schema.",
                "input_schema": schema,
            }
        )
        choice = {"type": "tool", "name": name}
        if budget:  # Anthropic refuses a forced tool with thinking: offer it and ask for it
            choice = {"type": "auto"}
            system.append(f"Give your final answer by calling the {name} tool, and only that.")
    elif request.json_schema is not None and o.schema_format == "prompt":
        schema_text = json.dumps(request.json_schema, ensure_ascii=False, sort_keys=True)
        system.append(f"Reply with JSON only, matching this JSON schema: {schema_text}")
    if budget and choice is not None and choice["type"] in ("any", "tool"):
        raise ConfigError(
            "Anthropic does not take a forced tool_choice (required or a named tool) with "
            "thinking on; use tool_choice auto or turn thinking off"
        )
    if system:
        body["system"] = "\n\n".join(system)
    body["messages"] = messages
    if tools:
        body["tools"] = tools
        if choice is not None:
            body["tool_choice"] = choice
    body.update(o.extra_body)
    return body


def parse_message(data: Any) -> Completion:
    """A Message object (``{"type": "message", "content": [...], "stop_reason", "usage"}``) →
    :class:`Completion`. Raises :class:`ModelError` (``bad response``, retryable) for a body
    that is not a message."""
    content = data.get("content") if isinstance(data, dict) else None
    if not isinstance(content, list):
        raise ModelError(
            f"an Anthropic answer without content blocks: {str(data)[:120]}",
            retryable=True,
            reason="bad response",
        )
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[ToolCall] = []
    answered = False  # the structured answer came as the schema tool's input
    for i, block in enumerate(b for b in content if isinstance(b, dict)):
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            if not answered:  # words after the structured answer are not part of it
                texts.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thoughts.append(block["thinking"])
        elif kind == "tool_use" and isinstance(block.get("name"), str):
            value = block.get("input") if block.get("input") is not None else {}
            if block["name"] in (SCHEMA_TOOL, SCHEMA_VALUE_TOOL) and not answered:
                if block["name"] == SCHEMA_VALUE_TOOL and isinstance(value, dict):
                    value = value.get("value")
                texts = [json.dumps(value, ensure_ascii=False)]
                answered = True
                continue
            ident = block.get("id")
            calls.append(
                {
                    "id": ident if isinstance(ident, str) and ident else f"toolu_{i}",
                    "name": block["name"],
                    "arguments": json.dumps(value, ensure_ascii=False),
                }
            )
    raw = data.get("stop_reason")
    finish: FinishReason = STOP_REASONS.get(raw, "other") if raw else "stop"
    if answered and finish == "tool_calls" and not calls:
        finish = "stop"  # the answer itself was the tool call
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    prompt = sum(
        _count(usage.get(k))
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    reasoning = "\n\n".join(thoughts) if thoughts else None
    return Completion(
        text="".join(texts),
        finish_reason=finish,
        prompt_tokens=prompt,
        completion_tokens=_count(usage.get("output_tokens")),
        reasoning=reasoning,
        tool_calls=tuple(calls),
    )


# -- pieces -----------------------------------------------------------------------------------
def _messages(messages: tuple[dict[str, Any], ...]) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, Anthropic messages). Consecutive tool results share one user turn."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        if role in ("system", "developer"):
            if _plain(m.get("content")):
                system.append(_plain(m.get("content")))
            continue
        if role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": str(m.get("tool_call_id") or m.get("tool_use_id") or ""),
                "content": _plain(m.get("content")),
            }
            last = out[-1] if out else None
            if last is not None and last["role"] == "user" and isinstance(last["content"], list):
                last["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
            continue
        if role not in ("user", "assistant"):
            raise ConfigError(
                f"a message with role {role!r}: Anthropic takes system, user, assistant and tool"
            )
        text = _plain(m.get("content"))
        calls = [_tool_use(c, i) for i, c in enumerate(m.get("tool_calls") or ())]
        if role == "assistant" and calls:
            blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
            out.append({"role": "assistant", "content": blocks + calls})
            continue
        last = out[-1] if out else None
        if role == "user" and last is not None and last["role"] == "user":
            if isinstance(last["content"], list):  # a user turn holding tool results
                last["content"].append({"type": "text", "text": text})
                continue
        out.append({"role": role, "content": text})
    return system, out


def _plain(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return "" if content is None else str(content)


def _tool_use(call: Any, index: int) -> dict[str, Any]:
    """One tool call an assistant message made (OpenAI's shape or the seam's) → ``tool_use``."""
    if not isinstance(call, dict):
        raise ConfigError(f"a message's tool call must be a mapping, got {call!r}")
    function = call.get("function") if isinstance(call.get("function"), dict) else call
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            raise ConfigError(
                f"tool call {function.get('name')!r}: arguments are not JSON: {arguments[:80]!r}"
            ) from None
    return {
        "type": "tool_use",
        "id": str(call.get("id") or f"toolu_{index}"),
        "name": str(function.get("name")),
        "input": arguments if isinstance(arguments, dict) else {"value": arguments},
    }


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI function tool → an Anthropic tool; one already in Anthropic's shape is kept."""
    if "input_schema" in tool or tool.get("type") not in (None, "function"):
        return dict(tool)  # Anthropic's own shape, or a server tool (web_search…)
    function = tool.get("function", tool)
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise ConfigError(f"a tool needs a function name: {str(tool)[:120]}")
    out: dict[str, Any] = {"name": function["name"]}
    if function.get("description"):
        out["description"] = str(function["description"])
    out["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return out


def _tool_choice(choice: str | dict[str, Any]) -> dict[str, Any]:
    """``auto``/``none``/``required``/``{"type": "function", "function": {"name"}}`` → Anthropic's."""
    if isinstance(choice, str):
        kinds = {"auto": "auto", "none": "none", "required": "any", "any": "any"}
        if choice not in kinds:
            raise ConfigError(
                f"tool_choice {choice!r}: use auto, none, required or a function's name"
            )
        return {"type": kinds[choice]}
    if choice.get("type") in ("auto", "none", "any", "tool"):
        return dict(choice)  # Anthropic's own shape
    name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    if not isinstance(name, str):
        raise ConfigError(f"tool_choice {choice!r}: a named choice needs function.name")
    return {"type": "tool", "name": name}


def _schema_tool(schema: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(tool name, input schema): an object schema as it is, anything else wrapped."""
    if schema.get("type") == "object":
        return SCHEMA_TOOL, schema
    wrapped = {"type": "object", "properties": {"value": schema}, "required": ["value"]}
    return SCHEMA_VALUE_TOOL, wrapped


def _thinking_budget(request: Request, default: int) -> int | None:
    """Thinking tokens this request asks for, or None when thinking is off."""
    if request.enable_thinking is False:
        return None
    if request.reasoning_effort is not None:
        if request.reasoning_effort not in EFFORT_BUDGETS:
            raise ConfigError(
                f"reasoning_effort {request.reasoning_effort!r}: use one of "
                + ", ".join(EFFORT_BUDGETS)
            )
        return EFFORT_BUDGETS[request.reasoning_effort]
    if request.enable_thinking:
        return max(MIN_THINKING_BUDGET, default)
    return None


def _count(value: Any) -> int:
    """A token count; anything not a whole number ≥ 0 is unknown (0)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, float) and value.is_integer():
        return max(0, int(value))
    return 0

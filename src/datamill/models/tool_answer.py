"""Tool calls from models that cannot take ``Request.tools`` natively, and from chat templates
that cannot render tools: the tools listed in a system message, the answer constrained by
:func:`calls_schema` (a GBNF grammar on the embedded engine, a JSON schema elsewhere) and parsed
back into :data:`~datamill.models.base.ToolCall` s by :func:`parse_answer`.

The answer is one JSON object: ``{"tool_calls": [{"name": ..., "arguments": {...}}, ...]}``, or
``{"answer": "..."}`` when the model answers without a call (allowed unless ``tool_choice`` is
``required`` or names a function). Each call's ``arguments`` are constrained by its tool's own
parameter schema (``anyOf`` over the tools, the name a ``const``).

Deliberately not here: sending requests (backends, ``tasks.tool_calls``), checking calls
(``datamill.tools.execute``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .base import Message, ToolCall

__all__ = [
    "ANSWER_PROMPT",
    "answer_messages",
    "calls_schema",
    "parse_answer",
    "plain_messages",
    "renders_tools",
    "tools_prompt",
    "wire_calls",
    "with_tools_prompt",
]


def _names(tools: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> list[str]:
    return [str(t["function"]["name"]) for t in tools]


def calls_schema(
    tools: tuple[dict[str, Any], ...] | list[dict[str, Any]], tool_choice: Any = "auto"
) -> dict[str, Any]:
    """The JSON schema of an answer under ``tools`` and ``tool_choice`` (see the module):
    ``required`` or a named function → calls only (at least one; a named function: only it);
    ``auto`` (or None) → calls or ``{"answer": text}``."""
    chosen = None
    if isinstance(tool_choice, dict):
        chosen = (tool_choice.get("function") or {}).get("name")
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t["function"]["name"]},
                "arguments": t["function"].get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
        }
        for t in tools
        if chosen is None or t["function"]["name"] == chosen
    ]
    calls = {
        "type": "object",
        "properties": {
            "tool_calls": {
                "type": "array",
                "items": options[0] if len(options) == 1 else {"anyOf": options},
                "minItems": 1,
                "maxItems": 4,
            }
        },
        "required": ["tool_calls"],
    }
    if tool_choice == "required" or chosen is not None:
        return calls
    answer = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    }
    return {"anyOf": [calls, answer]}


def tools_prompt(
    tools: tuple[dict[str, Any], ...] | list[dict[str, Any]], tool_choice: Any = "auto"
) -> str:
    """A system message listing ``tools`` (their JSON schemas) and the answer's JSON form."""
    listed = "\n".join(json.dumps(t["function"], ensure_ascii=False) for t in tools)
    must = tool_choice == "required" or isinstance(tool_choice, dict)
    how = (
        'Answer with one JSON object: {"tool_calls": [{"name": <tool name>, "arguments": '
        "<arguments object>}, ...]}. Put several calls in the list when they can run at once."
    )
    if not must:
        how += ' If no tool helps, answer with {"answer": <your reply>} instead.'
    return f"You can call these tools (JSON schemas):\n{listed}\n\n{how}"


_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def parse_answer(text: str) -> tuple[tuple[ToolCall, ...], str | None]:
    """``(calls, answer)`` read from a model's JSON answer: the calls (ids ``call_0``, …;
    arguments as JSON text) or the plain ``answer``. Text without a ``{`` is a plain answer;
    a broken, unclosed or other object → ``((), None)``. Never raises."""
    if "{" not in text:
        return (), text.strip() or None
    found = _OBJECT.search(text)
    if found is None:  # an object begun and never closed (cut at max_tokens)
        return (), None
    try:
        data = json.loads(found.group(0))
    except ValueError:
        return (), None
    if not isinstance(data, dict):
        return (), None
    raw = data.get("tool_calls")
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        answer = data.get("answer")
        return (), answer.strip() if isinstance(answer, str) and answer.strip() else None
    calls: list[ToolCall] = []
    for i, call in enumerate(raw):
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            continue
        arguments = call.get("arguments", {})
        text_args = arguments if isinstance(arguments, str) else json.dumps(arguments)
        calls.append({"id": f"call_{i}", "name": call["name"], "arguments": text_args})
    return tuple(calls), None


def wire_calls(calls: tuple[ToolCall, ...] | list[ToolCall]) -> list[dict[str, Any]]:
    """Calls in OpenAI's (and TRL's) message shape: ``{"id", "type": "function", "function":
    {"name", "arguments"}}`` (arguments: JSON text)."""
    return [
        {
            "id": c["id"],
            "type": "function",
            "function": {"name": c["name"], "arguments": c["arguments"]},
        }
        for c in calls
    ]


def plain_messages(
    messages: Sequence[Mapping[str, Any]], calls_as_json: bool = True
) -> list[Message]:
    """A conversation with tool turns written as text, for a model or template that knows only
    ``system``/``user``/``assistant`` with text content: an assistant turn's ``tool_calls``
    become its JSON answer (``calls_as_json``; else a sentence ``I called NAME with ARGS.``, which
    a small model is less tempted to copy), a ``tool`` turn a user turn ``Result of NAME: JSON``."""
    out: list[Message] = []
    for m in messages:
        role = m.get("role")
        calls = m.get("tool_calls")
        if role == "assistant" and calls:
            listed = [
                {"name": c["function"]["name"], "arguments": _loads(c["function"]["arguments"])}
                for c in calls
            ]
            text = json.dumps({"tool_calls": listed})
            if not calls_as_json:
                text = " ".join(
                    f"I called {c['name']} with {json.dumps(c['arguments'])}." for c in listed
                )
            out.append({"role": "assistant", "content": text})
        elif role == "tool":
            name = m.get("name") or "the tool"
            out.append({"role": "user", "content": f"Result of {name}: {m.get('content', '')}"})
        else:
            out.append({"role": str(role), "content": str(m.get("content") or "")})
    return out


#: the system message of the final answer on the text path (``tool_choice: none``)
ANSWER_PROMPT = (
    "Answer the user's request in plain words, using the tool results in this conversation. "
    "Do not write JSON and do not call any tool."
)


def answer_messages(messages: Sequence[Mapping[str, Any]]) -> list[Message]:
    """:func:`plain_messages` with :data:`ANSWER_PROMPT` as the system message (before the
    conversation's own one) and the calls as sentences: the final answer after the tool
    results, on the text path."""
    plain = plain_messages(messages, calls_as_json=False)
    if plain and plain[0]["role"] == "system":
        return [
            {"role": "system", "content": f"{ANSWER_PROMPT}\n\n{plain[0]['content']}"},
            *plain[1:],
        ]
    return [{"role": "system", "content": ANSWER_PROMPT}, *plain]


def with_tools_prompt(
    messages: Sequence[Mapping[str, Any]],
    tools: tuple[dict[str, Any], ...] | list[dict[str, Any]],
    tool_choice: Any = "auto",
) -> list[Message]:
    """:func:`plain_messages` with :func:`tools_prompt` as the system message (before the
    conversation's own system message, when it has one)."""
    plain = plain_messages(messages)
    prompt = tools_prompt(tools, tool_choice)
    if plain and plain[0]["role"] == "system":
        return [{"role": "system", "content": f"{prompt}\n\n{plain[0]['content']}"}, *plain[1:]]
    return [{"role": "system", "content": prompt}, *plain]


def _loads(arguments: Any) -> Any:
    if not isinstance(arguments, str):
        return arguments
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def renders_tools(template: str | None) -> bool:
    """Whether a Jinja chat template renders tools itself (it reads ``tools`` and handles
    ``tool_calls``), as Qwen's, Hermes' and Llama 3.1's do; SmolLM2's does not."""
    if not template:
        return False
    return bool(re.search(r"\btools\b", template)) and "tool_calls" in template

"""Tool calls a model writes inline, in ``<tool_call>`` blocks (Hermes/Qwen).

Hermes-2-Pro, Qwen2.5 and Qwen3 chat templates tell the model to write each call as
``<tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>``; Qwen3-Coder, Qwen3.5
and later put an XML body in the same block (``<function=f><parameter=x>1</parameter>
</function>``). A server with a tool parser (vLLM ``--tool-call-parser hermes``, llama-server
``--jinja``) turns these into ``tool_calls`` itself; a raw completion, or a backend without
one, keeps them in the text, and :func:`parse_tool_calls` splits them off the same way on every
backend.

Deliberately not here: checking the arguments against the tools' schemas, or running them.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .base import ToolCall

#: the open/close tags around one call in Hermes-style chat templates
TOOL_CALL_TAGS = ("<tool_call>", "</tool_call>")

_XML_FUNCTION = re.compile(r"\A\s*<function=([^>\n]+)>(.*)</function>\s*\Z", re.DOTALL)
_XML_PARAMETER = re.compile(r"<parameter=([^>\n]+)>\n?(.*?)\n?</parameter>", re.DOTALL)


def writes_tool_calls(chat_template: str | None, tags: tuple[str, str] = TOOL_CALL_TAGS) -> bool:
    """Whether a Jinja chat template asks for calls in the ``tags`` format (it names the tag)."""
    return bool(chat_template) and tags[0] in (chat_template or "")


def parse_tool_calls(
    text: str, tags: tuple[str, str] = TOOL_CALL_TAGS
) -> tuple[str, tuple[ToolCall, ...]]:
    """``(text without the calls, the calls)`` of a model's text.

    Each ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` block becomes a
    :data:`~datamill.models.base.ToolCall` (``id`` ``call_0``, ``call_1``… in order,
    ``arguments`` as compact JSON text; ``parameters`` is read where ``arguments`` is missing,
    as some models write it); so does an XML body ``<function=NAME><parameter=P>V</parameter>
    </function>`` (each value read as JSON where it is JSON, else kept as text); the rest of
    the text is joined and stripped. Text without the open tag comes back unchanged, no calls.

    Raises ``ValueError`` with a short reason for a malformed block: ``tool call not closed``,
    ``tool call is not a JSON object``, ``tool call has no name``, ``tool call arguments are
    not an object``.
    """
    open_tag, close_tag = tags
    if open_tag not in text:
        return text, ()
    calls: list[ToolCall] = []
    rest: list[str] = []
    at = 0
    while True:
        start = text.find(open_tag, at)
        if start < 0:
            rest.append(text[at:])
            break
        rest.append(text[at:start])
        end = text.find(close_tag, start + len(open_tag))
        if end < 0:
            raise ValueError("tool call not closed")
        calls.append(_one_call(text[start + len(open_tag) : end], len(calls)))
        at = end + len(close_tag)
    return "".join(rest).strip(), tuple(calls)


def _one_call(body: str, index: int) -> ToolCall:
    xml = _XML_FUNCTION.match(body)
    if xml:
        params = {k.strip(): _value(v) for k, v in _XML_PARAMETER.findall(xml.group(2))}
        return _call(index, xml.group(1), params)
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        raise ValueError("tool call is not a JSON object") from None
    if not isinstance(data, dict):
        raise ValueError("tool call is not a JSON object")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("tool call has no name")
    arguments: Any = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the arguments as JSON text
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            raise ValueError("tool call arguments are not an object") from None
    if not isinstance(arguments, dict):
        raise ValueError("tool call arguments are not an object")
    return _call(index, name, arguments)


def _call(index: int, name: str, arguments: dict[str, Any]) -> ToolCall:
    if not name.strip():
        raise ValueError("tool call has no name")
    return {
        "id": f"call_{index}",
        "name": name.strip(),
        "arguments": json.dumps(arguments, ensure_ascii=False, separators=(",", ":")),
    }


def _value(text: str) -> Any:
    """An XML parameter's value: JSON where it parses (numbers, lists, ...), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def message_tool_calls(calls: tuple[ToolCall, ...] | list[ToolCall]) -> list[dict[str, Any]]:
    """Calls in the layout of an assistant message's ``tool_calls`` that TRL and Hugging Face
    chat templates read: ``{"id", "type": "function", "function": {"name", "arguments": {...}}}``
    (arguments as an object, not JSON text)."""
    return [
        {
            "id": c["id"],
            "type": "function",
            "function": {"name": c["name"], "arguments": json.loads(c["arguments"] or "{}")},
        }
        for c in calls
    ]

"""Structured-output forms of OpenAI-compatible servers, and telling a refusal of one apart.

Servers disagree on how a JSON schema travels in a request. The forms, best first:

- ``json_schema`` — ``response_format: {"type": "json_schema", "json_schema": {...}}``
  (OpenAI, vLLM, llama.cpp's llama-server, Ollama ≥ 0.5)
- ``json_object+schema`` — ``response_format: {"type": "json_object", "schema": ...}``
  (llama-cpp-python's server, llama-server); on ``/completions`` the top-level ``json_schema``
- ``json_object+value`` — ``response_format: {"type": "json_object", "value": ...}`` (TGI)
- ``schema_field`` — a top-level ``json_schema`` field, llama-server's grammar shortcut
- ``none`` — no constraint: the tasks' tolerant parsers read free text

:func:`schema_fields` builds the request fields of a form; :func:`is_format_refusal` says whether
an error answer is about the form (the backend then falls back to the next one).

Deliberately not here: which form a model uses (``OpenAIModel`` negotiates and remembers it),
JSON-schema-to-grammar conversion (servers that need GBNF get the unconstrained form).
"""

from __future__ import annotations

import re
from typing import Any

#: negotiation order, best first
FORMS = ("json_schema", "json_object+schema", "json_object+value", "schema_field", "none")
#: the older option names, kept selectable
ALIASES = {"openai": "json_schema", "llamacpp": "json_object+schema"}

_FORMAT_WORDS = (
    "response_format",
    "json_schema",
    "json_object",
    "schema",
    "grammar",
    "guided",
    "structured output",
)
#: statuses that say "busy" or "gone", never "I cannot do this"
_TRANSIENT = {408, 429, 502, 503, 504, 529}


def next_form(form: str) -> str:
    """The form to try after ``form`` was refused (``none`` stays ``none``)."""
    i = FORMS.index(form)
    return FORMS[min(i + 1, len(FORMS) - 1)]


def schema_fields(form: str, schema: dict[str, Any], chat: bool, strict: bool) -> dict[str, Any]:
    """The request fields that carry ``schema`` in ``form`` (empty for ``none``)."""
    if form == "json_schema":
        name = re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title") or "output"))[:64]
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": schema, "strict": strict},
            }
        }
    if form == "json_object+schema":
        if chat:
            return {"response_format": {"type": "json_object", "schema": schema}}
        return {"json_schema": schema}
    if form == "json_object+value":
        return {"response_format": {"type": "json_object", "value": schema}}
    if form == "schema_field":
        return {"json_schema": schema}
    return {}


def is_n_refusal(status: int, message: str) -> bool:
    """An error answer refusing more than one sample per request (``n``), e.g. llama-server's
    "Only one completion choice is allowed"."""
    if status < 400 or status in _TRANSIENT:
        return False
    lowered = message.lower()
    return "choice" in lowered or bool(
        re.search(r"['\"`]n['\"`]|\bn\b\s*(must|should|>|=|is)", lowered)
    )


def is_format_refusal(status: int, message: str) -> bool:
    """An error answer (4xx/5xx, not a busy signal) whose message is about the schema's form."""
    if status < 400 or status in _TRANSIENT:
        return False
    lowered = message.lower()
    return any(word in lowered for word in _FORMAT_WORDS)

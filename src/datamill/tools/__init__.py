"""Tools a model may call: the user's own Python functions, named ``module:function``.

:func:`load_tools` imports each function and builds its JSON schema (OpenAI's function format,
``{"type": "function", "function": {"name", "description", "parameters"}}``) from its signature
and Google-style docstring with transformers' ``get_json_schema`` — a maintained implementation,
imported only here. A function without type hints, without a docstring or without an ``Args:``
line for a parameter is one :class:`~datamill.errors.ConfigError` line naming it and saying what
to add, raised when a step is built, before any model call.

- ``tools.examples``: the shipped functions (unit conversion, date arithmetic, a small lookup)
- ``models.tool_answer``: tool calls for models that cannot take ``Request.tools`` natively (a
  prompt listing the tools, a JSON schema of the answer, the answer parsed into calls)
- ``tools.execute``: the calls checked against the schemas (jsonschema) and run in the sandbox

Deliberately not here: generating queries, calls or answers (``tasks.tool_calls``).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, MissingDependency

__all__ = ["Tool", "load_tools", "tool_schema"]


@dataclass(frozen=True)
class Tool:
    """One callable tool: ``spec`` (``module:function``), the function and its JSON schema."""

    spec: str
    function: Callable[..., Any]
    schema: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.schema["function"]["name"])

    @property
    def parameters(self) -> dict[str, Any]:
        """The JSON schema of the arguments (an object schema)."""
        params: dict[str, Any] = self.schema["function"]["parameters"]
        return params

    def fingerprint(self) -> str:
        """``spec`` and a hash of the function's source: what keys its cached results (an
        edited function runs again)."""
        try:
            source = inspect.getsource(self.function)
        except (OSError, TypeError):
            source = ""
        return f"{self.spec}@{hashlib.sha256(source.encode()).hexdigest()[:16]}"


def tool_schema(function: Callable[..., Any], spec: str) -> dict[str, Any]:
    """The JSON schema of ``function`` in OpenAI's function format (without the ``return``
    entry transformers adds), or ``ConfigError`` naming ``spec`` and what the function lacks."""
    try:
        import jsonschema  # noqa: F401  # the format check needs it: refuse now, not mid-run
        from transformers.utils.chat_template_utils import get_json_schema
    except ImportError:
        raise MissingDependency("tool schemas and their checks", "tools") from None
    try:
        schema = get_json_schema(function)
    except Exception as exc:
        why = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(
            f"tool {spec}: cannot build its JSON schema ({why}); give it type hints for every "
            "parameter and a Google-style docstring with a summary line and an 'Args:' line "
            "per parameter"
        ) from None
    function_schema = {k: v for k, v in schema["function"].items() if k != "return"}
    if not function_schema.get("description"):
        raise ConfigError(
            f"tool {spec}: its docstring has no summary line; start the docstring with one "
            "sentence saying what the function does"
        )
    return {"type": "function", "function": function_schema}


def load_tools(specs: Iterable[str | Callable[..., Any]]) -> list[Tool]:
    """Each ``module:function`` (or function) imported, with its schema. ``ConfigError`` for a
    name that does not import, a non-function, a function whose schema cannot be built, and
    two tools of one name."""
    from ..steps.verify.base import import_target

    tools: list[Tool] = []
    for item in specs:
        if isinstance(item, str):
            try:
                function = import_target(item)
            except ValueError as exc:
                raise ConfigError(f"tool {item}: {exc}") from None
            spec = item
        else:
            function = item
            spec = f"{getattr(item, '__module__', '?')}:{getattr(item, '__qualname__', item)}"
        if not inspect.isfunction(function):
            raise ConfigError(f"tool {spec} is not a Python function; name a def function")
        tools.append(Tool(spec, function, tool_schema(function, spec)))
    names = [t.name for t in tools]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"two tools are named {twice[0]!r}; each tool needs its own name")
    if not tools:
        raise ConfigError("no tools given; list at least one as module:function")
    return tools

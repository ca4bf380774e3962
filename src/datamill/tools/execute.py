"""APIGen's format and execution checks of tool calls (arXiv:2406.18518, section 3.2).

- :func:`check_call`: a call names one of the tools and its arguments are a JSON object valid
  against that tool's parameter schema (``jsonschema``); the problem in one line otherwise.
- :func:`run_call`: the real function run on the arguments in datamill's sandbox
  (``datamill.sandbox.arun_python``: its own process, time and memory limits, no network where
  the OS allows it); the return value comes back as JSON text, or the failure as one line
  (``error: KeyError: ...``, ``timeout after 10 s``, ``result is not JSON: ...``).
- :func:`replay`: a finished row's calls run again, their results beside the stored ones.

The sandbox imports the tool's module by name with the folder it was imported from first on
``sys.path``, so the function runs exactly as written, relative imports included. Results are
compared and stored as canonical JSON (sorted keys), so a replay can be compared as text.

Deliberately not here: which calls a model makes (``tasks.tool_calls``).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..models.base import ToolCall
from . import Tool

__all__ = ["canonical", "check_call", "replay", "run_call"]

_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def canonical(value: Any) -> str:
    """``value`` as canonical JSON text (sorted keys, no ASCII escaping)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def check_call(call: ToolCall, tools: dict[str, Tool]) -> str | None:
    """Why ``call`` fails the format check (one line), or None: an unknown tool name, arguments
    that are not a JSON object, or arguments the tool's parameter schema refuses."""
    import jsonschema

    tool = tools.get(call["name"])
    if tool is None:
        return f"unknown tool {call['name']!r} (tools: {', '.join(sorted(tools))})"
    try:
        arguments = json.loads(call["arguments"] or "{}")
    except ValueError:
        return f"{call['name']}: arguments are not JSON: {call['arguments'][:80]!r}"
    if not isinstance(arguments, dict):
        return f"{call['name']}: arguments are not a JSON object"
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(tool.parameters).iter_errors(arguments)
    )
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "arguments"
        return f"{call['name']}: {where}: {' '.join(error.message.split())[:160]}"
    return None


def _import_root(module: str) -> str | None:
    """The folder ``module`` was imported from (what goes first on the sandbox's sys.path)."""
    loaded = sys.modules.get(module)
    file = getattr(loaded, "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    if path.name == "__init__.py":
        path = path.parent
    return str(path.parents[module.count(".")])


_PROGRAM = """\
import importlib, json, sys
sys.path[:0] = {roots!r}
target = importlib.import_module({module!r})
for part in {attr!r}.split("."):
    target = getattr(target, part)
result = target(**json.loads({arguments!r}))
try:
    text = json.dumps(result, sort_keys=True, ensure_ascii=False)
except (TypeError, ValueError) as exc:
    raise TypeError(f"result is not JSON: {{type(result).__name__}}") from None
print({mark!r} + text)
"""


async def run_call(
    tool: Tool, arguments: str, limits: Any = None, max_workers: int | None = None
) -> tuple[bool, str]:
    """Run ``tool`` on ``arguments`` (JSON text of an object) in the sandbox: ``(True, result
    as canonical JSON)`` or ``(False, the failure in one line)``. At most ``max_workers``
    (default: the CPU count) run at once per event loop; ``limits``: a sandbox ``Limits``."""
    from ..sandbox import Limits, arun_python

    module, _, attr = tool.spec.partition(":")
    root = _import_root(module)
    mark = f"@@tool-result-{secrets.token_hex(8)}@@"
    program = _PROGRAM.format(
        roots=[root] if root else [], module=module, attr=attr, arguments=arguments, mark=mark
    )
    loop = asyncio.get_running_loop()
    gate = _GATES.get(loop)
    if gate is None:
        gate = _GATES[loop] = asyncio.Semaphore(max_workers or os.cpu_count() or 1)
    async with gate:
        result = await arun_python(program, "pass", limits=limits or Limits(), style="assert")
    if not result.passed:
        return False, " ".join(result.reason.split())
    for line in result.stdout.splitlines():
        if line.startswith(mark):
            return True, canonical(json.loads(line[len(mark) :]))
    return False, "no result: the output was cut or the function printed too much"


def replay(row: dict[str, Any], tools: Iterable[Tool]) -> list[tuple[str, str, bool, str]]:
    """Run again every call a finished row's ``messages`` hold: ``(call id, stored result,
    ok, result now)`` per call, in order (a deterministic tool gives ``result now == stored``)."""
    by_name = {t.name: t for t in tools}
    stored = {
        m.get("tool_call_id"): str(m.get("content"))
        for m in row["messages"]
        if m.get("role") == "tool"
    }

    async def all_calls() -> list[tuple[str, str, bool, str]]:
        out = []
        for m in row["messages"]:
            for call in m.get("tool_calls") or ():
                fn = call["function"]
                ok, now = await run_call(by_name[fn["name"]], fn["arguments"])
                out.append((call["id"], stored.get(call["id"], ""), ok, now))
        return out

    return asyncio.run(all_calls())

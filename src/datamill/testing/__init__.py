"""Test helpers shipped with datamill: a local OpenAI-compatible server with fault injection,
and a fake of the Anthropic Messages API (``datamill.testing.anthropic``).

Tests, benchmarks and users start it to exercise the HTTP path against a real server on
127.0.0.1 (``python -m datamill.testing.server --latency 0.2 --faults 0.2``). Needs the
``openai`` extra (aiohttp). Names are imported from ``datamill.testing.server`` on first use.
"""

from __future__ import annotations

from typing import Any

#: names served by ``datamill.testing.anthropic`` (the rest come from ``datamill.testing.server``)
_ANTHROPIC = ("AnthropicServer", "serve_anthropic")

__all__ = [
    "AnthropicServer",
    "FAULT_KINDS",
    "Faults",
    "OpenAIServer",
    "ServerStats",
    "ServerThread",
    "serve_anthropic",
    "serve_in_thread",
]


def __getattr__(name: str) -> Any:
    if name in _ANTHROPIC:
        from . import anthropic

        return getattr(anthropic, name)
    if name in __all__:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module 'datamill.testing' has no attribute {name!r}")

"""Test helpers shipped with datamill: a local OpenAI-compatible server with fault injection.

Tests, benchmarks and users start it to exercise the HTTP path against a real server on
127.0.0.1 (``python -m datamill.testing.server --latency 0.2 --faults 0.2``). Needs the
``openai`` extra (aiohttp). Names are imported from ``datamill.testing.server`` on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "FAULT_KINDS",
    "Faults",
    "OpenAIServer",
    "ServerStats",
    "ServerThread",
    "serve_in_thread",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module 'datamill.testing' has no attribute {name!r}")

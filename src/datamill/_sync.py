"""Run a coroutine to completion from synchronous code (the sync entry points' one bridge).

Where no event loop runs in this thread, this is ``asyncio.run``. Where one does (Jupyter,
a UI callback), the coroutine runs on a fresh loop in a helper thread that carries a copy of
the caller's context (so context variables such as the run's embedding cache apply there as
they would under ``asyncio.run``), and its result or exception comes back to the caller.
It deliberately does not reuse or nest into the running loop, and adds no timeout.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T], *, name: str = "datamill-sync") -> T:
    """The result of ``coro``; run in a thread called ``name`` when a loop already runs here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}
    context = contextvars.copy_context()

    def target() -> None:
        try:
            box["result"] = context.run(asyncio.run, coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=name)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    result: T = box["result"]
    return result


__all__ = ["run_sync"]

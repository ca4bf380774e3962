"""run_sync: the one bridge from sync code to a coroutine, with and without a running loop."""

from __future__ import annotations

import asyncio
import threading
from contextvars import ContextVar

import pytest

from datamill._sync import run_sync

_MARK: ContextVar[str] = ContextVar("test_sync_mark", default="unset")


async def _where() -> tuple[str, str]:
    await asyncio.sleep(0)
    return threading.current_thread().name, _MARK.get()


async def _fail() -> None:
    raise ValueError("boom")


def test_without_a_loop_it_runs_here() -> None:
    token = _MARK.set("caller")
    try:
        assert run_sync(_where(), name="unused") == (threading.current_thread().name, "caller")
    finally:
        _MARK.reset(token)


def test_inside_a_loop_it_runs_in_a_named_thread_with_the_callers_context() -> None:
    async def cell() -> tuple[str, str]:
        _MARK.set("cell")
        return run_sync(_where(), name="datamill-test")

    assert asyncio.run(cell()) == ("datamill-test", "cell")


def test_errors_come_back_to_the_caller_with_and_without_a_loop() -> None:
    with pytest.raises(ValueError, match="boom"):
        run_sync(_fail())

    async def cell() -> None:
        run_sync(_fail())

    with pytest.raises(ValueError, match="boom"):
        asyncio.run(cell())

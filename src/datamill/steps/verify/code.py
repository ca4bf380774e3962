"""``verify_code``: generated Python run against its tests in the sandbox (``datamill.sandbox``).

Columns: ``code`` (default ``solution``: the model's answer; the first ```` ```python ```` fenced
block in it is the program when there is one) and ``tests`` (assert lines or pytest-style test
functions, as text or a list of texts). Each check is ``await sandbox.arun_python(code, tests,
limits=…, style=…)``: its own process with CPU-time, memory, file-size and process-count limits, a
wall-clock timeout and no network where the OS allows it (see ``datamill.sandbox``). At most
``max_workers`` programs run at once (default: the CPU count); the event loop never waits on one.

Reasons are the sandbox's: ``ok``, ``test failed: …``, ``timeout after 5 s``, ``memory limit``…
(``run.json`` counts them without their numbers: ``timeout``).

Deliberately not here: the sandbox itself (``datamill.sandbox``), writing tests (a task).
"""

from __future__ import annotations

import asyncio
import os
import re
import weakref
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from ...rows import Row
from .base import Verdict, Verifier, clip

_PYTHON_FENCE = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_ANY_FENCE = re.compile(r"```[ \t]*\n(.*?)```", re.DOTALL)


def extract_code(text: str) -> str:
    """The first ```` ```python ```` (or ``py``) fenced block of ``text``, else its first
    untagged fenced block, else ``text`` itself."""
    for fence in (_PYTHON_FENCE, _ANY_FENCE):
        found = fence.search(text)
        if found:
            return found.group(1)
    return text


class SandboxLimits(BaseModel):
    """What one program may use (``datamill.sandbox.Limits``): seconds of wall clock and of CPU,
    MB of memory and of any file written, processes, and whether it may reach the network."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wall_seconds: float = Field(default=10.0, gt=0)
    cpu_seconds: int = Field(default=5, ge=1)
    memory_mb: int = Field(default=512, ge=16)
    file_size_mb: int = Field(default=16, ge=0)
    processes: int = Field(default=32, ge=1)
    network: bool = False


class VerifyCode(Verifier):
    """``verify_code``: the code column passes the tests column in the sandbox."""

    kind: ClassVar[str] = "verify_code"
    not_in_key: ClassVar[frozenset[str]] = frozenset({"code", "tests", "max_workers"})

    #: the column with the program (a model's answer; its ```python block is used)
    code: str = "solution"
    #: the column with the tests (text, or a list of texts joined by newlines)
    tests: str = "tests"
    #: the sandbox's limits on each run
    limits: SandboxLimits = SandboxLimits()
    #: how the tests are run: auto (pytest-style if they define test functions) | assert | pytest
    style: Literal["auto", "assert", "pytest"] = "auto"
    #: programs run at once (default: the CPU count)
    max_workers: int | None = Field(default=None, ge=1)
    #: take the program from the first ```python fenced block when there is one
    extract: bool = True

    #: event loop → its bound on programs at once (made on first use; not pickled)
    _gates: Any = PrivateAttr(default=None)

    def required_columns(self) -> list[str]:
        return [self.code, self.tests]

    def program(self, row: Row) -> tuple[str, str]:
        """``(code, tests)`` as they go to the sandbox."""
        code = str(self.need(row, self.code))
        tests = self.need(row, self.tests)
        if isinstance(tests, (list, tuple)):
            tests = "\n".join(str(t) for t in tests)
        return (extract_code(code) if self.extract else code), str(tests)

    def key_inputs(self, row: Row) -> dict[str, Any]:
        try:
            code, tests = self.program(row)
        except Exception:  # an empty input: ``check`` drops the row before anything is cached
            return {"code": row.get(self.code), "tests": row.get(self.tests)}
        return {"code": code, "tests": tests}

    def __getstate__(self) -> dict[Any, Any]:
        """Picklable (Ray ships steps to workers): the per-loop bounds stay behind."""
        state = super().__getstate__()
        private = state.get("__pydantic_private__")
        if private:
            state["__pydantic_private__"] = {**private, "_gates": None}
        return state

    def _gate(self) -> asyncio.Semaphore:
        """The bound on programs running at once, one per event loop."""
        loop = asyncio.get_running_loop()
        if self._gates is None:
            self._gates = weakref.WeakKeyDictionary()
        gate: asyncio.Semaphore | None = self._gates.get(loop)
        if gate is None:
            gate = asyncio.Semaphore(self.max_workers or os.cpu_count() or 1)
            self._gates[loop] = gate
        return gate

    async def check(self, row: Row) -> Verdict:
        from ...sandbox import Limits, arun_python

        code, tests = self.program(row)
        async with self._gate():
            result = await arun_python(
                code, tests, limits=Limits(**self.limits.model_dump()), style=self.style
            )
        if result.passed:
            return Verdict.ok()
        return Verdict.fail(clip(result.reason or "failed", 160))


__all__ = ["SandboxLimits", "VerifyCode", "extract_code"]

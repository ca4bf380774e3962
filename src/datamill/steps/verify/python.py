"""``verify_python``: any check written as a Python function, ``module:function``.

The function takes the row (a copy) and returns ``True``/``False`` or ``(passed, reason)``; an
``async def`` function is awaited. It is imported when the step is built, so a wrong name is a
one-line error before any model call (the working folder is searched, as ``python -m`` does).

Reasons: ``ok``, the reason the function gave, or ``rejected by module:function``. A function that
raises is no verdict: the row is recorded as an error (``error: ValueError``) and nothing is
cached, so fixing the function and running again checks that row again.

``reads`` names the columns the function needs (checked before the run, and the only values in
the cache key; empty: the whole row is the key). The key also holds the function's source text,
so an edited function re-verifies; a helper it calls is not covered — set ``cache: false`` while
changing one, or for a check that depends on something outside the row.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import PrivateAttr, field_validator

from ...rows import Row
from .base import Verdict, Verifier, clip, import_target, search_recipe_dir


def _function(value: str | Callable[..., Any]) -> Callable[..., Any]:
    target = import_target(value) if isinstance(value, str) else value
    if not callable(target):
        raise ValueError(f"{value!r} is not a function")
    return target


class VerifyPython(Verifier):
    """``verify_python``: ``fn(row) -> bool | (bool, reason)`` decides."""

    kind: ClassVar[str] = "verify_python"
    not_in_key: ClassVar[frozenset[str]] = frozenset({"fn", "reads"})

    #: ``module:function`` (or the function itself, from Python)
    fn: str | Callable[..., Any]
    #: the columns the function reads (checked up front; the cache key's inputs)
    reads: list[str] = []

    _fn: Callable[..., Any] | None = PrivateAttr(default=None)

    @field_validator("fn")
    @classmethod
    def _importable(cls, value: str | Callable[..., Any]) -> str | Callable[..., Any]:
        search_recipe_dir()
        _function(value)
        return value

    def required_columns(self) -> list[str]:
        return list(self.reads)

    @property
    def function(self) -> Callable[..., Any]:
        if self._fn is None:
            self._fn = _function(self.fn)
        return self._fn

    @property
    def target(self) -> str:
        """``module:function`` of the function (for reasons)."""
        if isinstance(self.fn, str):
            return self.fn
        fn = self.function
        return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"

    def key_params(self) -> dict[str, Any]:
        params = super().key_params()
        try:
            source = inspect.getsource(self.function)
        except (OSError, TypeError):
            source = ""
        params["fn"] = [self.target, hashlib.sha256(source.encode()).hexdigest()]
        return params

    def key_inputs(self, row: Row) -> dict[str, Any]:
        return {c: row.get(c) for c in self.reads} if self.reads else dict(row)

    async def check(self, row: Row) -> Verdict:
        result = self.function(dict(row))
        if inspect.isawaitable(result):
            result = await result
        rejected = f"rejected by {self.target}"
        if isinstance(result, tuple) and len(result) == 2 and _is_bool(result[0]):
            passed, reason = result
            if passed:
                return Verdict.ok()
            if not reason:
                return Verdict.fail(rejected, "rejected")
            return Verdict.fail(clip(reason, 120))
        if _is_bool(result):
            return Verdict.ok() if result else Verdict.fail(rejected, "rejected")
        raise TypeError(
            f"{self.target} returned {type(result).__name__}; a verify_python function returns "
            "True/False or (passed, reason)"
        )


def _is_bool(value: Any) -> bool:
    """A Python bool or a numpy one (``np.True_``)."""
    return isinstance(value, bool) or (
        getattr(value, "shape", None) == ()
        and getattr(getattr(value, "dtype", None), "kind", "") == "b"
    )


__all__ = ["VerifyPython"]

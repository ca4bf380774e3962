"""Results of work that is not a model call, cached like calls: ``await results.get(key, compute)``.

A verifier's verdict (``steps.verify``) is keyed by its inputs — the verifier's kind and
parameters and the values it reads (``steps.verify.base.result_key``) — and kept as JSON in the ``results``
table of the call-cache file (:meth:`CallCache.put_result`), written the moment it is computed.
A re-run computes nothing again; a run killed halfway computes only what had not finished.
Identical work in flight in one run is done once and shared.

A compute that raises stores nothing (the next run tries again). Without a cache (``--no-cache``)
every result is computed.

Deliberately not here: claims across runs sharing one file (two runs at once may both compute a
verdict; the first stored is kept), and what is computed (``steps.verify``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from .cache import CallCache


class CachedResults:
    """JSON-able results by key, through ``cache`` (``None``: compute every time)."""

    def __init__(self, cache: CallCache | None) -> None:
        self.cache = cache
        self._in_flight: dict[str, asyncio.Future[Any]] = {}

    async def get(self, key: str, compute: Callable[[], Awaitable[Any]]) -> Any:
        """The result stored under ``key``, else ``await compute()`` stored under it (a JSON-able
        value). Raises :class:`~datamill.errors.CacheError` when the cache cannot be written."""
        if self.cache is not None:
            self.cache.check()
            stored = self.cache.get_result(key)
            if stored is not None:
                return json.loads(stored)
        pending = self._in_flight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            value = await compute()
            if self.cache is not None:
                self.cache.put_result(key, json.dumps(value))  # ASCII: any text can be kept
            future.set_result(value)
            return value
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # mark retrieved: sharers re-raise it themselves
            raise
        finally:
            self._in_flight.pop(key, None)


__all__ = ["CachedResults"]

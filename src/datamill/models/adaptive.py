"""Adaptive concurrency for remote models: additive increase, multiplicative decrease (AIMD).

An endpoint's real capacity is unknown and changes (other users, autoscaling, rate limits). The
:class:`AdaptiveLimiter` gates the calls a backend has in flight: every success raises the limit
by ``1/limit`` (about +1 per round of calls), every overload signal (HTTP 429, 503, a timeout)
halves it, but at most once per round: signals from calls that were already in flight when the
limit was last cut are the same congestion event and do not cut again. The limit never leaves
``[minimum, maximum]``; after a cut it probes back up on its own as calls succeed.

Deliberately not here: retries and backoff (the backend decides what is an overload and when to
try again), and the runner's own bound (``ModelInfo.max_concurrency``, which should equal
``maximum`` so the runner keeps enough requests queued for the limiter to use).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class AdaptiveLimiter:
    """``async with limiter.slot() as slot: ... slot.overloaded()``; ``limiter.limit`` is the current bound."""

    def __init__(
        self,
        maximum: int,
        *,
        minimum: int = 1,
        initial: int | None = None,
        decrease: float = 0.5,
    ) -> None:
        if minimum < 1 or maximum < minimum:
            raise ValueError(
                f"need 1 <= min_concurrency <= max_concurrency, got {minimum} and {maximum}"
            )
        if not 0.0 < decrease < 1.0:
            raise ValueError(f"decrease must be between 0 and 1, got {decrease}")
        self.minimum = minimum
        self.maximum = maximum
        self.decrease = decrease
        start = maximum if initial is None else initial
        self._limit = float(min(maximum, max(minimum, start)))
        self.in_flight = 0
        self.peak_in_flight = 0
        self.cuts = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._epoch = 0  # bumped at each cut; a slot remembers the epoch it started in

    @property
    def limit(self) -> int:
        """How many calls may be in flight right now."""
        return int(self._limit)

    def slot(self) -> _Slot:
        """An async context manager holding one unit of concurrency."""
        return _Slot(self)

    async def acquire(self) -> int:
        """Wait for a free slot; return the epoch to pass to :meth:`release`."""
        if not self._waiters and self.in_flight < self._limit:
            self._take()
            return self._epoch
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # granted just as we were cancelled
                self._give_back()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(future)
            raise
        return self._epoch

    def release(self, epoch: int, *, overloaded: bool = False, success: bool = True) -> None:
        """Give the slot back, telling how the call went.

        ``overloaded`` cuts the limit (once per round); a plain ``success`` raises it slowly;
        neither (e.g. a non-overload error) leaves it where it is.
        """
        if overloaded:
            if epoch == self._epoch:  # first signal of this congestion event
                self._limit = max(float(self.minimum), self._limit * self.decrease)
                self._epoch += 1
                self.cuts += 1
        elif success and self._limit < self.maximum:
            self._limit = min(float(self.maximum), self._limit + 1.0 / self._limit)
        self._give_back()

    def _take(self) -> None:
        self.in_flight += 1
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight

    def _give_back(self) -> None:
        self.in_flight -= 1
        while self._waiters and self.in_flight < self._limit:
            future = self._waiters.popleft()
            if not future.done():
                self._take()
                future.set_result(None)

    def __repr__(self) -> str:
        return f"AdaptiveLimiter(limit={self.limit}, in_flight={self.in_flight}, range=[{self.minimum}, {self.maximum}])"


class _Slot:
    """One held unit of concurrency; say :meth:`overloaded` or :meth:`failed` before leaving."""

    __slots__ = ("_limiter", "_epoch", "_overloaded", "_failed")

    def __init__(self, limiter: AdaptiveLimiter) -> None:
        self._limiter = limiter
        self._epoch = 0
        self._overloaded = False
        self._failed = False

    def overloaded(self) -> None:
        """The endpoint pushed back (429, 503, a timeout): cut the limit."""
        self._overloaded = True

    def failed(self) -> None:
        """The call failed for another reason: leave the limit alone."""
        self._failed = True

    async def __aenter__(self) -> _Slot:
        self._epoch = await self._limiter.acquire()
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        failed = self._failed or exc_type is not None
        self._limiter.release(self._epoch, overloaded=self._overloaded, success=not failed)

"""The progress bar of runs started from Python: a widget in Jupyter, text in a terminal.

``Pipeline.run(progress=...)`` / ``arun_pipeline(progress=...)`` choose it: ``"auto"`` (the
default of ``Pipeline.run``) shows a bar only inside a Jupyter kernel, ``True`` everywhere
(``tqdm.auto`` picks the widget or text), ``False`` never. The bar reads the run's
:class:`~datamill.pipeline.stats.Stats` every quarter second: rows done out of the source
rows, model calls, cache hits, completion tokens per second and rows lost.

Deliberately not here: the CLI's bar (``cli.run`` draws its own with rich).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from .errors import ConfigError, MissingDependency
from .pipeline.stats import Stats

INTERVAL = 0.25


def in_notebook() -> bool:
    """True inside a Jupyter kernel (Jupyter, VS Code, Colab), False in a terminal or script."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def wanted(mode: bool | str) -> bool:
    """Whether ``mode`` asks for a bar here."""
    if mode is True:
        return True
    if mode is False or mode is None:
        return False
    if mode == "auto":
        return in_notebook()
    raise ConfigError(f"progress must be True, False or 'auto', got {mode!r}")


class ProgressBar:
    """A ``tqdm`` bar kept in step with a run's counters; call :meth:`update` to refresh it."""

    def __init__(self, stats: Stats, bar: Any) -> None:
        self.stats = stats
        self.bar = bar
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def create(cls, stats: Stats, mode: bool | str) -> ProgressBar | None:
        """A bar for ``stats``, or ``None`` when ``mode`` does not want one here."""
        if not wanted(mode):
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError as exc:
            if mode == "auto":
                return None
            raise MissingDependency("the progress bar", "notebook") from exc
        bar = tqdm(
            total=stats.rows_total, desc="datamill", unit="row", leave=True, dynamic_ncols=True
        )
        return cls(stats, bar)

    def line(self) -> str:
        s = self.stats
        return f"calls {s.model_calls}, cached {s.cache_hits}, {s.tokens_per_second:.0f} tok/s, lost {s.failed_rows}"

    def update(self) -> None:
        s = self.stats
        total = s.rows_total
        done = s.source_rows_done if total is None else min(s.source_rows_done, total)
        if total is not None and self.bar.total != total:
            self.bar.total = total
        self.bar.n = done
        self.bar.set_postfix_str(self.line(), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.update()
        self.bar.close()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(INTERVAL)
            self.update()

    def start(self) -> ProgressBar:
        """Refresh from a task on the running loop until :meth:`aclose`."""
        self._task = asyncio.get_running_loop().create_task(self._poll())
        return self

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.close()


def start_progress(stats: Stats, mode: bool | str) -> ProgressBar | None:
    """A bar refreshed from the running loop, or ``None`` (``arun_pipeline``'s hook)."""
    bar = ProgressBar.create(stats, mode)
    return bar.start() if bar is not None else None


__all__ = ["ProgressBar", "in_notebook", "start_progress", "wanted"]

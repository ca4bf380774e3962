"""Executors decide where the per-row segments of a pipeline run.

- local (the default): the runner streams rows in this process (:class:`LocalExecutor`).
- ray: rows are sharded over Ray workers, each with its own model replica (``executors.ray``).

Global steps always run in the driver after the shards are gathered.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import Executor, LocalExecutor


def get_executor(name: str | None, address: str | None = None, **options: Any) -> Executor:
    """``None``/``"local"`` → a :class:`LocalExecutor`; ``"ray"`` → a :class:`RayExecutor`."""
    if name in (None, "local"):
        if address:
            raise ConfigError("--address only applies to --executor ray")
        return LocalExecutor()
    if name == "ray":
        from .ray import RayExecutor

        return RayExecutor(address=address, **options)
    raise ConfigError(f"unknown executor {name!r}: use local or ray")


__all__ = ["Executor", "LocalExecutor", "get_executor"]

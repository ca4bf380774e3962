"""Whole-file writes that a crash cannot leave half done."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a ``.NAME.tmp-PID`` file beside it (flushed to disk,
    then renamed over ``path``): a reader sees the old file or the new one, never a part.
    Creates missing parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)

"""The one data type: a row is a plain ``dict`` of column name to value.

Rows carry no hidden metadata. The runner tracks where each row came from (its *key*: the source
index followed by the index of each fan-out) beside the row, not inside it, so output order is
stable across re-runs and crashes.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

Row = dict[str, Any]
RowKey = tuple[int, ...]


def row_seed(base: int | None, key: RowKey, salt: str = "") -> int:
    """A deterministic per-row seed: distinct rows get distinct seeds, re-runs get the same one."""
    text = json.dumps([base, list(key), salt])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def is_missing(value: Any) -> bool:
    """True for None, NaN and strings with no visible character."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()

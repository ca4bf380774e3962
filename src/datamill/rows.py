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
#: a row beside its key, as the runner and executors pass rows on
KeyedRow = tuple[RowKey, Row]


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


#: a place inside a row: the column, then dict keys / list indices (``("person", "address", 0)``)
Path = tuple[str | int, ...]


def path_text(path: Path) -> str:
    """``person.address.street``, ``messages[0].content``, ``meta['a b']`` — as a template writes it."""
    out = ""
    for i, part in enumerate(path):
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier():
            out += part if i == 0 else f".{part}"
        else:
            out += repr(part) if i == 0 else f"[{part!r}]"
    return out


_ABSENT = object()


def lookup(row: Row, path: Path) -> tuple[Any, str | None]:
    """``(value, None)`` at ``path`` in ``row``, or ``(None, why)`` when the path cannot be
    followed: ``why`` is ``"absent"`` (a key or index is not there) or ``"null"`` (a value on the
    way is None/NaN). The caller checks the value itself (:func:`is_missing`, its type)."""
    value: Any = row
    for part in path:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None, "null"
        if isinstance(value, dict):
            value = value.get(part, _ABSENT)
        elif isinstance(part, int) and isinstance(value, (list, tuple)):
            value = value[part] if -len(value) <= part < len(value) else _ABSENT
        else:
            value = _ABSENT
        if value is _ABSENT:
            return None, "absent"
    return value, None


def why_missing(row: Row, path: Path) -> str | None:
    """``"absent"``, ``"null"``, ``"NaN"`` or ``"blank"`` when ``row`` has no usable value at
    ``path`` (what :func:`is_missing` means, followed into nested places), else None."""
    value, broken = lookup(row, path)
    if broken is not None:
        return broken
    if not is_missing(value):
        return None
    return "blank" if isinstance(value, str) else "null" if value is None else "NaN"


def unencodable(value: Any, path: Path = ()) -> str | None:
    """Where ``value`` holds text that cannot be written as UTF-8 (a lone surrogate such as
    ``"\\ud83d"``, half of an emoji pair), or None. Looks inside dicts and lists; the answer
    reads ``instruction.text: unpaired surrogate '\\ud83d' at character 22`` (character 1-based,
    the dotted path omitted when ``path`` is empty and the value is plain text)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = value[exc.start]
            what = f"unpaired surrogate {bad!r} at character {exc.start + 1}"
            return f"{path_text(path)}: {what}" if path else what
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            bad_key = unencodable(k) if isinstance(k, str) else None
            if bad_key:
                where = f"{path_text(path)} " if path else ""
                return f"{where}key {k.encode('utf-8', 'backslashreplace').decode()!r}: {bad_key}"
            found = unencodable(v, (*path, k if isinstance(k, (str, int)) else str(k)))
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = unencodable(v, (*path, i))
            if found:
                return found
    return None

"""Read metadata values (``general.license``, ``general.name`` …) from a GGUF file's header.

Only the key/value section at the start of the file is read, value by value, stopping as soon
as every asked key is found (``general.*`` keys come first in files llama.cpp writes): a few
kilobytes, no weights, no llama.cpp and no ``gguf`` package needed. Format: the GGUF spec
(github.com/ggml-org/ggml/blob/master/docs/gguf.md), versions 2 and 3, little-endian.

Deliberately not here: tensors, or writing GGUF files (the ``gguf`` package does that).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

#: value type → struct format of one value (fixed-size scalars)
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9


def _read(fh: BinaryIO, size: int) -> bytes:
    data = fh.read(size)
    if len(data) != size:
        raise ValueError("the file ends inside its GGUF header")
    return data


def _string(fh: BinaryIO) -> str:
    (n,) = struct.unpack("<Q", _read(fh, 8))
    if n > 1 << 30:
        raise ValueError("a GGUF string longer than 1 GiB: not a GGUF file?")
    return _read(fh, n).decode("utf-8", errors="replace")


def _value(fh: BinaryIO, kind: int, keep: bool) -> Any:
    """The next value of type ``kind`` (``keep=False``: skipped, ``None`` returned)."""
    if kind in _SCALARS:
        fmt = "<" + _SCALARS[kind]
        raw = _read(fh, struct.calcsize(fmt))
        return struct.unpack(fmt, raw)[0] if keep else None
    if kind == _STRING:
        if keep:
            return _string(fh)
        (n,) = struct.unpack("<Q", _read(fh, 8))
        fh.seek(n, 1)
        return None
    if kind == _ARRAY:
        item, count = struct.unpack("<IQ", _read(fh, 12))
        if item in _SCALARS and not keep:
            fh.seek(count * struct.calcsize("<" + _SCALARS[item]), 1)
            return None
        values = [_value(fh, item, keep) for _ in range(count)]
        return values if keep else None
    raise ValueError(f"unknown GGUF value type {kind}")


def gguf_metadata(path: str | Path, keys: Iterable[str]) -> dict[str, Any]:
    """The values of ``keys`` present in the GGUF file at ``path`` (absent keys are left out).
    Raises ``ValueError`` when the file is not GGUF (v2/v3), ``OSError`` when unreadable."""
    wanted = set(keys)
    found: dict[str, Any] = {}
    with Path(path).open("rb") as fh:
        if _read(fh, 4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        version, _tensors, count = struct.unpack("<IQQ", _read(fh, 20))
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is not supported (2 or 3)")
        for _ in range(count):
            key = _string(fh)
            (kind,) = struct.unpack("<I", _read(fh, 4))
            value = _value(fh, kind, key in wanted)
            if key in wanted:
                found[key] = value
                if len(found) == len(wanted):
                    break
    return found


__all__ = ["gguf_metadata"]

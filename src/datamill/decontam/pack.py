"""Hashed n-gram tables, and packs: such a table saved to a file to share and use offline.

A :class:`NgramTable` holds, for one or more benchmarks, the 64-bit hash of every normalised
n-gram of every item (``decontam.text``), sorted, with a parallel array of item numbers, each
item's benchmark and the item ids. An item shorter than ``n`` words is stored as one hash of all
its words (its length is listed in ``short_lengths``, so rows are looked up with windows of that
length too). Memory: 12 bytes per n-gram (8 hash + 4 item) plus the ids.

A pack (``datamill decontam pack BENCH… -o FILE.npz``) is an ``np.savez`` file: ``hashes``
(uint64, sorted), ``items`` (uint32), ``item_bench`` (uint16) and ``header`` (UTF-8 JSON as
uint8: format, version, normalisation, n, benchmarks with their item counts, short lengths,
ids). It holds no benchmark text, so it can be shared where the benchmark may not be; it is
read without pickle.

Deliberately not here: reading benchmarks (``decontam.benchmarks``), matching (``decontam.index``).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .benchmarks import BenchmarkSpec, Item, check_path, read_items
from .text import NORMALISATION, ngram_hashes, word_hashes, words

FORMAT = "datamill-decontam-pack"
VERSION = 1


@dataclass
class NgramTable:
    """Sorted n-gram hashes of some benchmarks' items (see the module note)."""

    n: int
    benchmarks: list[str]
    ids: list[str]
    item_bench: np.ndarray  #: (items,) benchmark number of each item
    hashes: np.ndarray  #: (ngrams,) uint64, sorted
    items: np.ndarray  #: (ngrams,) uint32 item number of each hash
    short_lengths: tuple[int, ...] = ()
    counts: list[int] = field(default_factory=list)  #: items per benchmark

    @classmethod
    def from_items(cls, name: str, items: Iterable[Item], n: int) -> NgramTable:
        """The table of one benchmark's items."""
        ids: list[str] = []
        parts: list[np.ndarray] = []
        owners: list[np.ndarray] = []
        short: set[int] = set()
        for number, item in enumerate(items):
            ids.append(item.id)
            for text in item.texts:
                tokens = words(text)
                if not tokens:
                    continue
                k = min(n, len(tokens))
                if k < n:
                    short.add(k)
                h = np.unique(ngram_hashes(word_hashes(tokens), k))
                parts.append(h)
                owners.append(np.full(len(h), number, dtype=np.uint32))
        hashes = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
        owner = np.concatenate(owners) if owners else np.zeros(0, np.uint32)
        order = np.argsort(hashes, kind="stable")
        return cls(
            n=n,
            benchmarks=[name],
            ids=ids,
            item_bench=np.zeros(len(ids), dtype=np.uint16),
            hashes=hashes[order],
            items=owner[order],
            short_lengths=tuple(sorted(short)),
            counts=[len(ids)],
        )

    @classmethod
    def merge(cls, tables: list[NgramTable]) -> NgramTable:
        """One table of several (all with the same ``n``); benchmarks keep their order."""
        if len(tables) == 1:
            return tables[0]
        n = tables[0].n
        ids: list[str] = []
        benches: list[str] = []
        counts: list[int] = []
        item_bench, hashes, items = [], [], []
        for t in tables:
            item_bench.append(t.item_bench.astype(np.uint16) + len(benches))
            items.append(t.items + np.uint32(len(ids)))
            hashes.append(t.hashes)
            ids += t.ids
            benches += t.benchmarks
            counts += t.counts
        all_hashes = np.concatenate(hashes)
        order = np.argsort(all_hashes, kind="stable")
        return cls(
            n=n,
            benchmarks=benches,
            ids=ids,
            item_bench=np.concatenate(item_bench),
            hashes=all_hashes[order],
            items=np.concatenate(items)[order],
            short_lengths=tuple(sorted({k for t in tables for k in t.short_lengths})),
            counts=counts,
        )

    def renamed(self, name: str) -> NgramTable:
        """This table with its one benchmark called ``name``."""
        if len(self.benchmarks) != 1:
            raise ConfigError(
                f"a pack of {len(self.benchmarks)} benchmarks ({', '.join(self.benchmarks)}) cannot take one name"
            )
        self.benchmarks = [name]
        return self

    def header(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "normalisation": NORMALISATION,
            "n": self.n,
            "benchmarks": [
                {"name": b, "items": c} for b, c in zip(self.benchmarks, self.counts, strict=True)
            ],
            "items": len(self.ids),
            "ngrams": len(self.hashes),
            "short_lengths": list(self.short_lengths),
            "ids": self.ids,
        }

    def save(self, path: str | Path) -> Path:
        """Write the pack to ``path`` (``.npz``), atomically; returns the path."""
        path = Path(path)
        head = np.frombuffer(json.dumps(self.header(), ensure_ascii=False).encode(), np.uint8)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
        with tmp.open("wb") as fh:
            np.savez(
                fh,
                header=head,
                hashes=self.hashes,
                items=self.items,
                item_bench=self.item_bench.astype(np.uint16),
            )
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> NgramTable:
        """Read a pack (checked like :func:`read_header`)."""
        head = read_header(path)
        with np.load(path, allow_pickle=False) as data:
            return cls(
                n=head["n"],
                benchmarks=[b["name"] for b in head["benchmarks"]],
                ids=[str(i) for i in head["ids"]],
                item_bench=data["item_bench"],
                hashes=data["hashes"],
                items=data["items"],
                short_lengths=tuple(head["short_lengths"]),
                counts=[b["items"] for b in head["benchmarks"]],
            )


def make_pack(specs: list[BenchmarkSpec], n: int) -> NgramTable:
    """One table of benchmarks (raw files are read and hashed; packs, which must hold
    ``n``-grams, are merged in). Raises :class:`ConfigError`/``InputError`` with one line."""
    tables = []
    for spec in specs:
        check_path(spec)
        if spec.is_pack:
            table = NgramTable.load(spec.path)
            if table.n != n:
                raise ConfigError(f"pack {spec.path} holds {table.n}-grams, not {n}-grams")
            tables.append(table.renamed(spec.name) if spec.name else table)
        else:
            tables.append(NgramTable.from_items(spec.label, read_items(spec), n))
    names = [b for t in tables for b in t.benchmarks]
    twice = sorted({b for b in names if names.count(b) > 1})
    if twice:
        raise ConfigError(f"two benchmarks are called {twice[0]!r}: give each a --name")
    return NgramTable.merge(tables)


def read_header(path: str | Path) -> dict[str, Any]:
    """A pack's header, without its arrays. Raises :class:`ConfigError` (one line) when the file
    is not a datamill pack or was made with another normalisation."""
    try:
        with np.load(path, allow_pickle=False) as data:
            head = json.loads(bytes(data["header"]).decode("utf-8"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError(
            f"{path} is not a decontamination pack ({type(exc).__name__}); make one with "
            "'datamill decontam pack BENCH -o FILE.npz'"
        ) from None
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a decontamination pack made by datamill")
    if head.get("normalisation") != NORMALISATION or head.get("version") != VERSION:
        raise ConfigError(
            f"{path} was made with another normalisation ({head.get('normalisation')}, "
            f"version {head.get('version')}); make it again with this datamill"
        )
    return head


__all__ = ["FORMAT", "VERSION", "NgramTable", "make_pack", "read_header"]

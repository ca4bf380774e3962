"""The text decontamination compares, and the hashes of its word n-grams.

Normalisation (:data:`NORMALISATION`, stored in every pack): Unicode NFKC, case-folded,
apostrophes (``'`` and ``’``) deleted so ``don't`` and ``dont`` agree, then the words are the runs
of letters and digits (punctuation, underscores and every kind of whitespace separate words and
are otherwise ignored). So "The  Cat's, HAT!" and "the cats hat" are the same three words.

A word hashes to the first 8 bytes of its blake2b digest (little-endian). A k-word n-gram hashes
to a polynomial of its word hashes modulo 2**64 (``h = h·P + w``), finished by the splitmix64
mixer, so all the n-grams of a text are hashed with ``k`` numpy operations instead of one digest
each. Two different n-grams share a hash with probability about 2**-64 per pair.

Deliberately not here: stemming, stop words, or any language-specific rule.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata

import numpy as np

#: the name of this normalisation and hash; a pack made with another is refused
NORMALISATION = "nfkc-casefold-alnum/blake2b64-poly-v1"

_APOSTROPHES = re.compile("['\u2019]")
_WORD = re.compile(r"[^\W_]+")
_P = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def words(text: str) -> list[str]:
    """The normalised words of ``text`` (see the module note)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _WORD.findall(_APOSTROPHES.sub("", folded))


@functools.lru_cache(maxsize=1 << 18)
def word_hash(word: str) -> int:
    """A word's 64-bit hash (blake2b, 8 bytes, little-endian)."""
    digest = hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def word_hashes(tokens: list[str]) -> np.ndarray:
    """uint64 array of each word's hash, shape ``(len(tokens),)``."""
    return np.fromiter(map(word_hash, tokens), dtype=np.uint64, count=len(tokens))


def window_hashes(hashed: np.ndarray, lengths: list[int]) -> tuple[np.ndarray, list[int]]:
    """uint64 hashes of every ``k``-word window of ``hashed`` (word hashes) for each ``k`` of
    ``lengths``, concatenated in that order (each length's windows in text order), and how many
    windows each length has (``len(hashed) - k + 1``, or 0 when there are fewer than ``k``
    words). All lengths come from one pass: windows of ``k`` words extend those of ``k - 1`` by
    one word, so the cost is that of the longest length, not of their sum."""
    m = len(hashed)
    found: dict[int, np.ndarray] = {}
    h = hashed.copy()
    k = 1
    for target in sorted({k for k in lengths if 0 < k <= m}):
        while k < target:
            h = h[:-1] * _P
            h += hashed[k:]
            k += 1
        found[k] = h
    parts = [found[k] for k in lengths if k in found]
    counts = [len(found[k]) if k in found else 0 for k in lengths]
    if not parts:
        return np.zeros(0, dtype=np.uint64), counts
    out = np.concatenate(parts) if len(parts) > 1 else parts[0].copy()
    out ^= out >> np.uint64(30)  # splitmix64's finaliser, once over every window
    out *= _M1
    out ^= out >> np.uint64(27)
    out *= _M2
    out ^= out >> np.uint64(31)
    return out, counts


def ngram_hashes(hashed: np.ndarray, k: int) -> np.ndarray:
    """uint64 hashes of every k-word window of ``hashed`` (word hashes), in order: shape
    ``(len(hashed) - k + 1,)``, empty when there are fewer than ``k`` words."""
    return window_hashes(hashed, [k])[0]


__all__ = ["NORMALISATION", "ngram_hashes", "window_hashes", "word_hash", "word_hashes", "words"]

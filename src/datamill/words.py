"""Counts in words for the lines datamill prints: ``plural(1, "row")`` → ``"1 row"``,
``plural(2, "row")`` → ``"2 rows"``. A top-level module: the CLI, the pipeline's summary lines and
the web app all use it."""

from __future__ import annotations


def plural(n: object, word: str, words: str | None = None) -> str:
    """``n`` and ``word``, in the plural (``words``, default ``word + "s"``) unless ``n`` is 1.
    ``n`` is printed as it is (an int, or a pre-formatted string such as ``"1,200"``)."""
    one = n == 1 or n == "1"
    return f"{n} {word if one else (words or word + 's')}"


__all__ = ["plural"]

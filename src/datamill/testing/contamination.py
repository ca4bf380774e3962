"""A synthetic contamination test set: a benchmark, and rows that are clean, hold a benchmark
item verbatim, or hold one with its case, whitespace and punctuation changed.

Texts are sentences of pseudo-words drawn (Zipf-like, so some words are common) from a fixed
vocabulary with a seeded ``random.Random``: the same seed gives the same set on every machine.
Benchmark items are mostly 15–60 words, with some shorter than 13 (8–12 words) and a few tiny
ones (3–7 words), so every window rule of ``datamill.decontam.index`` is exercised. A tiny item is
planted as a whole text (that is the only way it counts); a longer one inside other words.

``tests/test_decontaminate.py`` measures the rates on a few hundred items; ``bench/decontam.py``
on many more. Deliberately not here: any judgement of real benchmarks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

_SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]


def vocabulary(size: int = 4000, seed: int = 7) -> list[str]:
    """``size`` distinct pseudo-words of 1–4 syllables."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < size:
        w = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4)))
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


@dataclass
class TestSet:
    """A benchmark (``{"id", "text"}`` items) and labelled rows (``{"instruction", "response"}``)."""

    benchmark: list[dict[str, str]]
    rows: list[dict[str, str]] = field(default_factory=list)
    #: per row: "clean", "verbatim" or "perturbed", and the id of the planted item (or None)
    labels: list[tuple[str, str | None]] = field(default_factory=list)


class Generator:
    """Seeded texts over one vocabulary."""

    def __init__(self, seed: int = 0, vocab: int = 4000) -> None:
        self.rng = random.Random(seed)
        self.vocab = vocabulary(vocab)
        self.weights = [1.0 / (rank + 10) for rank in range(len(self.vocab))]

    def words(self, n: int) -> list[str]:
        return self.rng.choices(self.vocab, self.weights, k=n)

    def sentence_text(self, n: int) -> str:
        """``n`` words as sentences: capitalised, commas and full stops."""
        out: list[str] = []
        for i, w in enumerate(self.words(n)):
            if i == 0 or out[-1].endswith("."):
                w = w.capitalize()
            r = self.rng.random()
            out.append(w + ("." if r < 0.08 else "," if r < 0.14 else ""))
        return " ".join(out).rstrip(",") + ("" if out[-1].endswith(".") else ".")

    def item_length(self) -> int:
        r = self.rng.random()
        if r < 0.05:
            return self.rng.randint(3, 7)
        if r < 0.15:
            return self.rng.randint(8, 12)
        return self.rng.randint(15, 60)

    def perturb(self, text: str) -> str:
        """``text`` with its case, whitespace and punctuation changed (the words stay)."""
        out = []
        for w in text.split():
            core = w.strip(".,")
            r = self.rng.random()
            core = core.upper() if r < 0.3 else core.lower() if r < 0.6 else core.capitalize()
            p = self.rng.random()
            if p < 0.15:
                core += self.rng.choice([",", ";", ":", "!", "?", "...", " -"])
            elif p < 0.2:
                core = f'"{core}"' if self.rng.random() < 0.5 else f"({core})"
            out.append(core)
        seps = [" ", "  ", "\n", "\t", " \n "]
        return "".join(
            w + (self.rng.choice(seps) if i < len(out) - 1 else "") for i, w in enumerate(out)
        )

    def benchmark(self, items: int) -> list[dict[str, str]]:
        """``items`` benchmark items ``{"id": "item-N", "text": ...}``."""
        return [
            {"id": f"item-{i}", "text": self.sentence_text(self.item_length())}
            for i in range(items)
        ]

    def row(
        self, label: str, bench: list[dict[str, str]], row_words: int = 40
    ) -> tuple[dict[str, str], str | None]:
        """One row (``instruction`` up to ``row_words`` words, ``response`` up to three times
        that) and the id of the item planted in it: none for ``clean``; for ``verbatim`` and
        ``perturbed`` one item, at random, in a random column (inside other sentences when it
        has 8 words or more, else as the whole text)."""
        row = {
            "instruction": self.sentence_text(self.rng.randint(5, row_words)),
            "response": self.sentence_text(self.rng.randint(5, 3 * row_words)),
        }
        if label == "clean":
            return row, None
        item = self.rng.choice(bench)
        text = item["text"] if label == "verbatim" else self.perturb(item["text"])
        if len(item["text"].split()) >= 8:
            before = self.sentence_text(self.rng.randint(3, 20))
            text = f"{before} {text} {self.sentence_text(self.rng.randint(3, 20))}"
        row[self.rng.choice(["instruction", "response"])] = text
        return row, item["id"]

    def test_set(
        self, items: int, clean: int, verbatim: int, perturbed: int, row_words: int = 40
    ) -> TestSet:
        """A benchmark of ``items`` items and rows (:meth:`row`): ``clean``, ``verbatim`` and
        ``perturbed`` ones, shuffled."""
        bench = self.benchmark(items)
        made = []
        for label, count in (("clean", clean), ("verbatim", verbatim), ("perturbed", perturbed)):
            for _ in range(count):
                row, item = self.row(label, bench, row_words)
                made.append((row, (label, item)))
        self.rng.shuffle(made)
        return TestSet(bench, [r for r, _ in made], [lab for _, lab in made])


__all__ = ["Generator", "TestSet", "vocabulary"]

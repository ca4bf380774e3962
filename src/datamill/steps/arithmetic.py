"""Arithmetic word problems with computed answers: checkable prompts that need no download.

:func:`arithmetic_problem` draws one GSM8K-style problem (one to three steps of +, -, ×, ÷ on
whole numbers) from a caller's ``random.Random``; its answer is computed in Python, so it is
right by construction. The ``math-verified`` recipe uses them (through ``math_problems``) when
no ``--input`` is given. Deliberately not here: checking answers (``verify_math``).
"""

from __future__ import annotations

import random
from collections.abc import Callable

NAMES = ("Ava", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hugo", "Iris", "Jonas")
ITEMS = ("apples", "pencils", "stickers", "marbles", "books", "cookies", "stamps", "shells")


def _add(r: random.Random, name: str, item: str) -> tuple[str, int]:
    a, b = r.randint(3, 60), r.randint(2, 40)
    return (
        f"{name} has {a} {item}. A friend gives {name} {b} more. How many {item} does {name} have now?",
        a + b,
    )


def _sub(r: random.Random, name: str, item: str) -> tuple[str, int]:
    a = r.randint(20, 90)
    b = r.randint(2, a - 1)
    return f"{name} had {a} {item} and gave away {b}. How many {item} does {name} have left?", a - b


def _mul(r: random.Random, name: str, item: str) -> tuple[str, int]:
    a, b = r.randint(2, 12), r.randint(3, 15)
    return (
        f"{name} buys {a} bags with {b} {item} in each bag. How many {item} does {name} buy?",
        a * b,
    )


def _div(r: random.Random, name: str, item: str) -> tuple[str, int]:
    each, kids = r.randint(2, 12), r.randint(2, 9)
    total = each * kids
    return (
        f"{name} shares {total} {item} equally among {kids} children. How many {item} does each child get?",
        each,
    )


def _buy_and_use(r: random.Random, name: str, item: str) -> tuple[str, int]:
    packs, per = r.randint(2, 9), r.randint(4, 12)
    used = r.randint(1, packs * per - 1)
    return (
        f"{name} buys {packs} packs of {item} with {per} in each pack and uses {used} of them. "
        f"How many {item} are left?",
        packs * per - used,
    )


def _wage(r: random.Random, name: str, item: str) -> tuple[str, int]:
    rate, hours, days = r.randint(8, 25), r.randint(2, 8), r.randint(2, 6)
    return (
        f"{name} earns {rate} dollars an hour and works {hours} hours a day for {days} days. "
        f"How many dollars does {name} earn?",
        rate * hours * days,
    )


def _change(r: random.Random, name: str, item: str) -> tuple[str, int]:
    count, price = r.randint(2, 9), r.randint(2, 12)
    paid = count * price + r.randint(1, 30)
    return (
        f"{name} buys {count} {item} at {price} dollars each and pays with {paid} dollars. "
        "How many dollars of change does "
        f"{name} get?",
        paid - count * price,
    )


TEMPLATES: tuple[Callable[[random.Random, str, str], tuple[str, int]], ...] = (
    _add,
    _sub,
    _mul,
    _div,
    _buy_and_use,
    _wage,
    _change,
)


def arithmetic_problem(rng: random.Random) -> tuple[str, int]:
    """``(problem, answer)``: one word problem and its whole-number answer, drawn from ``rng``."""
    template = rng.choice(TEMPLATES)
    return template(rng, rng.choice(NAMES), rng.choice(ITEMS))


__all__ = ["TEMPLATES", "arithmetic_problem"]

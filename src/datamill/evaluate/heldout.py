"""Held-out evaluation sets that need no download, a user's own eval file, and the overlap check.

An eval item is a dict: ``id``, ``kind`` (``constraints`` | ``math`` | ``code``), ``prompt`` (what
the model is asked), ``base`` (the task without constraint sentences: what the overlap check
compares) and what its scorer needs: ``constraints`` (a list of ``{id, kwargs}``),
``reference_answer`` (a number or expression) or ``tests`` (Python asserts).

Built-in sets (``--heldout NAME[:N]``), drawn from ``random.Random(seed)`` only:

- ``constraints``: instructions written for evaluation (topics and phrasings that none of the
  built-in recipes' prompts use) with one constraint sampled from the ``constraints`` recipe's ids;
  scored by ``verify_constraints``.
- ``math``: two-step arithmetic with a number answer; scored by ``verify_math``.
- ``code``: small Python functions with asserts; scored by ``verify_code`` in the sandbox.

Boilerplate in the built-in prompts is kept under 8 words, so every 8-gram of an item holds its
topic or its numbers. Overlap: a held-out item overlaps a training set when its task text shares a word 8-gram (the
decontamination's normalised words; a whole text when it is shorter) with a training prompt with
its constraint sentences removed. Overlapping items are left out of every model's score.

Deliberately not here: the scoring (``evaluate.scoring``), generation (``evaluate.hf``).
"""

from __future__ import annotations

import contextlib
import json
import random
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..recipes.yamlkeys import load_yaml

KINDS = ("constraints", "math", "code")
#: default size of each built-in set
DEFAULT_SIZE = {"constraints": 120, "math": 100, "code": 12}
OVERLAP_N = 8

_TOPICS = (
    "the first day at a new job",
    "a visit to a science museum",
    "learning to play the piano",
    "how volcanoes erupt",
    "why people keep pets",
    "a train journey across the mountains",
    "the history of the printing press",
    "how to prepare for a job interview",
    "the life of honey bees",
    "a power cut in the evening",
    "how a library lends books",
    "the rules of chess",
    "a festival in a small town",
    "why recycling matters",
    "how the moon changes shape",
    "a day without a phone",
    "building a sandcastle",
    "how vaccines protect people",
    "a football match in the rain",
    "the invention of the telephone",
    "how to save money on groceries",
    "a camping trip in the forest",
    "what makes a good friend",
    "how airplanes stay in the air",
    "a lighthouse keeper's night",
    "the importance of drinking water",
    "how to write a good email",
    "a robot that learns to paint",
    "the migration of birds",
    "a snowy morning in the city",
)
_FORMS = (
    "Write a short paragraph about {t}.",
    "Explain {t} to a friend.",
    "Tell a brief story about {t}.",
    "Give some practical thoughts on {t}.",
    "Write a few sentences describing {t}.",
)
_CODE = (
    (
        "add_one",
        "Write a Python function add_one(x) that returns x plus 1.",
        "assert add_one(1) == 2\nassert add_one(-1) == 0",
    ),
    (
        "is_even",
        "Write a Python function is_even(n) that returns True when the integer n is even.",
        "assert is_even(4) is True\nassert is_even(7) is False",
    ),
    (
        "reverse_string",
        "Write a Python function reverse_string(s) that returns the string s reversed.",
        "assert reverse_string('abc') == 'cba'\nassert reverse_string('') == ''",
    ),
    (
        "max_of_list",
        "Write a Python function max_of_list(xs) that returns the largest number in the list xs.",
        "assert max_of_list([3, 9, 2]) == 9\nassert max_of_list([-5, -2]) == -2",
    ),
    (
        "count_vowels",
        "Write a Python function count_vowels(s) that returns how many vowels (a, e, i, o, u) the lowercase string s has.",
        "assert count_vowels('banana') == 3\nassert count_vowels('xyz') == 0",
    ),
    (
        "square_all",
        "Write a Python function square_all(xs) that returns a list with the square of each number in xs.",
        "assert square_all([1, 2, 3]) == [1, 4, 9]\nassert square_all([]) == []",
    ),
    (
        "factorial",
        "Write a Python function factorial(n) that returns n! for a non-negative integer n.",
        "assert factorial(0) == 1\nassert factorial(5) == 120",
    ),
    (
        "sum_list",
        "Write a Python function sum_list(xs) that returns the sum of the numbers in the list xs.",
        "assert sum_list([1, 2, 3]) == 6\nassert sum_list([]) == 0",
    ),
    (
        "is_palindrome",
        "Write a Python function is_palindrome(s) that returns True when the string s reads the same backwards.",
        "assert is_palindrome('level') is True\nassert is_palindrome('abc') is False",
    ),
    (
        "first_char",
        "Write a Python function first_char(s) that returns the first character of the non-empty string s.",
        "assert first_char('hello') == 'h'",
    ),
    (
        "celsius_to_f",
        "Write a Python function celsius_to_f(c) that converts degrees Celsius to Fahrenheit.",
        "assert celsius_to_f(0) == 32\nassert celsius_to_f(100) == 212",
    ),
    (
        "count_words",
        "Write a Python function count_words(s) that returns the number of words separated by spaces in s.",
        "assert count_words('a b c') == 3\nassert count_words('one') == 1",
    ),
)


@cache
def recipe_constraint_ids() -> tuple[str, ...]:
    """The constraint ids the built-in ``constraints`` recipe samples (the held-out set uses the
    same types, on other instructions)."""
    from ..recipes.loader import builtin_dir

    text = (builtin_dir() / "constraints.yaml").read_text(encoding="utf-8")
    for step in load_yaml(text)["steps"]:
        if "sample_constraints" in step:
            return tuple(step["sample_constraints"]["ids"])
    raise AssertionError("the constraints recipe has no sample_constraints step")


def constraints_set(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` constraint-following items (at most 150 distinct instructions, then reused with new
    constraints)."""
    from ..constraints import sample

    rng = random.Random(f"heldout-constraints-{seed}")
    tasks = [f.format(t=t) for t in _TOPICS for f in _FORMS]
    rng.shuffle(tasks)
    items = []
    for i in range(n):
        base = tasks[i % len(tasks)]
        cs = sample(rng, 1, ids=list(recipe_constraint_ids()))
        prompt = f"{base}\n\n" + " ".join(c.describe() for c in cs)
        items.append(
            {
                "id": f"constraints-{i}",
                "kind": "constraints",
                "prompt": prompt,
                "base": base,
                "constraints": [{"id": c.id, "kwargs": dict(c.kwargs)} for c in cs],
            }
        )
    return items


def math_set(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` two-step arithmetic questions with integer answers."""
    rng = random.Random(f"heldout-math-{seed}")
    items = []
    for i in range(n):
        a, b, c = rng.randint(2, 60), rng.randint(2, 30), rng.randint(2, 9)
        op = rng.choice(["+", "-"])
        value = a + b * c if op == "+" else a - b * c
        q = f"What is {a} {op} {b} * {c}? End with the final number."
        items.append(
            {
                "id": f"math-{i}",
                "kind": "math",
                "prompt": q,
                "base": q,
                "reference_answer": str(value),
            }
        )
    return items


def code_set(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Up to ``len(_CODE)`` function-writing tasks with asserts (``n`` of them, shuffled)."""
    rng = random.Random(f"heldout-code-{seed}")
    chosen = rng.sample(_CODE, min(n, len(_CODE)))
    return [
        {"id": f"code-{name}", "kind": "code", "prompt": q, "base": q, "tests": tests}
        for name, q, tests in chosen
    ]


_BUILDERS = {"constraints": constraints_set, "math": math_set, "code": code_set}


def parse_heldout(spec: str) -> tuple[str, int]:
    """``NAME`` or ``NAME:N`` → (name, size). Raises InputError on an unknown name or bad N."""
    name, _, size = spec.partition(":")
    if name not in _BUILDERS:
        raise InputError(
            f"--heldout {spec!r}: unknown set; use one of {', '.join(KINDS)} (optionally NAME:N)"
        )
    if not size:
        return name, DEFAULT_SIZE[name]
    if not size.isdigit() or int(size) < 1:
        raise InputError(f"--heldout {spec!r}: N must be a positive whole number, e.g. {name}:50")
    return name, int(size)


def builtin(spec: str, seed: int = 0) -> list[dict[str, Any]]:
    """The built-in set named by ``spec`` (``NAME[:N]``)."""
    name, n = parse_heldout(spec)
    return _BUILDERS[name](n, seed)


def _cell(value: Any) -> Any:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, str) and value[:1] == "[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def from_file(path: Path) -> list[dict[str, Any]]:
    """Eval items from a user's file (``.jsonl``/``.json``/``.parquet`` or a dataset folder):
    a ``prompt`` (or ``instruction``) column and one of ``constraints`` (list of ``{id,
    kwargs}``), ``reference_answer`` (or ``answer``) or ``tests``. Raises InputError naming the
    first row that has no scorer, before any model is loaded."""
    from ..constraints import from_dicts
    from ..errors import ConfigError
    from ..io.sources import source_from_path

    if not path.exists():
        raise InputError(f"--eval-file {path}: no such file or folder")
    rows = source_from_path(path).rows()
    if not rows:
        raise InputError(f"--eval-file {path}: no rows")
    items = []
    for i, row in enumerate(rows):
        prompt = row.get("prompt") or row.get("instruction")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(f"--eval-file {path}: row {i} has no 'prompt' (or 'instruction') text")
        item: dict[str, Any] = {"id": f"{path.stem}-{i}", "prompt": prompt}
        if row.get("constraints") is not None:
            item["kind"] = "constraints"
            item["constraints"] = _cell(row["constraints"])
            try:
                cs = from_dicts(item["constraints"])
            except ConfigError as exc:
                raise InputError(f"--eval-file {path}: row {i}: {exc}") from None
            item["base"] = strip_constraints(prompt, cs)
        elif row.get("reference_answer") is not None or row.get("answer") is not None:
            item["kind"] = "math"
            item["reference_answer"] = str(row.get("reference_answer") or row.get("answer"))
        elif row.get("tests") is not None:
            tests = _cell(row["tests"])
            item["kind"] = "code"
            item["tests"] = "\n".join(tests) if isinstance(tests, list) else str(tests)
        else:
            raise InputError(
                f"--eval-file {path}: row {i} has no 'constraints', 'reference_answer' or "
                "'tests' column to score answers by; add one"
            )
        item.setdefault("base", prompt)
        items.append(item)
    return items


def strip_constraints(text: str, constraints: list[Any]) -> str:
    """``text`` without the instruction sentences of ``constraints`` (``Constraint`` objects)."""
    for c in constraints:
        text = text.replace(c.describe(), " ")
    return text.strip()


def training_prompt(row: dict[str, Any]) -> str:
    """The task text of a training row: its first user message (or ``prompt``/``instruction``),
    with the row's constraint sentences removed."""
    from ..constraints import from_dicts

    text = ""
    messages = _cell(row.get("messages"))
    if isinstance(messages, list):
        text = next(
            (
                str(m.get("content", ""))
                for m in messages
                if isinstance(m, dict) and m.get("role") == "user"
            ),
            "",
        )
    prompt = _cell(row.get("prompt"))
    if not text and isinstance(prompt, list):  # a DPO row's prompt as messages
        text = next((str(m.get("content", "")) for m in prompt if isinstance(m, dict)), "")
    if not text:
        text = str(row.get("instruction") or (prompt if isinstance(prompt, str) else "") or "")
    cons = _cell(row.get("constraints"))
    if isinstance(cons, list) and cons:
        with contextlib.suppress(Exception):  # unreadable constraints: compare the whole prompt
            text = strip_constraints(text, from_dicts(cons))
    return text


def _grams(text: str, n: int) -> set[tuple[str, ...]]:
    from ..decontam.text import words

    ws = words(text)
    if len(ws) < n:
        return {tuple(ws)} if ws else set()
    return {tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)}


def overlap(
    items: list[dict[str, Any]], train_rows: list[dict[str, Any]], n: int = OVERLAP_N
) -> dict[str, Any]:
    """Which held-out items share a word ``n``-gram with a training prompt.

    Returns ``{"n": n, "checked": len(items), "overlapping": [item ids], "examples":
    [{"item", "train"}] (up to 3)}``; a text shorter than ``n`` words counts as one gram."""
    train: dict[tuple[str, ...], str] = {}
    for row in train_rows:
        text = training_prompt(row)
        for g in _grams(text, n):
            train.setdefault(g, text)
    hits: list[str] = []
    examples: list[dict[str, str]] = []
    for item in items:
        for g in _grams(item["base"], n):
            if g in train:
                hits.append(item["id"])
                if len(examples) < 3:
                    examples.append({"item": item["base"][:120], "train": train[g][:120]})
                break
    return {"n": n, "checked": len(items), "overlapping": hits, "examples": examples}


__all__ = [
    "DEFAULT_SIZE",
    "KINDS",
    "builtin",
    "code_set",
    "constraints_set",
    "from_file",
    "math_set",
    "overlap",
    "parse_heldout",
    "recipe_constraint_ids",
    "training_prompt",
]

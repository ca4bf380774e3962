"""Recipe YAML → Python data, with YAML 1.2's core-schema booleans for keys and values alike.

YAML 1.1 (PyYAML) reads the plain words ``yes``/``no``/``on``/``off``/``y``/``n`` as booleans,
so ``category: {values: [yes, no]}`` would draw ``True``/``False`` (a bool column, a prompt
saying "True") and ``conditional: {on: topic}`` would give a key ``True``. A recipe follows YAML
1.2's core schema instead: only ``true``/``false`` (in any case) are booleans; every other word
is the string written. A boolean field still takes ``yes``/``on`` (pydantic's lax coercion reads
the string ``"yes"`` as ``True``), so ``stream: yes`` and ``--set …keep_columns=no`` work.

A mapping key is a name (parameter, column, part, case value), never a truth value: a key
written ``true:``/``false:`` stays that text. A sampler compares case keys with column values in
one spelling for both (``io.samplers._key``), also for a recipe given as Python data with bools.
Deliberately not here: YAML 1.2's other rules (octal ``0o``, ``1:20`` as text), any other tag.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_BOOL = "tag:yaml.org,2002:bool"
_STR = "tag:yaml.org,2002:str"


class _RecipeLoader(yaml.SafeLoader):
    """``SafeLoader`` with YAML 1.2 core booleans, and plain boolean-looking keys as strings."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag == _BOOL and key.style is None:
                key.tag = _STR  # resolved from a plain word: keep the word
        return super().construct_mapping(node, deep=deep)


_RecipeLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|false)$", re.IGNORECASE), list("tTfF")
)


def load_yaml(text: str) -> Any:
    """``text`` parsed like ``yaml.safe_load``, except that only ``true``/``false`` (any case)
    are booleans (``yes``/``no``/``on``/``off``/``y``/``n`` are strings) and a key ``true:`` is
    the string written. Raises ``yaml.YAMLError`` as ``safe_load`` does."""
    return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 (a SafeLoader)

"""Recipe YAML → Python data, with every mapping key kept as the word the user wrote.

YAML 1.1 (PyYAML) reads the plain words ``on``/``off``/``yes``/``no``/``true``/``false`` as
booleans, so ``conditional: {on: topic}`` would give a key ``True`` and the recipe's checks would
name a parameter nobody wrote. A recipe's mapping keys are names (parameters, columns, parts,
case values), never truth values, so :func:`load_yaml` keeps such a key as its text (``"on"``).

Values are read as before (``stream: yes`` is still ``True``); a sampler compares case keys with
column values in one spelling for both (``io.samplers._key``). Deliberately not here: YAML 1.2's
value rules, any other tag.
"""

from __future__ import annotations

from typing import Any

import yaml

_BOOL = "tag:yaml.org,2002:bool"
_STR = "tag:yaml.org,2002:str"


class _RecipeLoader(yaml.SafeLoader):
    """``SafeLoader`` whose plain boolean-looking mapping keys stay strings."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag == _BOOL:
                key.tag = _STR  # resolved from a plain word: keep the word
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """``text`` parsed like ``yaml.safe_load``, but a key spelled ``on``/``yes``/``off``/``no``
    (or ``true``/``false``) is that string, not a bool. Raises ``yaml.YAMLError`` as
    ``safe_load`` does."""
    return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 (a SafeLoader)

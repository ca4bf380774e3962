"""Licence and provenance: what a dataset was made from, under which licences, for the card.

``collect`` (called once per run) gives ``run.json`` its ``provenance``::

    {"licence": "cc-by-nc-4.0",                       # the card header's license
     "conflict": false,                                # the inputs' licences allow no common one
     "models": [{"name": "default", "model": "smollm2", "backend": "llamacpp",
                 "licence": "apache-2.0", "from": "GGUF general.license"}],
     "inputs": [{"name": "seeds.jsonl", "licence": "cc-by-nc-4.0", "from": "--input-licence"}],
     "recipe": {"name": "instructions-seeded", "builtin": true, "sha256": "…"},
     "datamill": "0.1.0", "note": "a guard, not legal advice"}

Where a model's licence comes from, first found wins: the model option ``licence`` (recipe
``models: {default: {spec: ..., licence: L}}``); a GGUF file's ``general.license``; the model
card (``README.md`` ``license:``) of a local model folder, or of a Hub model already in the local
Hub cache; the user's price table (``licence:`` beside the price, ``datamill.pricing``); else
``unknown``, said plainly. An input dataset's: ``--input-licence`` (``input_licence=``); the
``license:`` of the dataset card (``README.md``) of its folder (a file in ``data/`` looks one level
up); the seed rows of a built-in recipe are datamill's own (apache-2.0); else ``unknown``.

Deliberately not here: the table itself (``datamill.licences``); the card's section and the
check before a push (``datamill.licence_card``).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml

from . import licences
from .errors import DatamillError
from .recipes.yamlkeys import load_yaml

#: a Hub card's YAML header (its text in group 1)
FRONT_MATTER = re.compile(r"\A---\n(.*?\n)---\n", re.DOTALL)


def card_licence(readme: Path) -> str | None:
    """The ``license:`` of a Hub card's YAML header (``None``: no card, header or licence)."""
    try:
        text = readme.read_text(encoding="utf-8")
        found = FRONT_MATTER.match(text)
        meta = yaml.safe_load(found.group(1)) if found else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    value = meta.get("license") if isinstance(meta, dict) else None
    return licences.normalize(value) if value else None


def _entry(licence: str | None, where: str) -> dict[str, str]:
    if licence is None:
        return {"licence": licences.UNKNOWN, "from": "not stated anywhere datamill can read"}
    return {"licence": licences.normalize(licence), "from": where}


def _hub_card(repo_id: str, repo_type: str) -> Path | None:
    """A Hub repo's README.md already in the local Hub cache (never downloaded here)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo_id, "README.md", repo_type=repo_type)
    except Exception:  # an id that is not a repo id: no card
        return None
    return Path(found) if isinstance(found, str) else None


def model_licence(model: Any, prices: Any = None) -> dict[str, str]:
    """``{"licence", "from"}`` of a model object (see the module docstring for the order)."""
    extra = model.info.extra if isinstance(model.info.extra, dict) else {}
    if extra.get("licence"):
        return _entry(str(extra["licence"]), "model option licence")
    path = getattr(model, "path", None)
    if path is not None and str(path).endswith(".gguf"):
        try:
            from .models.llamacpp_gguf import gguf_metadata

            value = gguf_metadata(path, ["general.license"]).get("general.license")
        except (ImportError, OSError, ValueError):  # no llama.cpp here, or not a GGUF file
            value = None
        if value:
            return _entry(str(value), "GGUF general.license")
    source = getattr(model, "source", None)
    if isinstance(source, str) and source:
        local = Path(source).expanduser()
        card = local / "README.md" if local.is_dir() else _hub_card(source, "model")
        found = card_licence(card) if card is not None else None
        if found:
            return _entry(found, f"model card {card}")
    if prices is not None:
        name = getattr(model, "model", None) or model.info.name
        found = prices.licence(model.backend, str(name))
        if found:
            return _entry(found, f"price table {prices.source or ''}".strip())
    return _entry(None, "")


def source_card(source: Any) -> Path | None:
    """The dataset card a source's rows come with: ``README.md`` in its folder (a file under
    ``data/`` looks one level up), or a Hub dataset's in the local Hub cache."""
    target = getattr(source, "path", None)
    if target is None and isinstance(getattr(source, "dataset", None), str):
        target = Path(source.dataset)
        if not target.exists():
            return _hub_card(source.dataset, "dataset")
    if target is None and getattr(source, "name", "") not in ("inline rows", "generated rows"):
        target = Path(getattr(source, "name", ""))  # a .json file read as rows
    if target is None:
        return None
    target = Path(target)
    folder = target if target.is_dir() else target.parent
    for place in (folder, folder.parent) if folder.name == "data" else (folder,):
        if (place / "README.md").is_file():
            return place / "README.md"
    return None


#: how provenance (run.json, the card, push checks) names a built-in recipe's own seed rows
BUILTIN_SEED_ROWS = "the built-in recipe's seed rows"


def input_entries(
    source: Any, given: str | None, recipe: dict[str, Any] | None, name: str
) -> list[dict[str, str]]:
    """The input datasets of a run (none when its rows are generated from nothing)."""
    if source is None or type(source).__name__ == "EmptyRows":
        return []
    label = str(getattr(source, "name", "rows"))
    builtin = label == "inline rows" and _builtin_source(recipe, name)
    if builtin:  # one name for them, whichever way their licence is known
        label = BUILTIN_SEED_ROWS
    if given:
        return [{"name": label, **_entry(given, "--input-licence")}]
    card = source_card(source)
    found = card_licence(card) if card is not None else None
    if found:
        return [{"name": label, **_entry(found, f"dataset card {card}")}]
    if builtin:
        return [{"name": label, **_entry("apache-2.0", "datamill")}]
    return [{"name": label, **_entry(None, "")}]


def _builtin_recipe(name: str) -> dict[str, Any] | None:
    """datamill's built-in recipe ``name`` as data (``None``: no such recipe)."""
    from .recipes.loader import builtin_recipes

    path = builtin_recipes().get(name)
    try:
        data = load_yaml(path.read_text(encoding="utf-8")) if path else None
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def _builtin_source(recipe: dict[str, Any] | None, name: str) -> bool:
    """Whether ``recipe``'s source is the one of datamill's built-in recipe ``name``."""
    builtin = _builtin_recipe(name)
    return (
        recipe is not None and builtin is not None and builtin.get("source") == recipe.get("source")
    )


def collect(
    pipeline: Any,
    models: dict[str, tuple[Any, Any]],
    source: Any,
    input_licence: str | None = None,
    prices: Any = None,
) -> dict[str, Any]:
    """``run.json``'s ``provenance`` (see the module docstring). ``models``: name → (model,
    settings) as built for the run; ``prices``: a price table (the user's file when ``None``)."""
    from . import __version__

    if prices is None:
        try:
            from .pricing import PriceTable

            prices = PriceTable.load()
        except DatamillError:  # a broken price file is not worth the finished dataset
            prices = None
    used = {m for s in pipeline.steps for m in s.models()}
    model_rows = [
        {"name": name, "model": m.info.name, "backend": m.backend, **model_licence(m, prices)}
        for name, (m, _) in models.items()
        if name in used
    ]
    inputs = input_entries(source, input_licence, pipeline.recipe, pipeline.name)
    ids = [r["licence"] for r in model_rows + inputs]
    recipe = pipeline.recipe
    digest = json.dumps(recipe, sort_keys=True, default=str).encode() if recipe else b""
    return {
        "licence": licences.default_licence(ids) if ids else licences.UNKNOWN,
        "conflict": licences.conflicts(ids),
        "models": model_rows,
        "inputs": inputs,
        "recipe": {
            "name": pipeline.name,
            "builtin": recipe is not None and recipe == _builtin_recipe(pipeline.name),
            **({"sha256": hashlib.sha256(digest).hexdigest()} if recipe else {}),
        },
        "datamill": __version__,
        "note": licences.NOTE,
    }


__all__ = [
    "BUILTIN_SEED_ROWS",
    "FRONT_MATTER",
    "card_licence",
    "collect",
    "input_entries",
    "model_licence",
]

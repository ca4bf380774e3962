"""Model specs → model objects. Nothing is imported until a spec asks for it.

A spec is ``BACKEND`` or ``BACKEND:ARGUMENT``:

- ``llamacpp`` — the embedded SmolLM2-135M-Instruct; ``llamacpp:PATH`` — any GGUF file
- ``fake`` — the scripted test model; ``fake:NAME`` — the same under another name
- ``openai:MODEL@URL`` — an OpenAI-compatible endpoint (see ``models/openai.py``)
- ``transformers:PATH_OR_ID``, ``vllm:PATH_OR_ID`` — in-process engines (extras)
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import ConfigError, MissingDependency
from .base import Model

#: backend name → (module, class, extra that provides its dependencies or None)
BACKENDS: dict[str, tuple[str, str, str | None]] = {
    "fake": ("datamill.models.fake", "FakeModel", None),
    "llamacpp": ("datamill.models.llamacpp", "LlamaCppModel", None),
    "openai": ("datamill.models.openai", "OpenAIModel", "openai"),
    "transformers": ("datamill.models.transformers", "TransformersModel", "transformers"),
    "vllm": ("datamill.models.vllm", "VLLMModel", "vllm"),
}


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``BACKEND:ARG`` into its parts; raise one clear line for an unknown backend."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(
            "model spec is empty: use e.g. --model llamacpp, llamacpp:PATH.gguf or fake"
        )
    backend, _, arg = spec.strip().partition(":")
    if backend not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        raise ConfigError(f"unknown model backend {backend!r} in spec {spec!r}: use one of {known}")
    return backend, (arg or None)


def load_model(spec: str, **options: Any) -> Model:
    """Build (not start) the model a spec names."""
    backend, arg = parse_spec(spec)
    module_name, class_name, extra = BACKENDS[backend]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if extra is None:
            raise
        raise MissingDependency(f"the {backend} backend ({exc.name} missing)", extra) from exc
    cls = getattr(module, class_name)
    tags = _think_tags(options.pop("think_tags", None))
    model: Model = cls.from_spec(arg, **options) if hasattr(cls, "from_spec") else cls(**options)
    if tags is not None:  # read by tasks (``ModelInfo.extra``) when they split the thinking off
        model.info.extra["think_tags"] = tags
    return model


def _think_tags(value: Any) -> tuple[str, str] | None:
    """The ``think_tags`` model option: ``[OPEN, CLOSE]``, two non-empty texts; else ConfigError."""
    if value is None:
        return None
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(t, str) and t.strip() for t in value)
    ):
        raise ConfigError(
            f"model option think_tags must be two non-empty texts [OPEN, CLOSE], e.g. "
            f'["<think>", "</think>"]; got {value!r}'
        )
    return (value[0], value[1])

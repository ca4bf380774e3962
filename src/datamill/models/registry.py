"""Model specs → model objects. Nothing is imported until a spec asks for it.

A spec is ``BACKEND`` or ``BACKEND:ARGUMENT``:

- ``llamacpp`` — the embedded SmolLM2-135M-Instruct; ``llamacpp:PATH`` — any GGUF file
- ``fake`` — the scripted test model; ``fake:NAME`` — the same under another name
- ``openai:MODEL@URL`` — an OpenAI-compatible endpoint (see ``models/openai.py``)
- ``anthropic:MODEL`` (``@URL`` optional) — the Anthropic Messages API (``models/anthropic.py``)
- ``transformers:PATH_OR_ID``, ``vllm:PATH_OR_ID`` — in-process engines (extras)
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import ValidationError

from ..errors import ConfigError, MissingDependency
from .base import Capabilities, Model, options_problem

#: backend name → (module, class, extra that provides its dependencies or None)
BACKENDS: dict[str, tuple[str, str, str | None]] = {
    "anthropic": ("datamill.models.anthropic", "AnthropicModel", "anthropic"),
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


def is_spec(text: str) -> bool:
    """Whether ``text`` is a spec of a registered backend (``NAME`` or ``NAME:ARG``)."""
    return isinstance(text, str) and text.strip().partition(":")[0] in BACKENDS


def backend_class(backend: str) -> type[Model]:
    """The class registered as ``backend`` (imported now); MissingDependency when its extra is
    not installed."""
    module_name, class_name, extra = BACKENDS[backend]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if extra is None:
            raise
        raise MissingDependency(f"the {backend} backend ({exc.name} missing)", extra) from exc
    cls: type[Model] = getattr(module, class_name)
    return cls


#: model options every backend takes (handled here, not by the backend's ``Options``);
#: ``licence``: the licence of the model's outputs, for the card (``datamill.provenance``);
#: ``batch``: send the model's calls through its provider's batch API (``pipeline.batch``)
COMMON_OPTIONS = ("think_tags", "licence", "batch")


def spec_class(spec: str) -> type[Model]:
    """The backend class of a spec (``parse_spec``'s refusals apply)."""
    return backend_class(parse_spec(spec)[0])


def spec_capabilities(spec: str) -> Capabilities:
    """What the backend a spec names can do, without building the model."""
    return spec_class(spec).capabilities()


def check_options(spec: str, options: dict[str, Any], label: str | None = None) -> None:
    """Refuse, in one line, an option the spec's backend does not take or a bad value, before
    anything is built. ``options`` may hold the sampling fields (model settings) too. A backend
    whose extra is not installed is not checked here (building it says what to install)."""
    from .base import SAMPLING_FIELDS

    try:
        cls = spec_class(spec)
    except MissingDependency:
        return
    _think_tags(options.get("think_tags"))
    if "batch" in options:
        from .batch_api import batch_settings

        batch_settings(options["batch"], label or cls.backend)
    backend_options = {
        k: v
        for k, v in options.items()
        if k not in SAMPLING_FIELDS and k not in cls.SPEC_KEYS and k not in COMMON_OPTIONS
    }
    try:
        cls.Options.model_validate(backend_options)
    except ValidationError as exc:
        known = {*cls.Options.model_fields, *cls.SPEC_KEYS, *SAMPLING_FIELDS, *COMMON_OPTIONS}
        raise options_problem(exc, known, label or cls.backend, backend_options) from None


def load_model(spec: str, **options: Any) -> Model:
    """Build (not start) the model a spec names."""
    backend, arg = parse_spec(spec)
    cls = backend_class(backend)
    tags = _think_tags(options.pop("think_tags", None))
    licence = options.pop("licence", None)
    from_spec = getattr(cls, "from_spec", None)
    model: Model = from_spec(arg, **options) if from_spec is not None else cls(**options)
    if tags is not None:  # read by tasks (``ModelInfo.extra``) when they split the thinking off
        model.info.extra["think_tags"] = tags
    if licence is not None:  # read by the card's provenance section
        model.info.extra["licence"] = str(licence)
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

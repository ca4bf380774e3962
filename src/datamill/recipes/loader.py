"""YAML recipes → pipelines, validated with pydantic, errors pointing at file:line and field.

A recipe::

    name: instructions-basic
    description: Prompt → question → answer (smol-course 🐢).
    models:
      default: llamacpp                  # a spec, or {spec: ..., temperature: ..., ...}
    source:
      rows: [{instruction: "..."}]       # or  path: seeds.jsonl  |  num_rows: 20
                                         # (+ samplers: {topic: {category: …}}: io/samplers.py)
      repeat: 4
    steps:
      - text_generation: {output: instruction, temperature: 1.0}
      - text_generation: {template: "{{ instruction }}", output: response}
      - format_sft: {}
    target_rows: 100                     # optional: top up until 100 rows survive …
    max_attempts: 400                    # … trying at most 400 source rows (pipeline/topup.py)
    mix:                                 # optional: shares of a tag column in the final rows
      by: category                       # (pipeline/mix.py, pipeline/mixture.py)
      targets: {qa: 0.5, code: 0.3, chat: 0.2}
      tolerance: 0.02

``--set a.b=value`` overrides any field before validation: top-level keys (``source.num_rows``,
``models.default.temperature``) or a step by name (``text_generation_2.max_tokens``).

Every relative path a recipe file names (``source.path``, benchmark files, schema files, GGUF
tokenizers, model and embedder paths, ``module:function`` modules) is found in the recipe's
folder first, then in the working folder (``steps.paths``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import ConfigError, did_you_mean
from ..io.samplers import SamplerError, SamplerSource, key_text
from ..io.sources import EmptyRows, RowsSource, Source, source_from_path
from ..pipeline.draws import PartError
from ..pipeline.graph import Pipeline
from ..pipeline.mixture import check_source
from ..recipe_label import builtin_folder, recipe_label, recipe_place
from ..steps.base import ParameterError, Step
from ..steps.paths import reading_recipe, resolve_spec
from ..steps.paths import resolve as resolve_path
from ..tasks.base import Task
from .registry import STEP_KINDS, step_class
from .yamlkeys import load_yaml


class SourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: list[dict[str, Any]] | None = None
    path: str | None = None
    num_rows: int | None = Field(default=None, ge=1)
    #: sampled columns of ``num_rows`` rows (``io.samplers``), drawn with ``seed``
    samplers: dict[str, Any] | None = None
    seed: int | None = None  #: the samplers' seed (default the recipe's)
    fields: dict[str, Any] = {}
    repeat: int = Field(default=1, ge=1)
    limit: int | None = Field(default=None, ge=1)

    def build(self, base: Path | None, seed: int = 0) -> Source:
        if self.samplers is not None and self.num_rows is None:
            raise ValueError("samplers need num_rows: how many rows to sample")
        given = [k for k in ("rows", "path", "num_rows") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("source needs exactly one of rows, path, num_rows")
        if self.rows is not None:
            return RowsSource(self.rows, self.limit, self.repeat)
        if self.num_rows is not None and self.samplers is not None:
            seed = self.seed if self.seed is not None else seed
            return SamplerSource(self.samplers, self.num_rows, seed, self.limit, self.fields)
        if self.num_rows is not None:
            return EmptyRows(self.num_rows, self.limit, self.fields)
        return source_from_path(resolve_path(self.path or "", base), self.limit)


class RecipeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    seed: int = 0
    models: dict[str, Any] = {"default": "llamacpp"}
    source: SourceSpec | None = None
    steps: list[dict[str, Any]] = Field(min_length=1)
    target_rows: int | None = Field(default=None, ge=1)  #: top up until this many rows survive
    max_attempts: int | None = Field(default=None, ge=1)  #: … trying at most this many source rows
    #: shares of a tag column's parts in the final rows: {by, targets, tolerance} (pipeline/mix.py)
    mix: dict[str, Any] | None = None

    @field_validator("steps")
    @classmethod
    def _one_key_each(cls, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, s in enumerate(steps):
            if len(s) != 1:
                raise ValueError(
                    f"step {i + 1} must be a mapping with exactly one key, the step kind (e.g. '- text_generation: {{...}}')"
                )
        return steps


def _sampling_problem(values: dict[str, Any]) -> tuple[str, str] | None:
    """(field, what is allowed) for a sampling value no model accepts, or None."""
    checks: dict[str, tuple[Callable[[Any], bool], str]] = {
        "max_tokens": (
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
            "must be a whole number of at least 1",
        ),
        "temperature": (
            lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0,
            "must be a number of at least 0",
        ),
        "top_p": (
            lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1,
            "must be a number above 0 and at most 1",
        ),
        "seed": (
            lambda v: isinstance(v, int) and not isinstance(v, bool),
            "must be a whole number",
        ),
    }
    for name, (ok, allowed) in checks.items():
        if values.get(name) is not None and not ok(values[name]):
            return name, f"{allowed}, got {values[name]!r}"
    return None


def _check_models(models: dict[str, Any], where: Any, model: str | None = None) -> None:
    """Each declared model: a known backend, options its backend takes (``Options``; of the
    ``model`` spec that replaces every spec, when given: ``--model``), sampling values a model
    accepts (file:line on error)."""
    from ..models.base import Model
    from ..models.registry import check_options, parse_spec
    from ..pipeline.graph import ModelSettings

    for name, value in models.items():
        loc = ("models", name)
        try:
            settings = ModelSettings.parse(value)
            if not isinstance(settings.spec, Model):
                backend, _ = parse_spec(settings.spec)
        except ConfigError as exc:
            raise ConfigError(f"{where(loc)}: models.{name}: {exc}") from None
        if not isinstance(settings.spec, Model):
            spec = settings.spec if model is None else model
            if model is not None:
                backend, _ = parse_spec(model)
            try:
                check_options(spec, settings.options, f"model {name!r} ({backend})")
            except ConfigError as exc:
                bad = next((k for k in settings.options if repr(k) in str(exc)), None)
                raise ConfigError(f"{where(loc + ((bad,) if bad else ()))}: {exc}") from None
        problem = _sampling_problem(settings.sampling)
        if problem:
            raise ConfigError(
                f"{where(loc + (problem[0],))}: models.{name}.{problem[0]}: {problem[1]}"
            )


def _model_paths(value: Any, base: Path | None) -> Any:
    """A model's spec (a string, or a mapping's ``spec``) with a path beside the recipe resolved,
    for backends whose argument may be a local file (``Capabilities.local_files``)."""
    from ..errors import MissingDependency
    from ..models.registry import spec_capabilities

    spec = value.get("spec") if isinstance(value, dict) else value
    if base is None or not isinstance(spec, str):
        return value
    try:
        if not spec_capabilities(spec).local_files:
            return value
    except (ConfigError, MissingDependency):  # refused (or explained) by _check_models
        return value
    resolved = resolve_spec(spec, base)
    return {**value, "spec": resolved} if isinstance(value, dict) else resolved


def builtin_dir() -> Path:
    return builtin_folder()


def builtin_recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted(builtin_dir().glob("*.yaml"))}


def resolve(name_or_path: str) -> Path:
    """A built-in recipe name or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise ConfigError(f"recipe file {p} does not exist")
        return p
    found = builtin_recipes().get(name_or_path)
    if found is None:
        known = ", ".join(builtin_recipes())
        raise ConfigError(f"unknown recipe {name_or_path!r}: give a YAML path or one of: {known}")
    return found


def _line_index(text: str) -> dict[tuple[Any, ...], int]:
    """Map each YAML path (keys and list indices) to its 1-based line, for error messages."""
    index: dict[tuple[Any, ...], int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return index

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        index.setdefault(path, node.start_mark.line + 1)  # a key's own line beats its value's
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                index[path + (k.value,)] = k.start_mark.line + 1
                walk(v, path + (k.value,))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    if root is not None:
        walk(root, ())
    return index


def _boolean_key(data: Any, path: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The path to the first boolean mapping key in ``data`` (a recipe given as data, whose YAML
    was read without :func:`load_yaml`), or None. Samplers name theirs back (``io.samplers``)."""
    if path == ("source", "samplers"):
        return None
    items = (
        data.items()
        if isinstance(data, dict)
        else enumerate(data)
        if isinstance(data, list)
        else ()
    )
    for k, v in items:
        if isinstance(k, bool) and isinstance(data, dict):
            return path + (k,)
        found = _boolean_key(v, path + (k,))
        if found:
            return found
    return None


def parse_value(text: str) -> Any:
    try:
        return load_yaml(text)
    except yaml.YAMLError:
        return text


def _set_path(data: dict[str, Any], parts: list[str], value: Any) -> None:
    target: Any = data
    for p in parts[:-1]:
        if isinstance(target, list):
            target = target[int(p)]
        else:
            target = target.setdefault(p, {})
            if isinstance(target, str) and parts[0] == "models":  # spec string → mapping
                target = {"spec": target}
                data["models"][p] = target
    if isinstance(target, list):
        target[int(parts[-1])] = value
    else:
        target[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> None:
    """Apply ``key.path=value`` settings (a step may be addressed by its kind or name)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: use key=value, e.g. --set source.num_rows=20")
        parts = key.split(".")
        value = parse_value(raw)
        if parts[0] == "steps" and len(parts) >= 3 and not parts[1].isdigit():
            parts = parts[1:]  # steps.<kind or name>.<param> is <kind or name>.<param>
        if parts[0] in RecipeSpec.model_fields:
            try:
                _set_path(data, parts, value)
            except (ValueError, IndexError, TypeError, AttributeError):
                raise ConfigError(
                    f"--set {item!r}: {key!r} is not a setting of this recipe; address a step "
                    f"by its kind or name, e.g. --set text_generation.temperature=0.9"
                ) from None
            continue
        step_name, rest = parts[0], parts[1:]
        if not rest:
            raise ConfigError(
                f"--set {item!r}: say which parameter, e.g. --set {step_name}.temperature=0.9"
            )
        matches = []
        counts: dict[str, int] = {}
        known: list[str] = list(RecipeSpec.model_fields)
        for s in data.get("steps", []):
            kind, params = next(iter(s.items()))
            counts[kind] = counts.get(kind, 0) + 1
            auto = kind if counts[kind] == 1 else f"{kind}_{counts[kind]}"
            name = (params or {}).get("name", auto)
            known += [str(name), str(kind)]
            if step_name in (name, kind) and (step_name == name or counts.get(step_name, 0) == 1):
                matches.append(s)
        if not matches:
            raise ConfigError(
                f"--set {item!r}: no field or step named {step_name!r} in the recipe"
                + did_you_mean(step_name, dict.fromkeys(known))
            )
        for s in matches[:1]:
            kind = next(iter(s))
            if s[kind] is None:
                s[kind] = {}
            target = s[kind]
            for p in rest[:-1]:
                target = target.setdefault(p, {})
            target[rest[-1]] = value


def apply_named_models(data: dict[str, Any], named: dict[str, str], rest: str | None) -> None:
    """Give each named model of the recipe ``data`` the spec ``named[name]`` (its options and
    sampling stay), and every other model ``rest`` when given (``--model SPEC`` beside
    ``--model NAME=SPEC``). A name the recipe does not declare is a ``ConfigError``."""
    declared = dict(data.get("models") or {"default": "llamacpp"})
    unknown = [n for n in named if n not in declared]
    if unknown:
        raise ConfigError(
            f"--model {unknown[0]}=...: the recipe declares no model {unknown[0]!r}; "
            f"its models: {', '.join(declared)}"
        )
    specs = {n: rest for n in declared if rest is not None} | named
    for name, spec in specs.items():
        value = declared[name]
        declared[name] = {**value, "spec": spec} if isinstance(value, dict) else spec
    data["models"] = declared


def load_recipe(
    name_or_path: str,
    overrides: list[str] | None = None,
    *,
    model: str | None = None,
    models: dict[str, str] | None = None,
) -> Pipeline:
    """Read, validate and build a recipe. Every problem is one ``ConfigError`` line. ``model``:
    the spec that will replace every model's (``--model SPEC``), whose options are checked then;
    ``models``: name → spec for named models (``--model strong=SPEC``), see
    :func:`apply_named_models`."""
    path = resolve(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{recipe_label(path)}: not UTF-8 text") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = recipe_place(path, mark.line + 1 if mark else None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{recipe_label(path)}: a recipe must be a YAML mapping with name, source and steps"
        )
    return recipe_from_dict(
        data, overrides=overrides, path=path, text=text, model=model, models=models
    )


def recipe_from_dict(
    data: dict[str, Any],
    overrides: list[str] | None = None,
    path: Path | None = None,
    text: str | None = None,
    *,
    model: str | None = None,
    models: dict[str, str] | None = None,
) -> Pipeline:
    lines = _line_index(text) if text else {}

    def where(loc: tuple[Any, ...]) -> str:
        for n in range(len(loc), -1, -1):
            if loc[:n] in lines:
                return recipe_place(path, lines[loc[:n]])
        return recipe_label(path)

    data = dict(data)
    if overrides:
        apply_overrides(data, overrides)
    if models:
        apply_named_models(data, models, model)
        model = None  # baked into the recipe: every model now has its spec
    found = _boolean_key(data, ())
    if found:
        dotted = ".".join(str(p) for p in found[:-1])
        raise ConfigError(f"{where(found[:-1])}: {dotted or 'recipe'}: key {key_text(found[-1])}")
    try:
        spec = RecipeSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # an unknown key first: ``step:`` for ``steps:`` also makes ``steps`` missing
        err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        loc = tuple(err["loc"])
        field = ".".join(str(p) for p in loc) or "recipe"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            fields = (
                SourceSpec.model_fields if loc and loc[0] == "source" else RecipeSpec.model_fields
            )
            msg = f"unknown field{did_you_mean(loc[-1], fields)}; allowed: {', '.join(fields)}"
        raise ConfigError(f"{where(loc)}: {field}: {msg}") from None
    base = path.parent if path else None
    models = {name: _model_paths(value, base) for name, value in spec.models.items()}
    _check_models(models, where, model)
    steps: list[Step] = []
    for i, item in enumerate(spec.steps):
        kind, params = next(iter(item.items()))
        loc = ("steps", i, kind)
        try:
            cls = step_class(str(kind))
        except ConfigError as exc:
            hint = difflib.get_close_matches(str(kind), STEP_KINDS, n=1)
            if str(kind) in STEP_KINDS or not hint:
                raise ConfigError(f"{where(loc)}: step {i + 1}: {exc}") from None
            raise ConfigError(
                f"{where(loc)}: step {i + 1}: unknown step {kind!r}; did you mean {hint[0]!r}? Known steps: {', '.join(sorted(STEP_KINDS))}"
            ) from None
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ConfigError(
                f"{where(loc)}: step {i + 1} ({kind}): parameters must be a mapping, got {type(params).__name__}"
            )
        problem = _sampling_problem(params) if issubclass(cls, Task) else None
        if problem:  # before pydantic, so the line says what is allowed in our words
            raise ConfigError(
                f"{where(loc + (problem[0],))}: step {i + 1} ({kind}): {problem[0]}: {problem[1]}"
            )
        try:
            with reading_recipe(base):
                steps.append(cls.model_validate(params))
        except (ValidationError, ParameterError) as exc:
            invalid = exc if isinstance(exc, ValidationError) else exc.validation
            if invalid is None:
                raise ConfigError(f"{where(loc)}: step {i + 1} ({kind}): {exc}") from None
            err = invalid.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or kind
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                names = [k for k in cls.model_fields if k != "name"]
                did = did_you_mean(err["loc"][-1], names)
                msg = f"unknown parameter{did}; allowed: {', '.join(names)}"
            raise ConfigError(
                f"{where(loc + tuple(err['loc']))}: step {i + 1} ({kind}): {field}: {msg}"
            ) from None
        except ConfigError as exc:
            raise ConfigError(f"{where(loc)}: step {i + 1} ({kind}): {exc}") from None
        step = steps[-1]
        for m in step.models():
            if m not in spec.models:
                declared = ", ".join(sorted(spec.models)) or "(none)"
                raise ConfigError(
                    f"{where(loc + ('model',))}: step {i + 1} ({kind}): model {m!r} is not declared under models; declared: {declared}"
                )
    try:
        source = spec.source.build(base, spec.seed) if spec.source else None
    except SamplerError as exc:
        raise ConfigError(f"{where(('source', 'samplers', exc.column))}: source.{exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{where(('source',))}: source: {exc}") from None
    try:
        pipeline = Pipeline(
            steps,
            source=source,
            models=models,
            name=spec.name,
            description=spec.description,
            seed=spec.seed,
            recipe=data,
            target_rows=spec.target_rows,
            max_attempts=spec.max_attempts,
            mix=spec.mix,
        )
    except ConfigError as exc:
        field = "mix" if spec.mix is not None and "mix" in str(exc) else "target_rows"
        raise ConfigError(f"{where((field,))}: {exc}") from None
    try:  # a part the source can never give, before any call and with its line
        check_source(pipeline, source)
    except PartError as exc:
        raise ConfigError(f"{where(('mix', 'targets', exc.part))}: {exc}") from None
    return pipeline

"""``verify_json``: a column holds JSON that fits a JSON Schema or a pydantic model.

- ``schema``: a JSON Schema, inline (a mapping) or a file path (``.json``; in a recipe, relative
  to the recipe's folder, else the working folder: ``steps.paths``), checked with the ``jsonschema`` package (``pip install 'datamill[verify]'``) — the
  schema itself is checked when the step is built;
- ``pydantic_model``: ``module:Class`` (or the class, from Python) of a pydantic model.

The column may hold text (a ```` ```json ```` fenced block in it is read when ``extract`` is on,
the default) or an already parsed mapping/list. Reasons: ``ok``; ``not JSON: Expecting value:
line 1 column 1 (char 0)``; ``schema mismatch at $.items[2].price: 'abc' is not of type
'number'`` — the error jsonschema ranks first (``best_match``), or pydantic's first.

The cache key holds the schema's content (a file's or a model's JSON Schema), not its path or
name, so an edited schema re-verifies.

Deliberately not here: repairing JSON, or asking the model for structured output (``Request``'s
``json_schema``).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, PrivateAttr, field_validator, model_validator

from ...errors import MissingDependency
from ...rows import Row
from ..base import ParameterError
from ..paths import from_recipe
from .base import Verdict, Verifier, clip, import_target, search_recipe_dir

_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\n(.*?)```", re.DOTALL)


def load_schema(value: dict[str, Any] | str) -> dict[str, Any]:
    """A JSON Schema given inline (a mapping, or JSON text) or as a file path, checked against
    its meta-schema. Raises ``ValueError`` with one line saying what to fix."""
    if isinstance(value, str) and not value.lstrip().startswith("{"):
        path = Path(value)
        if not path.is_file():
            raise ValueError(
                f"schema file {value!r} not found; give a JSON Schema file path or an inline mapping"
            )
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read the schema file {value!r}: {exc}") from None
    elif isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"the inline schema is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"a JSON Schema is a mapping, got {type(value).__name__}")
    if importlib.util.find_spec("jsonschema") is None:
        raise MissingDependency("verify_json (jsonschema)", "verify")
    from jsonschema import validators
    from jsonschema.exceptions import SchemaError

    try:
        validators.validator_for(value).check_schema(value)
    except SchemaError as exc:
        raise ValueError(
            f"not a valid JSON Schema: at {exc.json_path}: {clip(exc.message, 120)}"
        ) from None
    return value


def read_json(value: Any, extract: bool) -> tuple[Any, str | None]:
    """``(parsed value, None)``, or ``(None, why)`` when ``value`` is text that is not JSON."""
    if not isinstance(value, str):
        return value, None
    text = value
    if extract:
        fenced = _FENCE.search(text)
        if fenced:
            text = fenced.group(1)
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, str(exc)


def _pydantic_path(loc: tuple[Any, ...]) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


class VerifyJSON(Verifier):
    """``verify_json``: the column parses as JSON and validates against a schema or a model."""

    kind: ClassVar[str] = "verify_json"
    not_in_key: ClassVar[frozenset[str]] = frozenset({"column", "schema_", "pydantic_model"})

    #: the column holding the JSON (text, or an already parsed value)
    column: str = "response"
    #: a JSON Schema: a mapping, JSON text, or a file path
    schema_: dict[str, Any] | str | None = Field(default=None, alias="schema")
    #: a pydantic model ``module:Class`` (or the class itself)
    pydantic_model: str | type | None = None
    #: read the body of a ```json fenced block when the text has one
    extract: bool = True

    _schema: dict[str, Any] | None = PrivateAttr(default=None)
    _model: Any = PrivateAttr(default=None)

    @field_validator("schema_", mode="before")
    @classmethod
    def _schema_path(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.lstrip().startswith("{"):
            return from_recipe(value)
        return value

    @field_validator("schema_")
    @classmethod
    def _check_schema(cls, value: dict[str, Any] | str | None) -> dict[str, Any] | str | None:
        if value is not None:
            load_schema(value)
        return value

    @field_validator("pydantic_model")
    @classmethod
    def _check_model(cls, value: str | type | None) -> str | type | None:
        if value is not None:
            search_recipe_dir()
            _model_class(value)
        return value

    @model_validator(mode="after")
    def _one_of(self) -> VerifyJSON:
        if (self.schema_ is None) == (self.pydantic_model is None):
            raise ParameterError(
                f"{type(self).__name__}: give either schema (a JSON Schema mapping or file) "
                "or pydantic_model (module:Class)"
                + (", not both" if self.schema_ is not None else "")
            )
        return self

    def required_columns(self) -> list[str]:
        return [self.column]

    def key_params(self) -> dict[str, Any]:
        params = super().key_params()
        if self.schema_ is not None:
            params["schema"] = self._loaded_schema()
        else:
            model = self._model_class()
            params["pydantic_model"] = [
                f"{model.__module__}.{model.__qualname__}",
                model.model_json_schema(),
            ]
        return params

    def key_inputs(self, row: Row) -> dict[str, Any]:
        return {"value": row.get(self.column)}

    def _loaded_schema(self) -> dict[str, Any]:
        if self._schema is None:
            assert self.schema_ is not None
            self._schema = load_schema(self.schema_)
        return self._schema

    def _model_class(self) -> Any:
        if self._model is None:
            assert self.pydantic_model is not None
            self._model = _model_class(self.pydantic_model)
        return self._model

    async def check(self, row: Row) -> Verdict:
        value, why = read_json(self.need(row, self.column), self.extract)
        if why is not None:
            return Verdict.fail(f"not JSON: {clip(why, 80)}")
        if self.schema_ is not None:
            from jsonschema import validators
            from jsonschema.exceptions import best_match

            schema = self._loaded_schema()
            error = best_match(validators.validator_for(schema)(schema).iter_errors(value))
            if error is None:
                return Verdict.ok()
            where, message = error.json_path, error.message
        else:
            from pydantic import ValidationError

            try:
                self._model_class().model_validate(value)
                return Verdict.ok()
            except ValidationError as exc:
                first = exc.errors()[0]
                where, message = _pydantic_path(tuple(first["loc"])), first["msg"]
        return Verdict.fail(f"schema mismatch at {where}: {clip(message, 80)}")


def _model_class(value: str | type) -> Any:
    """The pydantic model class ``value`` names (``ValueError`` in one line if it is none)."""
    from pydantic import BaseModel

    target = import_target(value, "Class") if isinstance(value, str) else value
    if not (isinstance(target, type) and issubclass(target, BaseModel)):
        raise ValueError(f"{value!r} is not a pydantic model class")
    return target


__all__ = ["VerifyJSON", "load_schema", "read_json"]

"""The Generate screen's form as one typed object: :class:`FormValues`.

Gradio hands a handler one positional value per input widget. The app lists its form widgets in
:data:`FIELDS` order (the dataclass's own field order) and turns their values into a
:class:`FormValues` in one place (:meth:`FormValues.from_values`); every handler takes that one
object, and :meth:`FormValues.spec` checks it into a :class:`~datamill.ui.builder.DatasetSpec`.
The defaults are the widgets' defaults.

Deliberately not here: widgets (``ui.app``), what a spec becomes (``ui.builder``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from . import builder


@dataclass(frozen=True)
class FormValues:
    """What a person filled in: the dataset, the model, sampling, and the row counts.

    Numbers arrive as gradio gives them (``float``, or ``None`` for an emptied box);
    :meth:`spec` turns them into whole numbers and checks them.
    """

    description: str = ""
    system_prompt: str = ""
    kind: str = "sft"
    technique: str = "magpie"
    #: kind ``verified``: the built-in recipe, a key of ``builder.VERIFIED_RECIPES``
    verified_recipe: str = "math-verified"
    model_source: str = "embedded"  #: a key of ``builder.MODEL_SOURCES`` or a raw model spec
    gguf_path: str = ""
    url: str = ""
    model_name: str = ""
    api_key_env: str = ""
    max_tokens: float | None = builder.DatasetSpec.max_tokens  #: for answers
    temperature: float = builder.DatasetSpec.temperature  #: for user queries
    keep_truncated: bool = False
    preview_rows: float | None = 2
    num_rows: float | None = 20
    output: str = ""  #: Generate's folder; blank: ``out/ui-<time>``

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> FormValues:
        """The form from the widgets' values, given in :data:`FIELDS` order."""
        if len(values) != len(FIELDS):
            raise TypeError(f"the form has {len(FIELDS)} fields, got {len(values)} values")
        return cls(**dict(zip(FIELDS, values, strict=True)))

    def but(self, **changes: Any) -> FormValues:
        """A copy with ``changes``."""
        return replace(self, **changes)

    def model(self) -> str | dict[str, Any]:
        """The model setting of the form's choice (``builder.model_spec``); a ConfigError
        when a GGUF path or an endpoint is missing or malformed."""
        return builder.model_spec(
            self.model_source, self.gguf_path, self.url, self.model_name, self.api_key_env
        )

    def spec(self, *, num_rows: int | None = None, name: str = "ui-dataset") -> builder.DatasetSpec:
        """The checked :class:`~datamill.ui.builder.DatasetSpec` for ``num_rows`` rows (default:
        the form's); raises :class:`~datamill.errors.ConfigError` on a bad value."""
        spec = builder.DatasetSpec(
            system_prompt=(self.system_prompt or "").strip(),
            kind=self.kind,
            technique=self.technique,
            num_rows=int(num_rows if num_rows is not None else (self.num_rows or 0)),
            model=self.model(),
            max_tokens=int(self.max_tokens or 0),
            temperature=float(self.temperature),
            keep_truncated=bool(self.keep_truncated),
            description=self.description or "",
            name=name,
            recipe=self.verified_recipe if self.kind == "verified" else "",
        )
        spec.check()
        return spec


#: The form's fields in order: the order the app lists the widgets in.
FIELDS: tuple[str, ...] = tuple(f.name for f in fields(FormValues))

__all__ = ["FIELDS", "FormValues"]

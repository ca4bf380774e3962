"""The step shape: rows in, rows out.

- :class:`Step` handles one row at a time: ``await step.process(row, ctx)`` returns the rows it
  becomes (none for a dropped row, several for an expansion). The runner streams every row
  through the steps independently, so there is no barrier inside a step.
- :class:`GlobalStep` sees all rows at once (dedup, Deita selection). It is the only barrier.
- :class:`FunctionStep` turns a plain function ``row -> row | list[row] | None`` into a step.

Steps are pydantic models: their parameters are validated when the step is built (from Python or
from a recipe), with unknown parameters refused, so a bad pipeline fails before any model call; a
wrong parameter is a one-line :class:`ParameterError` (a ``ConfigError``), never pydantic's own
error. A step declares what it reads (:meth:`Step.required_columns`; the places inside rows whose
values it sends to a model, :meth:`Step.required_paths`, and those it prints whole as text,
:meth:`Step.text_paths`) and what it writes (:meth:`Step.output_columns`), which lets the
pipeline check column flow and source values up front.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from ..errors import ConfigError, Dropped, did_you_mean
from ..rows import Path, Row, RowKey, unencodable

if TYPE_CHECKING:
    from ..models.base import Completion, Request


class Context:
    """What a step may use while processing one row: its key, the models (through the cache),
    and the cache of other results (:meth:`cached`, used by verifiers)."""

    def __init__(
        self,
        key: RowKey,
        generate: Callable[[str, Request, dict[str, Any]], Awaitable[list[Completion]]],
        model_info: Callable[[str], Any],
        seed: int = 0,
        count: Callable[[str, int], None] | None = None,
        *,
        cached: Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]] | None = None,
        verdict: Callable[[bool, str, bool], None] | None = None,
    ) -> None:
        self.key = key
        self._generate = generate
        self._model_info = model_info
        self.seed = seed
        self._count = count
        self._cached = cached
        self._verdict = verdict

    async def generate(
        self, model: str, request: Request, options: dict[str, Any] | None = None
    ) -> list[Completion]:
        """Send ``request`` to the model named ``model`` (cached, counted, bounded).

        ``request`` carries the task's defaults; the model's settings go over them and then
        ``options`` (the step's explicit sampling) over those, once, in the runner."""
        return await self._generate(model, request, dict(options or {}))

    def model_info(self, model: str) -> Any:
        """The :class:`~datamill.models.base.ModelInfo` of a named model."""
        return self._model_info(model)

    def count(self, event: str, n: int = 1) -> None:
        """Count something a step did to a row that kept going (``run.json`` ``events``),
        e.g. "judgement skipped (self-judging)"; losses are counted by the runner itself."""
        if self._count is not None and n:
            self._count(event, n)

    async def cached(self, key: str, compute: Callable[[], Awaitable[Any]]) -> Any:
        """The JSON-able result stored under ``key`` in the run's cache, else ``await compute()``,
        stored there the moment it returns (``pipeline.results``; no cache: always computed)."""
        if self._cached is None:
            return await compute()
        return await self._cached(key, compute)

    def verdict(self, passed: bool, reason: str, cached: bool = False) -> None:
        """Count a verifier's verdict on this row (``run.json`` ``verification``); ``reason`` is
        the failure's stable part (``wrong answer``), ``cached`` whether it came from the cache."""
        if self._verdict is not None:
            self._verdict(passed, reason, cached)


class Step(BaseModel):
    """A per-row step. Subclasses set ``kind`` and implement :meth:`process`."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=False)

    #: the name recipes use for this step type
    kind: ClassVar[str] = ""
    #: parameters left out of :attr:`identity` (they change how many results a step keeps, not
    #: what each one is: e.g. a task's ``samples``, so asking for more reuses the ones paid for)
    not_in_identity: ClassVar[frozenset[str]] = frozenset()
    #: optional instance name; defaults to ``kind`` (numbered when repeated in one pipeline)
    name: str | None = None
    #: parameters added after the step type shipped: left out of :attr:`identity` while unset
    #: (``None``), so seeds and cached calls of recipes that do not use them stay the same
    later_fields: ClassVar[tuple[str, ...]] = ()
    # set by the pipeline (``Pipeline._name_steps``): see :attr:`identity`
    _identity: str | None = PrivateAttr(default=None)
    # True when ``name`` was given by a pipeline (a positional label), not by the user
    _auto_name: bool = PrivateAttr(default=False)

    def __init__(self, *args: Any, **data: Any) -> None:
        """Build from named parameters; anything wrong is a one-line ``ConfigError`` (not
        pydantic's ``ValidationError``), e.g. ``TextGeneration: unknown parameter 'temprature'
        (did you mean 'temperature'?)``."""
        cls = type(self).__name__
        if args:
            raise ParameterError(f"{cls}: parameters are named, e.g. {cls}(output='response')")
        try:
            super().__init__(**data)
        except ValidationError as exc:
            error = ParameterError(f"{cls}: {validation_problem(type(self), exc)}")
            error.validation = exc  # the recipe loader points at the file line of the field
            raise error from None

    def required_columns(self) -> list[str]:
        """Columns every incoming row must have."""
        return []

    def required_paths(self) -> list[Path]:
        """The places inside a row whose *values* a model step sends to the model: a column
        (``("instruction",)``) or a place inside one (``("person", "address", "street")``). A row
        where one is absent, null, NaN or blank is recorded as ``empty input`` without a call."""
        return [(c,) for c in self.required_columns()]

    def text_paths(self) -> list[Path]:
        """The places whose value goes into a prompt whole, as text: an object, a list or bytes
        there is refused before any call (``io.sources.check_rows``)."""
        return []

    def output_columns(self, columns: list[str]) -> list[str]:
        """The columns rows have after this step, given the columns they had before."""
        return columns + [c for c in self.produces() if c not in columns]

    def produces(self) -> list[str]:
        """Columns this step adds (used by the default :meth:`output_columns`)."""
        return []

    def updates(self) -> list[str]:
        """Columns this step may rewrite in place on purpose (default: the ones it reads).
        ``Pipeline.check`` refuses a step that writes (:meth:`produces`) a column the rows
        already have unless it is listed here."""
        return self.required_columns()

    def written_values(self, column: str) -> list[str] | None:
        """Every value this step may write to ``column`` when that is a fixed set (a classifier's
        labels), else ``None``; ``Pipeline.check`` holds a mixture's targets to it."""
        return None

    def models(self) -> list[str]:
        """Names of the models this step calls (empty for plain steps)."""
        return []

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        raise NotImplementedError

    def contract_error(self) -> str | None:
        """Why this step cannot run at all (a method it must implement is missing), or None.
        Checked when a pipeline is built, before any model is loaded."""
        if type(self).process is Step.process:
            return f"{type(self).__name__} does not implement process(row, ctx)"
        return None

    @property
    def label(self) -> str:
        return self.name or self.kind

    @property
    def identity(self) -> str:
        """What seeds (and so cached calls) derive from; unlike :attr:`label`, not a position.

        The ``name`` the user gave, else ``kind:HASH`` where HASH digests the step's parameters
        (everything but ``name``): inserting, removing or reordering *other* steps leaves it
        unchanged, so this step's calls stay cache hits. Identical twins in one pipeline are told
        apart by order: the k-th one (k >= 2) gets ``#k`` appended (set by the pipeline).
        """
        if self._identity is not None:
            return self._identity
        if self.name is not None and not self._auto_name:
            return self.name
        return content_identity(self)


def content_identity(step: Step) -> str:
    """``kind:HASH`` of a step's parameters (pydantic ``model_dump``, sorted JSON, no ``name``
    nor :attr:`Step.not_in_identity`; :attr:`Step.later_fields` only once set)."""
    params = step.model_dump(exclude={"name", *step.not_in_identity})
    for field_name in step.later_fields:  # unset options added later: identities stay as they were
        if params.get(field_name) is None:
            params.pop(field_name, None)
    text = json.dumps(params, sort_keys=True, default=_stable, ensure_ascii=False)
    return f"{step.kind or type(step).__name__}:{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _stable(value: Any) -> str:
    """A run-independent text for a parameter JSON cannot hold (a function: its qualified name)."""
    if callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}"
    return repr(value)


class ParameterError(ConfigError):
    """A step built with a wrong parameter (a ``ConfigError``, so ``except DatamillError``
    catches it; deliberately not a ``ValueError``, which pydantic would wrap again when a recipe
    is validated). ``validation`` keeps pydantic's error (field locations) when there was one."""

    validation: ValidationError | None = None


def validation_problem(cls: type[BaseModel], exc: ValidationError) -> str:
    """The first problem of a pydantic ``ValidationError`` in one line: what is wrong (the
    parameter, the value given) and what to do."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"])
    names = [f.alias or n for n, f in cls.model_fields.items()]
    if err["type"] == "extra_forbidden":
        did = did_you_mean(field, names)
        allowed = ", ".join(n for n in names if n != "name")
        return f"unknown parameter {field!r}{did}; allowed: {allowed}"
    if err["type"] == "missing":
        return f"{field}: a value is required"
    if err["type"] == "value_error":  # our own validators' words, which name the value
        return f"{field}: {err['msg'].removeprefix('Value error, ')}"
    return f"{field}: {err['msg']} (got {err.get('input')!r:.200})"


class GlobalStep(Step):
    """A step that needs every row at once. Drops are reported through ``drop``."""

    def process_all(
        self, rows: list[Row], drop: Callable[[Row, str, str | None], None]
    ) -> list[Row]:
        raise NotImplementedError

    async def aprocess_all(
        self, rows: list[Row], drop: Callable[[Row, str, str | None], None], ctx: Context
    ) -> list[Row]:
        """Async form; global steps that call models (embeddings) override this one."""
        return self.process_all(rows, drop)

    def contract_error(self) -> str | None:
        cls = type(self)
        if (
            cls.process_all is GlobalStep.process_all
            and cls.aprocess_all is GlobalStep.aprocess_all
        ):
            return f"{cls.__name__} implements neither process_all(rows, drop) nor aprocess_all(rows, drop, ctx)"
        return None


class FunctionStep(Step):
    """Wrap ``fn(row) -> row | list[row] | None`` (sync or async) as a step.

    ``None`` drops the row (recorded with reason ``"dropped by <name>"``); a returned row holding
    text that cannot be written as UTF-8 (a lone surrogate) is recorded as ``unencodable text``.
    """

    kind: ClassVar[str] = "function"
    fn: Callable[..., Any]
    reads: list[str] = []
    writes: list[str] = []

    def required_columns(self) -> list[str]:
        return list(self.reads)

    def produces(self) -> list[str]:
        return list(self.writes)

    @property
    def label(self) -> str:
        return self.name or str(getattr(self.fn, "__name__", "function"))

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        result = self.fn(dict(row))
        if inspect.isawaitable(result):
            result = await result
        if result is None:
            raise Dropped(f"dropped by {self.label}")
        rows = [result] if isinstance(result, dict) else list(_as_rows(result))
        for r in rows:  # no model, cache or output file can hold a lone surrogate
            bad = unencodable(r)
            if bad is not None:
                raise Dropped("unencodable text", f"{self.label} returned {bad}")
        return rows


def _as_rows(result: Iterable[Any]) -> Iterable[Row]:
    for item in result:
        if not isinstance(item, dict):
            raise TypeError(f"a step must return dicts, got {type(item).__name__}")
        yield item


def step(
    fn: Callable[..., Any] | None = None,
    *,
    reads: list[str] | None = None,
    writes: list[str] | None = None,
) -> Any:
    """Decorator: ``@step(reads=["a"], writes=["b"])`` turns a function into a :class:`FunctionStep`."""

    def wrap(f: Callable[..., Any]) -> FunctionStep:
        return FunctionStep(fn=f, reads=reads or [], writes=writes or [])

    return wrap(fn) if fn is not None else wrap

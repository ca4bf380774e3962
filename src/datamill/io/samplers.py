"""Sampler sources: N rows drawn from declared column distributions, before any model call.

A recipe declares one sampler per column (NeMo Data Designer's statistical samplers, in datamill's
one-key style)::

    source:
      num_rows: 200
      seed: 7
      samplers:
        topic: {category: {values: [science, cooking, travel], weights: [3, 1, 1]}}
        subtopic: {subcategory: {of: topic, values: {science: [physics, biology], cooking: [baking], travel: [trains]}}}
        length: {integer: {low: 50, high: 300}}
        temperature: {uniform: {low: 0.2, high: 1.0, round: 2}}
        height: {normal: {mean: 170, std: 10, round: 0, low: 140}}
        words: {conditional: {on: topic, cases: {science: {integer: {low: 100, high: 200}}}, default: {integer: {low: 20, high: 60}}}}
        person: {person: {locale: fr_FR, fields: [name, age, occupation, city]}}
        persona: {persona: {}}

Kinds: ``category`` (``values``, optional ``weights``), ``subcategory`` (values chosen by another
column's value, ``of``), ``uniform`` / ``normal`` (floats; ``round: K`` digits, ``round: 0`` a
whole number; ``normal`` clipped to optional ``low``/``high``), ``integer`` (``low``…``high``
inclusive), ``conditional`` (``on`` a column: the sampler of its value's ``cases`` entry, else
``default``), ``person`` (Faker, ``locale``; an object column: ``{{ person.name }}``) and
``persona`` (an offline persona sentence: :mod:`datamill.io.persona_parts`).

Row ``i``'s value of column ``c`` depends only on the seed, ``i`` and ``c`` (each draws from its own
generator), so a top-up's rows ``N, N+1, …`` continue reproducibly and adding a column leaves the
others as they were. Everything is checked when the recipe loads: an unknown kind, weights not
matching values, a reference to a missing column, a cycle, a bad range, a parent value with no
entry: :class:`SamplerError`, one line naming the column.

Deliberately not here: model-written columns (those are steps), mixtures (``mix``).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, MissingDependency, did_you_mean
from ..rows import Row
from . import persona_parts
from .sources import EmptyRows


class SamplerError(ConfigError):
    """A sampler declaration that cannot be sampled; ``column`` names it (for the recipe line)."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(f"samplers.{column}: {message}")
        self.column = column


def _rng(seed: int, index: int, column: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}\0{index}\0{column}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


#: the plain words YAML 1.1 reads as a boolean (a recipe's YAML keeps them as text; data given
#: from Python, or read with ``yaml.safe_load``, may hold bools for them)
BOOL_WORDS = {
    True: ("on", "yes", "true", "On", "Yes", "True", "ON", "YES", "TRUE"),
    False: ("off", "no", "false", "Off", "No", "False", "OFF", "NO", "FALSE"),
}


def _key(value: Any) -> str:
    """How a parent value is looked up in ``cases``/``values`` (YAML keys may be str or int;
    recipe data given from Python may hold ``True`` where its YAML said ``yes``, so a boolean
    and each of its YAML 1.1 words look up as ``"true"``/``"false"``)."""
    if isinstance(value, bool):
        return str(value).lower()
    for truth, words in BOOL_WORDS.items():
        if value in words:
            return str(truth).lower()
    return str(value)


def key_text(key: Any) -> str:
    """A parameter name for a message: a boolean key (a mapping given as data whose YAML read
    ``on:``/``yes:`` as a bool) is shown as the words it may have been, never as ``True``."""
    if isinstance(key, bool):
        return "/".join(BOOL_WORDS[key][:3]) + " (read as a boolean: quote it)"
    return repr(key)


def _names(params: Mapping[str, Any], allowed: tuple[str, ...]) -> dict[Any, Any]:
    """``params`` with a boolean key renamed to the one allowed name YAML reads as that boolean
    (``True`` → ``on`` for a conditional); any other key as given."""
    renamed: dict[Any, Any] = {}
    for k, v in params.items():
        if isinstance(k, bool):
            words = [w for w in allowed if w in BOOL_WORDS[k]]
            k = words[0] if len(words) == 1 else k
        renamed[k] = v
    return renamed


class Sampler:
    """One column's distribution. ``draw(rng, row)`` reads earlier columns of ``row``."""

    kind = ""
    parent: str | None = None  #: the column this one depends on

    def draw(self, rng: random.Random, row: Row) -> Any:
        raise NotImplementedError

    def values(self) -> set[str] | None:
        """Every value it can give (as :func:`_key`), when finite and known; else None."""
        return None

    def possible(self, given: list[Any] | None) -> list[Any] | None:
        """The values it gives with a chance above 0 when its parent column gives ``given``
        (``None``: any value of it); ``None`` when not finite or not known."""
        return None


def _round(x: float, digits: int | None) -> float | int:
    if digits is None:
        return x
    return int(round(x)) if digits == 0 else round(x, digits)


@dataclass
class Category(Sampler):
    choices: list[Any]
    weights: list[float] | None = None
    kind = "category"

    def draw(self, rng: random.Random, row: Row) -> Any:
        return rng.choices(self.choices, weights=self.weights)[0]

    def values(self) -> set[str]:
        return {_key(v) for v in self.choices}

    def possible(self, given: list[Any] | None = None) -> list[Any]:
        weights = self.weights or [1.0] * len(self.choices)
        return [v for v, w in zip(self.choices, weights, strict=True) if w > 0]


@dataclass
class Subcategory(Sampler):
    options: dict[str, Category]
    parent: str | None = None
    kind = "subcategory"

    def draw(self, rng: random.Random, row: Row) -> Any:
        return self.options[_key(row[self.parent or ""])].draw(rng, row)

    def values(self) -> set[str]:
        return {v for c in self.options.values() for v in c.values()}

    def possible(self, given: list[Any] | None) -> list[Any]:
        keys = set(self.options) if given is None else {_key(v) for v in given}
        return [v for k, c in self.options.items() if k in keys for v in c.possible()]


@dataclass
class Uniform(Sampler):
    low: float
    high: float
    digits: int | None = None
    kind = "uniform"

    def draw(self, rng: random.Random, row: Row) -> Any:
        return _round(rng.uniform(self.low, self.high), self.digits)


@dataclass
class Normal(Sampler):
    mean: float
    std: float
    digits: int | None = None
    low: float | None = None
    high: float | None = None
    kind = "normal"

    def draw(self, rng: random.Random, row: Row) -> Any:
        x = rng.gauss(self.mean, self.std)
        if self.low is not None:
            x = max(self.low, x)
        if self.high is not None:
            x = min(self.high, x)
        return _round(x, self.digits)


@dataclass
class Integer(Sampler):
    low: int
    high: int
    kind = "integer"

    def draw(self, rng: random.Random, row: Row) -> Any:
        return rng.randint(self.low, self.high)

    def values(self) -> set[str] | None:
        return (
            {str(v) for v in range(self.low, self.high + 1)} if self.high - self.low < 100 else None
        )

    def possible(self, given: list[Any] | None) -> list[Any] | None:
        return list(range(self.low, self.high + 1)) if self.high - self.low < 100 else None


@dataclass
class Conditional(Sampler):
    cases: dict[str, Sampler]
    default: Sampler | None = None
    parent: str | None = None
    kind = "conditional"

    def draw(self, rng: random.Random, row: Row) -> Any:
        chosen = self.cases.get(_key(row[self.parent or ""]), self.default)
        assert chosen is not None  # checked when built: every parent value has a case
        return chosen.draw(rng, row)

    def values(self) -> set[str] | None:
        parts = [*self.cases.values(), *([self.default] if self.default else [])]
        found = [p.values() for p in parts]
        return None if any(v is None for v in found) else set().union(*found)  # type: ignore[arg-type]

    def possible(self, given: list[Any] | None) -> list[Any] | None:
        if given is None:
            chosen = [*self.cases.values(), *([self.default] if self.default else [])]
        else:
            chosen = [s for v in given if (s := self.cases.get(_key(v), self.default)) is not None]
        found = [s.possible(None) for s in chosen]
        return None if any(f is None for f in found) else [v for f in found for v in f or []]


#: the person fields a ``person`` sampler can give (Faker provider, or drawn here)
PERSON_FIELDS = (
    "name", "first_name", "last_name", "sex", "age", "occupation", "city", "country",
    "email", "company",
)  # fmt: skip


@dataclass
class Person(Sampler):
    """A person from Faker in ``locale``: an object with ``fields``; ``age`` in ``ages``."""

    locale: str
    fields: list[str]
    ages: tuple[int, int] = (18, 85)
    faker: Any = field(default=None, repr=False)
    kind = "person"

    def draw(self, rng: random.Random, row: Row) -> Any:
        fake = self.faker
        fake.seed_instance(rng.getrandbits(64))
        sex = rng.choice(["female", "male"])
        first = fake.first_name_female() if sex == "female" else fake.first_name_male()
        last = fake.last_name()
        made = {
            "name": f"{first} {last}",
            "first_name": first,
            "last_name": last,
            "sex": sex,
            "age": rng.randint(*self.ages),
        }
        providers = {
            "occupation": fake.job,
            "city": fake.city,
            "country": fake.current_country,
            "email": fake.email,
            "company": fake.company,
        }
        return {f: made[f] if f in made else providers[f]() for f in self.fields}


@dataclass
class Persona(Sampler):
    """An offline persona sentence (occupation, background, goals, style: ``persona_parts``);
    with ``locale`` (Faker) it also has a name and a city."""

    ages: tuple[int, int] = (18, 80)
    person: Person | None = None
    kind = "persona"

    def draw(self, rng: random.Random, row: Row) -> Any:
        who = self.person.draw(rng, row) if self.person else None
        return persona_parts.describe(rng, self.ages, who)


# -- building from a recipe's mapping --------------------------------------------------------------
KINDS = ("category", "subcategory", "uniform", "normal", "integer", "conditional", "person", "persona")  # fmt: skip


def _number(column: str, params: Mapping[str, Any], name: str, *, whole: bool = False) -> Any:
    value = params.get(name)
    ok = isinstance(value, int) if whole else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok:
        what = "a whole number" if whole else "a number"
        raise SamplerError(column, f"{name} must be {what}, got {value!r}")
    return value


def _optional(column: str, params: Mapping[str, Any], name: str, whole: bool = False) -> Any:
    return None if params.get(name) is None else _number(column, params, name, whole=whole)


def _only(
    column: str, kind: str, params: Mapping[str, Any], allowed: tuple[str, ...]
) -> dict[Any, Any]:
    """``params`` (boolean keys named back: :func:`_names`) when every key is ``allowed``."""
    params = _names(params, allowed)
    extra = [k for k in params if k not in allowed]
    if extra:
        raise SamplerError(
            column,
            f"{kind}: unknown parameter {key_text(extra[0])}; allowed: {', '.join(allowed)}",
        )
    return params


def _digits(column: str, params: Mapping[str, Any]) -> int | None:
    digits: int | None = _optional(column, params, "round", whole=True)
    if digits is not None and digits < 0:
        raise SamplerError(column, f"round must be 0 or more digits, got {digits}")
    return digits


def _category(column: str, params: Any, where: str = "") -> Category:
    if isinstance(params, list):
        params = {"values": params}
    if not isinstance(params, Mapping):
        raise SamplerError(column, f"category{where}: give values: [...] (and weights: [...])")
    params = _only(column, "category", params, ("values", "weights"))
    values, weights = params.get("values"), params.get("weights")
    if not isinstance(values, list) or not values:
        raise SamplerError(column, f"category{where}: values must be a non-empty list")
    if weights is None:
        return Category(values)
    if not isinstance(weights, list) or len(weights) != len(values):
        got = len(weights) if isinstance(weights, list) else repr(weights)
        raise SamplerError(
            column,
            f"category{where}: {len(values)} values but {got} weights; give one weight per value",
        )
    bad = [w for w in weights if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0]
    if bad or not sum(weights) > 0:
        raise SamplerError(
            column,
            f"category{where}: weights must be numbers ≥ 0 with a positive sum, got {weights}",
        )
    return Category(values, [float(w) for w in weights])


def _range(column: str, kind: str, low: float, high: float) -> None:
    """A uniform range needs ``low < high``; an integer or a clipped normal ``low <= high``."""
    if kind == "uniform" and not low < high:
        raise SamplerError(column, f"{kind}: low ({low}) must be below high ({high})")
    if not low <= high:
        raise SamplerError(column, f"{kind}: low ({low}) must be at most high ({high})")


def build_sampler(column: str, spec: Any) -> Sampler:
    """One column's sampler from ``{kind: params}``; :class:`SamplerError` naming ``column``."""
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise SamplerError(
            column,
            f"give exactly one sampler kind, e.g. {{category: {{values: [...]}}}}; kinds: {', '.join(KINDS)}",
        )
    kind, params = next(iter(spec.items()))
    if kind not in KINDS:
        raise SamplerError(
            column, f"unknown sampler kind {key_text(kind)}; kinds: {', '.join(KINDS)}"
        )
    if kind == "category":
        return _category(column, params)
    params = params if params is not None else {}
    if not isinstance(params, Mapping):
        raise SamplerError(column, f"{kind}: parameters must be a mapping, got {params!r}")
    if kind == "uniform":
        params = _only(column, kind, params, ("low", "high", "round"))
        low, high = _number(column, params, "low"), _number(column, params, "high")
        _range(column, kind, low, high)
        return Uniform(low, high, _digits(column, params))
    if kind == "integer":
        params = _only(column, kind, params, ("low", "high"))
        low, high = (_number(column, params, k, whole=True) for k in ("low", "high"))
        _range(column, kind, low, high)
        return Integer(low, high)
    if kind == "normal":
        params = _only(column, kind, params, ("mean", "std", "round", "low", "high"))
        mean, std = _number(column, params, "mean"), _number(column, params, "std")
        if std <= 0:
            raise SamplerError(column, f"normal: std must be above 0, got {std}")
        low, high = _optional(column, params, "low"), _optional(column, params, "high")
        if low is not None and high is not None:
            _range(column, kind, low, high)
        return Normal(mean, std, _digits(column, params), low, high)
    if kind == "subcategory":
        params = _only(column, kind, params, ("of", "values"))
        parent, options = _parent(column, kind, params), params.get("values")
        if not isinstance(options, Mapping) or not options:
            raise SamplerError(
                column, "subcategory: values must map each value of the parent to a list"
            )
        return Subcategory(
            {_key(k): _category(column, v, f" for {k!r}") for k, v in options.items()}, parent
        )
    if kind == "conditional":
        params = _only(column, kind, params, ("on", "cases", "default"))
        parent, cases = _parent(column, kind, params), params.get("cases")
        if not isinstance(cases, Mapping) or not cases:
            raise SamplerError(column, "conditional: cases must map parent values to samplers")
        built = {_key(k): build_sampler(column, v) for k, v in cases.items()}
        if any(s.parent for s in built.values()):
            raise SamplerError(column, "conditional: a case cannot itself depend on a column")
        default = params.get("default")
        return Conditional(
            built, build_sampler(column, default) if default is not None else None, parent
        )
    if kind == "person":
        params = _only(column, kind, params, ("locale", "fields", "age"))
        return _person(column, params)
    params = _only(column, kind, params, ("locale", "age"))
    person = (
        _person(column, {**params, "fields": ["name", "city"]}) if params.get("locale") else None
    )
    return Persona(_ages(column, params, (18, 80)), person)


def _parent(column: str, kind: str, params: Mapping[str, Any]) -> str:
    name = "of" if kind == "subcategory" else "on"
    parent = params.get(name)
    if not isinstance(parent, str) or not parent:
        raise SamplerError(column, f"{kind}: {name} must name another column")
    if parent == column:
        raise SamplerError(column, f"{kind}: {name} names the column itself")
    return parent


def _ages(column: str, params: Mapping[str, Any], default: tuple[int, int]) -> tuple[int, int]:
    ages = params.get("age", list(default))
    if (
        not isinstance(ages, list)
        or len(ages) != 2
        or not all(isinstance(a, int) and not isinstance(a, bool) for a in ages)
        or not 0 <= ages[0] <= ages[1]
    ):
        raise SamplerError(column, f"age must be [youngest, oldest] in years, got {ages!r}")
    return ages[0], ages[1]


def _person(column: str, params: Mapping[str, Any]) -> Person:
    locale = params.get("locale", "en_US")
    fields = params.get("fields", ["name", "age", "occupation", "city"])
    if not isinstance(fields, list) or not fields:
        raise SamplerError(column, f"person: fields must be a list of: {', '.join(PERSON_FIELDS)}")
    unknown = [f for f in fields if f not in PERSON_FIELDS]
    if unknown:
        raise SamplerError(
            column, f"person: unknown field {unknown[0]!r}; fields: {', '.join(PERSON_FIELDS)}"
        )
    try:
        from faker import Faker
    except ImportError as exc:
        raise MissingDependency("person samplers", "samplers") from exc
    try:
        faker = Faker(str(locale))
    except (AttributeError, TypeError):
        raise SamplerError(
            column, f"person: unknown Faker locale {locale!r}; e.g. en_US, fr_FR, de_DE, ja_JP"
        ) from None
    return Person(str(locale), list(fields), _ages(column, params, (18, 85)), faker)


def _check_keys(
    column: str,
    sampler: Sampler,
    known: Mapping[str, Any],
    parent_values: set[str],
    parent: Sampler | None,
) -> None:
    """:class:`SamplerError` for a ``cases``/``values`` key that is none of the parent's values
    (a misspelling would never be drawn: its rows would silently take the default)."""
    stray = [k for k in known if k not in parent_values]
    if not stray:
        return
    shown = (
        [str(v) for v in parent.choices]
        if isinstance(parent, Category)
        else sorted(parent_values, key=str)
    )
    where = "values" if isinstance(sampler, Subcategory) else "cases"
    raise SamplerError(
        column,
        f"{sampler.kind}: {where} key {stray[0]!r} is not a value of {sampler.parent}"
        f"{did_you_mean(stray[0], shown)}; its values: {', '.join(shown[:20])}",
    )


def build_samplers(
    specs: Mapping[str, Any], fields: Mapping[str, Any] | None = None
) -> dict[str, Sampler]:
    """Every column's sampler, in an order where each comes after the column it depends on.

    A dependency must be another sampler column or a constant ``fields`` column; every value its
    parent can give (when known) needs an entry (``values`` of a subcategory, ``cases`` or a
    ``default`` of a conditional). :class:`SamplerError` names the column otherwise."""
    if not isinstance(specs, Mapping) or not specs:
        raise ConfigError(
            "samplers: declare at least one column, e.g. topic: {category: {values: [...]}}"
        )
    fields = fields or {}
    built = {str(c): build_sampler(str(c), s) for c, s in specs.items()}
    for column, sampler in built.items():
        if sampler.parent is None:
            continue
        if sampler.parent not in built and sampler.parent not in fields:
            raise SamplerError(
                column,
                f"{sampler.kind} depends on column {sampler.parent!r}, which is not declared; declare it under samplers",
            )
        parent_values = (
            built[sampler.parent].values()
            if sampler.parent in built
            else {_key(fields[sampler.parent])}
        )
        known = (
            sampler.options if isinstance(sampler, Subcategory) else getattr(sampler, "cases", {})
        )
        if parent_values is not None:
            _check_keys(column, sampler, known, parent_values, built.get(sampler.parent))
        if parent_values is not None and not getattr(sampler, "default", None):
            missing = sorted(parent_values - set(known))
            if missing:
                where = "values" if isinstance(sampler, Subcategory) else "cases (or a default)"
                raise SamplerError(
                    column,
                    f"{sampler.kind}: no entry in {where} for {sampler.parent}={missing[0]!r}",
                )
    order: list[str] = []
    visiting: set[str] = set()

    def visit(column: str) -> None:
        if column in order:
            return
        if column in visiting:
            raise SamplerError(column, "columns depend on each other in a cycle")
        visiting.add(column)
        parent = built[column].parent
        if parent in built:
            visit(parent)
        visiting.discard(column)
        order.append(column)

    for column in built:
        visit(column)
    return {c: built[c] for c in order}


class SamplerSource(EmptyRows):
    """``n`` rows of sampled columns (plus ``row`` and the constant ``fields``), in declared order.

    Row ``i`` depends only on ``seed`` and ``i`` (:meth:`row`): the top-up asks for rows past
    ``n`` and gets fresh, reproducible ones; a mixture reads one column of row ``i``
    (:meth:`value`) to keep only rows of the parts it needs, and refuses a part the column can
    never give (:meth:`possible`)."""

    name = "sampled rows"

    def __init__(
        self,
        samplers: Mapping[str, Any],
        n: int,
        seed: int = 0,
        limit: int | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(n, limit, fields)
        self.samplers = build_samplers(samplers, self.fields)
        self.order = list(samplers)
        self.seed = seed

    def row(self, index: int) -> Row:
        drawn: Row = {"row": index, **self.fields}
        for column, sampler in self.samplers.items():
            drawn[column] = sampler.draw(_rng(self.seed, index, column), drawn)
        return {"row": index, **self.fields, **{c: drawn[c] for c in self.order}}

    def value(self, index: int, column: str) -> Any:
        """Row ``index``'s ``column`` (``row(index)[column]``, ``None`` when absent), drawing
        only that column and the columns it depends on."""
        chain: list[str] = []
        at: str | None = column
        while at in self.samplers:
            chain.append(at)
            at = self.samplers[at].parent
        drawn: Row = {"row": index, **self.fields}
        for c in reversed(chain):
            drawn[c] = self.samplers[c].draw(_rng(self.seed, index, c), drawn)
        return drawn.get(column)

    def possible(self, column: str) -> list[Any] | None:
        """The distinct values ``column`` takes with a chance above 0 (a category's values of
        weight above 0, a subcategory's under those of its parent, …); ``None`` when not finite
        or not known (a number range, a person, ``row``)."""
        sampler = self.samplers.get(column)
        if sampler is None:
            return [self.fields[column]] if column in self.fields else None
        found = sampler.possible(self.possible(sampler.parent) if sampler.parent else None)
        if found is None:
            return None
        distinct: list[Any] = []
        for value in found:  # values may be unhashable (a YAML list): no set
            if value not in distinct:
                distinct.append(value)
        return distinct


__all__ = [
    "KINDS",
    "PERSON_FIELDS",
    "SamplerError",
    "SamplerSource",
    "build_sampler",
    "build_samplers",
]

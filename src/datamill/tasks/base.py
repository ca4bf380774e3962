"""Tasks: steps that ask a model. A task turns a row into request(s) and the completions back
into columns; it never knows which backend answers.

Subclasses implement :meth:`Task.requests` and :meth:`Task.parse` (one round of calls), or
override :meth:`Task.process` for techniques that need several dependent calls (Magpie, evolution).

``samples: K`` (rejection sampling, e.g. before a verifier and ``select_verified``) makes a
one-round task send each request once with ``n = K``: the backend draws K samples (each from its
own seed: llama.cpp uses ``seed + i``, the call cache stores each under its index) and the row
becomes K rows, each with a ``sample`` column (0-based). A sample that fails the completion checks
or the parse is lost alone (counted in ``run.json`` ``events`` as ``sample lost: <reason>``); the
row is a failure record only when all K are. ``samples`` is not part of the step's identity, so
raising K reuses the samples already paid for.
Unparsable output raises :class:`~datamill.errors.ParseError`; the runner records it with the
raw text. Prompts live in ``tasks/templates/*.jinja2`` beside the code.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal

import jinja2
from jinja2 import nodes
from pydantic import Field

from ..errors import ConfigError, Dropped, ParseError
from ..models.base import THINK_TAGS, Completion, Request, split_reasoning
from ..rows import Path as RowPath
from ..rows import Row, lookup, path_text, row_seed, unencodable
from ..steps.base import Context, Step

TEMPLATES = Path(__file__).parent / "templates"
#: the column ``samples: K`` writes: which of the K samples of its row a row is (0-based)
SAMPLE = "sample"
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=False,
    autoescape=False,
)


@cache
def template(name: str) -> jinja2.Template:
    """A prompt template from ``tasks/templates``."""
    return _ENV.get_template(name)


@lru_cache(maxsize=256)
def _compiled(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


def render_string(source: str, **values: Any) -> str:
    """Render an inline template (e.g. a user's ``template:`` parameter); compiled once."""
    return _compiled(source).render(**values)


@lru_cache(maxsize=256)
def _variables(source: str) -> frozenset[str]:
    from jinja2 import meta

    return frozenset(meta.find_undeclared_variables(_ENV.parse(source)))


def template_variables(source: str) -> set[str]:
    """Names an inline template reads (to check columns before any call)."""
    return set(_variables(source))


@dataclass(frozen=True)
class TemplateReads:
    """What an inline template reads from a row.

    ``paths``: every place read, first-seen order (``("person", "address", "street")``); each
    must hold a value. A place the template tests itself (``{% if a.b %}``, ``a.b is defined``,
    ``a.b is none``, ``a.b | default(...)``), and every place under it, is left out.
    ``rendered``: the places printed whole (``{{ person.name }}``); they must hold text or a
    number, not an object or a list. ``columns``: the columns every row must have (all it
    reads but those read only through ``| default(...)`` or ``is defined``).
    """

    paths: tuple[RowPath, ...]
    rendered: tuple[RowPath, ...]
    columns: tuple[str, ...]


#: filters and tests after which a place may be absent (Jinja handles it) …
_MAY_BE_ABSENT = {"default", "d", "defined", "undefined"}
#: … and tests after which it may be null or blank
_MAY_BE_EMPTY = {"none"}


def _path(node: nodes.Node) -> RowPath | None:
    """The row path of ``a``, ``a.b``, ``a['b']``, ``a[0]`` (constant keys only), else None."""
    if isinstance(node, nodes.Name):
        return (node.name,) if node.ctx == "load" else None
    if isinstance(node, nodes.Getattr):
        base = _path(node.node)
        return None if base is None else (*base, node.attr)
    if isinstance(node, nodes.Getitem):
        base = _path(node.node)
        key = node.arg.value if isinstance(node.arg, nodes.Const) else None
        if base is None or isinstance(key, bool) or not isinstance(key, (str, int)):
            return None
        return (*base, key)
    return None


@dataclass
class _Scan:
    read: dict[RowPath, None]
    shown: dict[RowPath, None]
    absent_ok: set[RowPath]  # ``a.b | default``, ``a.b is defined``
    empty_ok: set[RowPath]  # ``{% if a.b %}``, ``a.b is none``

    def visit(self, node: nodes.Node) -> None:
        if isinstance(node, nodes.Output):
            for item in node.nodes:
                p = _path(item)
                if p is not None:
                    self.shown[p] = None
        if isinstance(node, (nodes.If, nodes.CondExpr)):
            tested = _path(node.test)
            if tested is not None:
                self.empty_ok.add(tested)
        skip: nodes.Node | None = None
        guarded = (
            _path(node.node) if isinstance(node, (nodes.Filter, nodes.Test)) and node.node else None
        )
        if guarded is not None and node.name in _MAY_BE_ABSENT:  # type: ignore[attr-defined]
            skip = node.node  # type: ignore[attr-defined]  # absence is handled by the template
            self.absent_ok.add(guarded)
        elif guarded is not None and node.name in _MAY_BE_EMPTY:  # type: ignore[attr-defined]
            self.empty_ok.add(guarded)
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
            skip = node.node  # ``text.upper()``: the object is read, not a key named "upper"
            self.visit(node.node.node)
        elif skip is None:
            p = _path(node)
            if p is not None:
                self.read[p] = None
                return
        for child in node.iter_child_nodes():
            if child is not skip:
                self.visit(child)


@lru_cache(maxsize=256)
def template_reads(source: str) -> TemplateReads:
    """What the inline template ``source`` reads from a row (see :class:`TemplateReads`).
    Raises ``jinja2.TemplateSyntaxError`` for a template that does not parse."""
    from jinja2 import meta

    ast = _ENV.parse(source)
    names = meta.find_undeclared_variables(ast)  # loop variables and ``set`` names are not columns
    scan = _Scan({}, {}, set(), set())
    scan.visit(ast)
    guarded = scan.absent_ok | scan.empty_ok

    def needed(p: RowPath) -> bool:
        return p[0] in names and not any(p[:n] in guarded for n in range(1, len(p) + 1))

    columns = {p[0] for p in scan.read if (p[0],) not in scan.absent_ok}
    columns |= {p[0] for p in scan.absent_ok if len(p) > 1}  # ``a.b is defined`` needs ``a``
    return TemplateReads(
        tuple(p for p in scan.read if needed(p)),
        tuple(p for p in scan.shown if p[0] in names),
        tuple(sorted(str(c) for c in columns if c in names)),
    )


def check_template(source: str, where: str) -> TemplateReads:
    """:func:`template_reads`, or ``ConfigError`` naming ``where`` (``text_generation template``)."""
    try:
        return template_reads(source)
    except jinja2.TemplateError as exc:
        raise ConfigError(f"{where} is not valid Jinja: {exc}") from None


def not_text(value: object) -> str | None:
    """What ``value`` is when it cannot stand in a prompt as text (``an object``, ``a list``,
    ``bytes``), else None. Text, numbers and true/false are fine."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple, set, frozenset)):
        return "a list"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes"
    return None


def how_to_reach(path: RowPath, value: object) -> str:
    """The template expression that turns ``value`` (found at ``path``) into text, for messages."""
    name = path_text(path)
    if isinstance(value, dict):
        keys = [k for k in value if isinstance(k, str)]
        texts = [k for k in keys if isinstance(value[k], str)] or keys
        if texts:
            return "{{ " + path_text((*path, texts[0])) + " }}"
        return "{{ " + name + " | tojson }}"
    if isinstance(value, (list, tuple, set, frozenset)):
        return "{{ " + name + " | join('\\n') }} or {{ " + name + "[0] }}"
    return f"text (decode {name} before the run)"


def render_row(source: str, row: Row, who: str) -> str:
    """Render the inline template ``source`` over ``row``; ``Dropped`` when a place it prints
    whole holds an object, a list or bytes (``not text``) or text that cannot be encoded as
    UTF-8 (``unencodable text``). ``who`` names the step for the detail line."""
    for path in template_reads(source).rendered:
        value, _ = lookup(row, path)
        kind = not_text(value)
        if kind is not None:
            raise Dropped(
                "not text",
                f"{path_text(path)} holds {kind}, which {who} would print as Python; write {how_to_reach(path, value)}",
            )
        bad = unencodable(value, path)
        if bad is not None:
            raise Dropped("unencodable text", bad)
    return render_string(source, **row)


_MARKUP = re.compile(r"\{\{|\{%|\{#")


def no_markup(where: str, value: object, fix: str = "remove the markup") -> None:
    """``ConfigError`` when a free-text field that is sent to the model as written (not a
    template) holds Jinja markup (``{{``, ``{%``, ``{#``), which would reach the model verbatim.
    ``value``: a text or a list of texts; ``fix``: what to do instead."""
    texts = value if isinstance(value, (list, tuple)) else [value]
    for text in texts:
        if not isinstance(text, str):
            continue
        m = _MARKUP.search(text)
        if m:
            end = text.find("}", m.end())
            snippet = (
                text[m.start() : end + 2] if 0 <= end < m.start() + 60 else text[m.start() :][:40]
            )
            raise ConfigError(
                f"{where} is sent as written, not as a template, so {snippet!r} would reach "
                f"the model verbatim; {fix}"
            )


class Task(Step):
    """A step that calls a model.

    Sampling has one precedence, applied in one place (the runner's ``ModelHandle.prepare``):
    the task's :attr:`defaults` < the model's settings (``models.NAME.max_tokens``) < the step's
    options (``max_tokens`` on the step; a task making several kinds of call may also have
    per-call options, e.g. Magpie's ``response_max_tokens``, which beat the step-wide ones)
    < the command line (``--set``, which edits the recipe). Fields left ``None`` set nothing.
    """

    model: str = "default"
    temperature: float | None = Field(default=None, ge=0, le=5)
    max_tokens: int | None = Field(default=None, ge=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    truncated: Literal["drop", "keep"] = "drop"
    #: candidates per row (rejection sampling): K samples of each request, one row each
    samples: int = Field(default=1, ge=1, le=256)
    #: the open/close tags of the thinking block split off each answer (default the model's
    #: ``think_tags`` option, else ``<think>``/``</think>``)
    think_tags: tuple[str, str] | None = None

    not_in_identity: ClassVar[frozenset[str]] = frozenset({"samples"})
    later_fields: ClassVar[tuple[str, ...]] = ("think_tags",)

    #: the sampling this task's requests start from, per kind of call (declared once per task;
    #: the lowest precedence: model settings and step options beat it)
    defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    def models(self) -> list[str]:
        return [self.model]

    def contract_error(self) -> str | None:
        cls = type(self)
        if cls.process is not Task.process:
            if self.samples > 1:
                return (
                    f"samples: {self.samples} needs a task with one round of calls "
                    f"(text_generation, …); {self.kind or cls.__name__} makes several dependent "
                    "calls: sample the step after it instead"
                )
            return None
        missing = [m for m in ("requests", "parse") if getattr(cls, m) is getattr(Task, m)]
        if missing:
            return (
                f"{cls.__name__} implements neither requests(row, ctx) + parse(completions, row) "
                f"nor process(row, ctx) (missing: {', '.join(missing)})"
            )
        return None

    def output_columns(self, columns: list[str]) -> list[str]:
        out = super().output_columns(columns)
        return out + [SAMPLE] if self.samples > 1 and SAMPLE not in out else out

    def sampling(self) -> dict[str, Any]:
        """Sampling options set explicitly on this step, for every call it makes."""
        return _given(temperature=self.temperature, max_tokens=self.max_tokens, top_p=self.top_p)

    def request_defaults(self, kind: str) -> dict[str, Any]:
        """The :attr:`defaults` of one kind of call (a copy; ``KeyError`` names a kind not declared)."""
        return dict(self.defaults[kind])

    def requests(self, row: Row, ctx: Context) -> list[Request]:
        raise NotImplementedError

    def parse(self, completions: list[list[Completion]], row: Row) -> Row | list[Row]:
        raise NotImplementedError

    async def call(
        self,
        ctx: Context,
        request: Request,
        salt: str = "",
        model: str | None = None,
        options: dict[str, Any] | None = None,
        keep_cut: bool = False,
    ) -> list[Completion]:
        """Send one request (built with the task's defaults) through the cache, with this row's
        seed. The step's options, then ``options`` (this kind of call's own, ``None`` values
        ignored), go along as overrides; the runner applies model settings under them, once.

        ``keep_cut``: a sample cut at ``max_tokens`` that :meth:`check_completion` refuses
        (thinking not finished, no answer yet) comes back split as far as it got, finish
        ``length``, instead of failing the row: for a step whose gate downstream counts it."""
        completions = await self.send(ctx, request, salt, model, options)
        tags = self.tags_for(ctx, model or self.model)
        return [self.checked(c, request, tags, keep_cut) for c in completions]

    def checked(
        self, completion: Completion, request: Request, tags: tuple[str, str], keep_cut: bool
    ) -> Completion:
        """:meth:`check_completion`, except that with ``keep_cut`` a sample cut at
        ``max_tokens`` comes back split as far as it got (see :meth:`call`)."""
        try:
            return self.check_completion(completion, request, tags)
        except ParseError:
            if not keep_cut or completion.finish_reason != "length":
                raise
            check_encodable(completion)
            reasoning, answer = split_reasoning(completion.text, tags)
            return replace(
                completion, text=answer or "", reasoning=reasoning or completion.reasoning
            )

    def keeps_cut(self) -> bool:
        """Whether this step's one-round calls keep samples cut at ``max_tokens`` for a gate
        downstream (``keep_cut`` of :meth:`call`); no by default."""
        return False

    async def send(
        self,
        ctx: Context,
        request: Request,
        salt: str = "",
        model: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> list[Completion]:
        """:meth:`call` without the completion checks: the raw completions, for callers that
        check each sample on its own (``samples: K``)."""
        if request.seed is None:
            request = request.with_options(seed=self.row_seed(ctx, salt))
        refuse_unencodable(request)
        overrides = {**self.sampling(), **_given(**(options or {}))}
        return await ctx.generate(model or self.model, request, overrides)

    def tags_for(self, ctx: Context, model: str) -> tuple[str, str]:
        """The thinking tags split off the answers of ``model``: the step's ``think_tags``, else
        the model's (``think_tags`` model option, kept in ``ModelInfo.extra``), else ``<think>``."""
        return self.think_tags or ctx.model_info(model).extra.get("think_tags") or THINK_TAGS

    def row_seed(self, ctx: Context, salt: str = "") -> int:
        """This row's seed for one use (``salt``) in this step: from the step's ``seed`` (else
        the pipeline's), the row key and the step's :attr:`identity` (not its position)."""
        return row_seed(
            self.seed if self.seed is not None else ctx.seed, ctx.key, self.identity + salt
        )

    def check_completion(
        self,
        completion: Completion,
        request: Request | None = None,
        tags: tuple[str, str] = THINK_TAGS,
    ) -> Completion:
        """The answer a task may read from one raw completion, or :class:`ParseError`.

        Every completion a task reads passes here once, after the cache (which keeps the raw
        text): a leading thinking block (``tags``, default ``<think>…</think>``) is split off
        into ``reasoning`` (kept on the returned completion, written only where a task says so),
        and the text becomes the answer alone; reasoning a server sent apart is kept as it came.
        A ``tool_calls`` finish is accepted, text or not, when ``request`` offered tools.
        Refused, each with its own failure reason: ``content filtered`` (the provider withheld or
        cut the answer), ``tool call instead of an answer`` (the request had no tools),
        ``model error``, ``unknown finish reason``, ``reasoning not finished`` (a thinking block
        never closed), ``truncated at max_tokens`` (unless ``truncated: keep``),
        ``unencodable text in output`` (a lone surrogate) and ``empty completion``.
        """
        check_encodable(completion)
        raw = completion.text
        finish = completion.finish_reason
        if finish == "content_filter":
            raise ParseError("content filtered", raw)
        if finish == "tool_calls":
            if request is None or not request.tools or not completion.tool_calls:
                raise ParseError(
                    "tool call instead of an answer", raw or str(completion.tool_calls)
                )
        elif finish == "error":
            raise ParseError("model error", raw)
        elif finish not in ("stop", "length"):
            raise ParseError("unknown finish reason", f"finish_reason {finish!r}: {raw}")
        reasoning, answer = split_reasoning(raw, tags)
        if answer is None:
            raise ParseError("reasoning not finished", raw)
        if finish == "length" and self.truncated == "drop":
            raise ParseError("truncated at max_tokens", _shown(completion))
        if finish != "tool_calls" and not answer.strip():
            raise ParseError("empty completion", _shown(completion))
        if reasoning is None:
            return completion
        if completion.reasoning:  # sent apart and written inline too: keep both, in order
            reasoning = f"{completion.reasoning}\n{reasoning}"
        return replace(completion, text=answer, reasoning=reasoning)

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        requests = self.requests(row, ctx)
        if self.samples > 1:
            return await self.process_samples(row, ctx, requests)
        results = await asyncio.gather(
            *(
                self.call(ctx, r, salt=f"#{i}", keep_cut=self.keeps_cut())
                for i, r in enumerate(requests)
            )
        )
        parsed = self.parse(list(results), row)
        if isinstance(parsed, dict):
            return [{**row, **parsed}]
        return [{**row, **p} for p in parsed]

    async def process_samples(self, row: Row, ctx: Context, requests: list[Request]) -> list[Row]:
        """``samples: K``: each request once with ``n = K``; sample ``j`` of every request makes
        row ``j`` (with ``sample: j``). A sample that fails its checks or its parse is counted
        (``sample lost: <reason>``) and left out; when every sample fails, the first failure
        is raised (the row's failure record)."""
        k = self.samples
        sent = await asyncio.gather(
            *(self.send(ctx, replace(r, n=k), salt=f"#{i}") for i, r in enumerate(requests))
        )
        tags = self.tags_for(ctx, self.model)
        out: list[Row] = []
        lost: list[ParseError | Dropped] = []
        for j in range(k):
            try:
                parsed = self.parse(
                    [
                        [self.checked(c[j], r, tags, self.keeps_cut())]
                        for c, r in zip(sent, requests, strict=True)
                    ],
                    row,
                )
            except (ParseError, Dropped) as exc:
                lost.append(exc)
                ctx.count(f"sample lost: {exc.reason}")
                continue
            for p in [parsed] if isinstance(parsed, dict) else parsed:
                out.append({**row, **p, SAMPLE: j})
        if not out:
            raise lost[0]
        return out


class TemplateTask(Task):
    """A task whose prompts are inline templates over the row (``template``, ``system_prompt``…,
    listed by :meth:`_templates` as ``(source, field)``): the columns it needs, the places that
    must hold a value and the places printed whole all come from them."""

    def _templates(self) -> list[tuple[str, str]]:
        raise NotImplementedError

    def required_columns(self) -> list[str]:
        return sorted({c for t, _ in self._templates() for c in template_reads(t).columns})

    def required_paths(self) -> list[RowPath]:
        paths = [p for t, _ in self._templates() for p in template_reads(t).paths]
        return list(dict.fromkeys(paths))

    def text_paths(self) -> list[RowPath]:
        paths = [p for t, _ in self._templates() for p in template_reads(t).rendered]
        return list(dict.fromkeys(paths))


def _shown(completion: Completion) -> str:
    """A refused completion's raw text for its failure record, its thinking sent apart first."""
    if completion.reasoning:
        return f"{THINK_TAGS[0]}{completion.reasoning}{THINK_TAGS[1]}{completion.text}"
    return completion.text


def refuse_unencodable(request: Request) -> None:
    """``Dropped("unencodable text")`` when a prompt holds text no model (nor the call cache)
    can take: a lone surrogate, from a value a step made; source rows are checked up front."""
    parts: list[tuple[str, object]] = [("prompt", request.prompt)]
    parts += [
        (f"message {i} ({m['role']})", m["content"])
        for i, m in enumerate(request.messages or (), start=1)
    ]
    for where, text in parts:
        bad = unencodable(text) if text is not None else None
        if bad is not None:
            raise Dropped("unencodable text", f"{where}: {bad}")


def check_encodable(completion: Completion) -> None:
    """``ParseError("unencodable text")`` when a completion holds a lone surrogate; the raw text
    is kept with the surrogate escaped (``\\ud83d``), so the failure record can be written."""
    bad = unencodable(completion.text)
    if bad is not None:
        raw = completion.text.encode("utf-8", "backslashreplace").decode("utf-8")
        raise ParseError("unencodable text in output", raw)


def _given(**options: Any) -> dict[str, Any]:
    """The options that are set (not ``None``)."""
    return {k: v for k, v in options.items() if v is not None}

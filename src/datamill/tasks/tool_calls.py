"""Tool-calling SFT data from the user's own Python functions, after APIGen (Liu et al., 2024,
arXiv:2406.18518): queries → calls → format, execution and semantic checks → final answer.

- ``tool_queries`` (:class:`ToolQueries`): a query per row, of the row's ``kind``: ``single``
  (one call), ``parallel`` (several independent calls at once), ``sequential`` (a call that needs
  another's result) or ``none`` (irrelevance: no tool helps, the model must answer without one).
- ``tool_calls`` (:class:`ToolCalls`): the conversation. Round 1 asks for calls
  (``tool_choice: required``; ``auto`` for ``none`` queries); each call is checked against its
  tool's schema (``format``) and run in the sandbox (``execution``, cached like verdicts), the
  results go back as ``role: tool`` messages; ``sequential`` queries get more rounds
  (``auto``, up to ``max_rounds``); the last round (``tool_choice: none``) writes the final answer
  from the results. Writes ``messages`` in TRL's conversational tool format and ``tools`` (the
  JSON schemas, as JSON text, which TRL's SFTTrainer reads).
- ``verify_tool_semantics`` (:class:`VerifyToolSemantics`): a judge model says whether the calls
  and results answer the query (``semantics``); ``none`` rows have no calls and pass untouched.

How calls are asked for is decided by the model's declared capabilities: a backend that takes
``Request.tools`` (OpenAI-compatible servers, the embedded engine through a grammar) gets them
natively; any other gets the tools listed in a system message and a JSON answer
(``models.tool_answer``), held to a JSON schema where the model honours one.

Losses are failure records with these reasons: ``no call`` (a query that needs a tool got a plain
answer), ``irrelevance`` (a ``none`` query got a call), ``format``, ``execution``, ``call count``
(a ``parallel`` query answered with one call, a ``single`` one with several, a ``sequential`` one
in one round), ``unparsable tool calls``, ``semantics``.

Deliberately not here: schemas from functions (``datamill.tools``), running a call
(``datamill.tools.execute``).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, field_validator

from ..errors import Dropped, ParseError
from ..models.base import Completion, Request, ToolCall
from ..models.tool_answer import (
    answer_messages,
    calls_schema,
    parse_answer,
    wire_calls,
    with_tools_prompt,
)
from ..rows import Row
from ..steps.base import Context
from ..steps.verify.base import result_key
from ..steps.verify.code import SandboxLimits
from ..tools import Tool, load_tools
from ..tools.execute import canonical, check_call, run_call
from .base import Task, template

KINDS = ("single", "parallel", "sequential", "none")


class _WithTools(Task):
    """A task over ``tools: [module:function, ...]``, loaded (schemas built) when built."""

    tools: list[str]
    _loaded: list[Tool] = PrivateAttr(default_factory=list)

    @field_validator("tools")
    @classmethod
    def _loadable(cls, value: list[str]) -> list[str]:
        load_tools(value)  # one ConfigError line when the step is built, before any model call
        return value

    @property
    def loaded(self) -> list[Tool]:
        """The tools, imported and with their schemas (loaded once)."""
        if not self._loaded:
            self._loaded = load_tools(self.tools)
        return self._loaded

    @property
    def schemas(self) -> tuple[dict[str, Any], ...]:
        return tuple(t.schema for t in self.loaded)


def _kind(row: Row, column: str) -> str:
    kind = row.get(column)
    if kind not in KINDS:
        raise Dropped("unknown kind", f"{column!r} is {kind!r}; use one of {', '.join(KINDS)}")
    return str(kind)


class ToolQueries(_WithTools):
    """A query of the row's kind (column ``kind``) for the tools → ``output``."""

    kind: ClassVar[str] = "tool_queries"
    kind_column: str = "kind"
    output: str = "query"
    #: a query is the answer's first line: an answer cut after it keeps it (a cut first line
    #: is still lost as ``truncated at max_tokens``)
    truncated: Literal["drop", "keep"] = "keep"
    defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "query": {"max_tokens": 128, "temperature": 0.9}
    }

    def required_columns(self) -> list[str]:
        return [self.kind_column]

    def produces(self) -> list[str]:
        return [self.output]

    def requests(self, row: Row, ctx: Context) -> list[Request]:
        tools = [t.schema["function"] for t in self.loaded]
        prompt = template("tool-query.jinja2").render(
            tools=tools, kind=_kind(row, self.kind_column)
        )
        return [Request.chat(prompt, **self.request_defaults("query"))]

    def parse(self, completions: list[list[Completion]], row: Row) -> Row:
        completion = completions[0][0]
        text = completion.text
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if completion.finish_reason == "length" and len(lines) <= 1:
            raise ParseError("truncated at max_tokens", text)
        query = re.sub(r"^(request|query|user)\s*:\s*", "", lines[0], flags=re.I) if lines else ""
        query = query.strip().strip("\"'“”").strip()
        if len(query.split()) < 3:
            raise ParseError("no query", text)
        return {self.output: query}


class ToolCalls(_WithTools):
    """``query`` → ``messages`` (user, calls, results, final answer) and ``tools`` (see the module)."""

    kind: ClassVar[str] = "tool_calls"
    query: str = "query"
    kind_column: str = "kind"
    #: rounds of calls a ``sequential`` query may take before the final answer
    max_rounds: int = Field(default=3, ge=2, le=8)
    #: what one tool run may use in the sandbox
    limits: SandboxLimits = SandboxLimits(wall_seconds=10.0, cpu_seconds=5)
    #: tool runs at once (default: the CPU count)
    max_workers: int | None = Field(default=None, ge=1)
    output: str = "messages"
    tools_output: str = "tools"
    defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "calls": {"max_tokens": 256, "temperature": 0.3},
        "answer": {"max_tokens": 384, "temperature": 0.7},
    }

    def required_columns(self) -> list[str]:
        return [self.query, self.kind_column]

    def produces(self) -> list[str]:
        return [self.output, self.tools_output]

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        kind = _kind(row, self.kind_column)
        query = str(self.need_text(row, self.query))
        by_name = {t.name: t for t in self.loaded}
        messages: list[dict[str, Any]] = [{"role": "user", "content": query}]
        rounds: list[int] = []  # calls made per round
        answer = ""
        while True:
            n = len(rounds)
            if n == 0:
                choice = "auto" if kind == "none" else "required"
            elif kind != "sequential" or n >= self.max_rounds:
                choice = "none"
            else:
                choice = "auto"
            calls, text = await self._ask(ctx, messages, choice, n)
            if not calls:
                if n == 0 and kind != "none":
                    raise Dropped("no call", f"a {kind} query got a plain answer: {text[:120]}")
                answer = text.strip()
                break
            if kind == "none":
                names = ", ".join(c["name"] for c in calls)
                raise Dropped("irrelevance", f"called {names} for a query no tool answers")
            if choice == "none":
                raise Dropped("call count", f"still calling tools after {n} rounds")
            for call in calls:
                problem = check_call(call, by_name)
                if problem is not None:
                    raise Dropped("format", problem)
            ids = [f"call_{sum(rounds) + i}" for i in range(len(calls))]
            results = await asyncio.gather(*(self._run(ctx, by_name[c["name"]], c) for c in calls))
            for call, (ok, result) in zip(calls, results, strict=True):
                if not ok:
                    raise Dropped("execution", f"{call['name']}({call['arguments']}): {result}")
            named = [{**c, "id": i} for c, i in zip(calls, ids, strict=True)]
            messages.append({"role": "assistant", "content": "", "tool_calls": wire_calls(named)})
            for call, (_, result) in zip(named, results, strict=True):
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call["id"],
                        "name": call["name"],
                        "content": result,
                    }
                )
            rounds.append(len(calls))
        if not answer:
            raise Dropped("empty completion", "no final answer after the tool results")
        if rounds and parse_answer(answer)[0]:
            raise Dropped("call count", f"the final answer is one more call: {answer[:120]}")
        self._check_count(kind, rounds)
        messages.append({"role": "assistant", "content": answer})
        return [{**row, self.output: messages, self.tools_output: json.dumps(list(self.schemas))}]

    def need_text(self, row: Row, column: str) -> str:
        value = row.get(column)
        if not isinstance(value, str) or not value.strip():
            raise Dropped("empty input", f"column {column!r} holds no text")
        return value

    @staticmethod
    def _check_count(kind: str, rounds: list[int]) -> None:
        if kind == "single" and rounds != [1]:
            raise Dropped("call count", f"a single query took calls per round {rounds}")
        if kind == "parallel" and rounds[0] < 2:
            raise Dropped("call count", "a parallel query got one call in its first round")
        if kind == "sequential" and len(rounds) < 2:
            raise Dropped("call count", "a sequential query took one round of calls")

    async def _ask(
        self, ctx: Context, messages: list[dict[str, Any]], choice: str, n: int
    ) -> tuple[tuple[ToolCall, ...], str]:
        """One round: the calls the model asks for under ``choice`` and the text it wrote."""
        kind = "answer" if choice == "none" else "calls"
        defaults = self.request_defaults(kind)
        info = ctx.model_info(self.model)
        if info.capabilities.tools:
            request = Request(
                messages=tuple(messages), tools=self.schemas, tool_choice=choice, **defaults
            )
            completion = (await self.call(ctx, request, salt=f"#round{n}"))[0]
            return completion.tool_calls, completion.text
        if choice == "none":
            request = Request(messages=tuple(answer_messages(messages)), **defaults)
            return (), (await self.call(ctx, request, salt=f"#round{n}"))[0].text
        schema = calls_schema(self.schemas, choice) if info.json_schema else None
        request = Request(
            messages=tuple(with_tools_prompt(messages, self.schemas, choice)),
            json_schema=schema,
            **defaults,
        )
        text = (await self.call(ctx, request, salt=f"#round{n}"))[0].text
        calls, answer = parse_answer(text)
        if not calls and answer is None:
            raise ParseError("unparsable tool calls", text)
        return calls, answer or ""

    async def _run(self, ctx: Context, tool: Tool, call: ToolCall) -> tuple[bool, str]:
        """The call run in the sandbox, its outcome kept in the run's cache."""
        arguments = canonical(json.loads(call["arguments"]))
        key = result_key("tool_call", 1, {"tool": tool.fingerprint()}, {"arguments": arguments})

        async def compute() -> dict[str, Any]:
            from ..sandbox import Limits

            ok, result = await run_call(
                tool, arguments, Limits(**self.limits.model_dump()), self.max_workers
            )
            return {"ok": ok, "result": result}

        outcome = await ctx.cached(key, compute)
        return bool(outcome["ok"]), str(outcome["result"])


class VerifyToolSemantics(Task):
    """A judge: do the calls and their results answer the query? (``semantics``)"""

    kind: ClassVar[str] = "verify_tool_semantics"
    messages: str = "messages"
    defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "judge": {"max_tokens": 128, "temperature": 0.0}
    }

    def required_columns(self) -> list[str]:
        return [self.messages]

    async def process(self, row: Row, ctx: Context) -> list[Row]:
        messages = row[self.messages]
        calls = _calls_with_results(messages)
        if not calls:
            ctx.count("semantics skipped (no calls)")
            return [row]
        query = next(m["content"] for m in messages if m["role"] == "user")
        prompt = template("tool-semantics.jinja2").render(query=query, calls=calls)
        schema = None
        if ctx.model_info(self.model).json_schema:
            schema = {
                "type": "object",
                "properties": {
                    "passed": {"type": "boolean"},
                    "reason": {"type": "string", "maxLength": 160},  # fits max_tokens
                },
                "required": ["passed", "reason"],
            }
        request = Request.chat(prompt, json_schema=schema, **self.request_defaults("judge"))
        text = (await self.call(ctx, request))[0].text
        passed, reason = _judgement(text)
        if not passed:
            raise Dropped(
                "semantics", reason or "the judge says the results do not answer the query"
            )
        return [row]


def _calls_with_results(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    results = {m.get("tool_call_id"): m.get("content") for m in messages if m.get("role") == "tool"}
    return [
        {
            "name": c["function"]["name"],
            "arguments": c["function"]["arguments"],
            "result": str(results.get(c["id"], "")),
        }
        for m in messages
        for c in m.get("tool_calls") or ()
    ]


def _judgement(text: str) -> tuple[bool, str]:
    """``(passed, reason)`` from the judge's JSON (or a leading yes/no); ``ParseError`` else."""
    found = re.search(r"\{.*\}", text, re.DOTALL)
    if found:
        try:
            data = json.loads(found.group(0))
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("passed"), bool):
            return data["passed"], str(data.get("reason") or "")
    word = re.match(r"\s*(yes|no)\b", text, re.I)
    if word:
        return word.group(1).lower() == "yes", text.strip()[:160]
    raise ParseError("unparsable judgement", text)


__all__ = ["KINDS", "ToolCalls", "ToolQueries", "VerifyToolSemantics"]

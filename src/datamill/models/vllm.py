"""The vLLM backend: vLLM's async engine in-process, on a CUDA GPU (the ``vllm`` extra).

``vllm:PATH_OR_ID`` starts ``AsyncLLMEngine`` when the run starts; every request goes straight
to the engine, which batches all requests in flight continuously (PagedAttention), so the
runner simply keeps many requests queued (``max_concurrency``, 256 by default). Each request
carries its own sampling settings and seed; ``n`` samples come from one engine request.
Chat requests use the tokenizer's chat template; raw prompts (Magpie) go in untouched;
``Request.json_schema`` becomes vLLM's structured-output (guided decoding) parameter.

Without a GPU or without vLLM installed, :meth:`VLLMModel.start` fails with one line
(``ModelUnavailable`` / ``MissingDependency``) before any row is sent.

Deliberately not here: serving over HTTP (run ``vllm serve`` and use the ``openai`` backend),
LoRA adapters, multi-node setups.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from ..errors import ConfigError, MissingDependency, ModelError, ModelUnavailable
from .base import (
    BackendOptions,
    Capabilities,
    Completion,
    Model,
    ModelInfo,
    Request,
    finish_reason_of,
)

_ids = itertools.count()


class VLLMModel(Model):
    """``VLLMModel(model, **options)``: options as :class:`VLLMModel.Options`."""

    backend = "vllm"
    CAPABILITIES = Capabilities(
        local=True,
        gpu=True,
        renders_chat=True,  # the tokenizer's chat template, applied here
        raw_prompt=True,
        structured=("json_schema",),  # guided decoding (when this vLLM version has it)
        n=True,  # one engine request, the prompt read once
        embeddings=False,
        tools=False,
        reasoning=False,
        threads_option=None,
        local_files=True,
    )
    SPEC_KEYS = ("model",)

    class Options(BackendOptions):
        """``vllm`` options."""

        revision: str | None = None
        """hub revision (branch, tag or commit)"""
        dtype: str = "auto"
        """weights' dtype, as vLLM names it"""
        max_concurrency: Annotated[int, Field(ge=1)] = 256
        """requests kept queued at the engine"""
        max_model_len: Annotated[int, Field(ge=1)] | None = None
        """context length (default: the model's)"""
        gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
        """share of the GPU's memory vLLM may take"""
        tensor_parallel_size: Annotated[int, Field(ge=1)] = 1
        """GPUs one model is split over"""
        chat_template: str | None = None
        """a Jinja chat template instead of the tokenizer's"""
        trust_remote_code: bool = False
        """run the model repository's own code"""
        seed: int = 0
        """the engine's seed"""
        engine_args: dict[str, Any] | None = None
        """further ``AsyncEngineArgs`` fields, passed as given"""

    def __init__(self, model: str | Path, **options: Any) -> None:
        if not str(model).strip():
            raise ConfigError("the vllm backend needs a model: vllm:PATH_OR_HUB_ID")
        o: VLLMModel.Options = self.parse_options(options)
        revision, dtype, max_concurrency = o.revision, o.dtype, o.max_concurrency
        max_model_len, gpu_memory_utilization = o.max_model_len, o.gpu_memory_utilization
        tensor_parallel_size, chat_template = o.tensor_parallel_size, o.chat_template
        trust_remote_code, seed, engine_args = o.trust_remote_code, o.seed, o.engine_args
        self.source = str(model)
        self.engine_options: dict[str, Any] = {
            "model": self.source,
            "revision": revision,
            "dtype": dtype,
            "max_model_len": max_model_len,
            "gpu_memory_utilization": gpu_memory_utilization,
            "tensor_parallel_size": tensor_parallel_size,
            "trust_remote_code": trust_remote_code,
            "seed": seed,
            **(engine_args or {}),
        }
        self.engine: Any = None
        self.tokenizer: Any = None
        self._template = chat_template
        self._guided: Any = None  # builds the structured-output parameter for this vLLM version
        local = Path(self.source).expanduser()
        if local.is_dir():
            from .transformers import _folder_identity

            identity = f"vllm:{_folder_identity(local)}"
        else:
            identity = f"vllm:{self.source}@{revision or 'main'}"
        self._info = ModelInfo(
            name=local.name if local.is_dir() else self.source.rsplit("/", 1)[-1],
            identity=identity,
            max_concurrency=max_concurrency,
            raw_prompt=True,
            json_schema=True,
            chat_template=chat_template,
            capabilities=self.capabilities(),
        )

    @classmethod
    def from_spec(cls, arg: str | None, **options: Any) -> VLLMModel:
        model = arg or options.pop("model", None)
        if not model:
            raise ConfigError("the vllm backend needs a model: vllm:PATH_OR_HUB_ID")
        return cls(model, **options)

    @property
    def info(self) -> ModelInfo:
        return self._info

    async def start(self) -> None:
        if self.engine is not None:
            return
        try:
            import torch
        except ImportError as exc:
            raise MissingDependency("the vllm backend (torch missing)", "vllm") from exc
        if not torch.cuda.is_available():
            raise ModelUnavailable(
                "the vllm backend needs a CUDA GPU and none is visible; use llamacpp or transformers on this machine"
            )
        try:
            from vllm import AsyncEngineArgs, AsyncLLMEngine
        except ImportError as exc:
            raise MissingDependency(f"the vllm backend ({exc.name} missing)", "vllm") from exc
        self._guided = _structured_output_builder()
        self._info.json_schema = self._guided is not None
        if self._guided is None:  # this vLLM version has no structured output
            self._info.capabilities = replace(self._info.capabilities, structured=())
        options = {k: v for k, v in self.engine_options.items() if v is not None}
        try:
            self.engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**options))
        except Exception as exc:  # vLLM raises many kinds for bad models / not enough memory
            raise ModelUnavailable(
                f"vLLM cannot start {self.source!r}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
            ) from exc
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(
            self.source,
            revision=self.engine_options["revision"],
            trust_remote_code=self.engine_options["trust_remote_code"],
        )
        if self._template is None:
            self._template = getattr(self.tokenizer, "chat_template", None) or None
            self._info.chat_template = self._template

    async def close(self) -> None:
        if self.engine is not None:
            shutdown = getattr(self.engine, "shutdown", None)
            if callable(shutdown):
                result = shutdown()
                if asyncio.iscoroutine(result):
                    await result
            self.engine = None

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is None:
            return super().count_tokens(text)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_text(self, request: Request) -> str:
        """The text the engine sees: the raw prompt, or the chat rendered by the template."""
        if request.prompt is not None:
            return request.prompt
        if not self._template:
            raise ModelUnavailable(
                f"{self.source} has no chat template: set the chat_template option, or send raw prompts"
            )
        text: str = self.tokenizer.apply_chat_template(
            list(request.messages or ()),
            chat_template=self._template,
            tokenize=False,
            add_generation_prompt=True,
        )
        return text

    def sampling_params(self, request: Request) -> Any:
        from vllm import SamplingParams

        kwargs: dict[str, Any] = {
            "n": request.n,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
            "seed": request.seed,
            "stop": list(request.stop) or None,
        }
        try:
            from vllm.sampling_params import RequestOutputKind

            kwargs["output_kind"] = RequestOutputKind.FINAL_ONLY  # no streaming deltas to build
        except ImportError:  # pragma: no cover - older vLLM
            pass
        if request.json_schema is not None and self._guided is not None:
            kwargs.update(self._guided(request.json_schema))
        return SamplingParams(**kwargs)

    async def generate(self, request: Request) -> list[Completion]:
        if self.engine is None:
            await self.start()
        prompt = self.prompt_text(request)
        request_id = f"datamill-{next(_ids)}"
        final = None
        try:
            async for output in self.engine.generate(
                prompt, self.sampling_params(request), request_id
            ):
                final = output
        except asyncio.CancelledError:
            abort = getattr(self.engine, "abort", None)
            if callable(abort):
                result = abort(request_id)
                if asyncio.iscoroutine(result):
                    await result
            raise
        except ValueError as exc:  # e.g. the prompt is longer than max_model_len
            reason = (
                "request too long"
                if "longer than" in str(exc) or "max_model_len" in str(exc)
                else "bad request"
            )
            raise ModelError(f"vLLM refused the request: {exc}", reason=reason) from exc
        if final is None or not final.outputs:
            raise ModelError("vLLM returned no output", retryable=True, reason="empty response")
        prompt_tokens = len(final.prompt_token_ids or ())
        return [
            Completion(
                text=o.text,
                # vLLM: "stop" | "length" | "abort"; a final output without one is unknown
                finish_reason=finish_reason_of(o.finish_reason, missing="other"),
                prompt_tokens=prompt_tokens if i == 0 else 0,
                completion_tokens=len(o.token_ids),
            )
            for i, o in enumerate(sorted(final.outputs, key=lambda o: o.index))
        ]


def _structured_output_builder() -> Any:
    """``schema -> SamplingParams kwargs`` for this vLLM version (the API was renamed)."""
    try:
        from vllm.sampling_params import StructuredOutputsParams

        return lambda schema: {"structured_outputs": StructuredOutputsParams(json=schema)}
    except ImportError:
        pass
    try:
        from vllm.sampling_params import GuidedDecodingParams

        return lambda schema: {"guided_decoding": GuidedDecodingParams(json=schema)}
    except ImportError:  # pragma: no cover - very old vLLM
        return None

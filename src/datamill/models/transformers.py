"""The transformers backend: any causal LM that ``transformers`` loads, on CPU or GPU, batched.

``transformers:PATH_OR_ID`` loads the tokenizer and the model (``AutoModelForCausalLM``) when the
run starts. Concurrent requests are gathered into batches of up to ``max_batch`` sequences and
decoded together by one worker thread with datamill's own sampling loop (left-padded prompts,
a shared KV cache), so each sequence keeps *its own* temperature, top-p, ``max_tokens``, stop
strings and seed: a seeded request samples the same tokens whatever else shares its batch.

Chat requests use the tokenizer's chat template (or the ``chat_template`` option) with the
generation prompt added; raw prompts (``Request.prompt``, Magpie) are tokenized untouched.

Deliberately not here: constrained decoding (``json_schema`` is not honoured; ModelInfo says so),
beam search, continuous batching (sequences join at batch boundaries), quantisation. Hub ids
download only when the machine has a network; offline, give a local folder.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from ..errors import ConfigError, MissingDependency, ModelError, ModelUnavailable
from .base import (
    BackendOptions,
    Capabilities,
    Completion,
    FinishReason,
    Model,
    ModelInfo,
    Request,
)


@dataclass
class _Sequence:
    """One sample being decoded: a request's prompt and its sampling settings."""

    ids: list[int]
    temperature: float
    top_p: float
    max_tokens: int
    stop: tuple[str, ...]
    seed: int


class TransformersModel(Model):
    """``TransformersModel(model, **options)``: options as :class:`TransformersModel.Options`."""

    backend = "transformers"
    CAPABILITIES = Capabilities(
        local=True,
        gpu=False,  # CPU or GPU, whichever is there
        renders_chat=True,  # the tokenizer's chat template, applied here
        raw_prompt=True,
        structured=(),  # no constrained decoding
        n=False,  # n samples decode as n sequences
        embeddings=False,
        tools=False,
        reasoning=False,
        threads_option=None,
        local_files=True,
    )
    SPEC_KEYS = ("model",)

    class Options(BackendOptions):
        """``transformers`` options."""

        revision: str | None = None
        """hub revision (branch, tag or commit)"""
        device: str = "auto"
        """``auto`` (CUDA when there is one), ``cpu``, ``cuda``, ``cuda:1``…"""
        dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
        """weights' dtype (``auto``: float32 on CPU, bfloat16/float16 on GPU)"""
        max_batch: Annotated[int, Field(ge=1)] = 8
        """sequences decoded together"""
        max_concurrency: Annotated[int, Field(ge=1)] | None = None
        """requests in flight (default: 2 x max_batch)"""
        chat_template: str | None = None
        """a Jinja chat template instead of the tokenizer's"""
        trust_remote_code: bool = False
        """run the model repository's own code"""
        attn_implementation: str | None = None
        """attention kernel (``sdpa``, ``eager``, ``flash_attention_2``)"""

    def __init__(self, model: str | Path, **options: Any) -> None:
        if not str(model).strip():
            raise ConfigError("the transformers backend needs a model: transformers:PATH_OR_HUB_ID")
        o: TransformersModel.Options = self.parse_options(options)
        revision, device, dtype, max_batch = o.revision, o.device, o.dtype, o.max_batch
        max_concurrency, chat_template = o.max_concurrency, o.chat_template
        trust_remote_code, attn_implementation = o.trust_remote_code, o.attn_implementation
        self.source = str(model)
        self.revision = revision
        self.device_option = device
        self.dtype_option = dtype
        self.max_batch = max_batch
        self.trust_remote_code = trust_remote_code
        self.attn_implementation = attn_implementation
        self.tokenizer: Any = None
        self.model: Any = None
        self.device: Any = None
        self._template = chat_template
        self._eos: set[int] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[tuple[Request, asyncio.Future[list[Completion]]]] = []
        self._batcher: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        local = Path(self.source).expanduser()
        identity = (
            f"transformers:{_folder_identity(local)}"
            if local.is_dir()
            else f"transformers:{self.source}@{revision or 'main'}"
        )
        self._info = ModelInfo(
            name=local.name if local.is_dir() else self.source.rsplit("/", 1)[-1],
            identity=identity,
            max_concurrency=max_concurrency or 2 * max_batch,  # one batch decoding, one gathering
            raw_prompt=True,
            json_schema=False,
            chat_template=chat_template,
            capabilities=self.capabilities(),
        )

    @classmethod
    def from_spec(cls, arg: str | None, **options: Any) -> TransformersModel:
        model = arg or options.pop("model", None)
        if not model:
            raise ConfigError("the transformers backend needs a model: transformers:PATH_OR_HUB_ID")
        return cls(model, **options)

    @property
    def info(self) -> ModelInfo:
        return self._info

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="transformers")
        await asyncio.get_running_loop().run_in_executor(self._pool, self._load)

    def _load(self) -> None:
        if self.model is not None:
            return
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise MissingDependency(
                f"the transformers backend ({exc.name} missing)", "transformers"
            ) from exc
        device = self.device_option
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype: Any = self.dtype_option
        if dtype == "auto":
            dtype = (
                torch.float32
                if device == "cpu"
                else (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
            )
        else:
            dtype = getattr(torch, dtype)
        kwargs: dict[str, Any] = {
            "revision": self.revision,
            "trust_remote_code": self.trust_remote_code,
        }
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.source, **kwargs)
            extra = (
                {"attn_implementation": self.attn_implementation}
                if self.attn_implementation
                else {}
            )
            model = AutoModelForCausalLM.from_pretrained(
                self.source, dtype=dtype, **kwargs, **extra
            )
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelUnavailable(
                f"cannot load transformers model {self.source!r}: {first}"
            ) from exc
        model.to(device).eval()  # type: ignore[arg-type]
        self.device = torch.device(device)
        self.tokenizer = tokenizer
        self.model = model
        eos = [
            tokenizer.eos_token_id,
            *_as_list(getattr(model.generation_config, "eos_token_id", None)),
        ]
        self._eos = {int(t) for t in eos if t is not None}
        if self._template is None:
            self._template = getattr(tokenizer, "chat_template", None) or None
            self._info.chat_template = self._template
        commit = getattr(model.config, "_commit_hash", None)
        if commit and not Path(self.source).expanduser().is_dir():
            self._info.identity = f"transformers:{self.source}@{commit}"

    async def close(self) -> None:
        if self._batcher is not None:
            self._batcher.cancel()
            await asyncio.gather(self._batcher, return_exceptions=True)
            self._batcher = None
        for _, future in self._pending:
            if not future.done():
                future.set_exception(ModelError("the model was closed", reason="model closed"))
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self.model is not None:
            self.model = None
            self.tokenizer = None
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:  # pragma: no cover
                pass

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is None:
            self._load()
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # -- requests → batches -----------------------------------------------------------------------
    async def generate(self, request: Request) -> list[Completion]:
        if self.model is None:
            await self.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Completion]] = loop.create_future()
        self._pending.append((request, future))
        if self._batcher is None or self._batcher.done():
            self._wake = asyncio.Event()
            self._batcher = loop.create_task(self._batch_loop())
        assert self._wake is not None
        self._wake.set()
        return await future

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch: list[tuple[Request, asyncio.Future[list[Completion]]]] = []
                size = 0
                while self._pending and (
                    not batch or size + self._pending[0][0].n <= self.max_batch
                ):
                    request, future = self._pending.pop(0)
                    if future.done():  # the caller gave up
                        continue
                    batch.append((request, future))
                    size += request.n
                if not batch:
                    continue
                try:
                    results = await loop.run_in_executor(
                        self._pool, self._run, [r for r, _ in batch]
                    )
                except BaseException as exc:
                    error = (
                        exc
                        if isinstance(exc, ModelError)
                        else ModelError(
                            f"transformers failed on a batch: {exc}", reason="model error"
                        )
                    )
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)

    def _run(self, requests: list[Request]) -> list[list[Completion] | Exception]:
        """Encode every request, decode all their samples in one batch, regroup per request."""
        sequences: list[_Sequence] = []
        owners: list[int] = []
        results: list[list[Completion] | Exception] = []
        limit = getattr(self.model.config, "max_position_embeddings", None)
        for index, request in enumerate(requests):
            try:
                ids = self._encode(request)
            except ModelError as exc:
                results.append(exc)
                continue
            if limit is not None and len(ids) + request.max_tokens > limit:
                results.append(
                    ModelError(
                        f"prompt of {len(ids)} tokens + max_tokens {request.max_tokens} exceeds the model's {limit} positions",
                        reason="request too long",
                    )
                )
                continue
            base = request.seed if request.seed is not None else random.getrandbits(63)
            for i in range(request.n):
                sequences.append(
                    _Sequence(
                        ids,
                        request.temperature,
                        request.top_p,
                        request.max_tokens,
                        request.stop,
                        base + i,
                    )
                )
                owners.append(index)
            results.append([])
        decoded = self._decode(sequences) if sequences else []
        for owner, (text, finish, n_prompt, n_out) in zip(owners, decoded, strict=True):
            slot = results[owner]
            assert isinstance(slot, list)
            slot.append(
                Completion(
                    text=text,
                    finish_reason=finish,
                    prompt_tokens=n_prompt if not slot else 0,
                    completion_tokens=n_out,
                )
            )
        return results

    def _encode(self, request: Request) -> list[int]:
        if request.prompt is not None:
            text = request.prompt
        else:
            if not self._template:
                raise ModelUnavailable(
                    f"{self.source} has no chat template: set the chat_template option, or send raw prompts"
                )
            text = self.tokenizer.apply_chat_template(
                list(request.messages or ()),
                chat_template=self._template,
                tokenize=False,
                add_generation_prompt=True,
            )
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ModelError("the prompt encodes to no tokens", reason="empty prompt")
        return list(ids)

    def _decode(self, sequences: list[_Sequence]) -> list[tuple[str, FinishReason, int, int]]:
        """Sample all sequences together; return (text, finish reason, prompt tokens, new tokens)."""
        import torch

        device = self.device
        width = max(len(s.ids) for s in sequences)
        pad = (
            self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else next(iter(self._eos), 0)
        )
        input_ids = torch.tensor(
            [[pad] * (width - len(s.ids)) + s.ids for s in sequences], device=device
        )
        mask = torch.tensor(
            [[0] * (width - len(s.ids)) + [1] * len(s.ids) for s in sequences], device=device
        )
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        generators = [
            torch.Generator(device=device).manual_seed(s.seed % (2**63)) for s in sequences
        ]
        temperature = torch.tensor(
            [max(s.temperature, 1e-6) for s in sequences], device=device
        ).unsqueeze(1)
        out: list[list[int]] = [[] for _ in sequences]
        finish: list[FinishReason | None] = [None] * len(sequences)
        cache = None
        step_ids, step_pos = input_ids, positions
        with torch.inference_mode():
            for _ in range(max(s.max_tokens for s in sequences)):
                result = self.model(
                    input_ids=step_ids,
                    attention_mask=mask,
                    position_ids=step_pos,
                    past_key_values=cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
                cache = result.past_key_values
                logits = result.logits[:, -1, :].float()
                probs = torch.softmax(logits / temperature, dim=-1)
                chosen: list[int] = []
                for i, s in enumerate(sequences):
                    if finish[i] is not None:
                        chosen.append(pad)
                        continue
                    token = (
                        int(logits[i].argmax())
                        if s.temperature <= 0
                        else _sample(probs[i], s.top_p, generators[i])
                    )
                    chosen.append(token)
                    if token in self._eos:
                        finish[i] = "stop"
                        continue
                    out[i].append(token)
                    if (
                        s.stop
                        and _stop_at(
                            self.tokenizer.decode(out[i], skip_special_tokens=True), s.stop
                        )
                        is not None
                    ):
                        finish[i] = "stop"
                    elif len(out[i]) >= s.max_tokens:
                        finish[i] = "length"
                if all(f is not None for f in finish):
                    break
                step_ids = torch.tensor(chosen, device=device).unsqueeze(1)
                step_pos = step_pos[:, -1:] + 1
                mask = torch.cat(
                    [mask, torch.ones((len(sequences), 1), dtype=mask.dtype, device=device)], dim=1
                )
        decoded: list[tuple[str, FinishReason, int, int]] = []
        for i, s in enumerate(sequences):
            text = self.tokenizer.decode(out[i], skip_special_tokens=True)
            cut = _stop_at(text, s.stop) if s.stop else None
            if cut is not None:
                text = text[:cut]
            decoded.append((text, finish[i] or "length", len(s.ids), len(out[i])))
        return decoded


def _sample(probs: Any, top_p: float, generator: Any) -> int:
    """One token from ``probs`` (already tempered), keeping the smallest set with mass ``top_p``."""
    import torch

    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < top_p  # always keeps the top token
        sorted_probs = sorted_probs * keep
        pick = torch.multinomial(sorted_probs, 1, generator=generator)
        return int(order[pick])
    return int(torch.multinomial(probs, 1, generator=generator))


def _stop_at(text: str, stops: tuple[str, ...]) -> int | None:
    """Index of the earliest stop string in ``text``, if any."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _folder_identity(folder: Path) -> str:
    """Folder name + a hash of its config and the sizes and heads of its weight files."""
    digest = hashlib.sha256()
    config = folder / "config.json"
    if config.exists():
        digest.update(config.read_bytes())
    for weights in sorted([*folder.glob("*.safetensors"), *folder.glob("*.bin")]):
        digest.update(f"{weights.name}:{weights.stat().st_size}".encode())
        with weights.open("rb") as fh:
            digest.update(fh.read(1 << 20))
    return f"{folder.name}:{digest.hexdigest()[:16]}"

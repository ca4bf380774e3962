"""The vLLM backend: real generation where a CUDA GPU and vLLM are present; a clean refusal elsewhere."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

import pytest

from datamill import Request
from datamill.errors import ConfigError, MissingDependency, ModelUnavailable
from datamill.models.registry import load_model
from datamill.models.vllm import VLLMModel


def gpu_and_vllm() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def test_spec_builds_without_importing_vllm(tmp_path: Path) -> None:
    model = load_model(
        "vllm:HuggingFaceTB/SmolLM2-135M-Instruct", max_concurrency=64, gpu_memory_utilization=0.5
    )
    assert isinstance(model, VLLMModel)
    assert model.info.identity == "vllm:HuggingFaceTB/SmolLM2-135M-Instruct@main"
    assert model.info.max_concurrency == 64 and model.info.raw_prompt
    with pytest.raises(ConfigError, match="gpu_memory_utilization"):
        load_model("vllm:x", gpu_memory_utilization=1.5)
    with pytest.raises(ConfigError, match="needs a model"):
        load_model("vllm")


@pytest.mark.skipif(gpu_and_vllm(), reason="this machine can run vLLM")
def test_without_a_gpu_or_vllm_start_fails_with_one_line() -> None:
    model = load_model("vllm:HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises((ModelUnavailable, MissingDependency)) as info:
        asyncio.run(model.start())
    message = str(info.value)
    assert "\n" not in message
    assert "CUDA GPU" in message or "pip install 'datamill[vllm]'" in message


@pytest.mark.gpu
@pytest.mark.skipif(
    not gpu_and_vllm(), reason="needs a CUDA GPU and vLLM (pip install 'datamill[vllm]')"
)
def test_generates_on_the_gpu(tmp_path: Path) -> None:
    from test_transformers_backend import build_tiny_llama

    folder = build_tiny_llama(
        tmp_path / "tiny", hidden=256, heads=4
    )  # head size 64: every attention backend
    model = load_model(
        f"vllm:{folder}",
        gpu_memory_utilization=0.3,
        max_model_len=256,
        engine_args={"enforce_eager": True},
    )
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}

    async def go() -> tuple:
        await model.start()
        try:
            return tuple(
                await asyncio.gather(
                    model.generate(
                        Request.chat("the river", max_tokens=8, seed=1, n=3, temperature=1.0)
                    ),
                    model.generate(
                        Request.chat("the river", max_tokens=8, seed=1, n=3, temperature=1.0)
                    ),
                    model.generate(
                        Request(prompt="<|im_start|>user\n", max_tokens=8, temperature=0.0)
                    ),
                    model.generate(
                        Request.chat(
                            "json please", max_tokens=32, json_schema=schema, temperature=0.0
                        )
                    ),
                )
            )
        finally:
            await model.close()

    sampled, again, raw, structured = asyncio.run(go())
    assert len(sampled) == 3 and [c.text for c in sampled] == [c.text for c in again]
    assert all(0 < c.completion_tokens <= 8 for c in sampled)
    assert raw[0].prompt_tokens == 3
    if structured[0].finish_reason == "stop":
        assert isinstance(json.loads(structured[0].text)["a"], int)

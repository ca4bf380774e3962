"""The transformers backend on a tiny random Llama built here (offline): real batched decoding."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from datamill import Pipeline, Request, TextGeneration
from datamill.errors import ConfigError, ModelUnavailable
from datamill.models.base import Completion
from datamill.models.registry import load_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.timeout(300)

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "the river runs past the old mill and the garden",
    "write a short note about planets, recipes and music",
    "explain how a budget works for a small school",
    "user assistant system question answer example",
] * 20


def build_tiny_llama(folder: Path, hidden: int = 64, heads: int = 4) -> Path:
    """A 2-layer Llama with a byte-level BPE tokenizer trained on a few sentences, saved to ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def generate_all(model: Any, requests: list[Request]) -> list[list[Completion]]:
    async def go() -> list[list[Completion]]:
        await model.start()
        try:
            return list(await asyncio.gather(*(model.generate(r) for r in requests)))
        finally:
            await model.close()

    return asyncio.run(go())


def test_loads_offline_and_reports_its_template_and_identity(tiny_model: Path) -> None:
    model = load_model(f"transformers:{tiny_model}", max_batch=4)
    assert model.info.max_concurrency == 8 and model.info.raw_prompt and not model.info.json_schema
    assert model.info.identity.startswith(f"transformers:{tiny_model.name}:")
    [[c]] = generate_all(model, [Request.chat("write a note", max_tokens=5, seed=1)])
    assert model.info.chat_template == CHATML
    assert 0 < c.completion_tokens <= 5 and c.prompt_tokens > 5
    assert c.finish_reason == ("length" if c.completion_tokens == 5 else "stop")


def test_greedy_output_does_not_depend_on_batch_companions(tiny_model: Path) -> None:
    short = Request.chat("the river", max_tokens=12, temperature=0.0)
    long = Request.chat(
        "write a short note about planets, recipes and music for a school budget",
        max_tokens=6,
        temperature=0.0,
    )
    [[alone]] = generate_all(load_model(f"transformers:{tiny_model}"), [short])
    together = generate_all(load_model(f"transformers:{tiny_model}"), [short, long])
    assert together[0][0].text == alone.text  # left padding and positions handled
    assert together[1][0].completion_tokens <= 6


def test_seeded_samples_repeat_and_differ_across_seeds(tiny_model: Path) -> None:
    model = load_model(f"transformers:{tiny_model}", max_batch=16)
    a = Request.chat("explain music", max_tokens=10, temperature=1.0, seed=42, n=3)
    b = Request.chat("explain music", max_tokens=10, temperature=1.0, seed=7)
    first, second, other = generate_all(model, [a, a.with_options(max_tokens=10), b])
    assert [c.text for c in first] == [c.text for c in second]  # same seed, same samples
    assert len(first) == 3 and len({c.text for c in first}) > 1  # n samples are distinct
    assert other[0].text != first[0].text


def test_raw_prompt_and_stop_strings(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    prompt = "<|im_start|>user\n"
    [[free]] = generate_all(
        load_model(f"transformers:{tiny_model}"),
        [Request(prompt=prompt, max_tokens=16, temperature=0.0)],
    )
    raw_ids = AutoTokenizer.from_pretrained(tiny_model)(prompt, add_special_tokens=False)[
        "input_ids"
    ]
    assert free.prompt_tokens == len(raw_ids) == 3  # <|im_start|> user \n: no template around it
    text = free.text
    windows = [
        i
        for i in range(1, len(text) - 1)
        if text[i : i + 2].isascii() and text[i : i + 2].isalpha()
    ]
    if not windows:
        pytest.skip("the random model wrote no two ASCII letters in a row; nothing to cut at")
    stop = text[windows[0] : windows[0] + 2]
    [[cut]] = generate_all(
        load_model(f"transformers:{tiny_model}"),
        [Request(prompt=prompt, max_tokens=16, temperature=0.0, stop=(stop,))],
    )
    assert cut.text == text[: text.index(stop)] and cut.finish_reason == "stop"
    assert cut.completion_tokens < free.completion_tokens


def test_a_pipeline_runs_on_the_transformers_backend(tiny_model: Path, tmp_path: Path) -> None:
    p = Pipeline(
        [TextGeneration(output="answer", max_tokens=6, truncated="keep")],
        source=[{"instruction": f"question {i}"} for i in range(5)],
        models={"default": {"spec": f"transformers:{tiny_model}", "max_batch": 4}},
    )
    result = p.run(tmp_path / "out")
    assert len(result.rows) + result.stats.failed_rows == 5
    assert result.stats.model_calls == 5
    assert set(result.stats.failures) <= {"empty completion"}  # a random model may stop at once


def test_too_long_prompts_fail_alone(tiny_model: Path) -> None:
    ok, too_long = Request.chat("hi", max_tokens=4), Request.chat("word " * 600, max_tokens=4)
    model = load_model(f"transformers:{tiny_model}")

    async def go() -> tuple[Any, Any]:
        await model.start()
        try:
            return tuple(
                await asyncio.gather(
                    model.generate(ok), model.generate(too_long), return_exceptions=True
                )
            )
        finally:
            await model.close()

    good, bad = asyncio.run(go())
    assert isinstance(good, list) and len(good) == 1
    assert getattr(bad, "reason", None) == "request too long"


def test_missing_folder_and_bad_options_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_batch"):
        load_model(f"transformers:{tmp_path}", max_batch=0)
    with pytest.raises(ConfigError, match="needs a model"):
        load_model("transformers")
    model = load_model(f"transformers:{tmp_path / 'nothing-here'}")
    with pytest.raises(ModelUnavailable, match="cannot load transformers model"):
        asyncio.run(model.start())

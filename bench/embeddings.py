"""bench/embeddings: the default embedder's cold start, numpy vs sentence-transformers.

A run's quality report embeds a sample of rows with all-MiniLM-L6-v2. Each engine runs in a
fresh process, as a run would start: import the backend, load the weights, embed 200 short
texts, then embed them again (warm, the steady-state speed). The engines alternate, each run
``--repeats`` times, and the table shows the median of each phase plus the whole process as
the parent saw it (interpreter start included). The two engines' vectors are compared too
(minimum cosine per text). Usage::

    python bench/embeddings.py                # 200 texts, 3 processes per engine
    python bench/embeddings.py --texts 1000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENGINES = {"numpy": "datamill numpy (minilm)", "st": "sentence-transformers + torch"}

SUBJECTS = "bread,volcanoes,binary search,the French Revolution,photosynthesis,tax returns,chess openings,sourdough,black holes,Python decorators,marathon training,jazz harmony,SQL joins,the Roman Empire,climate models,knitting,compound interest,React hooks,bird migration,Kant"
FORMS = [
    "How do I get started with {}?",
    "Explain {} to a ten-year-old.",
    "Write a short poem about {}.",
    "What are three common mistakes people make with {}?",
    "Summarize the history of {} in two sentences.",
    "Compare {} and {} in a table.",
    "Give me a step-by-step plan to learn {} in a month, with one exercise per week.",
    "Why is {} important?",
    "List five facts about {}.",
    "Write a tweet about {}.",
]


def texts(n: int) -> list[str]:
    subjects = SUBJECTS.split(",")
    out = []
    for i in range(n):
        form = FORMS[i % len(FORMS)]
        a, b = subjects[i % len(subjects)], subjects[(i * 7 + 3) % len(subjects)]
        out.append(form.format(a, b))
    return out


def child(engine: str, n: int, vectors_path: Path) -> None:
    t0 = time.perf_counter()
    import numpy as np

    from datamill.models import embeddings

    path = str(embeddings.minilm_path())
    if engine == "numpy":
        import datamill.models.minilm_numpy as backend  # noqa: F401  (tokenizers, safetensors)

        embedder = embeddings.load_embedder("minilm")
        load = embedder.backend  # type: ignore[attr-defined]
    else:
        import sentence_transformers  # noqa: F401  (torch, transformers)

        embedder = embeddings.SentenceTransformerEmbedder(path)
        load = embedder.model  # type: ignore[attr-defined]
    t1 = time.perf_counter()
    load()
    t2 = time.perf_counter()
    batch = texts(n)
    first = embedder.embed_blocking(batch)
    t3 = time.perf_counter()
    embedder.embed_blocking(batch)
    t4 = time.perf_counter()
    np.save(vectors_path, first)
    print(
        json.dumps(
            {
                "import": t1 - t0,
                "load": t2 - t1,
                "embed": t3 - t2,
                "cold": t3 - t0,
                "warm": t4 - t3,
                "cpu": time.process_time(),
                "torch": "torch" in sys.modules,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engine", choices=list(ENGINES), help=argparse.SUPPRESS)
    parser.add_argument("--vectors", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        child(args.engine, args.texts, args.vectors)
        return
    import numpy as np

    load_before = os.getloadavg()[0]
    env = dict(
        os.environ,
        PYTHONPATH=str(HERE.parent / "src"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    runs: dict[str, list[dict[str, float]]] = {e: [] for e in ENGINES}
    with tempfile.TemporaryDirectory() as tmp:
        vectors = {e: Path(tmp) / f"{e}.npy" for e in ENGINES}
        for _ in range(args.repeats):
            for engine in ENGINES:
                t0 = time.perf_counter()
                done = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--engine",
                        engine,
                        "--texts",
                        str(args.texts),
                        "--vectors",
                        str(vectors[engine]),
                    ],
                    capture_output=True,
                    text=True,
                    env=env,
                )
                if done.returncode != 0:
                    raise SystemExit(f"{engine} failed:\n{done.stderr[-3000:]}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                result["process"] = time.perf_counter() - t0
                runs[engine].append(result)
        a, b = np.load(vectors["numpy"]), np.load(vectors["st"])
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    print(
        f"load average {load_before:.1f} → {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {args.texts} texts; median of {args.repeats} fresh processes per engine (seconds)"
    )
    phases = ["import", "load", "embed", "cold", "warm", "process", "cpu"]
    labels = {
        "import": "import backend",
        "load": "load weights",
        "embed": f"embed {args.texts} (first)",
        "cold": "cold start + embed",
        "warm": f"embed {args.texts} again",
        "process": "process wall, all",
        "cpu": "process CPU",
    }
    print(f"{'':24}" + "".join(f"{ENGINES[e]:>32}" for e in ENGINES))
    for phase in phases:
        cells = "".join(f"{statistics.median(r[phase] for r in runs[e]):>32.2f}" for e in ENGINES)
        print(f"{labels[phase]:24}{cells}")
    print(f"{'torch imported':24}" + "".join(f"{str(runs[e][0]['torch']):>32}" for e in ENGINES))
    print(
        f"vectors: min cosine {cos.min():.7f}, max |difference| {np.abs(a - b).max():.2e}, shapes {a.shape} / {b.shape}, {a.dtype} / {b.dtype}"
    )


if __name__ == "__main__":
    main()

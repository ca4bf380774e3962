"""The quality report: metrics, what every run writes, robustness, and ``datamill report``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datamill import FakeModel, FormatSFT, Pipeline, TextGeneration, step
from datamill.cli import main
from datamill.report import build_report, card_section, metrics, to_json
from datamill.report.build import rating_columns, text_fields

PNG = b"\x89PNG\r\n\x1a\n"


# -- metrics --------------------------------------------------------------------------------------
def test_distinct_n_counts_unique_ngrams_over_all_ngrams() -> None:
    assert metrics.distinct_n(["a b a b"], 1) == 0.5
    assert metrics.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert metrics.distinct_n(["a b", "c d"], 1) == 1.0
    assert metrics.distinct_n(["one"], 2) is None


def test_rouge_self_overlap_of_copies_and_of_strangers() -> None:
    assert metrics.rouge_self_overlap(["the same words here"] * 5)["mean"] == 1.0  # type: ignore[index]
    assert metrics.rouge_self_overlap(["alpha beta", "gamma delta", "epsilon zeta"])["mean"] == 0.0  # type: ignore[index]
    assert metrics.rouge_self_overlap(["lonely"]) is None
    many = metrics.rouge_self_overlap([f"text number {i}" for i in range(100)], pairs=50)
    assert many["pairs"] == 50 and many["mean"] == pytest.approx(2 * 2 / 6, abs=1e-4)  # type: ignore[index]


def test_mean_pairwise_cosine() -> None:
    assert metrics.mean_pairwise_cosine(np.eye(4))["mean"] == 0.0  # type: ignore[index]
    same = metrics.mean_pairwise_cosine(np.ones((3, 5)))
    assert same["mean"] == pytest.approx(1.0) and same["pairs"] == 3  # type: ignore[index]


def test_histograms_of_ratings_and_of_scores() -> None:
    assert metrics.histogram([1, 2, 2, 5]) == {"1": 1, "2": 2, "5": 1}
    spread = metrics.histogram([0.5 * i for i in range(40)], bins=4)
    assert sum(spread.values()) == 40 and len(spread) == 4


def test_text_fields_of_the_common_layouts() -> None:
    sft = [
        {
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
            ]
        }
    ]
    assert text_fields(sft) == {"instruction": ["q"], "response": ["a"]}
    dpo = [
        {
            "prompt": "p",
            "chosen": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "good"}],
            "rejected": "bad",
        }
    ]
    assert text_fields(dpo) == {"prompt": ["p"], "chosen": ["p\ngood"], "rejected": ["bad"]}
    assert text_fields([{"question": "q", "answer": "a", "n": 1}]) == {
        "instruction": ["q"],
        "response": ["a"],
    }
    assert text_fields([{"text": "t", "n": 1}]) == {"text": ["t"]}


def test_rating_columns_are_found_by_name() -> None:
    rows = [{"ratings": [1, 4], "chosen_rating": 4, "deita_score": 6.5, "row": 3, "ok": True}]
    assert rating_columns(rows) == {
        "ratings": [1.0, 4.0],
        "chosen_rating": [4.0],
        "deita_score": [6.5],
    }


def test_a_diverse_dataset_scores_as_more_diverse_than_a_repetitive_one() -> None:
    asks = [
        "Explain how photosynthesis turns sunlight into chemical energy.",
        "Write a haiku about the first snowfall of winter.",
        "What are the main causes of inflation in an economy?",
        "Give me three tips for keeping a sourdough starter alive.",
        "How does binary search find an element in a sorted list?",
        "Summarize the plot of Romeo and Juliet in two sentences.",
        "Which muscles does a push-up work?",
        "Draft a polite email asking my landlord to fix a leaking tap.",
        "Suggest a weekend itinerary for a first visit to Lisbon.",
        "Create a riddle whose answer is an umbrella.",
    ]
    diverse = [{"instruction": a, "response": "x"} for a in asks]
    repetitive = [
        {
            "instruction": f"Explain how photosynthesis turns sunlight into energy, part {i}.",
            "response": "x",
        }
        for i in range(10)
    ]
    d, r = (
        build_report(diverse, embedder="hash:256")["diversity"],
        build_report(repetitive, embedder="hash:256")["diversity"],
    )
    assert d["distinct_2"] > r["distinct_2"]
    assert d["rouge_l_self"] < r["rouge_l_self"]
    assert d["embedding_similarity"] < r["embedding_similarity"]


# -- what every run writes ---------------------------------------------------------------------
def run_basic(tmp_path: Path, **kwargs: object) -> Path:
    @step(reads=["question"])
    def no_sevens(row: dict) -> dict | None:
        return None if "7" in row["instruction"] else row

    p = Pipeline(
        [
            TextGeneration(output="question"),
            no_sevens,
            TextGeneration(template="{{ question }}", output="response"),
            FormatSFT(instruction="question"),
        ],
        source=[{"instruction": f"seed {i}", "rating": i % 3 + 1} for i in range(12)],
        models={"default": FakeModel()},
        name="demo",
    )
    p.run(tmp_path / "out", **kwargs)  # type: ignore[arg-type]
    return tmp_path / "out"


def test_every_run_writes_report_json_plot_and_card_section(tmp_path: Path) -> None:
    out = run_basic(tmp_path)
    report = json.loads((out / "report.json").read_text())
    run = json.loads((out / "run.json").read_text())
    assert report["rows"] == run["rows"] == 11
    assert [s["step"] for s in report["steps"]] == list(run["steps"])
    lost = next(s for s in report["steps"] if s["step"] == "function")
    assert lost == {
        "step": "function",
        "rows_in": 12,
        "rows_out": 11,
        "lost": 1,
        "reasons": {"dropped by function": 1},
    }
    assert report["losses"] == {"dropped by function": 1}
    assert set(report["fields"]) == {"instruction", "response"}
    instr = report["fields"]["instruction"]
    assert instr["count"] == 11 and 0 < instr["distinct_1"] <= 1 and instr["words"]["median"] > 0
    assert report["ratings"]["rating"]["histogram"] == {"1": 4, "2": 3, "3": 4}
    assert "embedding similarity skipped: DATAMILL_REPORT_EMBEDDINGS=0" in report["notes"]
    assert report["errors"] == {}
    assert (out / "report.png").read_bytes().startswith(PNG) and report["plot"] == "report.png"
    card = (out / "README.md").read_text()
    assert "## Quality report" in card and "![quality report](report.png)" in card
    assert (
        f"| instruction | 11 | {instr['words']['median']:.0f} | {instr['distinct_1']:.3f} |" in card
    )


def test_embedding_similarity_in_the_run_report_when_enabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datamill.models import embeddings

    monkeypatch.setenv("DATAMILL_REPORT_EMBEDDINGS", "1")
    monkeypatch.setattr(embeddings, "DEFAULT_EMBEDDER", "hash:64")
    monkeypatch.setattr(embeddings, "minilm_available", lambda: True)
    monkeypatch.setitem(embeddings._EMBEDDERS, "minilm", embeddings.HashEmbedder(64))
    report = json.loads((run_basic(tmp_path) / "report.json").read_text())
    sim = report["fields"]["instruction"]["embedding_similarity"]
    assert sim["pairs"] == 55 and -1 <= sim["mean"] <= 1 and sim["sample"] == 11
    assert report["diversity"]["embedding_similarity"] == sim["mean"]


def test_a_failing_metric_is_noted_and_the_dataset_still_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datamill.report import plots

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("metric exploded")

    monkeypatch.setattr(metrics, "distinct_n", broken)
    monkeypatch.setattr(plots, "draw", broken)
    out = run_basic(tmp_path)
    report = json.loads((out / "report.json").read_text())
    assert report["errors"]["instruction.distinct_1"] == "RuntimeError: metric exploded"
    assert report["errors"]["plot"] == "RuntimeError: metric exploded"
    assert report["fields"]["instruction"]["rouge_l_self"] is not None  # the others still ran
    assert (out / "data" / "train-00000-of-00001.parquet").exists() and (out / "run.json").exists()
    assert "not computed: plot" in (out / "README.md").read_text()


def test_an_empty_dataset_still_gets_a_report(tmp_path: Path) -> None:
    p = Pipeline(
        [step(reads=["x"])(lambda r: None)], source=[{"x": 1}], models={"default": FakeModel()}
    )
    p.run(tmp_path / "out")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["rows"] == 0 and report["fields"] == {} and report["errors"] == {}


def test_card_section_and_json_drop_plot_arrays() -> None:
    report = build_report(
        [{"instruction": "a b c", "response": "d e"}, {"instruction": "a b d", "response": "f"}],
        embedder="hash:32",
    )
    data = to_json(report)
    assert (
        "_lengths" not in data["fields"]["instruction"]
        and "values" not in data["fields"]["instruction"]["embedding_similarity"]
    )
    json.dumps(data)
    assert "| response | 2 |" in card_section(data)


# -- the command ----------------------------------------------------------------------------------
def test_report_command_prints_the_stored_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_basic(tmp_path)
    main(["report", str(out)])
    text = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert (
        "demo: 11 rows" in text and f"{report['fields']['instruction']['distinct_2']:.3f}" in text
    )
    assert "1 dropped by function" in text and "ratings rating" in text
    main(["report", str(out), "--json"])
    assert json.loads(capsys.readouterr().out)["rows"] == 11


def test_report_command_computes_for_any_dataset_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "plain.jsonl"
    path.write_text(
        "".join(
            json.dumps({"prompt": f"question {i}", "completion": f"answer {i % 2}"}) + "\n"
            for i in range(6)
        )
    )
    main(["report", str(path), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["rows"] == 6 and data["fields"]["response"]["distinct_1"] == pytest.approx(3 / 12)
    assert not (tmp_path / "report.json").exists()


def test_report_command_recomputes_and_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_basic(tmp_path)
    (out / "report.json").unlink()
    (out / "report.png").unlink()
    main(["report", str(out), "--write"])
    assert json.loads((out / "report.json").read_text())["steps"]  # run.json's counters came back
    assert (out / "report.png").exists()
    assert "demo: 11 rows" in capsys.readouterr().out


def test_report_command_on_a_missing_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["report", str(tmp_path / "nope")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("error:") and "no such file or folder" in err and len(err.splitlines()) == 1
    )

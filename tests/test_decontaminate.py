"""Benchmark decontamination: the ``decontaminate`` step, hashed n-gram packs and the report's
per-benchmark table, on benchmarks written by the tests (nothing is downloaded).

Accuracy is measured on a generated test set (``datamill.testing.contamination``): planted
verbatim items, planted items with case/whitespace/punctuation changed, and clean rows."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import datamill
from datamill import ConfigError, Decontaminate, FakeModel, Pipeline
from datamill.cli import main
from datamill.decontam import step as step_module
from datamill.decontam.pack import NgramTable, read_header
from datamill.decontam.text import NORMALISATION, ngram_hashes, word_hashes, words
from datamill.recipes.loader import builtin_recipes, recipe_from_dict
from datamill.recipes.registry import step_class
from datamill.report import card_section
from datamill.report.build import decontamination
from datamill.testing.contamination import Generator

LONG = (
    "Natalia sold clips to forty eight of her friends in April and then she sold half as many "
    "clips in May how many clips did Natalia sell altogether"
)
SHORT = "What is the boiling point of water at sea level"  # 10 words: shorter than 13
TINY = "Name three primary colours"  # 4 words: below min_words (8)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "mathbench.jsonl",
        [
            {"text": LONG, "qid": "gsm-1"},
            {"text": SHORT, "qid": "sci-2"},
            {"text": TINY, "qid": "art-3"},
        ],
    )


class Counter:
    """A stand-in for the runner's Context: records ``ctx.count`` events."""

    def __init__(self) -> None:
        self.events: dict[str, int] = {}

    def count(self, event: str, n: int = 1) -> None:
        self.events[event] = self.events.get(event, 0) + n


def check(step: Decontaminate, text: str, column: str = "instruction") -> list[Any]:
    return asyncio.run(step.matches({column: text}))


# -- normalisation and hashing ----------------------------------------------------------------


def test_normalisation_folds_case_punctuation_whitespace_and_unicode() -> None:
    assert words("The  Cat's,\tHAT!\n(again)") == ["the", "cats", "hat", "again"]
    assert words("ＦＵＬＬ width") == ["full", "width"]  # NFKC
    assert words("don’t stop") == words("DONT stop") == ["dont", "stop"]
    assert words("forty-eight_items") == ["forty", "eight", "items"]
    assert words(" ... ") == []


def test_the_hashes_packs_hold_do_not_change() -> None:
    # packs made by one datamill are read by another: changing these values needs a new
    # NORMALISATION name (old packs are then refused, not silently misread)
    tokens = words("The cat sat")
    assert word_hashes(tokens)[1] == 3429664268601861939
    assert ngram_hashes(word_hashes(tokens), 3).tolist() == [11854004122609352829]
    assert NORMALISATION == "nfkc-casefold-alnum/blake2b64-poly-v1"


def test_a_window_hash_depends_only_on_its_words() -> None:
    tokens = words(LONG)
    whole = ngram_hashes(word_hashes(tokens), 5)
    assert len(whole) == len(tokens) - 4
    for i in (0, 3, len(tokens) - 5):
        alone = ngram_hashes(word_hashes(tokens[i : i + 5]), 5)
        assert alone.tolist() == [whole[i]]
    assert len(set(whole.tolist())) == len(whole)  # distinct windows, distinct hashes
    assert ngram_hashes(word_hashes(tokens[:3]), 5).size == 0


# -- the step ---------------------------------------------------------------------------------


def test_verbatim_and_reformatted_items_are_found(bench: Path) -> None:
    step = Decontaminate(columns=["instruction"], against=[{"path": str(bench), "id": "qid"}])
    [m] = check(step, "Please solve: " + LONG.upper().replace(" ", "  ") + "!!")
    assert (m.benchmark, m.item, m.method) == ("mathbench", "gsm-1", "13-gram")
    assert m.span == " ".join(words(LONG))  # the whole overlap, normalised
    windows = len(words(LONG)) - 12
    assert m.score == windows / (windows + 2)  # "please solve" adds two windows of its own
    twelve = " ".join(LONG.split()[:12])  # shares no 13-gram
    assert check(step, twelve + " and other words entirely") == []


def test_texts_shorter_than_n(bench: Path) -> None:
    step = Decontaminate(columns=["q"], against=[{"path": str(bench), "id": "qid"}])
    # an item shorter than n (but at least min_words) counts anywhere inside a text
    [m] = check(step, f"Quick quiz. {SHORT.lower()}? Answer briefly.", "q")
    assert (m.item, m.method) == ("sci-2", "whole item (10 words)")
    # an item below min_words counts only as the whole text
    assert check(step, f"{TINY} and explain why they mix well", "q") == []
    [m] = check(step, "name THREE primary colours.", "q")
    assert (m.item, m.method) == ("art-3", "whole item (4 words)")
    # a text shorter than n that is part of a longer item shares no n-gram with it
    assert check(step, "Natalia sold clips to forty eight of her friends", "q") == []
    # with min_words 4 the tiny item counts inside texts too
    loose = Decontaminate(columns=["q"], against=[str(bench)], min_words=4)
    assert [m.item for m in check(loose, f"{TINY} and explain why", "q")] == ["2"]


def test_a_run_drops_contaminated_rows_and_records_each_one(
    bench: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"instruction": "Explain rainbows to a child.", "response": "Light bends in drops."},
        {"instruction": "Solve this.", "response": f"Sure. {LONG}. The answer is 72."},
        {"instruction": SHORT + "?", "response": "100 degrees Celsius."},
        {"instruction": "Write a haiku about snow.", "response": "White hush on the field."},
    ]
    step = Decontaminate(
        columns=["instruction", "response"], against=[{"path": str(bench), "id": "qid"}]
    )
    result = Pipeline([step], source=rows).run(tmp_path / "out")
    assert [r["instruction"] for r in result.rows] == [
        rows[0]["instruction"],
        rows[3]["instruction"],
    ]
    failures = [
        json.loads(line) for line in (tmp_path / "out/failures.jsonl").read_text().splitlines()
    ]
    assert sorted(f["reason"] for f in failures) == ["contaminated: mathbench"] * 2
    details = sorted(f["detail"] for f in failures)
    assert "item 'gsm-1' (13-gram" in details[0] and "column 'response'" in details[0]
    assert "natalia sold clips" in details[0]
    assert "item 'sci-2' (whole item (10 words)" in details[1]
    run = json.loads((tmp_path / "out/run.json").read_text())
    events = run["events"]["decontaminate"]
    assert events["decontamination/mathbench/checked"] == 4
    assert events["decontamination/mathbench/flagged"] == 2
    assert events["decontamination/mathbench/ngram"] == 2
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert report["decontamination"] == [
        {
            "step": "decontaminate",
            "benchmark": "mathbench",
            "checked": 4,
            "flagged": 2,
            "ngram": 2,
            "fuzzy": 0,
            "embedding": 0,
            "dropped": 2,
        }
    ]
    card = (tmp_path / "out/README.md").read_text()
    assert "### Decontamination" in card
    assert "| decontaminate | mathbench | 4 | 2 | 2 | 0 | 0 | 2 |" in card
    capsys.readouterr()
    main(["report", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert "decontamination" in printed and "mathbench" in printed


def test_tag_mode_keeps_rows_and_says_what_matched(bench: Path) -> None:
    step = Decontaminate(columns=["text"], against=[str(bench)], action="tag")
    assert step.produces() == ["contaminated", "contamination"]
    ctx = Counter()
    [clean] = asyncio.run(step.process({"text": "nothing to see"}, ctx))  # type: ignore[arg-type]
    [dirty] = asyncio.run(step.process({"text": LONG}, ctx))  # type: ignore[arg-type]
    assert clean == {"text": "nothing to see", "contaminated": False, "contamination": None}
    assert dirty["contaminated"] is True
    [m] = dirty["contamination"]
    assert m["benchmark"] == "mathbench" and m["item"] == "0" and m["method"] == "13-gram"
    assert ctx.events == {
        "decontamination/mathbench/checked": 2,
        "decontamination/mathbench/flagged": 1,
        "decontamination/mathbench/ngram": 1,
    }


def test_column_mapping_ids_chat_messages_and_parquet(tmp_path: Path) -> None:
    table = pa.table(
        {
            "question": ["Unrelated question about geography and its many mountains"],
            "answer": [LONG],
            "uid": ["mmlu-77"],
        }
    )
    pq.write_table(table, tmp_path / "quiz.parquet")
    step = Decontaminate(
        columns=["messages"],
        against=[
            {
                "path": str(tmp_path / "quiz.parquet"),
                "columns": ["question", "answer"],
                "id": "uid",
                "name": "quiz",
            }
        ],
    )
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": LONG}]
    [m] = check(step, chat, "messages")  # type: ignore[arg-type]
    assert (m.benchmark, m.item, m.column) == ("quiz", "mmlu-77", "messages")
    with pytest.raises(datamill.InputError, match="no column 'text'"):
        asyncio.run(
            Decontaminate(columns=["x"], against=[str(tmp_path / "quiz.parquet")]).matches(
                {"x": "a"}
            )
        )


def test_several_benchmarks_are_each_counted(bench: Path, tmp_path: Path) -> None:
    other = write_jsonl(tmp_path / "other.jsonl", [{"text": LONG}])
    step = Decontaminate(columns=["t"], against=[str(bench), str(other)])
    ctx = Counter()
    with pytest.raises(datamill.errors.Dropped) as caught:
        asyncio.run(step.process({"t": LONG}, ctx))  # type: ignore[arg-type]
    assert caught.value.reason == "contaminated: mathbench"  # the first in `against`
    assert "also other" in (caught.value.detail or "")
    assert ctx.events["decontamination/other/flagged"] == 1
    assert ctx.events["decontamination/mathbench/flagged"] == 1


def test_fuzzy_match_catches_near_copies(bench: Path) -> None:
    typos = LONG.replace("clips", "clip").replace("friends", "freinds").replace("April", "Aprl")
    exact = Decontaminate(columns=["t"], against=[str(bench)])
    assert check(exact, typos, "t") == []  # no 13-gram survives the typos
    fuzzy = Decontaminate(columns=["t"], against=[str(bench)], fuzzy=90)
    [m] = check(fuzzy, typos, "t")
    assert (m.method, m.item) == ("fuzzy", "0") and 0.9 <= m.score < 1.0
    assert check(fuzzy, "A question about something else entirely, of a similar length", "t") == []


def test_embedding_match_catches_reordered_words(bench: Path) -> None:
    shuffled = " ".join(reversed(LONG.split()))
    embed = Decontaminate(
        columns=["t"], against=[str(bench)], embedding={"embedder": "hash:512", "threshold": 0.9}
    )
    [m] = check(embed, shuffled, "t")
    assert (m.method, m.item) == ("embedding", "0") and m.score >= 0.9
    assert check(embed, "Tell me about the weather in Lisbon today", "t") == []


def test_the_index_is_built_once_per_process_across_threads(
    bench: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = []
    real = NgramTable.from_items.__func__  # type: ignore[attr-defined]

    def counting(cls: type[NgramTable], *args: Any, **kw: Any) -> NgramTable:
        built.append(args[0])
        return real(cls, *args, **kw)

    monkeypatch.setattr(NgramTable, "from_items", classmethod(counting))
    monkeypatch.setattr(step_module, "_INDEXES", {})
    steps = [Decontaminate(columns=["t"], against=[str(bench)], n=11) for _ in range(8)]
    got: list[Any] = []
    threads = [threading.Thread(target=lambda s=s: got.append(s.load_index())) for s in steps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert built == ["mathbench"]
    assert len({id(i) for i in got}) == 1


# -- packs ------------------------------------------------------------------------------------


def test_a_pack_decides_like_its_files_and_holds_no_text(bench: Path, tmp_path: Path) -> None:
    other = write_jsonl(tmp_path / "other.jsonl", [{"body": SHORT + " again and again", "k": "x"}])
    pack = tmp_path / "bench.npz"
    main(["decontam", "pack", str(bench), "-o", str(pack), "--id", "qid"])
    main(
        [
            "decontam",
            "pack",
            str(other),
            "-o",
            str(tmp_path / "o.npz"),
            "-c",
            "body",
            "--name",
            "sci",
            "--id",
            "k",
        ]
    )
    merged = tmp_path / "all.npz"
    main(["decontam", "pack", str(pack), str(tmp_path / "o.npz"), "-o", str(merged)])
    head = read_header(merged)
    assert head["n"] == 13 and head["items"] == 4
    assert [b["name"] for b in head["benchmarks"]] == ["mathbench", "sci"]
    assert head["ids"] == ["gsm-1", "sci-2", "art-3", "x"]
    data = merged.read_bytes()
    for word in ("natalia", "Natalia", "boiling", "colours"):
        assert word.encode() not in data  # hashes and ids only
    from_pack = Decontaminate(columns=["t"], against=[str(merged)])
    from_files = Decontaminate(
        columns=["t"],
        against=[
            {"path": str(bench), "id": "qid"},
            {"path": str(other), "columns": ["body"], "id": "k", "name": "sci"},
        ],
    )
    texts = [LONG, "so " + SHORT, TINY, "nothing here at all", SHORT + " again and again"]
    for text in texts:
        assert check(from_pack, text, "t") == check(from_files, text, "t"), text
    with np.load(merged) as arrays:
        assert np.all(np.diff(arrays["hashes"].astype(np.uint64)) >= 0)


def test_bad_parameters_are_refused_when_the_step_is_built(bench: Path, tmp_path: Path) -> None:
    pack = tmp_path / "b.npz"
    main(["decontam", "pack", str(bench), "-o", str(pack), "--n", "8"])
    cases = [
        ({"against": [str(tmp_path / "missing.jsonl")]}, "does not exist"),
        ({"against": [str(pack)]}, "holds 8-grams but the step asks n: 13"),
        ({"against": [str(pack)], "n": 8, "fuzzy": 95}, "packs hold only hashes"),
        ({"against": [{"path": str(pack), "columns": ["q"]}], "n": 8}, "is a pack"),
        ({"against": [str(bench), str(bench)]}, "two benchmarks are called 'mathbench'"),
        ({"against": [str(bench)], "min_words": 20}, "min_words (20) is larger than n (13)"),
        ({"against": [str(bench)], "ngram": 8}, "unknown parameter 'ngram'"),
        ({"against": [{"path": str(bench), "colums": ["q"]}]}, "colums"),
        ({"against": [str(bench)], "action": "delete"}, "action"),
        ({"against": []}, "against"),
    ]
    for params, words_ in cases:
        with pytest.raises(ConfigError, match=None) as caught:
            Decontaminate(columns=["t"], **params)
        message = str(caught.value)
        assert words_ in message and "\n" not in message, (params, message)
    not_a_pack = tmp_path / "junk.npz"
    not_a_pack.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="is not a decontamination pack"):
        Decontaminate(columns=["t"], against=[str(not_a_pack)])


def test_the_pack_command_refuses_bad_input_in_one_line(
    bench: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for args, words_ in [
        (["-o", str(tmp_path / "p.bin")], "must be a .npz file"),
        (["-o", str(tmp_path / "p.npz"), "--name", "a", "--name", "b"], "one --name per benchmark"),
        (["-o", str(tmp_path / "p.npz"), "-c", "question"], "has no column 'question'"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            main(["decontam", "pack", str(bench), *args])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert words_ in err and "\n" not in err, err
    assert not (tmp_path / "p.npz").exists()


# -- accuracy on a generated test set ---------------------------------------------------------


def test_accuracy_on_a_generated_test_set(tmp_path: Path) -> None:
    ts = Generator(seed=3).test_set(items=300, clean=3000, verbatim=300, perturbed=300)
    bench = write_jsonl(tmp_path / "synth.jsonl", ts.benchmark)
    pack = tmp_path / "synth.npz"
    main(["decontam", "pack", str(bench), "-o", str(pack), "--id", "id"])
    for against in ([{"path": str(bench), "id": "id"}], [str(pack)]):
        step = Decontaminate(columns=["instruction", "response"], against=against)

        async def flags(step: Decontaminate) -> list[list[Any]]:
            return [await step.matches(r) for r in ts.rows]

        found = asyncio.run(flags(step))
        rates: dict[str, list[bool]] = {"clean": [], "verbatim": [], "perturbed": []}
        for (label, item), matches in zip(ts.labels, found, strict=True):
            hit = any(m.item == item for m in matches) if item else bool(matches)
            rates[label].append(hit)
        share = {k: sum(v) / len(v) for k, v in rates.items()}
        assert share["verbatim"] >= 0.99, share
        assert share["perturbed"] >= 0.95, share
        assert share["clean"] <= 0.002, share
        assert len(rates["clean"]) == 3000 and len(rates["perturbed"]) == 300


def test_the_generated_perturbations_change_the_text_but_not_its_words() -> None:
    g = Generator(seed=5)
    text = g.sentence_text(30)
    changed = g.perturb(text)
    assert changed != text and words(changed) == words(text)


# -- registry, API, report --------------------------------------------------------------------


def test_the_step_is_registered_and_exported() -> None:
    assert step_class("decontaminate") is Decontaminate
    assert "Decontaminate" in datamill.__all__


def test_the_report_table_reads_the_events_of_every_decontaminate_step() -> None:
    summary = {
        "events": {
            "decon": {
                "decontamination/a/b/checked": 10,  # a benchmark name may hold a slash
                "decontamination/a/b/flagged": 3,
                "decontamination/a/b/ngram": 2,
                "decontamination/a/b/fuzzy": 1,
                "decontamination/c/checked": 10,
                "other event": 4,
            },
            "judge": {"judgement skipped (self-judging)": 1},
        },
        "failures_by_step": {"decon": {"contaminated: a/b": 3}},
    }
    table = decontamination(summary)
    assert table == [
        {
            "step": "decon",
            "benchmark": "a/b",
            "checked": 10,
            "flagged": 3,
            "ngram": 2,
            "fuzzy": 1,
            "embedding": 0,
            "dropped": 3,
        },
        {
            "step": "decon",
            "benchmark": "c",
            "checked": 10,
            "flagged": 0,
            "ngram": 0,
            "fuzzy": 0,
            "embedding": 0,
            "dropped": 0,
        },
    ]
    card = card_section({"decontamination": table})
    assert "| decon | c | 10 | 0 | 0 | 0 | 0 | 0 |" in card
    assert "### Decontamination" not in card_section({"fields": {}})


# -- a built-in recipe with a decontaminate step ----------------------------------------------


def test_a_builtin_recipe_with_decontaminate_drops_the_planted_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recipe names its benchmark relative to itself and runs from another folder; the card
    shows the decontamination table and the licence and provenance section."""
    recipe = yaml.safe_load(builtin_recipes()["instructions-basic"].read_text())
    plain = recipe_from_dict(recipe)
    plain.models = {k: datamill.ModelSettings(spec=FakeModel()) for k in plain.models}
    first = plain.run(tmp_path / "plain", limit=5)
    questions = [r["question"] for r in first.rows]
    assert len(set(questions)) == len(questions) >= 4
    planted = questions[1:3]
    bench = write_jsonl(
        tmp_path / "eval.jsonl", [{"prompt": q, "n": f"ev-{i}"} for i, q in enumerate(planted)]
    )
    steps = recipe["steps"]
    at = next(i for i, s in enumerate(steps) if "format_sft" in s)
    steps.insert(
        at,
        {
            "decontaminate": {
                "columns": ["question"],
                "against": [{"path": bench.name, "columns": ["prompt"], "id": "n"}],
            }
        },
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    main(["run", str(path), "--model", "fake", "--limit", "5", "--output", str(out), "--quiet"])
    kept = [json.loads(line) for line in _rows(out)]
    assert sorted(r["question"] for r in kept) == sorted(q for q in questions if q not in planted)
    failures = [json.loads(x) for x in (out / "failures.jsonl").read_text().splitlines()]
    assert sorted(f["detail"].split(" (")[0] for f in failures) == [
        "eval item 'ev-0'",
        "eval item 'ev-1'",
    ]
    card = (out / "README.md").read_text()
    assert "### Decontamination" in card and "| decontaminate | eval | 5 | 2 |" in card
    section = card[card.index("## Licence and provenance") :]
    assert "| model `default` | fake (fake) | unknown |" in section
    assert "| dataset | the built-in recipe's seed rows | apache-2.0 | datamill |" in section
    assert "- recipe: `instructions-basic` (own, sha256 " in section  # a step was added
    assert "license: unknown" in card.split("---\n")[1]


def _rows(out: Path) -> list[str]:
    table = pq.read_table(out / "data")
    return [json.dumps(r) for r in table.to_pylist()]

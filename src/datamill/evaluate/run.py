"""``datamill eval``'s work: fine-tune the base on each dataset, answer the held-out items with the
base and every tuned model, score, and compare each tuned model with the base.

Order: read every dataset and build the held-out items first (bad input fails here, before any
model is loaded), check overlap (held-out items that share an 8-gram with any training prompt are
left out of every model's score, so the comparison stays paired), then the base model answers,
then per dataset: train, answer, score, free the model.

The result (:func:`evaluate`'s return, ``eval.json``)::

    {"version": 1, "base": str, "device": "cpu"|"cuda", "seed": int, "resamples": int,
     "heldout": {"sets": [str], "items": int, "scored": int, "left_out": [item ids]},
     "overlap": {dataset: {"n", "checked", "overlapping", "examples"}},
     "models": [{"name", "dataset"|None, "training"|None, "eval_seconds",
                 "pass": {"all"|kind: {"rate", "low", "high", "n"}},
                 "vs_base": {"all"|kind: {"diff", "low", "high"}} (tuned models only),
                 "judged": {"judge", "rate", "low", "high", "n", "ties", "unparsed"} (--judge)}],
     "generation": {"max_new_tokens", "batch_size", "greedy": true}, "seconds": float}

Answers and verdicts per item go to ``eval_answers.jsonl`` beside it.

Deliberately not here: printing and files (``evaluate.results``), the CLI (``cli.eval``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from . import heldout as H
from .scoring import RESAMPLES, bootstrap_diff, bootstrap_mean, score


@dataclass
class EvalOptions:
    """What ``datamill eval`` does besides the datasets and base."""

    heldout: list[str] = field(default_factory=lambda: ["constraints"])
    eval_files: list[Path] = field(default_factory=list)
    rows: int | None = 300  #: train on at most this many rows of each dataset (None: all)
    max_new_tokens: int = 200
    batch_size: int = 16
    seed: int = 0
    resamples: int = RESAMPLES
    judge: str | None = None  #: a model spec: also judge each tuned model's answers vs the base's


def read_dataset(path: Path) -> tuple[str, list[dict[str, Any]]]:
    """``(name, rows)`` of a datamill output folder or dataset file. Raises InputError when it
    does not exist or holds no rows."""
    from ..io.sources import source_from_path

    if not path.exists():
        raise InputError(f"{path}: no such dataset; give a datamill output folder or a data file")
    name = path.name if path.is_dir() else path.stem
    run = path / "run.json"
    if run.is_file():
        with contextlib.suppress(ValueError):
            name = json.loads(run.read_text(encoding="utf-8")).get("pipeline") or name
    rows = source_from_path(path).rows()
    if not rows:
        raise InputError(f"{path}: the dataset has no rows to train on")
    return name, rows


def build_items(opts: EvalOptions) -> tuple[list[dict[str, Any]], list[str]]:
    """The held-out items (built-in sets, then eval files) and the names of their sets."""
    items: list[dict[str, Any]] = []
    names: list[str] = []
    for spec in opts.heldout:
        H.parse_heldout(spec)
        items += H.builtin(spec, opts.seed)
        names.append(spec)
    for f in opts.eval_files:
        items += H.from_file(Path(f))
        names.append(str(f))
    if not items:
        raise InputError("no held-out items: give --heldout NAME or --eval-file FILE")
    return items, names


def _summary(
    items: list[dict[str, Any]], passed: list[bool], opts: EvalOptions
) -> dict[str, dict[str, Any]]:
    out = {}
    for kind in ["all", *sorted({i["kind"] for i in items})]:
        sel = [p for i, p in zip(items, passed, strict=True) if kind == "all" or i["kind"] == kind]
        rate, lo, hi = bootstrap_mean(sel, opts.resamples, opts.seed)
        out[kind] = {"rate": rate, "low": lo, "high": hi, "n": len(sel)}
    return out


def _versus(
    items: list[dict[str, Any]], base: list[bool], tuned: list[bool], opts: EvalOptions
) -> dict[str, dict[str, float]]:
    out = {}
    for kind in ["all", *sorted({i["kind"] for i in items})]:
        keep = [k for k, i in enumerate(items) if kind == "all" or i["kind"] == kind]
        d, lo, hi = bootstrap_diff(
            [base[k] for k in keep], [tuned[k] for k in keep], opts.resamples, opts.seed
        )
        out[kind] = {"diff": d, "low": lo, "high": hi}
    return out


def evaluate(
    datasets: list[Path],
    base: str,
    folder: Path,
    opts: EvalOptions,
    train_opts: Any = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole evaluation; write ``folder/eval_answers.jsonl`` and adapters under
    ``folder/adapters/NAME``; return the result (see the module note)."""
    from . import hf

    started = time.monotonic()
    hf.need_train_extra()
    hf.resolve_base(base)
    if opts.judge:
        from ..models.registry import parse_spec

        parse_spec(opts.judge)  # an unknown backend: one line now, not after training
    loaded = []
    seen: set[str] = set()
    for p in datasets:
        name, rows = read_dataset(Path(p))
        while name in seen:
            name += "'"
        seen.add(name)
        rows = rows[: opts.rows] if opts.rows else rows
        (hf.dpo_examples if hf.is_preference(rows) else hf.sft_examples)(rows)  # fail early
        loaded.append((name, Path(p), rows))
    items, set_names = build_items(opts)
    overlaps = {name: H.overlap(items, rows) for name, _, rows in loaded}
    left_out = sorted({i for o in overlaps.values() for i in o["overlapping"]})
    for name, o in overlaps.items():
        if o["overlapping"]:
            say(
                f"{name}: {len(o['overlapping'])} of {o['checked']} held-out items overlap its training prompts; left out"
            )
    items = [i for i in items if i["id"] not in set(left_out)]
    if not items:
        raise InputError("every held-out item overlaps the training data; use other eval items")
    prompts = [i["prompt"] for i in items]
    folder.mkdir(parents=True, exist_ok=True)
    answers: dict[str, list[str]] = {}
    verdicts: dict[str, list[dict[str, Any]]] = {}
    models: list[dict[str, Any]] = []

    def run_model(name: str, model: Any, tok: Any) -> float:
        t = time.monotonic()
        say(f"{name}: answering {len(prompts)} held-out prompts")
        answers[name] = hf.generate(model, tok, prompts, opts.max_new_tokens, opts.batch_size)
        verdicts[name] = score(items, answers[name])
        return round(time.monotonic() - t, 1)

    say(f"base: loading {base}")
    model, tok = hf.load(base)
    secs = run_model("base", model, tok)
    base_passed = [v["passed"] for v in verdicts["base"]]
    models.append(
        {
            "name": "base",
            "dataset": None,
            "training": None,
            "eval_seconds": secs,
            "pass": _summary(items, base_passed, opts),
        }
    )
    del model
    gc.collect()
    for name, path, rows in loaded:
        say(f"{name}: training on {len(rows)} rows")
        model, tok, info = hf.train(
            base, rows, folder / "adapters" / _safe(name), train_opts or hf.TrainOptions()
        )
        secs = run_model(name, model, tok)
        passed = [v["passed"] for v in verdicts[name]]
        entry = {
            "name": name,
            "dataset": str(path),
            "training": info,
            "eval_seconds": secs,
            "pass": _summary(items, passed, opts),
            "vs_base": _versus(items, base_passed, passed, opts),
        }
        if opts.judge:
            from .judge import win_rate

            say(f"{name}: judging its answers against the base's with {opts.judge}")
            entry["judged"] = win_rate(
                opts.judge, prompts, answers["base"], answers[name], opts.seed, opts.resamples
            )
        models.append(entry)
        del model
        gc.collect()
    with (folder / "eval_answers.jsonl").open("w", encoding="utf-8") as f:
        for k, item in enumerate(items):
            rec = {
                "id": item["id"],
                "kind": item["kind"],
                "prompt": item["prompt"],
                "answers": {m: {"text": answers[m][k], **verdicts[m][k]} for m in answers},
            }
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return {
        "version": 1,
        "base": hf.resolve_base(base)[2],
        "device": hf.device(),
        "seed": opts.seed,
        "resamples": opts.resamples,
        "heldout": {
            "sets": set_names,
            "items": len(items) + len(left_out),
            "scored": len(items),
            "left_out": left_out,
        },
        "overlap": overlaps,
        "models": models,
        "generation": {
            "max_new_tokens": opts.max_new_tokens,
            "batch_size": opts.batch_size,
            "greedy": True,
        },
        "seconds": round(time.monotonic() - started, 1),
    }


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "dataset"


__all__ = ["EvalOptions", "build_items", "evaluate", "read_dataset"]

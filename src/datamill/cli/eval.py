"""``datamill eval OUT [OUT2 …] --base MODEL`` and ``datamill compare OUT_A OUT_B``.

``eval`` fine-tunes the base on each dataset and prints base and tuned models' held-out pass
rates side by side (see ``datamill.evaluate``); it writes ``eval.json``, ``eval.png`` and
``eval_answers.jsonl`` into ``--output`` and, for each datamill output folder among the datasets,
``eval.json``/``eval.png`` and an "Evaluation" section in its ``README.md``. ``compare`` prints two
datasets' quality reports and eval results side by side (nothing is computed but what is missing
from a folder's ``report.json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ..errors import InputError

out = Console()


def eval_command(
    datasets: Annotated[
        list[Path], typer.Argument(help="Datasets to train on: datamill output folders or files.")
    ],
    base: Annotated[
        str,
        typer.Option(
            "--base", help="Base model: embedded (SmolLM2-135M), a .gguf file or a model folder."
        ),
    ] = "embedded",
    heldout: Annotated[
        list[str] | None,
        typer.Option(
            "--heldout",
            help="Built-in held-out set NAME[:N] (constraints, math, code); repeatable. "
            "Default: constraints:120 unless --eval-file is given.",
        ),
    ] = None,
    eval_file: Annotated[
        list[Path] | None,
        typer.Option(
            "--eval-file",
            help="Your own eval items (jsonl/json/parquet): prompt + constraints | reference_answer | tests.",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Results folder (default: out/eval).")
    ] = None,
    rows: Annotated[
        int, typer.Option("--rows", help="Train on at most N rows of each dataset (0: all).")
    ] = 300,
    epochs: Annotated[float, typer.Option("--epochs", help="Training epochs.")] = 1.0,
    max_steps: Annotated[
        int, typer.Option("--max-steps", help="Stop training after N steps (0: no limit).")
    ] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Training batch size.")] = 8,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate.")] = 2e-4,
    max_length: Annotated[
        int, typer.Option("--max-length", help="Tokens per training sequence.")
    ] = 320,
    lora_r: Annotated[int, typer.Option("--lora-r", help="LoRA rank.")] = 16,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="Tokens per held-out answer.")
    ] = 200,
    gen_batch: Annotated[int, typer.Option("--gen-batch", help="Prompts generated together.")] = 16,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed: held-out sets, training, bootstrap.")
    ] = 0,
    resamples: Annotated[int, typer.Option("--resamples", help="Bootstrap resamples.")] = 2000,
    judge: Annotated[
        str | None,
        typer.Option(
            "--judge",
            help="Also judge each tuned model's answers against the base's with this model "
            "(both orders): llamacpp, openai:MODEL@URL …",
        ),
    ] = None,
) -> None:
    """Fine-tune the base on each dataset (LoRA SFT, or DPO for preference pairs), evaluate base
    and tuned models on held-out items, print them side by side with bootstrap intervals."""
    from ..evaluate import results
    from ..evaluate.hf import TrainOptions
    from ..evaluate.run import EvalOptions, evaluate

    for name, value in (("--rows", rows), ("--max-steps", max_steps)):
        if value < 0:
            raise InputError(f"{name} must be 0 or more, got {value}")
    for name, value in (
        ("--batch-size", batch_size),
        ("--max-length", max_length),
        ("--lora-r", lora_r),
        ("--max-new-tokens", max_new_tokens),
        ("--gen-batch", gen_batch),
        ("--resamples", resamples),
    ):
        if value < 1:
            raise InputError(f"{name} must be 1 or more, got {value}")
    if epochs <= 0 or lr <= 0:
        raise InputError("--epochs and --lr must be positive numbers")
    opts = EvalOptions(
        heldout=list(heldout) if heldout else ([] if eval_file else ["constraints"]),
        eval_files=list(eval_file or []),
        rows=rows or None,
        max_new_tokens=max_new_tokens,
        batch_size=gen_batch,
        seed=seed,
        resamples=resamples,
        judge=judge,
    )
    topts = TrainOptions(
        epochs=epochs,
        max_steps=max_steps or -1,
        batch_size=batch_size,
        learning_rate=lr,
        max_length=max_length,
        lora_r=lora_r,
        lora_alpha=2 * lora_r,
        seed=seed,
    )
    folder = output or Path("out/eval")
    result = evaluate(
        datasets, base, folder, opts, topts, say=lambda s: out.print(s, highlight=False)
    )
    result = results.write(folder, result)
    for path in datasets:
        if path.is_dir() and (path / "run.json").is_file() and path.resolve() != folder.resolve():
            results.write(path, result)
            results.update_card(path, result)
    print_eval(result)
    out.print(f"wrote {folder / results.EVAL_FILE}", highlight=False)


def print_eval(result: dict[str, Any]) -> None:
    """The side-by-side table of one eval result."""
    from ..evaluate.results import HEADER, judged_lines, table_rows

    t = Table(title=f"held-out evaluation (base {result.get('base')}, {result.get('device')})")
    for h in HEADER:
        t.add_column(h)
    for r in table_rows(result):
        t.add_row(*r)
    Console(width=max(out.width, 150)).print(t)  # read whole, also in a log file
    for line in judged_lines(result):
        if line:
            out.print(line, highlight=False)
    h = result.get("heldout", {})
    out.print(
        f"{h.get('scored')} held-out items scored; {len(h.get('left_out', []))} left out for overlap "
        f"with training prompts; {result.get('seconds')} s in all",
        highlight=False,
    )


def compare(
    a: Annotated[Path, typer.Argument(help="A datamill output folder (or dataset file).")],
    b: Annotated[Path, typer.Argument(help="Another one.")],
) -> None:
    """Print two datasets' quality reports and eval results side by side."""
    from ..evaluate import results
    from ..report import build_report, load_report, to_json
    from ..report.write import format_value
    from .report import _rows_and_summary

    reports = []
    for p in (a, b):
        if not p.exists():
            raise InputError(f"{p}: no such file or folder; give a datamill output folder")
        data = load_report(p) if p.is_dir() else None
        if data is None:
            rows, summary, _ = _rows_and_summary(p)
            data = to_json(build_report(rows, summary))
        reports.append(data)
    t = Table(title="quality reports")
    t.add_column("")
    t.add_column(str(a))
    t.add_column(str(b))
    t.add_row("rows", *(str(r.get("rows", "–")) for r in reports))
    fields = list(dict.fromkeys(f for r in reports for f in (r.get("fields") or {})))
    for f in fields:
        for label, key, sub, digits in (
            ("words (median)", "words", "median", 0),
            ("distinct-2", "distinct_2", None, 3),
            ("ROUGE-L self-overlap", "rouge_l_self", "mean", 3),
        ):
            cells = []
            for r in reports:
                value = ((r.get("fields") or {}).get(f) or {}).get(key)
                cells.append(format_value((value or {}).get(sub) if sub else value, digits))
            t.add_row(f"{f}: {label}", *cells)
    out.print(t)
    evals = [results.load(p) if p.is_dir() else None for p in (a, b)]
    e = Table(title="held-out evaluation")
    e.add_column("")
    e.add_column(str(a))
    e.add_column(str(b))
    names = [(r.get("name") if r else None) or p.name for r, p in zip(reports, (a, b), strict=True)]
    pairs = list(zip(evals, names, strict=True))
    e.add_row("base", *(_rate(r, "base") if r else "no eval.json" for r, _ in pairs))
    e.add_row("tuned", *(_tuned(r, n) if r else "no eval.json" for r, n in pairs))
    out.print(e)


def _rate(result: dict[str, Any], name: str) -> str:
    from ..evaluate.results import interval

    for m in result.get("models", []):
        if m["name"] == name:
            return interval(m["pass"]["all"], "rate")
    return "–"


def _tuned(result: dict[str, Any], name: str) -> str:
    from ..evaluate.results import interval

    tuned = [m for m in result.get("models", []) if m.get("vs_base")]
    m = next((m for m in tuned if m["name"] == name), tuned[0] if len(tuned) == 1 else None)
    if m is None:
        return "–"
    return f"{interval(m['pass']['all'], 'rate')}; vs base {interval(m['vs_base']['all'], 'diff')}"


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
    app.command("compare")(compare)

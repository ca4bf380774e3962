"""The web app's handlers: plain functions from the form's values to what the page shows.

Every handler returns (or, while a job runs, yields) what its widgets show, as strings of
escaped HTML or plain values; the unit tests call them directly, without gradio or a browser.
The Generate screen's handlers take the whole form as one :class:`~datamill.ui.form.FormValues`.

Every run is a :class:`~datamill.ui.jobs.Job` over a pipeline from :mod:`datamill.ui.builder`,
i.e. ``arun_pipeline`` with an output folder and the shared call cache — the CLI's engine.

Deliberately not here: widgets and their wiring (``ui.app``).
"""

from __future__ import annotations

import copy
import html
import json
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DatamillError
from ..pipeline.stats import yield_lines
from ..words import plural
from . import builder, drafting, viewer
from .form import FormValues
from .hub import push
from .jobs import Job, JobRegistry

POLL_SECONDS = 0.5
JOBS = JobRegistry()


# -- small helpers ---------------------------------------------------------------------------------
def _error(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, DatamillError) else f"{type(exc).__name__}: {exc}"
    return f'<div class="dm-error" id="dm-error">⚠ {html.escape(text)}</div>'


def progress_html(job: Job) -> str:
    """A progress bar and one line of counters for ``job``; a finished run with verifiers adds
    one line per verifier: its yield (``verify_math: 12 of 20 verified (60%); 8 wrong answer``)."""
    p = job.progress()
    if job.finished:
        css = f"dm-status-{job.state}"
        pct = 100 if job.state == "done" else round(100 * p.fraction)
        verdicts = (
            yield_lines(job.result.summary.get("verification")) if job.result is not None else []
        )
        shown = "".join(f"<div>yield {html.escape(line)}</div>" for line in verdicts)
        return (
            f'<div class="dm-bar"><div style="width:{pct}%"></div></div>'
            f'<div class="{css}" id="dm-job-state" data-state="{job.state}">{html.escape(job.summary_line())}</div>'
            + (f'<div class="dm-meta" id="dm-yield">{shown}</div>' if shown else "")
        )
    pct = round(100 * p.fraction)
    return (
        f'<div class="dm-bar"><div style="width:{pct}%"></div></div>'
        f'<div id="dm-job-state" data-state="{job.state}">{html.escape(p.text)}</div>'
    )


def default_output() -> str:
    return str(Path("out") / time.strftime("ui-%Y%m%d-%H%M%S"))


def _servable(path: Path, into: Path) -> str:
    """A path gradio may serve: files outside the working and temp folders are copied."""
    resolved = path.resolve()
    for base in (Path.cwd().resolve(), Path(tempfile.gettempdir()).resolve()):
        if resolved.is_relative_to(base) and not any(
            part.startswith(".") for part in resolved.relative_to(base).parts
        ):
            return str(resolved)
    into.mkdir(parents=True, exist_ok=True)
    target = into / f"{abs(hash(str(resolved))) % 10**8}-{path.name}"
    shutil.copyfile(path, target)
    return str(target)


def export_files(folder: Path, rows: Iterable[dict[str, Any]], name: str) -> tuple[str, str]:
    """``NAME.parquet`` and ``NAME.jsonl`` copies of a finished dataset, for the download buttons."""
    out = Path(tempfile.mkdtemp(prefix="datamill-ui-"))
    data = sorted((folder / "data").glob("*.parquet"))
    if not data:
        raise ConfigError(f"{folder} has no data/*.parquet to download")
    parquet = out / f"{name}.parquet"
    shutil.copyfile(data[0], parquet)
    jsonl = out / f"{name}.jsonl"
    with jsonl.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    return str(parquet), str(jsonl)


# -- handlers (plain functions: the unit tests call them directly) ---------------------------------
def draft_template(description: str) -> tuple[str, str]:
    """Description → (system prompt, note)."""
    try:
        return drafting.template_prompt(
            description
        ), "drafted from your description; edit it freely"
    except DatamillError as exc:
        return "", f"⚠ {exc}"


def draft_model(form: FormValues) -> tuple[str, str]:
    """The form's description → (system prompt drafted by the form's model, note)."""
    try:
        draft = drafting.draft_with_model(form.description, form.model())
        return draft.text, draft.note
    except DatamillError as exc:
        return "", f"⚠ {exc}"


def run_preview(form: FormValues) -> Iterator[tuple[str, str]]:
    """Yields (status html, rows html) while a few rows are made (nothing is written).

    The preview runs the very recipe *Generate* will run (``form.num_rows`` rows), limited to its
    first source rows and topped up until ``form.preview_rows`` rows survive (or the attempt cap is
    reached), so generating afterwards finds the preview's calls in the cache. The rows html
    lists every row lost on the way, with its step and reason, below the rows."""
    try:
        n = int(form.preview_rows or 2)
        spec = form.spec(num_rows=max(n, int(form.num_rows or n)), name="ui-preview")
        pipeline, limit = builder.preview_pipeline(spec, n)
    except DatamillError as exc:
        yield _error(exc), ""
        return
    # the first `limit` source rows, topped up past them: the source's own limit (a run's
    # `limit` would cap the top-up at those rows too)
    pipeline.source = copy.copy(pipeline.source)
    if pipeline.source is not None:
        pipeline.source.limit = limit
    job = JOBS.add(Job(pipeline, None, label="preview"))
    job.start()
    while not job.wait(POLL_SECONDS):
        yield progress_html(job), '<div class="dm-empty">making preview rows…</div>'
    if job.state != "done" or job.result is None:
        yield progress_html(job), ""
        return
    rows = job.result.rows[:n]
    yield progress_html(job), viewer.render_rows(rows) + viewer.render_losses(job.result.failures)


def run_generate(form: FormValues) -> Iterator[tuple[str, str, Any, Any, str, str]]:
    """Yields (status html, rows html, parquet file, jsonl file, job id, output folder).

    The rows html shows the first rows and lists every row lost on the way, with its reason."""
    none = (None, None)
    try:
        folder = Path((form.output or "").strip() or default_output())
        spec = form.spec(name=folder.name)
        recipe = builder.build_recipe(spec)
        from ..recipes.loader import recipe_from_dict

        pipeline = recipe_from_dict(recipe)
    except DatamillError as exc:
        yield _error(exc), "", *none, "", ""
        return
    busy = next(
        (
            j
            for j in JOBS.running()
            if j.output is not None and j.output.resolve() == folder.resolve()
        ),
        None,
    )
    if busy is not None:
        yield (
            _error(
                ConfigError(
                    f"a job of this app is already writing {folder}; wait for it, stop it, or choose another output folder"
                )
            ),
            "",
            *none,
            busy.id,
            str(folder),
        )
        return
    job = JOBS.add(Job(pipeline, folder, label=f"generate {folder}"))
    job.start()
    while not job.wait(POLL_SECONDS):
        yield progress_html(job), "", *none, job.id, str(folder)
    if job.state != "done" or job.result is None:
        yield progress_html(job), "", *none, job.id, str(folder)
        return
    (folder / "recipe.yaml").write_text(builder.recipe_yaml(recipe), encoding="utf-8")
    rows = job.result.rows
    shown = viewer.render_rows(rows, limit=5) + viewer.render_losses(job.result.failures)
    try:
        parquet, jsonl = export_files(folder, rows, folder.name)
    except DatamillError as exc:
        yield (
            progress_html(job) + _error(exc),
            shown,
            *none,
            job.id,
            str(folder),
        )
        return
    again = f'<div class="dm-meta">same run from the command line: <code>datamill run {html.escape(str(folder / "recipe.yaml"))} -o {html.escape(str(folder))}</code></div>'
    yield (
        progress_html(job) + again,
        shown,
        parquet,
        jsonl,
        job.id,
        str(folder),
    )


def stop_job(job_id: str) -> str:
    job = JOBS.get(job_id or "")
    if job is None or job.finished:
        return "no job is running"
    job.cancel()
    return "stopping… (finished calls are cached: generating again resumes)"


def push_to_hub(folder: str, repo_id: str, token: str, private: bool) -> str:
    try:
        url = push(folder or None, repo_id, token, private)
    except DatamillError as exc:
        return f'<span class="dm-error" id="dm-push-error">⚠ {html.escape(str(exc))}</span>'
    except Exception as exc:  # never a traceback in the page
        return f'<span class="dm-error" id="dm-push-error">⚠ push failed: {html.escape(type(exc).__name__)}: {html.escape(str(exc)[:200])}</span>'
    return f'pushed: <a href="{html.escape(url)}" target="_blank">{html.escape(url)}</a>'


def job_choices() -> list[tuple[str, str]]:
    """(label, folder) of this app's generate jobs, newest first."""
    out = []
    for j in JOBS.with_output():
        state = "running" if not j.finished else j.state
        out.append((f"{j.output} ({state})", str(j.output)))
    return out


def open_view(
    folder: str,
) -> tuple[str, list[dict[str, Any]], str, Any, Any, str, str | None, float]:
    """Folder → (summary md, rows, first row html, rows table, failures table, report md, chart, index).

    The chart is the report's PNG (``report.png``, else the folder's first PNG), or ``None``."""
    import pandas as pd

    empty = pd.DataFrame()
    folder = (folder or "").strip()
    running = next(
        (j for j in JOBS.with_output() if str(j.output) == folder and not j.finished), None
    )
    if running is not None:
        failures = running.stats.failures_by_step if running.stats else {}
        lost = "  \n".join(
            f"⚠ {plural(sum(r.values()), 'row')} lost at {step}: "
            + ", ".join(f"{n} {k}" for k, n in r.items())
            for step, r in failures.items()
        )
        md = f"**{folder}** — ⏳ the job is running: {running.progress().text}  \n{lost}  \nrows appear here when it finishes; press Open again."
        return (
            md,
            [],
            '<div class="dm-empty">the job is still running</div>',
            empty,
            empty,
            "",
            None,
            0,
        )
    try:
        view = viewer.open_folder(folder)
    except DatamillError as exc:
        return f"⚠ {exc}", [], "", empty, empty, "", None, 0
    headers, body = viewer.table(view.rows)
    f_headers, f_body = viewer.failures_table(view.failures)
    images_dir = Path(tempfile.gettempdir()) / "datamill-ui-images"
    pngs = sorted(view.images, key=lambda p: (p.name != "report.png", str(p)))
    chart = _servable(pngs[0], images_dir) if pngs else None
    report = viewer.report_markdown(view.report)
    if len(pngs) > 1:
        report += "\n\nother charts in the folder: " + ", ".join(
            f"`{p.relative_to(view.path)}`" for p in pngs[1:]
        )
    first = (
        viewer.render_row(view.rows[0], view.kind)
        if view.rows
        else '<div class="dm-empty">no rows in this folder</div>'
    )
    return (
        viewer.summary_markdown(view),
        view.rows,
        first,
        pd.DataFrame(body, columns=headers),
        pd.DataFrame(f_body, columns=f_headers),
        report,
        chart,
        0,
    )


def show_row(rows: list[dict[str, Any]], index: float, step: int = 0) -> tuple[str, float, str]:
    """(row html, new index, 'row i of n') for browsing."""
    if not rows:
        return '<div class="dm-empty">no rows</div>', 0, "no rows"
    i = int(index or 0) + step
    i = max(0, min(len(rows) - 1, i))
    return viewer.render_row(rows[i], viewer.row_kind(rows)), i, f"row {i + 1} of {len(rows)}"

"""The datamill web app (gradio): describe → preview → generate → download/push, and a viewer.

Screens (tabs):

- **Generate**: a description of the dataset → a drafted, editable system prompt (template, or
  "✨ draft with model") → kind (SFT / DPO) and technique (Magpie / SelfInstruct / prompting) →
  model (embedded, a GGUF path, or an OpenAI-compatible endpoint) → *Preview* a few rows →
  *Generate* N rows with a progress bar → download (parquet / jsonl) or push to the Hub.
- **Viewer**: open any datamill output folder (or a job of this app), browse rows (preference rows
  side by side), see run.json, failures.jsonl and the quality report.

Every run is a :class:`~datamill.ui.jobs.Job` over a pipeline from :mod:`datamill.ui.builder`,
i.e. ``arun_pipeline`` with an output folder and the shared call cache — the CLI's engine.
The handlers are plain functions of this module (tested without a browser); :func:`build_app`
only wires them to widgets.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DatamillError
from . import builder, drafting, viewer
from .hub import push
from .jobs import Job, JobRegistry

POLL_SECONDS = 0.5
DEFAULT_DESCRIPTION = ""
JOBS = JobRegistry()


# -- small helpers ---------------------------------------------------------------------------------
def _error(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, DatamillError) else f"{type(exc).__name__}: {exc}"
    return f'<div class="dm-error" id="dm-error">⚠ {html.escape(text)}</div>'


def progress_html(job: Job) -> str:
    """A progress bar and one line of counters for ``job``."""
    p = job.progress()
    if job.finished:
        css = f"dm-status-{job.state}"
        pct = 100 if job.state == "done" else round(100 * p.fraction)
        return (
            f'<div class="dm-bar"><div style="width:{pct}%"></div></div>'
            f'<div class="{css}" id="dm-job-state" data-state="{job.state}">{html.escape(job.summary_line())}</div>'
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


def export_files(folder: Path, rows: list[dict[str, Any]], name: str) -> tuple[str, str]:
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


def make_spec(
    system_prompt: str,
    kind: str,
    technique: str,
    model_source: str,
    gguf_path: str,
    url: str,
    model_name: str,
    api_key_env: str,
    max_tokens: float,
    temperature: float,
    keep_truncated: bool = False,
    num_rows: float = 10,
    description: str = "",
    name: str = "ui-dataset",
) -> builder.DatasetSpec:
    """The form's values → a checked :class:`~datamill.ui.builder.DatasetSpec`."""
    spec = builder.DatasetSpec(
        system_prompt=(system_prompt or "").strip(),
        kind=kind,
        technique=technique,
        num_rows=int(num_rows or 0),
        model=builder.model_spec(model_source, gguf_path, url, model_name, api_key_env),
        max_tokens=int(max_tokens or 0),
        temperature=float(temperature),
        keep_truncated=bool(keep_truncated),
        description=description or "",
        name=name,
    )
    spec.check()
    return spec


# -- handlers (plain functions: the unit tests call them directly) ---------------------------------
def draft_template(description: str) -> tuple[str, str]:
    """Description → (system prompt, note)."""
    try:
        return drafting.template_prompt(
            description
        ), "drafted from your description; edit it freely"
    except DatamillError as exc:
        return "", f"⚠ {exc}"


def draft_model(
    description: str, model_source: str, gguf_path: str, url: str, model_name: str, api_key_env: str
) -> tuple[str, str]:
    """Description → (system prompt drafted by the chosen model, note)."""
    try:
        model = builder.model_spec(model_source, gguf_path, url, model_name, api_key_env)
        draft = drafting.draft_with_model(description, model)
        return draft.text, draft.note
    except DatamillError as exc:
        return "", f"⚠ {exc}"


def run_preview(
    description: str,
    system_prompt: str,
    kind: str,
    technique: str,
    model_source: str,
    gguf_path: str,
    url: str,
    model_name: str,
    api_key_env: str,
    max_tokens: float,
    temperature: float,
    keep_truncated: bool,
    preview_rows: float,
    num_rows: float | None = None,
) -> Iterator[tuple[str, str]]:
    """Yields (status html, rows html) while a few rows are made (nothing is written).

    The preview runs the very recipe *Generate* will run (``num_rows`` rows), limited to its
    first source rows and topped up until ``preview_rows`` rows survive (or the attempt cap is
    reached), so generating afterwards finds the preview's calls in the cache. The rows html
    lists every row lost on the way, with its step and reason, below the rows."""
    try:
        n = int(preview_rows or 2)
        total = max(n, int(num_rows or n))
        spec = make_spec(
            system_prompt,
            kind,
            technique,
            model_source,
            gguf_path,
            url,
            model_name,
            api_key_env,
            max_tokens,
            temperature,
            keep_truncated,
            num_rows=total,
            description=description,
            name="ui-preview",
        )
        pipeline, limit = builder.preview_pipeline(spec, n)
    except DatamillError as exc:
        yield _error(exc), ""
        return
    job = JOBS.add(Job(pipeline, None, limit=limit, label="preview"))
    job.start()
    while not job.wait(POLL_SECONDS):
        yield progress_html(job), '<div class="dm-empty">making preview rows…</div>'
    if job.state != "done" or job.result is None:
        yield progress_html(job), ""
        return
    rows = job.result.rows[:n]
    yield progress_html(job), viewer.render_rows(rows) + viewer.render_losses(job.result.failures)


def run_generate(
    description: str,
    system_prompt: str,
    kind: str,
    technique: str,
    model_source: str,
    gguf_path: str,
    url: str,
    model_name: str,
    api_key_env: str,
    max_tokens: float,
    temperature: float,
    keep_truncated: bool,
    num_rows: float,
    output: str,
) -> Iterator[tuple[str, str, Any, Any, str, str]]:
    """Yields (status html, rows html, parquet file, jsonl file, job id, output folder)."""
    none = (None, None)
    try:
        folder = Path((output or "").strip() or default_output())
        spec = make_spec(
            system_prompt,
            kind,
            technique,
            model_source,
            gguf_path,
            url,
            model_name,
            api_key_env,
            max_tokens,
            temperature,
            keep_truncated,
            num_rows=num_rows,
            description=description,
            name=folder.name,
        )
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
    try:
        parquet, jsonl = export_files(folder, rows, folder.name)
    except DatamillError as exc:
        yield (
            progress_html(job) + _error(exc),
            viewer.render_rows(rows, limit=5),
            *none,
            job.id,
            str(folder),
        )
        return
    again = f'<div class="dm-meta">same run from the command line: <code>datamill run {html.escape(str(folder / "recipe.yaml"))} -o {html.escape(str(folder))}</code></div>'
    yield (
        progress_html(job) + again,
        viewer.render_rows(rows, limit=5),
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
            f"⚠ {sum(r.values())} rows lost at {step}: "
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


# -- the Blocks ------------------------------------------------------------------------------------
def build_app(title: str = "datamill — synthetic data generator") -> Any:
    """The gradio Blocks (not launched)."""
    try:
        import gradio as gr
    except ImportError as exc:
        from ..errors import MissingDependency

        raise MissingDependency("the web app", "ui") from exc

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(
            "# 🏭 datamill\nDescribe the dataset you want, preview a few rows, generate it, download or push it. "
            "Runs locally on the same engine and call cache as `datamill run`."
        )
        job_id = gr.State("")
        rows_state = gr.State([])
        with gr.Tabs(selected="generate") as tabs:
            with gr.Tab("Generate", id="generate", elem_id="tab-generate"):  # noqa: SIM117
                with gr.Row():
                    with gr.Column(scale=1):
                        gr.Markdown("### 1 · Describe")
                        description = gr.Textbox(
                            label="What is the dataset for?",
                            placeholder="customer support for a bike shop",
                            lines=2,
                            elem_id="description",
                        )
                        with gr.Row():
                            draft_btn = gr.Button(
                                "Draft system prompt", elem_id="draft-btn", variant="secondary"
                            )
                            draft_model_btn = gr.Button(
                                "✨ draft with model",
                                elem_id="draft-model-btn",
                                variant="secondary",
                            )
                        system_prompt = gr.Textbox(
                            label="System prompt (editable)", lines=4, elem_id="system-prompt"
                        )
                        draft_note = gr.Markdown("", elem_id="draft-note")
                        kind = gr.Radio(
                            [(v, k) for k, v in builder.KINDS.items()],
                            value="sft",
                            label="Dataset kind",
                            elem_id="kind",
                        )
                        technique = gr.Radio(
                            [(v, k) for k, v in builder.TECHNIQUES.items()],
                            value="magpie",
                            label="Technique for the user queries",
                            elem_id="technique",
                        )
                        with gr.Accordion("Model", open=False, elem_id="model-accordion"):
                            model_source = gr.Radio(
                                [(v, k) for k, v in builder.MODEL_SOURCES.items()],
                                value="embedded",
                                label="Model",
                                elem_id="model-source",
                            )
                            gguf_path = gr.Textbox(
                                label="GGUF file path",
                                placeholder="/models/qwen2.5-1.5b-instruct-q4_k_m.gguf",
                                elem_id="gguf-path",
                            )
                            with gr.Row():
                                url = gr.Textbox(
                                    label="Endpoint URL",
                                    placeholder="http://127.0.0.1:8000/v1",
                                    elem_id="endpoint-url",
                                )
                                model_name = gr.Textbox(
                                    label="Model name",
                                    placeholder="Qwen/Qwen2.5-7B-Instruct",
                                    elem_id="endpoint-model",
                                )
                                api_key_env = gr.Textbox(
                                    label="API key env variable",
                                    placeholder="OPENAI_API_KEY",
                                    elem_id="endpoint-key-env",
                                )
                        with gr.Row():
                            max_tokens = gr.Slider(
                                16,
                                2048,
                                value=256,
                                step=16,
                                label="Max tokens per answer",
                                elem_id="max-tokens",
                            )
                            temperature = gr.Slider(
                                0.0,
                                1.5,
                                value=builder.DatasetSpec.temperature,
                                step=0.05,
                                label="Temperature of the queries",
                                elem_id="temperature",
                            )
                        keep_truncated = gr.Checkbox(
                            value=False,
                            label="Keep answers cut at max tokens (otherwise they are dropped and listed as failures)",
                            elem_id="keep-truncated",
                        )
                    with gr.Column(scale=1):
                        gr.Markdown("### 2 · Preview")
                        with gr.Row():
                            preview_rows = gr.Number(
                                value=2,
                                minimum=1,
                                maximum=10,
                                precision=0,
                                label="Preview rows",
                                elem_id="preview-rows",
                            )
                            preview_btn = gr.Button(
                                "Preview", variant="primary", elem_id="preview-btn"
                            )
                        preview_status = gr.HTML("", elem_id="preview-status")
                        preview_out = gr.HTML("", elem_id="preview-rows-html")
                        gr.Markdown("### 3 · Generate")
                        with gr.Row():
                            num_rows = gr.Number(
                                value=20, minimum=1, precision=0, label="Rows", elem_id="num-rows"
                            )
                            output = gr.Textbox(
                                label="Output folder (blank: out/ui-<time>)",
                                elem_id="output-folder",
                            )
                        with gr.Row():
                            generate_btn = gr.Button(
                                "Generate", variant="primary", elem_id="generate-btn"
                            )
                            stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
                        stop_note = gr.Markdown("", elem_id="stop-note")
                        generate_status = gr.HTML("", elem_id="generate-status")
                        output_state = gr.Textbox(visible=False, elem_id="output-state")
                        with gr.Row():
                            dl_parquet = gr.DownloadButton(
                                "Download parquet", value=None, elem_id="download-parquet"
                            )
                            dl_jsonl = gr.DownloadButton(
                                "Download jsonl", value=None, elem_id="download-jsonl"
                            )
                            to_viewer = gr.Button("Open in viewer", elem_id="open-in-viewer")
                        generate_rows = gr.HTML("", elem_id="generate-rows-html")
                        with gr.Accordion("Push to the Hub", open=False, elem_id="push-accordion"):
                            repo_id = gr.Textbox(
                                label="Dataset repo",
                                placeholder="your-name/bike-shop-sft",
                                elem_id="push-repo",
                            )
                            token = gr.Textbox(
                                label="Hugging Face token with write access (blank: $HF_TOKEN or your saved login)",
                                type="password",
                                elem_id="push-token",
                            )
                            private = gr.Checkbox(value=True, label="private")
                            push_btn = gr.Button("Push to Hub", elem_id="push-btn")
                            push_status = gr.HTML("", elem_id="push-status")

            with gr.Tab("Viewer", id="viewer", elem_id="tab-viewer"):
                with gr.Row():
                    view_folder = gr.Textbox(
                        label="Output folder",
                        placeholder="out/ui-20250101-120000",
                        scale=4,
                        elem_id="view-folder",
                    )
                    jobs_dd = gr.Dropdown(
                        choices=[],
                        label="…or a job of this app",
                        scale=3,
                        elem_id="view-jobs",
                        allow_custom_value=True,
                    )
                    open_btn = gr.Button("Open", variant="primary", scale=1, elem_id="view-open")
                summary = gr.Markdown("", elem_id="view-summary")
                with gr.Row():
                    prev_btn = gr.Button("◀ previous", elem_id="view-prev")
                    row_label = gr.Markdown("", elem_id="view-row-label")
                    next_btn = gr.Button("next ▶", elem_id="view-next")
                row_index = gr.Number(value=0, visible=False, precision=0)
                row_html = gr.HTML("", elem_id="view-row")
                with gr.Accordion("All rows", open=False):
                    rows_table = gr.Dataframe(interactive=False, wrap=True, elem_id="view-table")
                with gr.Accordion("Failures (failures.jsonl)", open=True):
                    failures_df = gr.Dataframe(
                        interactive=False, wrap=True, elem_id="view-failures"
                    )
                with gr.Accordion("Quality report", open=True):
                    report_md = gr.Markdown("", elem_id="view-report")
                    report_imgs = gr.Image(
                        label="report chart",
                        type="filepath",
                        interactive=False,
                        elem_id="view-chart",
                    )

        model_fields = [model_source, gguf_path, url, model_name, api_key_env]
        form = [
            description,
            system_prompt,
            kind,
            technique,
            *model_fields,
            max_tokens,
            temperature,
            keep_truncated,
        ]

        draft_btn.click(draft_template, [description], [system_prompt, draft_note])
        description.submit(draft_template, [description], [system_prompt, draft_note])
        draft_model_btn.click(
            draft_model, [description, *model_fields], [system_prompt, draft_note]
        )
        preview_btn.click(
            run_preview,
            [*form, preview_rows, num_rows],
            [preview_status, preview_out],
            show_progress="hidden",
        )
        generate_btn.click(
            run_generate,
            [*form, num_rows, output],
            [generate_status, generate_rows, dl_parquet, dl_jsonl, job_id, output_state],
            show_progress="hidden",
        )
        stop_btn.click(stop_job, [job_id], [stop_note])
        generate_btn.click(lambda: "", None, [stop_note])
        push_btn.click(push_to_hub, [output_state, repo_id, token, private], [push_status])

        view_outputs = [
            summary,
            rows_state,
            row_html,
            rows_table,
            failures_df,
            report_md,
            report_imgs,
            row_index,
        ]

        def open_and_label(folder: str) -> tuple[Any, ...]:
            result = open_view(folder)
            label = f"row 1 of {len(result[1])}" if result[1] else ""
            return (*result, label)

        open_btn.click(open_and_label, [view_folder], [*view_outputs, row_label])
        view_folder.submit(open_and_label, [view_folder], [*view_outputs, row_label])

        def pick_job(folder: str) -> tuple[Any, ...]:
            return (folder, *open_and_label(folder))

        jobs_dd.focus(lambda: gr.Dropdown(choices=job_choices()), None, [jobs_dd])
        jobs_dd.input(pick_job, [jobs_dd], [view_folder, *view_outputs, row_label])

        def go_to_viewer(folder: str) -> tuple[Any, ...]:
            return (
                gr.Tabs(selected="viewer"),
                folder,
                gr.Dropdown(choices=job_choices()),
                *open_and_label(folder),
            )

        to_viewer.click(
            go_to_viewer, [output_state], [tabs, view_folder, jobs_dd, *view_outputs, row_label]
        )
        prev_btn.click(
            lambda r, i: show_row(r, i, -1),
            [rows_state, row_index],
            [row_html, row_index, row_label],
        )
        next_btn.click(
            lambda r, i: show_row(r, i, 1),
            [rows_state, row_index],
            [row_html, row_index, row_label],
        )
    return demo


def theme() -> Any:
    """A theme with system fonts only: the app must not fetch fonts from the network."""
    import gradio as gr

    return gr.themes.Soft(
        font=["ui-sans-serif", "system-ui", "DejaVu Sans", "sans-serif"],
        font_mono=["ui-monospace", "DejaVu Sans Mono", "monospace"],
    )


def launch(host: str = "127.0.0.1", port: int | None = None, *, quiet: bool = True) -> Any:
    """Build and start the app without blocking; returns the Blocks (``.local_url`` is its URL).

    Call ``demo.block_thread()`` to serve until Ctrl-C, ``demo.close()`` to stop.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build_app()
    demo.queue(default_concurrency_limit=4)
    try:
        demo.launch(
            server_name=host,
            server_port=port,
            prevent_thread_lock=True,
            share=False,
            inbrowser=False,
            quiet=quiet,
            show_error=True,
            ssr_mode=False,
            footer_links=[],
            theme=theme(),
            css=viewer.CSS,
        )
    except OSError as exc:  # gradio: "Cannot find empty port …"
        raise ConfigError(f"cannot serve on {host}:{port}: {exc}; choose another --port") from None
    return demo

"""The datamill web app (gradio): describe → preview → generate → download/push, and a viewer.

Screens (tabs):

- **Generate**: a description of the dataset → a drafted, editable system prompt (template, or
  "✨ draft with model") → kind (SFT / DPO) and technique (Magpie / SelfInstruct / prompting), or
  kind Verified and one of the built-in verified recipes (math, code, constraints) →
  model (embedded, a GGUF path, or an OpenAI-compatible endpoint) → *Preview* a few rows →
  *Generate* N rows with a progress bar → download (parquet / jsonl) or push to the Hub.
- **Viewer**: open any datamill output folder (or a job of this app), browse rows (preference rows
  side by side), see run.json, failures.jsonl and the quality report.

This module only lays out widgets and wires them to :mod:`datamill.ui.handlers` (plain
functions, tested without a browser). The form's widgets are listed in
:data:`~datamill.ui.form.FIELDS` order and reach the handlers as one
:class:`~datamill.ui.form.FormValues`. Only this module imports gradio, when the app is built.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import ConfigError
from . import builder, handlers, viewer
from .form import FIELDS, FormValues

INTRO = (
    "# 🏭 datamill\nDescribe the dataset you want, preview a few rows, generate it, download or push it. "
    "Runs locally on the same engine and call cache as `datamill run`."
)
Widgets = dict[str, Any]  #: widgets by name (the form's by their ``FormValues`` field)


def _gradio() -> Any:
    try:
        import gradio as gr
    except ImportError as exc:
        from ..errors import MissingDependency

        raise MissingDependency("the web app", "ui") from exc
    return gr


def _choices(labels: dict[str, str]) -> list[tuple[str, str]]:
    return [(label, key) for key, label in labels.items()]


# -- the Generate screen: the form (left), preview and generate (right) ------------------------------
def _describe_column(gr: Any) -> Widgets:
    """Description, system prompt, kind, technique and sampling: most of the form."""
    w: Widgets = {}
    gr.Markdown("### 1 · Describe")
    w["description"] = gr.Textbox(
        label="What is the dataset for?",
        placeholder="customer support for a bike shop",
        lines=2,
        elem_id="description",
    )
    with gr.Row():
        w["draft_btn"] = gr.Button("Draft system prompt", elem_id="draft-btn", variant="secondary")
        w["draft_model_btn"] = gr.Button(
            "✨ draft with model", elem_id="draft-model-btn", variant="secondary"
        )
    w["system_prompt"] = gr.Textbox(
        label="System prompt (editable)", lines=4, elem_id="system-prompt"
    )
    w["draft_note"] = gr.Markdown("", elem_id="draft-note")
    w["kind"] = gr.Radio(
        _choices(builder.KINDS), value=FormValues.kind, label="Dataset kind", elem_id="kind"
    )
    w["technique"] = gr.Radio(
        _choices(builder.TECHNIQUES),
        value=FormValues.technique,
        label="Technique for the user queries",
        elem_id="technique",
    )
    w["verified_recipe"] = gr.Dropdown(
        _choices(builder.VERIFIED_RECIPES),
        value=FormValues.verified_recipe,
        label="Verified recipe",
        info="a built-in recipe with its own prompts (the system prompt, technique and query "
        "temperature do not apply); only answers that pass its check become rows",
        visible=FormValues.kind == "verified",
        elem_id="verified-recipe",
    )
    with gr.Accordion("Model", open=False, elem_id="model-accordion"):
        w.update(_model_fields(gr))
    with gr.Row():
        w["max_tokens"] = gr.Slider(
            16,
            2048,
            value=FormValues.max_tokens,
            step=16,
            label="Max tokens per answer",
            elem_id="max-tokens",
        )
        w["temperature"] = gr.Slider(
            0.0,
            1.5,
            value=FormValues.temperature,
            step=0.05,
            label="Temperature of the queries",
            elem_id="temperature",
        )
    w["keep_truncated"] = gr.Checkbox(
        value=FormValues.keep_truncated,
        label="Keep answers cut at max tokens (otherwise they are dropped and listed as failures)",
        elem_id="keep-truncated",
    )
    return w


def _model_fields(gr: Any) -> Widgets:
    """The model choice: embedded, a GGUF file, or an OpenAI-compatible endpoint."""
    w: Widgets = {}
    w["model_source"] = gr.Radio(
        _choices(builder.MODEL_SOURCES),
        value=FormValues.model_source,
        label="Model",
        elem_id="model-source",
    )
    w["gguf_path"] = gr.Textbox(
        label="GGUF file path",
        placeholder="/models/qwen2.5-1.5b-instruct-q4_k_m.gguf",
        elem_id="gguf-path",
    )
    with gr.Row():
        w["url"] = gr.Textbox(
            label="Endpoint URL", placeholder="http://127.0.0.1:8000/v1", elem_id="endpoint-url"
        )
        w["model_name"] = gr.Textbox(
            label="Model name", placeholder="Qwen/Qwen2.5-7B-Instruct", elem_id="endpoint-model"
        )
        w["api_key_env"] = gr.Textbox(
            label="API key env variable", placeholder="OPENAI_API_KEY", elem_id="endpoint-key-env"
        )
    return w


def _run_column(gr: Any) -> Widgets:
    """Preview, generate (rows, folder, progress, stop, downloads) and push to the Hub."""
    w: Widgets = {}
    gr.Markdown("### 2 · Preview")
    with gr.Row():
        w["preview_rows"] = gr.Number(
            value=FormValues.preview_rows,
            minimum=1,
            maximum=10,
            precision=0,
            label="Preview rows",
            elem_id="preview-rows",
        )
        w["preview_btn"] = gr.Button("Preview", variant="primary", elem_id="preview-btn")
    w["preview_status"] = gr.HTML("", elem_id="preview-status")
    w["preview_out"] = gr.HTML("", elem_id="preview-rows-html")
    gr.Markdown("### 3 · Generate")
    with gr.Row():
        w["num_rows"] = gr.Number(
            value=FormValues.num_rows, minimum=1, precision=0, label="Rows", elem_id="num-rows"
        )
        w["output"] = gr.Textbox(
            label="Output folder (blank: out/ui-<time>)", elem_id="output-folder"
        )
    with gr.Row():
        w["generate_btn"] = gr.Button("Generate", variant="primary", elem_id="generate-btn")
        w["stop_btn"] = gr.Button("Stop", variant="stop", elem_id="stop-btn")
    w["stop_note"] = gr.Markdown("", elem_id="stop-note")
    w["generate_status"] = gr.HTML("", elem_id="generate-status")
    w["output_state"] = gr.Textbox(visible=False, elem_id="output-state")
    with gr.Row():
        w["dl_parquet"] = gr.DownloadButton(
            "Download parquet", value=None, elem_id="download-parquet"
        )
        w["dl_jsonl"] = gr.DownloadButton("Download jsonl", value=None, elem_id="download-jsonl")
        w["to_viewer"] = gr.Button("Open in viewer", elem_id="open-in-viewer")
    w["generate_rows"] = gr.HTML("", elem_id="generate-rows-html")
    with gr.Accordion("Push to the Hub", open=False, elem_id="push-accordion"):
        w["repo_id"] = gr.Textbox(
            label="Dataset repo", placeholder="your-name/bike-shop-sft", elem_id="push-repo"
        )
        w["token"] = gr.Textbox(
            label="Hugging Face token with write access (blank: $HF_TOKEN or your saved login)",
            type="password",
            elem_id="push-token",
        )
        w["private"] = gr.Checkbox(value=True, label="private")
        w["push_btn"] = gr.Button("Push to Hub", elem_id="push-btn")
        w["push_status"] = gr.HTML("", elem_id="push-status")
    return w


def _generate_screen(gr: Any) -> Widgets:
    with gr.Row():
        with gr.Column(scale=1):
            w = _describe_column(gr)
        with gr.Column(scale=1):
            w.update(_run_column(gr))
    w["job_id"] = gr.State("")
    return w


def _with_form(fn: Callable[[FormValues], Any]) -> Callable[..., Any]:
    """A gradio handler taking the form's widgets (in ``FIELDS`` order) for ``fn(form)``."""

    def handler(*values: Any) -> Any:
        return fn(FormValues.from_values(values))

    return handler


def _streaming_with_form(fn: Callable[[FormValues], Iterator[Any]]) -> Callable[..., Any]:
    """:func:`_with_form` for a handler that yields updates (gradio needs a generator function)."""

    def handler(*values: Any) -> Iterator[Any]:
        yield from fn(FormValues.from_values(values))

    return handler


def _kind_shows(kind: str) -> tuple[Any, Any, Any]:
    """The widgets a kind uses: a verified recipe picks its own prompts (no technique, no query
    temperature); the others make queries (no recipe)."""
    gr = _gradio()
    verified = kind == "verified"
    return (
        gr.Dropdown(visible=verified),
        gr.Radio(visible=not verified),
        gr.Slider(visible=not verified),
    )


def _wire_generate(w: Widgets) -> None:
    form = [w[name] for name in FIELDS]
    w["draft_btn"].click(
        handlers.draft_template, [w["description"]], [w["system_prompt"], w["draft_note"]]
    )
    w["kind"].change(
        _kind_shows, [w["kind"]], [w["verified_recipe"], w["technique"], w["temperature"]]
    )
    w["description"].submit(
        handlers.draft_template, [w["description"]], [w["system_prompt"], w["draft_note"]]
    )
    w["draft_model_btn"].click(
        _with_form(handlers.draft_model), form, [w["system_prompt"], w["draft_note"]]
    )
    w["preview_btn"].click(
        _streaming_with_form(handlers.run_preview),
        form,
        [w["preview_status"], w["preview_out"]],
        show_progress="hidden",
    )
    generated = [
        "generate_status",
        "generate_rows",
        "dl_parquet",
        "dl_jsonl",
        "job_id",
        "output_state",
    ]
    w["generate_btn"].click(
        _streaming_with_form(handlers.run_generate),
        form,
        [w[name] for name in generated],
        show_progress="hidden",
    )
    w["stop_btn"].click(handlers.stop_job, [w["job_id"]], [w["stop_note"]])
    w["generate_btn"].click(lambda: "", None, [w["stop_note"]])
    w["push_btn"].click(
        handlers.push_to_hub,
        [w["output_state"], w["repo_id"], w["token"], w["private"]],
        [w["push_status"]],
    )


# -- the Viewer screen --------------------------------------------------------------------------------
#: What opening a folder fills, in ``handlers.open_view``'s order, then the row label.
VIEW_OUTPUTS = [
    "summary",
    "rows_state",
    "row_html",
    "rows_table",
    "failures_df",
    "report_md",
    "report_imgs",
    "row_index",
    "row_label",
]


def _viewer_screen(gr: Any) -> Widgets:
    w: Widgets = {"rows_state": gr.State([])}
    with gr.Row():
        w["view_folder"] = gr.Textbox(
            label="Output folder",
            placeholder="out/ui-20250101-120000",
            scale=4,
            elem_id="view-folder",
        )
        w["jobs_dd"] = gr.Dropdown(
            choices=[],
            label="…or a job of this app",
            scale=3,
            elem_id="view-jobs",
            allow_custom_value=True,
        )
        w["open_btn"] = gr.Button("Open", variant="primary", scale=1, elem_id="view-open")
    w["summary"] = gr.Markdown("", elem_id="view-summary")
    with gr.Row():
        w["prev_btn"] = gr.Button("◀ previous", elem_id="view-prev")
        w["row_label"] = gr.Markdown("", elem_id="view-row-label")
        w["next_btn"] = gr.Button("next ▶", elem_id="view-next")
    w["row_index"] = gr.Number(value=0, visible=False, precision=0)
    w["row_html"] = gr.HTML("", elem_id="view-row")
    with gr.Accordion("All rows", open=False):
        w["rows_table"] = gr.Dataframe(interactive=False, wrap=True, elem_id="view-table")
    with gr.Accordion("Failures (failures.jsonl)", open=True):
        w["failures_df"] = gr.Dataframe(interactive=False, wrap=True, elem_id="view-failures")
    with gr.Accordion("Quality report", open=True):
        w["report_md"] = gr.Markdown("", elem_id="view-report")
        w["report_imgs"] = gr.Image(
            label="report chart", type="filepath", interactive=False, elem_id="view-chart"
        )
    return w


def open_and_label(folder: str) -> tuple[Any, ...]:
    """:func:`handlers.open_view` plus the row label ('row 1 of n'): the ``VIEW_OUTPUTS``."""
    result = handlers.open_view(folder)
    label = f"row 1 of {len(result[1])}" if result[1] else ""
    return (*result, label)


def _wire_viewer(gr: Any, v: Widgets, g: Widgets, tabs: Any) -> None:
    shown = [v[name] for name in VIEW_OUTPUTS]
    v["open_btn"].click(open_and_label, [v["view_folder"]], shown)
    v["view_folder"].submit(open_and_label, [v["view_folder"]], shown)

    def pick_job(folder: str) -> tuple[Any, ...]:
        return (folder, *open_and_label(folder))

    v["jobs_dd"].focus(lambda: gr.Dropdown(choices=handlers.job_choices()), None, [v["jobs_dd"]])
    v["jobs_dd"].input(pick_job, [v["jobs_dd"]], [v["view_folder"], *shown])

    def go_to_viewer(folder: str) -> tuple[Any, ...]:
        return (
            gr.Tabs(selected="viewer"),
            folder,
            gr.Dropdown(choices=handlers.job_choices()),
            *open_and_label(folder),
        )

    g["to_viewer"].click(
        go_to_viewer, [g["output_state"]], [tabs, v["view_folder"], v["jobs_dd"], *shown]
    )
    browse = [v["rows_state"], v["row_index"]]
    browsed = [v["row_html"], v["row_index"], v["row_label"]]
    v["prev_btn"].click(lambda r, i: handlers.show_row(r, i, -1), browse, browsed)
    v["next_btn"].click(lambda r, i: handlers.show_row(r, i, 1), browse, browsed)


# -- the app -------------------------------------------------------------------------------------------
def build_app(title: str = "datamill — synthetic data generator") -> Any:
    """The gradio Blocks (not launched): the two screens, then their wiring."""
    gr = _gradio()
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        with gr.Tabs(selected="generate") as tabs:
            with gr.Tab("Generate", id="generate", elem_id="tab-generate"):
                generate = _generate_screen(gr)
            with gr.Tab("Viewer", id="viewer", elem_id="tab-viewer"):
                view = _viewer_screen(gr)
        _wire_generate(generate)
        _wire_viewer(gr, view, generate, tabs)
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

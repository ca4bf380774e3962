"""The web app end to end, in a real headless Chromium, on the embedded model.

A person's path, on the form's defaults (Magpie, SFT, 256 answer tokens, the embedded model):
type a description that is a clause, not a noun phrase → draft the system prompt (it must read as
sentences) → preview 2 rows (it must show 2 rows, topping up past lost ones, and list what was
lost and why beside them) → generate 3 rows → download parquet and jsonl → open the dataset in
the viewer; then a preference dataset
(made on the fake model, which can play a judge) in the viewer, side by side. A screenshot of
each screen goes to tests/screenshots/.

Needs Debian's chromium at /usr/bin/chromium (``scripts/install-browser.sh`` installs it);
skipped, saying so, without it. Playwright drives that browser; its own download is not used.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).parent / "screenshots"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SLOW = 20 * 60 * 1000  # ms: the embedded model on a busy 2-core machine
#: a description that is a clause, not a noun phrase (issue 21: the old template broke on it)
SOURDOUGH = "questions a beginner asks about baking sourdough bread"
#: the drafted prompt's grammar: fixed sentences, the description only ever quoted after a colon
PROMPT_SHAPE = re.compile(
    r'You are an AI assistant\. Users come to you with questions and requests on this topic: "([^"]+)"\. '
    r"Answer each one accurately, clearly and concisely\."
)

pytestmark = [pytest.mark.real, pytest.mark.timeout(3600)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def app_url() -> Iterator[str]:
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} is not installed: run scripts/install-browser.sh (as root) to enable the browser test"
        )
    pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'"
    )
    from datamill.errors import ConfigError
    from datamill.ui.app import launch

    for tries_left in reversed(range(5)):  # a picked port may be taken before the app binds it
        try:
            demo = launch("127.0.0.1", free_port())
            break
        except ConfigError:
            if not tries_left:
                raise
    try:
        yield str(demo.local_url)
    finally:
        demo.close()


def words(text: str) -> str:
    return " ".join(text.split())


def set_number(page, selector: str, value: int) -> None:  # type: ignore[no-untyped-def]
    box = page.locator(f"{selector} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")
    box.blur()


def fake_preference_folder(path: Path) -> Path:
    """A DPO dataset from the form's recipe, run on a fake model that answers and judges."""
    from datamill import FakeModel
    from datamill.pipeline.graph import ModelSettings
    from datamill.ui import builder, drafting

    def handler(request, i):  # type: ignore[no-untyped-def]
        if request.prompt is not None:
            return "My rear brake squeals when I stop. How do I fix it?"
        if request.json_schema is not None:  # the judge: rate each shown text by its content
            user = request.messages[-1]["content"]
            shown = re.findall(r"<text (\d+)>\n(.*?)\n</text \1>", user, flags=re.S)
            good = {
                "rationale": "Names the likely cause and gives safe, ordered steps.",
                "rating": 5,
            }
            bad = {"rationale": "Vague and suggests oil on the rim, which is unsafe.", "rating": 2}
            return json.dumps(
                {f"text_{k}": good if text.startswith("Clean") else bad for k, text in shown}
            )
        if request.temperature < 0.5:
            return "Clean the rim and pads with alcohol, check pad alignment (toe-in), and tighten the caliper bolts."
        return "Just spray some oil on it and it will be fine, brakes always squeal anyway."

    spec = builder.DatasetSpec(
        system_prompt=drafting.template_prompt("customer support for a bike shop"),
        kind="dpo",
        technique="magpie",
        num_rows=2,
        model="fake",
        max_tokens=64,
    )
    pipeline = builder.build_pipeline(spec)
    fake = FakeModel(handler, name="bike-shop-judge")  # its own cache identity
    pipeline.models = {
        n: ModelSettings(spec=fake, sampling=s.sampling) for n, s in pipeline.models.items()
    }
    result = pipeline.run(path)
    assert len(result.rows) == 2, result.stats.losses()
    return path


def test_describe_preview_generate_download_view(app_url: str, tmp_path: Path) -> None:
    import pyarrow.parquet as pq
    from playwright.sync_api import expect, sync_playwright

    SCREENSHOTS.mkdir(exist_ok=True)
    out = tmp_path / "sourdough"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.goto(app_url)

        # 1. describe → a drafted, user-query-focused system prompt that reads as sentences
        page.locator("#description textarea").fill(SOURDOUGH)
        page.click("#draft-btn")
        prompt = page.locator("#system-prompt textarea")
        expect(prompt).not_to_have_value("")
        shape = PROMPT_SHAPE.fullmatch(prompt.input_value())
        assert shape is not None, prompt.input_value()  # fixed sentences, the topic quoted
        assert shape.group(1) == SOURDOUGH  # the clause whole, not cut to "a beginner asks …"
        page.locator("#model-accordion button").first.click()
        expect(page.locator("#model-source")).to_contain_text("GGUF file")
        expect(page.locator("#model-source")).to_contain_text("OpenAI-compatible endpoint")
        expect(page.locator("#model-source input[value=embedded]")).to_be_checked()
        page.screenshot(path=str(SCREENSHOTS / "01-describe.png"), full_page=True)

        # 2. preview 2 rows with Magpie on the embedded model, on the form's defaults: the rows
        #    asked for (lost ones made up by more attempts), and every loss listed with its reason
        page.click("#preview-btn")
        page.wait_for_selector(
            "#preview-status [data-state=done], #preview-status [data-state=failed], #preview-status .dm-error",
            timeout=SLOW,
        )
        expect(page.locator("#preview-status [data-state=done]")).to_be_visible()
        preview = page.locator("#preview-status").inner_text()
        counts = re.search(r"(\d+) rows? \(model calls (\d+)", preview)
        topup = re.search(
            r"target of 2 rows reached after (\d+) source rows tried(?: \((\d+) rows? beyond it cut\))?",
            preview,
        )
        assert counts and topup, preview  # the rows asked for, and the top-up's outcome
        made, preview_calls = int(counts.group(1)), int(counts.group(2))
        tried, trimmed = int(topup.group(1)), int(topup.group(2) or 0)
        lost = sum(int(n) for n in re.findall(r"(\d+) rows? lost at", preview))
        assert made == 2 and tried == made + lost + trimmed, preview  # every attempt accounted for
        rows = page.locator("#preview-rows-html .dm-row")
        expect(rows).to_have_count(2)
        expect(page.locator("#preview-rows-html .dm-lost")).to_have_count(lost)
        for _step, detail in re.findall(r"lost at (\w+): ([^;]+)", preview):
            for part in detail.split(", "):  # "1 instruction: truncated at max_tokens"
                count, reason = part.strip().split(" ", 1)
                listed = page.locator("#preview-rows-html .dm-lost-reason", has_text=reason)
                expect(listed).to_have_count(int(count))
        expect(rows.first.locator(".dm-system")).to_contain_text(SOURDOUGH)
        expect(rows.first.locator(".dm-user .dm-text")).not_to_be_empty()
        page.screenshot(path=str(SCREENSHOTS / "02-preview.png"), full_page=True)

        # 3. generate 3 rows into a chosen folder, with a progress bar
        set_number(page, "#num-rows", 3)
        page.locator("#output-folder textarea, #output-folder input").first.fill(str(out))
        page.click("#generate-btn")
        page.wait_for_selector("#generate-status .dm-bar", timeout=SLOW)
        page.screenshot(path=str(SCREENSHOTS / "03-generating.png"), full_page=True)
        page.wait_for_selector(
            "#generate-status [data-state=done], #generate-status [data-state=failed], #generate-status .dm-error",
            timeout=SLOW,
        )
        status = page.locator("#generate-status")
        expect(status).to_contain_text(f"rows to {out}")
        run = json.loads((out / "run.json").read_text(encoding="utf-8"))
        assert run["rows"] == 3 and run["reached"], run  # topped up past lost rows
        assert run["attempts"] == run["rows"] + run["failed_rows"] + run.get("trimmed", 0), run
        if run["attempts"] >= tried:  # it tried every row the preview tried: none paid twice
            assert run["cache_hits"] >= preview_calls, run
        expect(status).to_contain_text(f"wrote {run['rows']} rows to {out}")
        n = run["rows"]
        # a push without a network fails with one clear line, in the page
        page.locator("#push-accordion button").first.click()
        page.locator("#push-repo textarea, #push-repo input").first.fill("alice/sourdough-sft")
        page.locator("#push-token input").fill("hf_not_a_real_token")
        page.click("#push-btn")
        expect(page.locator("#push-status")).to_contain_text(
            "push to alice/sourdough-sft failed:", timeout=120_000
        )
        assert "Traceback" not in page.locator("#push-status").inner_text()
        page.screenshot(path=str(SCREENSHOTS / "04-generated.png"), full_page=True)
        for name in (
            "data/train-00000-of-00001.parquet",
            "run.json",
            "failures.jsonl",
            "README.md",
            "recipe.yaml",
        ):
            assert (out / name).exists(), name

        # 4. download both formats
        with page.expect_download() as info:
            page.click("#download-parquet")
        parquet = tmp_path / "download.parquet"
        info.value.save_as(parquet)
        table = pq.read_table(parquet)
        assert table.num_rows == n and "messages" in table.column_names
        with page.expect_download() as info:
            page.click("#download-jsonl")
        jsonl = tmp_path / "download.jsonl"
        info.value.save_as(jsonl)
        lines = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
        assert len(lines) == n and [m["role"] for m in lines[0]["messages"]] == [
            "system",
            "user",
            "assistant",
        ]
        assert lines[0]["messages"][1]["content"] == table.column("instruction")[0].as_py()

        # 5. open it in the viewer: rows, run summary, failures, quality report
        page.click("#open-in-viewer")
        page.wait_for_selector("#view-row .dm-row", timeout=60_000)
        expect(page.locator("#view-summary")).to_contain_text(f"{n} rows (sft)")
        expect(page.locator("#view-summary")).to_contain_text(
            f"model calls {run['model_calls']} · cache hits {run['cache_hits']}"
        )
        expect(page.locator("#view-row-label")).to_contain_text(f"row 1 of {n}")
        assert words(page.locator("#view-row .dm-user .dm-text").inner_text()) == words(
            lines[0]["messages"][1]["content"]
        )
        page.click("#view-next")
        expect(page.locator("#view-row-label")).to_contain_text(f"row {min(2, n)} of {n}")
        assert words(page.locator("#view-row .dm-user .dm-text").inner_text()) == words(
            lines[min(1, n - 1)]["messages"][1]["content"]
        )
        failures = page.locator("#view-failures")
        for record in map(
            json.loads, (out / "failures.jsonl").read_text(encoding="utf-8").splitlines()
        ):
            expect(failures).to_contain_text(record["reason"])
        expect(page.locator("#view-report")).to_contain_text("Quality report")
        expect(page.locator("#view-chart img")).to_be_visible()  # the report's PNG
        page.screenshot(path=str(SCREENSHOTS / "05-viewer.png"), full_page=True)

        # 6. a preference dataset in the viewer: prompt, chosen vs rejected, scores, rationales
        dpo = fake_preference_folder(tmp_path / "bike-dpo")
        page.locator("#view-folder textarea, #view-folder input").first.fill(str(dpo))
        page.click("#view-open")
        expect(page.locator("#view-summary")).to_contain_text("2 rows (dpo)")
        row = page.locator("#view-row .dm-dpo")
        expect(row.locator(".dm-prompt")).to_contain_text("rear brake squeals")
        expect(row.locator(".dm-chosen")).to_contain_text("score 5")
        expect(row.locator(".dm-chosen")).to_contain_text("pad alignment")
        expect(row.locator(".dm-chosen .dm-rationale")).to_contain_text("safe, ordered steps")
        expect(row.locator(".dm-rejected")).to_contain_text("score 2")
        expect(row.locator(".dm-rejected .dm-rationale")).to_contain_text("unsafe")
        box_chosen, box_rejected = (
            row.locator(".dm-chosen").bounding_box(),
            row.locator(".dm-rejected").bounding_box(),
        )
        assert box_chosen and box_rejected and box_chosen["x"] < box_rejected["x"]  # side by side
        assert abs(box_chosen["y"] - box_rejected["y"]) < 2
        page.screenshot(path=str(SCREENSHOTS / "06-viewer-preference.png"), full_page=True)
        browser.close()

"""The course's six exercises as notebooks (``examples/*.ipynb``), executed end to end on the
embedded model with small limits, so they cannot rot."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
FOLDERS = {  # notebook → the output folder it writes (its name in the notebook's settings cell)
    "1_instruction_basic": "instruction-basic",
    "2_instruction_seeded": "instruction-seeded",
    "3_instruction_evolved": "instruction-evolved",
    "4_preference_basic": "preference-basic",
    "5_preference_evolved": "preference-evolved",
    "6_preference_critiqued": "preference-critiqued",
}


def code_of(path: Path) -> str:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


def test_six_exercise_notebooks_on_the_python_api() -> None:
    assert [p.stem for p in NOTEBOOKS] == list(FOLDERS)
    levels = []
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text(encoding="utf-8"))
        title = "".join(nb["cells"][0]["source"]).splitlines()[0]
        levels.append(next(ch for ch in "🐢🐕🦁" if ch in title))
        code = code_of(path)
        assert "from datamill import" in code and "Pipeline(" in code and ".run(OUT" in code
        assert "nest_asyncio" not in code and "yaml" not in code.lower()
        assert f'"{FOLDERS[path.stem]}"' in code
        assert "target_rows=ROWS" in code  # asking for ROWS rows gets ROWS rows (pipeline.topup)
        assert all(
            not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"
        )  # stored clean
    assert levels == ["🐢", "🐕", "🦁", "🐢", "🐕", "🦁"]


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The ``python3`` kernel of this interpreter; installed into a temp dir when missing."""
    from jupyter_client.kernelspec import KernelSpecManager

    if "python3" not in KernelSpecManager().find_kernel_specs():
        from ipykernel.kernelspec import install

        prefix = tmp_path_factory.mktemp("kernels")
        install(prefix=str(prefix), kernel_name="python3")
        os.environ["JUPYTER_PATH"] = os.pathsep.join(
            filter(None, [str(prefix / "share" / "jupyter"), os.environ.get("JUPYTER_PATH")])
        )
    return "python3"


@pytest.mark.real
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_end_to_end(
    path: Path, kernel_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbformat
    from nbclient import NotebookClient

    # one row wanted, short answers: a 48-token answer is often cut, so keep cut answers (the
    # notebooks drop them by default); the top-up draws more source rows past any other check
    monkeypatch.setenv("DATAMILL_EXAMPLE_ROWS", "1")
    monkeypatch.setenv("DATAMILL_EXAMPLE_MAX_TOKENS", "48")
    monkeypatch.setenv("DATAMILL_EXAMPLE_TRUNCATED", "keep")
    monkeypatch.setenv("DATAMILL_EXAMPLE_OUT", str(tmp_path / "out"))
    monkeypatch.delenv("DATAMILL_EXAMPLE_REPO", raising=False)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name=kernel_name, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    folder = tmp_path / "out" / FOLDERS[path.stem]
    run = json.loads((folder / "run.json").read_text())
    assert run["complete"] is True
    assert run["model_calls"] + run["cache_hits"] > 0  # it really asked the model
    assert run["target_rows"] == 1 and run["reached"] is True and run["rows"] == 1, run["failures"]
    assert (folder / "data" / "train-00000-of-00001.parquet").exists() and (
        folder / "README.md"
    ).exists()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    texts = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "not pushed: set DATAMILL_EXAMPLE_REPO" in texts
    assert f"{run['rows']} rows, {run['model_calls']} model calls" in texts
    # the run showed a notebook progress bar (an ipywidgets widget)
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)

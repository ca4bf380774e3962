"""Shared fixtures. Every test gets its own cache file and working folder; no test touches the
user's ``~/.cache/datamill``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# run reports skip the (slow to load) sentence embedder unless a test turns it back on
os.environ.setdefault("DATAMILL_REPORT_EMBEDDINGS", "0")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache" / "calls.sqlite"
    monkeypatch.setenv("DATAMILL_CACHE", str(path))
    return path


@pytest.fixture(scope="session")
def embedded_model():
    """One loaded embedded model shared by the real-model tests of a session."""
    from datamill.models.llamacpp import LlamaCppModel

    return LlamaCppModel(n_ctx=2048)


@pytest.fixture(scope="session")
def qwen3_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the embedded SmolLM2-135M GGUF carrying a Qwen3-style chat template
    (``tests/gguf_helpers.py``), built once per session."""
    from datamill.models.llamacpp import embedded_model_path
    from gguf_helpers import QWEN3_STYLE_TEMPLATE, gguf_with_chat_template

    target = tmp_path_factory.mktemp("gguf") / "smollm2-qwen3-template.gguf"
    return gguf_with_chat_template(embedded_model_path(), target, QWEN3_STYLE_TEMPLATE)

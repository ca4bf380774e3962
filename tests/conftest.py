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

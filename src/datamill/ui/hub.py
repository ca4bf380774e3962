"""Pushing the app's dataset to the Hugging Face Hub: ``datamill push`` behind a button.

The upload itself is :func:`datamill.io.hub.push_to_hub` (the same files, checks and fast
offline failure as the CLI). This module adds what the page needs: a check that there is a
generated folder at all, the token from the form (blank: ``$HF_TOKEN`` or the saved login), and
every failure as one line that names the repository.

Deliberately not here: a token store. The token is used for this one call and never kept.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, DatamillError, OutputError


def check_push(folder: str | Path | None) -> Path:
    """The folder to push, or one clear line when there is nothing to push yet."""
    if not folder:
        raise ConfigError("nothing to push yet: generate a dataset first")
    path = Path(folder)
    if not (path / "data").is_dir():
        raise ConfigError(f"{path} has no data/ folder: generate the dataset before pushing it")
    return path


def push(folder: str | Path | None, repo_id: str, token: str = "", private: bool = True) -> str:
    """Upload ``folder`` to the dataset repository ``repo_id``; returns its URL.

    Raises one :class:`~datamill.errors.DatamillError` line (``push to REPO failed: …``).
    """
    path = check_push(folder)
    repo = (repo_id or "").strip()
    if not repo:
        raise ConfigError("give the dataset repository to push to, e.g. your-name/bike-shop-sft")
    from ..io.hub import push_to_hub

    try:
        pushed = push_to_hub(path, repo, private=private, token=(token or "").strip() or None)
    except DatamillError as exc:
        raise OutputError(f"push to {repo} failed: {exc}") from None
    return pushed.url

"""Publishing an output folder to the Hugging Face Hub as a dataset repository.

``push_to_hub(folder, "ORG/NAME", private=False)`` (and ``datamill push OUT ORG/NAME``) uploads
what a run wrote: the parquet data, the dataset card (``README.md``) and the report
(``run.json``, ``failures.jsonl``, ``report.json``/``report.png``) in one commit, creating the
repository when it does not exist. Nothing else goes: not hidden files (locks, temporaries), not
``forecast.json`` (its numbers are in ``run.json`` when they belong to this run).

The token comes from ``token=``, else ``$HF_TOKEN``, else the Hub's saved login
(``hf auth login``). The Hub's address is ``$HF_ENDPOINT`` (read when pushing) or
huggingface.co. Before anything is read or hashed, the endpoint is reached with a short timeout,
so without a network the push fails at once with one line instead of retrying for minutes.

Before anything is sent, the licence pushed (``license=``, else the card's) is checked against
the licences of the models and inputs in ``run.json`` (``licence_card.push_licence``: a refusal
is one line unless ``accept_licence_risk`` gives a reason, recorded in the card).

Deliberately not here: downloading (``io.sources`` reads Hub datasets), dataset cards (``io.sinks``).
"""

from __future__ import annotations

import os
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..errors import ConfigError, InputError, MissingDependency, OutputError
from ..licence_card import push_licence

#: what goes up, relative to the output folder
UPLOAD_PATTERNS = [
    "data/*.parquet",
    "README.md",
    "run.json",
    "failures.jsonl",
    "report.json",
    "report.png",
]
CONNECT_TIMEOUT = 5.0
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")


@dataclass
class Pushed:
    """Where a dataset went and what was sent."""

    url: str
    repo_id: str
    files: list[str] = field(default_factory=list)
    complete: bool = True  #: False when the run was stopped early (a budget cap): partial data
    #: what the licence check warned about (inputs of unknown licence …): ``datamill.provenance``
    warnings: list[str] = field(default_factory=list)


def _hub() -> Any:
    try:
        import huggingface_hub
        import huggingface_hub.constants
        import huggingface_hub.errors
    except ImportError as exc:
        raise MissingDependency("pushing to the Hugging Face Hub", "hf") from exc
    return huggingface_hub


def check_repo_id(repo_id: str) -> str:
    """``ORG/NAME`` (or ``NAME`` for your own namespace), letters, digits, ``-``, ``_``, ``.``."""
    repo_id = repo_id.strip()
    if (
        not _REPO_ID.match(repo_id)
        or ".." in repo_id
        or "--" in repo_id
        or repo_id.endswith((".", "-"))
    ):
        raise ConfigError(
            f"{repo_id!r} is not a Hub repository id: use ORG/NAME with letters, digits, '-', '_' and '.'"
        )
    return repo_id


def check_folder(folder: str | Path) -> tuple[Path, list[str], bool]:
    """The files of a finished output folder that go up, and whether the run was complete."""
    import json

    path = Path(folder)
    if not path.is_dir():
        raise InputError(f"{path} is not a folder: give the output folder of `datamill run`")
    data = (
        sorted(p.relative_to(path).as_posix() for p in (path / "data").glob("*.parquet"))
        if (path / "data").is_dir()
        else []
    )
    if not data or not (path / "README.md").exists():
        raise InputError(
            f"{path} is not a datamill output folder (no data/*.parquet and README.md): run `datamill run … -o {path}` first"
        )
    if not (path / "run.json").exists():
        raise InputError(
            f"{path} has no run.json: its run did not finish writing; run it again before pushing"
        )
    try:
        complete = bool(
            json.loads((path / "run.json").read_text(encoding="utf-8")).get("complete", True)
        )
    except (ValueError, OSError):
        complete = True
    files = data + [name for name in UPLOAD_PATTERNS[1:] if (path / name).is_file()]
    return path, files, complete


def hub_endpoint() -> str:
    """``$HF_ENDPOINT`` now, else the endpoint huggingface_hub was configured with."""
    env = os.environ.get("HF_ENDPOINT")
    if env:
        return env.rstrip("/")
    return str(_hub().constants.ENDPOINT).rstrip("/")


def check_online(endpoint: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail fast, with one line, when the Hub cannot be reached (no network, offline mode)."""
    hub = _hub()
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    if flag in ("1", "true", "yes", "on") or hub.constants.is_offline_mode():
        raise OutputError(
            "cannot push: offline mode is on (HF_HUB_OFFLINE); unset it and try again"
        )
    url = urlparse(endpoint)
    host = url.hostname
    if url.scheme not in ("http", "https") or not host:
        raise ConfigError(f"HF_ENDPOINT {endpoint!r} is not an http(s) URL")
    port = url.port or (443 if url.scheme == "https" else 80)
    box: dict[str, BaseException | None] = {}

    def probe() -> None:  # name resolution has no timeout of its own: bound it from outside
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            box["error"] = None
        except OSError as exc:
            box["error"] = exc

    thread = threading.Thread(target=probe, name="datamill-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    if "error" not in box:
        raise OutputError(
            f"cannot reach the Hub at {endpoint} (no answer in {timeout:.0f}s): check the network and try again"
        )
    error = box["error"]
    if error is not None:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise OutputError(
            f"cannot reach the Hub at {endpoint} ({reason}): check the network (or HF_ENDPOINT) and try again"
        )


def resolve_token(token: str | None = None) -> str:
    """``token``, else ``$HF_TOKEN``, else the saved login; none is one clear line."""
    found = token or _hub().get_token()
    if not found:
        raise ConfigError(
            "no Hugging Face token: set HF_TOKEN or run `hf auth login`, then push again"
        )
    return str(found)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("…" if len(text) > 300 else "")


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    timeout: float = CONNECT_TIMEOUT,
    license: str | None = None,  # the Hub card's own word
    accept_licence_risk: str | None = None,
) -> Pushed:
    """Upload a datamill output folder to the dataset repository ``repo_id`` (made if missing).

    ``license``: the licence to publish under (the card's header is set to it), checked against
    the licences of the models and inputs the folder's ``run.json`` records; one the table
    forbids is refused (:class:`ConfigError`) unless ``accept_licence_risk`` gives a reason,
    which the card records (``datamill.provenance.push_licence``; a guard, not legal advice).

    >>> from datamill import push_to_hub
    >>> push_to_hub("out/instructions-basic", "my-org/my-sft-data", private=True)  # doctest: +SKIP
    """
    repo_id = check_repo_id(repo_id)
    path, files, complete = check_folder(folder)
    push_licence(path, license, accept_licence_risk, write=False)  # refused before any network
    endpoint = hub_endpoint()
    check_online(endpoint, timeout)
    secret = resolve_token(token)
    warnings = push_licence(path, license, accept_licence_risk)
    hub = _hub()
    api = hub.HfApi(endpoint=endpoint, token=secret)
    message = commit_message or f"Upload dataset made with datamill ({len(files)} files)"
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(path),
            repo_id=repo_id,
            repo_type="dataset",
            allow_patterns=files,
            commit_message=message,
        )
    except hub.errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 401:
            raise OutputError(
                "the Hub refused the token (401): check HF_TOKEN or run `hf auth login`"
            ) from None
        if status == 403:
            raise OutputError(
                f"the token may not write to {repo_id} (403): use a write token, or a namespace you belong to"
            ) from None
        raise OutputError(f"the Hub refused the upload to {repo_id}: {_one_line(exc)}") from None
    except Exception as exc:  # connection lost mid-way, invalid card metadata, odd server answers
        raise OutputError(
            f"push to {repo_id} failed: {type(exc).__name__}: {_one_line(exc)}"
        ) from None
    return Pushed(
        url=f"{endpoint}/datasets/{repo_id}",
        repo_id=repo_id,
        files=files,
        complete=complete,
        warnings=warnings,
    )


__all__ = [
    "Pushed",
    "check_folder",
    "check_online",
    "check_repo_id",
    "push_to_hub",
    "resolve_token",
]

"""Pushing an output folder to the Hub, against a stand-in for the Hub's HTTP API on 127.0.0.1
(``HF_ENDPOINT``): the endpoints ``create_repo`` and ``upload_folder`` use, nothing more."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from datamill import FakeModel, FormatSFT, Pipeline, TextGeneration, push_to_hub
from datamill.cli import main
from datamill.errors import ConfigError, InputError, OutputError

TOKEN = "hf_standin_token"


@dataclass
class Hub:
    """What the stand-in saw: repos made, files committed, requests with their auth header."""

    url: str = ""
    repos: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)


def make_handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            hub.requests.append(("POST", self.path, self.headers.get("authorization")))
            if self.headers.get("authorization") != f"Bearer {TOKEN}":
                return self.reply(401, {"error": "Invalid credentials in Authorization header"})
            path = self.path.split("?")[0]
            if path == "/api/repos/create":
                body = json.loads(raw)
                repo = (
                    f"{body['organization']}/{body['name']}"
                    if body.get("organization")
                    else f"me/{body['name']}"
                )
                if repo in hub.repos:
                    return self.reply(
                        409,
                        {
                            "error": "You already created this dataset repo",
                            "url": f"{hub.url}/datasets/{repo}",
                        },
                    )
                hub.repos[repo] = body
                return self.reply(200, {"url": f"{hub.url}/datasets/{repo}", "name": repo})
            if path == "/api/validate-yaml":
                return self.reply(200, {"errors": [], "warnings": []})
            parts = path.split("/")  # /api/datasets/ORG/NAME/(preupload|commit)/main
            if len(parts) == 7 and parts[2] == "datasets" and parts[5] in ("preupload", "commit"):
                repo = f"{parts[3]}/{parts[4]}"
                if repo not in hub.repos:
                    return self.reply(404, {"error": "Repository not found"})
                if parts[5] == "preupload":
                    files = json.loads(raw)["files"]
                    return self.reply(
                        200,
                        {
                            "files": [
                                {
                                    "path": f["path"],
                                    "uploadMode": "regular",
                                    "shouldIgnore": False,
                                    "oid": None,
                                }
                                for f in files
                            ]
                        },
                    )
                store = hub.files.setdefault(repo, {})
                for line in raw.decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        store[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    elif item["key"] != "header":
                        return self.reply(400, {"error": f"unexpected {item['key']}"})
                return self.reply(
                    200,
                    {
                        "commitUrl": f"{hub.url}/datasets/{repo}/commit/abc123",
                        "commitOid": "abc123" + "0" * 34,
                    },
                )
            return self.reply(404, {"error": f"no route {path}"})

    return Handler


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    import huggingface_hub.constants

    state = Hub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", state.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    p = Pipeline(
        [TextGeneration(output="response"), FormatSFT(response="response")],
        source=[{"instruction": f"question {i}"} for i in range(3)],
        models={"default": FakeModel()},
    )
    p.run(tmp_path / "out", progress=False)
    return tmp_path / "out"


def test_push_uploads_data_card_and_report(hub: Hub, folder: Path) -> None:
    (folder / ".datamill.lock").write_text("1")  # hidden files never go up
    (folder / "forecast.json").write_text("{}")  # nor a forecast (run.json has it when it fits)
    (folder / "notes.txt").write_text("mine")  # nor anything else
    pushed = push_to_hub(folder, "my-org/my-data", private=True)
    assert pushed.url == f"{hub.url}/datasets/my-org/my-data" and pushed.complete
    assert hub.repos["my-org/my-data"]["type"] == "dataset"
    assert hub.repos["my-org/my-data"]["visibility"] == "private"
    sent = hub.files["my-org/my-data"]
    assert {"data/train-00000-of-00001.parquet", "README.md", "run.json", "failures.jsonl"} <= set(
        sent
    )
    assert not any(name.startswith(".") or "/." in name for name in sent)
    assert "forecast.json" not in sent and "notes.txt" not in sent
    assert ("report.json" in sent) == (folder / "report.json").exists()
    assert sent["README.md"] == (folder / "README.md").read_bytes()
    assert (
        sent["data/train-00000-of-00001.parquet"]
        == (folder / "data" / "train-00000-of-00001.parquet").read_bytes()
    )
    assert json.loads(sent["run.json"])["rows"] == 3
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth in hub.requests)


def test_push_again_updates_the_same_repo(hub: Hub, folder: Path) -> None:
    push_to_hub(folder, "my-org/again")
    push_to_hub(folder, "my-org/again")  # the repo exists (409): still pushed
    commits = [p for m, p, _ in hub.requests if p.endswith("/commit/main")]
    assert len(commits) == 2 and hub.repos["my-org/again"]["visibility"] == "public"


def test_cli_push(hub: Hub, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["push", str(folder), "org/cli-data", "--private"])
    out = capsys.readouterr().out
    assert "pushed" in out and "org/cli-data" in out
    assert "README.md" in hub.files["org/cli-data"]


def test_refused_token_is_one_line(hub: Hub, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(OutputError, match="refused the token") as info:
        push_to_hub(folder, "org/x")
    assert "\n" not in str(info.value)


def test_no_token_is_one_line(
    hub: Hub, folder: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    import huggingface_hub.constants

    monkeypatch.setattr(
        huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token")
    )
    with pytest.raises(ConfigError, match="no Hugging Face token"):
        push_to_hub(folder, "org/x")
    assert hub.requests == []


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening, held for the whole test: connecting is refused, and no
    other program can take it in between (a port picked, released and used later can be)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def test_without_a_network_push_fails_fast_with_one_line(
    folder: Path,
    closed_port: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    tries: list[object] = []
    connect = socket.socket.connect

    def counting(self: socket.socket, address: object) -> None:
        tries.append(address)
        connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", counting)
    with pytest.raises(SystemExit) as stop:
        main(["push", str(folder), "org/x"])
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot reach the Hub") and len(err.splitlines()) == 1
    # fast means one try, then the message: counted, not timed (a loaded machine is slow anyway)
    assert tries == [("127.0.0.1", closed_port)]


def test_offline_mode_fails_fast(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(OutputError, match="offline mode"):
        push_to_hub(folder, "org/x")


@pytest.mark.parametrize("repo", ["a b", "org/na me", "../x", "org/x/y", "org/-x", "org/x."])
def test_bad_repo_ids(tmp_path: Path, repo: str) -> None:
    with pytest.raises(ConfigError, match="not a Hub repository id"):
        push_to_hub(tmp_path, repo)  # refused before the folder is even looked at


def test_not_an_output_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a folder"):
        push_to_hub(tmp_path / "missing", "org/x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a datamill output folder"):
        push_to_hub(tmp_path / "empty", "org/x")


def test_a_partial_run_is_pushed_with_a_note(
    hub: Hub, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = json.loads((folder / "run.json").read_text())
    run["complete"] = False
    (folder / "run.json").write_text(json.dumps(run))
    main(["push", str(folder), "org/partial"])
    assert "partial" in capsys.readouterr().out


# -- the licence pushed under (datamill.provenance.push_licence) --------------------------------


def _licensed_folder(tmp_path: Path, model_licence: str, input_licence: str | None) -> Path:
    model = FakeModel()
    model.info.extra["licence"] = model_licence  # as the model option `licence:` sets it
    p = Pipeline(
        [TextGeneration(output="response"), FormatSFT(response="response")],
        source=[{"instruction": f"question {i}"} for i in range(2)],
        models={"default": model},
    )
    p.run(tmp_path / "licensed", progress=False, input_licence=input_licence)
    return tmp_path / "licensed"


def _header(card: bytes | str) -> dict[str, Any]:
    import yaml

    text = card.decode() if isinstance(card, bytes) else card
    return dict(yaml.safe_load(text.split("---\n")[1]))


def test_a_licence_the_inputs_forbid_is_refused_before_any_request(
    hub: Hub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _licensed_folder(tmp_path, "cc-by-nc-4.0", "mit")
    before = (folder / "README.md").read_text()
    assert _header(before)["license"] == "cc-by-nc-4.0"
    with pytest.raises(ConfigError) as info:
        push_to_hub(folder, "org/nc", license="apache-2.0")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("cannot push as apache-2.0: model 'default' (fake) is cc-by-nc-4.0")
    assert "--accept-licence-risk" in message and "not legal advice" in message
    assert hub.requests == [] and (folder / "README.md").read_text() == before
    with pytest.raises(SystemExit) as exit_info:
        main(["push", str(folder), "org/nc", "--license", "apache-2.0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot push as apache-2.0")
    assert hub.requests == []


def test_an_allowed_licence_is_pushed_and_set_in_the_card(hub: Hub, tmp_path: Path) -> None:
    folder = _licensed_folder(tmp_path, "cc-by-nc-4.0", "mit")
    pushed = push_to_hub(folder, "org/nc-sa", license="CC-BY-NC-SA-4.0")
    assert pushed.warnings == []
    card = hub.files["org/nc-sa"]["README.md"]
    assert _header(card)["license"] == "cc-by-nc-sa-4.0"
    assert b"licence risk accepted" not in card


def test_accepting_the_risk_pushes_and_records_the_reason_in_the_card(
    hub: Hub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _licensed_folder(tmp_path, "cc-by-nc-4.0", "mit")
    reason = "we licensed the model commercially from its authors"
    for _ in range(2):  # pushing twice records the acceptance once
        main(
            [
                "push",
                str(folder),
                "org/risk",
                "--license",
                "apache-2.0",
                "--accept-licence-risk",
                reason,
            ]
        )
    assert "pushed" in capsys.readouterr().out
    card = hub.files["org/risk"]["README.md"].decode()
    assert _header(card)["license"] == "apache-2.0"
    lines = [line for line in card.splitlines() if "licence risk accepted" in line]
    assert len(lines) == 1 and reason in lines[0] and "as apache-2.0" in lines[0]
    assert "model 'default' (fake) is cc-by-nc-4.0" in lines[0]
    section = card[card.index("## Licence and provenance") :]
    assert lines[0] in section
    with pytest.raises(ConfigError, match="needs a reason"):
        push_to_hub(folder, "org/risk", license="apache-2.0", accept_licence_risk="  ")


def test_an_unknown_licence_is_a_warning_not_a_refusal(
    hub: Hub, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["push", str(folder), "org/unknown", "--license", "mit"])
    out = capsys.readouterr().out
    assert "pushed" in out
    assert "licence warning: model 'default' (fake) has an unknown licence" in out
    assert _header(hub.files["org/unknown"]["README.md"])["license"] == "mit"


def test_without_license_the_cards_own_licence_is_checked(hub: Hub, tmp_path: Path) -> None:
    folder = _licensed_folder(tmp_path, "cc-by-nc-4.0", "cc-by-sa-4.0")  # they conflict
    assert json.loads((folder / "run.json").read_text())["provenance"]["conflict"] is True
    with pytest.raises(ConfigError, match="cannot push as other: "):
        push_to_hub(folder, "org/conflict")
    assert hub.requests == []


def test_a_folder_without_provenance_is_pushed_with_a_warning(hub: Hub, folder: Path) -> None:
    run = json.loads((folder / "run.json").read_text())
    del run["provenance"]  # as an older datamill wrote it
    (folder / "run.json").write_text(json.dumps(run))
    pushed = push_to_hub(folder, "org/old", license="cc-by-4.0")
    assert pushed.warnings == [
        f"{folder}/run.json has no provenance (made by an older datamill): licences not checked"
    ]
    assert _header(hub.files["org/old"]["README.md"])["license"] == "cc-by-4.0"

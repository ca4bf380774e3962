"""Which data an evaluation describes, and whether it survives a re-run of the recipe.

``datamill eval`` writes ``eval.json`` (with ``data_sha256``: :func:`data_digest` of the folder's
data files at eval time), ``eval.png`` and a card section between :data:`CARD_START` and
:data:`CARD_END` into a dataset folder. A re-run of the recipe into that folder keeps all three
when its data files are byte-identical to the evaluated ones (:func:`carry_eval`); otherwise they
described other data and go.

A top-level module: ``io.sinks`` (the re-run) and ``evaluate.results`` (the eval) both use it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

EVAL_FILE = "eval.json"
PLOT_FILE = "eval.png"
CARD_START, CARD_END = "<!-- datamill:eval -->", "<!-- /datamill:eval -->"


def data_digest(folder: Path) -> str | None:
    """SHA-256 (hex) of the folder's ``data/*.parquet`` files (names and bytes, in name order);
    ``None`` when it has none."""
    files = sorted((folder / "data").glob("*.parquet")) if (folder / "data").is_dir() else []
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def carry_eval(folder: Path, staged: Path) -> bool:
    """Copy ``folder``'s evaluation (``eval.json``, ``eval.png``, the card section) into the
    ``staged`` new dataset when the staged data is the data it evaluated; True when copied.
    ``staged`` holds the new data files and ``README.md``. An eval.json without
    ``data_sha256`` (older datamill) is never carried: nothing says which data it measured."""
    try:
        recorded = json.loads((folder / EVAL_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    want = recorded.get("data_sha256") if isinstance(recorded, dict) else None
    if not want or want != data_digest(staged):
        return False
    shutil.copy2(folder / EVAL_FILE, staged / EVAL_FILE)
    if (folder / PLOT_FILE).is_file():
        shutil.copy2(folder / PLOT_FILE, staged / PLOT_FILE)
    try:
        old = (folder / "README.md").read_text(encoding="utf-8")
    except OSError:
        return True
    if CARD_START in old and CARD_END in old:
        section = CARD_START + old.split(CARD_START, 1)[1].split(CARD_END, 1)[0] + CARD_END
        card = staged / "README.md"
        text = card.read_text(encoding="utf-8") if card.is_file() else ""
        card.write_text(text.rstrip("\n") + "\n\n" + section + "\n", encoding="utf-8")
    return True


__all__ = ["CARD_END", "CARD_START", "EVAL_FILE", "PLOT_FILE", "carry_eval", "data_digest"]

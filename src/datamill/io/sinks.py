"""The output folder, in the Hugging Face Hub layout, written atomically.

    OUT/data/train-00000-of-00001.parquet   the dataset (load with datasets' "parquet" builder)
    OUT/README.md                            dataset card: recipe, models, counts, timings, citations
    OUT/run.json                             counters of the run (rows, calls, hits, tokens, losses)
    OUT/failures.jsonl                       one record per lost row: step, reason, raw output, row

Every file is written under a temporary name and renamed into place, so a half-written file never
passes as output. A lock file refuses a second run writing the same folder at the same time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..errors import OutputError
from ..rows import Row

if TYPE_CHECKING:
    from ..pipeline.graph import Pipeline

LOCK = ".datamill.lock"
DATA_FILE = "data/train-00000-of-00001.parquet"


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def rows_to_table(rows: list[Row]) -> Any:
    """A pyarrow table; columns whose values do not share one type are stored as JSON text."""
    import pyarrow as pa

    if not rows:
        return pa.table({})
    columns: list[str] = []
    for r in rows:
        columns.extend(c for c in r if c not in columns)
    arrays = {}
    for c in columns:
        values = [r.get(c) for r in rows]
        try:
            arrays[c] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays[c] = pa.array([None if v is None else json.dumps(v, ensure_ascii=False, default=str) for v in values])
    return pa.table(arrays)


def write_parquet(path: Path, rows: list[Row]) -> None:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(rows_to_table(rows), tmp)
    os.replace(tmp, path)


class OutputFolder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._locked = False

    @property
    def failures_partial(self) -> Path:
        return self.path / f".failures.jsonl.tmp-{os.getpid()}"

    def lock(self) -> None:
        from ..pipeline.run import pid_alive

        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder {self.path}: {exc.strerror}") from None
        lock = self.path / LOCK
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(lock.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and pid_alive(pid):
                    raise OutputError(
                        f"another datamill run (pid {pid}) is writing to {self.path}; wait for it or choose another --output"
                    ) from None
                lock.unlink(missing_ok=True)  # left by a run that died: take it over
                continue
            except OSError as exc:
                raise OutputError(f"cannot write to output folder {self.path}: {exc.strerror}") from None
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            self._locked = True
            return
        raise OutputError(f"cannot lock output folder {self.path}; remove {lock} if no run is using it")

    def unlock(self) -> None:
        if self._locked:
            (self.path / LOCK).unlink(missing_ok=True)
            self._locked = False
        self.failures_partial.unlink(missing_ok=True)

    def write(self, rows: list[Row], summary: dict[str, Any], pipeline: Pipeline) -> None:
        write_parquet(self.path / DATA_FILE, rows)
        for stale in (self.path / "data").glob("train-*.parquet"):
            if stale.name != Path(DATA_FILE).name:
                stale.unlink()
        if self.failures_partial.exists():
            os.replace(self.failures_partial, self.path / "failures.jsonl")
        else:
            write_atomic(self.path / "failures.jsonl", b"")
        write_atomic(self.path / "run.json", (json.dumps(summary, indent=2, ensure_ascii=False) + "\n").encode())
        write_atomic(self.path / "README.md", dataset_card(rows, summary, pipeline).encode())


def dataset_card(rows: list[Row], summary: dict[str, Any], pipeline: Pipeline) -> str:
    """A Hub dataset card that records how the data was made."""
    columns: list[str] = []
    for r in rows[:100]:
        columns.extend(c for c in r if c not in columns)
    meta = {
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}],
        "tags": ["synthetic", "datamill"],
    }
    citations: list[str] = []
    techniques: list[str] = []
    for s in pipeline.steps:
        cite = getattr(type(s), "citation", "")
        if cite and cite not in citations:
            citations.append(cite)
            techniques.append(s.kind)
    model_lines = [f"- `{name}`: {m['model']} ({m['backend']})" + (f", sampling {m['sampling']}" if m.get("sampling") else "") for name, m in summary.get("models", {}).items()]
    steps = summary.get("steps", {})
    step_lines = [f"| {name} | {c['rows_in']} | {c['rows_out']} | {c['failed']} |" for name, c in steps.items()]
    losses = summary.get("failures", {})
    parts = [
        "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n",
        f"# {pipeline.name}\n",
        (pipeline.description.strip() + "\n") if pipeline.description else "",
        "Made with [datamill](https://pypi.org/project/datamill/).\n",
        "## Dataset\n",
        f"- rows: {summary.get('rows', len(rows))}",
        f"- columns: {', '.join(columns) or '(none)'}",
        f"- complete: {summary.get('complete', True)}" + (f" (stopped by {summary['stopped_by']})" if summary.get("stopped_by") else ""),
        "",
        "## Models\n",
        *model_lines,
        "",
        "## Run\n",
        f"- model calls: {summary.get('model_calls', 0)} (cache hits: {summary.get('cache_hits', 0)})",
        f"- tokens: {summary.get('tokens', {}).get('prompt', 0)} prompt, {summary.get('tokens', {}).get('completion', 0)} completion",
        f"- seconds: {summary.get('seconds', 0)}",
        f"- rows lost: {summary.get('failed_rows', 0)}" + (f" ({', '.join(f'{n} {r}' for r, n in losses.items())})" if losses else ""),
        "",
        "| step | rows in | rows out | lost |",
        "|---|---|---|---|",
        *step_lines,
        "",
    ]
    if pipeline.recipe is not None:
        parts += ["## Recipe\n", "```yaml", yaml.safe_dump(pipeline.recipe, sort_keys=False, allow_unicode=True).rstrip(), "```", ""]
    if citations:
        parts += ["## Techniques and citations\n"]
        parts += [f"- `{t}`: {c}" for t, c in zip(techniques, citations, strict=True)]
        parts.append("")
    return "\n".join(parts)

"""The output folder, in the Hugging Face Hub layout, written atomically.

    OUT/data/train-00000-of-00001.parquet   the dataset (load with datasets' "parquet" builder)
    OUT/README.md                            dataset card: recipe, models, counts, timings, citations
    OUT/run.json                             counters of the run (rows, calls, hits, tokens, losses)
    OUT/report.json, OUT/report.png          quality report (``datamill.report``; also in the card)
    OUT/failures.jsonl                       one record per lost row: step, reason, raw output, row

Every file is written under a temporary name and renamed into place, so a half-written file never
passes as output. ``run.json`` is the completion marker: it is removed before the other files are
replaced and written last, so a run killed while writing leaves no ``run.json`` (or the previous
run's complete set untouched, when killed earlier). A lock file, held with ``flock`` (released by the
kernel when a run dies, even by SIGKILL), refuses a second run writing the same folder at once.

A run's files are first written together into a hidden staging folder inside OUT and only then
moved into place (renames, which need no free space), with files the previous run wrote and this
one did not (a ``report.png`` whose plot failed this time) removed: when the disk fills up while
writing, the write stops with one line (:class:`OutputError`) and OUT still holds the previous
run's complete set, never new data beside another run's files.

A run that produced no rows writes no data file (``datasets`` cannot load a split of 0 rows),
only its ``run.json``, ``failures.jsonl``, card and report; and when OUT holds an earlier finished
dataset, that dataset stays in place and the failed attempt's ``run.json`` and ``failures.jsonl``
go to ``OUT/failed-attempt/`` instead (:meth:`OutputFolder.write_failed_attempt`).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml

from .._process import pid_alive
from ..atomic import write_atomic
from ..errors import OutputError
from ..evalfiles import carry_eval
from ..licence_card import with_provenance
from ..models.batch_api import batch_card_lines
from ..report.mix import card_section as mix_card_section
from ..rows import Row

if TYPE_CHECKING:
    from ..steps.base import Step


class PipelineInfo(Protocol):
    """What writing a dataset folder reads of a pipeline (``pipeline.Pipeline`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def recipe(self) -> dict[str, Any] | None: ...
    @property
    def steps(self) -> list[Step]: ...


LOCK = ".datamill.lock"
DATA_FILE = "data/train-00000-of-00001.parquet"
#: where a run that produced no rows leaves its run.json and failures.jsonl
FAILED_ATTEMPT = "failed-attempt"
#: the files of a finished run besides the data (replaced together, stale ones removed)
RUN_FILES = ("failures.jsonl", "report.json", "report.png", "README.md", "eval.json", "eval.png")


try:
    import fcntl
except ImportError:  # Windows: fall back to the pid in the lock file
    fcntl = None  # type: ignore[assignment]

_TMP = re.compile(r"^\..+\.tmp-(\d+)$")


#: rows per Parquet row group: the data file is written (and its types found) this many at a time
ROW_GROUP_ROWS = 10_000


def rows_to_table(rows: Sequence[Row]) -> Any:
    """A pyarrow table; columns whose values do not share one type are stored as JSON text."""
    import pyarrow as pa

    if not rows:
        return pa.table({})
    columns, types = table_schema([rows])
    return _table(rows, columns, types)


def table_schema(chunks: Iterable[Sequence[Row]]) -> tuple[list[str], dict[str, Any]]:
    """The columns (first-seen order) of the rows in ``chunks`` and the Arrow type of each that
    holds every chunk's values (ints and floats → float, structs merged …), or ``None`` for a
    column to store as JSON text (values that share no type)."""
    import pyarrow as pa

    columns: dict[str, None] = {}
    types: dict[str, Any] = {}
    for rows in chunks:
        for r in rows:
            columns.update(dict.fromkeys(r))
        for c in columns:
            if c in types and types[c] is None:
                continue
            try:
                kind = pa.array([r.get(c) for r in rows]).type
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                types[c] = None
                continue
            if _empty_struct(kind):  # Parquet cannot store a struct with no field: JSON text
                types[c] = None
                continue
            if c not in types:
                types[c] = kind
                continue
            try:
                types[c] = (
                    pa.unify_schemas(
                        [pa.schema([(c, types[c])]), pa.schema([(c, kind)])],
                        promote_options="permissive",
                    )
                    .field(c)
                    .type
                )
            except (pa.ArrowInvalid, pa.ArrowTypeError, NotImplementedError):
                types[c] = None
    return list(columns), types


def _table(rows: Sequence[Row], columns: list[str], types: dict[str, Any]) -> Any:
    """``rows`` as a table of ``columns`` of ``types`` (``None``: JSON text); raises pyarrow's
    error when a value does not fit its column's type."""
    import pyarrow as pa

    arrays = {}
    for c in columns:
        values = [r.get(c) for r in rows]
        kind = types.get(c)
        if kind is None:
            arrays[c] = pa.array(
                [
                    None if v is None else json.dumps(v, ensure_ascii=False, default=str)
                    for v in values
                ],
                type=pa.string(),
            )
        else:
            arrays[c] = pa.array(values, type=kind)
    return pa.table(arrays)


def _empty_struct(kind: Any) -> bool:
    """Whether an Arrow type is, or holds, a struct with no fields (``{}`` in every row there:
    e.g. constraint kwargs), which Parquet cannot write."""
    import pyarrow as pa

    if pa.types.is_struct(kind):
        return kind.num_fields == 0 or any(_empty_struct(f.type) for f in kind)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _empty_struct(kind.value_type)
    if pa.types.is_map(kind):
        return _empty_struct(kind.item_type)
    return False


def _chunks(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    it = iter(rows)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def write_parquet(
    path: Path,
    rows: Sequence[Row],
    row_group_rows: int | None = None,
    observe: Callable[[Row], None] | None = None,
) -> None:
    """Write ``rows`` as one Parquet file, ``row_group_rows`` (default :data:`ROW_GROUP_ROWS`)
    at a time: one pass over the rows finds the columns' types (``observe`` sees each row
    then), a second writes them, so only one row group is in memory (``rows`` may be a
    :class:`SpooledRows` read from disk)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    size = row_group_rows or ROW_GROUP_ROWS
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    first: Iterable[Row] = rows if observe is None else _observed(rows, observe)
    columns, types = table_schema(_chunks(first, size))
    while True:
        try:
            with pq.ParquetWriter(tmp, _schema(columns, types)) as writer:
                for chunk in _chunks(rows, size):
                    writer.write_table(_table(chunk, columns, types), row_group_size=size)
            break
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            # a value that does not fit the type found for its column: store it as JSON text
            bad = next((c for c in columns if types.get(c) is not None and c in str(exc)), None)
            if bad is None:
                bad = next(c for c in columns if types.get(c) is not None)
            types[bad] = None
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _observed(rows: Iterable[Row], observe: Callable[[Row], None]) -> Iterator[Row]:
    for row in rows:
        observe(row)
        yield row


def _schema(columns: list[str], types: dict[str, Any]) -> Any:
    import pyarrow as pa

    return pa.schema([(c, types[c] if types.get(c) is not None else pa.string()) for c in columns])


class OutputFolder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._locked = False
        self._lock_fd: int | None = None

    @property
    def failures_partial(self) -> Path:
        return self.path / f".failures.jsonl.tmp-{os.getpid()}"

    def lock(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder {self.path}: {exc.strerror}") from None
        if not self.path.is_dir():
            raise OutputError(
                f"output {self.path} is a file, not a folder; choose another --output"
            )
        if fcntl is not None:
            self._flock()
        else:
            self._pid_lock()
        self._locked = True
        self._remove_stale_temporaries()

    def _busy(self, pid: int) -> OutputError:
        who = f"another datamill run (pid {pid})" if pid else "another datamill run"
        return OutputError(
            f"{who} is writing to {self.path}; wait for it or choose another --output"
        )

    def _flock(self) -> None:
        lock = self.path / LOCK
        for _ in range(10):
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutputError(
                    f"cannot write to output folder {self.path}: {exc.strerror}"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pid = _read_pid(fd)
                os.close(fd)
                raise self._busy(pid) from None
            try:  # the holder before us may have removed the file as we opened it: lock the live one
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            self._lock_fd = fd
            return
        raise OutputError(
            f"cannot lock output folder {self.path}; remove {lock} if no run is using it"
        )

    def _pid_lock(self) -> None:
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
                    raise self._busy(pid) from None
                lock.unlink(missing_ok=True)  # left by a run that died: take it over
                continue
            except OSError as exc:
                raise OutputError(
                    f"cannot write to output folder {self.path}: {exc.strerror}"
                ) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            return
        raise OutputError(
            f"cannot lock output folder {self.path}; remove {lock} if no run is using it"
        )

    def _remove_stale_temporaries(self) -> None:
        """Temporary files of runs that died (killed while writing): never output, so remove them."""
        for folder in (self.path, self.path / "data"):
            if not folder.is_dir():
                continue
            for f in folder.iterdir():
                m = _TMP.match(f.name)
                if m and (int(m.group(1)) == os.getpid() or not pid_alive(int(m.group(1)))):
                    if f.is_dir() and not f.is_symlink():
                        shutil.rmtree(f, ignore_errors=True)
                    else:
                        f.unlink(missing_ok=True)

    def unlock(self) -> None:
        self.failures_partial.unlink(missing_ok=True)
        if self._locked:
            (self.path / LOCK).unlink(missing_ok=True)  # while still held: no one else's lock
            self._locked = False
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def staging(self) -> Path:
        return self.path / f".staging.tmp-{os.getpid()}"

    def previous_rows(self) -> int | None:
        """Rows of the finished dataset already in the folder (its ``run.json``), or ``None``."""
        try:
            data = json.loads((self.path / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        rows = data.get("rows") if isinstance(data, dict) else None
        if not isinstance(rows, int) or not (self.path / DATA_FILE).exists():
            return None
        return rows

    def write(
        self,
        rows: Sequence[Row],
        summary: dict[str, Any],
        pipeline: PipelineInfo,
    ) -> None:
        """Write the dataset folder: stage every file, then move them into place, ``run.json``
        last. Raises :class:`OutputError` (the folder keeps the previous run's files) when a
        file cannot be written (disk full, no permission)."""
        staged = self.staging
        shutil.rmtree(staged, ignore_errors=True)
        moved_failures = False
        try:
            staged.mkdir()
            sample = None
            if rows:  # datasets cannot load a parquet split of 0 rows: then no data file at all
                sample = _report_sample(rows)
                if sample is None:
                    write_parquet(staged / DATA_FILE, rows)
                else:  # the report's sample is drawn as the writer reads the rows
                    write_parquet(staged / DATA_FILE, rows, observe=sample.add)
            if self.failures_partial.exists():
                os.replace(self.failures_partial, staged / "failures.jsonl")
                moved_failures = True
            else:
                write_atomic(staged / "failures.jsonl", b"")
            report = quality_report(
                staged, rows, summary, pipeline, sample.rows() if sample is not None else None
            )
            write_atomic(
                staged / "README.md", dataset_card(rows, summary, pipeline, report).encode()
            )
            carry_eval(self.path, staged)  # kept only when the data is the data it measured
            write_atomic(staged / "run.json", _json(summary))
        except OSError as exc:
            if moved_failures:  # the failure records stay where the run left them
                os.replace(staged / "failures.jsonl", self.failures_partial)
            shutil.rmtree(staged, ignore_errors=True)
            raise self._write_error(exc) from None
        self._swap_in(staged)

    def _swap_in(self, staged: Path) -> None:
        """Move the staged files into place: ``run.json`` goes first and comes back last."""
        (self.path / "run.json").unlink(missing_ok=True)
        for stale in (self.path / "data").glob("train-*.parquet"):
            if not (staged / "data" / stale.name).exists():
                stale.unlink()
        if (staged / DATA_FILE).exists():
            (self.path / "data").mkdir(exist_ok=True)
            os.replace(staged / DATA_FILE, self.path / DATA_FILE)
        for name in RUN_FILES:
            if (staged / name).exists():
                os.replace(staged / name, self.path / name)
            else:  # the previous run's, and not this one's: never beside new data
                (self.path / name).unlink(missing_ok=True)
        shutil.rmtree(self.path / FAILED_ATTEMPT, ignore_errors=True)  # superseded
        os.replace(staged / "run.json", self.path / "run.json")
        shutil.rmtree(staged, ignore_errors=True)

    def write_failed_attempt(self, summary: dict[str, Any]) -> Path:
        """A run that produced no rows: its ``run.json`` and ``failures.jsonl`` go to
        ``OUT/failed-attempt/``; the dataset in OUT (if any) is left as it is. Returns that
        folder; raises :class:`OutputError` when it cannot be written."""
        side = self.path / FAILED_ATTEMPT
        try:
            side.mkdir(exist_ok=True)
            if self.failures_partial.exists():
                os.replace(self.failures_partial, side / "failures.jsonl")
            else:
                write_atomic(side / "failures.jsonl", b"")
            write_atomic(side / "run.json", _json(summary))
        except OSError as exc:
            raise self._write_error(exc) from None
        return side

    def _write_error(self, exc: OSError) -> OutputError:
        kept = (
            "its previous dataset is untouched"
            if (self.path / "run.json").exists()
            else "no dataset was written there"
        )
        return OutputError(
            f"cannot write the output folder {self.path}: {exc.strerror or exc}; {kept}. "
            "Free space there or choose another --output, then run the same command again "
            "(the finished calls are kept in the call cache, if the run has one)"
        )


def _json(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()


_SECRET_NAME = re.compile(r"(api[_-]?key|token|secret|password|authorization)$", re.IGNORECASE)


def redact(value: Any) -> Any:
    """A copy with the values of secret-looking keys (``api_key``, ``hf_token`` …) replaced by ``***``.

    Keys come from the environment, never from a recipe; this guards the card should one slip in."""
    if isinstance(value, dict):
        return {
            k: "***" if isinstance(k, str) and _SECRET_NAME.search(k) and v else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _read_pid(fd: int) -> int:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0)
    except (OSError, ValueError):
        return 0


def _report_sample(rows: Sequence[Row]) -> Any:
    """A reservoir for the report's sample, drawn while the Parquet writer reads the rows
    (``None`` when the report measures every row)."""
    try:
        from ..report.write import REPORT_ROWS, Reservoir
    except Exception:  # the report is never worth the dataset
        return None
    return Reservoir(REPORT_ROWS) if len(rows) > REPORT_ROWS else None


def quality_report(
    folder: Path,
    rows: Sequence[Row],
    summary: dict[str, Any],
    pipeline: PipelineInfo,
    sample: list[Row] | None = None,
) -> dict[str, Any] | None:
    """Write ``report.json`` + ``report.png`` (see ``datamill.report``); never loses the dataset."""
    try:
        from ..report import write_report

        return write_report(folder, rows, summary, name=pipeline.name, sample=sample)
    except Exception:  # write_report notes metric failures itself; this guards the last resort
        return None


def no_rows_note(summary: dict[str, Any]) -> str:
    """The card's first words for a run that wrote no rows: it failed, and there is no data."""
    losses = summary.get("failures") or {}
    why = ", ".join(f"{n} {r}" for r, n in losses.items()) or "the source gave no rows"
    return (
        f"> **This run failed: it wrote no rows** ({why}). There is no data file in this "
        "folder; `failures.jsonl` has each lost row and why, `run.json` the run's counters. "
        "Fix what the losses say and run again.\n"
    )


def dataset_card(
    rows: Sequence[Row],
    summary: dict[str, Any],
    pipeline: PipelineInfo,
    report: dict[str, Any] | None = None,
) -> str:
    """A Hub dataset card that records how the data was made."""
    columns: list[str] = []
    for r in rows[:100]:
        columns.extend(c for c in r if c not in columns)
    empty = not rows and not summary.get("rows")
    meta: dict[str, Any] = {
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": "data/train-*.parquet"}],
            }
        ],
        "tags": ["synthetic", "datamill"],
    }
    if empty:  # no data file: a card must not point the Hub (or datasets) at one
        del meta["configs"]
    citations: list[str] = []
    techniques: list[str] = []
    for s in pipeline.steps:
        cite = getattr(type(s), "citation", "")
        if cite and cite not in citations:
            citations.append(cite)
            techniques.append(s.kind)
    model_lines = [
        f"- `{name}`: {m['model']} ({m['backend']})"
        + (f", sampling {m['sampling']}" if m.get("sampling") else "")
        + (f", structured output {m['structured_output']}" if m.get("structured_output") else "")
        for name, m in summary.get("models", {}).items()
    ]
    steps = summary.get("steps", {})
    step_lines = [
        f"| {name} | {c['rows_in']} | {c['rows_out']} | {c['failed']} |"
        for name, c in steps.items()
    ]
    losses = summary.get("failures", {})
    parts = [
        "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n",
        f"# {pipeline.name}\n",
        no_rows_note(summary) if empty else "",
        (pipeline.description.strip() + "\n") if pipeline.description else "",
        "Made with [datamill](https://pypi.org/project/datamill/).\n",
        "## Dataset\n",
        f"- rows: {summary.get('rows', len(rows))}",
        f"- columns: {', '.join(columns) or '(none)'}",
        f"- complete: {summary.get('complete', True)}"
        + (f" (stopped by {summary['stopped_by']})" if summary.get("stopped_by") else ""),
        "",
        "## Models\n",
        *model_lines,
        "",
        *batch_card_lines(summary),
        "## Run\n",
        f"- model calls: {summary.get('model_calls', 0)} (cache hits: {summary.get('cache_hits', 0)})",
        f"- tokens: {summary.get('tokens', {}).get('prompt', 0)} prompt, {summary.get('tokens', {}).get('completion', 0)} completion",
        f"- seconds: {summary.get('seconds', 0)}",
        f"- rows lost: {summary.get('failed_rows', 0)}"
        + (f" ({', '.join(f'{n} {r}' for r, n in losses.items())})" if losses else ""),
        "",
        "| step | rows in | rows out | lost |",
        "|---|---|---|---|",
        *step_lines,
        "",
    ]
    if report:
        from ..report import card_section

        parts.append(card_section(report))
    parts.append(mix_card_section(summary))
    if pipeline.recipe is not None:
        parts += [
            "## Recipe\n",
            "```yaml",
            yaml.safe_dump(redact(pipeline.recipe), sort_keys=False, allow_unicode=True).rstrip(),
            "```",
            "",
        ]
    if citations:
        parts += ["## Techniques and citations\n"]
        parts += [f"- `{t}`: {c}" for t, c in zip(techniques, citations, strict=True)]
        parts.append("")
    return with_provenance("\n".join(parts), summary)

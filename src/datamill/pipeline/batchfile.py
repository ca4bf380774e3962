"""One JSONL file of a run's calls for a GPU box with no server, and its answers back.

:func:`export_calls` runs a pipeline as ``datamill run`` would, answering from the call cache;
every call the cache lacks is written as a line of the OpenAI batch format that vLLM's
``python -m vllm.entrypoints.openai.run_batch`` reads (``{"custom_id", "method", "url",
"body"}``; custom id ``KEY-nN``: the call's cache key and ``n``), and no model is called. Rows whose
calls are missing stop there, so a pipeline of several model steps takes one export → run_batch
→ import round per step (the next export writes the next step's calls; it writes none when the
run is complete). :func:`import_results` reads ``run_batch``'s output (the same shape as OpenAI's
batch output: ``{"custom_id", "response": {"status_code", "body"}, "error"}``) into the cache,
so ``datamill run`` finishes from it.

The body of a line is what the model would send online when it talks to an OpenAI-compatible
server (:meth:`OpenAIModel.request_body`); any other model gets a plain chat/completions body.
Its ``model`` is the name run_batch serves (``served``, ``--served-model``; else
:func:`served_name`); a local model (a GGUF file, a model folder) has none vLLM knows, so an
export without one is refused before anything runs. Deliberately not here: running vLLM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError, ModelError
from ..models.base import Completion, Model, ModelInfo, Request
from ..models.batch_openai import custom_id, outcome_of, parse_custom_id
from .cache import CallCache, call_key
from .graph import ModelSettings, Pipeline


class ExportModel(Model):
    """Stands in for ``inner`` during an export: records each call it is asked for as a batch
    line (once per custom id) and fails it, so its row goes no further."""

    def __init__(self, inner: Model, served: str | None = None) -> None:
        self.inner = inner
        self.served = served  #: the request lines' ``model`` (None: the inner model's own)
        self.backend = inner.backend
        self.lines: dict[str, dict[str, Any]] = {}

    @property
    def info(self) -> ModelInfo:
        return self.inner.info

    async def generate(self, request: Request) -> list[Completion]:
        cid = custom_id(call_key(self.info.identity, request), request.n)
        if cid not in self.lines:
            path, body = self._body(request)
            self.lines[cid] = {
                "custom_id": cid,
                "method": "POST",
                "url": "/v1" + path,
                "body": body,
            }
        raise ModelError("written to the batch file", reason="exported for a batch")

    def _body(self, request: Request) -> tuple[str, dict[str, Any]]:
        from ..models.openai import OpenAIModel

        if isinstance(self.inner, OpenAIModel) and self.inner.forms:  # an OpenAI-compatible server
            path, sent = self.inner.request_body(request)
            if self.served is not None:
                sent["model"] = self.served
            return path, sent
        chat = request.messages is not None
        body: dict[str, Any] = {"model": self.served or self.info.name}
        if chat:
            body["messages"] = [dict(m) for m in request.messages or ()]
        else:
            body["prompt"] = request.prompt
        body.update(max_tokens=request.max_tokens, temperature=request.temperature)
        body["top_p"] = request.top_p
        if request.n > 1:
            body["n"] = request.n
        if request.seed is not None:
            body["seed"] = request.seed
        if request.stop:
            body["stop"] = list(request.stop)
        return ("/chat/completions" if chat else "/completions"), body

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


def served_name(model: Model) -> str | None:
    """The name vLLM's ``run_batch`` serves ``model`` under when given it as ``--model``: an
    API model's or a Hub id's own name; None for a local file or folder (a GGUF file, a model
    folder), whose name there is whatever path or ``--served-model-name`` the GPU box uses."""
    from ..models.openai import OpenAIModel

    if isinstance(model, OpenAIModel):
        return model.model
    if type(model).CAPABILITIES.local_files:  # a file, a folder, or a Hub id named by its spec
        source = str(getattr(model, "source", None) or getattr(model, "path", None) or "")
        return None if not source or Path(source).expanduser().exists() else source
    return model.info.name


def _served_by_name(
    served: str | dict[str, str] | None, models: dict[str, ModelSettings]
) -> dict[str, str | None]:
    """Recipe model name → the name given for it (``--served-model [NAME=]SERVED``), or None."""
    if not isinstance(served, dict):
        return dict.fromkeys(models, served)
    unknown = sorted(set(served) - set(models))
    if unknown:
        raise ConfigError(
            f"--served-model names model {unknown[0]!r}, which the recipe does not have; "
            f"its models: {', '.join(models)}"
        )
    return {name: served.get(name) for name in models}


@dataclass
class Exported:
    """What an export wrote: request lines, and calls the cache already answered."""

    path: Path
    requests: int
    cached: int
    models: list[str] = field(default_factory=list)


async def export_calls(
    pipeline: Pipeline,
    path: str | Path,
    *,
    model: str | None = None,
    limit: int | None = None,
    cache: bool | str | Path | CallCache = True,
    source: Any = None,
    served: str | dict[str, str] | None = None,
) -> Exported:
    """Write the calls of a run of ``pipeline`` that ``cache`` lacks to ``path`` (see the module
    docstring). ``model``, ``limit``, ``source`` as in ``datamill run``. ``served``: the
    ``model`` of the request lines, the name run_batch serves the model under, for every model
    or per recipe model name (default: :func:`served_name`). A model served under no known name
    (a local GGUF file or folder) without one given is refused (ConfigError, one line) before
    anything runs. No model is called or started; the cache keys are the model's own, so the
    run finds the imported answers whatever name they were served under."""
    from .assembly import build_models
    from .run import arun_pipeline

    if not cache:
        raise InputError("datamill batch export reads the call cache: drop --no-cache")
    given = _served_by_name(served, pipeline.models)
    built = build_models(pipeline.models, model, online=True)
    stand_ins: dict[tuple[int, str | None], ExportModel] = {}
    models: dict[str, ModelSettings] = {}
    for name, (m, s) in built.items():
        name_served = given[name]
        if name_served is None and served_name(m) is None:
            where = getattr(m, "path", None) or getattr(m, "source", None) or m.info.name
            raise ConfigError(
                f"model {name!r} is a local {m.backend} model ({where}) that vLLM knows by no "
                f"name: pass --served-model NAME, the name run_batch serves it under (its --model "
                f"or --served-model-name, e.g. the model's Hub id)"
            )
        stand = stand_ins.setdefault((id(m), name_served), ExportModel(m, name_served))
        models[name] = ModelSettings(spec=stand, sampling=s.sampling)
    plain = Pipeline(
        pipeline.steps,
        source=pipeline.source,
        models=models,
        name=pipeline.name,
        seed=pipeline.seed,
    )  # no target_rows: a top-up would export rows the run may not need
    result = await arun_pipeline(plain, None, limit=limit, cache=cache, source=source)
    lines = [line for m in stand_ins.values() for line in m.lines.values()]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    with tmp.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    tmp.replace(out)
    names = sorted({str(line["body"].get("model")) for line in lines})
    return Exported(out, len(lines), result.stats.cache_hits, names)


@dataclass
class Imported:
    """What an import put into the cache, and what it could not."""

    answers: int = 0
    failed: list[str] = field(default_factory=list)  #: "custom id: why", one per failed line
    foreign: int = 0  #: lines whose custom id no export made


def is_request_line(record: dict[str, Any]) -> bool:
    """Whether ``record`` is a batch request line (``custom_id`` + ``method``/``url``/``body``,
    no ``response`` nor ``error``), as ``batch export`` writes, not an output line."""
    return (
        "custom_id" in record
        and any(k in record for k in ("method", "url", "body"))
        and "response" not in record
        and "error" not in record
    )


def import_results(path: str | Path, cache: CallCache) -> Imported:
    """Put the answers of a ``run_batch`` (or OpenAI batch) output file into ``cache``.
    Raises :class:`InputError` (one line) for a file that is not an output file: not JSON, or
    the request file of :func:`export_calls` given by mistake."""
    from ..models.openai import OpenAIModel

    reader = OpenAIModel("batch-import", base_url="http://127.0.0.1/v1")  # parses, never sends
    done = Imported()
    source = Path(path)
    if not source.is_file():
        raise InputError(f"{source} is not a file: give the output file of run_batch (-o)")
    with source.open(encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except ValueError:
                raise InputError(
                    f"{source}:{number}: not JSON; give the output file of run_batch (-o)"
                ) from None
            if not isinstance(record, dict):
                raise InputError(
                    f"{source}:{number}: not a JSON object; give the output file of run_batch (-o)"
                )
            if is_request_line(record):
                raise InputError(
                    f"{source} is a request file from `datamill batch export`; give the output "
                    "file of vLLM's run_batch (its -o)"
                )
            ids = parse_custom_id(str(record.get("custom_id", "")))
            if ids is None:
                done.foreign += 1
                continue
            key, n = ids
            kind, value = outcome_of(record, reader.parse_answer)
            if kind != "ok" or not isinstance(value, list):
                done.failed.append(f"{record.get('custom_id')}: {value}")
                continue
            if len(value) < n:
                done.failed.append(f"{record.get('custom_id')}: {len(value)} of {n} samples")
                continue
            cache.put(key, value[:n])
            done.answers += 1
    return done


__all__ = [
    "ExportModel",
    "Exported",
    "Imported",
    "export_calls",
    "import_results",
    "is_request_line",
    "served_name",
]

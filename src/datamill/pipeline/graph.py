"""A pipeline: a source, a chain of steps, and named models. Checked before any model call.

``Pipeline.check`` walks the column flow: each step's required columns must exist by the time
rows reach it, each model a step names must be declared, step names are made unique, and no
step writes over a column the rows already have unless it reads it (``Step.updates``): a
column is never lost without being named. Errors
name the step (position and name) and the column, and say what to do.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, InputError, PipelineError
from ..io.sources import RowsSource, Source
from ..models.base import SAMPLING_FIELDS, Model
from ..steps.base import Step, content_identity
from .mix import Mix

if TYPE_CHECKING:
    from .forecast import Forecast
    from .run import RunResult


@dataclass
class ModelSettings:
    """A named model of a pipeline: which model (spec or object), its backend options, and
    sampling settings that override the tasks' defaults (e.g. two temperatures of one model)."""

    spec: str | Model = "llamacpp"
    options: dict[str, Any] = field(default_factory=dict)
    sampling: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: str | Model | dict[str, Any] | ModelSettings) -> ModelSettings:
        if isinstance(value, ModelSettings):
            return value
        if isinstance(value, (str, Model)):
            return cls(spec=value)
        if isinstance(value, dict):
            data = dict(value)
            spec = data.pop("spec", "llamacpp")
            sampling = {k: data.pop(k) for k in list(data) if k in SAMPLING_FIELDS}
            return cls(spec=spec, options=data, sampling=sampling)
        raise ConfigError(
            f"a model must be a spec string or a mapping with 'spec', got {type(value).__name__}"
        )

    @property
    def display(self) -> str:
        return self.spec if isinstance(self.spec, str) else self.spec.info.name


class Pipeline:
    """``Pipeline(steps, source=..., models=...)``; ``run()``, ``preview()``, ``check()``."""

    def __init__(
        self,
        steps: list[Step],
        source: Source | list[dict[str, Any]] | None = None,
        models: dict[str, Any] | str | Model | None = None,
        *,
        name: str = "pipeline",
        description: str = "",
        seed: int = 0,
        recipe: dict[str, Any] | None = None,
        target_rows: int | None = None,
        max_attempts: int | None = None,
        mix: Mix | dict[str, Any] | None = None,
    ) -> None:
        if not steps:
            raise PipelineError("a pipeline needs at least one step")
        for i, s in enumerate(steps, start=1):
            if not isinstance(s, Step):
                raise PipelineError(
                    f"step {i} is a {type(s).__name__}, not a datamill step; wrap functions with datamill.step"
                )
            problem = s.contract_error()
            if problem is not None:
                raise PipelineError(f"step {i} ({s.label}): {problem}")
        self.steps = steps
        self.source = RowsSource(source) if isinstance(source, list) else source
        if models is None:
            models = {"default": "llamacpp"}
        elif isinstance(models, (str, Model)):
            models = {"default": models}
        self.models = {k: ModelSettings.parse(v) for k, v in models.items()}
        self.name = name
        self.description = description
        self.seed = seed
        self.recipe = recipe
        #: top up until this many rows survive, trying at most ``max_attempts`` source rows (``pipeline.topup``)
        if (target_rows is not None and target_rows < 1) or (
            max_attempts is not None and max_attempts < 1
        ):
            raise ConfigError("target_rows and max_attempts must be at least 1")
        self.target_rows, self.max_attempts = target_rows, max_attempts
        #: the shares of a tag column's parts in the final rows (``pipeline.mix``; needs target_rows)
        self.mix = Mix.parse(mix) if mix is not None else None
        if self.mix is not None:
            if target_rows is None:
                raise ConfigError(
                    "mix needs target_rows: how many rows the mixture should have (e.g. target_rows: 100)"
                )
            self.mix.check_total(target_rows)
        self._name_steps()

    def _name_steps(self) -> None:
        """Give unnamed steps a display label (``kind``, ``kind_2``, … by position) and every step
        its :attr:`~datamill.steps.base.Step.identity` (its own name, else kind + a hash of its
        parameters; the k-th identical twin gets ``#k``), which seeds derive from."""
        seen: Counter[str] = Counter()
        twins: Counter[str] = Counter()
        for s in self.steps:
            if s._auto_name:  # named by an earlier pipeline of the same step objects: rename
                s.name = None
            if s.name is None:
                seen[s.kind] += 1
                s.name = s.kind if seen[s.kind] == 1 else f"{s.kind}_{seen[s.kind]}"
                s._auto_name = True
                identity = content_identity(s)
                twins[identity] += 1
                if twins[identity] > 1:
                    identity += f"#{twins[identity]}"
                s._identity = identity
            else:
                s._identity = s.name
        labels = Counter(s.label for s in self.steps)
        dup = [k for k, n in labels.items() if n > 1]
        if dup:
            raise PipelineError(f"two steps are named {dup[0]!r}: give each step a distinct name")

    def check(self, columns: list[str] | None = None) -> list[list[str]]:
        """Check the column flow from ``columns`` (default: the source's); return the columns
        after each step. Calls no model."""
        if columns is None:
            if self.source is None:
                raise InputError(
                    "the pipeline has no source: give check() the input columns or set source="
                )
            columns = Source.columns(self.source.load())
        flow = []
        available = list(columns)
        origin = {c: "the source" for c in available}  # where each column was first written
        for i, s in enumerate(self.steps, start=1):
            for m in s.models():
                if m not in self.models:
                    known = ", ".join(sorted(self.models))
                    raise PipelineError(
                        f"step {i} ({s.label}) uses model {m!r}, which is not declared; declared models: {known}"
                    )
            missing = [c for c in s.required_columns() if c not in available]
            if missing:
                have = ", ".join(available) or "(none)"
                raise PipelineError(
                    f"step {i} ({s.label}) needs column {missing[0]!r}, but rows only have: {have}; "
                    "add a rename step or set the step's column parameter"
                )
            kept = set(s.updates())
            clash = [c for c in s.produces() if c in origin and c not in kept]
            if clash:
                c = clash[0]
                raise PipelineError(
                    f"step {i} ({s.label}) writes column {c!r}, which rows already have from "
                    f"{origin[c]}; a step may rewrite only a column it reads, so give the step's "
                    f"output another name or drop/rename {c!r} before it"
                )
            available = s.output_columns(available)
            origin = {c: origin.get(c, f"step {i} ({s.label})") for c in available}
            flow.append(list(available))
        if self.mix is not None:
            self._check_mix(available)
        return flow

    def _check_mix(self, final: list[str]) -> None:
        """The tag column reaches the final rows, and a step that writes it from a fixed set
        (``classify``'s labels) can write every targeted part."""
        assert self.mix is not None
        by = self.mix.by
        if by not in final:
            have = ", ".join(final) or "(none)"
            raise PipelineError(
                f"mix.by is {by!r}, but the final rows only have: {have}; tag rows with "
                f"a source column or a classify step, and keep {by!r} to the end"
            )
        writers = [(i, s) for i, s in enumerate(self.steps, start=1) if by in s.produces()]
        if not writers:
            return
        i, last = writers[-1]
        values = last.written_values(by)
        never = [p for p in self.mix.targets if values is not None and p not in values]
        if never:
            raise PipelineError(
                f"mix.targets names {never[0]!r}, which step {i} ({last.label}) never writes to "
                f"{by!r}; it writes only: {', '.join(values or [])}"
            )

    def output_columns(self, columns: list[str]) -> list[str]:
        return self.check(columns)[-1]

    # The conveniences below live in pipeline.run; imported lazily to keep this module small.
    def run(
        self, output: str | None = None, *, progress: bool | str = "auto", **kwargs: Any
    ) -> RunResult:
        """Run to completion and return a :class:`~datamill.pipeline.run.RunResult`.

        Works inside Jupyter too (the run gets its own loop in a thread); ``progress="auto"``
        shows a progress bar there, ``True`` everywhere, ``False`` nowhere.
        """
        from .run import run_pipeline

        return run_pipeline(self, output, progress=progress, **kwargs)

    async def arun(
        self, output: str | None = None, *, progress: bool | str = "auto", **kwargs: Any
    ) -> RunResult:
        """The same as :meth:`run`, for code that already runs an event loop (``await p.arun()``)."""
        from .run import arun_pipeline

        return await arun_pipeline(self, output, progress=progress, **kwargs)

    def plan(self, limit: int | None = None, **kwargs: Any) -> Forecast:
        """Forecast calls, tokens, time and cost of a run from a short preview (``datamill plan``)."""
        from .plan import plan_pipeline

        return plan_pipeline(self, limit=limit, **kwargs)

    def preview(self, n: int = 3, **kwargs: Any) -> RunResult:
        """Run on the first ``n`` source rows without writing anything; no top-up (a
        ``target_rows`` is for the run: the preview shows what those ``n`` rows give)."""
        from copy import copy

        once = copy(self)  # same steps, so the same identities, seeds and cached calls
        once.target_rows = once.max_attempts = None
        return once.run(None, limit=n, **kwargs)

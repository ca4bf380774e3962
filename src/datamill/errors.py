"""The exception tree of datamill. Every error a user can cause says what is wrong and what to do.

    DatamillError
    ├── ConfigError          a recipe, a step parameter or a CLI option is wrong (before any call)
    │   └── PipelineError    the steps do not fit together (unknown step, missing column)
    ├── InputError           the source data is unusable (empty, unreadable, wrong types)
    ├── MissingDependency    an optional extra is not installed; carries the pip line
    ├── ModelError           a model could not be loaded or called
    │   └── ModelUnavailable the model cannot be reached at all (fail fast, no per-row retries)
    ├── OutputError          the output folder is unusable (locked by another run, not writable)
    ├── CacheError           the call cache file is unusable (a folder, not datamill's, disk full)
    └── BudgetExceeded       a cap (--max-total-tokens, --max-cost, --deadline) stopped the run

Row-level problems are not exceptions that escape: a task raises ``ParseError`` (or a model
raises ``ModelError``) and the runner turns it into a failure record.
"""

from __future__ import annotations

from collections.abc import Iterable


class DatamillError(Exception):
    """Base class of every error datamill raises on purpose."""


class ConfigError(DatamillError):
    """A recipe, step parameter or option is invalid."""


class PipelineError(ConfigError):
    """The pipeline's steps do not fit together."""


class InputError(DatamillError):
    """The source rows cannot be used."""


class MissingDependency(DatamillError):
    """An optional dependency is missing."""

    def __init__(self, what: str, extra: str) -> None:
        super().__init__(f"{what} needs an optional dependency: pip install 'datamill[{extra}]'")
        self.extra = extra


class ModelError(DatamillError):
    """A model call failed. ``retryable`` says whether trying again may help."""

    def __init__(
        self, message: str, *, retryable: bool = False, reason: str = "model error"
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.reason = reason


class ModelUnavailable(ModelError):
    """The model cannot be reached or loaded at all; the run stops instead of failing every row."""


class OutputError(DatamillError):
    """The output folder cannot be used."""


class CacheError(DatamillError):
    """The call cache cannot be opened, is not datamill's, or cannot be written (disk full)."""


class BudgetExceeded(DatamillError):
    """A user-set cap would be crossed; the run stops cleanly and can be resumed."""


class ParseError(Exception):
    """A task could not read the model's output. Recorded as a failure, never raised to users."""

    def __init__(self, reason: str, raw: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


class Dropped(Exception):
    """A step decided to drop a row (a filter). Recorded and counted with its reason."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def did_you_mean(word: object, choices: Iterable[object]) -> str:
    """`` (did you mean 'steps'?)`` for the choice closest to a misspelled ``word`` (difflib's
    ratio 0.6 or more), or ``""`` when none is close: the one suggestion every error line uses."""
    import difflib

    hint = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""

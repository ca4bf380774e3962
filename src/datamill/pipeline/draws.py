"""New rows of a mixture's short parts from a source that draws its rows (``pipeline.mixture``).

A sampler source (``io.samplers``) or a ``num_rows`` source makes row ``i`` from its seed and
``i`` alone, so a part the filters drop is filled with rows never fed before, not the same rows
again: :class:`Draws` walks the row indices past those already used, reads each row's tag (a
sampler source draws only the tag column and the columns it depends on) and keeps the rows of
the parts still wanted — rejection sampling over a reproducible stream. A kept row's key is its
row index, so keys stay unique and a rerun makes the same rows under the same keys (every call a
cache hit). The walk is bounded: at most ``MAX_DRAWS_FACTOR`` × the attempt cap rows in all, so
a part whose chance is tiny stops the top-up instead of looping, and the run reports it short
(``mix.short``, with ``mix.too_rare`` naming the parts the draws ran out on).

:func:`check_parts` refuses, before any call, a targeted part the source can never give (a
category value of weight 0, a value the sampler does not declare), from the declared values.

Deliberately not here: the rounds and how many rows each part needs (``pipeline.mixture``),
the samplers themselves (``io.samplers``), cycling a fixed source's rows (``pipeline.mixture``).
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError, did_you_mean
from ..io.samplers import SamplerSource
from ..io.sources import EmptyRows
from ..rows import KeyedRow
from .mix import Mix, part_of

#: the source rows a mixture may draw (to read their tag) per source row it may try
MAX_DRAWS_FACTOR = 100


def _values(source: EmptyRows, column: str) -> list[Any] | None:
    if isinstance(source, SamplerSource):
        return source.possible(column)
    return [source.fields[column]] if column in source.fields else None


def check_parts(mix: Mix, source: EmptyRows) -> None:
    """``ConfigError`` when the source can never give a row of a targeted part (known from the
    sampler's declared values and weights; nothing is checked when they are not finite)."""
    values = _values(source, mix.by)
    if values is None:
        return
    gives = {part_of({mix.by: v}, mix.by) for v in values}
    never = [p for p in mix.targets if p not in gives]
    if never:
        shown = sorted(str(g) for g in gives)
        raise PartError(
            never[0],
            f"mix: the source never gives {mix.by} = {never[0]!r}"
            f"{did_you_mean(never[0], shown)} (not one of its values, or its weight is 0), so "
            f"that part can never be filled; it gives: {', '.join(shown[:10]) or 'nothing'}; "
            f"fix mix.targets or the sampler of {mix.by}",
        )


class PartError(ConfigError):
    """A targeted part the source can never give; ``part`` names it (the recipe loader points
    at its line under ``mix.targets``)."""

    def __init__(self, part: str, message: str) -> None:
        super().__init__(message)
        self.part = part


class Draws:
    """The rows a mixture draws from ``source`` past row ``start``, at most ``max_draws`` in
    all. ``drawn``: rows drawn so far (kept or not); ``too_rare``: the parts still wanted when
    the draws ran out (empty until then)."""

    def __init__(self, source: EmptyRows, by: str, start: int, max_draws: int) -> None:
        self.source, self.by, self.max_draws = source, by, max_draws
        self.next = start  #: the next row index to draw
        self.drawn = 0
        self.too_rare: list[str] = []

    def tag(self, index: int) -> str | None:
        """Row ``index``'s part."""
        source = self.source
        if isinstance(source, SamplerSource):
            value = source.value(index, self.by)
        else:
            value = source.row(index).get(self.by)
        return part_of({self.by: value}, self.by)

    def take(self, wanted: dict[str, int]) -> list[KeyedRow]:
        """Up to ``wanted[part]`` new rows of each part, keyed by row index, in index order;
        fewer when the draws run out (the parts left wanted go to ``too_rare``)."""
        need = {p: n for p, n in wanted.items() if n > 0}
        taken: list[KeyedRow] = []
        while need and self.drawn < self.max_draws:
            index = self.next
            self.next += 1
            self.drawn += 1
            part = self.tag(index)
            if part is not None and part in need:
                taken.append(((index,), self.source.row(index)))
                need[part] -= 1
                if not need[part]:
                    del need[part]
        self.too_rare = [p for p in wanted if p in need]
        return taken


__all__ = ["MAX_DRAWS_FACTOR", "Draws", "PartError", "check_parts"]

"""Example tools shipped with datamill, so the ``tool-calls`` recipe runs offline: unit
conversion, date arithmetic and a small in-memory lookup. Pure functions of their arguments
(no clock, no network, no files), so a generated row replays to the same results.

Each has type hints and a Google-style docstring: that is what their JSON schemas are built from
(``datamill.tools.load_tools``). Deliberately small: they are examples of the shape a user's own
functions need, not a library of tools.
"""

from __future__ import annotations

import datetime as _dt
from typing import Literal

_METRES = {"mm": 0.001, "cm": 0.01, "m": 1.0, "km": 1000.0, "in": 0.0254, "ft": 0.3048,
           "yd": 0.9144, "mi": 1609.344}  # fmt: skip
_GRAMS = {"mg": 0.001, "g": 1.0, "kg": 1000.0, "oz": 28.349523125, "lb": 453.59237}

Unit = Literal["mm", "cm", "m", "km", "in", "ft", "yd", "mi", "mg", "g", "kg", "oz", "lb", "C", "F", "K"]  # fmt: skip

_COUNTRIES = {
    "france": {"capital": "Paris", "population_millions": 68.4, "currency": "EUR", "continent": "Europe"},
    "japan": {"capital": "Tokyo", "population_millions": 124.5, "currency": "JPY", "continent": "Asia"},
    "brazil": {"capital": "Brasília", "population_millions": 203.1, "currency": "BRL", "continent": "South America"},
    "kenya": {"capital": "Nairobi", "population_millions": 55.1, "currency": "KES", "continent": "Africa"},
    "canada": {"capital": "Ottawa", "population_millions": 40.1, "currency": "CAD", "continent": "North America"},
    "australia": {"capital": "Canberra", "population_millions": 26.9, "currency": "AUD", "continent": "Oceania"},
    "germany": {"capital": "Berlin", "population_millions": 84.5, "currency": "EUR", "continent": "Europe"},
    "india": {"capital": "New Delhi", "population_millions": 1428.6, "currency": "INR", "continent": "Asia"},
}  # fmt: skip


def _to_kelvin(value: float, unit: str) -> float:
    return {"C": value + 273.15, "F": (value - 32) * 5 / 9 + 273.15, "K": value}[unit]


def convert_units(value: float, from_unit: Unit, to_unit: Unit) -> float:
    """Convert a length, mass or temperature from one unit to another.

    Args:
        value: The amount to convert.
        from_unit: The unit of the amount (mm, cm, m, km, in, ft, yd, mi, mg, g, kg, oz, lb, C, F, K).
        to_unit: The unit to convert to, of the same kind (length, mass or temperature).

    Returns:
        The amount in the new unit, rounded to 6 decimals.
    """
    for table in (_METRES, _GRAMS):
        if from_unit in table and to_unit in table:
            return round(value * table[from_unit] / table[to_unit], 6)
    temps = ("C", "F", "K")
    if from_unit in temps and to_unit in temps:
        kelvin = _to_kelvin(value, from_unit)
        back = {"C": kelvin - 273.15, "F": (kelvin - 273.15) * 9 / 5 + 32, "K": kelvin}[to_unit]
        return round(back, 6)
    raise ValueError(f"cannot convert {from_unit} to {to_unit}: not the same kind of unit")


def add_days(date: str, days: int) -> str:
    """Add a number of days to a calendar date (negative days go back in time).

    Args:
        date: The start date, as YYYY-MM-DD.
        days: How many days to add.

    Returns:
        The new date, as YYYY-MM-DD.
    """
    return (_dt.date.fromisoformat(date) + _dt.timedelta(days=days)).isoformat()


def days_between(start: str, end: str) -> int:
    """Count the days from one calendar date to another.

    Args:
        start: The first date, as YYYY-MM-DD.
        end: The second date, as YYYY-MM-DD.

    Returns:
        The number of days from start to end (negative when end is earlier).
    """
    return (_dt.date.fromisoformat(end) - _dt.date.fromisoformat(start)).days


def weekday(date: str) -> str:
    """Tell the day of the week of a calendar date.

    Args:
        date: The date, as YYYY-MM-DD.

    Returns:
        The English name of the weekday, e.g. Monday.
    """
    return _dt.date.fromisoformat(date).strftime("%A")


def country_facts(country: str) -> dict[str, object]:
    """Look up the capital, population, currency and continent of a country.

    Args:
        country: The country's English name, e.g. Japan (one of France, Japan, Brazil, Kenya, Canada, Australia, Germany, India).

    Returns:
        A dict with capital, population_millions, currency and continent.
    """
    facts = _COUNTRIES.get(country.strip().lower())
    if facts is None:
        known = ", ".join(name.title() for name in _COUNTRIES)
        raise KeyError(f"no facts about {country!r}; known countries: {known}")
    return {"country": country.strip().title(), **facts}

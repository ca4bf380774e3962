"""The quality report every run writes (``OUT/report.json``, ``OUT/report.png`` and a section of
the dataset card), and that ``datamill report OUT`` prints for any output.

- ``report.metrics`` — distinct-n, ROUGE-L self-overlap, pairwise embedding similarity, lengths
- ``report.build`` — rows (+ the run's counters) → the report, each metric guarded
- ``report.plots`` — the PNG
- ``report.write`` — the files and the card section
"""

from __future__ import annotations

from .build import build_report, to_json
from .write import PLOT_FILE, REPORT_FILE, card_section, load_report, write_report

__all__ = [
    "PLOT_FILE",
    "REPORT_FILE",
    "build_report",
    "card_section",
    "load_report",
    "to_json",
    "write_report",
]

"""The report of a grid run: which strategy beats the baseline, by how much, with what confidence.

A layer above :mod:`medtune.experiments`: it reads what a grid wrote (the results table, the cell records, the
predictions) and never runs a cell, so the grid imports nothing of it. ``write_report(run_dir)`` writes
``report.html``, ``report.md``, ``tables/*.csv`` and ``figures/`` (what ``medtune report`` and the demo call).
"""

from medtune.report.write import Report, write_report

__all__ = ["Report", "write_report"]

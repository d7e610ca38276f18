"""Experiments: a YAML config → a grid of cells → a run store → a results table → a report.

Python entry point (the CLI's ``medtune run`` and the demo call the same function)::

    from medtune.experiments import load_config, run_experiment, write_report
    summary = run_experiment(load_config("configs/tiny.yaml"), executor="local")
    write_report(summary.run_dir)

Modules: ``config`` (pydantic models, YAML loading with located errors), ``grid`` (cells and their ids),
``store`` (content-addressed stage artifacts, per-cell result files, results tables), ``executors`` (local,
process pool, Ray), ``pipeline`` (each stage's own function wired per cell, with store keys),
``runner`` (resume logic), ``report`` (HTML/Markdown/CSV report).
"""

from medtune.experiments.config import ExperimentConfig, config_from_dict, dump_config, load_config
from medtune.experiments.grid import Cell, cell_key, expand
from medtune.experiments.runner import GridStatus, RunSummary, grid_status, run_experiment


def __getattr__(name: str) -> object:
    """``write_report`` is :func:`medtune.experiments.report.write_report`, imported on first use: importing the
    package to read a config does not load the report module."""
    if name == "write_report":
        from medtune.experiments.report import write_report

        return write_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Cell",
    "ExperimentConfig",
    "GridStatus",
    "RunSummary",
    "cell_key",
    "config_from_dict",
    "dump_config",
    "expand",
    "grid_status",
    "load_config",
    "run_experiment",
    "write_report",
]

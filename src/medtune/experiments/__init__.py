"""Experiments: a YAML config → a grid of cells → a run store → a results table.

Python entry point (the CLI's ``medtune run`` and the demo call the same function; the report of a run is
:mod:`medtune.report`, a layer above this package)::

    from medtune.experiments import load_config, run_experiment
    from medtune.report import write_report
    summary = run_experiment(load_config("configs/tiny.yaml"), executor="local")
    write_report(summary.run_dir)

Modules: ``config`` (pydantic models, YAML loading with located errors), ``grid`` (cells and their ids),
``store`` (content-addressed stage artifacts, per-cell result files, results tables), ``executors`` (local,
process pool, Ray), ``pipeline`` (each stage's own function wired per cell, with store keys),
``runner`` (resume logic).
"""

from medtune.experiments.config import ExperimentSettings, config_from_dict, dump_config, load_config
from medtune.experiments.grid import Cell, cell_key, expand
from medtune.experiments.runner import GridStatus, RunSummary, grid_status, run_experiment
from medtune.settings import renamed_names

__all__ = [
    "Cell",
    "ExperimentSettings",
    "GridStatus",
    "RunSummary",
    "cell_key",
    "config_from_dict",
    "dump_config",
    "expand",
    "grid_status",
    "load_config",
    "run_experiment",
]

# The previous release's name, kept with a DeprecationWarning for one more.
__getattr__ = renamed_names(__name__, {"ExperimentConfig": "ExperimentSettings"}, globals())

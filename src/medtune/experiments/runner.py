"""Run a whole grid: expand the config, skip finished cells, run the rest, rebuild the results table.

Python entry point (what ``medtune run`` and the demo call)::

    from medtune.experiments import load_config, run_experiment
    summary = run_experiment(load_config("configs/tiny.yaml"), executor="local")
    summary.results  # Path to results.parquet; summary.run_dir holds cells/, store/, results.*

Resumption rests on two facts: a cell's result file is written atomically by the cell itself once it is
finished (so a killed run leaves only whole files), and a cell is skipped when its file says ``done``
under the same config key. Failed cells are retried on the next run unless ``retry_failed=False``.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtune.experiments import executors, pipeline
from medtune.experiments.config import ExperimentSettings, dump_config, load_config
from medtune.experiments.grid import Cell, cell_key, expand
from medtune.experiments.pipeline import cell_precision as cell_precision  # re-exported: `medtune run --dry-run`
from medtune.experiments.store import ResultStore, Store
from medtune.io import write_text_atomic

TABLES_EVERY = 60.0  # seconds between rebuilds of the results tables while a grid runs


@dataclass
class GridStatus:
    cell: Cell
    key: str
    status: str  # done / failed / stale / pending


@dataclass
class RunSummary:
    run_dir: Path
    results: Path | None
    statuses: list[GridStatus]
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(s.status for s in self.statuses))

    @property
    def failed(self) -> list[str]:
        return [s.cell.id for s in self.statuses if s.status == "failed"]


def _as_config(config: ExperimentSettings | str | Path) -> ExperimentSettings:
    cfg = config if isinstance(config, ExperimentSettings) else load_config(config)
    if cfg.base_dir is None:  # built in Python: relative paths start at the working directory
        cfg = cfg.model_copy(update={"base_dir": os.getcwd()})
    return cfg


def check_config(config: ExperimentSettings) -> None:
    """Checks that need the stages' registries: strategy names and options, training options and preset.

    Done before any cell runs (and in a dry run), so a typo fails in seconds, naming its place in the config.
    """
    from medtune.errors import ConfigError, MedtuneError
    from medtune.orders.strategies import get_strategy

    for i, s in enumerate(config.strategies):
        if s.is_adaptive:
            continue  # validated with the config (medtune.adaptive's registry)
        try:
            get_strategy(s.name).resolve_options(s.options)
        except MedtuneError as exc:
            raise ConfigError(f"strategies[{i}]: {exc}") from None
    if config.baseline_strategy not in {s.id for s in config.strategies}:
        raise ConfigError(f"baseline_strategy: '{config.baseline_strategy}' is not among the strategies "
                          f"({', '.join(s.id for s in config.strategies)})")
    from medtune.training.methods import get_method

    for j, method in enumerate(config.training.methods):
        try:
            get_method(method)
        except MedtuneError as exc:
            raise ConfigError(f"training.methods[{j}]: {exc}") from None
    for model in config.models:  # every model × method resolves to valid training settings
        for method in config.training.methods:
            config.training_settings(model.name, method, config.run_seeds[0][0])
    from medtune.experiments.checks import check_cells

    check_cells(config)  # every cell's inputs are there and hold what it reads (files, human difficulty, tables)


def stored_artifacts(config: ExperimentSettings) -> dict[str, int]:
    """Finished artifacts per stage in the config's store (empty when nothing ran yet; creates nothing)."""
    return Store(config.store_path).stages() if config.store_path.exists() else {}


def grid_status(config: ExperimentSettings) -> list[GridStatus]:
    """Every cell with its key and whether it is already done (read from the run directory)."""
    results = ResultStore(config.run_dir)
    out = []
    for cell in expand(config):
        key = cell_key(config, cell)
        out.append(GridStatus(cell, key, results.status(cell.id, key)))
    return out


def run_experiment(
    config: ExperimentSettings | str | Path,
    *,
    executor: str | None = None,
    dry_run: bool = False,
    retry_failed: bool = True,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    cell_progress: bool | None = None,
) -> RunSummary:
    """Run (or with ``dry_run`` only list) the grid of ``config``; returns what ran and where results are.

    ``executor`` overrides ``config.executor.kind`` (``local``, ``pool`` or ``ray``). ``cell_progress``
    (default: ``progress``) sets the progress bars inside cells separately from the shared stages': cells
    running in parallel processes would interleave their bars, so a caller may keep only ``log`` lines there.
    """
    cfg = _as_config(config)
    if executor is not None:
        cfg = cfg.model_copy(update={"executor": cfg.executor.model_copy(update={"kind": executor})})
    say = log or (lambda s: None)
    check_config(cfg)
    statuses = grid_status(cfg)
    run_dir = cfg.run_dir
    if dry_run:
        return RunSummary(run_dir, None, statuses)

    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", dump_config(cfg))
    store = Store(cfg.store_path)
    store.clean_partial()
    store.clear_failures()  # a stage that failed in an earlier run is tried again (its input may be fixed)
    results = ResultStore(run_dir)

    todo = [s for s in statuses if s.status in ("pending", "stale") or (retry_failed and s.status == "failed")]
    skipped = [s.cell.id for s in statuses if s not in todo]
    say(f"{len(statuses)} cells: {len(skipped)} already finished, {len(todo)} to run ({cfg.executor.kind} executor)")
    if todo:
        with executors.session(cfg.executor):
            _run_todo(cfg, todo, statuses, results, progress, say,
                      progress if cell_progress is None else cell_progress)

    table = results.build_tables([s.cell.id for s in statuses])
    return RunSummary(run_dir, table, grid_status(cfg), ran=[s.cell.id for s in todo], skipped=skipped)


def _run_todo(cfg: ExperimentSettings, todo: list[GridStatus], statuses: list[GridStatus], results: ResultStore,
              progress: bool, say: Callable[[str], None], cell_progress: bool) -> None:
    cfg_json = cfg.model_dump(mode="json")
    test_names = [t.label for t in cfg.test_sets]
    # Phase 1: the stages many cells share (data, base model, difficulty, categories, orders), once, in one
    # task, so parallel cells do not race to compute them. Errors here are left for the cells to report.
    shared = {"config": cfg_json, "cells": [s.cell.as_dict() for s in todo], "progress": progress}
    # A process pool is this machine: run the shared stages here rather than spawn a pool for one task.
    phase1 = cfg.executor.model_copy(update={"kind": "local"}) if cfg.executor.kind == "pool" else cfg.executor
    executors.run_cells([shared], pipeline.prepare_shared, lambda p, r: None, phase1)

    # Phase 2: the cells.
    payloads = [
        {"config": cfg_json, "cell": s.cell.as_dict(), "key": s.key, "test_sets": test_names,
         "progress": cell_progress}
        for s in todo
    ]
    n_done = 0
    t0 = time.time()
    last_tables = time.time()
    all_ids = [s.cell.id for s in statuses]

    def on_done(payload: dict[str, Any], record: dict[str, Any]) -> None:
        nonlocal n_done, last_tables
        n_done += 1
        if results.read(record["cell_id"]) is None or (record.get("error") or "").startswith("worker crashed"):
            results.write(record)  # the worker died before writing its own file
        # The tables are rebuilt from the cell files (never appended to): at most every TABLES_EVERY seconds while
        # cells finish, so a long grid shows progress without rewriting them per cell; once more at the end.
        if time.time() - last_tables >= TABLES_EVERY:
            results.build_tables(all_ids)
            last_tables = time.time()
        status = record.get("status")
        detail = record.get("error") if status == "failed" else _acc_line(record)
        say(f"[{n_done}/{len(todo)}] {record['cell_id']}: {status} ({detail}) {time.time() - t0:.0f}s")

    executors.run_cells(payloads, pipeline.execute_cell, on_done, cfg.executor)


def _acc_line(record: dict[str, Any]) -> str:
    tests = record.get("tests") or {}
    return ", ".join(f"{k} {v.get('accuracy', float('nan')):.3f}" for k, v in tests.items())

"""Expand a config into grid cells: models × datasets × methods × strategies × difficulty sources × seeds.

The seeds are tied (``seeds``: one seed sets both the training initialisation and the order) or crossed
(``order_seeds`` × ``init_seeds``: every pair is a run, so the report can tell how much of the spread between
runs each explains).

A cell's id is built from its axis values only (readable, stable across runs and machines, and
independent of the order of the lists in the YAML), so results and resumption key on it. Its ``key`` is
a hash of everything else in the config that changes the cell's result (hyperparameters, test sets, ...):
a finished cell whose key no longer matches is *stale* and is run again.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import asdict, dataclass
from typing import Any

from medtune.experiments.config import ExperimentSettings
from medtune.experiments.sweep import setting_label
from medtune.io import stable_hash

AXES = ("model", "dataset", "method", "strategy", "difficulty", "seed", "order_seed", "fold", "setting")
# The pseudo-cell that evaluates a model before fine-tuning.
BASE_METHOD, BASE_STRATEGY = "none", "base"
# The difficulty "source" of cells whose strategy ignores difficulty (one cell serves every source).
NO_DIFFICULTY = "none"


@dataclass(frozen=True)
class Cell:
    model: str
    dataset: str
    method: str
    strategy: str
    difficulty: str
    seed: int  # the training (initialisation) seed
    order_seed: int | None = None  # the order's seed; None: tied to ``seed``
    fold: int | None = None  # cross-validation: trained on every fold of the training set but this one
    setting: str | None = None  # a sweep's setting (``lr=0.0001,lora.r=8``, medtune.experiments.sweep)

    @property
    def is_base(self) -> bool:
        return self.strategy == BASE_STRATEGY

    @property
    def order_seed_value(self) -> int:
        """The seed the order is drawn with (before a strategy's own offset, e.g. the A/A arm's)."""
        return self.seed if self.order_seed is None else self.order_seed

    @property
    def run_key(self) -> tuple[int, int]:
        """What pairs two arms' runs: the same (initialisation seed, order seed)."""
        return (self.seed, self.order_seed_value)

    @property
    def id(self) -> str:
        seed = f"s{self.seed}" if self.order_seed is None else f"s{self.seed}-o{self.order_seed}"
        data = self.dataset if self.fold is None else f"{self.dataset}-f{self.fold}"
        parts = [self.model, data, self.method, self.strategy, self.difficulty, seed]
        if self.setting is not None:
            parts.append(self.setting)
        return "__".join(_slug(p) for p in parts)

    def as_dict(self) -> dict[str, Any]:
        return {"cell_id": self.id, **asdict(self)}

    def key_fields(self) -> dict[str, Any]:
        """The axis values a cell's key hashes (a tied cell hashes as it did before order seeds existed)."""
        d = asdict(self)
        for optional in ("order_seed", "fold", "setting"):
            if d[optional] is None:
                d.pop(optional)
        return d


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(text)).strip("-") or "x"


def uses_difficulty(name: str, options: dict[str, Any] | None = None) -> bool:
    """Whether strategy ``name`` (with ``options``) reads difficulty, as the strategy registry says."""
    from medtune.orders.strategies import get_strategy

    return get_strategy(name).reads_difficulty(options)


def expand(config: ExperimentSettings) -> list[Cell]:
    """All cells of the grid, in a deterministic order (the YAML's list order, seeds innermost).

    Crossed seeds give one cell per (initialisation seed, order seed) pair; a cross-validated training set one
    cell per fold (and whole-set cells where other test sets need them, see ``ExperimentSettings.folds_for``).

    Strategies that ignore difficulty (random, blocked, interleaved) get one cell per seed under the
    difficulty source ``none``, instead of identical copies per difficulty source.

    A sweep (``training.sweep``) gives every arm one cell per setting and seed, the settings in sweep order
    (seeds innermost, so one setting's seeds sit together).
    """
    cells: list[Cell] = []
    for model, (data, fold), method, strat, diff in itertools.product(
        config.models,
        [(d, f) for d in config.datasets for f in config.folds_for(d.label)],
        config.training.methods,
        config.strategies,
        config.difficulty.sources,
    ):
        d = diff if strat.reads_difficulty() else NO_DIFFICULTY
        for setting in config.settings_of(method):
            for seed, order_seed in config.run_seeds:
                cell = Cell(model.name, data.label, method, strat.id, d, seed, order_seed, fold,
                            setting_label(setting))
                if cell not in cells:
                    cells.append(cell)
    if config.evaluation.baseline:  # the model before fine-tuning, once per model and training set
        base = [Cell(m.name, d.label, BASE_METHOD, BASE_STRATEGY, NO_DIFFICULTY,
                     min(s for s, _ in config.run_seeds))
                for m, d in itertools.product(config.models, config.datasets)]
        cells = base + cells
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):  # two names differing only in punctuation
        dup = sorted({i for i in ids if ids.count(i) > 1})
        from medtune.errors import ConfigError

        raise ConfigError(f"grid cells with the same id {dup[:3]}: make the names differ in letters or digits")
    return cells


def cell_key(config: ExperimentSettings, cell: Cell) -> str:
    """Hash of the config parts that determine this cell's result (its axis values included)."""
    model = next(m for m in config.models if m.name == cell.model)
    data = next(d for d in config.datasets if d.label == cell.dataset)
    strat = next((s for s in config.strategies if s.id == cell.strategy), None)
    from medtune import __version__

    payload = {
        "medtune": __version__,
        "cell": cell.key_fields(),
        "model": model.model_dump(mode="json"),
        "data": data.model_dump(mode="json"),
        "strategy": strat.model_dump(mode="json") if strat else None,
        "difficulty": config.difficulty.model_dump(mode="json") if cell.difficulty != NO_DIFFICULTY else None,
        "categories": config.categories.model_dump(mode="json"),
        # A cell's own setting is among its axis values: the sweep's other values do not change its result, so a
        # sweep that grows only adds cells.
        "training": None if cell.is_base else config.training.model_dump(
            mode="json", exclude={"methods", "sweep", "sweep_by_method", "sweep_shared"}),
        "evaluation": config.evaluation.model_dump(mode="json"),
        "test_sets": [t.model_dump(mode="json") for t in config.test_sets],
    }
    if config.has_sweep and not cell.is_base:  # its training items, and the items its setting is chosen on
        payload["validation"] = config.validation.model_dump(mode="json")
    return stable_hash(payload)


def sweep_lines(config: ExperimentSettings, cells: list[Cell]) -> list[str]:
    """What a sweep costs, as the dry run prints it: settings per method, the cells they add, the evaluations."""
    if not config.has_sweep:
        return []
    trained = [c for c in cells if not c.is_base]
    lines = []
    for method in config.training.methods:
        settings = config.settings_of(method)
        n = sum(c.method == method for c in trained)
        if not config.sweep_of(method):
            lines.append(f"sweep: {method}: not swept → {n} training cells at its one setting")
            continue
        keys = ", ".join(f"{k} {config.sweep_of(method)[k]}" for k in config.sweep_of(method))
        shared = setting_label(config.shared_of(method))
        lines.append(f"sweep: {method}: {len(settings)} settings ({keys}) → {n} training cells "
                     f"({n // len(settings)} per setting); shared setting {shared}")
    n_tests = sum(len(config.test_sets_for(c.dataset, c.fold)) for c in trained)
    unswept = sum(1 / len(config.settings_of(c.method)) for c in trained)
    val = config.validation
    where = f"split '{val.split}'" if val.split else (f"the data set's dev/validation split, else {val.share:g} of "
                                                      f"the training items held out (seed {val.seed})")
    lines.append(f"sweep cost: {len(trained)} training runs instead of {round(unswept)} "
                 f"(×{len(trained) / max(unswept, 1):.1f}); {len(trained)} validation + {n_tests} test evaluations; "
                 f"validation items: {where}")
    return lines

"""The experiment config: the schema of the YAML file that names a whole grid, and its loading.

One YAML file names the whole grid (models, datasets, strategies, seeds, ...); each section is a stage's settings
schema plus the grid's axes (an adaptive strategy's section: :mod:`medtune.experiments.adaptive`). Every model
forbids unknown keys, and :func:`load_config` reports an error at the dotted path of the offending key plus its
YAML line (``configs/x.yaml:12: training.lr_rate: unknown key``, located by
:mod:`medtune.experiments.yaml_errors`): a typo in a grid that runs for days must fail before the first cell, at
the place the user has to fix. Values only a stage or a registry can judge (strategy names and options,
training, evaluation and difficulty values) are checked by :func:`value_problems` while the YAML is at hand, and
reported at their line the same way.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medtune.data.stage import DataSettings
from medtune.difficulty_sources import SOURCES, DifficultySource, get_difficulty_source
from medtune.errors import ConfigError
from medtune.experiments.adaptive import GridAdaptiveSettings, validate_adaptive
from medtune.experiments.sweep import (
    check_shared,
    check_sweep,
    expand_settings,
    method_sweep,
    setting_label,
    shared_setting,
    training_layer,
)
from medtune.experiments.validation import GridValidationSettings
from medtune.experiments.yaml_errors import (
    KEY_PATH,
    loc_to_path,
    path_to_loc,
    problem_lines,
    validation_lines,
    yaml_line,
)
from medtune.settings import renamed_names, section_model
from medtune.training.base_model import BaseModelSettings, PretrainSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


GridDataSetSettings = DataSettings  # a grid's `datasets:` entry is the data stage's own schema


class GridTestSetSettings(DataSettings):
    """A grid's `test_sets:` entry: the data stage's schema, or the held-out folds of a cross-validated training set.

    ``{name: lek-test, folds_of: lek}`` tests each fold's cells on the fold they did not train on (the data set
    ``lek`` needs ``folds``); the report pools the folds, so every item is scored once by a model that never saw
    it. Written that way, the entry takes its source, path and options from the training set.
    """

    folds_of: str | None = Field(None, description="name of a training set with `folds`: this test set is its "
                                 "held-out fold, per fold cell")


GridPretrainSettings = PretrainSettings  # the grid's `models[].pretrain` is the base-model stage's own schema


def _training_section() -> type[BaseModel]:
    from medtune.training.config import CELL_FIELDS, TrainSettings
    from medtune.training.method_settings import nest_flat_keys, plugin_settings_groups

    return section_model(
        "GridTrainingSettings", TrainSettings, exclude=(*CELL_FIELDS, "epochs"), groups=plugin_settings_groups,
        normalize=nest_flat_keys, nest_groups=True,
        doc="The grid's shared training settings: every field of medtune.training.TrainSettings (unset: its "
            "default, or the preset's), plus the grid's axes. ``methods`` is a grid axis; ``epochs`` and "
            "``epoch_policy`` shape the order files (training then takes as many epochs as the order holds).",
        extra={
            "methods": (list[str], Field(default_factory=lambda: ["lora"], min_length=1,
                                         description="fine-tuning methods (a grid axis)")),
            "epochs": (int, Field(1, ge=1, description="epochs planned in each order file")),
            "epoch_policy": (Literal["repeat", "reshuffle"], Field(
                "repeat", description="later epochs repeat the first order, or reshuffle it under the seed")),
            "sweep": (dict[str, list[Any]], Field(
                default_factory=dict, description="settings every arm is trained at, a list of values per training "
                "setting (`lr: [1e-4, 3e-4]`, `lora.r: [8, 16]`): one cell per combination, the best chosen per arm "
                "on validation items (medtune.experiments.sweep)")),
            "sweep_by_method": (dict[str, dict[str, list[Any]]], Field(
                default_factory=dict, description="a method's own sweep values (`full: {lr: [1e-5, 3e-5]}`); its "
                "keys win over `sweep`'s")),
            "sweep_shared": (dict[str, Any], Field(
                default_factory=dict, description="the one setting the arms are also compared at, a value per swept "
                "key (default: each arm's first setting)")),
        },
    )


def _model_training_section() -> type[BaseModel]:
    from medtune.training.config import CELL_FIELDS, TrainSettings
    from medtune.training.method_settings import nest_flat_keys, plugin_settings_groups

    return section_model("GridModelTrainingSettings", TrainSettings, exclude=(*CELL_FIELDS, "epochs"),
                         groups=plugin_settings_groups, normalize=nest_flat_keys, nest_groups=True,
                         doc="Training settings for one model only (they win over the grid's `training`).")


GridTrainingSettings = _training_section()
GridModelTrainingSettings = _model_training_section()


class GridModelSettings(BaseModelSettings):
    """One model of the grid: the base-model stage's settings, a name, and training settings of its own."""

    name: str
    training: GridModelTrainingSettings = Field(  # type: ignore[valid-type]
        default_factory=GridModelTrainingSettings,
        description="training settings for this model only (override `training`)")


def _sources_need(section: Any) -> None:
    """What the grid's difficulty sources need of the section, asked of each source (a plugin's too) rather than
    of their names, so that a grid fails on its config rather than in every cell: the sources scoring the ensemble
    (``scores_models``) need ``ensemble`` or ``crossfit``; a source reading files (``input_files``) is checked by
    its own ``check`` (``file`` needs ``file``)."""
    specs = [get_difficulty_source(s) for s in section.sources]
    if any(spec.scores_models for spec in specs) and not section.ensemble and section.crossfit is None:
        scoring = "/".join(repr(n) for n in SOURCES.names() if SOURCES.get(n).scores_models)
        raise ValueError(f"sources: difficulty sources {scoring} need `ensemble` (model specs) or `crossfit`")
    for spec in specs:
        if spec.input_files:
            try:
                spec.check(section)
            except ValueError as exc:
                raise ValueError(f"sources: {exc}") from None


def _difficulty_section() -> type[BaseModel]:
    from medtune.difficulty_stage import DifficultySettings

    section = section_model(
        "GridDifficultySettings", DifficultySettings, exclude=("source",),
        doc="Where difficulty comes from: the difficulty stage's settings (medtune.difficulty_stage."
            "DifficultySettings) plus the grid axis ``sources`` — each listed source gives its own cells. "
            "``human``: the items' ``human_difficulty``; ``llm``: 1 − mean expected accuracy of the ``ensemble`` "
            "models (and ``crossfit`` fine-tunes) on the training items (the paper's definition); ``irt``: the IRT "
            "difficulty fitted to the same ensemble scores, bucketed by terciles; ``file``: an external table.",
        extra={"sources": (list[DifficultySource], Field(default_factory=lambda: ["human"], min_length=1,
                                                         description="difficulty sources (a grid axis)"))})

    def needs(self: Any) -> Any:  # checked on the section: cells resolve the stage schema only when they run
        _sources_need(self)
        if self.thresholds and self.quantiles:
            raise ValueError("quantiles: give `thresholds` or `quantiles`, not both")
        return self

    return type("GridDifficultySettings", (section,), {"_needs": model_validator(mode="after")(needs),
                                                 "__doc__": section.__doc__})


GridDifficultySettings = _difficulty_section()


def _categories_section() -> type[BaseModel]:
    from medtune.categories import CategorySettings

    return CategorySettings


GridCategoriesSettings = _categories_section()  # no grid axis: the categories stage's own schema


AA_SUFFIX = "-aa"  # the label suffix of the A/A arm: the baseline strategy again, with orders of its own
AA_ORDER_SEED_OFFSET = 100_000


class GridStrategySettings(_Strict):
    name: str = Field(description="a medtune.orders strategy name (with `adaptive`: a medtune.adaptive one)")
    label: str | None = Field(None, description="name in results when one strategy appears with several options")
    options: dict[str, Any] = Field(default_factory=dict)
    order_seed_offset: int = Field(0, ge=0, description="added to the cell's seed for the order only (the "
                                   "initialisation keeps the cell's seed): the A/A arm's own orders")
    adaptive: GridAdaptiveSettings | None = Field(
        None, description="train with an adaptive strategy of medtune.adaptive (``name`` is then its registered "
                          "name; the order is random shuffle's, the candidate pool)")

    @model_validator(mode="after")
    def _adaptive_entry(self) -> GridStrategySettings:
        if self.adaptive is not None:
            if self.options:
                raise ValueError("options: an adaptive strategy takes its options under `adaptive.options`, "
                                 "not `options`")
            validate_adaptive(self.name, self.adaptive)
        return self

    @property
    def id(self) -> str:
        return self.label or self.name

    @property
    def is_adaptive(self) -> bool:
        return self.adaptive is not None

    def reads_difficulty(self) -> bool:
        """Whether the arm reads item difficulty (then it gets a cell per difficulty source)."""
        if self.adaptive is not None:
            from medtune.experiments.adaptive import strategy_needs

            return "b" in strategy_needs(self.name)
        from medtune.orders.strategies import get_strategy

        return get_strategy(self.name).reads_difficulty(self.options)


def _evaluation_section() -> type[BaseModel]:
    from medtune.evaluation_stage import EvalSettings

    return section_model(
        "GridEvaluationSettings", EvalSettings,
        doc="The evaluation stage's settings (medtune.evaluation_stage.EvalSettings; unset: its defaults) plus "
            "``baseline``. By default a fine-tuned model is scored on the weights it was trained with: the "
            "same dtype, and a QLoRA adapter on its 4-bit base.",
        extra={"baseline": (bool, Field(True, description="also evaluate each model before fine-tuning")),
               "aa_check": (bool, Field(False, description="add an A/A arm: the baseline strategy again with "
                                        "order seeds of its own (same initialisation seeds); no real difference "
                                        "exists, so its reported gain must come out null — a calibration check "
                                        "of the comparison"))})


GridEvaluationSettings = _evaluation_section()


class ExecutorSettings(_Strict):
    """Where cells run, and what each cell gets of the machine (see :mod:`medtune.experiments.executors`).

    GPU settings default to what the machine has, so one config runs on a laptop and on a GPU node: a cell gets
    ``gpus_per_cell`` GPUs where there are GPUs and none elsewhere; the pool runs one worker per GPU slot.
    """

    kind: Literal["local", "pool", "ray"] = "local"
    workers: int | None = Field(None, ge=1, description="processes for the pool executor (default: one per GPU slot, "
                                "visible GPUs // gpus_per_cell, where GPUs are visible; else 2)")
    gpus_per_cell: int | None = Field(
        None, ge=0, description="GPUs each pool or Ray cell gets where the machine or cluster has GPUs (default 1; "
                                "none where there are none): it sees only its own; 0 hides the GPUs from the cells")
    num_cpus: float = Field(1, gt=0, description="CPUs each Ray task asks for (a local instance: at most its CPUs)")
    num_gpus: float | None = Field(
        None, ge=0, description="GPUs each Ray task asks for (a fraction shares a GPU between cells; default: "
                                "gpus_per_cell where the cluster has GPUs when the grid starts, else 0)")
    address: str | None = Field(None, description="Ray cluster address (or the RAY_ADDRESS variable); None starts "
                                "a local instance with this machine's CPUs and GPUs")
    ray_init: dict[str, Any] | None = Field(
        None, description="keyword arguments for ray.init of a local instance (e.g. num_cpus, num_gpus: the "
                          "resources Ray counts, which need not exist)")
    torch_threads: int | None = Field(
        None, ge=1, description="torch threads per cell; fix it to get identical numbers under every executor"
    )

    @field_validator("num_gpus")
    @classmethod
    def _one_gpu_count(cls, v: float | None, info: Any) -> float | None:
        # num_gpus is gpus_per_cell as Ray asks for it; different whole numbers would give Ray tasks one count of
        # GPUs and pool workers another.
        g = info.data.get("gpus_per_cell")
        if v is not None and g is not None and -(-v // 1) != g:  # ceil
            raise ValueError(f"{v:g} GPUs per Ray task disagrees with gpus_per_cell: {g} (set only gpus_per_cell; "
                             "num_gpus is needed only for a fraction of a GPU)")
        return v

    @field_validator("ray_init")
    @classmethod
    def _local_only(cls, v: dict[str, Any] | None, info: Any) -> dict[str, Any] | None:
        if v and (info.data.get("address") or "address" in v):
            raise ValueError("sets up a local Ray instance; a cluster (address) has its own resources")
        return v


class ExperimentSettings(_Strict):
    """A whole grid: models × datasets × methods × strategies × difficulty sources × seeds."""

    name: str
    plugins: list[str] = Field(default_factory=list, description="modules imported before the grid runs (in every "
                               "worker too): they register methods, backends, strategies or loaders")
    output_dir: str = Field(description="run directory (relative paths: to the directory medtune runs in)")
    store_dir: str | None = Field(None, description="content-addressed stage store; default OUTPUT_DIR/store")
    seeds: list[int] | None = Field(None, min_length=1, description="tied seeds: each sets both the training "
                                    "initialisation and the order (default [0] unless seeds are crossed)")
    order_seeds: list[int] | None = Field(None, min_length=1, description="crossed seeds (with `init_seeds`, "
                                          "instead of `seeds`): the orders' seeds; every order seed is trained "
                                          "from every initialisation seed")
    init_seeds: list[int] | None = Field(None, min_length=1, description="crossed seeds (with `order_seeds`): "
                                         "the training initialisation (and dropout) seeds")
    models: list[GridModelSettings] = Field(min_length=1)
    datasets: list[GridDataSetSettings] = Field(min_length=1, description="training sets (a grid axis)")
    test_sets: list[GridTestSetSettings] = Field(min_length=1, description="every cell is evaluated on each (a "
                                           "`folds_of` test set: each fold cell on its own held-out fold)")
    strategies: list[GridStrategySettings] = Field(min_length=1)
    baseline_strategy: str = "random"
    baseline_method: str | None = Field(None, description="the method the report compares the other methods with "
                                        "(default: full when the grid trains it, else the first method)")
    difficulty: GridDifficultySettings = Field(default_factory=GridDifficultySettings)
    categories: GridCategoriesSettings = Field(default_factory=GridCategoriesSettings)
    training: GridTrainingSettings = Field(default_factory=GridTrainingSettings)
    evaluation: GridEvaluationSettings = Field(default_factory=GridEvaluationSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    validation: GridValidationSettings = Field(default_factory=GridValidationSettings, description="where a sweep's "
                                           "validation items come from (medtune.experiments.validation)")
    base_dir: str | None = Field(None, description="set by the loader: the folder relative paths start from")

    @model_validator(mode="before")
    @classmethod
    def _cross_validated_test_sets(cls, data: Any) -> Any:
        """A `folds_of` test set takes its data settings from the training set it holds folds of."""
        if not isinstance(data, dict) or not isinstance(data.get("test_sets"), list):
            return data
        by_name = {}
        for d in data.get("datasets") or []:
            if isinstance(d, dict):
                by_name[d.get("name") or d.get("source")] = d
        out = []
        for i, t in enumerate(data["test_sets"]):
            if isinstance(t, dict) and t.get("folds_of") is not None:
                at = f"test_sets[{i}].folds_of: "  # the message's place (reported at its YAML line)
                ds = by_name.get(t["folds_of"])
                if ds is None:
                    raise ValueError(f"{at}test set '{t.get('name')}': folds_of '{t['folds_of']}' names no "
                                     "training set")
                # Its own data keys may only repeat the training set's (a saved config repeats them all).
                try:
                    ref = DataSettings.model_validate(ds).model_dump(mode="json")
                except ValueError:
                    ref = dict(ds)  # the training set is invalid itself: its own error is reported
                own = sorted(k for k in set(t) - {"name", "folds_of", "fold", "fold_part"} if t[k] != ref.get(k))
                if own:
                    raise ValueError(f"{at}test set '{t.get('name')}' with folds_of takes its data settings from the "
                                     f"training set; remove {own}")
                if not ds.get("folds"):
                    raise ValueError(f"{at}test set '{t.get('name')}': training set '{t['folds_of']}' has no `folds`")
                t = {**ds, "name": t.get("name") or f"{t['folds_of']}-test", "folds_of": t["folds_of"]}
            out.append(t)
        return {**data, "test_sets": out}

    @field_validator("strategies", mode="before")
    @classmethod
    def _strategy_names(cls, v: Any) -> Any:
        # A bare name is shorthand for {name: NAME}.
        if isinstance(v, list):
            return [{"name": s} if isinstance(s, str) else s for s in v]
        return v

    @model_validator(mode="after")
    def _known_baseline_method(self) -> ExperimentSettings:
        if self.baseline_method is not None and self.baseline_method not in self.training.methods:
            raise ValueError(f"baseline_method: '{self.baseline_method}' is not one of training.methods "
                             f"({', '.join(self.training.methods)})")
        return self

    @model_validator(mode="after")
    def _aa_arm(self) -> ExperimentSettings:
        """With ``evaluation.aa_check`` the baseline strategy appears a second time, with its own order seeds."""
        if not self.evaluation.aa_check:
            return self
        label = f"{self.baseline_strategy}{AA_SUFFIX}"
        base = next((s for s in self.strategies if s.id == self.baseline_strategy), None)
        if base is not None and all(s.id != label for s in self.strategies):
            self.strategies.append(GridStrategySettings(name=base.name, label=label, options=dict(base.options),
                                                  order_seed_offset=AA_ORDER_SEED_OFFSET))
        return self

    @model_validator(mode="after")
    def _sweep_values(self) -> ExperimentSettings:
        """Each sweep names training settings with lists of values; ``sweep_shared`` a value each arm sweeps."""
        def at(where: str, exc: ValueError) -> ValueError:
            # The message starts with the key: a group's (`lora.r`) is one YAML key, reported at its mapping's line.
            key = str(exc).split(":", 1)[0]
            return ValueError(f"{where}: {exc}" if "." in key else f"{where}.{exc}")

        t = self.training
        try:
            t.sweep = check_sweep(t.sweep)
        except ValueError as exc:
            raise at("training.sweep", exc) from None
        for method, values in t.sweep_by_method.items():
            try:
                t.sweep_by_method[method] = check_sweep(values)
            except ValueError as exc:
                raise at(f"training.sweep_by_method.{method}", exc) from None
        for method in t.sweep_by_method:
            if method not in t.methods:
                raise ValueError(f"training.sweep_by_method.{method}: not one of training.methods "
                                 f"({', '.join(t.methods)})")
        try:
            check_shared(t.sweep_shared, {m: self.sweep_of(m) for m in t.methods})
        except ValueError as exc:
            raise at("training.sweep_shared", exc) from None
        split = self.validation.split
        for test in self.test_sets if split else []:
            if test.split == split and any(d.source == test.source for d in self.datasets):
                raise ValueError(f"validation.split: '{split}' is the split of test set '{test.label}'; settings "
                                 "are never chosen on a test set")
        return self

    @model_validator(mode="after")
    def _seed_design(self) -> ExperimentSettings:
        crossed = (self.order_seeds is not None, self.init_seeds is not None)
        if any(crossed) and not all(crossed):
            key = "order_seeds" if self.order_seeds is not None else "init_seeds"
            raise ValueError(f"{key}: crossed seeds need both `order_seeds` and `init_seeds`")
        if all(crossed) and self.seeds is not None:
            raise ValueError("seeds: give `seeds` (tied) or `order_seeds` and `init_seeds` (crossed), not both")
        if not any(crossed) and self.seeds is None:
            self.seeds = [0]
        return self

    @property
    def crossed_seeds(self) -> bool:
        """Whether order and initialisation seeds vary separately (``order_seeds`` × ``init_seeds``)."""
        return self.order_seeds is not None

    @property
    def run_seeds(self) -> list[tuple[int, int | None]]:
        """(initialisation seed, order seed) of every run of one arm; the order seed is None where tied."""
        if self.order_seeds is None or self.init_seeds is None:
            return [(s, None) for s in self.seeds or [0]]
        return [(i, o) for i in self.init_seeds for o in self.order_seeds]

    @model_validator(mode="after")
    def _unique_labels(self) -> ExperimentSettings:
        for what, labels in (
            ("models", [m.name for m in self.models]),
            ("datasets", [d.label for d in self.datasets]),
            ("test_sets", [d.label for d in self.test_sets]),
            ("strategies", [s.id for s in self.strategies]),
            ("seeds", [str(s) for s in self.seeds or []]),
            ("order_seeds", [str(s) for s in self.order_seeds or []]),
            ("init_seeds", [str(s) for s in self.init_seeds or []]),
        ):
            dup = {x for x in labels if labels.count(x) > 1}
            if dup:
                raise ValueError(f"{what}: duplicate names {sorted(dup)} (give each a distinct name/label)")
        return self

    # ------------------------------------------------------------------------------------------------
    # Sweeps (medtune.experiments.sweep)

    @property
    def has_sweep(self) -> bool:
        """Whether the grid trains its arms at several settings (then cells are also scored on validation items)."""
        return bool(self.training.sweep or self.training.sweep_by_method)

    def sweep_of(self, method: str) -> dict[str, list[Any]]:
        """The swept values of ``method``'s arms: ``training.sweep`` with its own ``sweep_by_method`` keys."""
        return method_sweep(self.training.sweep, self.training.sweep_by_method, method)

    def settings_of(self, method: str) -> list[dict[str, Any]]:
        """``method``'s settings in sweep order (``[{}]`` without a sweep)."""
        return expand_settings(self.sweep_of(method))

    def shared_of(self, method: str) -> dict[str, Any]:
        """``method``'s setting in the comparison of the arms at one shared setting."""
        return shared_setting(self.sweep_of(method), self.training.sweep_shared)

    def setting(self, method: str, label: str | None) -> dict[str, Any]:
        """The swept values a cell's setting label stands for (``{}`` for none)."""
        if label is None:
            return {}
        for s in self.settings_of(method):
            if setting_label(s) == label:
                return s
        raise ConfigError(f"training.sweep: setting '{label}' is not swept for method '{method}'")

    # ------------------------------------------------------------------------------------------------
    def resolve(self, path: str | None) -> Path | None:
        """A path from the config: ``$VARS`` expanded, relative to ``base_dir`` (the working directory at load)."""
        if path is None:
            return None
        p = Path(os.path.expandvars(path)).expanduser()
        if not p.is_absolute() and self.base_dir:
            p = Path(self.base_dir) / p
        return p

    def model(self, name: str) -> GridModelSettings:
        return next(m for m in self.models if m.name == name)

    def dataset(self, label: str) -> DataSettings:
        return next(d for d in self.datasets if d.label == label)

    def folds_for(self, label: str) -> list[int | None]:
        """The fold values of training set ``label``'s cells: None is the whole set.

        A cross-validated set gets one cell per fold where a `folds_of` test set needs them, and whole-set cells
        where any other test set does (the protocol of training on all of it for the other test sets).
        """
        ds = self.dataset(label)
        cv = [t for t in self.test_sets if t.folds_of == label]
        if not ds.folds or not cv:
            return [None]
        folds: list[int | None] = list(range(ds.folds))
        if any(t.folds_of != label for t in self.test_sets):
            folds.append(None)
        return folds

    def training_set(self, label: str, fold: int | None) -> DataSettings:
        """The training items of a cell: the whole set, or every fold of it but ``fold``."""
        ds = self.dataset(label)
        return ds if fold is None else ds.model_copy(update={"fold": fold, "fold_part": "train"})

    def test_sets_for(self, dataset: str, fold: int | None, *, base: bool = False) -> list[DataSettings]:
        """The test sets a cell is evaluated on.

        A fold cell: the held-out fold of each `folds_of` test set of its training set. A whole-set cell: every
        other test set (its own cross-validated set is all training data to it). A base cell (no training):
        every test set, a cross-validated one whole (its folds pooled, as the fold cells' results are).
        """
        out: list[DataSettings] = []
        for t in self.test_sets:
            if t.folds_of is None:
                if fold is None:
                    out.append(t)
            elif base:
                out.append(t.model_copy(update={"fold": None}))
            elif t.folds_of == dataset and fold is not None:
                out.append(t.model_copy(update={"fold": fold, "fold_part": "test"}))
        return out

    def training_settings(self, model_name: str, method: str, seed: int, base_spec: str | None = None,
                          setting: dict[str, Any] | None = None) -> Any:
        """The training settings of one cell (a :class:`medtune.training.TrainSettings`), resolved once.

        Defaults < the preset < the grid's ``training`` < the model's own ``training`` < the cell's axes
        (method, seed, base model, its swept ``setting``). Raises :class:`ConfigError` naming the config section
        that is wrong.
        """
        from medtune.training.config import resolve_training_settings

        model = self.model(model_name)
        i = self.models.index(model)
        where = f"models[{i}].training" if model.training.stage_values() else "training"
        cell = {"method": method, "seed": seed, "model": base_spec or model.spec}
        shared = self.training.stage_values()
        shared.pop("epochs", None)  # the grid's epochs are planned into each order file; training takes them all
        swept = training_layer({k: v for k, v in (setting or {}).items() if k != "epochs"})  # epochs: the order's
        return resolve_training_settings(shared, model.training.stage_values(), cell, swept, where=where)

    @property
    def run_dir(self) -> Path:
        return self.resolve(self.output_dir)  # type: ignore[return-value]

    @property
    def store_path(self) -> Path:
        return self.resolve(self.store_dir) if self.store_dir else self.run_dir / "store"  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------------
# Loading with located errors (the locations: medtune.experiments.yaml_errors)


def value_problems(cfg: ExperimentSettings) -> list[tuple[tuple[Any, ...], str]]:
    """Values the config's schema admits but a stage refuses, as (place in the config, ``key.path: message``).

    The grid's sections hold the stages' fields unconstrained (a stage default must exist only once), and
    strategies and methods live in registries, so these are checked against the stages here, where the YAML
    is still at hand: a wrong value must fail at its file and line like a typo in a key does.
    """
    from medtune.errors import MedtuneError

    problems: list[tuple[tuple[Any, ...], str]] = []
    for i, s in enumerate(cfg.strategies):
        if s.is_adaptive:
            continue  # validated with the config (medtune.adaptive's registry)
        from medtune.orders.strategies import get_strategy

        try:
            strategy = get_strategy(s.name)
        except MedtuneError as exc:
            problems.append((("strategies", i, "name"), f"strategies[{i}]: {exc}"))
            continue
        try:
            strategy.resolve_options(s.options)
        except MedtuneError as exc:  # the line of the option it names, else of `options`
            named = [k for k in s.options if re.search(rf"(?<![\w-]){re.escape(str(k))}(?![\w-])", str(exc))]
            problems.append((("strategies", i, "options", *named[:1]), f"strategies[{i}]: {exc}"))
    if cfg.baseline_strategy not in {s.id for s in cfg.strategies}:
        problems.append((("baseline_strategy",), f"baseline_strategy: '{cfg.baseline_strategy}' is not among the "
                         f"strategies ({', '.join(s.id for s in cfg.strategies)})"))
    from medtune.training.methods import get_method

    good_methods = []
    for j, method in enumerate(cfg.training.methods):
        try:
            get_method(method)
            good_methods.append(method)
        except MedtuneError as exc:
            problems.append((("training", "methods", j), f"training.methods[{j}]: {exc}"))
    seen: set[str] = set()
    for model in cfg.models:  # every model × method resolves to valid training settings
        for method in good_methods:
            try:
                cfg.training_settings(model.name, method, cfg.run_seeds[0][0])
            except ConfigError as exc:
                for part in str(exc).split("; "):
                    m = KEY_PATH.match(part)
                    loc = path_to_loc(m[1]) if m else ("training",)
                    if (m and loc[:1] == ("models",) and len(loc) > 3 and loc[3] not in model.training.stage_values()
                            and loc[3] in cfg.training.stage_values()):
                        # the model has training settings of its own, but not this one: the grid's is wrong
                        loc, part = ("training", *loc[3:]), "training" + part[len(f"models[{loc[1]}].training"):]
                    if part not in seen:
                        seen.add(part)
                        problems.append((loc, part))
    for model in cfg.models:  # every swept setting resolves too, reported at its sweep
        for method in good_methods:
            own = method in cfg.training.sweep_by_method
            loc = ("training", "sweep_by_method", method) if own else ("training", "sweep")
            for setting in cfg.settings_of(method) if cfg.has_sweep else []:
                try:
                    cfg.training_settings(model.name, method, cfg.run_seeds[0][0], setting=setting)
                except ConfigError as exc:
                    part = f"{loc_to_path(loc)}: setting {setting_label(setting)}: {exc}"
                    if part not in seen:
                        seen.add(part)
                        problems.append((loc, part))
                    break
    from medtune.difficulty_stage import DifficultySettings
    from medtune.evaluation_stage import EvalSettings
    from medtune.settings import validate_settings

    sections: list[tuple[str, type[BaseModel], dict[str, Any]]] = [
        ("evaluation", EvalSettings, cfg.evaluation.stage_values())]
    sections += [("difficulty", DifficultySettings, {**cfg.difficulty.stage_values(), "source": source})
                 for source in cfg.difficulty.sources]
    for where, schema, values in sections:
        try:
            validate_settings(schema, values, where)
        except ConfigError as exc:
            for part in str(exc).split("; "):
                m = KEY_PATH.match(part)
                loc = path_to_loc(m[1]) if m else (where,)
                loc = ("difficulty", "sources") if loc == ("difficulty", "source") else loc
                if part not in seen:
                    seen.add(part)
                    problems.append((loc, part))
    return problems


def config_from_dict(data: Any, *, source: str = "<config>", node: yaml.Node | None = None) -> ExperimentSettings:
    """Validate a config mapping; errors name the key path (and YAML line when ``node`` is given)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a config must be a mapping of keys, got {type(data).__name__}")
    plugins = data.get("plugins") or []
    if isinstance(plugins, list) and all(isinstance(p, str) for p in plugins):
        from medtune.plugins import load_plugins

        try:  # before validation: a plugin's method or strategy names must be known to it
            load_plugins(plugins)
        except ConfigError as exc:
            line = yaml_line(node, ("plugins",)) if node is not None else None
            raise ConfigError(f"{source}:{line}: plugins: {exc}" if line else f"{source}: plugins: {exc}") from None
    try:
        cfg = ExperimentSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("; ".join(validation_lines(exc, data, source, node))) from None
    problems = value_problems(cfg)
    if problems:
        raise ConfigError("; ".join(problem_lines(problems, source, node)))
    return cfg


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentSettings:
    """Read and validate a YAML experiment config.

    Relative paths in it are taken from the current directory (as with any command-line tool) and fixed at
    load time, so worker processes on other machines see the same absolute paths; ``$VARS`` are expanded
    (e.g. ``$MEDTUNE_SHARED_DATA/lek``).
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    if isinstance(data, dict):
        data = {**data, **(overrides or {})}
        if "base_dir" in data:
            raise ConfigError(f"{path}: base_dir: unknown key (it is set by the loader)")
        data["base_dir"] = os.getcwd()
    return config_from_dict(data, source=str(path), node=node)


def dump_config(config: ExperimentSettings) -> str:
    """The resolved config as YAML (written into the run directory beside the results)."""
    data = config.model_dump(mode="json", exclude={"base_dir"})
    return yaml.safe_dump(data, sort_keys=False)


# Names of the previous release, kept with a DeprecationWarning for one more.
__getattr__ = renamed_names(__name__, {'ExperimentConfig': 'ExperimentSettings'}, globals())

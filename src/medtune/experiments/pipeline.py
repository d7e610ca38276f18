"""The stages wired for one grid cell: data → base model → difficulty → categories → order → train → evaluate.

Each stage is the stage package's own function (``run_data``, ``run_base_model``, ``run_difficulty``,
``run_categories``, ``run_order``, ``run_training_stage``, ``run_evaluation``) — the same one its CLI command calls.
This module adds only what a grid needs around them: the settings of a cell (built from the config's sections),
a content-addressed key per artifact in the run store (see :mod:`medtune.experiments.store`: the stage's
settings, the keys of its inputs and the code version), and the reuse of artifacts that many cells share.
Shared stages (data, base model, difficulty, categories, orders) are computed once per grid; a shared stage
that fails is recorded once and every cell that needs it fails at once with its error; a cell killed after
training resumes at evaluation.

:func:`execute_cell` is the picklable function every executor runs; it never raises for a failing cell:
the error is recorded in the cell's result file and the grid goes on.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtune.difficulty_sources import get_difficulty_source
from medtune.experiments.config import (
    ExperimentSettings,
    GridDataSetSettings,
    GridModelSettings,
    GridStrategySettings,
    config_from_dict,
)
from medtune.experiments.grid import NO_DIFFICULTY, Cell
from medtune.experiments.store import Artifact, ResultStore, Store
from medtune.experiments.sweep import setting_label
from medtune.hardware import torch_threads
from medtune.io import sha256_file, stable_hash

ITEMS = "items.parquet"
VALIDATION_KEY = "(validation)"  # a sweep's validation items among the sets a cell is scored on
TRAIN_RUN = "run"  # the training run folder inside the train stage's folder


@dataclass
class Context:
    """What the stages of one process share: the config, the store, and a log of stage timings."""

    cfg: ExperimentSettings
    store: Store
    progress: bool = False
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    def note(self, name: str, art: Artifact) -> Artifact:
        self.stages[name] = {"key": art.key, "cached": art.cached, "path": str(art.path)}
        return art


def _fingerprint(path: Path | None) -> Any:
    """What identifies an input file or folder: a content hash for files, size+mtime per file for folders."""
    if path is None:
        return None
    if path.is_file():
        return sha256_file(path)[:16]
    if path.is_dir():
        entries = sorted(
            (str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file()
        )
        return stable_hash(entries)
    return "missing"


# ----------------------------------------------------------------------------------------------------------
# Stages


def data_stage(ctx: Context, ds: GridDataSetSettings) -> Artifact:
    """``items.parquet`` (+ textbook) of one data set: :func:`medtune.data.run_data`."""
    from medtune.data import run_data

    path = ctx.cfg.resolve(ds.path)
    settings = ds.model_copy(update={"path": str(path) if path else None})
    conf = {**settings.to_dict(), "input": _fingerprint(path)}
    if ds.mix is not None:  # a mixture reads its parts' items files: their paths resolved, their content keyed
        parts = [p.model_copy(update={"items": str(ctx.cfg.resolve(p.items))}) for p in ds.mix]
        settings = settings.model_copy(update={"mix": parts})
        conf = {**settings.to_dict(), "input": [_fingerprint(Path(p.items)) for p in parts]}

    def compute(out: Path) -> dict[str, Any]:
        return run_data(settings, out)

    art = ctx.store.get_or_compute("data", conf, None, compute, record_failure=True)
    fold = f":fold{ds.fold}-{ds.fold_part}" if ds.fold is not None else ""
    return ctx.note(f"data:{ds.label}{fold}", art)


def validation_stage(ctx: Context, ds: GridDataSetSettings, data: Artifact) -> tuple[Artifact, Artifact]:
    """A sweep's (training items, validation items) of one training set (see :mod:`medtune.experiments.validation`).

    The data set's own validation split when it is one split of a source that has one: the training items stay
    ``data``. Otherwise a seeded share of ``data``'s items is held out: the cells train on the rest (written with
    the textbook and fact sheet beside them, as the data stage writes them).
    """
    from medtune.data.stage import LoadedData, load_data, write_data
    from medtune.errors import InputError
    from medtune.experiments.validation import VALIDATION_SPLITS, hold_out
    from medtune.factsheet import read_factsheet
    from medtune.schema import read_items
    from medtune.textbook import read_textbook

    val = ctx.cfg.validation
    path = ctx.cfg.resolve(ds.path)
    source = ds.model_copy(update={"path": str(path) if path else None})
    conf = {"validation": val.to_dict(), "dataset": source.to_dict(), "input": _fingerprint(path)}

    def own_split() -> tuple[str, LoadedData] | None:
        if ds.split is None:  # the training set is all of its source: a dev split is among its items
            return None
        tested = {t.split for t in ctx.cfg.test_sets if t.source == ds.source}  # never a test set's split
        names = [val.split] if val.split else [n for n in VALIDATION_SPLITS if n != ds.split and n not in tested]
        for name in names:
            only = source.model_copy(update={"split": name, "portion": None, "folds": None, "fold": None,
                                             "limit": None, "name": f"{ds.label}-{name}"})
            try:
                return name, load_data(only)
            except InputError:
                if val.split:  # asked for by name: its absence is the user's to fix
                    raise
        return None

    def compute(out: Path) -> dict[str, Any]:
        found = own_split()
        if found is not None:
            name, loaded = found
            held = loaded.items[:val.limit] if val.limit else loaded.items
            write_data(LoadedData(held), out / "validation" / ITEMS)
            return {"from": f"split {name}", "n_validation": len(held), "own_split": True}
        items_path = data.path / ITEMS
        train, held = hold_out(read_items(items_path), val.share, val.seed)
        if not train or not held:
            raise InputError(f"data set '{ds.label}': holding out {val.share:g} of {len(train) + len(held)} "
                             f"items for validation leaves {'no validation' if not held else 'no training'} "
                             "item; change validation.share", file=items_path)
        write_data(LoadedData(train, textbook=read_textbook(items_path), facts=read_factsheet(items_path)),
                   out / "train" / ITEMS)
        held = held[:val.limit] if val.limit else held  # the rest of the share is neither trained nor scored
        write_data(LoadedData(held), out / "validation" / ITEMS)
        return {"from": f"held out {val.share:g} (seed {val.seed})", "n_train": len(train),
                "n_validation": len(held), "own_split": False}

    art = ctx.store.get_or_compute("validation", conf, {"data": data.key}, compute, record_failure=True)
    ctx.note(f"validation:{ds.label}", art)
    part = {name: Artifact("data", stable_hash([art.key, name]), art.path / name, art.cached)
            for name in ("train", "validation")}
    return (data if art.manifest.get("own_split") else part["train"]), part["validation"]


def base_model_stage(ctx: Context, model: GridModelSettings, data: Artifact) -> tuple[str, Artifact | None]:
    """The model spec fine-tuning starts from: the spec itself, or a stored folder for built models.

    ``tiny`` (and any pretrained model) is built once by :func:`medtune.training.base_model.run_base_model` and
    stored, so the base evaluation and every fine-tune of the grid start from the very same weights.
    """
    if not model.is_built:
        return model.spec, None
    from medtune.training.base_model import BaseModelSettings, run_base_model

    settings = BaseModelSettings.model_validate(model.model_dump(include=set(BaseModelSettings.model_fields)))

    def compute(out: Path) -> dict[str, Any]:
        return run_base_model(settings, data.path / ITEMS, out)

    art = ctx.store.get_or_compute("base_model", {"model": settings.to_dict()}, {"data": data.key}, compute,
                                   record_failure=True)
    ctx.note(f"base:{model.name}", art)
    return str(art.path / "model"), art


def difficulty_settings(cfg: ExperimentSettings, source: str) -> Any:
    """The difficulty stage's settings for one source of the grid's difficulty axis (paths resolved)."""
    from medtune.difficulty_stage import DifficultySettings

    values = cfg.difficulty.stage_values()
    for key in ("file", "human_file"):
        if values.get(key):
            values[key] = str(cfg.resolve(values[key]))
    return DifficultySettings.model_validate({**values, "source": source})


def _input_fingerprint(settings: Any, keys: tuple[str, ...]) -> Any:
    """What identifies the files a source reads (its ``input_files`` settings) in its artifact's key: one file's
    fingerprint as it is (None when not given), several files' by setting."""
    prints = {key: _fingerprint(Path(getattr(settings, key))) if getattr(settings, key) else None for key in keys}
    return prints[keys[0]] if len(keys) == 1 else prints


def difficulty_stage(ctx: Context, source: str, data: Artifact, model_specs: dict[str, str]) -> Artifact | None:
    """``difficulty.parquet`` for ``source``: ``run_difficulty``.

    None for ``human`` read as the items carry it (levels or values, higher = harder, fixed thresholds): the
    order stage reads the items themselves. Human difficulty from a table, with ``higher_is: easier`` or cut
    by quantiles is a stage of its own.
    """
    if source == NO_DIFFICULTY:
        return None
    from medtune.difficulty_stage import crossfit_base, run_difficulty

    settings = difficulty_settings(ctx.cfg, source)
    spec = get_difficulty_source(source)
    if not spec.needs_stage(settings):
        return None
    conf: dict[str, Any] = settings.artifact_settings()
    training = None
    if spec.input_files:  # human, file: the content of the file it reads (none given: None)
        conf["input"] = _input_fingerprint(settings, spec.input_files)
    else:  # llm and irt share one artifact: the ensemble's scores give both columns
        conf["ensemble_specs"] = [model_specs.get(s, s) for s in settings.ensemble]
        if settings.crossfit is not None:
            training = {**ctx.cfg.training.stage_values(), "epochs": ctx.cfg.training.epochs}
            conf["crossfit_base"] = crossfit_base(settings, model_specs)
            conf["training"] = training

    def compute(out: Path) -> dict[str, Any]:
        return run_difficulty(settings, data.path / ITEMS, out, models=model_specs, training=training,
                              progress=ctx.progress)

    art = ctx.store.get_or_compute("difficulty", conf, {"data": data.key}, compute, record_failure=True)
    return ctx.note(f"difficulty:{conf['source']}", art)


def categories_stage(ctx: Context, data: Artifact) -> Artifact | None:
    """``categories.parquet`` from clustering (None when the items' given categories are used): ``run_categories``."""
    settings = ctx.cfg.categories
    if settings.method == "given":
        return None
    from medtune.categories.stage import run_categories

    def compute(out: Path) -> dict[str, Any]:
        return run_categories(settings, data.path / ITEMS, out, progress=ctx.progress)

    art = ctx.store.get_or_compute("categories", settings.to_dict(), {"data": data.key}, compute,
                                   record_failure=True)
    return ctx.note("categories", art)


def order_settings(cfg: ExperimentSettings, strategy: GridStrategySettings, seed: int, source: str,
                   epochs: int | None = None) -> Any:
    """The order stage's settings of one cell: a grid's training set is all of its data set (``split: all``).

    ``epochs``: a swept number of epochs (default: the grid's ``training.epochs``)."""
    from medtune.orders.stage import OrderSettings

    spec = get_difficulty_source(source) if source != NO_DIFFICULTY else None
    if spec is not None and not spec.from_file and spec.staged_as is not None \
            and spec.needs_stage(difficulty_settings(cfg, source)):
        source = spec.staged_as  # e.g. a human difficulty stage wrote the file the order reads
    values: dict[str, Any] = {"strategy": strategy.name, "options": strategy.options,
                              "seed": seed + strategy.order_seed_offset,
                              "epochs": epochs or cfg.training.epochs, "epoch_policy": cfg.training.epoch_policy,
                              "difficulty_source": source, "split": "all"}
    if cfg.difficulty.thresholds:
        values["thresholds"] = cfg.difficulty.thresholds
    return OrderSettings.model_validate(values)


def order_stage(ctx: Context, strategy: GridStrategySettings, seed: int, source: str, data: Artifact,
                diff: Artifact | None, cats: Artifact | None, epochs: int | None = None) -> Artifact:
    """``order.json`` (+ ``order_items.json``) for one strategy, seed and difficulty source: ``run_order``.

    An adaptive arm's order is random shuffle's of the same seed (its candidate pool and step count): the same
    stored artifact the random arm trains on.
    """
    from medtune.orders.stage import run_order

    if strategy.is_adaptive:
        strategy = GridStrategySettings(name="random", order_seed_offset=strategy.order_seed_offset)
        source, diff = NO_DIFFICULTY, None
    settings = order_settings(ctx.cfg, strategy, seed, source, epochs)
    inputs = {"data": data.key}
    if diff is not None:
        inputs["difficulty"] = diff.key
    if cats is not None:
        inputs["categories"] = cats.key

    def compute(out: Path) -> dict[str, Any]:
        summary = run_order(settings, data.path / ITEMS, out,
                            difficulty_path=diff.path / "difficulty.parquet" if diff is not None else None,
                            categories_path=cats.path / "categories.parquet" if cats is not None else None)
        return {"n_positions": summary["n_positions"]}

    return ctx.note("order", ctx.store.get_or_compute("order", settings.to_dict(), inputs, compute,
                                                      record_failure=True))


def train_stage(ctx: Context, cell: Cell, base_spec: str, base: Artifact | None, data: Artifact,
                order: Artifact, diff: Artifact | None = None) -> Artifact:
    """Fine-tune ``base_spec`` on the training items in ``order`` into a run folder: ``run_training_stage``.

    An adaptive arm passes its adaptive settings, the order being its candidate pool (see
    :mod:`medtune.experiments.adaptive` for the difficulty and anchors it derives).
    """
    from medtune.adaptive.stage import run_training_stage
    from medtune.training.stage import ALL_SPLITS

    settings = ctx.cfg.training_settings(cell.model, cell.method, cell.seed, base_spec,
                                         ctx.cfg.setting(cell.method, cell.setting))
    # A stored base is identified by its key (an input), not by the store's absolute path. The methods' settings
    # groups count in their flat form, so training runs stored before they were nested keep their keys.
    from medtune.training.method_settings import flatten_builtin_groups

    conf = {**flatten_builtin_groups(settings.to_dict()), "model": None if base is not None else settings.model}
    if not settings.validation.enabled:  # runs stored before validation existed keep their keys
        conf.pop("validation", None)
    inputs = {"data": data.key, "order": order.key, **({"base": base.key} if base else {})}
    strategy = _strategy(ctx.cfg, cell.strategy)
    if strategy.is_adaptive:
        assert strategy.adaptive is not None
        conf["adaptive"] = {"strategy": strategy.name, "difficulty_source": cell.difficulty,
                            **strategy.adaptive.model_dump(mode="json")}
        if diff is not None:
            inputs["difficulty"] = diff.key

    def compute(out: Path) -> dict[str, Any]:
        adaptive = None
        if strategy.adaptive is not None:
            from medtune.experiments.adaptive import cell_adaptive_settings

            table = diff.path / "difficulty.parquet" if diff is not None else None
            adaptive = cell_adaptive_settings(strategy.name, strategy.adaptive, cell.difficulty, data.path / ITEMS,
                                              table, out)
        return run_training_stage(settings, data.path / ITEMS, order.path / "order.json", out / TRAIN_RUN,
                                  adaptive=adaptive, paths_from=out / TRAIN_RUN, split=ALL_SPLITS,
                                  progress=ctx.progress)

    return ctx.note("train", ctx.store.get_or_compute("train", conf, inputs, compute))


def eval_settings(cfg: ExperimentSettings) -> Any:
    from medtune.evaluation_stage import EvalSettings

    return EvalSettings.model_validate(cfg.evaluation.stage_values())


def eval_stages(ctx: Context, ref: Any, model_key: str, tests: dict[str, Artifact]) -> dict[str, Any]:
    """Score the model on every test set (``predictions.parquet`` + ``metrics.json`` per set): ``run_evaluation``.

    The model is loaded once, and only if some test set's artifact is missing.
    """
    from medtune.evaluation_stage import describe_precision, load_model, resolve_template, run_evaluation

    settings = eval_settings(ctx.cfg)
    out: dict[str, Any] = {}
    loaded: list[Any] = []

    def get_model() -> Any:
        if not loaded:
            loaded.append(load_model(ref, settings))
        return loaded[0]

    for name, test in tests.items():
        mode = settings.mode if settings.mode != "auto" else None
        econf = {**settings.to_dict(), "template": resolve_template(settings, ref, mode or "letter"),
                 "precision": describe_precision(settings, ref)}

        def compute(out_dir: Path, test: Artifact = test) -> dict[str, Any]:
            return run_evaluation(settings, test.path / ITEMS, ref, out_dir, loaded=get_model(),
                                  progress=ctx.progress)

        art = ctx.store.get_or_compute("eval", econf, {"model": model_key, "data": test.key}, compute)
        ctx.note(f"eval:{name}", art)
        out[name] = {**summarize_metrics(json.loads((art.path / "metrics.json").read_text())),
                     "predictions": str(art.path / "predictions.parquet"),
                     "metrics": str(art.path / "metrics.json"),
                     "items": str(test.path / ITEMS),
                     "seconds": art.manifest.get("seconds"),
                     "cached": art.cached}
    return out


def summarize_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a metrics.json: accuracy (MCQ) or token F1 (free text) with its CI."""
    if metrics.get("kind") == "qa":
        qa = metrics.get("qa") or {}
        ci = qa.get("f1_ci") or {}
        return {"metric": "token_f1", "accuracy": qa.get("f1"), "ci_low": ci.get("ci_low"),
                "ci_high": ci.get("ci_high"), "n_items": qa.get("n"), "n_correct": None,
                "precision": qa.get("precision"), "recall": qa.get("recall"), "rougeL": qa.get("rougeL")}
    acc = metrics.get("accuracy") or {}
    n = acc.get("n")
    return {"metric": "accuracy", "accuracy": acc.get("accuracy"), "ci_low": acc.get("ci_low"),
            "ci_high": acc.get("ci_high"), "n_items": n,
            "n_correct": round(acc["accuracy"] * n) if n is not None and acc.get("accuracy") is not None else None}


def _strategy(cfg: ExperimentSettings, name: str) -> GridStrategySettings:
    return next(s for s in cfg.strategies if s.id == name)


# ----------------------------------------------------------------------------------------------------------
# Precision, as the dry run shows it


def cell_precision(cfg: ExperimentSettings, cell: Cell) -> dict[str, Any]:
    """The dtype and quantization a cell trains in and is evaluated in, resolved for this machine."""
    from medtune.evaluation_stage import ModelRef, describe_precision
    from medtune.training.methods import get_method

    settings = eval_settings(cfg)
    model = cfg.model(cell.model)
    if cell.is_base:
        ev = describe_precision(settings, ModelRef(spec=model.spec))
        return {"train_dtype": None, "train_quantization": None, "eval_dtype": ev["dtype"],
                "eval_quantization": ev["quantization"]}
    train = cfg.training_settings(cell.model, cell.method, cell.seed, setting=cfg.setting(cell.method, cell.setting))
    spec = get_method(train.method)
    trained_in = train.resolved_dtype()
    ref = ModelRef(spec=model.spec, adapter=Path("adapter") if spec.is_adapter else None,
                   model_dir=None if spec.is_adapter else Path("model"), method=train.method, train_dtype=trained_in,
                   base_quantization=spec.base_quantization, train_template=train.template)
    ev = describe_precision(settings, ref)
    return {"train_dtype": trained_in, "train_quantization": spec.base_quantization, "eval_dtype": ev["dtype"],
            "eval_quantization": ev["quantization"]}


# ----------------------------------------------------------------------------------------------------------
# One cell, and the shared stages


def _setup(payload: dict[str, Any]) -> Context:
    cfg = config_from_dict(payload["config"], source="grid config")  # loads the config's plugins first
    return Context(cfg, Store(cfg.store_path), progress=bool(payload.get("progress")))


def _model_specs(ctx: Context, data: Artifact) -> dict[str, str]:
    """Names from ``models`` usable in the difficulty ensemble, mapped to their base model specs (grid order)."""
    d = ctx.cfg.difficulty
    wanted = set(d.ensemble or [])
    if d.crossfit is not None:
        wanted.add(d.crossfit.model or ctx.cfg.models[0].name)
    return {m.name: base_model_stage(ctx, m, data)[0] for m in ctx.cfg.models if m.name in wanted}


@dataclass
class CellInputs:
    """The artifacts a cell's training and evaluation start from (``diff``, ``cats`` and ``order`` stay None for
    a base cell, which trains nothing)."""

    data: Artifact
    tests: dict[str, Artifact]
    base_spec: str
    base: Artifact | None
    diff: Artifact | None = None
    cats: Artifact | None = None
    order: Artifact | None = None
    validation: Artifact | None = None  # a sweep's validation items (None without a sweep)


def cell_inputs(ctx: Context, cell: Cell) -> CellInputs:
    """The stages of one cell before training, in their one order: data (training and test sets) → base model →
    difficulty → categories → order. A cell runs them (:func:`run_cell`) and so does the shared phase for every
    cell first (:func:`prepare_shared`), so the order is written here only; the store computes each artifact once."""
    cfg = ctx.cfg
    data = data_stage(ctx, cfg.training_set(cell.dataset, cell.fold))
    tests = {t.label: data_stage(ctx, t) for t in cfg.test_sets_for(cell.dataset, cell.fold, base=cell.is_base)}
    # One base per model and training set, built from the whole set: every fold starts from the same weights.
    whole = data if cell.fold is None else data_stage(ctx, cfg.dataset(cell.dataset))
    base_spec, base = base_model_stage(ctx, cfg.model(cell.model), whole)
    if cell.is_base:
        return CellInputs(data, tests, base_spec, base)
    validation = None
    if cfg.has_sweep:  # every stage below reads the training items without the validation items
        data, validation = validation_stage(ctx, cfg.training_set(cell.dataset, cell.fold), data)
    diff = None
    if cell.difficulty != NO_DIFFICULTY:
        diff = difficulty_stage(ctx, cell.difficulty, data, _model_specs(ctx, whole))
    cats = categories_stage(ctx, data)
    epochs = cfg.setting(cell.method, cell.setting).get("epochs")
    order = order_stage(ctx, _strategy(cfg, cell.strategy), cell.order_seed_value, cell.difficulty, data, diff, cats,
                        epochs)
    return CellInputs(data, tests, base_spec, base, diff, cats, order, validation)


def run_cell(ctx: Context, cell: Cell) -> dict[str, Any]:
    """All stages of one cell; returns the parts of its result record (raises on failure)."""
    from medtune.evaluation_stage import ModelRef

    got = cell_inputs(ctx, cell)
    if cell.is_base:
        return {"tests": eval_stages(ctx, ModelRef(spec=got.base_spec),
                                     got.base.key if got.base else stable_hash(got.base_spec), got.tests)}
    order = got.order
    assert order is not None
    trained = train_stage(ctx, cell, got.base_spec, got.base, got.data, order, got.diff)
    man = trained.manifest
    # The validation items are scored like a test set (the model loaded once for both), read only to choose the
    # setting; a name no test set can have keeps them apart.
    val = {VALIDATION_KEY: got.validation} if got.validation is not None else {}
    tests_out = eval_stages(ctx, ModelRef.from_run(trained.path / TRAIN_RUN), trained.key, {**got.tests, **val})
    swept: dict[str, Any] = {}
    if val:
        setting = ctx.cfg.setting(cell.method, cell.setting)
        labels = [setting_label(s) for s in ctx.cfg.settings_of(cell.method)]
        swept = {"setting_values": setting, "setting_index": labels.index(cell.setting),
                 "setting_shared": setting == ctx.cfg.shared_of(cell.method),
                 "validation": tests_out.pop(VALIDATION_KEY)}
    return {
        **swept,
        "order": str(order.path / "order.json"),
        "order_items": str(order.path / "order_items.json"),
        "train": {"dir": str(trained.path / TRAIN_RUN), "steps": man.get("steps"), "final_loss": man.get("final_loss"),
                  "seconds": man.get("train_seconds", man.get("seconds")), "cached": trained.cached,
                  **({"adaptive": man["adaptive"]} if man.get("adaptive") else {})},
        "tests": tests_out,
    }


def execute_cell(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one cell and write its result file; a failure is recorded (with its error), never raised."""
    t0 = time.time()
    cell = Cell(**{k: v for k, v in payload["cell"].items() if k != "cell_id"})
    record: dict[str, Any] = {**cell.as_dict(), "key": payload["key"], "test_sets": payload.get("test_sets", []),
                              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "host": socket.gethostname(), "pid": os.getpid()}
    ctx = None
    try:
        ctx = _setup(payload)
        record["test_sets"] = [t.label for t in ctx.cfg.test_sets_for(cell.dataset, cell.fold, base=cell.is_base)]
        with torch_threads(ctx.cfg.executor.torch_threads):
            record.update(run_cell(ctx, cell))
        record["status"] = "done"
        record["error"] = None
    except Exception as exc:  # a failed cell is a result, not a crash of the grid
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()
    record["stages"] = ctx.stages if ctx else {}
    record["seconds"] = round(time.time() - t0, 3)
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    cfg_run_dir = ctx.cfg.run_dir if ctx else Path(ExperimentSettings.model_validate(payload["config"]).run_dir)
    ResultStore(cfg_run_dir).write(record)
    return record


def prepare_shared(payload: dict[str, Any]) -> dict[str, Any]:
    """Compute the stages many cells share, once, before the cells run in parallel.

    A failing shared stage is recorded in the store (once); the cells that need it fail at once with its error.
    """
    ctx = _setup(payload)
    with torch_threads(ctx.cfg.executor.torch_threads):
        return _prepare_shared(ctx, payload)


def _prepare_shared(ctx: Context, payload: dict[str, Any]) -> dict[str, Any]:
    """Each cell's stages before training (:func:`cell_inputs`), cell after cell: what cells share is computed by
    the first and reused by the others; a cell's first failing stage is recorded and ends its part here."""
    errors: list[str] = []
    for c in payload["cells"]:
        cell = Cell(**{k: v for k, v in c.items() if k != "cell_id"})
        try:
            cell_inputs(ctx, cell)
        except Exception as exc:
            errors.append(f"{cell.id}: {type(exc).__name__}: {exc}")
    return {"errors": errors}

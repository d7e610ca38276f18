"""Whether every cell of a grid can run: checked before any cell runs, and by ``medtune run --dry-run``.

A config can be valid and still hold cells that fail hours later: a test set's file that is not there, a
curriculum by human difficulty on a data set whose items carry none, a difficulty table that does not cover
the training items of a fold. Each check here looks at the inputs the cells will read and returns one
message per problem, naming the cells it stops and what is missing; :func:`cell_problems` runs them all and
:func:`check_cells` refuses the grid when any reports something.

A check is a function ``(GridView) -> list[str]`` registered by name in :data:`CHECKS` (a
:class:`medtune.registry.Registry`; add one with :func:`register_check`).
:class:`GridView` gives it the config, the expanded cells, and the items of a data set as the data stage
would load them (loaded once per data set and shared by every check), so a check reads real inputs through
the same code the cells run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medtune.difficulty_sources import SOURCES, get_difficulty_source
from medtune.errors import ConfigError, MedtuneError
from medtune.experiments.config import ExperimentSettings
from medtune.experiments.grid import Cell, expand
from medtune.registry import Registry

if TYPE_CHECKING:
    from medtune.data.stage import DataSettings
    from medtune.difficulty_stage import DifficultySettings
    from medtune.schema import Item

SHOWN_CELLS = 6  # cell ids written out in a message; the rest are counted


@dataclass
class GridView:
    """What a check looks at: the config, its cells, and the items of each data set (loaded on demand, once)."""

    cfg: ExperimentSettings
    cells: list[Cell]
    _raw: dict[str, Any] = field(default_factory=dict)

    def input_path(self, path: str | None) -> Path | None:
        """A path of the config as the stages will open it."""
        return self.cfg.resolve(path)

    def items(self, ds: DataSettings) -> list[Item]:
        """The items the data stage keeps for ``ds`` (split, portion, fold, limit); raises MedtuneError.

        The loader runs once per file, source and options; each data set's selection is made from that.
        """
        from medtune.data.registry import load
        from medtune.data.stage import select_items
        from medtune.errors import InputError

        path = self.input_path(ds.path)
        key = json.dumps([ds.source, str(path), ds.options, ds.on_error], sort_keys=True, default=str)
        if ds.mix is not None:  # a mixture: what the data stage mixes, its parts' paths resolved as the stage does
            ds = ds.model_copy(update={"mix": [p.model_copy(update={"items": str(self.input_path(p.items))})
                                               for p in ds.mix]})
            key = json.dumps(ds.to_dict(), sort_keys=True, default=str)
        if key not in self._raw:
            try:
                if ds.mix is not None:
                    from medtune.data.mix import mix_files

                    self._raw[key] = mix_files(ds.mix_settings()).items
                else:
                    self._raw[key] = load(ds.source, path, on_error=ds.on_error, **ds.options).items
            except MedtuneError as exc:
                self._raw[key] = exc
        loaded = self._raw[key]
        if isinstance(loaded, MedtuneError):
            raise loaded
        items = select_items(list(loaded), ds.model_copy(update={"split": None}) if ds.mix is not None else ds)
        if not items:
            raise InputError(f"data set '{ds.label}' keeps no items (of {len(loaded)} loaded)", file=path)
        return items

    def training_sets(self, cells: Iterable[Cell]) -> dict[tuple[str, int | None], list[Cell]]:
        """The cells grouped by the training items they read: (data set, fold)."""
        groups: dict[tuple[str, int | None], list[Cell]] = {}
        for c in cells:
            groups.setdefault((c.dataset, c.fold), []).append(c)
        return groups

    def difficulty_settings(self, source: str) -> DifficultySettings:
        """The difficulty stage's settings for ``source`` with the config's paths resolved."""
        from medtune.difficulty_stage import DifficultySettings

        values = self.cfg.difficulty.stage_values()
        for key in ("file", "human_file"):
            if values.get(key):
                values[key] = str(self.input_path(values[key]))
        return DifficultySettings.model_validate({**values, "source": source})


Check = Callable[[GridView], list[str]]
CHECKS: Registry[Check] = Registry("grid check", hint="a plugin module named in MEDTUNE_PLUGINS can register more")


def register_check(check: Check, *, name: str | None = None, replace: bool = False) -> Check:
    """Add ``check`` to the checks every grid goes through, under ``name`` (default: the function's name), in
    registration order; a decorator. A taken name is refused unless ``replace=True``."""
    return CHECKS.register(name or getattr(check, "__name__", ""), check, replace=replace)


def cell_problems(cfg: ExperimentSettings, checks: Sequence[Check] | None = None) -> list[str]:
    """Every problem that stops a cell of ``cfg`` from running, one message each (empty: all can run)."""
    view = GridView(cfg, expand(cfg))
    problems: list[str] = []
    for check in CHECKS.values() if checks is None else checks:
        problems.extend(check(view))
    return problems


def check_cells(cfg: ExperimentSettings) -> None:
    """Raise :class:`ConfigError` listing every cell of ``cfg`` that cannot run."""
    problems = cell_problems(cfg)
    if problems:
        lines = "\n".join(f"- {p}" for p in problems)
        raise ConfigError(f"{len(problems)} problem(s) stop cells of the grid '{cfg.name}' from running:\n{lines}")


def describe_cells(cells: Sequence[Cell]) -> str:
    """``cell a, b`` or ``36 cells (a, b, ... and 30 more)``: which cells a problem stops."""
    ids = [c.id for c in cells]
    if len(ids) == 1:
        return f"cell {ids[0]}"
    shown = ", ".join(ids[:SHOWN_CELLS])
    more = f" and {len(ids) - SHOWN_CELLS} more" if len(ids) > SHOWN_CELLS else ""
    return f"{len(ids)} cells ({shown}{more})"


# ----------------------------------------------------------------------------------------------------------
# Input files


_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def _missing(path: Path | None, written: str | None) -> str | None:
    """Why the input at ``path`` (written ``written`` in the config) cannot be read, or None when it is there."""
    if path is None or path.exists():
        return None
    unset = [a or b for a, b in _VARIABLE.findall(str(path)) if (a or b) not in os.environ]
    why = f" (the environment variable {', '.join('$' + v for v in unset)} is not set)" if unset else ""
    shown = f"{written} → {path}" if written and written != str(path) else str(path)
    return f"not found: {shown}{why}"


def _tests_of(view: GridView, label: str) -> list[Cell]:
    return [c for c in view.cells
            if label in {t.label for t in view.cfg.test_sets_for(c.dataset, c.fold, base=c.is_base)}]


@register_check
def missing_inputs(view: GridView) -> list[str]:
    """Files the cells read that are not there: training and test sets, the difficulty tables."""
    from medtune.data.registry import get_loader

    problems: list[str] = []
    for ds in view.cfg.datasets:
        why = _missing(view.input_path(ds.path), ds.path) if get_loader(ds.source).needs_path else None
        cells = [c for c in view.cells if c.dataset == ds.label]
        if why and cells:
            problems.append(f"{describe_cells(cells)}: training set '{ds.label}' ({ds.source}) {why}")
    seen: set[str] = set()
    for t in view.cfg.test_sets:
        if t.label in seen or t.folds_of is not None:  # a folds_of test set reads its training set's file
            continue
        seen.add(t.label)
        why = _missing(view.input_path(t.path), t.path) if get_loader(t.source).needs_path else None
        cells = _tests_of(view, t.label)
        if why and cells:
            problems.append(f"{describe_cells(cells)}: test set '{t.label}' ({t.source}) {why}")
    difficulty = view.cfg.difficulty
    for source in dict.fromkeys(difficulty.sources):
        for key in get_difficulty_source(source).input_files:  # the files the source declares it reads
            written = getattr(difficulty, key, None)
            why = _missing(view.input_path(written), written) if written else None
            cells = [c for c in view.cells if c.difficulty == source]
            if why and cells:
                problems.append(f"{describe_cells(cells)}: difficulty source '{source}': `difficulty.{key}` {why}")
    return problems


@register_check
def mix_parts_present(view: GridView) -> list[str]:
    """The items files a mixing data set draws from (training or test set) are there."""
    problems: list[str] = []
    for what, sets in (("training set", view.cfg.datasets), ("test set", view.cfg.test_sets)):
        for ds in sets:
            cells = [c for c in view.cells if c.dataset == ds.label] if what == "training set" \
                else _tests_of(view, ds.label)
            for part in ds.mix or []:
                why = _missing(view.input_path(part.items), part.items)
                if why and cells:
                    problems.append(f"{describe_cells(cells)}: {what} '{ds.label}': mix part '{part.label}' {why}")
    return problems


# ----------------------------------------------------------------------------------------------------------
# Difficulty the cells order by


def _readable(view: GridView, ds: DataSettings, settings: DifficultySettings, key: str) -> bool:
    """Whether the inputs a difficulty check needs exist (a missing one is :func:`missing_inputs`'s to report)."""
    from medtune.data.registry import get_loader

    if get_loader(ds.source).needs_path and _missing(view.input_path(ds.path), ds.path):
        return False
    table = getattr(settings, key)
    return not (table and not Path(table).exists())


def _stage_items(view: GridView, ds: DataSettings, settings: DifficultySettings) -> list[Item]:
    """The items the difficulty stage sees for ``ds``: the training items, of ``settings.split`` when set."""
    from medtune.errors import InputError

    items = view.items(ds)
    if settings.split is not None:
        items = [it for it in items if it.split == settings.split]
        if not items:
            raise InputError(f"no items in split '{settings.split}' (difficulty.split)", field="split")
    return items


def _difficulty_problems(view: GridView, source: str, key: str,
                         join: Callable[[DifficultySettings, list[Item], Path | None], Any]) -> list[str]:
    """Run ``join`` (the stage's own reading of its input: settings, training items, their file) on each
    training set of the ``source`` cells."""
    cells = [c for c in view.cells if c.difficulty == source]
    if not cells:
        return []
    try:
        settings = view.difficulty_settings(source)
    except (MedtuneError, ValueError) as exc:
        return [f"{describe_cells(cells)}: difficulty source '{source}': {exc}"]
    problems: list[str] = []
    for (label, fold), group in view.training_sets(cells).items():
        ds = view.cfg.training_set(label, fold)
        if not _readable(view, ds, settings, key):
            continue
        part = f"training set '{label}'" + (f" (fold {fold} held out)" if fold is not None else "")
        try:
            join(settings, _stage_items(view, ds, settings), view.input_path(ds.path))
        except MedtuneError as exc:
            problems.append(f"{describe_cells(group)}: difficulty source '{source}' on {part}: {exc}")
    return problems


@register_check
def human_difficulty_available(view: GridView) -> list[str]:
    """Cells ordering by human difficulty need a value for every training item: the items' own or a table's."""
    from medtune.difficulty_stage import human_difficulty

    return _difficulty_problems(view, "human", "human_file",
                                lambda s, items, path: human_difficulty(s, items, items_file=path))


@register_check
def difficulty_table_joins(view: GridView) -> list[str]:
    """Cells of source ``file`` join the table to their training items as the stage will (keys, coverage)."""
    from medtune.difficulty import import_difficulty

    def join(s: DifficultySettings, items: list[Item], _path: Path | None) -> Any:
        assert s.file is not None
        return import_difficulty(Path(s.file), items, key_column=s.key_column, value_column=s.value_column,
                                 key=s.key, on_unmatched=s.on_unmatched, one_minus=s.one_minus,
                                 bucketing=s.bucketing())

    return _difficulty_problems(view, "file", "file", join)


# ----------------------------------------------------------------------------------------------------------
# Cross-validation folds


@register_check
def folds_not_empty(view: GridView) -> list[str]:
    """A training set cut into more folds than it has items leaves a fold with nothing to test (or train) on."""
    from medtune.data.registry import get_loader

    problems: list[str] = []
    for ds in view.cfg.datasets:
        cells = [c for c in view.cells if c.dataset == ds.label and c.fold is not None]
        if not ds.folds or not cells:
            continue
        if get_loader(ds.source).needs_path and _missing(view.input_path(ds.path), ds.path):
            continue  # missing_inputs reports it
        whole = ds.model_copy(update={"fold": None})
        try:
            n = len(view.items(whole))
        except MedtuneError:
            continue  # the data set's own error is reported by the cells' data stage and other checks
        if n < ds.folds:
            problems.append(f"{describe_cells(cells)}: training set '{ds.label}' has {n} item(s) for "
                            f"{ds.folds} folds, so a fold is empty: use at most {n} folds")
    return problems


# ----------------------------------------------------------------------------------------------------------
# Evaluation models


@register_check
def bertscore_model_available(view: GridView) -> list[str]:
    """Free-text test sets are scored with BERTScore: its model must be obtainable before any cell trains (a hub
    model that is neither in the cache nor downloadable, the hub being offline, would otherwise fail after hours of
    training). Scoring resolves the model the same way: a cached or local model is available; a hub model that is
    not cached is available while the hub is reachable (scoring downloads it; this check downloads nothing)."""
    from medtune.bertscore import resolve_bertscore_model
    from medtune.data.registry import get_loader
    from medtune.evaluation_stage import EvalSettings
    from medtune.schema import QAItem

    try:
        settings = EvalSettings.model_validate(view.cfg.evaluation.stage_values())
        resolve_bertscore_model(settings.bertscore, download=False)
        return []
    except MedtuneError as exc:
        why = str(exc)
    problems: list[str] = []
    for ts in view.cfg.test_sets:
        if ts.folds_of is None and get_loader(ts.source).needs_path and _missing(view.input_path(ts.path), ts.path):
            continue  # missing_inputs reports it
        try:
            free_text = any(isinstance(it, QAItem) for it in view.items(ts))
        except MedtuneError:
            continue
        cells = _tests_of(view, ts.label)
        if free_text and cells:
            problems.append(f"{describe_cells(cells)}: test set '{ts.label}' is free text and its BERTScore model "
                            f"is not available: {why}")
    return problems


# ----------------------------------------------------------------------------------------------------------
# GPU memory


@dataclass
class CellPlan:
    """The memory plan of one model × method of the grid and the cells that train it."""

    model: str
    method: str
    plan: Any  # medtune.training.memory.MemoryPlan
    cells: list[Cell]


def executor_gpus(cfg: ExperimentSettings) -> tuple[int, float]:
    """(processes a cell trains with, share of one GPU it gets): ``executor.num_gpus`` above 1 is a multi-GPU
    cell, below 1 a cell that shares its GPU with others (Ray's fractional GPUs)."""
    n = float(getattr(cfg.executor, "num_gpus", 0) or 0)
    return (int(n), 1.0) if n >= 1 else (1, n if n > 0 else 1.0)


def memory_plans(cfg: ExperimentSettings, cells: Sequence[Cell] | None = None) -> list[CellPlan]:
    """The plan of every model × method the grid trains, against the GPU memory its cells get: the cell's
    ``gpu_memory`` setting, else this machine's GPU; none (no plan) on a CPU machine without that setting, or
    for a model whose config cannot be read here (the cell's own loading reports that)."""
    from medtune.experiments.grid import BASE_METHOD
    from medtune.training.memory import gpu_memory_bytes, plan_memory
    from medtune.training.model_shape import model_shape

    groups: dict[tuple[str, str, str | None], list[Cell]] = {}
    for c in expand(cfg) if cells is None else cells:
        if not c.is_base and c.method != BASE_METHOD:  # a sweep's settings may differ in batch or length
            groups.setdefault((c.model, c.method, c.setting), []).append(c)
    world, share = executor_gpus(cfg)
    out: list[CellPlan] = []
    for (model, method, setting), group in groups.items():
        settings = cfg.training_settings(model, method, group[0].seed, setting=cfg.setting(method, setting))
        gpu = gpu_memory_bytes(settings)
        if gpu is None:
            continue
        spec = cfg.model(model)
        sizes = settings.model_copy(update={"tiny": spec.tiny, "tiny_vocab_size": spec.vocab_size})
        try:
            shape = model_shape(spec.spec, sizes)
        except (MedtuneError, OSError, ValueError, KeyError, TypeError):
            continue
        plan = plan_memory(settings, shape, world_size=world, gpu_bytes=int(gpu * share))
        out.append(CellPlan(model, method, plan, group))
    return out


@register_check
def fits_gpu_memory(view: GridView) -> list[str]:
    """Each model × method must fit the GPU memory its cells get (``training.gpu_memory`` or this machine's GPU,
    per GPU of ``executor.num_gpus``), unless its ``memory_check`` is off: a 13B model that cannot fit would
    otherwise fail only after the stages before it ran."""
    from medtune.training.memory import plan_problem

    problems = []
    for cp in memory_plans(view.cfg, view.cells):
        if cp.plan.fits is False and cp.plan.memory_check:
            problems.append(f"{describe_cells(cp.cells)}: {plan_problem(cp.plan, style='yaml')} "
                            "(memory_check: false runs them anyway)")
    return problems


# ----------------------------------------------------------------------------------------------------------
# Models and files named in settings

# First parts of a name that the Hugging Face Hub keeps for its own pages: ``models/x`` can only be a folder.
RESERVED_HUB_NAMESPACES = frozenset({"models", "datasets", "spaces", "docs", "api", "settings", "organizations"})
BUILT_IN_MODELS = ("tiny", "smollm2", "smollm2-135m-instruct", "SmolLM2-135M-Instruct")


def _model_missing(view: GridView, spec: str, *, hub: Callable[[str], object] | None = None) -> str | None:
    """Why model ``spec`` (a folder, a ``.gguf`` file or a hub name) cannot be read, or None when it can.

    A spec that exists as a folder or file is read as one. A spec that can only be a path (absolute, ``./``,
    ``~``, ``$VAR``, more than one ``/``, a ``.gguf`` file, a first part that is a local folder or that the hub
    keeps for its pages, like ``models/``) must exist. Anything else is a hub name, for ``hub`` to resolve as the
    stage will (offline it reads only the Hugging Face cache); without ``hub`` it is taken as available.
    """
    path = view.input_path(spec)
    assert path is not None
    if path.exists():
        return None
    written = spec.strip()
    first = written.split("/", 1)[0]
    looks_like_path = (written.startswith(("/", ".", "~", "$")) or "\\" in written or written.count("/") != 1
                       or written.endswith("/") or written.lower().endswith(".gguf")
                       or first in RESERVED_HUB_NAMESPACES or (view.input_path(first) or Path(first)).is_dir())
    if looks_like_path:
        return _missing(path, spec)
    if hub is not None:
        try:
            hub(written)
        except MedtuneError as exc:
            return str(exc)
    return None


@register_check
def model_inputs(view: GridView) -> list[str]:
    """Models the cells load from this machine: each base model given as a folder or ``.gguf`` file, the
    difficulty ensemble's models given so, and the categories stage's embedding model, so a grid does not fail
    at its first cell's loading, after the stages before it ran."""
    problems: list[str] = []
    for m in view.cfg.models:
        cells = [c for c in view.cells if c.model == m.name]
        if not cells or m.spec in BUILT_IN_MODELS:
            continue
        why = _model_missing(view, m.spec)
        if why:
            problems.append(f"{describe_cells(cells)}: model '{m.name}' (models[].spec) {why}")
    names = {m.name for m in view.cfg.models}  # a grid model's name in the ensemble is reported above
    scored = [c for c in view.cells if c.difficulty in SOURCES and get_difficulty_source(c.difficulty).scores_models]
    for spec in view.cfg.difficulty.ensemble or []:
        why = None if spec in names or spec in BUILT_IN_MODELS or not scored else _model_missing(view, spec)
        if why:
            problems.append(f"{describe_cells(scored)}: difficulty.ensemble model '{spec}' {why}")
    cats = view.cfg.categories
    spec = cats.embedding_model
    cells = [c for c in view.cells if not c.is_base]
    if cats.method == "cluster" and spec and cells:
        from medtune.embeddings import DEFAULT_MODEL, resolve_embedding_model
        from medtune.models import hub_offline

        if spec != DEFAULT_MODEL:
            why = _model_missing(view, spec, hub=resolve_embedding_model if hub_offline() else None)
            if why:
                problems.append(f"{describe_cells(cells)}: categories.embedding_model {why}")
    return problems


@register_check
def training_files(view: GridView) -> list[str]:
    """Files the training settings name (``eval_anchors`` and its ``eval_items``, ``validation.items``): read when
    training starts, after every stage before it ran."""
    from medtune.experiments.grid import BASE_METHOD

    groups: dict[tuple[str, str], list[Cell]] = {}
    for c in view.cells:
        if not c.is_base and c.method != BASE_METHOD:
            groups.setdefault((c.model, c.method), []).append(c)
    problems: list[str] = []
    for (model, method), cells in groups.items():
        try:
            settings = view.cfg.training_settings(model, method, cells[0].seed)
        except MedtuneError:
            continue  # the config's own check reports it
        named = {key: getattr(settings, key, None) for key in ("eval_anchors", "eval_items")}
        named["validation.items"] = settings.validation.items  # the validation items file, if one is named
        for key, written in named.items():
            why = _missing(view.input_path(written), written) if written else None
            if why:
                problems.append(f"{describe_cells(cells)}: training.{key} {why}")
    return problems

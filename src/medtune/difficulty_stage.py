"""The difficulty stage: one settings schema and one function from items to ``difficulty.parquet``.

:class:`DifficultySettings` holds every setting of the stage once; :func:`run_difficulty` computes the
artifact for a source (an ensemble of models, optionally with cross-fitted fine-tunes, an imported table, or
human difficulty) and is what both ``medtune difficulty`` and the experiment grid call, so the two cannot drift
apart.

``llm`` and ``irt`` produce the same artifact: the ensemble's scores give both the ``difficulty`` column and
the ``irt_b`` column, and the orders stage picks one. Each ensemble member's scores are kept beside the
artifact (``<stem>.scores/``, streamed while scoring) so an interrupted or widened run scores only what is
missing. The cross-fitted fine-tunes (folds, training settings, one repeat) are
:mod:`medtune.difficulty_crossfit`'s; this stage caches and combines their scores.

``human`` is the items' own ``human_difficulty``, optionally supplied by a table (``human_file``, joined like an
import) and read in either direction (``higher_is``): the paper's human difficulty is the share of examinees who
answered correctly, so higher means easier there. The artifact stores difficulty the way every other source
does (higher = harder), so the orders never need to know which direction the source had.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from medtune.bucketing import Bucketing
from medtune.difficulty import (
    DifficultyResult,
    difficulty_from_responses,
    difficulty_from_scores,
    import_difficulty,
    plot_histogram,
    write_difficulty,
)
from medtune.difficulty_crossfit import (  # the stage caches and combines what a repeat computes
    CROSSFIT_FOLD_SEED,
    CROSSFIT_FOLDS_FORMAT,
    CrossfitSettings,
    _crossfit_repeat,
    _training_dict,
    crossfit_folds_path,
)

# Re-exported: the stage's cross-fit names, importable from the stage as before the split.
from medtune.difficulty_crossfit import crossfit_train_config as crossfit_train_config
from medtune.difficulty_crossfit import fold_of as fold_of
from medtune.difficulty_sources import DifficultySource, SourceInputs, get_difficulty_source
from medtune.errors import ConfigError, InputError
from medtune.io import sha256_file, stable_hash
from medtune.schema import DIFFICULTY_LEVELS
from medtune.scoring.engine import BatchTokens
from medtune.scoring.vllm_backend import (
    VllmEnforceEager,
    VllmGpuMemoryUtilization,
    VllmMaxModelLen,
    VllmTensorParallelSize,
    vllm_options,
)
from medtune.settings import Settings, validate_settings

if TYPE_CHECKING:
    from medtune.schema import Item
    from medtune.training.config import TrainSettings

ARTIFACT = "difficulty.parquet"


class DifficultySettings(Settings):
    """Where difficulty comes from and how it becomes easy/medium/hard (see docs/ARTIFACTS.md)."""

    source: DifficultySource = Field(
        "human", description="human: the items' own; llm/irt: the ensemble's scores (one artifact gives both "
        "columns); file: an external table joined to the items; responses: the paper's response files; or a "
        "plugin's source (medtune.difficulty_sources).")
    ensemble: list[str] = Field(default_factory=list, description="Model specs to score (a grid model name "
                                "means that model's base).")
    crossfit: CrossfitSettings | None = Field(None, description="Add short cross-fitted fine-tunes to the "
                                              "ensemble.")
    mode: Literal["letter", "option"] = Field(
        "letter", description="letter: softmax over the option letters (the paper); option: over option-text "
        "log-likelihoods.")
    template: str | None = Field(None, description="Prompt template (medtune.prompts; default: paper in letter "
                                 "mode, options in option mode).")
    thresholds: tuple[float, float] | None = Field(None, description="Fixed cut points: easy ≤ t1 < medium ≤ t2 "
                                                   "< hard (default: the paper's 0.66, 0.80).")
    quantiles: tuple[float, float] | None = Field(None, description="Cut at these quantiles of the observed "
                                                  "difficulty instead.")
    irt: Literal["1pl", "2pl", "none"] = Field("1pl", description="IRT model for the irt_b column (none: leave "
                                               "it null).")
    irt_data: Literal["prob", "correct"] = Field("prob", description="Fit IRT to expected accuracies (prob) or "
                                                 "to 0/1 correctness.")
    file: str | None = Field(None, description="Table for source file (CSV, TSV, Parquet, JSON lines).")
    key: Literal["position", "id", "question_index"] = Field(
        "id", description="What the table's key column holds: the item's meta.position, meta.question_index, "
        "or its id.")
    key_column: str = Field("id", description="Column of the table holding the join key.")
    value_column: str = Field("difficulty", description="Column of the table holding the difficulty.")
    one_minus: bool = Field(False, description="The table's value is an accuracy: use 1 − value.")
    on_unmatched: Literal["error", "report"] = Field(
        "error", description="error: refuse table keys matching no item and items without a value; report: "
        "keep the matches and list the rest.")
    higher_is: Literal["harder", "easier"] = Field(
        "harder", description="Source human: what a higher numeric human difficulty means. easier (e.g. the share "
        "of examinees answering correctly) stores 1 − value as difficulty, so high values land in easy; "
        "thresholds and quantiles cut that stored difficulty.")
    responses: list[str] = Field(default_factory=list, description="Source responses: the paper's response JSON "
                                 "files, one per model (ids lek-<question_index>).")
    human_file: str | None = Field(None, description="Source human: a table of human difficulty (CSV, TSV, "
                                   "Parquet, JSON lines) joined to the items; its values win over the items' own.")
    human_key: Literal["position", "id", "question_index"] = Field(
        "id", description="What human_file's key column holds: the item's meta.position, meta.question_index, or "
        "its id.")
    human_key_column: str = Field("id", description="Column of human_file holding the join key.")
    human_value_column: str = Field("human_difficulty", description="Column of human_file holding the human "
                                    "difficulty.")
    split: str | None = Field(None, description="Only items of this split.")
    dtype: str = Field("auto", description="auto, fp32, bf16 or fp16.")
    device: str = Field("auto", description="auto, cpu or cuda[:N].")
    batch_tokens: BatchTokens | None = Field(None, description="Padded tokens per scoring batch, or auto (default: "
                                             "the scorer's, auto: 1024 on a CPU, estimated from the free memory on "
                                             "a GPU).")
    vllm_gpu_memory_utilization: VllmGpuMemoryUtilization = None
    vllm_max_model_len: VllmMaxModelLen = None
    vllm_tensor_parallel_size: VllmTensorParallelSize = None
    vllm_enforce_eager: VllmEnforceEager = False

    @field_validator("thresholds")
    @classmethod
    def _valid_thresholds(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        return None if v is None else _checked(Bucketing.fixed, v).thresholds

    @field_validator("quantiles")
    @classmethod
    def _valid_quantiles(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        return None if v is None else _checked(Bucketing.by_quantiles, v).quantiles

    @model_validator(mode="after")
    def _needs(self) -> DifficultySettings:
        get_difficulty_source(self.source).check(self)
        if self.thresholds and self.quantiles:
            raise ValueError("give `thresholds` or `quantiles`, not both")
        return self

    # ------------------------------------------------------------------------------------------------
    def for_source(self, source: str) -> DifficultySettings:
        """The same settings for another source (a grid's difficulty axis), validated again."""
        return type(self).model_validate({**self.model_dump(), "source": source})

    def bucketing(self) -> Bucketing:
        if self.quantiles:
            return Bucketing.by_quantiles(self.quantiles)
        return Bucketing.fixed(self.thresholds) if self.thresholds else Bucketing.fixed()

    def human_needs_stage(self) -> bool:
        """Whether source ``human`` needs this stage's artifact rather than the items' values read as they are.

        The order stage reads a numeric ``human_difficulty`` as higher = harder and cuts it at fixed thresholds;
        a table, the other direction or quantile cuts are this stage's to apply.
        """
        return bool(self.human_file) or self.higher_is == "easier" or self.quantiles is not None

    def resolved_template(self) -> str:
        return self.template or ("options" if self.mode == "option" else "paper")

    def artifact_settings(self) -> dict[str, Any]:
        """The settings the artifact depends on: what a cache key needs, and nothing else.

        ``llm`` and ``irt`` give the same dict (one artifact serves both); settings of the other sources are
        left out. Inputs (the items, the table's content, the models' weights, the training settings of the
        cross-fitted fine-tunes) are the caller's to fingerprint.
        """
        common = {"thresholds": self.thresholds, "quantiles": self.quantiles, "split": self.split}
        return get_difficulty_source(self.source).artifact_settings(self, common)


def _checked(build: Callable[[Sequence[float]], Bucketing], values: Sequence[float]) -> Bucketing:
    """A bucketing rule, with its InputError turned into the ValueError pydantic reports against the key."""
    try:
        return build(values)
    except InputError as exc:
        raise ValueError(exc.reason) from None


# ----------------------------------------------------------------------------------------------------------
# Names and files


def model_names(specs: Sequence[str]) -> list[str]:
    """Short, unique, file-safe names for model specs (folder name, GGUF stem, or a hub name's last part)."""
    names: list[str] = []
    for spec in specs:
        p = Path(spec.rstrip("/"))
        base = p.stem if p.suffix.lower() == ".gguf" else p.name or spec
        base = re.sub(r"[^A-Za-z0-9._+-]", "_", base) or "model"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def scores_dir(artifact: Path) -> Path:
    """Where the per-model score files of an artifact live: ``<artifact stem>.scores/`` beside it."""
    return artifact.with_name(f"{artifact.stem}.scores")


def _reusable(path: Path, items: Sequence[Item], mode: str) -> pd.DataFrame | None:
    """A score file's rows in the items' order, if it holds every item with the same gold answer."""
    from medtune.evaluation import read_predictions

    if not path.exists():
        return None
    frame = read_predictions(path)
    ids = [it.id for it in items]
    if not set(frame["id"]) >= set(ids) or not (frame["mode"] == mode).all():
        return None
    frame = frame.set_index("id").loc[ids].reset_index()
    # Same ids but other gold answers means the items changed: score again rather than reuse.
    if [int(a) for a in frame["answer"]] != [it.answer for it in items]:
        return None
    return frame


def _read_stage_items(items_path: Path, split: str | None, *, mcq: bool) -> list[Item]:
    from medtune.schema import MCQItem, read_items

    items = read_items(items_path)
    if split is not None:
        items = [it for it in items if it.split == split]
    if not items:
        raise InputError(f"no items{f' in split {split!r}' if split else ''}", file=items_path)
    if mcq and not all(isinstance(it, MCQItem) for it in items):
        raise InputError("difficulty needs multiple-choice items", file=items_path)
    return items


# ----------------------------------------------------------------------------------------------------------
# Ensemble scores


def _score_kwargs(s: DifficultySettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"mode": s.mode, "template": s.resolved_template()}
    if s.batch_tokens is not None:
        kwargs["batch_tokens"] = s.batch_tokens
    return kwargs


def ensemble_scores(s: DifficultySettings, items: Sequence[Item], folder: Path, *,
                    models: Mapping[str, str] | None = None, progress: bool = False,
                    log: Callable[[str], None] | None = None) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """Scores of every ensemble member (``{name: scorer rows}``) and the spec each name resolved to.

    A member's score file in ``folder`` is reused when it covers the items; otherwise the member is loaded
    and scored, its rows streamed to that file (so an interrupted run resumes).
    """
    from medtune.scoring import score_items
    from medtune.scoring.backends import load_backend

    kwargs = _score_kwargs(s)
    frames: dict[str, pd.DataFrame] = {}
    specs: dict[str, str] = {}
    for entry, name in zip(s.ensemble, model_names(s.ensemble), strict=True):
        spec = (models or {}).get(entry, entry)
        specs[name] = spec
        path = folder / f"{name}.{s.mode}.{kwargs['template']}.parquet"
        frame = _reusable(path, items, s.mode)
        if frame is not None:
            _say(log, f"{name}: reusing {path}")
            frames[name] = frame
            continue
        _say(log, f"{name}: scoring {len(items)} questions ({s.mode} mode)")
        loaded = load_backend(spec, dtype=s.dtype, device=s.device,  # any backend: hf, openai:URL, a plugin's
                              vllm=vllm_options(s))
        frames[name] = score_items(loaded, items, output=path, progress=progress, **kwargs)
        del loaded
    return frames, specs


def _say(log: Callable[[str], None] | None, text: str) -> None:
    if log is not None:
        log(text)


# ----------------------------------------------------------------------------------------------------------
# Cross-fitted fine-tunes


def crossfit_base(s: DifficultySettings, models: Mapping[str, str] | None) -> str:
    """The spec the cross-fitted fine-tunes start from."""
    cross = s.crossfit
    assert cross is not None
    if cross.model:
        return (models or {}).get(cross.model, cross.model)
    if models:
        return next(iter(models.values()))
    if s.ensemble:
        return s.ensemble[0]
    raise ConfigError("difficulty.crossfit.model: give the base model to fine-tune")


def crossfit_scores(s: DifficultySettings, items: Sequence[Item], base_spec: str, folder: Path, *,
                    training: TrainSettings | Mapping[str, Any] | None = None, progress: bool = False,
                    log: Callable[[str], None] | None = None) -> dict[str, pd.DataFrame]:
    """Scores of cross-fitted short fine-tunes: per repeat, every item scored by a model that did not train on it.

    Returns ``{"crossfit-r<k>": scorer rows over all items}``, one ensemble member per repeat. A repeat's
    rows are kept in ``folder`` under a name that hashes everything that determines them, so a rerun with
    the same settings reuses them and a changed setting never does. Beside them, :func:`crossfit_folds_path`
    records per fold the ids its fine-tune trained on (read from that fine-tune's own run log) and the ids it
    scored, so that "never scored by a model that trained on it" can be checked after the runs are gone.
    """
    from medtune.io import write_json_atomic
    from medtune.scoring.store import write_predictions

    cross = s.crossfit
    assert cross is not None
    kwargs = _score_kwargs(s)
    key = stable_hash({"crossfit": cross.to_dict(), "base": base_spec, "training": _training_dict(training),
                       "score": kwargs}, length=12)
    out: dict[str, pd.DataFrame] = {}
    for r in range(cross.repeats):
        name = f"crossfit-r{r}"
        path = folder / f"{name}.{key}.{s.mode}.{kwargs['template']}.parquet"
        frame = _reusable(path, items, s.mode)
        if frame is None:
            _say(log, f"{name}: {cross.folds} fine-tunes of {base_spec} ({cross.method}, {cross.max_steps} steps)")
            frame, folds = _crossfit_repeat(items, cross, base_spec, r, training=training, progress=progress,
                                            **kwargs)
            folder.mkdir(parents=True, exist_ok=True)
            # The record before the scores: a kill between the two leaves a record without scores (redone next
            # time), never reusable scores without their record.
            write_json_atomic(crossfit_folds_path(path), {
                "format": CROSSFIT_FOLDS_FORMAT, "predictions": path.name, "repeat": r,
                "fold_seed": CROSSFIT_FOLD_SEED + r, "folds": folds})
            write_predictions(frame, path)
        else:
            _say(log, f"{name}: reusing {path}")
        out[name] = frame
    return out


# ----------------------------------------------------------------------------------------------------------
# Human difficulty


def human_table_values(s: DifficultySettings, items: Sequence[Item]) -> tuple[dict[str, float], dict[str, Any]]:
    """The ``human_file`` values by item id (none without a table) and what the join matched.

    The table is joined as ``medtune difficulty import`` joins one (same keys, same errors naming the file, row
    and column). Keys that match no item are allowed: the table usually covers the whole data set and the stage
    sees one part of it (a portion, a fold).
    """
    if not s.human_file:
        return {}, {}
    path = Path(s.human_file).expanduser()
    result, report = import_difficulty(path, items, key_column=s.human_key_column, value_column=s.human_value_column,
                                       key=s.human_key, on_unmatched="report", name="human")
    values = {str(i): float(v) for i, v in zip(result.table["id"], result.table["difficulty"], strict=True)}
    info = {"human_file": path.name, "human_file_sha256": sha256_file(path)[:16], "key": s.human_key,
            "key_column": s.human_key_column, "value_column": s.human_value_column, "import": report.as_dict()}
    return values, info


def human_difficulty(s: DifficultySettings, items: Sequence[Item], *, items_file: Path | None = None
                     ) -> DifficultyResult:
    """Source ``human`` as a difficulty artifact: each item's value (``human_file``'s, else its own), in the
    stage's direction, bucketed by the stage's rule.

    A level ("easy"/"medium"/"hard") is the item's bucket as it is (its difficulty stays null). A number ``v``
    is stored as ``v`` (``higher_is`` harder) or ``1 − v`` (easier: for a share of examinees answering
    correctly, the share answering wrongly), then cut by ``thresholds``/``quantiles`` like every source's
    difficulty. An item with no value at all is an error naming it: its strategy would have nothing to order by.
    """
    table_values, info = human_table_values(s, items)
    raw: list[float | str | None] = [table_values.get(it.id, getattr(it, "human_difficulty", None)) for it in items]
    missing = [it.id for it, v in zip(items, raw, strict=True) if v is None]
    if missing:
        where = (f"neither a human_difficulty of its own nor a row in {Path(s.human_file).name}" if s.human_file
                 else "no human_difficulty (give one with `human_file`, a table keyed like `medtune difficulty "
                      "import`)")
        raise InputError(f"{len(missing)} of {len(items)} item(s) have no human difficulty (first: {missing[0]}): "
                         f"{where}", file=items_file, record=missing[0], field="human_difficulty")
    numbers = np.full(len(items), np.nan)
    levels: list[str | None] = [None] * len(items)
    for i, (it, v) in enumerate(zip(items, raw, strict=True)):
        if isinstance(v, str):
            if v not in DIFFICULTY_LEVELS:
                raise InputError(f"human_difficulty level must be one of {', '.join(DIFFICULTY_LEVELS)}, got {v!r}",
                                 file=items_file, record=it.id, field="human_difficulty")
            levels[i] = v
        else:
            value = float(v)  # type: ignore[arg-type]
            if not math.isfinite(value):
                raise InputError(f"human_difficulty {v!r} is not finite", file=items_file, record=it.id,
                                 field="human_difficulty")
            numbers[i] = value if s.higher_is == "harder" else 1.0 - value
    rule: dict[str, Any] = {"rule": "levels", "thresholds": []}
    buckets = np.asarray(levels, dtype=object)
    numeric = ~np.isnan(numbers)
    if numeric.any():
        labels, rule = s.bucketing().assign(numbers[numeric])
        buckets[numeric] = labels
    table = pd.DataFrame({"id": [it.id for it in items], "difficulty": numbers, "irt_b": np.full(len(items), np.nan),
                      "bucket": buckets})
    meta = {**rule, "source": "human", "higher_is": s.higher_is, "models": [], "irt": None, "n_items": len(items),
            "n_from_table": sum(it.id in table_values for it in items),
            "n_levels": sum(v is not None for v in levels), **info}
    return DifficultyResult(table, meta)


def ensemble_source(s: DifficultySettings, items: Sequence[Item], inputs: SourceInputs
                    ) -> tuple[DifficultyResult, dict[str, Any]]:
    """Sources ``llm`` and ``irt``: the ensemble's scores (and the cross-fitted fine-tunes'), kept in
    ``<stem>.scores/`` beside the artifact, as difficulty, buckets and the IRT ``irt_b`` column."""
    inputs.artifact.parent.mkdir(parents=True, exist_ok=True)  # the scores stream into <stem>.scores/ beside it
    folder = scores_dir(inputs.artifact)
    frames, specs = ensemble_scores(s, items, folder, models=inputs.models, progress=inputs.progress, log=inputs.log)
    extra: dict[str, Any] = {"mode": s.mode, "template": s.resolved_template(), "model_specs": specs}
    if s.crossfit is not None:
        base = crossfit_base(s, inputs.models)
        frames.update(crossfit_scores(s, items, base, folder, training=inputs.training, progress=inputs.progress,
                                      log=inputs.log))
        extra["crossfit"] = {**s.crossfit.to_dict(), "base": base}
    return difficulty_from_scores(frames, ids=[it.id for it in items], bucketing=s.bucketing(),
                                  irt=None if s.irt == "none" else s.irt, irt_data=s.irt_data, extra_meta=extra), {}


def human_source(s: DifficultySettings, items: Sequence[Item], inputs: SourceInputs
                 ) -> tuple[DifficultyResult, dict[str, Any]]:
    """Source ``human``: :func:`human_difficulty` of the items."""
    return human_difficulty(s, items, items_file=inputs.items_path), {}


def file_source(s: DifficultySettings, items: Sequence[Item], inputs: SourceInputs
                ) -> tuple[DifficultyResult, dict[str, Any]]:
    """Source ``file``: the table joined to the items; the summary adds what the join matched."""
    result, report = import_difficulty(
        Path(s.file).expanduser(), items, key_column=s.key_column, value_column=s.value_column,  # type: ignore[arg-type]
        key=s.key, on_unmatched=s.on_unmatched, one_minus=s.one_minus, bucketing=s.bucketing())
    return result, {"import": report.as_dict()}


def responses_source(s: DifficultySettings, items: None, inputs: SourceInputs
                     ) -> tuple[DifficultyResult, dict[str, Any]]:
    """Source ``responses``: the paper's response files (they name their questions; no items are read)."""
    result = difficulty_from_responses([Path(f) for f in s.responses], bucketing=s.bucketing(),
                                       irt=None if s.irt == "none" else s.irt, irt_data=s.irt_data)
    return result, {}


# ----------------------------------------------------------------------------------------------------------
# The stage


def write_outputs(result: DifficultyResult, path: Path, plot: bool | Path = True) -> dict[str, Any]:
    """Write the artifact and its histogram (``<stem>.png`` beside it, or ``plot``); returns the summary.

    The histogram is a convenience: a failure to draw it is reported in the summary, never raised.
    """
    write_difficulty(result, path)
    d = result.table["difficulty"]
    summary: dict[str, Any] = {
        "artifact": path.name, "source": result.meta.get("source"), "n_items": len(result.table),
        "buckets": result.bucket_sizes(), "rule": result.meta.get("rule"),
        "thresholds": [float(t) for t in result.meta.get("thresholds", [])], "models": result.models,
        "difficulty_mean": float(d.mean()), "difficulty_median": float(d.median()), "plot": None,
    }
    if plot is not False:
        target = path.with_suffix(".png") if plot is True else Path(plot)
        try:
            plot_histogram(result, target)
            summary["plot"] = str(target)
        except Exception as exc:  # a plot never fails the stage
            summary["plot_error"] = f"{type(exc).__name__}: {exc}"
    return summary


def run_difficulty(
    settings: DifficultySettings | Mapping[str, Any],
    items_path: Path | None,
    out: Path,
    *,
    models: Mapping[str, str] | None = None,
    training: TrainSettings | Mapping[str, Any] | None = None,
    progress: bool = False,
    artifact: str = ARTIFACT,
    plot: bool | Path = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Compute ``out/difficulty.parquet`` (+ histogram) from the items at ``items_path``; returns a summary.

    ``models`` maps grid model names to base specs (ensemble entries and ``crossfit.model`` may name them);
    ``training`` is the training settings (a ``TrainSettings`` or a dict of its fields) the cross-fitted
    fine-tunes start from (default: ``TrainSettings``'s defaults). ``artifact`` names the file in ``out`` (the
    per-model scores go in ``<stem>.scores/`` beside it); ``plot`` is True (``<stem>.png``), a path, or False.
    ``log`` receives one line per ensemble member (reused or scored). The source's registered object computes
    the artifact (:mod:`medtune.difficulty_sources`); ``items_path`` may be None for a source that reads no items.
    """
    s = validate_settings(DifficultySettings, settings, "difficulty")
    source = get_difficulty_source(s.source)
    items_path = None if items_path is None else Path(items_path)
    out = Path(out)
    items = None
    if source.reads_items:
        if items_path is None:
            raise ConfigError(f"difficulty source '{s.source}' reads an items file; give one")
        items = _read_stage_items(items_path, s.split, mcq=source.multiple_choice)
    path = out / artifact
    inputs = SourceInputs(artifact=path, items_path=items_path, models=models, training=training, progress=progress,
                          log=log)
    result, extra = source.compute(s, items, inputs)  # bad input fails here, before the output folder exists
    out.mkdir(parents=True, exist_ok=True)
    return {**write_outputs(result, path, plot), **extra}

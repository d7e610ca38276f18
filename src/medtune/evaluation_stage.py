"""The evaluation stage: score a model on items and write ``predictions.parquet`` + ``metrics.json``.

Free-text items also get ``item_metrics.parquet`` (one row of scores per item, :func:`write_item_metrics`);
:func:`score_generations` computes the same QA metrics for another tool's generations (a JSON-lines file), and
:func:`score_file` reads other tools' prediction files too (:mod:`medtune.foreign_predictions`: LLaMA-Factory,
lm-eval samples logs, MCQ letters), MCQ ones into ``predictions.parquet`` + ``metrics.json``.

:class:`EvalSettings` holds every evaluation setting with its one default; :func:`run_evaluation` is the stage,
called by ``medtune evaluate run`` and by the experiment grid alike, so both score the same way. What is scored
is a :class:`medtune.model_ref.ModelRef`: a base model spec (possibly with a backend prefix, see
:mod:`medtune.scoring.backends`), plus a fine-tuned adapter or a fine-tuned full model, and how it was trained,
loaded by :func:`medtune.model_ref.load_model` (below the stages, so the adaptive stage loads ``rho``'s reference
model the same way).

Precision follows the model, not a fixed choice: ``dtype: auto`` is bf16 on a GPU that has it and fp32 on a CPU,
and ``quantization: auto`` loads the base the way the run trained on it (4-bit for QLoRA), because an adapter
learned on a 4-bit base is a correction to *that* base. :func:`describe_precision` says what a cell will use.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from medtune.anchors.artifact import AnchorSet, anchor_items, read_anchors
from medtune.anchors.estimate import DEFAULT_ESTIMATOR, ESTIMATORS, estimate_all
from medtune.bertscore import BertScoreSettings, resolve_bertscore_model
from medtune.chat_format import (
    CHAT_DESCRIPTION,
    SYSTEM_PROMPT_DESCRIPTION,
    ChatChoice,
    ChatFormat,
    chat_format,
    chat_record,
    known_model_names,
    resolve_chat,
    template_sha256,
)
from medtune.errors import ConfigError, InputError
from medtune.evaluation import DEFAULT_N_BOOT, compute_metrics, per_item_scores, qa_item_scores, read_predictions
from medtune.foreign_predictions import read_foreign_predictions, read_generations
from medtune.io import atomic_path, write_json_atomic
from medtune.model_ref import (
    ModelLoadSettings,
    ModelRef,
    as_model_ref,
    load_model,
    resolve_dtype_for,
    resolve_quantization,
)
from medtune.schema import Item, QAItem, read_items, write_items
from medtune.scoring.engine import DEFAULT_MAX_NEW_TOKENS, BatchTokens
from medtune.settings import validate_settings

EvalMode = Literal["auto", "letter", "option", "generate"]
_TORCH_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


class EvalSettings(ModelLoadSettings):
    """How a model is evaluated: scoring mode, prompt, backend, precision, batching and the statistics.

    The loading settings (backend, precision, device, vLLM's options) are :class:`ModelLoadSettings`'s, shared with
    every stage that loads a model to score it; their keys and options are the evaluation's as well.
    """

    mode: EvalMode = Field("auto", description="scoring mode; auto: letter for MCQ, generate for free text")
    template: str | None = Field(None, description="prompt template (medtune.prompts); default: the one the "
                                 "model was trained with, else 'options' in option mode and 'paper' otherwise")
    batch_tokens: BatchTokens = Field(
        "auto", description="padded tokens per batch (rows x longest); auto: 1024 on a CPU, on a GPU estimated from "
        "its free memory and lowered when a batch runs out of memory (values never depend on it)")
    max_batch_size: int = Field(64, ge=1, description="questions per batch at most")
    max_new_tokens: int = Field(DEFAULT_MAX_NEW_TOKENS, ge=1, description="generate mode: new tokens per answer")
    chat: ChatChoice = Field("auto", description=CHAT_DESCRIPTION + "; a run's evaluation: as the run trained")
    system_prompt: str | None = Field(None, description=SYSTEM_PROMPT_DESCRIPTION + "; a run's evaluation: the "
                                      "run's")
    permute_seed: int | None = Field(None, description="show each question's options permuted with this seed "
                                     "(position-bias check)")
    option_score: Literal["norm", "sum"] = Field(
        "norm", description="option mode: rank options by per-token (norm) or summed log-likelihood")
    bootstrap: int = Field(DEFAULT_N_BOOT, ge=1, description="bootstrap resamples for the confidence intervals")
    seed: int = Field(0, ge=0, description="bootstrap seed")
    bertscore: BertScoreSettings = Field(
        default_factory=BertScoreSettings,
        description="BERTScore of free-text answers (medtune.bertscore): a preset (minilm, study), a model, none "
        "(off), or a mapping of model, num_layers, idf, rescale, lang, baseline_path, batch_size, device")


# ----------------------------------------------------------------------------------------------------------
# Resolving the settings for one model and one test set


def resolve_mode(settings: EvalSettings, items: list[Item], items_path: Path | None = None) -> str:
    qa = isinstance(items[0], QAItem)
    mode = settings.mode if settings.mode != "auto" else ("generate" if qa else "letter")
    if qa and mode != "generate":
        raise InputError(f"free-text items can only be evaluated in generate mode, not {mode}", file=items_path,
                         field="mode")
    return mode


def resolve_template(settings: EvalSettings, ref: ModelRef, mode: str) -> str:
    """The explicit template, else the one the model was trained with, else the mode's natural prompt."""
    if settings.template:
        return settings.template
    if ref.train_template:
        return ref.train_template
    return "options" if mode == "option" else "paper"


def resolve_eval_chat(settings: EvalSettings, ref: ModelRef, backend: Any) -> ChatFormat | None:
    """The chat format the evaluation scores with (``None``: no chat).

    A training run's record decides what ``auto`` (and an unset ``system_prompt``) means: the run is scored as it
    was trained. An explicit setting that contradicts the run's wins, with a warning, and so does a chat template
    whose hash differs from the one the run trained with. Anything else resolves ``auto`` by the rule of
    :mod:`medtune.chat_format` (a chat template and an instruct/chat model name).
    """
    tokenizer = getattr(backend, "tokenizer", None)
    names = known_model_names(tokenizer, ref.spec, ref.weights, getattr(backend, "spec", None),
                              model=getattr(backend, "model", None))
    recorded = ref.train_chat
    if recorded is None:
        return chat_format(resolve_chat(settings.chat, tokenizer, names), settings.system_prompt)
    trained = bool(recorded.get("enabled"))
    trained_system = recorded.get("system_prompt")
    enabled = trained if settings.chat == "auto" else bool(settings.chat)
    if enabled != trained:
        warnings.warn(f"chat: {str(enabled).lower()} contradicts the run, which was trained "
                      f"{'with' if trained else 'without'} its chat template: it is scored on prompts it did not "
                      "learn", UserWarning, stacklevel=2)
    system = trained_system if settings.system_prompt is None else settings.system_prompt
    if enabled and trained and system != trained_system:
        warnings.warn(f"system_prompt {system!r} differs from the one the run was trained with ({trained_system!r})",
                      UserWarning, stacklevel=2)
    if enabled:
        resolve_chat(True, tokenizer, names)  # a tokenizer without a template is an error here too
        sha = template_sha256(tokenizer)
        if trained and tokenizer is not None and recorded.get("template_sha256") not in (None, sha):
            warnings.warn("the model's chat template differs from the one the run was trained with (its sha256 "
                          "changed)", UserWarning, stacklevel=2)
    return chat_format(enabled, system)


def describe_precision(settings: EvalSettings | dict[str, Any], ref: ModelRef | str) -> dict[str, Any]:
    """The backend, dtype and quantization evaluation will use for ``ref``, resolved (e.g. fp32 + 4bit on a CPU).

    An OpenAI-compatible endpoint serves its own weights: its dtype and quantization are the server's (None).
    """
    from medtune.scoring.backends import SERVED, TORCH, backend_of, backend_precision

    settings = validate_settings(EvalSettings, settings, "evaluation")
    ref = as_model_ref(ref)
    name, _ = backend_of(ref.weights, settings.backend)
    precision = backend_precision(name)
    if precision == SERVED:
        return {"backend": name, "dtype": None, "quantization": None}
    quantization = resolve_quantization(settings, ref)
    if precision != TORCH:
        return {"backend": name, "dtype": settings.dtype, "quantization": quantization}
    from medtune.models import default_device, resolve_dtype
    from medtune.scoring.hf import auto_dtype

    device = default_device() if settings.device == "auto" else settings.device
    requested = resolve_dtype_for(settings, ref)
    requested = auto_dtype(device) if requested == "auto" else requested  # as the backends load it
    dtype = str(resolve_dtype(requested, device)).removeprefix("torch.")
    return {"backend": name, "dtype": _TORCH_NAMES.get(dtype, dtype), "quantization": quantization}


# ----------------------------------------------------------------------------------------------------------
# The stage


def _read_test_items(items_path: Path, split: str | None) -> list[Item]:
    items = read_items(items_path)
    if split is not None:
        items = [it for it in items if it.split == split]
    if not items:
        raise InputError(f"no items{f' in split {split!r}' if split else ''}", file=items_path)
    return items


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    if metrics.get("kind") == "qa":
        bert = metrics["qa"].get("bertscore")
        return {"f1": metrics["qa"]["f1"], **({"bertscore_f1": bert["f1"]} if bert else {})}
    acc = metrics["accuracy"]
    return {"accuracy": acc["accuracy"], "ci_low": acc["ci_low"], "ci_high": acc["ci_high"]}


def run_evaluation(settings: EvalSettings | dict[str, Any], items_path: Path, model: ModelRef | str | Path,
                   out: Path, *, split: str | None = None, progress: bool = False, loaded: Any = None
                   ) -> dict[str, Any]:
    """Score the items of ``items_path`` (``split`` only, if given) with ``model``; write ``out/predictions.parquet``
    and ``out/metrics.json`` (free text also ``out/item_metrics.parquet``); return a small summary (n, mode,
    template, precision, headline metric, paths).

    ``loaded`` is a backend from :func:`load_model` to reuse (several test sets, one model load). Scoring
    streams to ``out``, so an interrupted run resumes with the same settings.
    """
    from medtune.scoring import score_items

    settings = validate_settings(EvalSettings, settings, "evaluation")
    ref = as_model_ref(model)
    items_path, out = Path(items_path), Path(out)
    items = _read_test_items(items_path, split)
    mode = resolve_mode(settings, items, items_path)
    if isinstance(items[0], QAItem):
        # a BERTScore model that is not here fails now, not after generating
        resolve_bertscore_model(settings.bertscore)
    template = resolve_template(settings, ref, mode)
    precision = describe_precision(settings, ref)
    backend = loaded if loaded is not None else load_model(ref, settings)
    chat = resolve_eval_chat(settings, ref, backend)
    predictions = out / "predictions.parquet"
    frame = score_items(backend, items, mode=mode, template=template, permute_seed=settings.permute_seed,
                        batch_tokens=settings.batch_tokens, max_batch_size=settings.max_batch_size,
                        max_new_tokens=settings.max_new_tokens, option_score=settings.option_score,
                        chat=chat, output=predictions, progress=progress)
    scores = None
    if isinstance(items[0], QAItem):
        from medtune.factsheet import read_factsheet

        scores = qa_item_scores(frame, items, settings.bertscore, facts=read_factsheet(items_path))
        write_item_metrics(scores, out / ITEM_METRICS)
    metrics = compute_metrics(frame, items, n_boot=settings.bootstrap, seed=settings.seed, item_scores=scores)
    metrics["run"] = {"items": str(items_path), "split": split, **ref.describe(), "template": template,
                      "mode": mode, "permute_seed": settings.permute_seed, **precision,
                      "chat": chat_record(getattr(backend, "tokenizer", None), chat)}
    metrics = json.loads(json.dumps(metrics, default=str))  # anything not JSON-native is written as text
    write_json_atomic(out / "metrics.json", metrics)
    return {"n": len(frame), "mode": mode, "template": template, "chat": chat is not None, **precision,
            **_headline(metrics),
            "predictions": str(predictions), "metrics": str(out / "metrics.json")}


# ----------------------------------------------------------------------------------------------------------
# Per-item scores and other tools' generations

ITEM_METRICS = "item_metrics.parquet"
_ITEM_METRICS_KEY = b"medtune.item_metrics"


def write_item_metrics(scores: Any, path: Path) -> None:
    """Write :func:`medtune.evaluation.qa_item_scores`' frame as Parquet, atomically; the schema metadata key
    ``medtune.item_metrics`` (JSON) says what BERTScore used (``{"bertscore": null}`` when off)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(scores.reset_index(drop=True), preserve_index=False)
    info = json.dumps({"bertscore": scores.attrs.get("bertscore")}, default=str).encode("utf-8")
    meta = {k: v for k, v in (table.schema.metadata or {}).items() if k != b"pandas"}  # attrs live in ours
    table = table.replace_schema_metadata({**meta, _ITEM_METRICS_KEY: info})
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)


def score_generations(path: Path, settings: EvalSettings | dict[str, Any], out: Path) -> dict[str, Any]:
    """QA metrics of another tool's generations (:func:`read_generations`): the same token P/R/F1, exact match,
    ROUGE-L and BERTScore as the stage, written to ``out/metrics.json`` and ``out/item_metrics.parquet``.

    Only ``bertscore``, ``bootstrap`` and ``seed`` of ``settings`` apply (nothing is generated). Returns the
    metrics as written.
    """
    settings = validate_settings(EvalSettings, settings, "evaluation")
    path, out = Path(path), Path(out)
    return _score_free_text(read_generations(path), settings, out, {"generations": str(path), "mode": "generate"})


def _score_free_text(records: list[dict[str, Any]], settings: EvalSettings, out: Path,
                     run: dict[str, Any]) -> dict[str, Any]:
    import pandas as pd

    items = [QAItem(id=r["id"], question=r["prompt"], answer=r["reference"], source="generations", split="test")
             for r in records]
    frame = pd.DataFrame({"id": [r["id"] for r in records], "mode": "generate",
                          "generated": pd.Series([r["prediction"] for r in records], dtype=object)})
    scores = qa_item_scores(frame, items, settings.bertscore)
    metrics = compute_metrics(frame, items, n_boot=settings.bootstrap, seed=settings.seed, item_scores=scores)
    metrics["run"] = run
    metrics = json.loads(json.dumps(metrics, default=str))
    write_item_metrics(scores, out / ITEM_METRICS)
    write_json_atomic(out / "metrics.json", metrics)
    return metrics


PREDICTIONS_NORM = "predictions_norm.parquet"


def score_file(path: Path, settings: EvalSettings | dict[str, Any], out: Path, *, format: str = "auto",
               fields: dict[str, str] | None = None, lm_eval_filter: str | None = None) -> dict[str, Any]:
    """Score a prediction file of medtune or another tool (:mod:`medtune.foreign_predictions`) into ``out``.

    Free text (medtune generations, LLaMA-Factory, an lm-eval ``generate_until`` log): as
    :func:`score_generations`, ``metrics.json`` + ``item_metrics.parquet``. MCQ (letters, an lm-eval
    ``multiple_choice`` log): ``predictions.parquet`` in the scorer's columns and ``metrics.json`` (accuracy with
    CI, ...), so ``medtune evaluate compare`` and :mod:`medtune.stats` take runs made elsewhere; an lm-eval log
    also gets ``predictions_norm.parquet`` (lm-eval's ``acc_norm``: predicted by ``scores_norm``) and
    ``accuracy_norm`` in ``metrics.json``. Returns the metrics as written.
    """
    from medtune.scoring.store import write_predictions

    settings = validate_settings(EvalSettings, settings, "evaluation")
    path, out = Path(path), Path(out)
    read = read_foreign_predictions(path, format=format, fields=fields, lm_eval_filter=lm_eval_filter)
    run = {"file": str(path), **read.source}
    if read.kind == "qa":
        return _score_free_text(read.generations, settings, out, {"generations": str(path), **run, "mode": "generate"})
    assert read.predictions is not None
    metrics = compute_metrics(read.predictions, read.items, n_boot=settings.bootstrap, seed=settings.seed)
    if read.predictions_norm is not None:
        norm = compute_metrics(read.predictions_norm, read.items, n_boot=settings.bootstrap, seed=settings.seed)
        metrics["accuracy_norm"] = norm["accuracy"]
        write_predictions(read.predictions_norm, out / PREDICTIONS_NORM)
    metrics["run"] = {**run, "mode": metrics["mode"]}
    metrics = json.loads(json.dumps(metrics, default=str))
    write_predictions(read.predictions, out / "predictions.parquet")
    write_json_atomic(out / "metrics.json", metrics)
    return metrics


# Scoring the anchors of a test set only (``medtune evaluate run --anchors``): the evaluation above on the anchor
# items, written beside the outputs as ``anchor_items.parquet`` so that predictions, resumption and precision handling
# are a full evaluation's, then the full-test accuracy the anchors estimate (medtune.anchors).
ANCHOR_ITEMS = "anchor_items.parquet"


def run_anchor_evaluation(settings: Any, items_path: Path, model: Any, out: Path, anchors: AnchorSet | Path, *,
                          estimator: str = DEFAULT_ESTIMATOR, split: str | None = None, progress: bool = False,
                          loaded: Any = None) -> dict[str, Any]:
    """Score only the anchors of ``items_path`` with ``model`` and write ``out/predictions.parquet`` (the anchors)
    and ``out/metrics.json`` with the full-test estimate (``estimator``: weighted, pirt or gpirt).

    ``settings``, ``model`` and ``loaded`` are :func:`medtune.evaluation_stage.run_evaluation`'s. The model must
    not be one of the models the anchors were chosen from. The p-IRT/gp-IRT bootstrap takes the settings'
    ``seed`` and ``bootstrap`` draws, at most 2,000 (its intervals settle well before the 10,000 the item
    bootstrap of the anchors' own accuracy uses). Returns run_evaluation's summary plus ``estimate``.
    """
    if estimator not in ESTIMATORS:
        raise ConfigError(f"unknown anchor estimator {estimator!r} (use one of {', '.join(ESTIMATORS)})")
    anchors_path = None
    if not isinstance(anchors, AnchorSet):
        anchors_path = Path(anchors)
        anchors = read_anchors(anchors_path)
    settings = validate_settings(EvalSettings, settings, "evaluation")
    items_path, out = Path(items_path), Path(out)
    subset = anchor_items(items_path, anchors, split=split)
    subset_path = write_items(subset, out / ANCHOR_ITEMS)
    summary = run_evaluation(settings, subset_path, model, out, progress=progress, loaded=loaded)
    frame = read_predictions(out / "predictions.parquet")
    correct = dict(zip(frame["id"].astype(str), per_item_scores(frame), strict=True))  # unanswered = wrong
    try:
        results = estimate_all(anchors, correct, n_boot=max(2, min(settings.bootstrap, 2000)), seed=settings.seed)
    except InputError as exc:
        raise exc.located(file=out / "predictions.parquet") from None
    chosen = results[estimator]
    estimate = {"is_estimate": True, "metric": "accuracy", "of": "all items the anchors were chosen on",
                "estimator": estimator, "estimate": chosen["estimate"], "ci_low": chosen["ci_low"],
                "ci_high": chosen["ci_high"], "se": chosen["se"], "k": anchors.k, "n_items": anchors.n_items}
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    metrics["scored"] = "anchor items only"
    metrics["estimate"] = estimate
    metrics["anchors"] = {"file": str(anchors_path) if anchors_path else None, "method": anchors.method,
                          "k": anchors.k, "n_items": anchors.n_items, "items": str(items_path), "split": split,
                          "theta": chosen["theta"], "theta_se": chosen["theta_se"],
                          "known_models": len(anchors.models), "estimates": results}
    write_json_atomic(metrics_path, json.loads(json.dumps(metrics, default=str)))
    return {**summary, "estimate": estimate}

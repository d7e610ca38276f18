"""The anchor stages: choose anchor items from known models' predictions, and evaluate a model on them.

:func:`run_anchor_choice` (settings: :class:`AnchorChoiceSettings`) is ``medtune evaluate anchors choose``: it
reads the predictions files of several known models on the same items, chooses the anchors
(:func:`medtune.anchors.choose_anchors`) and writes ``anchors.json``.

:func:`run_anchor_evaluation` scores a model on the anchor items only and estimates its full-test accuracy.
The model is scored by the ordinary evaluation stage (:func:`medtune.evaluation_stage.run_evaluation`) on the
anchor items, written beside the outputs as ``anchor_items.parquet``, so predictions, resumption and precision
handling are the same as a full evaluation's. ``metrics.json`` keeps the anchors' own metrics (their
``accuracy`` is over the ``k`` scored items) and gains ``estimate``: the full-test accuracy estimate with its
95 % interval, marked ``"is_estimate": true``, and ``anchors`` with every estimator's figures.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from medtune.anchors.artifact import AnchorSet, read_anchors, write_anchors
from medtune.anchors.choose import ANCHOR_METHODS
from medtune.anchors.estimate import DEFAULT_ESTIMATOR, ESTIMATORS, estimate_all
from medtune.errors import ConfigError, InputError
from medtune.evaluation import per_item_scores, read_predictions
from medtune.io import write_json_atomic
from medtune.schema import QAItem, read_items, write_items
from medtune.settings import Settings

ANCHOR_ITEMS = "anchor_items.parquet"


class AnchorChoiceSettings(Settings):
    """How anchor items are chosen from the predictions of known models."""

    k: int = Field(100, ge=1, description="number of anchor items")
    method: str = Field("irt-clusters", description=f"how anchors are chosen: {', '.join(ANCHOR_METHODS)}")
    irt: str = Field("2pl", description="IRT model fitted to the known models: 1pl or 2pl")
    seed: int = Field(0, ge=0, description="clustering / sampling seed")

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        if v not in ANCHOR_METHODS:
            raise ValueError(f"must be one of {', '.join(ANCHOR_METHODS)}, not {v!r}")
        return v

    @field_validator("irt")
    @classmethod
    def _irt_model(cls, v: str) -> str:
        if v not in ("1pl", "2pl"):
            raise ValueError(f"must be 1pl or 2pl, not {v!r}")
        return v


def run_anchor_choice(settings: AnchorChoiceSettings, predictions: Sequence[str | Path], out: str | Path
                      ) -> dict[str, Any]:
    """Choose ``settings.k`` anchors from the predictions files of known models (all on the same items, never of
    the model to be estimated) and write them to ``out`` (``anchors.json``).

    Returns the anchors' count, the items' count, the method, the IRT model and whether its fit converged, the
    number of known models, the smallest and largest weight, and the file written.
    """
    from medtune.anchors.choose import choose_anchors
    from medtune.anchors.responses import responses_from_predictions

    responses = responses_from_predictions(list(predictions))
    anchor_set = choose_anchors(responses, k=settings.k, seed=settings.seed,
                                method=settings.method, irt=settings.irt)  # type: ignore[arg-type]
    path = write_anchors(anchor_set, Path(out))
    w = anchor_set.weights
    return {"k": anchor_set.k, "n_items": anchor_set.n_items, "method": settings.method, "irt": settings.irt,
            "converged": anchor_set.irt.get("converged"), "known_models": len(predictions),
            "weight_min": float(w.min()), "weight_max": float(w.max()), "anchors": str(path)}


def anchor_items(items_path: Path, anchor_set: AnchorSet, *, split: str | None = None) -> list:
    """The anchor items of ``items_path`` (``split`` only, if given), in the anchor set's order."""
    items = read_items(items_path)
    if split is not None:
        items = [it for it in items if it.split == split]
    by_id = {it.id: it for it in items}
    missing = [i for i in anchor_set.anchor_ids if i not in by_id]
    if missing:
        raise InputError(f"{len(missing)} of the {anchor_set.k} anchor items are not among these items "
                         f"{f'(split {split!r}) ' if split else ''}(first: {missing[0]!r}); were the anchors chosen "
                         "on another test set?", file=items_path, field="id")
    chosen = [by_id[i] for i in anchor_set.anchor_ids]
    if isinstance(chosen[0], QAItem):
        raise InputError("anchor estimates are of multiple-choice accuracy; these are free-text items",
                         file=items_path)
    return chosen


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
    from medtune.evaluation_stage import EvalSettings, run_evaluation
    from medtune.settings import validate_settings

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

"""Evaluate a model on the anchor items only, and estimate its full-test accuracy.

The model is scored by the ordinary evaluation stage (:func:`medtune.evaluation_stage.run_evaluation`) on the
anchor items, written beside the outputs as ``anchor_items.parquet``, so predictions, resumption and precision
handling are the same as a full evaluation's. ``metrics.json`` keeps the anchors' own metrics (their
``accuracy`` is over the ``k`` scored items) and gains ``estimate``: the full-test accuracy estimate with its
95 % interval, marked ``"is_estimate": true``, and ``anchors`` with every estimator's figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medtune.anchors.artifact import AnchorSet, read_anchors
from medtune.anchors.estimate import DEFAULT_ESTIMATOR, ESTIMATORS, estimate_all
from medtune.errors import ConfigError, InputError
from medtune.evaluation import per_item_scores, read_predictions
from medtune.io import write_json_atomic
from medtune.schema import QAItem, read_items, write_items

ANCHOR_ITEMS = "anchor_items.parquet"


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

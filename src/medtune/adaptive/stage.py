"""The training stage, plain or adaptive: ``run_training_stage`` and the adaptive schema ``AdaptiveSettings``.

:func:`run_training_stage` is the one function ``medtune train`` and the grid call to train: with
``adaptive=None`` it is :func:`medtune.training.stage.run_training` (the order file's fixed plan); with
:class:`AdaptiveSettings` it is :func:`run_adaptive_training`, the next items chosen during training by an
adaptive strategy. ``AdaptiveSettings`` is the one schema of an adaptive run: ``medtune train`` generates its
options from it, and a grid strategy's ``adaptive:`` section is made of its fields.

In an adaptive run the order file still gives the candidate pool (every id it plans, in its order) and the
number of optimizer steps (what its fixed plan would train, so an adaptive run and its fixed-order baseline take
as many steps of the same global batch and the same learning-rate schedule). The strategy decides which of the
pool's items fill those steps, every ``every`` steps, from the model as it is then.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from medtune.adaptive.planner import AdaptivePlanner
from medtune.adaptive.strategies import EVERY_DEFAULT, RESCORE_DEFAULT, check_rescore, get_adaptive
from medtune.errors import ConfigError, InputError
from medtune.schema import Item
from medtune.settings import Settings
from medtune.training.config import TrainSettings
from medtune.training.scores import scoring_mode


class AdaptiveSettings(Settings):
    """How an adaptive run decides its items (written to ``config.json`` under ``adaptive.settings``).

    The one schema of an adaptive run: ``medtune train`` generates its adaptive options from it, and a grid
    strategy's ``adaptive:`` section is made of its fields (:mod:`medtune.experiments.adaptive`).
    """

    strategy: str = Field(..., description="adaptive strategy: ability, self-paced, learnability, rho, or a "
                                           "registered name")
    options: dict[str, Any] = Field(default_factory=dict, description="the strategy's options")
    every: int = Field(EVERY_DEFAULT, ge=1, description="decide the next items every N optimizer steps")
    anchors: list[str] = Field(default_factory=list, description="anchor items for the ability estimate: an "
                               "anchors.json (medtune evaluate anchors choose, on training items: its IRT a, b and "
                               "ability prior are used), an items file, or ids of the items file")
    difficulty: str | None = Field(None, description="difficulty.parquet giving each item's difficulty (ability; "
                                   "not needed with an anchors.json covering the pool)")
    difficulty_column: str = Field("irt_b", description="column of the difficulty file used as b")
    anchor_mode: Literal["auto", "letter", "option"] = Field(
        "auto", description="how anchors are scored (auto: letter for a letter target, option text otherwise)")
    score_batch: int = Field(16, ge=1, description="items per scoring batch at a decision point")
    rescore: float | Literal["all"] = Field(
        RESCORE_DEFAULT, description="items re-scored at each decision (loss and probability strategies), as a "
        "multiple of the items the decision trains: the items still available in this pass that were scored longest "
        "ago; the others keep their last scores. 'all': the whole pool every time. The first decision scores every "
        "item")

    reference: str | None = Field(None, description="rho: the reference model whose loss is subtracted: a training "
                                  "run folder (e.g. a model fine-tuned on held-out data) or a model spec; default: "
                                  "the base model (the model being trained, scored before its first step)")

    @field_validator("rescore")
    @classmethod
    def _positive_rescore(cls, v: float | str) -> float | str:
        return check_rescore(v)


def pool_and_steps(order: dict[str, Any], config: TrainSettings) -> tuple[list[str], int]:
    """The candidate pool (the order's ids, first appearance first) and the number of steps its plan trains."""
    from medtune.training.data import plan_steps, planned_epochs

    epochs = planned_epochs(order, config.epochs)
    pool = list(dict.fromkeys(i for e in epochs for i in e))
    return pool, len(plan_steps(epochs, config.global_batch, config.max_steps))


def _existing_file(spec: list[str]) -> Path | None:
    """The file ``spec`` names when it is one path to an existing file, else None (ids, or a comma-joined list of
    them, which can be longer than a file name may be)."""
    if len(spec) != 1 or "," in spec[0]:
        return None
    try:
        path = Path(spec[0]).expanduser()
        return path if path.is_file() else None
    except OSError:
        return None


def _anchor_items(spec: list[str], all_items: list[Item], items_path: Path) -> list[Item]:
    from medtune.schema import read_items

    file = _existing_file(spec)
    if file is not None:
        return list(read_items(file))
    by_id = {it.id: it for it in all_items}
    ids = [i.strip() for s in spec for i in s.split(",") if i.strip()]
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise InputError(f"anchor id '{unknown[0]}' is not in the items file (and is not a file)", file=items_path,
                         field="anchors")
    return [by_id[i] for i in ids]


def _anchor_set_file(spec: list[str]) -> Path | None:
    """The anchors.json named by ``--anchors`` (one existing ``.json`` file), else None."""
    file = _existing_file(spec)
    return file if file is not None and file.suffix == ".json" else None


def paths_read_from(adaptive: AdaptiveSettings, folder: str | Path | None) -> AdaptiveSettings:
    """``adaptive`` with its relative file paths read from ``folder`` instead of the working directory.

    ``difficulty`` always; an entry of ``anchors`` and ``reference`` when ``folder`` holds that file or folder
    (otherwise they are ids and a model spec). ``None`` leaves the settings as they are.
    """
    if folder is None:
        return adaptive
    base = Path(folder)

    def under(spec: str, *, must_exist: bool) -> str:
        if "," in spec or Path(spec).expanduser().is_absolute():
            return spec
        candidate = os.path.normpath(base / spec)
        try:
            return candidate if not must_exist or Path(candidate).exists() else spec
        except OSError:  # not a possible path: ids or a spec
            return spec

    update: dict[str, Any] = {"anchors": [under(a, must_exist=True) for a in adaptive.anchors]}
    if adaptive.difficulty is not None:
        update["difficulty"] = under(adaptive.difficulty, must_exist=False)
    if adaptive.reference is not None:
        update["reference"] = under(adaptive.reference, must_exist=True)
    return adaptive.model_copy(update=update)


def build_planner(config: TrainSettings, adaptive: AdaptiveSettings, items: list[Item], all_items: list[Item],
                  order: dict[str, Any], items_path: Path, *, record: AdaptiveSettings | None = None
                  ) -> AdaptivePlanner:
    """The planner of ``adaptive`` for a run of ``config`` on ``items`` (the training split) and ``order``.

    ``record`` (default ``adaptive``) is what ``config.json`` records under ``adaptive.settings``: the settings
    as given, where ``adaptive`` has its paths resolved (:func:`paths_read_from`).

    With an anchors.json (an :class:`medtune.anchors.AnchorSet` chosen on the training items, e.g. from the
    difficulty ensemble's predictions) ``ability`` reads θ's scale from it: the anchors' IRT ``a`` and ``b``,
    the fit's ability prior, and every pool item's ``b`` from the same fit unless a difficulty file is given.
    """
    from medtune.orders.inputs import read_difficulty_table

    strategy = get_adaptive(adaptive.strategy, adaptive.options)
    pool, total = pool_and_steps(order, config)
    difficulty, anchors, anchor_b = None, [], []
    anchor_a: list[float] | None = None
    prior: dict[str, float] | None = None
    set_file = _anchor_set_file(adaptive.anchors) if "theta" in strategy.needs else None
    anchor_set = None
    if set_file is not None:
        from medtune.anchors import read_anchors

        anchor_set = read_anchors(set_file)
    if "b" in strategy.needs:
        if adaptive.difficulty is not None:
            table = read_difficulty_table(adaptive.difficulty, adaptive.difficulty_column)
            difficulty = {i: r["difficulty"] for i, r in table.rows.items()}
            source, where = Path(adaptive.difficulty), adaptive.difficulty_column
        elif anchor_set is not None:
            difficulty = {i: float(b) for i, b in zip(anchor_set.item_ids, anchor_set.b, strict=True)}
            source, where = set_file, "item_ids"
        else:
            raise ConfigError(f"adaptive strategy '{strategy.name}' needs item difficulties: give --difficulty "
                              "difficulty.parquet (medtune difficulty) or an anchors.json chosen on the training "
                              "items")
        missing = [i for i in pool if difficulty.get(i) is None]
        if missing:
            raise InputError(f"item '{missing[0]}' has no difficulty ({len(missing)} training items lack one)",
                             file=source, field=where)
    if "theta" in strategy.needs:
        if not adaptive.anchors:
            raise ConfigError(f"adaptive strategy '{strategy.name}' estimates ability on anchor items: give "
                              "--anchors anchors.json, --anchors ITEMS_FILE or --anchors ID,ID,...")
        if anchor_set is not None:
            by_id = {it.id: it for it in all_items}
            absent = [i for i in anchor_set.anchor_ids if i not in by_id]
            if absent:
                raise InputError(f"anchor '{absent[0]}' of {set_file} is not in the items file", file=items_path,
                                 field="id")
            anchors = [by_id[i] for i in anchor_set.anchor_ids]
            idx = anchor_set.anchor_index
            anchor_a = [float(x) for x in anchor_set.a[idx]]
            anchor_b = [float(x) for x in anchor_set.b[idx]]
            prior = dict(anchor_set.theta_prior)
        else:
            anchors = _anchor_items(adaptive.anchors, all_items, items_path)
            assert difficulty is not None
            lacking = [a.id for a in anchors if difficulty.get(a.id) is None]
            if lacking:
                raise InputError(f"anchor item '{lacking[0]}' has no {adaptive.difficulty_column}",
                                 file=adaptive.difficulty, field=adaptive.difficulty_column)
            anchor_b = [difficulty[a.id] for a in anchors]
    reference_losses = None
    if adaptive.reference is not None:
        if "ref_loss" not in strategy.needs:
            raise ConfigError(f"adaptive strategy '{strategy.name}' takes no reference model (rho does)")
        by_id = {it.id: it for it in items}
        reference_losses = reference_item_losses(adaptive.reference, [by_id[i] for i in pool], config,
                                                 adaptive.score_batch)
    mode = scoring_mode(config.target) if adaptive.anchor_mode == "auto" else adaptive.anchor_mode
    return AdaptivePlanner(strategy, every=adaptive.every, items={it.id: it for it in items}, pool=pool,
                           total_steps=total, global_batch=config.global_batch, run_seed=config.seed,
                           target=config.target, template=config.template, difficulty=difficulty, anchors=anchors,
                           anchor_b=anchor_b, anchor_a=anchor_a, theta_prior=prior, anchor_mode=mode,
                           score_batch=adaptive.score_batch, rescore=adaptive.rescore,
                           reference_losses=reference_losses,
                           settings={"settings": (record or adaptive).to_dict()})


def reference_item_losses(reference: str, items: list[Item], config: TrainSettings, batch: int) -> list[float]:
    """Each item's loss under the reference model of ``rho`` (a run folder or a model spec), as training scores it.

    The model is loaded as the evaluation loads it (a run folder's adapter on its base, or its full model), scored
    once before training and released; ``trust_remote_code`` stays off.
    """
    from medtune.model_ref import ModelLoadSettings, ModelRef, load_model
    from medtune.training.scores import item_losses

    path = Path(reference).expanduser()
    ref = ModelRef.from_run(path) if (path / "config.json").is_file() else ModelRef(spec=reference)
    return item_losses(load_model(ref, ModelLoadSettings()), items, target=config.target, template=config.template,
                       batch=batch)


def run_training_stage(settings: TrainSettings, items_path: str | Path, order_path: str | Path, out: str | Path, *,
                       adaptive: AdaptiveSettings | None = None, paths_from: str | Path | None = None,
                       split: str | None = None, resume: bool = False, progress: bool = False) -> dict[str, Any]:
    """Train ``settings.model`` on the items of ``items_path`` into the run folder ``out``: the training stage.

    Without ``adaptive`` the steps are the order file's plan (:func:`medtune.training.stage.run_training`); with
    it they are decided during training (:func:`run_adaptive_training`, the order giving the candidate pool and
    the number of steps). ``paths_from``: the folder the adaptive settings' relative file paths are read from
    (default: the working directory); ``config.json`` records them as given, so a run whose inputs lie beside it
    (the grid's b table, ``../ability_b.parquet`` from the run folder) can be moved with them.

    Returns ``run_training``'s summary, plus ``adaptive`` for an adaptive run.
    """
    if adaptive is None:
        from medtune.training.stage import run_training

        return run_training(settings, Path(items_path), Path(order_path), Path(out), split=split, resume=resume,
                            progress=progress)
    return run_adaptive_training(settings, items_path, adaptive, out, order_path=order_path, paths_from=paths_from,
                                 split=split, resume=resume, progress=progress)


def run_adaptive_training(settings: TrainSettings, items_path: str | Path, adaptive_settings: AdaptiveSettings,
                          out: str | Path, *, order_path: str | Path, paths_from: str | Path | None = None,
                          split: str | None = None, resume: bool = False, progress: bool = False) -> dict[str, Any]:
    """Train like :func:`medtune.training.stage.run_training`, the steps decided by ``adaptive_settings``.

    ``paths_from`` as for :func:`run_training_stage`. Returns ``run_training``'s summary plus ``adaptive``: the
    strategy and :func:`scoring_overhead`.
    """
    from medtune.adaptive.decisions import read_decisions
    from medtune.schema import read_items
    from medtune.training.data import read_order
    from medtune.training.runlog import read_log
    from medtune.training.stage import run_training, select_training_items

    items_path, out = Path(items_path), Path(out)
    all_items = list(read_items(items_path))
    items, _ = select_training_items(all_items, split, file=items_path)
    order = read_order(order_path)
    planner = build_planner(settings, paths_read_from(adaptive_settings, paths_from), items, all_items, order,
                            items_path, record=adaptive_settings)
    summary = run_training(settings, items_path, Path(order_path), out, split=split, resume=resume,
                           progress=progress, planner=planner)
    decisions = read_decisions(out)
    summary["adaptive"] = {"strategy": adaptive_settings.strategy, **scoring_overhead(decisions, read_log(out))}
    return summary


def scoring_overhead(decisions: list[dict[str, Any]], log: list[dict[str, Any]]) -> dict[str, Any]:
    """The decision points' scoring time against the training steps' time (from the run's two logs).

    ``score_share`` is scoring / (scoring + steps); ``periodic_share`` leaves out the first decision, which
    scores the whole pool once on the base model (a one-off, like precomputing difficulty) while the later ones
    re-score ``rescore`` × the items each trains.
    """
    times = [float(d.get("timing", {}).get("score_seconds", 0.0)) for d in decisions]
    train_s = sum(float(r.get("time", 0.0)) for r in log)

    def share(score: float) -> float | None:
        return round(score / (score + train_s), 4) if score + train_s else None

    return {"decisions": len(decisions), "score_seconds": round(sum(times), 3),
            "first_score_seconds": round(times[0], 3) if times else 0.0, "step_seconds": round(train_s, 3),
            "score_share": share(sum(times)), "periodic_share": share(sum(times[1:]))}

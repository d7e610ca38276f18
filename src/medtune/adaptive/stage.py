"""``run_adaptive_training``: train with the next items chosen during training by an adaptive strategy.

The order file still gives the candidate pool (every id it plans, in its order) and the number of optimizer
steps (what its fixed plan would train, so an adaptive run and its fixed-order baseline take as many steps of
the same global batch and the same learning-rate schedule). The strategy decides which of the pool's items fill
those steps, every ``every`` steps, from the model as it is then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from medtune.adaptive.planner import AdaptivePlanner
from medtune.adaptive.scores import scoring_mode
from medtune.adaptive.strategies import get_adaptive
from medtune.errors import ConfigError, InputError
from medtune.schema import Item
from medtune.settings import Settings
from medtune.training.config import TrainConfig


class AdaptiveSettings(Settings):
    """How an adaptive run decides its items (written to ``config.json`` under ``adaptive``)."""

    strategy: str = Field(..., description="adaptive strategy: ability, self-paced, learnability, rho, or a "
                                           "registered name")
    options: dict[str, Any] = Field(default_factory=dict, description="the strategy's options")
    every: int = Field(4, ge=1, description="decide the next items every N optimizer steps")
    anchors: list[str] = Field(default_factory=list, description="anchor items for the ability estimate: an items "
                                                                 "file, or ids of the items file")
    difficulty: str | None = Field(None, description="difficulty.parquet giving each item's difficulty (ability)")
    difficulty_column: str = Field("irt_b", description="column of the difficulty file used as b")
    anchor_mode: Literal["auto", "letter", "option"] = Field(
        "auto", description="how anchors are scored (auto: letter for a letter target, option text otherwise)")
    score_batch: int = Field(16, ge=1, description="items per scoring batch at a decision point")


def pool_and_steps(order: dict[str, Any], config: TrainConfig) -> tuple[list[str], int]:
    """The candidate pool (the order's ids, first appearance first) and the number of steps its plan trains."""
    from medtune.training.data import plan_steps, planned_epochs

    epochs = planned_epochs(order, config.epochs)
    pool = list(dict.fromkeys(i for e in epochs for i in e))
    return pool, len(plan_steps(epochs, config.global_batch, config.max_steps))


def _anchor_items(spec: list[str], all_items: list[Item], items_path: Path) -> list[Item]:
    from medtune.schema import read_items

    if len(spec) == 1 and Path(spec[0]).expanduser().exists():
        return list(read_items(Path(spec[0]).expanduser()))
    by_id = {it.id: it for it in all_items}
    ids = [i.strip() for s in spec for i in s.split(",") if i.strip()]
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise InputError(f"anchor id '{unknown[0]}' is not in the items file (and is not a file)", file=items_path,
                         field="anchors")
    return [by_id[i] for i in ids]


def build_planner(config: TrainConfig, adaptive: AdaptiveSettings, items: list[Item], all_items: list[Item],
                  order: dict[str, Any], items_path: Path) -> AdaptivePlanner:
    """The planner of ``adaptive`` for a run of ``config`` on ``items`` (the training split) and ``order``."""
    from medtune.orders.inputs import read_difficulty_table

    strategy = get_adaptive(adaptive.strategy, adaptive.options)
    pool, total = pool_and_steps(order, config)
    difficulty, anchors, anchor_b = None, [], []
    if "b" in strategy.needs:
        if adaptive.difficulty is None:
            raise ConfigError(f"adaptive strategy '{strategy.name}' needs item difficulties: give --difficulty "
                              "difficulty.parquet (medtune difficulty)")
        table = read_difficulty_table(adaptive.difficulty, adaptive.difficulty_column)
        difficulty = {i: r["difficulty"] for i, r in table.rows.items()}
        missing = [i for i in pool if difficulty.get(i) is None]
        if missing:
            raise InputError(f"item '{missing[0]}' has no {adaptive.difficulty_column} ({len(missing)} training "
                             "items lack one)", file=adaptive.difficulty, field=adaptive.difficulty_column)
    if "theta" in strategy.needs:
        if not adaptive.anchors:
            raise ConfigError(f"adaptive strategy '{strategy.name}' estimates ability on anchor items: give "
                              "--anchors ITEMS_FILE or --anchors ID,ID,...")
        anchors = _anchor_items(adaptive.anchors, all_items, items_path)
        assert difficulty is not None
        lacking = [a.id for a in anchors if difficulty.get(a.id) is None]
        if lacking:
            raise InputError(f"anchor item '{lacking[0]}' has no {adaptive.difficulty_column}",
                             file=adaptive.difficulty, field=adaptive.difficulty_column)
        anchor_b = [difficulty[a.id] for a in anchors]
    mode = scoring_mode(config.target) if adaptive.anchor_mode == "auto" else adaptive.anchor_mode
    return AdaptivePlanner(strategy, every=adaptive.every, items={it.id: it for it in items}, pool=pool,
                           total_steps=total, global_batch=config.global_batch, run_seed=config.seed,
                           target=config.target, template=config.template, difficulty=difficulty, anchors=anchors,
                           anchor_b=anchor_b, anchor_mode=mode, score_batch=adaptive.score_batch,
                           settings={"settings": adaptive.to_dict()})


def run_adaptive_training(settings: TrainConfig, items_path: str | Path, adaptive_settings: AdaptiveSettings,
                          out: str | Path, *, order_path: str | Path, split: str | None = None, resume: bool = False,
                          progress: bool = False) -> dict[str, Any]:
    """Train like :func:`medtune.training.stage.run_training`, the steps decided by ``adaptive_settings``.

    Returns ``run_training``'s summary plus ``adaptive``: the number of decisions, the seconds spent scoring at
    decision points, the seconds of the training steps, and the scoring's share of their sum.
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
    planner = build_planner(settings, adaptive_settings, items, all_items, order, items_path)
    summary = run_training(settings, items_path, Path(order_path), out, split=split, resume=resume,
                           progress=progress, planner=planner)
    decisions = read_decisions(out)
    score_s = sum(float(d.get("timing", {}).get("score_seconds", 0.0)) for d in decisions)
    train_s = sum(float(r.get("time", 0.0)) for r in read_log(out))
    summary["adaptive"] = {"strategy": adaptive_settings.strategy, "decisions": len(decisions),
                           "score_seconds": round(score_s, 3), "step_seconds": round(train_s, 3),
                           "score_share": round(score_s / (score_s + train_s), 4) if score_s + train_s else None}
    return summary

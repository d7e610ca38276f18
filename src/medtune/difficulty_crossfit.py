"""Cross-fitted difficulty: the folds and the short fine-tunes behind an ensemble member that never scores an item
with a model that trained on it.

The difficulty stage (:func:`medtune.difficulty_stage.crossfit_scores`) decides what is scored, caches a repeat's
rows and writes its fold record; this module holds what a repeat is made of, kept apart so the one property that
makes cross-fitted difficulty honest (an item's score comes from a fine-tune that did not train on it) lives in one
small place: the split (:func:`fold_of`, stable per seed and id), a fine-tune's training settings
(:func:`crossfit_train_config`), one repeat (:func:`_crossfit_repeat`) and where its fold record goes
(:func:`crossfit_folds_path`). It imports neither the stage nor model code at import time.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import Field

from medtune.errors import InputError
from medtune.settings import Settings

if TYPE_CHECKING:
    from medtune.schema import Item
    from medtune.training.config import TrainSettings

CROSSFIT_FOLD_SEED = 1000  # repeat r splits the items with seed 1000 + r
CROSSFIT_FOLDS_FORMAT = "medtune.crossfit-folds/1"


class CrossfitSettings(Settings):
    """An ensemble of short fine-tunes, each scoring only the items it did not train on (cross-fitting).

    For a model that knows facts but not the exam format (the demo's pretrained tiny model is at chance
    before fine-tuning), difficulty must come from models that learned the format: each repeat splits the
    items into ``folds``, fine-tunes the base on all folds but one and scores the held-out fold, giving one
    ensemble member (a full column of expected accuracies) per repeat.
    """

    model: str | None = Field(None, description="Base model to fine-tune: a grid model name or a model spec "
                              "(default: the grid's first model, else the first ensemble member).")
    folds: int = Field(2, ge=2, description="Folds per repeat: each fine-tune trains on all folds but one.")
    repeats: int = Field(2, ge=1, description="Repeats (one ensemble member each, its own fold split).")
    method: str = Field("lora", description="Fine-tuning method of the short fine-tunes.")
    max_steps: int = Field(100, ge=1, description="Optimizer steps of each short fine-tune.")
    lr: float | None = Field(None, gt=0, description="Learning rate (default: the training settings' lr).")


def fold_of(item_id: str, seed: int, folds: int) -> int:
    """A stable fold per (seed, id): the same split on every machine and run, whatever the item order."""
    digest = hashlib.sha256(f"{seed}:{item_id}".encode()).digest()
    return int(int.from_bytes(digest[:8], "big") / 2**64 * folds)


def _training_dict(training: TrainSettings | Mapping[str, Any] | None) -> dict[str, Any]:
    if training is None:
        return {}
    if isinstance(training, Mapping):
        return dict(training)
    return training.to_dict()


def crossfit_train_config(training: TrainSettings | Mapping[str, Any] | None, cross: CrossfitSettings,
                          base_spec: str, seed: int) -> TrainSettings:
    """The training config of one short fine-tune: the training settings, then the crossfit's own.

    The crossfit's method, steps and learning rate, the base model and the repeat's seed win over
    ``training``, which wins over its preset (medtune.training's one precedence rule).
    """
    from medtune.training.config import resolve_training_settings

    own = {"method": cross.method, "model": base_spec, "seed": seed, "max_steps": cross.max_steps,
           **({"lr": cross.lr} if cross.lr else {})}
    return resolve_training_settings(_training_dict(training), own, where="difficulty.crossfit")


def crossfit_folds_path(predictions: Path) -> Path:
    """The fold record of a repeat's score file: ``<name>.folds.json`` beside ``<name>.parquet``."""
    return predictions.with_name(f"{predictions.name.removesuffix('.parquet')}.folds.json")


def _crossfit_repeat(items: Sequence[Item], cross: CrossfitSettings, base_spec: str, r: int, *,
                     training: TrainSettings | Mapping[str, Any] | None, progress: bool,
                     **score_kwargs: Any) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """One repeat's scorer rows over all items, and per fold ``{fold, steps, trained_ids, scored_ids}``.

    ``trained_ids`` come from the fine-tune's run log (the ids its optimizer steps saw), not from the split, so
    the record shows what the model really learned from.
    """
    from medtune.chat_format import recorded_format
    from medtune.orders.inputs import order_items
    from medtune.orders.plan import build_order
    from medtune.run_record import read_config_json
    from medtune.scoring import score_items
    from medtune.training import train
    from medtune.training.export import load_trained
    from medtune.training.runlog import read_log

    folds = [fold_of(it.id, CROSSFIT_FOLD_SEED + r, cross.folds) for it in items]
    frames = []
    record: list[dict[str, Any]] = []
    for f in range(cross.folds):
        train_items = [it for it, k in zip(items, folds, strict=True) if k != f]
        held = [it for it, k in zip(items, folds, strict=True) if k == f]
        if not held:
            continue
        if not train_items:
            raise InputError(f"crossfit: fold {f} of repeat {r} leaves no training item")
        config = crossfit_train_config(training, cross, base_spec, seed=r)
        order = build_order(order_items(train_items), "random", r, epochs=config.epochs or 1)
        tmp = Path(tempfile.mkdtemp(prefix="medtune-crossfit-"))
        try:
            train(config, train_items, order, tmp / "run", progress=progress)
            steps = read_log(tmp / "run")
            loaded = load_trained(tmp / "run", dtype="auto")  # on the GPU in bf16 where there is one; fp32 on a CPU
            # the held-out fold is scored in the chat format the fine-tune trained in (chat: auto resolved by the run)
            chat = recorded_format((read_config_json(tmp / "run") or {}).get("chat"))
            frame = score_items(loaded, held, progress=progress, **{"chat": chat, **score_kwargs})
            del loaded
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        frames.append(frame)
        record.append({"fold": f, "steps": len(steps), "trained_ids": sorted({i for s in steps for i in s["ids"]}),
                       "scored_ids": [str(i) for i in frame["id"]]})
    by_id = pd.concat(frames, ignore_index=True).set_index("id")
    return by_id.loc[[it.id for it in items]].reset_index(), record

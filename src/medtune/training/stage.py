"""The training stage: ``run_training(settings, items, order, out)`` — what ``medtune train`` and the grid call.

It reads the stage's input artifacts (the items file, the order file, the textbook beside the items), picks the
training split when the items file holds several (so a file with train and test questions never trains on the
test set by accident), runs :func:`medtune.training.train` and returns a JSON-able summary with a reference to
the trained weights (``model_ref``), which the evaluation stage reads.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from medtune.errors import InputError
from medtune.training.config import TrainConfig

TRAIN_SPLIT = "train"
ALL_SPLITS = "all"


def select_training_items(items: list[Any], split: str | None, *, file: Path | None = None) -> tuple[list[Any], str]:
    """The items to train on and a note saying what was taken.

    ``split=None`` means: the ``train`` split when the file holds several splits, every item otherwise;
    ``split="all"`` takes every item whatever its split (a grid's training set is all of its data set).
    """
    counts = Counter(it.split for it in items)
    if split == ALL_SPLITS:
        return items, f"all {len(items)} items"
    if split is None:
        if len(counts) <= 1:
            return items, f"all {len(items)} items"
        if TRAIN_SPLIT not in counts:
            raise InputError(f"the items file holds the splits {dict(counts)} and none is '{TRAIN_SPLIT}'; "
                             "name the split to train on (--split)", file=file)
        split = TRAIN_SPLIT
    kept = [it for it in items if it.split == split]
    if not kept:
        raise InputError(f"no items in split '{split}' (the file holds {dict(counts)})", file=file, field="split")
    others = {k: v for k, v in counts.items() if k != split}
    note = f"split '{split}': {len(kept)} items" + (f" (left out: {others})" if others else "")
    return kept, note


def run_training(settings: TrainConfig, items_path: Path, order_path: Path, out: Path, *, split: str | None = None,
                 resume: bool = False, progress: bool = False, planner: Any = None) -> dict[str, Any]:
    """Fine-tune ``settings.model`` on the items of ``items_path`` in the order of ``order_path``; writes ``out``.

    Returns ``steps``, ``final_loss``, ``tokens``, ``train_seconds``, ``split`` (what was trained on),
    ``model_ref`` (the trained weights, relative to ``out``'s parent so a stored stage folder can move) and
    ``train_config`` (the resolved settings). ``planner`` (a :class:`medtune.training.planner.StepPlanner`)
    decides the steps during training instead of the order file's fixed plan (see :mod:`medtune.adaptive`).
    """
    from medtune.schema import read_items
    from medtune.textbook import read_textbook
    from medtune.training.data import read_order
    from medtune.training.methods import get_method
    from medtune.training.trainer import train

    items_path, order_path, out = Path(items_path), Path(order_path), Path(out)
    items, note = select_training_items(read_items(items_path), split, file=items_path)
    order = read_order(order_path)
    result = train(settings, items, order, out, textbook=read_textbook(items_path), resume=resume,
                   progress=progress, items_path=items_path, order_path=order_path, planner=planner)
    spec = get_method(settings.method)
    home = out.parent

    def rel(p: str | Path | None) -> str | None:
        if p is None:
            return None
        p = Path(p)
        return str(p.relative_to(home)) if p.is_absolute() and p.is_relative_to(home) else str(p)

    import json

    meta = json.loads((out / "config.json").read_text(encoding="utf-8"))
    out_dir = Path(result.output_dir) if result.output_dir else None
    ref = {"adapter": rel(out_dir) if spec.is_adapter else None,
           "model_dir": None if spec.is_adapter else rel(out_dir),
           "base": rel(meta.get("base_model")) if spec.is_adapter else None,
           "method": settings.method,
           "train_dtype": settings.resolved_dtype(),
           "base_quantization": spec.base_quantization}
    return {"steps": result.steps, "final_loss": float(result.losses[-1]) if result.losses else None,
            "tokens": result.tokens, "train_seconds": round(result.seconds, 3), "split": note, "model_ref": ref,
            "train_config": settings.to_dict()}

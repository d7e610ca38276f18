"""The training stage: ``run_training(settings, items, order, out)`` — what ``medtune train`` and the grid call.

It reads the stage's input artifacts (the items file, the order file, the textbook beside the items), picks the
training split when the items file holds several (so a file with train and test questions never trains on the
test set by accident), runs :func:`medtune.training.train` and returns a JSON-able summary with a reference to
the trained weights (``model_ref``), which the evaluation stage reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from medtune.errors import InputError, MedtuneError
from medtune.run_record import read_run_record
from medtune.training.config import TrainSettings

TRAIN_SPLIT = "train"
ALL_SPLITS = "all"
# The GPUs a grid cell was given (set by the grid's executors); more than one: the cell trains on all of them.
CELL_GPUS_ENV = "MEDTUNE_CELL_GPUS"
SETTINGS_NAME = "launch_settings.json"


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


def run_training(settings: TrainSettings, items_path: Path, order_path: Path, out: Path, *, split: str | None = None,
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
    nproc = cell_processes(settings, planner)
    if nproc > 1:
        result = launch_processes(settings, items_path, order_path, out, nproc=nproc, split=split, resume=resume)
    else:
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

    meta = read_run_record(out)
    out_dir = Path(result.output_dir) if result.output_dir else None
    ref = {"adapter": rel(out_dir) if spec.is_adapter else None,
           "model_dir": None if spec.is_adapter else rel(out_dir),
           "base": rel(meta.get("base_model")) if spec.is_adapter else None,
           "method": settings.method,
           "train_dtype": settings.resolved_dtype(),
           "base_quantization": spec.base_quantization}
    summary = {"steps": result.steps, "final_loss": float(result.losses[-1]) if result.losses else None,
               "tokens": result.tokens, "train_seconds": round(result.seconds, 3), "split": note, "model_ref": ref,
               "train_config": settings.to_dict()}
    if meta.get("validation"):  # the best validation, and where early stopping ended the run
        summary["validation"] = {k: meta["validation"].get(k) for k in
                                 ("metric", "n_items", "best_step", "best", "stopped_early", "weights")}
    return summary


def cell_processes(settings: TrainSettings, planner: Any = None) -> int:
    """How many processes this training runs as: one per GPU the grid gave the cell (``MEDTUNE_CELL_GPUS``), or
    one when already launched by ``torchrun``, for a staged method (KnowTuning) or an adaptive planner (both
    decide on one process)."""
    from medtune.training.methods import MethodSpec, get_method

    wanted = int(os.environ.get(CELL_GPUS_ENV) or 1)
    if wanted <= 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1 or planner is not None:
        return 1
    if type(get_method(settings.method)).train_run is not MethodSpec.train_run:
        return 1
    return wanted


def launch_processes(settings: TrainSettings, items_path: Path, order_path: Path, out: Path, *, nproc: int,
                     split: str | None, resume: bool) -> Any:
    """Run this stage as ``nproc`` processes under ``torchrun`` (each on its own GPU: DDP or FSDP, see
    :mod:`medtune.training.placement`) and return what one process would: the run's steps, losses and weights.

    ``--standalone`` picks a free port, so several cells on one node never collide.
    """
    from medtune.training.methods import get_method
    from medtune.training.result import TrainResult
    from medtune.training.runlog import read_log

    out.mkdir(parents=True, exist_ok=True)
    settings_path = out / SETTINGS_NAME
    settings_path.write_text(json.dumps(settings.to_dict()), encoding="utf-8")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               "-m", "medtune.training.stage", "--settings", str(settings_path), "--items", str(items_path),
               "--order", str(order_path), "--out", str(out)]
    if split is not None:
        command += ["--split", split]
    if resume:
        command.append("--resume")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-12:]
        raise MedtuneError(f"training on {nproc} processes failed (exit {done.returncode}):\n" + "\n".join(tail))
    log = read_log(out)
    return TrainResult(out, None, None, len(log), [float(r["loss"]) for r in log], sum(r["tokens"] for r in log),
                       sum(r["time"] for r in log), out / get_method(settings.method).output_name)


def _main(argv: list[str] | None = None) -> None:
    """The entry each process of :func:`launch_processes` runs."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m medtune.training.stage")
    parser.add_argument("--settings", required=True)
    parser.add_argument("--items", required=True)
    parser.add_argument("--order", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--split", default=None)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    settings = TrainSettings.from_dict(json.loads(Path(args.settings).read_text(encoding="utf-8")), where=args.settings)
    run_training(settings, Path(args.items), Path(args.order), Path(args.out), split=args.split, resume=args.resume)


if __name__ == "__main__":
    _main()

"""The in-training accuracy check: the model being trained answers a few anchor items, the anchors estimate
its accuracy on the whole test set (:mod:`medtune.anchors`), and the estimate goes to ``RUN_DIR/anchor_eval.jsonl``.

Why anchors: scoring a full test set every few hundred steps costs as much as the training between the checks;
``k`` anchor items chosen by IRT from known models' responses (``anchors.json``) give the full-test accuracy with
a 95 % interval for the cost of ``k`` items.

What a check does (``TrainSettings.eval_anchors``, every ``eval_every`` optimizer steps and after the last one):

- the anchor items are scored the way :mod:`medtune.training.scores` scores the model being trained (the model
  wrapped as a scoring backend, option text for an ``option`` target, the letter otherwise, the run's prompt
  template), under ``torch.inference_mode``;
- training is unchanged by it: no gradients, every module's train/eval mode put back as it was, torch's random
  number generators restored (eval mode already draws no dropout numbers; the restore makes it a guarantee);
- its time is its own (``seconds``), never part of a step's ``time`` in ``train_log.jsonl``;
- lines are appended, flushed and fsynced one at a time; a resume from the checkpoint of step ``S`` rewrites the
  file atomically with the lines of steps ``<= S``, so a resumed run's log equals an uninterrupted one's (a check
  runs before the checkpoint of its step is written, so a checkpoint never outlives its step's line).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtune.errors import InputError

log = logging.getLogger(__name__)

ANCHOR_EVAL_NAME = "anchor_eval.jsonl"
# Items per scoring batch (as an adaptive decision point scores them).
SCORE_BATCH = 16
# Bootstrap draws of the p-IRT / gp-IRT intervals: their width settles well before this.
N_BOOT = 1000
REQUIRED = ("step", "estimator", "estimate", "low", "high")


@dataclass
class AnchorCheck:
    """The anchor set, its items, and how to score and estimate them (built and checked before training)."""

    anchor_set: Any
    items: list[Any]
    anchors_path: Path
    items_path: Path
    split: str | None
    every: int | None
    estimator: str
    mode: str
    template: str
    seed: int
    anchors_trained: int = 0
    path: Path | None = None
    key: str = "anchor_eval"  # where describe() goes in config.json (the loop's StepHook protocol)
    chat: Any = None  # the run's chat format (medtune.chat_format), set by the training loop

    @classmethod
    def from_config(cls, config: Any, *, training_ids: set[str] | None = None) -> AnchorCheck | None:
        """The check ``config`` asks for (``None`` without ``eval_anchors``), its inputs read and checked now.

        An unreadable anchors file, or an anchor id missing from ``eval_items``, is an ``InputError`` naming the
        file (and the id) before any model is loaded. Anchors that are also training items (``training_ids``)
        are counted and warned about: their answers say how well the model learnt them, not its test accuracy.
        """
        from medtune.anchors.artifact import anchor_items, read_anchors
        from medtune.training.scores import scoring_mode

        if config.eval_anchors is None:
            return None
        anchors_path, items_path = Path(config.eval_anchors).expanduser(), Path(config.eval_items).expanduser()
        anchor_set = read_anchors(anchors_path)
        items = anchor_items(items_path, anchor_set, split=config.eval_split)
        trained = sorted(set(anchor_set.anchor_ids) & (training_ids or set()))
        if trained:
            log.warning("%d of the %d anchor items are also training items (first: %r): the estimate measures "
                        "them learnt, not the test accuracy; choose the anchors on held-out items",
                        len(trained), anchor_set.k, trained[0])
        return cls(anchor_set=anchor_set, items=items, anchors_path=anchors_path, items_path=items_path,
                   split=config.eval_split, every=config.eval_every, estimator=config.eval_estimator,
                   mode=scoring_mode(config.target), template=config.template, seed=config.seed,
                   anchors_trained=len(trained))

    def describe(self) -> dict[str, Any]:
        """JSON-able settings written under ``anchor_eval`` in ``config.json``."""
        return {"anchors": str(self.anchors_path), "items": str(self.items_path), "split": self.split,
                "every": self.every, "estimator": self.estimator, "mode": self.mode, "template": self.template,
                "k": self.anchor_set.k, "n_items": self.anchor_set.n_items, "anchor_method": self.anchor_set.method,
                "n_boot": N_BOOT, "seed": self.seed, "anchors_in_training": self.anchors_trained,
                "log": ANCHOR_EVAL_NAME}

    def tracked(self, record: dict[str, Any]) -> dict[str, float]:
        """What the experiment trackers receive of a check's record."""
        return {"anchor_estimate": float(record["estimate"])}

    def due(self, step: int, total_steps: int) -> bool:
        """Whether the check runs after optimizer step ``step`` (every ``every`` steps, and after the last)."""
        return step == total_steps or (self.every is not None and step % self.every == 0)

    def resume(self, run_dir: str | Path, step: int) -> list[dict[str, Any]]:
        """Prepare to continue after ``step`` steps (0: a fresh run): keep the log's lines of steps ``<= step``."""
        self.path = Path(run_dir) / ANCHOR_EVAL_NAME
        return keep_anchor_evals_through(self.path, step)

    def run(self, model: Any, tokenizer: Any, *, step: int, epoch: int) -> dict[str, Any]:
        """Score the anchors with ``model`` as it is now, estimate, append the record and return it."""
        import torch

        from medtune.anchors.estimate import estimate_all
        from medtune.training.scores import anchor_answers, backend_for, untouched

        if self.path is None:
            raise RuntimeError("AnchorCheck.resume(run_dir, step) must be called before run")
        t0 = time.perf_counter()
        with untouched(model), torch.inference_mode():
            answers = anchor_answers(backend_for(model, tokenizer), self.items, mode=self.mode,
                                     template=self.template, batch=SCORE_BATCH, chat=self.chat)
        score_s = time.perf_counter() - t0
        correct = {it.id: a for it, a in zip(self.items, answers, strict=True)}
        results = estimate_all(self.anchor_set, correct, n_boot=N_BOOT, seed=self.seed)
        chosen = results[self.estimator]
        seconds = time.perf_counter() - t0
        record = {"step": step, "epoch": epoch, "estimator": self.estimator, "estimate": chosen["estimate"],
                  "low": chosen["ci_low"], "high": chosen["ci_high"], "se": chosen["se"], "k": self.anchor_set.k,
                  "n_items": self.anchor_set.n_items, "correct": int(sum(answers)),
                  "anchor_accuracy": chosen["anchor_accuracy"], "theta": chosen["theta"],
                  "theta_se": chosen["theta_se"], "estimates": {m: r["estimate"] for m, r in results.items()},
                  "answers": answers, "seconds": round(seconds, 6), "score_seconds": round(score_s, 6),
                  "wall": time.time()}
        append_anchor_eval(self.path, record)
        return record


def anchor_check_hook(config: Any, *, training_ids: set[str] | None = None) -> AnchorCheck | None:
    """The step hook :func:`medtune.training.train` finds by name (``training.hooks.SETTINGS_HOOKS``): the check a
    run's settings ask for, so training reaches it without importing this module."""
    return AnchorCheck.from_config(config, training_ids=training_ids)


def append_anchor_eval(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record durably (complete on disk before the checkpoint of its step is written)."""
    from medtune.io import append_jsonl_durable

    append_jsonl_durable(path, record)


def read_anchor_evals(path: str | Path) -> list[dict[str, Any]]:
    """The records of an anchor-check log (a run folder means its ``anchor_eval.jsonl``); a cut last line is
    skipped (a kill while writing), any other bad line is an ``InputError`` naming it."""
    from medtune.io import read_jsonl_log

    path = Path(path)
    if path.is_dir():
        path = path / ANCHOR_EVAL_NAME
    if not path.exists():
        raise InputError("anchor-check log not found (a run with eval_anchors writes one)", file=path)
    return read_jsonl_log(path, REQUIRED, "a check")


def keep_anchor_evals_through(path: str | Path, step: int) -> list[dict[str, Any]]:
    """Keep the checks made after at most ``step`` steps (rewritten atomically; 0 empties it); returns them."""
    from medtune.io import keep_jsonl_log

    path = Path(path)
    if not path.exists():
        return []
    return keep_jsonl_log(path, [r for r in read_anchor_evals(path) if int(r["step"]) <= step])

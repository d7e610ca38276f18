"""Score a harness task: every choice's log-likelihood after the harness's prompt, then ``acc`` and ``acc_norm``.

The two metrics are the harness's definitions: ``acc`` takes the choice with the largest summed log-likelihood of
``target_delimiter + choice``; ``acc_norm`` divides each log-likelihood by the choice's length in characters (the
choice alone, without the delimiter) first. Ties go to the first choice, as with numpy's argmax.

Rows are the scorer's (:data:`medtune.scoring.COLUMNS`) with ``mode`` ``"harness"``: ``pred``/``correct``/
``scores``/``probs`` are ``acc``'s (summed log-likelihoods and their softmax), ``scores_norm`` the length-normalised
scores, plus ``pred_norm``/``correct_norm`` (``acc_norm``), ``fewshot`` (the ids of the examples shown, in order)
and ``prompt`` (the context, byte for byte the harness's). Scoring streams to the output's part file, so an
interrupted run resumes with the same settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medtune.errors import InputError
from medtune.evaluation import accuracy_with_ci
from medtune.harness.fewshot import build_context, choice_continuations, fewshot_positions
from medtune.harness.tasks import HarnessTask
from medtune.schema import MCQItem
from medtune.scoring.backends import argmax, as_backend, softmax, token_cache
from medtune.scoring.engine import COLUMNS, score_in_batches
from medtune.scoring.store import ScoredRowStore

HARNESS_MODE = "harness"
HARNESS_COLUMNS = [*COLUMNS, "scores_norm", "pred_norm", "correct_norm", "fewshot", "prompt"]


def task_requests(task: HarnessTask, items: Sequence[MCQItem], pool: Sequence[MCQItem], num_fewshot: int,
                  seed: int | None) -> list[tuple[str, list[str], list[str]]]:
    """Per item, in order: (prompt, continuations, few-shot example ids), the few-shot examples drawn from
    ``pool`` as the harness draws them for the items in this order (the items' split is the evaluated one)."""
    docs = [task.doc(it) for it in items]
    pool_docs = [task.doc(it) for it in pool] if num_fewshot else []
    exclude = bool(items) and task.excludes_question(items[0].split)
    positions = fewshot_positions(task, docs, pool_docs, num_fewshot, seed, exclude=exclude)
    return [(build_context(task, doc, [pool_docs[p] for p in chosen]), choice_continuations(task, doc),
             [pool[p].id for p in chosen]) for doc, chosen in zip(docs, positions, strict=True)]


def choice_lengths(task: HarnessTask, item: MCQItem) -> list[int]:
    return [len(choice) for choice in task.choices(task.doc(item))]


def harness_row(task: HarnessTask, item: MCQItem, results: Sequence[tuple[float, int]], prompt: str,
                fewshot: list[str]) -> dict[str, Any]:
    """One prediction row from the ``(log-likelihood, tokens)`` of each choice."""
    doc = task.doc(item)
    gold = task.doc_to_target(doc)
    sums = [float(s) for s, _ in results]
    norms = [s / n for s, n in zip(sums, choice_lengths(task, item), strict=True)]
    pred, pred_norm = argmax(sums), argmax(norms)
    return {"id": item.id, "mode": HARNESS_MODE, "answer": gold, "pred": pred, "correct": pred == gold,
            "scores": sums, "probs": softmax(sums), "permutation": None, "generated": None, "scores_norm": norms,
            "pred_norm": pred_norm, "correct_norm": pred_norm == gold, "fewshot": fewshot, "prompt": prompt}


def score_task(model: Any, task: HarnessTask, items: Sequence[MCQItem], pool: Sequence[MCQItem] = (), *,
               num_fewshot: int = 0, fewshot_seed: int | None = 1234, batch_tokens: int | str = "auto",
               max_batch_size: int = 64, output: str | Path | None = None, progress: bool = False) -> pd.DataFrame:
    """Score ``items`` on ``task`` with ``model`` (a backend, a loaded model or a spec), ``num_fewshot`` examples
    from ``pool`` (the task's few-shot split) drawn with ``fewshot_seed``; rows in the items' order.

    ``output``: the predictions file, streamed to its part file as batches finish (resumable).
    """
    items = list(items)
    if not items:
        raise InputError(f"no items to score on task {task.name}")
    for i, it in enumerate(items):
        if not isinstance(it, MCQItem):
            raise InputError(f"task {task.name} scores multiple-choice items; item '{it.id}' is free text", record=i)
    backend = as_backend(model)
    if "option" not in backend.MODES and "letter" not in backend.MODES:
        raise InputError(f"backend '{backend.name}' gives no log-likelihoods, which harness tasks need")
    requests = task_requests(task, items, list(pool), num_fewshot, fewshot_seed)
    store = None
    if output is not None:
        store = ScoredRowStore(output, {"mode": HARNESS_MODE, "task": task.name, "num_fewshot": num_fewshot,
                                        "fewshot_seed": fewshot_seed, "model": str(backend.spec)})
    rows: dict[str, dict[str, Any]] = dict(store.rows) if store else {}
    todo = [i for i, it in enumerate(items) if it.id not in rows]
    if todo:
        def score(batch: list[int]) -> list[dict[str, Any]]:
            chosen = [todo[b] for b in batch]
            results = _loglikelihoods(backend, [(requests[i][0], c) for i in chosen for c in requests[i][1]])
            new, at = [], 0
            for i in chosen:
                n = len(requests[i][1])
                new.append(harness_row(task, items[i], results[at:at + n], requests[i][0], requests[i][2]))
                at += n
            return new

        def keep(new: list[dict[str, Any]]) -> None:
            if store:
                store.append(new)
            rows.update({r["id"]: r for r in new})

        score_in_batches(backend, [_cost(backend, requests[i][0], requests[i][1]) for i in todo],
                         [items[i].id for i in todo], score, keep, mode="option", batch_tokens=batch_tokens,
                         max_batch_size=max_batch_size, total=len(items), desc=f"scoring ({task.name})",
                         progress=progress)
    frame = pd.DataFrame([rows[it.id] for it in items], columns=HARNESS_COLUMNS)
    if store:
        store.finish(frame)
    return frame


def _loglikelihoods(backend: Any, pairs: list[tuple[str, str]]) -> list[tuple[float, int]]:
    """The backend's log-likelihoods of ``pairs``, one per pair (a backend that returns another count is an error)."""
    results = backend.loglikelihood(pairs)
    if len(results) != len(pairs):
        raise InputError(f"backend '{backend.name}' returned {len(results)} log-likelihoods for {len(pairs)} "
                         "continuations")
    return results


def _cost(backend: Any, prompt: str, conts: Sequence[str]) -> int:
    if backend.tokenizer is None:
        return max(1, len(prompt) // 4) * len(conts)
    cache = token_cache(backend.tokenizer)
    splits = [cache.split(prompt, c) for c in conts]
    return len(splits[0][0]) + sum(len(c) for _, c in splits)


def harness_metrics(frame: pd.DataFrame, task: HarnessTask, *, num_fewshot: int, fewshot_seed: int | None,
                    n_boot: int, seed: int) -> dict[str, Any]:
    """``acc`` and ``acc_norm`` with their bootstrap CIs, and how the task was run (for ``metrics.json``)."""
    return {
        "acc": accuracy_with_ci(frame["correct"].astype(float), n_boot=n_boot, seed=seed),
        "acc_norm": accuracy_with_ci(frame["correct_norm"].astype(float), n_boot=n_boot, seed=seed),
        "harness": {"task": task.name, "num_fewshot": num_fewshot, "fewshot_seed": fewshot_seed,
                    "fewshot_split": task.fewshot_split, "sampler": task.sampler, "test_split": task.test_split,
                    "harness_metrics": list(task.harness_metrics), "lm_eval_version": "0.4.13"},
    }

"""A suite of lm-evaluation-harness tasks (``medtune evaluate run ITEMS_DIR --suite open-medical-llm``).

A suite (:data:`medtune.harness.SUITES`) names tasks; ``ITEMS_DIR`` holds one items file per task, named after it
(``ITEMS_DIR/medqa_4options.parquet``, ``ITEMS_DIR/mmlu_anatomy.parquet``, ...), each with the task's test split and,
for few-shot runs, its few-shot split. Every file is checked before the model is loaded, and the model is loaded once
for all tasks. Each task is the evaluation stage's (:func:`medtune.evaluation_stage.run_harness_task`), written to
``OUT/<task>/`` (``predictions.parquet``, ``metrics.json``); ``OUT/summary.csv``, ``summary.md`` and
``summary.json`` hold one row per task (n, shots, ``acc`` and ``acc_norm`` with their 95 % CIs) and the unweighted
mean over the tasks, the figure the Open Medical-LLM leaderboard reports.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from medtune.errors import ConfigError, InputError
from medtune.evaluation_stage import EvalSettings, run_harness_task
from medtune.harness import suite_tasks
from medtune.io import atomic_path, write_json_atomic
from medtune.model_ref import as_model_ref, load_model
from medtune.settings import validate_settings

SUMMARY_COLUMNS = ("task", "n", "num_fewshot", "acc", "acc_ci_low", "acc_ci_high", "acc_norm", "acc_norm_ci_low",
                   "acc_norm_ci_high")


def suite_items(suite: str, items_dir: Path) -> dict[str, Path]:
    """Task → its items file in ``items_dir``; every missing file named in one error, before any work."""
    items_dir = Path(items_dir)
    if not items_dir.is_dir():
        raise InputError("a suite reads a folder with one items file per task (<task>.parquet)", file=items_dir)
    tasks = list(suite_tasks(suite))
    files = {task: items_dir / f"{task}.parquet" for task in tasks}
    missing = [f"{task}.parquet" for task, path in files.items() if not path.is_file()]
    if missing:
        raise InputError(f"suite {suite} needs one items file per task; missing: {', '.join(missing)}",
                         file=items_dir)
    return files


def run_suite(settings: EvalSettings | dict[str, Any], items_dir: Path, model: Any, out: Path, *,
              suite: str = "open-medical-llm", progress: bool = False, loaded: Any = None) -> dict[str, Any]:
    """Run every task of ``suite`` on its items file in ``items_dir``; write ``out/<task>/`` and the summary files.

    ``settings`` apply to every task (``num_fewshot``, ``fewshot_seed``, batching, precision...); its ``task`` must
    be unset. Returns the summary (``rows``, ``mean``, paths).
    """
    settings = validate_settings(EvalSettings, settings, "evaluation")
    if settings.task is not None:
        raise ConfigError(f"task: a suite runs its own tasks; leave task unset with --suite {suite}")
    files = suite_items(suite, items_dir)
    ref = as_model_ref(model)
    backend = loaded if loaded is not None else load_model(ref, settings)
    out = Path(out)
    rows = []
    for task, path in files.items():
        task_settings = settings.model_copy(update={"task": task})
        result = run_harness_task(task_settings, path, ref, out / task, progress=progress, loaded=backend)
        metrics = json.loads(Path(result["metrics"]).read_text(encoding="utf-8"))
        acc, norm = metrics["acc"], metrics["acc_norm"]
        rows.append({"task": task, "n": result["n"], "num_fewshot": settings.num_fewshot, "acc": acc["accuracy"],
                     "acc_ci_low": acc["ci_low"], "acc_ci_high": acc["ci_high"], "acc_norm": norm["accuracy"],
                     "acc_norm_ci_low": norm["ci_low"], "acc_norm_ci_high": norm["ci_high"]})
    mean = {key: sum(r[key] for r in rows) / len(rows) for key in ("acc", "acc_norm")}
    summary = {"suite": suite, "num_fewshot": settings.num_fewshot, "fewshot_seed": settings.fewshot_seed,
               "items": str(items_dir), "model": ref.describe(), "rows": rows, "mean": mean}
    write_summary(summary, out)
    return {**summary, "summary": str(out / "summary.json")}


def write_summary(summary: dict[str, Any], out: Path) -> None:
    """``summary.json`` (everything), ``summary.csv`` (one row per task) and ``summary.md`` (the table and the
    mean), each written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(summary["rows"])
    with atomic_path(out / "summary.csv", suffix=".csv") as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    lines = [f"# {summary['suite']} ({summary['num_fewshot']}-shot, seed {summary['fewshot_seed']})", "",
             "| task | n | acc [95% CI] | acc_norm [95% CI] |", "|---|---:|---:|---:|"]
    lines += [f"| {r['task']} | {r['n']} | {r['acc']:.4f} [{r['acc_ci_low']:.4f}, {r['acc_ci_high']:.4f}] | "
              f"{r['acc_norm']:.4f} [{r['acc_norm_ci_low']:.4f}, {r['acc_norm_ci_high']:.4f}] |"
              for r in summary["rows"]]
    lines += [f"| mean of {len(summary['rows'])} tasks | | {summary['mean']['acc']:.4f} | "
              f"{summary['mean']['acc_norm']:.4f} |", ""]
    with atomic_path(out / "summary.md", suffix=".md") as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    write_json_atomic(out / "summary.json", json.loads(json.dumps(summary, default=str)))

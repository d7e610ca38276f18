"""lm-evaluation-harness-identical tasks: the same prompts, few-shot examples, choices, ``acc`` and ``acc_norm``.

:mod:`~medtune.harness.tasks` holds the tasks and suites (registries), :mod:`~medtune.harness.fewshot` the
harness's few-shot sampling and prompt, :mod:`~medtune.harness.scoring` the scoring and the two metrics. The
evaluation stage runs a task when its settings name one (``task``, ``num_fewshot``, ``fewshot_seed``).
"""

from medtune.harness.scoring import HARNESS_MODE, harness_metrics, score_task, task_requests
from medtune.harness.tasks import SUITES, TASKS, HarnessTask, get_task, register_task, suite_tasks

__all__ = ["HARNESS_MODE", "SUITES", "TASKS", "HarnessTask", "get_task", "harness_metrics", "register_task",
           "score_task", "suite_tasks", "task_requests"]

"""Few-shot examples and prompts drawn exactly as lm-evaluation-harness 0.4.13 draws them.

The same seed must give the same examples in the same order as the harness, or a 5-shot medtune figure is not the
harness's 5-shot figure. The harness's rules, which this module follows:

- ``first_n`` (MMLU): the first ``k`` documents of the few-shot split, in the split's order, for every question;
- ``default``: one ``random.Random(seed)`` for the whole task, asked for ``k`` documents of the few-shot split per
  question, question after question in document order (so a question's examples depend on how many questions came
  before it). When the few-shot split is the test split, it draws ``k + 1`` and drops the evaluated document
  (every copy equal to it), keeping the first ``k``; if duplicates leave fewer than ``k`` it draws ``k`` again
  from the split without the document.

``random.Random.sample`` picks positions from the population's length alone, so drawing positions gives the same
documents as drawing the documents. The prompt is the task's description, then each example's text, target
delimiter, answer and few-shot delimiter, then the question's text; each choice is scored as the continuation
``target_delimiter + choice``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from medtune.errors import ConfigError
from medtune.harness.tasks import Doc, HarnessTask


def fewshot_positions(task: HarnessTask, docs: Sequence[Doc], pool: Sequence[Doc], k: int, seed: int | None, *,
                      exclude: bool = False) -> list[list[int]]:
    """Per document of ``docs`` (in order), the positions in ``pool`` of its ``k`` few-shot examples, in order;
    ``exclude``: leave every copy of the document itself out (:meth:`HarnessTask.excludes_question`)."""
    if k < 0:
        raise ConfigError(f"num_fewshot must be ≥ 0, got {k}")
    if k == 0:
        return [[] for _ in docs]
    need = k + 1 if exclude and task.sampler == "default" else k
    if need > len(pool):
        raise ConfigError(f"num_fewshot {k}: the few-shot split '{task.fewshot_split}' of task {task.name} has "
                          f"{len(pool)} items, {need} are needed")
    rnd = random.Random(seed)
    everything = range(len(pool))
    out: list[list[int]] = []
    for doc in docs:
        if task.sampler == "first_n":
            kept = [i for i in everything if not (exclude and pool[i] == doc)]
            if k > len(kept):
                raise ConfigError(f"num_fewshot {k}: task {task.name} has {len(kept)} few-shot items besides the "
                                  "question itself")
            out.append(kept[:k])
        elif not exclude:
            out.append(rnd.sample(everything, k))
        else:
            drawn = [i for i in rnd.sample(everything, k + 1) if pool[i] != doc][:k]
            if len(drawn) < k:
                rest = [i for i in everything if pool[i] != doc]
                if k > len(rest):
                    raise ConfigError(f"num_fewshot {k}: task {task.name} has {len(rest)} few-shot items besides "
                                      "the question itself")
                drawn = rnd.sample(rest, k)
            out.append(drawn)
    return out


def example_text(task: HarnessTask, doc: Doc) -> str:
    """A solved example: question, target delimiter, its answer, few-shot delimiter."""
    return task.doc_to_text(doc) + task.target_delimiter + task.answer_text(doc) + task.fewshot_delimiter


def build_context(task: HarnessTask, doc: Doc, examples: Sequence[Doc]) -> str:
    """The prompt of ``doc`` after ``examples``: what the harness logs as each request's context."""
    return task.description + "".join(example_text(task, ex) for ex in examples) + task.doc_to_text(doc)


def choice_continuations(task: HarnessTask, doc: Doc) -> list[str]:
    """The scored continuations of ``doc``: the target delimiter then each choice."""
    return [task.target_delimiter + choice for choice in task.choices(doc)]

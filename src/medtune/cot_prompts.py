"""Chain-of-thought prompts: the model reasons in words before it answers, in generate mode.

Two styles, built on any :class:`~medtune.prompts.MCQTemplate`:

- ``zero-shot`` (Kojima et al. 2022): the question as the template renders it, then the cue "Let's think step by
  step." after the answer prefix; the model writes its reasoning and, one hopes, a final statement such as
  "Therefore, the answer is C." (:mod:`medtune.answer_extraction` reads the last statement; an answer without one
  is counted as unparsed).
- ``few-shot`` (Wei et al. 2022): the template's instruction once, then worked examples, each a question with
  its answer written out as reasoning ("Let's think step by step." + the item's ``explanation`` + "Therefore,
  the answer is X."), then the question with the cue. The examples are items that carry an explanation, drawn
  once per run by a seed (:func:`draw_shots`), so every question of a run sees the same examples in the same
  order, shown with their options in the original order.

Reasoning needs room: :data:`COT_MAX_NEW_TOKENS` is the default generation budget with a chain of thought. The
model is stopped when it starts a new question of its own (:meth:`ChainOfThought.stop_strings`: a line opening
with the template's question label, e.g. "Question:").
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from medtune.errors import ConfigError
from medtune.prompts import LETTERS, MCQTemplate, get_template, letters_for, permuted_options
from medtune.schema import Item, MCQItem

CotStyle = Literal["none", "zero-shot", "few-shot"]
COT_STYLES: tuple[str, ...] = ("none", "zero-shot", "few-shot")
COT_CUE = "Let's think step by step."
COT_CONCLUSION = "Therefore, the answer is {letter}."
COT_MAX_NEW_TOKENS = 512
SHOT_SEPARATOR = "\n\n"
# Where few-shot examples come from when no split is named: the first of these the items file has with explanations.
SHOT_SPLITS: tuple[str, ...] = ("dev", "validation", "train")


def worked_answer(item: MCQItem) -> str:
    """A worked answer to ``item`` (options in their original order): the cue, its explanation, the conclusion."""
    if not item.explanation or not item.explanation.strip():
        raise ConfigError(f"cot_shots: item '{item.id}' has no explanation to build a worked answer from")
    return f"{COT_CUE} {item.explanation.strip()} {COT_CONCLUSION.format(letter=LETTERS[item.answer])}"


@dataclass(frozen=True)
class ChainOfThought:
    """How a question is prompted for a chain of thought: the style and, for ``few-shot``, the worked examples."""

    style: Literal["zero-shot", "few-shot"]
    shots: tuple[MCQItem, ...] = ()

    def __post_init__(self) -> None:
        if self.style not in ("zero-shot", "few-shot"):
            raise ConfigError(f"cot: unknown chain-of-thought style '{self.style}' (use zero-shot or few-shot)")
        if self.style == "few-shot" and not self.shots:
            raise ConfigError("cot_shots: few-shot chain of thought needs at least one worked example")

    def prompt(self, item: MCQItem, template: str | MCQTemplate, permutation: Sequence[int] | None = None) -> str:
        """The prompt for ``item`` (options shown in ``permutation``'s order), ending with the cue."""
        tpl = get_template(template)
        options, _ = permuted_options(item, permutation)
        if self.style == "zero-shot":
            return f"{tpl.render(item.question, options)} {COT_CUE}"
        bare = dataclasses.replace(tpl, instruction="")
        parts = []
        if tpl.instruction:
            letters = letters_for(len(options))
            parts.append(tpl.instruction.format(letters=", ".join(letters),
                                                quoted_letters=", ".join(f"'{x}'" for x in letters)).strip())
        parts += [f"{bare.render(s.question, s.options)} {worked_answer(s)}" for s in self.shots]
        parts.append(f"{bare.render(item.question, options)} {COT_CUE}")
        return SHOT_SEPARATOR.join(parts)

    def stop_strings(self, template: str | MCQTemplate) -> list[str]:
        """Where generation stops: a new line that opens a question the way the template does (none for a template
        whose questions have no label, such as ``mmlu``)."""
        label = get_template(template).question_format.split("{question}")[0].strip()
        return [f"\n{label}"] if label else []

    def describe(self) -> dict[str, object]:
        """What ``metrics.json`` and the scoring store record of it."""
        return {"style": self.style, "shots": [s.id for s in self.shots]}


def shot_split(items: Iterable[Item], requested: str | None) -> str:
    """The split few-shot examples are drawn from: ``requested``, else the first of :data:`SHOT_SPLITS` with items
    that carry an explanation."""
    if requested is not None:
        return requested
    explained = {it.split for it in items if isinstance(it, MCQItem) and it.explanation and it.explanation.strip()}
    for name in SHOT_SPLITS:
        if name in explained:
            return name
    raise ConfigError(f"cot_shots_split: few-shot chain of thought draws worked examples from multiple-choice items "
                      f"with an explanation in a {'/'.join(SHOT_SPLITS)} split, and there are none: name the items "
                      "(cot_shots_items) or the split (cot_shots_split)")


def draw_shots(pool: Iterable[Item], k: int, seed: int, *, split: str, exclude: Iterable[str] = ()) -> list[MCQItem]:
    """``k`` worked examples drawn by ``seed`` from the multiple-choice items of ``pool`` in ``split`` that carry
    an explanation, never one of ``exclude`` (the evaluated items). The draw depends only on the candidates' ids
    and the seed, not on the file's order."""
    excluded = set(exclude)
    candidates = sorted((it for it in pool if isinstance(it, MCQItem) and it.split == split and it.explanation
                         and it.explanation.strip() and it.id not in excluded), key=lambda it: it.id)
    if len(candidates) < k:
        raise ConfigError(f"cot_shots: few-shot chain of thought needs {k} worked examples, but split '{split}' has "
                          f"{len(candidates)} multiple-choice items with an explanation that are not evaluated")
    return random.Random(seed).sample(candidates, k)

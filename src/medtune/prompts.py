"""Prompt templates shared by scoring and training, so a model is evaluated on the format it learned.

A multiple-choice prompt ends just before the answer; the *completion* is what a model should produce
next: ``" B"`` in letter mode, ``" <option text>"`` in option mode, optionally followed by an explanation
for training. Letters are generated here from the option count; stored items never carry letters.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from medtune.errors import InputError
from medtune.schema import MAX_OPTIONS, MCQItem, QAItem

# The option letters, one per possible option (A-J): the only place they are written down. Loaders parse
# answer letters with them, prompts show them, letter scoring looks up their tokens.
LETTERS: str = string.ascii_uppercase[:MAX_OPTIONS]
CompletionTarget = Literal["letter", "letter+explanation", "option", "option+explanation"]


def letters_for(n_options: int) -> list[str]:
    if not 1 <= n_options <= len(LETTERS):
        raise InputError(f"cannot letter {n_options} options (at most {len(LETTERS)})")
    return list(LETTERS[:n_options])


@dataclass(frozen=True)
class MCQTemplate:
    """How a multiple-choice question is rendered.

    ``instruction`` may name ``{letters}`` ("A, B, C") or ``{quoted_letters}`` ("'A', 'B', 'C'", as Python
    prints a list of letters). The parts (instruction, question, each option, answer prefix) are joined by
    ``separator``; a part that ends or starts with a newline gives a blank line there.
    """

    name: str
    instruction: str
    question_format: str
    option_format: str
    answer_prefix: str
    show_options: bool = True
    separator: str = "\n"

    def render(self, question: str, options: Sequence[str]) -> str:
        letters = letters_for(len(options))
        parts = []
        if self.instruction:
            parts.append(self.instruction.format(letters=", ".join(letters),
                                                 quoted_letters=", ".join(f"'{x}'" for x in letters)))
        parts.append(self.question_format.format(question=question.strip()))
        if self.show_options:
            parts.extend(
                self.option_format.format(letter=letter, text=opt.strip())
                for letter, opt in zip(letters, options, strict=True)
            )
        parts.append(self.answer_prefix)
        return self.separator.join(parts)


# The prompt of Yang et al. 2024 (the orders study), with its "### Answer:" response template.
PAPER = MCQTemplate(
    name="paper",
    instruction=(
        "Answer the following multiple choice question by giving the most appropriate response. "
        "Answer should be one among [{letters}]."
    ),
    question_format="Question: {question}",
    option_format="{letter}) {text}",
    answer_prefix="### Answer:",
)
# Yang et al. 2024 as their code trains and evaluates: the same words as PAPER, with a blank line after the
# instruction and another before "### Answer:" (their completion-only collator trains on what follows "Answer:").
YANG2024 = MCQTemplate(
    name="yang2024",
    instruction=(
        "Answer the following multiple choice question by giving the most appropriate response. "
        "Answer should be one among [{letters}].\n"
    ),
    question_format="Question: {question}",
    option_format="{letter}) {text}",
    answer_prefix="\n### Answer:",
)
# Yang et al. 2024's difficulty scoring (measure_difficulty/baseline_script.py): one line, the letters written
# as Python prints a list, "Answer:" after the options; the letter's probability is read at the next token.
YANG2024_DIFFICULTY = MCQTemplate(
    name="yang2024-difficulty",
    instruction=(
        "Answer the following multiple choice question by giving the most appropriate response. "
        "The answer should be one of [{quoted_letters}]."
    ),
    question_format="Question: {question}",
    option_format="{letter}) {text}",
    answer_prefix="Answer:",
    separator=" ",
)
# The same, with the letters unquoted: the prompt recorded in the authors' LEK response files (the scores
# their LEK difficulty was computed from).
YANG2024_DIFFICULTY_LEK = MCQTemplate(
    name="yang2024-difficulty-lek",
    instruction=(
        "Answer the following multiple choice question by giving the most appropriate response. "
        "The answer should be one of [{letters}]."
    ),
    question_format="Question: {question}",
    option_format="{letter}) {text}",
    answer_prefix="Answer:",
    separator=" ",
)
# lm-evaluation-harness's MMLU prompt ("Q\nA. ..\nAnswer:").
MMLU = MCQTemplate(
    name="mmlu",
    instruction="",
    question_format="{question}",
    option_format="{letter}. {text}",
    answer_prefix="Answer:",
)
# For option-text scoring: the options are listed, and the model continues with the chosen option's text.
OPTIONS = MCQTemplate(
    name="options",
    instruction="",
    question_format="Question: {question}",
    option_format="{letter}) {text}",
    answer_prefix="Answer:",
)
# Cloze form: no options shown, the answer is scored as a continuation (as harnesses' "cloze" tasks).
CLOZE = MCQTemplate(
    name="cloze",
    instruction="",
    question_format="Question: {question}",
    option_format="",
    answer_prefix="Answer:",
    show_options=False,
)

TEMPLATES: dict[str, MCQTemplate] = {
    t.name: t for t in (PAPER, YANG2024, YANG2024_DIFFICULTY, YANG2024_DIFFICULTY_LEK, MMLU, OPTIONS, CLOZE)
}

# Free-text QA (the LoRA notebook's format).
QA_PROMPT = "Give an answer for the following medical question.\n\n### Question:\n{question}\n\n### Answer:\n"


def get_template(name: str | MCQTemplate) -> MCQTemplate:
    if isinstance(name, MCQTemplate):
        return name
    try:
        return TEMPLATES[name]
    except KeyError:
        raise InputError(f"unknown prompt template '{name}' (available: {', '.join(TEMPLATES)})") from None


def permuted_options(item: MCQItem, permutation: Sequence[int] | None) -> tuple[list[str], int]:
    """Options reordered so that shown position ``i`` holds original option ``permutation[i]``.

    Returns the shown options and the shown index of the correct answer.
    """
    if permutation is None:
        return list(item.options), item.answer
    if sorted(permutation) != list(range(len(item.options))):
        raise InputError(f"permutation {list(permutation)} is not a permutation of the options", record=item.id)
    shown = [item.options[j] for j in permutation]
    return shown, list(permutation).index(item.answer)


def mcq_prompt(item: MCQItem, template: str | MCQTemplate = PAPER, permutation: Sequence[int] | None = None) -> str:
    options, _ = permuted_options(item, permutation)
    return get_template(template).render(item.question, options)


def mcq_completion(
    item: MCQItem,
    target: CompletionTarget = "letter",
    permutation: Sequence[int] | None = None,
) -> str:
    """The text a model should produce after :func:`mcq_prompt` (starts with a space)."""
    options, answer = permuted_options(item, permutation)
    head = f" {LETTERS[answer]}" if target.startswith("letter") else f" {options[answer].strip()}"
    if target.endswith("+explanation") and item.explanation:
        head += "\n" + item.explanation.strip()
    return head


def qa_prompt(item: QAItem | MCQItem) -> str:
    return QA_PROMPT.format(question=item.question.strip())

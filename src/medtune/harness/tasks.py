"""Tasks that reproduce lm-evaluation-harness 0.4.13's medical multiple-choice tasks byte for byte.

A medtune accuracy can only be put beside a harness or Open Medical-LLM leaderboard figure when the model sees the
same text and is scored on the same continuations. Each :class:`HarnessTask` therefore holds what the harness's
task configuration says (``doc_to_text``, ``doc_to_choice``, ``doc_to_target``, ``description``, the target and
few-shot delimiters, the test and few-shot splits and the few-shot sampler), written afresh for medtune, and maps a
:class:`~medtune.schema.MCQItem` to the document the harness would read from the task's hub dataset (its columns:
``sent1``/``ending0-3``/``label`` for MedQA, ``question``/``opa-opd``/``cop`` for MedMCQA, ``QUESTION``/
``CONTEXTS``/``final_decision`` for PubMedQA, ``question``/``choices``/``answer`` for MMLU). The document is also
what the default sampler compares to leave the evaluated question out of its own few-shot examples.

Splits are medtune's split names (the ``split`` column of an items file): the harness's ``validation`` split of
MedMCQA is medtune's ``dev`` (the file the MedMCQA loader reads it from), the others keep their names.
Tasks are registered by name in :data:`TASKS` (a plugin adds one with :func:`register_task`); :data:`SUITES` names
groups of tasks (``open-medical-llm``: the nine tasks of the Open Medical-LLM leaderboard).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from medtune.errors import InputError
from medtune.registry import Registry
from medtune.schema import MCQItem

Doc = dict[str, Any]
Sampler = Literal["default", "first_n"]
LETTERS4 = ("A", "B", "C", "D")


@dataclass(frozen=True)
class HarnessTask:
    """One harness task: how an item becomes its document, prompt, choices and target.

    ``to_doc`` maps an item to the hub dataset's row (raising :class:`InputError` naming the field when the item
    cannot be one); ``doc_to_text`` is the question's prompt; ``choices`` the continuations' texts (after
    ``target_delimiter``); ``doc_to_target`` the index of the gold choice. ``test_split`` and ``fewshot_split`` are
    medtune split names; ``fewshot_split_named`` says whether the harness's configuration names its few-shot split
    (MMLU's ``fewshot_split: dev``) rather than falling back to the training split: only then can the evaluated split
    be the few-shot split, and the sampler leaves the evaluated document out of its examples
    (:meth:`excludes_question`).
    """

    name: str
    to_doc: Callable[[MCQItem], Doc]
    doc_to_text: Callable[[Doc], str]
    choices: Callable[[Doc], list[str]]
    doc_to_target: Callable[[Doc], int]
    test_split: str
    fewshot_split: str
    description: str = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    sampler: Sampler = "default"
    fewshot_split_named: bool = False
    harness_metrics: tuple[str, ...] = ("acc", "acc_norm")  # what the harness's own configuration reports
    subject: str | None = None  # an items file of several subjects: only items whose category is this one

    def doc(self, item: MCQItem, record: int | None = None) -> Doc:
        """The harness document of ``item``; a bad item is an :class:`InputError` naming its record and field."""
        try:
            return self.to_doc(item)
        except InputError as exc:
            raise InputError(f"{exc.reason} (item '{item.id}', task {self.name})", record=record,
                             field=exc.field) from None

    def excludes_question(self, test_split: str) -> bool:
        """Whether a question's own document is kept out of its few-shot examples when ``test_split`` is evaluated:
        the harness does so when its configured few-shot split is the test split."""
        return self.fewshot_split_named and test_split == self.fewshot_split

    def answer_text(self, doc: Doc) -> str:
        """The gold choice's text, as a few-shot example's answer."""
        return self.choices(doc)[self.doc_to_target(doc)]


def _need_options(item: MCQItem, n: int) -> list[str]:
    if len(item.options) != n:
        raise InputError(f"needs {n} options, the item has {len(item.options)}", field="options")
    return list(item.options)


# ----------------------------------------------------------------------------------------------------------
# MedQA (GBaker/MedQA-USMLE-4-options-hf): sent1, ending0-3, label


def _medqa_doc(item: MCQItem) -> Doc:
    options = _need_options(item, 4)
    return {"sent1": item.question, **{f"ending{i}": o for i, o in enumerate(options)}, "label": item.answer}


def _medqa_text(doc: Doc) -> str:
    options = "".join(f"{letter}. {doc[f'ending{i}']}\n" for i, letter in enumerate(LETTERS4))
    return f"Question: {doc['sent1']}\n{options}Answer:"


# ----------------------------------------------------------------------------------------------------------
# MedMCQA (openlifescienceai/medmcqa): question, opa-opd, cop (0-based)

_MEDMCQA_FIELDS = ("opa", "opb", "opc", "opd")


def _medmcqa_doc(item: MCQItem) -> Doc:
    options = _need_options(item, 4)
    return {"question": item.question, **dict(zip(_MEDMCQA_FIELDS, options, strict=True)), "cop": item.answer}


def _medmcqa_text(doc: Doc) -> str:
    options = "".join(f"{letter}. {doc[field]}\n" for letter, field in zip(LETTERS4, _MEDMCQA_FIELDS, strict=True))
    return f"Question: {doc['question']}\nChoices:\n{options}Answer:"


# ----------------------------------------------------------------------------------------------------------
# PubMedQA (bigbio/pubmed_qa, pubmed_qa_labeled_fold0_source): QUESTION, CONTEXTS, final_decision

PUBMEDQA_CHOICES = ("yes", "no", "maybe")


def _pubmedqa_doc(item: MCQItem) -> Doc:
    """The abstract's sections are ``meta.contexts`` and the bare question ``meta.pubmed_question`` (the PubMedQA
    loader keeps both whichever question text it builds); the options must be yes, no, maybe in that order."""
    if tuple(o.strip().lower() for o in item.options) != PUBMEDQA_CHOICES:
        raise InputError(f"options must be {', '.join(PUBMEDQA_CHOICES)} in this order (a PubMedQA item)",
                         field="options")
    contexts = item.meta.get("contexts")
    if not isinstance(contexts, list) or not contexts or not all(isinstance(c, str) for c in contexts):
        raise InputError("no abstract: PubMedQA's prompt needs the contexts the pubmedqa loader keeps in meta",
                         field="meta.contexts")
    question = item.meta.get("pubmed_question")
    if not isinstance(question, str) or not question.strip():
        raise InputError("no question: the pubmedqa loader keeps the bare question in meta",
                         field="meta.pubmed_question")
    return {"QUESTION": question, "CONTEXTS": list(contexts), "final_decision": PUBMEDQA_CHOICES[item.answer]}


def _pubmedqa_text(doc: Doc) -> str:
    abstract = "\n".join(doc["CONTEXTS"])
    return f"Abstract: {abstract}\nQuestion: {doc['QUESTION']}\nAnswer:"


# ----------------------------------------------------------------------------------------------------------
# MMLU (cais/mmlu): question, choices, answer; five dev questions per subject, taken in order


def _mmlu_doc(item: MCQItem) -> Doc:
    options = _need_options(item, 4)
    return {"question": item.question, "choices": options, "answer": item.answer}


def _mmlu_text(doc: Doc) -> str:
    options = "".join(f"{letter}. {choice}\n" for letter, choice in zip(LETTERS4, doc["choices"], strict=True))
    return f"{doc['question'].strip()}\n{options}Answer:"


def _letters(doc: Doc) -> list[str]:
    return list(LETTERS4)


MMLU_MEDICAL_SUBJECTS = ("anatomy", "clinical_knowledge", "college_biology", "college_medicine",
                         "medical_genetics", "professional_medicine")


def _mmlu_task(subject: str) -> HarnessTask:
    return HarnessTask(
        name=f"mmlu_{subject}", to_doc=_mmlu_doc, doc_to_text=_mmlu_text, choices=_letters,
        doc_to_target=lambda doc: int(doc["answer"]), test_split="test", fewshot_split="dev", sampler="first_n",
        fewshot_split_named=True,
        description=f"The following are multiple choice questions (with answers) about "
                    f"{subject.replace('_', ' ')}.\n\n",
        harness_metrics=("acc",), subject=subject)


BUILTIN_TASKS: tuple[HarnessTask, ...] = (
    HarnessTask(name="medqa_4options", to_doc=_medqa_doc, doc_to_text=_medqa_text, choices=_letters,
                doc_to_target=lambda doc: int(doc["label"]), test_split="test", fewshot_split="train"),
    HarnessTask(name="medmcqa", to_doc=_medmcqa_doc, doc_to_text=_medmcqa_text, choices=_letters,
                doc_to_target=lambda doc: int(doc["cop"]), test_split="dev", fewshot_split="train"),
    HarnessTask(name="pubmedqa", to_doc=_pubmedqa_doc, doc_to_text=_pubmedqa_text,
                choices=lambda doc: list(PUBMEDQA_CHOICES),
                doc_to_target=lambda doc: PUBMEDQA_CHOICES.index(doc["final_decision"]), test_split="test",
                fewshot_split="train", harness_metrics=("acc",)),
    *(_mmlu_task(subject) for subject in MMLU_MEDICAL_SUBJECTS),
)

TASKS: Registry[HarnessTask] = Registry("harness task", hint="a plugin registers more (register_task)")
for _task in BUILTIN_TASKS:
    TASKS.register(_task.name, _task)

SUITES: Registry[tuple[str, ...]] = Registry("harness suite")
SUITES.register("open-medical-llm", tuple(t.name for t in BUILTIN_TASKS))


def register_task(task: HarnessTask, *, replace: bool = False) -> HarnessTask:
    """Make ``task`` available by its name (``--task NAME``, a grid's ``evaluation: task:``)."""
    return TASKS.register(task.name, task, replace=replace)


def get_task(name: str) -> HarnessTask:
    return TASKS.get(name)


def suite_tasks(name: str) -> Sequence[str]:
    """The task names of the suite ``name`` (an unknown name is the registry's one-line error)."""
    return SUITES.get(name)

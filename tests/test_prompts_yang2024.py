"""The prompts of Yang et al. 2024 as their code writes them: training/evaluation, and difficulty scoring.

The expected strings are built here the way the authors' code builds them (restated, not imported): their
training text is one fixed template per option count with a blank line after the instruction and another
before "### Answer:", the letter following "### Answer: " (evaluation leaves it empty); their difficulty script
writes everything on one line, the letters as Python prints a list, and appends " Answer: ".
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bpe_helpers import bpe_tokenizer
from medtune.prompts import LETTERS, TEMPLATES, get_template, mcq_completion, mcq_prompt
from medtune.schema import MCQItem
from medtune.training.config import resolve_training_settings
from medtune.training.data import IGNORE, encode_item
from shared_data import shared_path

INSTRUCTION = "Answer the following multiple choice question by giving the most appropriate response."


def authors_training_text(stem: str, options: list[str], answer: str) -> str:
    """Their training example (answer = the gold letter) or evaluation prompt (answer = "")."""
    letters = LETTERS[: len(options)]
    lines = [f"{INSTRUCTION} Answer should be one among [{', '.join(letters)}].", "", f"Question: {stem}"]
    lines += [f"{letter}) {text}" for letter, text in zip(letters, options, strict=True)]
    lines += ["", f"### Answer: {answer}"]
    return "\n".join(lines)


def authors_difficulty_prompt(stem: str, options: list[str]) -> str:
    """What their difficulty script feeds the model: the question line, then " Answer: "."""
    letters = list(LETTERS[: len(options)])
    shown = " ".join(f"{letter}) {text}" for letter, text in zip(letters, options, strict=True))
    return f"{INSTRUCTION} The answer should be one of {letters}. Question: {stem} {shown}" + " Answer: "


words = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)
texts = st.lists(words, min_size=1, max_size=8).map(" ".join)


@st.composite
def mcq_items(draw: st.DrawFn) -> MCQItem:
    options = draw(st.lists(texts, min_size=4, max_size=5))
    return MCQItem(id="q", question=draw(texts), options=options, answer=draw(st.integers(0, len(options) - 1)),
                   source="t", split="train")


@given(mcq_items())
def test_yang2024_is_the_authors_training_text_and_evaluation_prompt(item: MCQItem) -> None:
    gold = LETTERS[item.answer]
    prompt, completion = mcq_prompt(item, "yang2024"), mcq_completion(item, "letter")
    assert prompt + completion == authors_training_text(item.question, item.options, gold)
    # their evaluation text is the training text without the letter: "### Answer: " (a trailing space)
    assert prompt + " " == authors_training_text(item.question, item.options, "")


@given(mcq_items())
def test_yang2024_difficulty_is_the_authors_scoring_prompt(item: MCQItem) -> None:
    prompt = mcq_prompt(item, "yang2024-difficulty")
    assert prompt + " " == authors_difficulty_prompt(item.question, item.options)
    # the letter is read right after "Answer:", as the completion " B" continues it
    assert (prompt + mcq_completion(item, "letter")).endswith(f"Answer: {LETTERS[item.answer]}")


def test_one_item_renders_exactly() -> None:
    item = MCQItem(id="q", question="Which organ makes insulin?", options=["Liver", "Pancreas", "Spleen", "Kidney"],
                   answer=1, source="t", split="train")
    assert mcq_prompt(item, "yang2024") + mcq_completion(item) == (
        "Answer the following multiple choice question by giving the most appropriate response. Answer should be "
        "one among [A, B, C, D].\n\nQuestion: Which organ makes insulin?\nA) Liver\nB) Pancreas\nC) Spleen\n"
        "D) Kidney\n\n### Answer: B")
    assert mcq_prompt(item, "yang2024-difficulty") == (
        "Answer the following multiple choice question by giving the most appropriate response. The answer should "
        "be one of ['A', 'B', 'C', 'D']. Question: Which organ makes insulin? A) Liver B) Pancreas C) Spleen "
        "D) Kidney Answer:")
    # the paper's own template is unchanged: no blank lines
    assert mcq_prompt(item, "paper") == (
        "Answer the following multiple choice question by giving the most appropriate response. Answer should be "
        "one among [A, B, C, D].\nQuestion: Which organ makes insulin?\nA) Liver\nB) Pancreas\nC) Spleen\n"
        "D) Kidney\n### Answer:")
    assert {"yang2024", "yang2024-difficulty", "yang2024-difficulty-lek", "paper"} <= set(TEMPLATES)


def test_the_lek_variant_reproduces_every_prompt_of_the_authors_lek_response_files() -> None:
    """Their LEK response files record the prompt each model was scored on (letters unquoted there)."""
    from medtune.data import load

    path = shared_path("lek", "Llama-2-7b-chat-hf.json")
    records = json.loads(path.read_text(encoding="utf-8"))["questions"]
    items = load("lek", path).items
    assert len(items) == len(records) == 874

    def spaces(text: str) -> str:  # the published options carry a leading space the loader strips
        return re.sub(r"\s+", " ", text).strip()

    for item, record in zip(items, records, strict=True):
        assert spaces(mcq_prompt(item, "yang2024-difficulty-lek")) == spaces(record["question"] + " Answer:"), item.id


@pytest.fixture(scope="module")
def letter_tokenizer():
    """A byte-level BPE where " A" ... " J" are single tokens (as "▁A" is for Llama's SentencePiece)."""
    return bpe_tokenizer([("Ġ", letter) for letter in LETTERS])


def test_the_yang2024_preset_trains_on_the_letter_alone_without_eos(letter_tokenizer) -> None:
    config = resolve_training_settings({}, preset="yang2024")
    assert (config.target, config.add_eos, config.template) == ("letter", False, "yang2024")
    get_template(config.template)  # the preset's template exists
    item = MCQItem(id="q", question="Which organ makes insulin?", options=["Liver", "Pancreas", "Spleen"],
                   answer=1, source="t", split="train")
    enc = encode_item(item, letter_tokenizer, target=config.target, template=config.template,
                      max_length=config.max_length, add_eos=config.add_eos)
    trained = [t for t in enc.labels if t != IGNORE]
    assert letter_tokenizer.convert_ids_to_tokens(trained) == ["ĠB"]  # the letter, and no "</s>"
    assert letter_tokenizer.decode(list(enc.input_ids), skip_special_tokens=True) == authors_training_text(
        item.question, item.options, "B")
    with_eos = encode_item(item, letter_tokenizer, target="letter", template="yang2024", add_eos=True)
    assert letter_tokenizer.convert_ids_to_tokens([t for t in with_eos.labels if t != IGNORE]) == ["ĠB", "</s>"]

"""Reading the chosen option out of generated answers, the majority vote over samples, and chain-of-thought prompts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtune.answer_extraction import extract_answer
from medtune.cot_prompts import COT_CUE, ChainOfThought, draw_shots, shot_split, worked_answer
from medtune.errors import ConfigError
from medtune.prompts import mcq_prompt
from medtune.schema import MCQItem
from medtune.voting import majority_vote

OPTIONS = ["Nephrotic syndrome", "Nephritic syndrome", "Minimal change disease", "IgA nephropathy"]
A, B, C, D = range(4)

# (generated answer, the option it answers with; None: no answer can be read)
TABLE: list[tuple[str, int | None]] = [
    # a leading letter
    (" B", B), ("B", B), (" C) Minimal change disease", C), ("(D) IgA nephropathy", D), ("C. It fits best.", C),
    ("A", A), ("A.", A), (" (a)", A), ("d)", D),
    # articles and the pronoun are never letters
    ("A 45-year-old man presents with edema.", None),
    ("A patient with proteinuria and edema.", None),
    ("A child with periorbital edema most likely has a podocyte disorder.", None),
    ("I think so.", None),
    ("I am not sure.", None),
    ("The answer is a 45-year-old with edema", None),
    # explicit statements
    ("The answer is C.", C), ("the answer is D", D), ("Final answer: B", B), ("Answer: (C)", C),
    ("**Answer: B**", B), ("The correct answer is (b).", B), ("answer: c", C), ("Answer: d.", D),
    ("The best option is A because of the selective proteinuria.", A),
    ("Option D is correct.", D), ("C is the correct answer.", C), ("\\boxed{B}", B),
    ("I think it's B", B), ("I think it is D.", D), ("I believe the answer is A.", A), ("I'd go with option C.", C),
    ("I would choose B.", B), ("The answer is A because the child has edema.", A),
    # the last statement wins, negations
    ("the answer is not A but C", C), ("It is not B, but rather D.", D), ("The answer is C, not A.", C),
    ("The answer is C. Wait, no: the answer is A.", A),
    ("Let's think step by step. A 7-year-old boy has edema and proteinuria. Option A fits, but B is possible. "
     "Therefore, the answer is D.", D),
    ("A 7-year-old boy with edema. Answer: B. On reflection, the final answer is C.", C),
    # options quoted in text
    ('The answer is "IgA nephropathy".', D), ("The answer is minimal change disease.", C),
    ("It is probably minimal change disease.", C), ("Most likely 'Nephritic syndrome'.", B),
    # several letters without a statement, letters with no option, nothing
    ("(A) is wrong, (B) is wrong, (C) fits.", None), ("Option A or option B, hard to say.", None),
    ("The answer is E.", None), ("The answer is not (A).", None), ("hepatitis B is the most likely cause", None),
    ("e.g. a viral infection", None), ("", None), ("   ", None), ("I don't know", None),
    ("Vitamin B12 deficiency", None), ("The answer is B or C.", None), ("A) Nephrotic syndrome B) Nephritic", None),
    ("The answer is: **B. Nephritic syndrome**", B), ("Answer: Nephritic syndrome (B)", B), ("ANSWER: C", C),
    ("Correct option: (D)", D), ("The answer is B and a biopsy confirms it.", B),
]


@pytest.mark.parametrize(("text", "expected"), TABLE, ids=[f"{i:02d}" for i in range(len(TABLE))])
def test_extracted_answers(text, expected):
    assert extract_answer(text, OPTIONS) == expected


def test_the_table_is_large_enough():
    assert len(TABLE) >= 40 and {e for _, e in TABLE} == {A, B, C, D, None}


_WORDS = ["patient", "man", "woman", "child", "presents", "with", "edema", "fever", "and", "the", "of", "has", "was",
          "a", "history", "renal", "biopsy", "shows", "because", "is", "which", "likely", "cause", "for", "in", "b",
          "cough", "days", "after", "since"]
_SEPARATORS = [" ", " ", " ", ", ", ". ", "; ", "\n"]
# Options that never occur in the generated words, so only letters can name them.
_UNRELATED = ["Zarlosis", "Bemo virus", "Kalu scan", "Trizole"]


@st.composite
def _article_answers(draw: st.DrawFn) -> str:
    """"A " + a lower-case word (or a number) + more words, letters B-D and labels ("(B)") here and there."""
    first = draw(st.sampled_from([*_WORDS, "45-year-old", "7-day", "3"]))
    pieces = draw(st.lists(st.one_of(st.sampled_from(_WORDS), st.sampled_from(["(B)", "C)", "option D", "B"])),
                           max_size=12))
    text = "A " + first
    for piece in pieces:
        text += draw(st.sampled_from(_SEPARATORS)) + piece
    return text


@settings(max_examples=300, deadline=None)
@given(text=_article_answers())
def test_a_leading_article_is_never_option_a(text):
    """An answer opening with "A" and a lower-case word never reads as option A unless it says so later."""
    assert extract_answer(text, _UNRELATED) != A
    assert extract_answer(text + ". Therefore, the answer is A.", _UNRELATED) == A


def test_option_text_prefers_the_first_then_the_most_specific():
    options = ["fever", "high fever", "cough"]
    assert extract_answer("She has a high fever and a cough.", options) == 1
    assert extract_answer("cough, then fever", options) == 2
    assert extract_answer("feverish", options) is None  # whole words only


# ----------------------------------------------------------------------------------------------------------
# The vote


@pytest.mark.parametrize(("answers", "winner", "count", "runner_up"), [
    ([2, 2, 1, None, 2], 2, 3, 1),
    ([1, 2, 2, 1], 1, 2, 2),  # a tie goes to the earliest sample's answer among the tied
    ([None, 3, 0, 0, 3], 3, 2, 2),
    ([None, None], None, 0, 0),
    ([0], 0, 1, 0),
])
def test_majority_vote(answers, winner, count, runner_up):
    vote = majority_vote(answers)
    assert (vote.answer, vote.count, vote.runner_up, vote.n) == (winner, count, runner_up, len(answers))
    assert vote.share == pytest.approx(count / len(answers))
    assert vote.margin == pytest.approx((count - runner_up) / len(answers))


# ----------------------------------------------------------------------------------------------------------
# Chain-of-thought prompts


def _item(i: int, split: str, explanation: str | None = "Edema with heavy proteinuria is nephrotic.") -> MCQItem:
    return MCQItem(id=f"q{i}", question=f"Question number {i}?", options=OPTIONS, answer=i % 4, source="t",
                   split=split, explanation=explanation)


def test_zero_shot_prompt_ends_with_the_cue():
    item = _item(1, "test")
    prompt = ChainOfThought("zero-shot").prompt(item, "paper", [3, 2, 1, 0])
    assert prompt == mcq_prompt(item, "paper", [3, 2, 1, 0]) + " " + COT_CUE
    assert ChainOfThought("zero-shot").stop_strings("paper") == ["\nQuestion:"]
    assert ChainOfThought("zero-shot").stop_strings("mmlu") == []


def test_few_shot_examples_are_drawn_by_seed_from_explained_items_never_evaluated():
    pool = [_item(i, "train") for i in range(8)] + [_item(8, "train", None)] + [_item(i, "dev") for i in (20, 21)]
    assert shot_split(pool, None) == "dev"
    assert shot_split(pool, "train") == "train"
    drawn = draw_shots(pool, 3, seed=4, split="train", exclude=["q0"])
    assert len({s.id for s in drawn}) == 3 and not {"q0", "q8"} & {s.id for s in drawn}
    assert [s.id for s in draw_shots(list(reversed(pool)), 3, seed=4, split="train", exclude=["q0"])] == \
        [s.id for s in drawn]  # the file's order does not matter
    assert any([s.id for s in draw_shots(pool, 3, seed=k, split="train")] != [s.id for s in drawn] for k in range(5))
    with pytest.raises(ConfigError, match=r"cot_shots: .*needs 9 worked examples"):
        draw_shots(pool, 9, seed=0, split="train")
    with pytest.raises(ConfigError, match="cot_shots_split"):
        shot_split([_item(1, "train", None)], None)

    target = _item(30, "test")
    prompt = ChainOfThought("few-shot", tuple(drawn)).prompt(target, "paper")
    assert prompt.count("Answer should be one among [A, B, C, D]") == 1  # the instruction once
    for shot in drawn:
        assert f"Question: {shot.question}" in prompt
        assert worked_answer(shot) in prompt
        assert worked_answer(shot).endswith(f"Therefore, the answer is {'ABCD'[shot.answer]}.")
    assert prompt.endswith(f"Question: {target.question}\nA) {OPTIONS[0]}\nB) {OPTIONS[1]}\nC) {OPTIONS[2]}\n"
                           f"D) {OPTIONS[3]}\n### Answer: {COT_CUE}")
    # each worked answer is read back as its own item's answer
    for shot in drawn:
        assert extract_answer(worked_answer(shot), OPTIONS) == shot.answer

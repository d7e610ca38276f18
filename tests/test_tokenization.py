"""One prompt/completion token split for training and scoring, on a tokenizer that merges across the boundary."""

from __future__ import annotations

import pytest

from bpe_helpers import bpe_tokenizer
from medtune.prompts import LETTERS, mcq_completion, mcq_prompt
from medtune.schema import MCQItem
from medtune.scoring.tokens import split_continuation
from medtune.tokenization import encode, merges_across_boundary, split_prompt_completion
from medtune.training.data import IGNORE, encode_item, split_ids


@pytest.fixture(scope="module")
def merging_tokenizer():
    """A byte-level BPE without pre-tokenizer splits whose first merge joins ':' with the following space.

    Every prompt template ends in ':' and every completion starts with a space, so this tokenizer merges the
    prompt's last character with the completion's first: the case where the tail of the whole text's ids is
    not a continuation of the prompt's ids.
    """
    return bpe_tokenizer([(":", "Ġ"), *(("Ġ", letter) for letter in LETTERS)])


@pytest.fixture
def item():
    return MCQItem(id="q1", question="Which drug treats Zorbel fever?", options=["Amoxil", "Brivan", "Cortex"],
                   answer=1, source="t", split="train")


CASES = [("letter", "paper"), ("option", "options"), ("letter+explanation", "paper")]


def test_the_tokenizer_really_merges_across_the_boundary(merging_tokenizer, item):
    for target, template in CASES:
        prompt, completion = mcq_prompt(item, template), mcq_completion(item, target)  # type: ignore[arg-type]
        assert merges_across_boundary(merging_tokenizer, prompt, completion)
        ctx = encode(merging_tokenizer, prompt)
        whole = encode(merging_tokenizer, prompt + completion)
        # the old scoring rule (the whole text's tail) would drop the space: "...Answer:B"
        assert merging_tokenizer.decode(ctx + whole[len(ctx):], skip_special_tokens=True) != prompt + completion


@pytest.mark.parametrize("target, template", CASES)
def test_training_labels_are_the_tokens_scoring_measures(merging_tokenizer, item, target, template):
    prompt, completion = mcq_prompt(item, template), mcq_completion(item, target)  # type: ignore[arg-type]
    enc = encode_item(item, merging_tokenizer, target=target, template=template, add_eos=False)
    n_prompt = sum(1 for t in enc.labels if t == IGNORE)
    trained = [t for t in enc.labels if t != IGNORE]
    ctx, scored = split_continuation(merging_tokenizer, prompt, completion)
    assert trained == scored
    assert list(enc.input_ids[:n_prompt]) == ctx == encode(merging_tokenizer, prompt)
    assert merging_tokenizer.decode(list(enc.input_ids), skip_special_tokens=True) == prompt + completion
    assert split_ids(merging_tokenizer, prompt, completion) == (ctx, scored)


def test_every_option_shares_the_prompt_ids(merging_tokenizer, item):
    prompt = mcq_prompt(item, "options")
    splits = [split_prompt_completion(merging_tokenizer, prompt, " " + opt) for opt in item.options]
    assert len({tuple(ctx) for ctx, _ in splits}) == 1
    for (ctx, cont), opt in zip(splits, item.options, strict=True):
        assert merging_tokenizer.decode(ctx + cont, skip_special_tokens=True) == prompt + " " + opt


def test_without_a_merge_the_completion_is_the_whole_texts_tail(item):
    from medtune.models import train_tokenizer

    tok = train_tokenizer([mcq_prompt(item) + mcq_completion(item, "option")], vocab_size=300)
    prompt, completion = mcq_prompt(item, "paper"), mcq_completion(item, "option")
    assert not merges_across_boundary(tok, prompt, completion)
    ctx, cont = split_prompt_completion(tok, prompt, completion)
    assert ctx + cont == encode(tok, prompt + completion)


def test_trailing_prompt_spaces_move_to_the_completion(merging_tokenizer):
    ctx, cont = split_prompt_completion(merging_tokenizer, "Answer: ", "B")
    assert ctx == encode(merging_tokenizer, "Answer:")
    assert merging_tokenizer.decode(cont) == " B"

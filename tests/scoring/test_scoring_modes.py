"""Letter, option and generate modes against straightforward references (one question at a time, full logits)."""

from __future__ import annotations

import math

import pytest
import torch

from medtune.answer_extraction import extract_answer
from medtune.errors import InputError
from medtune.prompts import LETTERS, mcq_prompt, permuted_options
from medtune.schema import MCQItem, QAItem
from medtune.scoring import question_permutation, score_items


def _ids(tok, text):
    return tok(text)["input_ids"]


@torch.inference_mode()
def ref_letter(loaded, item, template="paper", perm=None):
    """Full-logit forward of the unpadded prompt; letters as the tokenizer writes prompt + ' X'."""
    tok, model = loaded.tokenizer, loaded.model
    prompt = mcq_prompt(item, template, perm)
    ids = _ids(tok, prompt)
    logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].double(), dim=-1)
    shown = []
    for k in range(len(item.options)):
        full = _ids(tok, prompt + " " + LETTERS[k])
        assert full[: len(ids)] == ids and len(full) == len(ids) + 1
        shown.append(logp[full[-1]].item())
    order = perm or list(range(len(item.options)))
    scores = [0.0] * len(shown)
    for pos, orig in enumerate(order):
        scores[orig] = shown[pos]
    return scores


@torch.inference_mode()
def ref_option(loaded, item, template="paper"):
    """One full forward per option over prompt + option; sum of the option tokens' log-probabilities."""
    tok, model = loaded.tokenizer, loaded.model
    prompt = mcq_prompt(item, template)
    ctx = _ids(tok, prompt)
    sums, norms = [], []
    for opt in item.options:
        whole = _ids(tok, prompt + " " + opt.strip())
        cont = whole[len(ctx):]
        logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), dim=-1)
        total = sum(logp[len(ctx) + j - 1, t].item() for j, t in enumerate(cont))
        sums.append(total)
        norms.append(total / len(cont))
    return sums, norms


def _argmax(xs):
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


@pytest.mark.parametrize("shape", ["five", "four"])
def test_letter_mode_matches_reference(tiny, five_option_items, four_option_items, shape):
    items = five_option_items[:12] if shape == "five" else four_option_items[:12]
    df = score_items(tiny, items, mode="letter", progress=False)
    assert list(df["id"]) == [it.id for it in items]
    for row, item in zip(df.itertuples(), items, strict=True):
        ref = ref_letter(tiny, item)
        assert row.scores == pytest.approx(ref, abs=1e-4)
        assert row.pred == _argmax(ref)
        assert row.answer == item.answer and row.correct == (row.pred == item.answer)
        z = sum(math.exp(s) for s in ref)
        assert row.probs == pytest.approx([math.exp(s) / z for s in ref], abs=1e-5)
        assert row.permutation is None and row.generated is None


def test_letter_mode_permuted_scores_follow_original_options(tiny, five_option_items):
    items = five_option_items[:8]
    df = score_items(tiny, items, mode="letter", permute_seed=7, progress=False)
    moved = 0
    for row, item in zip(df.itertuples(), items, strict=True):
        perm = question_permutation(item.id, len(item.options), 7)
        assert list(row.permutation) == perm
        moved += perm != list(range(len(perm)))
        ref = ref_letter(tiny, item, perm=perm)
        assert row.scores == pytest.approx(ref, abs=1e-4)
        assert row.pred == _argmax(ref)  # an original option index
    assert moved >= 6


def test_batched_and_unbatched_agree(tiny, five_option_items, four_option_items):
    items = five_option_items[:20] + four_option_items[:20]
    one = score_items(tiny, items, mode="letter", batch_tokens=1, progress=False)  # one question per batch
    many = score_items(tiny, items, mode="letter", batch_tokens=8192, progress=False)
    for a, b in zip(one.itertuples(), many.itertuples(), strict=True):
        assert a.id == b.id and a.pred == b.pred
        assert a.scores == pytest.approx(b.scores, abs=1e-4)
    opt_one = score_items(tiny, items[:6], mode="option", batch_tokens=1, progress=False)
    opt_many = score_items(tiny, items[:6], mode="option", batch_tokens=1 << 16, progress=False)
    for a, b in zip(opt_one.itertuples(), opt_many.itertuples(), strict=True):
        assert a.scores == pytest.approx(b.scores, abs=1e-4)


@pytest.mark.parametrize("shape", ["five", "four"])
def test_option_mode_matches_reference(tiny, five_option_items, four_option_items, shape):
    items = five_option_items[:5] if shape == "five" else four_option_items[:5]
    df = score_items(tiny, items, mode="option", progress=False)
    df_sum = score_items(tiny, items, mode="option", option_score="sum", progress=False)
    for row, row_sum, item in zip(df.itertuples(), df_sum.itertuples(), items, strict=True):
        sums, norms = ref_option(tiny, item)
        assert row.scores == pytest.approx(sums, abs=1e-3, rel=1e-5)
        assert row.scores_norm == pytest.approx(norms, abs=1e-4)
        assert row.pred == _argmax(norms)
        assert row_sum.pred == _argmax(sums)


def test_option_mode_permutation_keeps_original_index(tiny, five_option_items):
    items = five_option_items[:4]
    plain = score_items(tiny, items, mode="option", template="cloze", progress=False)
    perm = score_items(tiny, items, mode="option", template="cloze", permute_seed=3, progress=False)
    # The cloze template does not show the options, so the option order cannot change any score.
    for a, b in zip(plain.itertuples(), perm.itertuples(), strict=True):
        assert b.permutation is not None
        assert a.scores == pytest.approx(b.scores, abs=1e-4)
        assert a.pred == b.pred


@torch.inference_mode()
def test_generate_mode_matches_reference(tiny, five_option_items):
    items = five_option_items[:6]
    df = score_items(tiny, items, mode="generate", max_new_tokens=6, permute_seed=2, progress=False)
    tok = tiny.tokenizer
    for row, item in zip(df.itertuples(), items, strict=True):
        perm = question_permutation(item.id, len(item.options), 2)
        ids = torch.tensor([_ids(tok, mcq_prompt(item, "paper", perm))])
        out = tiny.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                                  pad_token_id=tok.pad_token_id)
        text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        assert row.generated == text
        shown, _ = permuted_options(item, perm)
        k = extract_answer(text, shown)
        expected = None if k is None else perm[k]
        assert (row.pred is None or row.pred is pd_na()) if expected is None else row.pred == expected
        assert row.scores is None and list(row.permutation) == perm


def pd_na():
    import pandas as pd

    return pd.NA


def test_generate_free_text_items(tiny):
    items = [QAItem(id=f"qa{i}", question=q, answer="a reference answer", source="t", split="test")
             for i, q in enumerate(["What causes anemia?", "How is asthma treated in children?"])]
    df = score_items(tiny, items, mode="generate", max_new_tokens=5, progress=False)
    assert list(df["answer"]) == ["a reference answer"] * 2
    assert all(isinstance(t, str) for t in df["generated"])
    assert df["correct"].isna().all()


def test_bad_input(tiny, five_option_items):
    with pytest.raises(InputError, match="empty"):
        score_items(tiny, [], progress=False)
    with pytest.raises(InputError, match="unknown scoring mode"):
        score_items(tiny, five_option_items[:1], mode="logits", progress=False)  # type: ignore[arg-type]
    qa = QAItem(id="x", question="q?", answer="a", source="t", split="test")
    with pytest.raises(InputError, match="generate mode"):
        score_items(tiny, [qa], mode="letter", progress=False)
    dup = [five_option_items[0], five_option_items[0]]
    with pytest.raises(InputError, match="duplicate id"):
        score_items(tiny, dup, progress=False)


def test_mixed_option_counts_in_one_batch(tiny):
    items = [MCQItem(id=f"m{n}", question=f"Which one, case {n}?", options=[f"opt {k}" for k in range(n)],
                     answer=n - 1, source="t", split="test") for n in (2, 3, 4, 5, 10)]
    df = score_items(tiny, items, mode="letter", progress=False)
    for row, item in zip(df.itertuples(), items, strict=True):
        assert len(row.scores) == len(item.options)
        assert row.scores == pytest.approx(ref_letter(tiny, item), abs=1e-4)


def test_shared_prefix_cache_gives_the_same_log_probs(tiny, five_option_items):
    from medtune.scoring import hf

    rows = [tiny.tokenizer(mcq_prompt(it))["input_ids"] for it in five_option_items[:6]]
    assert hf.common_prefix_length(rows) >= hf.MIN_SHARED_PREFIX  # the paper's instruction is shared
    shared = hf.last_token_logprobs(tiny.model, rows, tiny.tokenizer.pad_token_id, share_prefix=True)
    plain = hf.last_token_logprobs(tiny.model, rows, tiny.tokenizer.pad_token_id)
    assert torch.allclose(shared, plain, atol=1e-4)
    assert hf.common_prefix_length([[1, 2, 3], [1, 2, 4, 5], [1, 2]]) == 1
    assert hf.common_prefix_length([[7, 8], [7, 8]]) == 1

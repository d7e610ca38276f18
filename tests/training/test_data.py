"""Order → steps → micro-batches, and completion-only labels: pure functions, checked without a model."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from training_helpers import make_items, make_order

from medtune.errors import InputError
from medtune.models import train_tokenizer
from medtune.prompts import mcq_completion, mcq_prompt
from medtune.training.data import (
    IGNORE,
    Encoded,
    check_order,
    collate,
    encode_item,
    micro_batches,
    pack_next_fit,
    plan_steps,
    planned_epochs,
    rank_slice,
)


@given(st.lists(st.integers(1, 50), max_size=40), st.integers(1, 120))
def test_next_fit_keeps_order_and_capacity(lengths, capacity):
    bins = pack_next_fit(lengths, capacity)
    assert [i for b in bins for i in b] == list(range(len(lengths)))
    for b in bins:
        assert len(b) == 1 or sum(lengths[i] for i in b) <= capacity
    # next-fit: the first item of each bin did not fit into the previous bin
    for prev, cur in itertools.pairwise(bins):
        assert sum(lengths[i] for i in prev) + lengths[cur[0]] > capacity


@given(st.integers(0, 50), st.integers(1, 8))
def test_rank_slices_partition_the_batch_in_order(n, world):
    slices = [rank_slice(n, r, world) for r in range(world)]
    assert slices[0][0] == 0 and slices[-1][1] == n
    for (a, b), (c, _) in itertools.pairwise(slices):
        assert b == c and a <= b
    sizes = [b - a for a, b in slices]
    assert max(sizes) - min(sizes) <= 1


@given(st.lists(st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=30), min_size=1, max_size=4),
       st.integers(1, 9), st.one_of(st.none(), st.integers(1, 20)))
def test_plan_steps_concatenate_to_the_planned_sequence(epochs, batch, max_steps):
    steps = plan_steps(epochs, batch, max_steps)
    flat = [i for s in steps for i in s.ids]
    full = [i for e in epochs for i in e]
    assert flat == full[: len(flat)]
    assert [s.step for s in steps] == list(range(1, len(steps) + 1))
    assert all(1 <= len(s.ids) <= batch for s in steps)
    if max_steps is None:
        assert flat == full
    # Each epoch chunked on its own (the last step of an epoch may be short), then cut at max_steps: exactly
    # min(max_steps, planned) steps, the planned sequence's prefix; a plan that stopped early is a shorter run.
    planned = [(e, start, tuple(ids[start:start + batch]))
               for e, ids in enumerate(epochs) for start in range(0, len(ids), batch)]
    n = len(planned) if max_steps is None else min(max_steps, len(planned))
    assert len(steps) == n
    assert [(s.epoch, s.start, s.ids) for s in steps] == planned[:n]


def test_epoch_policy_repeat_and_reshuffle():
    order = make_order(["a", "b"], epochs=1)
    assert planned_epochs(order, 3) == [["a", "b"]] * 3
    order["epoch_policy"] = "reshuffle"
    with pytest.raises(InputError, match="reshuffle"):
        planned_epochs(order, 2)
    assert planned_epochs(order, 1) == [["a", "b"]]


@pytest.mark.parametrize("bad, field", [({"format": "x"}, "format"), ({"epochs": []}, "epochs"),
                                        ({"epochs": [["a", 3]]}, "epochs.0"), ({"epoch_policy": "?"}, "epoch_policy")])
def test_bad_order_files_name_the_field(bad, field):
    order = {**make_order(["a"]), **bad}
    with pytest.raises(InputError) as err:
        check_order(order, file="o.json")
    assert err.value.field == field


@pytest.fixture(scope="module")
def tok():
    items = make_items(20)
    return train_tokenizer([mcq_prompt(i) + mcq_completion(i, "option") for i in items], vocab_size=400)


@pytest.mark.parametrize("target", ["letter", "option"])
def test_labels_cover_exactly_the_completion(tok, target):
    item = make_items(3)[1]
    enc = encode_item(item, tok, target=target, template="paper", max_length=512, add_eos=True)
    labelled = [t for t in enc.labels if t != IGNORE]
    assert labelled[-1] == tok.eos_token_id
    assert tok.decode(labelled[:-1]) == mcq_completion(item, target)
    n_prompt = enc.labels.index(labelled[0])
    assert tok.decode(list(enc.input_ids[:n_prompt])) == mcq_prompt(item, "paper")
    assert enc.n_label_tokens == len(labelled)


def test_truncation_keeps_the_answer_and_the_end_of_the_prompt(tok):
    item = make_items(3)[2]
    full = encode_item(item, tok, target="option", max_length=512)
    short = encode_item(item, tok, target="option", max_length=12)
    assert short.n_tokens == 12
    n_ans = sum(t != IGNORE for t in full.labels)
    assert short.labels[-n_ans:] == full.labels[-n_ans:]
    assert short.input_ids == full.input_ids[-12:]


def _enc(i, n, n_lab=1):
    return Encoded(f"x{i}", tuple(range(10 + i, 10 + i + n)), tuple([IGNORE] * (n - n_lab) + [5] * n_lab))


def test_packed_collate_restarts_positions_and_masks_item_starts():
    batch = [_enc(0, 4), _enc(1, 3, n_lab=3), _enc(2, 5)]
    out = collate(batch, packing=True, pad_id=0)
    assert out["attention_mask"] is None
    assert out["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3, 4]]
    labels = out["labels"][0].tolist()
    assert labels[4] == IGNORE  # first token of item 2 never learns from item 1's last token
    assert out["input_ids"].shape == (1, 12)


def test_padded_collate_and_micro_batches_keep_order():
    batch = [_enc(i, 3 + i) for i in range(5)]
    mbs = micro_batches(batch, packing=False, batch_size=2, pack_tokens=0)
    assert [[e.id for e in mb] for mb in mbs] == [["x0", "x1"], ["x2", "x3"], ["x4"]]
    out = collate(mbs[0], packing=False, pad_id=0)
    assert out["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    packed = micro_batches(batch, packing=True, batch_size=2, pack_tokens=10)
    assert [e.id for mb in packed for e in mb] == [e.id for e in batch]

"""Spaced repetition on three items, position by position: which showing comes next when a review falls due, how
ties between two due reviews are settled (first scheduled, first shown), and where the sequence may be cut."""

from __future__ import annotations

import pytest

from medtune.errors import ConfigError
from medtune.orders.strategies import OrderItem, get_strategy, review_gaps

# anti-curriculum-strict puts the hardest first: c, b, a — so the ids run against their spelling and a tie settled
# by id instead of by scheduling order would show.
ITEMS = [OrderItem(id="a", difficulty=0.1), OrderItem(id="b", difficulty=0.5), OrderItem(id="c", difficulty=0.9)]
BASE = {"base": "anti-curriculum-strict"}


def test_the_full_schedule_by_hand():
    # gaps 1, 2: c@0 → c due 1; c@1 → c due 3; b@2 → b due 3; tie at 3: c was scheduled first; b@4 → b due 6;
    # a@5 → a due 6; tie at 6: b first; a@7 → a due 9; p = 8: no new item left, so a comes early.
    order = get_strategy("spaced-repetition")(ITEMS, 0, reviews=2, first_interval=1, growth=2.0, **BASE)
    assert order == ["c", "c", "b", "c", "b", "a", "b", "a", "a"]


def test_gaps_grow_from_the_first_interval_and_are_at_least_one():
    assert review_gaps(3, 1, 2.0) == [1, 2, 4]
    assert review_gaps(2, 3, 1.5) == [3, 4]
    assert review_gaps(2, 1, 1.0) == [1, 1]
    assert review_gaps(0, 1, 2.0) == []


def test_no_reviews_is_the_base_order_and_the_epoch_reaches_the_base():
    spec = get_strategy("spaced-repetition")
    assert spec(ITEMS, 0, reviews=0, **BASE) == ["c", "b", "a"]
    many = [OrderItem(id=f"i{k}") for k in range(12)]
    assert spec(many, 4, reviews=0) == get_strategy("random")(many, 4)
    assert spec(many, 4, reviews=0, epoch=1) == get_strategy("random")(many, 4, epoch=1)
    assert spec(many, 4, reviews=0, epoch=1) != spec(many, 4, reviews=0)


def test_the_sequence_may_be_cut_at_any_length_up_to_its_end():
    spec = get_strategy("spaced-repetition")
    full = spec(ITEMS, 0, **BASE)
    assert len(full) == 9
    assert spec(ITEMS, 0, length=9, **BASE) == full
    assert spec(ITEMS, 0, length=4, **BASE) == full[:4]
    with pytest.raises(ConfigError) as err:
        spec(ITEMS, 0, length=10, **BASE)
    assert str(err.value) == ("spaced-repetition length 10 exceeds the full sequence (9 = 3 items × 3 showings); "
                              "raise reviews instead")

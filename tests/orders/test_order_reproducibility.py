"""Orders are reproducible across versions: for a fixed item set and seed, each strategy gives exactly the order it
gave when this file was written. A change to how a strategy draws (its random streams, its tie-breaks, its defaults)
changes the orders of every study already run with it, so it must show up here and be deliberate."""

from __future__ import annotations

import pytest

from medtune.errors import ConfigError
from medtune.orders.strategies import STRATEGIES, OrderItem, competence, get_strategy

LEVELS = ("easy", "medium", "hard")
# 18 items: every (category, bucket) pair twice, difficulties with ties
ITEMS = [OrderItem(id=f"q{k:02d}", category=f"c{k % 3}", difficulty=(k * 7 % 5) / 4, bucket=LEVELS[(k // 3) % 3])
         for k in range(18)]

GOLDEN = {
    "random": 'q02 q13 q15 q06 q05 q10 q00 q04 q07 q11 q09 q01 q17 q12 q16 q08 q03 q14',
    "blocked": 'q07 q04 q13 q16 q01 q10 q09 q06 q00 q12 q15 q03 q08 q11 q14 q02 q17 q05',
    "interleaved": 'q07 q04 q09 q06 q08 q11 q13 q16 q00 q12 q14 q02 q01 q10 q15 q03 q17 q05',
    "interleaved-items": 'q07 q09 q08 q04 q06 q11 q13 q00 q14 q16 q12 q02 q01 q15 q17 q10 q03 q05',
    "curriculum": 'q02 q01 q10 q11 q00 q09 q12 q05 q03 q13 q14 q04 q08 q15 q16 q06 q17 q07',
    "curriculum-strict": 'q10 q05 q15 q00 q13 q08 q03 q11 q16 q06 q01 q14 q04 q09 q02 q12 q17 q07',
    "anti-curriculum": 'q08 q07 q16 q17 q06 q15 q12 q05 q03 q13 q14 q04 q02 q09 q10 q00 q11 q01',
    "anti-curriculum-strict": 'q02 q12 q17 q07 q14 q04 q09 q11 q16 q06 q01 q13 q08 q03 q10 q05 q15 q00',
    "blocked-curriculum": 'q10 q01 q04 q13 q16 q07 q00 q09 q12 q03 q06 q15 q02 q11 q05 q14 q08 q17',
    "blocked-curriculum-strict": 'q10 q13 q16 q01 q04 q07 q15 q00 q03 q06 q09 q12 q05 q08 q11 q14 q02 q17',
    "interleaved-curriculum": 'q10 q00 q11 q01 q09 q02 q04 q12 q05 q13 q03 q14 q07 q06 q08 q16 q15 q17',
    "interleaved-curriculum-strict": 'q10 q13 q15 q00 q05 q08 q16 q01 q03 q06 q11 q14 q04 q07 q09 q12 q02 q17',
    "pacing": 'q10 q13 q08 q03 q15 q16 q05 q06 q14 q04 q09 q11 q01 q17 q07 q02 q00 q12',
    "spaced-repetition": ("q02 q02 q13 q02 q13 q15 q13 q15 q06 q15 q06 q05 q06 q05 q10 q05 q10 q00 "
                          "q10 q00 q04 q00 q04 q07 q04 q07 q11 q07 q11 q09 q11 q09 q01 q09 q01 q17 "
                          "q01 q17 q12 q17 q12 q16 q12 q16 q08 q16 q08 q03 q08 q03 q14 q03 q14 q14"),
}
VARIANTS = [
    ("pacing", {"sampling": "uniform"}, "q05 q15 q15 q08 q00 q15 q08 q10 q01 q15 q10 q06 q03 q00 q16 q01 q17 q04"),
    ("pacing", {"schedule": "root", "c0": 0.1},
     "q10 q13 q00 q11 q06 q05 q08 q04 q01 q02 q09 q16 q14 q07 q12 q17 q15 q03"),
    ("pacing", {"schedule": "step", "steps": 2},
     "q11 q10 q08 q15 q13 q05 q03 q00 q17 q12 q14 q02 q01 q09 q04 q06 q07 q16"),
    ("interleaved-curriculum", {"k": 1}, "q10 q01 q00 q09 q11 q02 q04 q13 q12 q03 q05 q14 q07 q16 q06 q15 q08 q17"),
    ("blocked", {"category_order": "size"}, "q06 q03 q12 q15 q00 q09 q10 q07 q01 q13 q16 q04 q08 q11 q14 q02 q17 q05"),
]


def test_every_strategy_is_covered():
    assert set(GOLDEN) == set(STRATEGIES)


@pytest.mark.parametrize("name", list(GOLDEN))
def test_the_order_for_seed_7_is_the_one_recorded(name):
    assert " ".join(get_strategy(name)(ITEMS, 7)) == GOLDEN[name]


@pytest.mark.parametrize("name, options, expected", VARIANTS)
def test_the_order_with_options_is_the_one_recorded(name, options, expected):
    assert " ".join(get_strategy(name)(ITEMS, 7, **options)) == expected


def test_competence_by_hand():
    assert competence(0.0, "linear", 0.2, 0.8, 3) == pytest.approx(0.2)
    assert competence(0.4, "linear", 0.2, 0.8, 3) == pytest.approx(0.6)
    assert competence(0.9, "linear", 0.2, 0.8, 3) == 1.0
    assert competence(0.0, "root", 0.2, 0.8, 3) == pytest.approx(0.2)
    assert competence(0.4, "root", 0.2, 0.8, 3) == pytest.approx((0.04 + 0.96 * 0.5) ** 0.5)
    assert competence(0.0, "step", 0.2, 0.8, 4) == pytest.approx(0.25)
    assert competence(0.5, "step", 0.2, 1.0, 4) == pytest.approx(0.75)
    assert competence(1.0, "step", 0.2, 1.0, 4) == 1.0
    assert competence(0.0, "linear", 0.2, 0.0, 3) == 1.0  # no ramp: everything is eligible at once
    with pytest.raises(ConfigError) as err:
        competence(0.5, "cubic", 0.2, 0.8, 3)
    assert str(err.value) == "unknown pacing schedule 'cubic' (linear, root, step)"

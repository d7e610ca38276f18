"""Each strategy function called on its own: its defaults are the registry's (epoch 0, the same options), and an
item lacking what it needs is refused with the strategy's registered name and the missing field."""

from __future__ import annotations

import pytest

from medtune.errors import ConfigError, InputError
from medtune.orders import strategies as s
from medtune.orders.strategies import STRATEGIES, OrderItem, get_strategy

LEVELS = ("easy", "medium", "hard")


def _items(n: int = 18) -> list[OrderItem]:
    return [OrderItem(id=f"i{k:02d}", category=f"c{k % 3}", difficulty=(k * 7 % 11) / 10, bucket=LEVELS[k * 5 % 3])
            for k in range(n)]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_strategy_called_directly_defaults_to_epoch_zero_and_the_registry_options(name):
    spec = get_strategy(name)
    items = _items()
    direct = spec.func(items, 5)
    assert direct == spec.func(items, 5, epoch=0) == spec(items, 5)
    if spec.random and name != "spaced-repetition":
        assert spec.func(items, 5, epoch=1) != direct  # the epoch does reach the shuffle


@pytest.mark.parametrize("name", [n for n in sorted(STRATEGIES) if STRATEGIES[n].needs and n != "pacing"])
def test_an_item_lacking_a_needed_field_is_refused_with_the_strategy_name(name):
    spec = get_strategy(name)
    for need in spec.needs:
        items = _items()
        bad = items[4]
        items[4] = OrderItem(id=bad.id, **{f: getattr(bad, f) for f in ("category", "difficulty", "bucket")
                                           if f != need})
        with pytest.raises(InputError) as err:
            spec(items, 0)
        assert f"strategy '{name}' needs a {need} for every item, but item 'i04' has none" in str(err.value)
        assert err.value.field == need and err.value.record == "i04"


def test_pacing_ranks_by_bucket_when_a_difficulty_is_missing_and_names_itself():
    items = _items(6)
    no_difficulty = [OrderItem(id=it.id, category=it.category, bucket=it.bucket) for it in items]
    order = get_strategy("pacing")(no_difficulty, 0, length=6, c0=0.01, ramp=1.0)
    first = no_difficulty[[it.id for it in no_difficulty].index(order[0])]
    assert first.bucket == "easy"
    bare = [OrderItem(id=it.id) for it in items]
    with pytest.raises(InputError, match="strategy 'pacing' needs a bucket for every item"):
        get_strategy("pacing")(bare, 0)


def test_strict_orders_put_the_easiest_or_hardest_first():
    items = _items()
    by = {it.id: it.difficulty for it in items}
    easy_first = s.curriculum_strict(items, 3)
    hard_first = s.anti_curriculum_strict(items, 3)
    assert [by[i] for i in easy_first] == sorted(by.values())
    assert [by[i] for i in hard_first] == sorted(by.values(), reverse=True)


def test_bad_items_and_seeds_are_refused_with_the_item_and_field():
    with pytest.raises(InputError) as err:
        OrderItem(id="q1", bucket="trivial")
    assert (err.value.record, err.value.field) == ("q1", "bucket")
    assert err.value.reason == "bucket must be one of easy, medium, hard, got 'trivial'"
    with pytest.raises(InputError) as err:
        OrderItem(id="q2", difficulty=float("inf"))
    assert (err.value.record, err.value.field) == ("q2", "difficulty")
    assert err.value.reason == "difficulty must be a finite number"
    with pytest.raises(InputError) as err:
        get_strategy("random")([OrderItem(id="a"), OrderItem(id="b"), OrderItem(id="a")], 0)
    assert (err.value.record, err.value.field, err.value.reason) == ("a", "id", "duplicate item id 'a'")
    for seed in (1.5, True, -1):
        with pytest.raises(ConfigError, match="seed must be a non-negative integer"):
            get_strategy("random")([OrderItem(id="a")], seed)

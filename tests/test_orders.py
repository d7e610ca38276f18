"""Property tests for the learning-order strategies (medtune.orders.strategies)."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medtune.errors import ConfigError, InputError
from medtune.orders import BUCKETS, STRATEGIES, OrderItem, available_strategies, get_strategy
from order_item_lists import category_labels

RANK = {b: i for i, b in enumerate(BUCKETS)}
PERMUTATIONS = [n for n, s in STRATEGIES.items() if s.permutation]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def item_lists(draw, min_size: int = 1, max_size: int = 40, n_categories: int = 5):
    """Items with a category, a distinct continuous difficulty and a bucket consistent with it."""
    labels = draw(category_labels(min_size, max_size, n_categories))
    n = len(labels)
    diffs = draw(st.lists(st.floats(0, 1, allow_nan=False), min_size=n, max_size=n, unique=True))
    items = []
    for i, d in enumerate(diffs):
        bucket = "easy" if d <= 0.66 else "medium" if d <= 0.8 else "hard"
        items.append(OrderItem(f"q{i:03d}", labels[i], d, bucket))
    return items


def rich_items(seed: int, per_cell: int = 4, n_categories: int = 4) -> list[OrderItem]:
    """Every (category, bucket) cell holds ``per_cell`` items: enough that two seeds cannot collide by chance
    (each strategy then has at least (per_cell!)^cells possible orders)."""
    rnd = random.Random(seed)
    items = []
    lo = {"easy": 0.0, "medium": 0.67, "hard": 0.81}
    for c in range(n_categories):
        for b in BUCKETS:
            for _ in range(per_cell):
                items.append(OrderItem(f"x{len(items):03d}", f"cat{c}", lo[b] + rnd.random() * 0.12, b))
    return items


def cats_of(order, items):
    by_id = {it.id: it for it in items}
    return [by_id[i].category for i in order]


def run_labels(seq):
    runs = []
    for x in seq:
        if not runs or runs[-1][0] != x:
            runs.append([x, 0])
        runs[-1][1] += 1
    return runs


def assert_cycles(seq):
    """Round-robin: between two consecutive occurrences of a value no other value occurs twice."""
    last: dict = {}
    for p, x in enumerate(seq):
        if x in last:
            between = Counter(seq[last[x] + 1 : p])
            assert all(v <= 1 for v in between.values()), (x, seq)
        last[x] = p


# ------------------------------------------------------------------------------------------------ generic


@SETTINGS
@given(items=item_lists(), seed=st.integers(0, 2**32), name=st.sampled_from(PERMUTATIONS))
def test_every_permutation_strategy_returns_a_permutation(items, seed, name):
    order = get_strategy(name)(items, seed)
    assert sorted(order) == sorted(it.id for it in items)


@SETTINGS
@given(items=item_lists(), seed=st.integers(0, 2**32), name=st.sampled_from(list(STRATEGIES)))
def test_same_seed_same_order_whatever_the_input_order(items, seed, name):
    spec = get_strategy(name)
    first = spec(items, seed)
    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)
    assert spec(items, seed) == first
    assert spec(shuffled, seed) == first


@SETTINGS
@given(data_seed=st.integers(0, 1000), seeds=st.lists(st.integers(0, 2**32), min_size=2, max_size=2, unique=True),
       name=st.sampled_from([n for n, s in STRATEGIES.items() if s.random]))
def test_different_seed_different_order(data_seed, seeds, name):
    items = rich_items(data_seed)
    spec = get_strategy(name)
    assert spec(items, seeds[0]) != spec(items, seeds[1])


@SETTINGS
@given(seeds=st.lists(st.integers(0, 2**32), min_size=2, max_size=2, unique=True))
def test_category_order_varies_with_the_seed(seeds):
    """Not only the within-block shuffles: the block order itself follows the run's seed (the reference
    code's fixed seed is the defect this guards against). 8 categories: 8! possible block orders."""
    items = rich_items(0, per_cell=1, n_categories=8)
    blocks = [[r[0] for r in run_labels(cats_of(get_strategy("blocked")(items, s), items))] for s in seeds]
    assert blocks[0] != blocks[1]


# ------------------------------------------------------------------------------------------------ structure


@SETTINGS
@given(items=item_lists(), seed=st.integers(0, 2**32))
def test_blocked_keeps_each_category_contiguous(items, seed):
    runs = run_labels(cats_of(get_strategy("blocked")(items, seed), items))
    assert len(runs) == len({it.category for it in items})


@SETTINGS
@given(items=item_lists(), seed=st.integers(0, 2**32))
def test_curriculum_never_puts_a_harder_bucket_first(items, seed):
    by_id = {it.id: it for it in items}
    ranks = [RANK[by_id[i].bucket] for i in get_strategy("curriculum")(items, seed)]
    assert ranks == sorted(ranks)
    anti = [RANK[by_id[i].bucket] for i in get_strategy("anti-curriculum")(items, seed)]
    assert anti == sorted(anti, reverse=True)


@SETTINGS
@given(items=item_lists(), seed=st.integers(0, 2**32))
def test_strict_curriculum_sorts_by_continuous_difficulty(items, seed):
    by_id = {it.id: it for it in items}
    d = [by_id[i].difficulty for i in get_strategy("curriculum-strict")(items, seed)]
    assert d == sorted(d)
    d = [by_id[i].difficulty for i in get_strategy("anti-curriculum-strict")(items, seed)]
    assert d == sorted(d, reverse=True)


def test_strict_curriculum_breaks_ties_by_seed():
    items = [OrderItem(f"t{i}", None, 0.5, None) for i in range(12)]
    orders = {tuple(get_strategy("curriculum-strict")(items, s)) for s in range(5)}
    assert len(orders) > 1


@SETTINGS
@given(items=item_lists(), seed=st.integers(0, 2**32))
def test_interleaved_items_cycles_through_categories(items, seed):
    seq = cats_of(get_strategy("interleaved-items")(items, seed), items)
    assert_cycles(seq)
    m = len(set(seq))
    assert len(set(seq[:m])) == m  # the first round visits every category


@SETTINGS
@given(items=item_lists(), seed=st.integers(0, 2**32), k=st.integers(1, 5))
def test_interleaved_chunks_cycle_through_categories(items, seed, k):
    seq = cats_of(get_strategy("interleaved")(items, seed, k=k), items)
    runs = run_labels(seq)
    labels = [r[0] for r in runs]
    assert_cycles(labels)
    sizes = Counter(it.category for it in items)
    full = len(sizes) > 1 and min(sizes.values()) >= k  # no empty chunk, so no two chunks merge into one run
    for c, size in sizes.items():
        lengths = [n for lab, n in runs if lab == c]
        assert len(lengths) <= min(k, size)
        if full:
            assert len(lengths) == k
            assert max(lengths) - min(lengths) <= 1  # k near-equal chunks
    if full:
        m = len(sizes)
        assert labels == labels[:m] * k  # k full rounds in the same category order


@SETTINGS
@given(items=item_lists(), seed=st.integers(0, 2**32))
def test_blocked_curriculum_satisfies_both_constraints(items, seed):
    by_id = {it.id: it for it in items}
    order = get_strategy("blocked-curriculum")(items, seed)
    runs = run_labels([by_id[i].category for i in order])
    assert len(runs) == len({it.category for it in items})
    pos = 0
    for _, n in runs:
        ranks = [RANK[by_id[i].bucket] for i in order[pos : pos + n]]
        assert ranks == sorted(ranks)
        pos += n


@SETTINGS
@given(items=item_lists(), seed=st.integers(0, 2**32), k=st.sampled_from([1, 2, 3, "items"]))
def test_interleaved_curriculum_satisfies_both_constraints(items, seed, k):
    by_id = {it.id: it for it in items}
    order = get_strategy("interleaved-curriculum")(items, seed, k=k)
    ranks = [RANK[by_id[i].bucket] for i in order]
    assert ranks == sorted(ranks)
    for b in BUCKETS:
        part = [by_id[i].category for i in order if by_id[i].bucket == b]
        assert_cycles(part if k == "items" else [r[0] for r in run_labels(part)])


def test_interleaved_uses_the_same_category_order_in_every_bucket():
    items = rich_items(3)
    order = get_strategy("interleaved-curriculum")(items, 11, k="items")
    by_id = {it.id: it for it in items}
    firsts = []
    for b in BUCKETS:
        part = [by_id[i].category for i in order if by_id[i].bucket == b]
        firsts.append(part[:4])
    assert firsts[0] == firsts[1] == firsts[2]
    assert sorted(firsts[0]) == ["cat0", "cat1", "cat2", "cat3"]


# ------------------------------------------------------------------------------------------------ pacing


def linear_competence(t, c0, ramp):
    return min(1.0, c0 + (1 - c0) * min(1.0, t / ramp))


@SETTINGS
@given(items=item_lists(min_size=2), seed=st.integers(0, 2**32), length=st.integers(1, 120),
       c0=st.floats(0.05, 1.0), ramp=st.floats(0.1, 1.0), sampling=st.sampled_from(["balanced", "uniform"]))
def test_pacing_draws_only_from_the_eligible_pool(items, seed, length, c0, ramp, sampling):
    order = get_strategy("pacing")(items, seed, length=length, c0=c0, ramp=ramp, sampling=sampling)
    assert len(order) == length
    by_id = {it.id: it for it in items}
    ranked = sorted(it.difficulty for it in items)
    n = len(items)
    for p, i in enumerate(order):
        pool = max(1, math.ceil(linear_competence(p / length, c0, ramp) * n - 1e-9))
        assert by_id[i].difficulty <= ranked[min(n, pool) - 1]


@SETTINGS
@given(items=item_lists(), seed=st.integers(0, 2**32))
def test_pacing_with_full_competence_is_a_permutation(items, seed):
    order = get_strategy("pacing")(items, seed, c0=1.0)
    assert sorted(order) == sorted(it.id for it in items)


@SETTINGS
@given(items=item_lists(min_size=6), seed=st.integers(0, 2**32), steps=st.integers(1, 4),
       length=st.integers(10, 100))
def test_pacing_step_schedule_opens_slices_in_turn(items, seed, steps, length):
    order = get_strategy("pacing")(items, seed, schedule="step", steps=steps, ramp=1.0, length=length)
    assert len(order) == length
    n = len(items)
    rank = {it.id: r for r, it in enumerate(sorted(items, key=lambda it: it.difficulty))}
    for p, i in enumerate(order):
        stage = math.floor(p / length * steps)
        assert rank[i] < math.ceil((stage + 1) / steps * n - 1e-9)


def test_pacing_balanced_sampling_covers_every_item():
    items = rich_items(1)
    n = len(items)
    order = get_strategy("pacing")(items, 4, length=2 * n, ramp=0.5)
    counts = Counter(order)
    assert set(counts) == {it.id for it in items}


def test_pacing_falls_back_to_buckets_without_continuous_difficulty():
    items = [OrderItem(f"b{i}", None, None, BUCKETS[i % 3]) for i in range(30)]
    order = get_strategy("pacing")(items, 0, c0=1 / 3, ramp=1.0, schedule="step", steps=3)
    first_third = {i for i in order[:10]}
    assert all(i in {f"b{j}" for j in range(0, 30, 3)} for i in first_third)  # only easy items


# ------------------------------------------------------------------------------------------------ spaced


@SETTINGS
@given(items=item_lists(), seed=st.integers(0, 2**32), reviews=st.integers(0, 4), first=st.integers(1, 6),
       growth=st.sampled_from([1.0, 1.5, 2.0, 3.0]))
def test_spaced_repetition_counts_and_intervals(items, seed, reviews, first, growth):
    order = get_strategy("spaced-repetition")(items, seed, reviews=reviews, first_interval=first, growth=growth)
    n = len(items)
    assert len(order) == n * (1 + reviews)
    assert set(Counter(order).values()) == {1 + reviews}
    firsts = list(dict.fromkeys(order))
    assert firsts == get_strategy("random")(items, seed)  # first showings follow the base order
    last_new = max(order.index(i) for i in firsts)
    positions: dict[str, list[int]] = {}
    for p, i in enumerate(order):
        positions.setdefault(i, []).append(p)
    for ps in positions.values():
        for m in range(len(ps) - 1):
            if ps[m + 1] < last_new:  # while new items remain, a revisit never comes early
                assert ps[m + 1] - ps[m] >= max(1, round(first * growth**m))


def test_spaced_repetition_length_option_cuts_and_base_option_applies():
    items = rich_items(2)
    full = get_strategy("spaced-repetition")(items, 5, base="curriculum")
    assert get_strategy("spaced-repetition")(items, 5, base="curriculum", length=10) == full[:10]
    by_id = {it.id: it for it in items}
    firsts = [by_id[i].bucket for i in dict.fromkeys(full)]
    assert firsts == sorted(firsts, key=RANK.get)
    with pytest.raises(ConfigError, match="exceeds"):
        get_strategy("spaced-repetition")(items, 5, length=len(full) + 1)
    with pytest.raises(ConfigError, match="permutation strategy"):
        get_strategy("spaced-repetition")(items, 5, base="pacing")


# ------------------------------------------------------------------------------------------------ errors


def test_missing_category_names_the_first_item():
    items = [OrderItem("a", "x", 0.1, "easy"), OrderItem("b", None, 0.2, "easy"), OrderItem("c", None, 0.3, "easy")]
    for name in ["blocked", "interleaved", "interleaved-items", "blocked-curriculum", "interleaved-curriculum"]:
        with pytest.raises(InputError, match=f"'{name}' needs a category.*item 'b'") as exc:
            get_strategy(name)(items, 0)
        assert exc.value.field == "category"


def test_missing_difficulty_names_the_first_item():
    items = [OrderItem("a", "x", 0.1, "easy"), OrderItem("b", "x", None, None)]
    for name, field in [("curriculum", "bucket"), ("anti-curriculum", "bucket"), ("curriculum-strict", "difficulty"),
                        ("pacing", "bucket")]:
        with pytest.raises(InputError, match="item 'b'") as exc:
            get_strategy(name)(items, 0)
        assert exc.value.field == field


def test_unknown_strategy_and_option_are_clear_errors():
    with pytest.raises(ConfigError, match=r"unknown strategy 'shuffle'.*registered: anti-curriculum, .*random"):
        get_strategy("shuffle")
    with pytest.raises(ConfigError, match=r"unknown strategy 'curriculm'; did you mean 'curriculum'\?"):
        get_strategy("curriculm")
    with pytest.raises(ConfigError, match=r"no option 'kk'.*its options: by, category_order, k\)"):
        get_strategy("interleaved")(rich_items(0), 0, kk=3)
    with pytest.raises(ConfigError, match="k must be a positive integer or 'items'"):
        get_strategy("interleaved")(rich_items(0), 0, k="0")
    with pytest.raises(ConfigError, match="seed must be a non-negative integer"):
        get_strategy("random")(rich_items(0), -1)
    with pytest.raises(InputError, match="duplicate item id 'a'"):
        get_strategy("random")([OrderItem("a"), OrderItem("a")], 0)
    with pytest.raises(InputError, match="bucket must be one of"):
        OrderItem("a", bucket="tricky")


def test_registry_describes_every_strategy():
    names = available_strategies()
    for required in ["random", "blocked", "interleaved", "interleaved-items", "curriculum", "curriculum-strict",
                     "blocked-curriculum", "interleaved-curriculum", "anti-curriculum", "pacing", "spaced-repetition"]:
        assert required in names
        assert names[required] and "\n" not in names[required]


def test_random_strategy_ignores_categories_and_difficulty():
    items = [OrderItem(f"r{i}") for i in range(10)]
    assert sorted(get_strategy("random")(items, 1)) == sorted(it.id for it in items)

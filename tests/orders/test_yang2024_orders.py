"""The reference code's ordering functions as medtune strategies (configs/yang2024-orders.yaml).

Three parts: the table names registered strategies with valid options and agrees with what each function reads;
the variants and the ``category_order`` option hold their properties on generated items; and on the real LEK
items with the paper's LLM difficulty, each function's medtune equivalent has the structure that the reference
code's definition gives (restated below in a few lines each, independently of medtune's code).
"""

from __future__ import annotations

import bisect
import csv
import itertools
import random
import re
import zlib
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medtune.cli import main
from medtune.errors import ConfigError, InputError
from medtune.orders import BUCKETS, STRATEGIES, OrderItem, get_strategy, read_order
from medtune.orders.strategies import CATEGORY_ORDERS
from order_item_lists import category_labels
from shared_data import REPO, shared_path

TABLE = REPO / "configs" / "yang2024-orders.yaml"
RANK = {b: i for i, b in enumerate(BUCKETS)}
SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WITH_CATEGORY_ORDER = [n for n, s in STRATEGIES.items() if "category_order" in s.options]
STRICT = ["blocked-curriculum-strict", "interleaved-curriculum-strict"]
# Named in the reference code's final and head versions of training/data_ordering.py.
REFERENCE_NAMES = {"random_shuffle", "blocked", "interleaved", "curriculum_emh", "curriculum_strict", "blocked_emh",
                   "blocked_curriculum_strict", "interleaved_emh", "interleaved_curriculum_strict",
                   *(f"{f}_{i}" for f in ("random_shuffle", "curriculum_emh") for i in range(1, 5)),
                   *(f"{f}_{i}" for f in ("blocked", "blocked_curriculum_strict", "blocked_emh", "interleaved",
                                          "interleaved_curriculum_strict", "interleaved_emh") for i in range(1, 6))}


def load_table() -> dict:
    return yaml.safe_load(TABLE.read_text())


# ------------------------------------------------------------------------------------------------ the table


def test_the_table_maps_every_reference_function_to_a_registered_strategy_with_valid_options():
    table = load_table()
    functions = table["functions"]
    assert set(functions) | set(table["not_mapped"]) == REFERENCE_NAMES | {"original"}
    commits = set(table["reference"]["commits"])
    for name, entry in functions.items():
        spec = get_strategy(entry["strategy"])  # raises on an unknown name
        resolved = spec.resolve_options(entry["options"])  # raises on an unknown option or a bad value
        assert all(spec.options[k].parse(v) == v for k, v in entry["options"].items()), name  # written as parsed
        assert set(entry["commits"]) <= commits, name
        assert spec.permutation, name  # every reference order is a permutation of its training file
        # what the reference function reads, medtune's strategy reads too (and nothing more)
        assert ("category" in entry["reads"]) == ("category" in spec.needs), name
        assert ("difficulty" in entry["reads"]) == spec.reads_difficulty(resolved), name


def test_the_table_follows_the_reference_variant_numbering():
    """Variants 1 (and the head names) order categories by label, 2 by size, 3 to 5 by a seed."""
    for name, entry in load_table()["functions"].items():
        if "category" not in entry["reads"]:
            continue
        assert entry["options"]["category_order"] == reference_category_rule(name), name


# ------------------------------------------------------------------------------------------------ properties


@st.composite
def item_lists(draw, min_size: int = 1, max_size: int = 40, n_categories: int = 5):
    """Items with a category, a continuous difficulty (ties possible) and the bucket it falls in."""
    labels = draw(category_labels(min_size, max_size, n_categories))
    n = len(labels)
    diffs = draw(st.lists(st.sampled_from([i / 20 for i in range(21)]), min_size=n, max_size=n))
    return [OrderItem(f"q{i:03d}", labels[i], d, paper_bucket(d)) for i, d in enumerate(diffs)]


def eight_categories(seed: int, per_cell: int = 1) -> list[OrderItem]:
    """8 categories × 3 buckets, ``per_cell`` items each: 8! block orders, so two seeds hardly collide."""
    rnd = random.Random(seed)
    lo = {"easy": 0.0, "medium": 0.67, "hard": 0.81}
    return [OrderItem(f"e{c}{b}{j}", f"cat{c}", lo[b] + rnd.random() * 0.12, b)
            for c in range(8) for b in BUCKETS for j in range(per_cell)]


def block_order(order: list[str], by_id: dict[str, OrderItem]) -> list[str]:
    """Categories in the order they first come up."""
    return list(dict.fromkeys(by_id[i].category for i in order))


def run_labels(seq: list) -> list[list]:
    runs: list[list] = []
    for x in seq:
        if not runs or runs[-1][0] != x:
            runs.append([x, 0])
        runs[-1][1] += 1
    return runs


def assert_cycles(seq: list) -> None:
    """Round-robin: between two consecutive occurrences of a value no other value occurs twice."""
    last: dict = {}
    for p, x in enumerate(seq):
        if x in last:
            assert all(v <= 1 for v in Counter(seq[last[x] + 1 : p]).values()), (x, seq)
        last[x] = p


@SETTINGS
@given(items=item_lists(), seed=st.integers(0, 2**32), name=st.sampled_from(WITH_CATEGORY_ORDER),
       rule=st.sampled_from(CATEGORY_ORDERS))
def test_every_category_order_gives_a_deterministic_permutation(items, seed, name, rule):
    spec = get_strategy(name)
    order = spec(items, seed, category_order=rule)
    assert sorted(order) == sorted(it.id for it in items)
    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)
    assert spec(shuffled, seed, category_order=rule) == order


@SETTINGS
@given(items=item_lists(), seeds=st.lists(st.integers(0, 2**32), min_size=2, max_size=2, unique=True),
       name=st.sampled_from(WITH_CATEGORY_ORDER), rule=st.sampled_from(["sorted", "size"]))
def test_sorted_and_size_orders_do_not_depend_on_the_seed(items, seeds, name, rule):
    by_id = {it.id: it for it in items}
    orders = [get_strategy(name)(items, s, category_order=rule) for s in seeds]
    sizes = Counter(it.category for it in items)
    expected = sorted(sizes) if rule == "sorted" else sorted(sizes, key=lambda c: (-sizes[c], c))
    if name == "interleaved-curriculum":
        # Difficulty buckets come first (easy, medium, hard); the category order holds within each bucket.
        for bucket in ("easy", "medium", "hard"):
            present = {it.category for it in items if it.bucket == bucket}
            within = [block_order([i for i in o if by_id[i].bucket == bucket], by_id) for o in orders]
            assert within[0] == within[1] == [c for c in expected if c in present], bucket
        return
    blocks = [block_order(o, by_id) for o in orders]
    assert blocks[0] == blocks[1] == expected


@SETTINGS
@given(seeds=st.lists(st.integers(0, 2**32), min_size=2, max_size=2, unique=True),
       name=st.sampled_from(STRICT))
def test_the_seeded_category_order_of_the_strict_variants_follows_the_seed(seeds, name):
    items = eight_categories(0)
    by_id = {it.id: it for it in items}
    blocks = [block_order(get_strategy(name)(items, s), by_id) for s in seeds]
    assert blocks[0] != blocks[1] and sorted(blocks[0]) == sorted(blocks[1])


def test_size_order_puts_the_largest_category_first_and_breaks_ties_by_label():
    items = [OrderItem(f"s{i:02d}", cat, 0.1, "easy") for i, cat in enumerate("bbbaaacccccdd")]
    by_id = {it.id: it for it in items}
    for name in WITH_CATEGORY_ORDER:
        for seed in (0, 1, 2):
            assert block_order(get_strategy(name)(items, seed, category_order="size"), by_id) == ["c", "a", "b", "d"]


@pytest.mark.parametrize("name", WITH_CATEGORY_ORDER)
def test_seeded_is_the_default_and_is_not_recorded_in_the_options(name):
    spec = get_strategy(name)
    items = eight_categories(4, per_cell=2)
    assert spec(items, 9) == spec(items, 9, category_order="seeded")
    assert spec.resolve_options({"category_order": "seeded"}) == spec.resolve_options({})
    assert "category_order" not in spec.resolve_options({})
    assert spec.resolve_options({"category_order": "size"})["category_order"] == "size"
    with pytest.raises(ConfigError, match="category_order must be one of seeded, sorted, size, got 'biggest'"):
        spec(items, 0, category_order="biggest")


@SETTINGS
@given(items=item_lists(), seed=st.integers(0, 2**32), rule=st.sampled_from(CATEGORY_ORDERS))
def test_blocked_curriculum_strict_sorts_each_category_block_by_difficulty(items, seed, rule):
    by_id = {it.id: it for it in items}
    order = get_strategy("blocked-curriculum-strict")(items, seed, category_order=rule)
    runs = run_labels([by_id[i].category for i in order])
    assert len(runs) == len({it.category for it in items})  # each category one contiguous block
    pos = 0
    for _, n in runs:
        d = [by_id[i].difficulty for i in order[pos : pos + n]]
        assert d == sorted(d)
        pos += n


@SETTINGS
@given(items=item_lists(), seed=st.integers(0, 2**32), k=st.integers(1, 5), rule=st.sampled_from(CATEGORY_ORDERS))
def test_interleaved_curriculum_strict_rounds_hold_ever_harder_shares_of_each_category(items, seed, k, rule):
    by_id = {it.id: it for it in items}
    order = get_strategy("interleaved-curriculum-strict")(items, seed, k=k, category_order=rule)
    runs = run_labels([by_id[i].category for i in order])
    labels = [r[0] for r in runs]
    assert_cycles(labels)
    for c in {it.category for it in items}:
        d = [by_id[i].difficulty for i in order if by_id[i].category == c]
        assert d == sorted(d)  # a category's chunks come easiest first, each sorted
    sizes = Counter(it.category for it in items)
    if len(sizes) > 1 and min(sizes.values()) >= k:  # no empty chunk, so no two chunks merge into one run
        m = len(sizes)
        assert labels == labels[:m] * k  # k full rounds in one category order
        for c in sizes:
            lengths = [n for lab, n in runs if lab == c]
            assert len(lengths) == k and max(lengths) - min(lengths) <= 1


@SETTINGS
@given(items=item_lists(), seed=st.integers(0, 2**32), rule=st.sampled_from(CATEGORY_ORDERS))
def test_interleaved_curriculum_with_k1_gives_one_block_per_category_in_each_bucket(items, seed, rule):
    by_id = {it.id: it for it in items}
    order = get_strategy("interleaved-curriculum")(items, seed, k=1, category_order=rule)
    ranks = [RANK[by_id[i].bucket] for i in order]
    assert ranks == sorted(ranks)  # bucket sequence monotone
    sizes = Counter(it.category for it in items)
    before: set[tuple[str, str]] = set()
    for b in BUCKETS:
        part = [by_id[i].category for i in order if by_id[i].bucket == b]
        blocks = [r[0] for r in run_labels(part)]
        assert sorted(blocks) == sorted(set(part))  # each category present in the bucket: exactly one block
        before |= set(itertools.combinations(blocks, 2))
        if rule == "sorted":
            assert blocks == sorted(blocks)
        elif rule == "size":
            assert blocks == sorted(blocks, key=lambda c: (-sizes[c], c))  # sizes over all buckets
    assert not any((b, a) in before for a, b in before)  # one category order for every bucket


def test_interleaved_curriculum_default_is_unchanged_by_the_new_options():
    """k stays 3 chunks per category per bucket unless k: 1 is asked for."""
    items = eight_categories(1, per_cell=6)
    by_id = {it.id: it for it in items}
    spec = get_strategy("interleaved-curriculum")
    assert spec.resolve_options({}) == {"k": 3}
    default = spec(items, 2)
    assert default == spec(items, 2, k=3)
    assert len(run_labels([(by_id[i].bucket, by_id[i].category) for i in default])) == 3 * 8 * 3
    assert len(run_labels([(by_id[i].bucket, by_id[i].category) for i in spec(items, 2, k=1)])) == 3 * 8


def test_the_strict_variants_name_the_item_that_lacks_what_they_read():
    for name in STRICT:
        items = [OrderItem("a", "x", 0.1), OrderItem("b", None, 0.2)]
        with pytest.raises(InputError, match=f"'{name}' needs a category.*item 'b'") as exc:
            get_strategy(name)(items, 0)
        assert exc.value.field == "category"
        items = [OrderItem("a", "x", 0.1), OrderItem("b", "x", None, "easy")]
        with pytest.raises(InputError, match=f"'{name}' needs a difficulty.*item 'b'") as exc:
            get_strategy(name)(items, 0)
        assert exc.value.field == "difficulty"
        assert get_strategy(name).reads_difficulty()


# ------------------------------------------------------------------------------------------------ the reference
# What each reference function computes, restated from its definition: the structure of its output as the
# runs of a label along the order, and (where it sorts by difficulty) the sequence of difficulties.

EASY_MAX, MEDIUM_MAX = 0.66, 0.80  # the reference file's thresholds; higher llm_difficulty = harder


def paper_bucket(d: float) -> str:
    return "easy" if d <= EASY_MAX else "medium" if d <= MEDIUM_MAX else "hard"


def reference_family(name: str) -> str:
    return re.sub(r"_\d$", "", name)


def reference_category_rule(name: str) -> str:
    """groupby (variant 1 and the head names) sorts labels; variant 2 uses value_counts; 3 to 5 shuffle."""
    m = re.search(r"_(\d)$", name)
    variant = int(m.group(1)) if m else 1
    return {1: "sorted", 2: "size"}.get(variant, "seeded")


def reference_categories(rule: str, rows: list[dict], seen: list[str]) -> list[str]:
    """The category order: label order; or value_counts' (most rows first, ties in order of first appearance
    in the file); or, for the seeded variants, whatever permutation the order under test shows."""
    if rule == "sorted":
        return sorted({r["category"] for r in rows})
    if rule == "size":
        first_seen = list(dict.fromkeys(r["category"] for r in rows))
        sizes = Counter(r["category"] for r in rows)
        return sorted(first_seen, key=lambda c: -sizes[c])
    assert sorted(seen) == sorted({r["category"] for r in rows})  # a permutation of the categories
    return seen


def thirds(n: int) -> list[int]:
    """Sizes of three near-equal consecutive parts, the larger ones first (numpy's array_split)."""
    return [n // 3 + (1 if r < n % 3 else 0) for r in range(3)]


def reference_structure(family: str, rows: list[dict], cats: list[str]) -> tuple[list, list | None]:
    """(runs as [label, length], difficulty sequence or None) of the reference function ``family``."""
    by_cat = {c: [r for r in rows if r["category"] == c] for c in cats}
    cell = Counter((r["category"], paper_bucket(r["difficulty"])) for r in rows)
    easiest_first = {c: sorted(r["difficulty"] for r in by_cat[c]) for c in cats}
    if family == "random_shuffle":
        return [], None
    if family == "curriculum_emh":
        return [[b, sum(1 for r in rows if paper_bucket(r["difficulty"]) == b)] for b in BUCKETS], None
    if family == "curriculum_strict":
        d = sorted(r["difficulty"] for r in rows)
        return [[b, n] for b, n in run_labels([paper_bucket(x) for x in d])], d
    if family == "blocked":
        return [[c, len(by_cat[c])] for c in cats], None
    if family == "blocked_curriculum_strict":
        return [[c, len(by_cat[c])] for c in cats], [d for c in cats for d in easiest_first[c]]
    if family == "blocked_emh":
        return [[(c, b), cell[c, b]] for c in cats for b in BUCKETS if cell[c, b]], None
    if family in ("interleaved", "interleaved_curriculum_strict"):
        runs, d = [], []
        for part in range(3):
            for c in cats:
                sizes = thirds(len(by_cat[c]))
                start = sum(sizes[:part])
                if sizes[part]:
                    runs.append([c, sizes[part]])
                    d.extend(easiest_first[c][start : start + sizes[part]])
        return runs, (d if family == "interleaved_curriculum_strict" else None)
    if family == "interleaved_emh":
        return [[(b, c), cell[c, b]] for b in BUCKETS for c in cats if cell[c, b]], None
    raise AssertionError(f"no restatement for {family}")


def run_label(family: str, row: dict):
    """What the runs of ``family`` are runs of."""
    b = paper_bucket(row["difficulty"])
    if family in ("curriculum_emh", "curriculum_strict"):
        return b
    if family == "blocked_emh":
        return (row["category"], b)
    if family == "interleaved_emh":
        return (b, row["category"])
    return row["category"]


def label_parts(family: str, label) -> tuple[str | None, str | None]:
    """(category, bucket) named by a run label of ``family`` (None where the label does not name it)."""
    if family in ("curriculum_emh", "curriculum_strict"):
        return None, label
    if family == "blocked_emh":
        return label
    if family == "interleaved_emh":
        return label[1], label[0]
    return label, None


def category_runs(family: str, runs: list) -> list[str]:
    """The categories of consecutive runs, merged where one category continues."""
    return [c for c, _ in run_labels([label_parts(family, lab)[0] for lab, _ in runs])]


def bucket_sequence(family: str, runs: list, difficulty: list[float] | None) -> list[str]:
    """The bucket of each position: from the difficulty sequence, else from runs whose labels name a bucket."""
    if difficulty is not None:
        return [paper_bucket(d) for d in difficulty]
    return [label_parts(family, lab)[1] for lab, n in runs for _ in range(n)]


def count_rounds(cats: list[str]) -> int:
    """A round ends where a category comes up a second time."""
    rounds, seen = 0, set()
    for c in cats:
        if not rounds or c in seen:
            rounds, seen = rounds + 1, set()
        seen.add(c)
    return rounds


# ------------------------------------------------------------------------------------------------ LEK

LEK_FILE = "Llama-2-7b-chat-hf.json"
WEIGHTS = (4, 5, 6, 7, 8, 9, 10, 11)  # unequal, so that the size order differs from label order and has no ties
CUMULATIVE = list(itertools.accumulate(WEIGHTS))


def lek_category(item_id: str) -> str:
    """A fixed category per question: a stable hash (CRC-32) of its id, into 8 categories c0 … c7."""
    return f"c{bisect.bisect_right(CUMULATIVE, zlib.crc32(item_id.encode()) % CUMULATIVE[-1])}"


@pytest.fixture(scope="module")
def lek(tmp_path_factory) -> tuple[Path, Path, list[dict]]:
    """(items.parquet with categories, difficulty.parquet joined by position, rows in file order)."""
    from medtune.data import load
    from medtune.schema import write_items

    folder = tmp_path_factory.mktemp("lek")
    items = load("lek", shared_path("lek", LEK_FILE)).items
    for it in items:
        it.category = lek_category(it.id)
    items_path = write_items(items, folder / "items.parquet")
    table = shared_path("oxford_llm_difficulty", "llm_difficulty_lek.csv")
    diff_path = folder / "difficulty.parquet"
    assert main(["difficulty", "import", str(table), "--items", str(items_path), "--key-column", "Index",
                 "--value-column", "llm_difficulty", "--key", "position", "-o", str(diff_path)]) == 0
    with open(table, newline="") as f:
        by_position = {int(r["Index"]): float(r["llm_difficulty"]) for r in csv.DictReader(f)}
    rows = [{"id": it.id, "category": it.category, "difficulty": by_position[it.meta["position"]]}
            for it in sorted(items, key=lambda it: it.meta["position"])]
    return items_path, diff_path, rows


def test_lek_buckets_and_categories_are_what_the_comparison_assumes(lek):
    _, _, rows = lek
    assert Counter(paper_bucket(r["difficulty"]) for r in rows) == {"easy": 657, "medium": 127, "hard": 90}
    sizes = Counter(r["category"] for r in rows)
    assert len(sizes) == 8 and len(set(sizes.values())) == 8  # no two categories of one size
    assert reference_categories("size", rows, []) != reference_categories("sorted", rows, [])
    cells = Counter((r["category"], paper_bucket(r["difficulty"])) for r in rows)
    assert len(cells) == 24  # every category has easy, medium and hard questions


@pytest.mark.parametrize("name", sorted(load_table()["functions"]))
def test_each_reference_function_has_its_structure_on_lek(lek, name, tmp_path):
    items_path, diff_path, rows = lek
    entry = load_table()["functions"][name]
    options = [a for k, v in entry["options"].items() for a in ("-O", f"{k}={v}")]
    out = tmp_path / "order.json"
    assert main(["order", str(items_path), "-s", entry["strategy"], *options,
                 "--seed", str(entry.get("reference_seed", 0)), "--difficulty", str(diff_path), "-o", str(out)]) == 0
    order = read_order(out)["epochs"][0]
    by_id = {r["id"]: r for r in rows}
    assert sorted(order) == sorted(by_id)

    family = reference_family(name)
    seen = list(dict.fromkeys(by_id[i]["category"] for i in order))
    rule = reference_category_rule(name) if "category" in entry["reads"] else "sorted"
    expected_runs, expected_difficulty = reference_structure(family, rows, reference_categories(rule, rows, seen))
    got_runs = run_labels([run_label(family, by_id[i]) for i in order])

    assert Counter(paper_bucket(by_id[i]["difficulty"]) for i in order) == {"easy": 657, "medium": 127, "hard": 90}
    if not expected_runs:  # random: no structure beyond being a permutation
        return
    assert [lab for lab, _ in got_runs] == [lab for lab, _ in expected_runs]
    assert all(abs(g - e) <= 1 for (_, g), (_, e) in zip(got_runs, expected_runs, strict=True))
    if "difficulty" in entry["reads"]:
        expected_buckets = bucket_sequence(family, expected_runs, expected_difficulty)
        assert [paper_bucket(by_id[i]["difficulty"]) for i in order] == expected_buckets
        if expected_difficulty is None:  # easy/medium/hard blocks: each block is a whole (category, bucket) cell
            assert [g for _, g in got_runs] == [e for _, e in expected_runs]
        else:
            assert [by_id[i]["difficulty"] for i in order] == expected_difficulty
    if "category" in entry["reads"]:
        expected_cats, got_cats = category_runs(family, expected_runs), category_runs(family, got_runs)
        assert got_cats == expected_cats
        assert count_rounds(got_cats) == count_rounds(expected_cats)
        interleaved = family.startswith("interleaved")
        assert (len(expected_cats), count_rounds(expected_cats)) == ((24, 3) if interleaved else (8, 1))

"""order.json planning (epochs, segments, provenance) and the items → OrderItem inputs."""

from __future__ import annotations

import itertools
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medtune.errors import ConfigError, InputError
from medtune.orders import (
    BUCKETS,
    FORMAT,
    STRATEGIES,
    OrderItem,
    bucket_by_thresholds,
    build_order,
    order_items,
    read_categories_table,
    read_difficulty_table,
    read_order,
    tercile_thresholds,
    write_order,
)
from medtune.schema import MCQItem
from order_item_lists import category_labels

# The item generator below is test_orders.py's with a smaller default size (category labels: order_item_lists.py).


@st.composite
def item_lists(draw, min_size: int = 1, max_size: int = 30, n_categories: int = 4):
    labels = draw(category_labels(min_size, max_size, n_categories))
    n = len(labels)
    diffs = draw(st.lists(st.floats(0, 1, allow_nan=False), min_size=n, max_size=n, unique=True))
    return [OrderItem(f"q{i:03d}", labels[i], d, bucket_by_thresholds([d])[0])
            for i, d in enumerate(diffs)]


def rich_items(seed: int, per_cell: int = 4, n_categories: int = 4) -> list[OrderItem]:
    rnd = random.Random(seed)
    lo = {"easy": 0.0, "medium": 0.67, "hard": 0.81}
    return [OrderItem(f"x{(c * 3 + b) * per_cell + j:03d}", f"cat{c}", lo[bucket] + rnd.random() * 0.12, bucket)
            for c in range(n_categories) for b, bucket in enumerate(BUCKETS) for j in range(per_cell)]


def run_labels(seq):
    runs = []
    for x in seq:
        if not runs or runs[-1][0] != x:
            runs.append([x, 0])
        runs[-1][1] += 1
    return runs

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(items=item_lists(), seed=st.integers(0, 10_000), name=st.sampled_from(list(STRATEGIES)),
       epochs=st.integers(1, 3), policy=st.sampled_from(["repeat", "reshuffle"]))
def test_build_order_has_the_contract_fields_and_consistent_segments(items, seed, name, epochs, policy):
    plan = build_order(items, name, seed, epochs=epochs, epoch_policy=policy)
    assert plan["format"] == FORMAT and plan["strategy"] == name and plan["seed"] == seed
    assert plan["epoch_policy"] == policy and plan["n_items"] == len(items)
    assert len(plan["epochs"]) == epochs
    # defaults recorded, but for options whose default is left out (so adding one keeps older orders' keys)
    assert set(plan["options"]) == {k for k, o in STRATEGIES[name].options.items() if not o.omit_default}
    assert plan["input_hashes"]["items"]
    starts = [s["start"] for s in plan["segments"]]
    assert starts[0] == 0 and starts == sorted(set(starts)) and starts[-1] < len(plan["epochs"][0])
    if policy == "repeat":
        assert all(e == plan["epochs"][0] for e in plan["epochs"])
    json.dumps(plan)  # serialisable as is


def test_reshuffle_redraws_within_blocks_but_keeps_the_block_order():
    items = rich_items(0)
    by_id = {it.id: it for it in items}
    plan = build_order(items, "blocked", 7, epochs=3, epoch_policy="reshuffle")
    blocks = [[r[0] for r in run_labels([by_id[i].category for i in e])] for e in plan["epochs"]]
    assert blocks[0] == blocks[1] == blocks[2]
    assert len({tuple(e) for e in plan["epochs"]}) == 3
    cur = build_order(items, "curriculum", 7, epochs=2, epoch_policy="reshuffle")
    assert cur["epochs"][0] != cur["epochs"][1]
    assert [by_id[i].bucket for i in cur["epochs"][0]] == [by_id[i].bucket for i in cur["epochs"][1]]
    # epoch 0 of a reshuffled plan is the same as the single-epoch plan
    assert plan["epochs"][0] == build_order(items, "blocked", 7)["epochs"][0]



def test_random_draws_a_new_permutation_every_epoch():
    """Several epochs of a random order are several shuffles (each of all the items), not one shuffle repeated:
    the comparison with random shuffle assumes the baseline reshuffles as a data loader with shuffle=True does."""
    items = rich_items(0)
    plan = build_order(items, "random", 3, epochs=4, epoch_policy="reshuffle")
    assert all(sorted(e) == sorted(it.id for it in items) for e in plan["epochs"])
    assert len({tuple(e) for e in plan["epochs"]}) == 4
    assert plan["epochs"][1] == build_order(items, "random", 3, epochs=2, epoch_policy="reshuffle")["epochs"][1]

def test_segments_mark_the_strategy_structure():
    items = rich_items(1)
    cur = build_order(items, "curriculum", 0)
    assert [s["label"] for s in cur["segments"]] == list(BUCKETS)
    assert [s["start"] for s in cur["segments"]] == [0, 16, 32]
    blk = build_order(items, "blocked", 0)
    assert sorted(s["label"] for s in blk["segments"]) == ["cat0", "cat1", "cat2", "cat3"]
    inter = build_order(items, "interleaved", 0, k=3)
    assert len(inter["segments"]) == 12
    rounds = build_order(items, "interleaved-items", 0)["segments"]
    assert len(rounds) == 12 and all(b["start"] - a["start"] == 4 for a, b in itertools.pairwise(rounds))
    step = build_order(items, "pacing", 0, schedule="step", steps=3, ramp=1.0)["segments"]
    assert [s["label"] for s in step] == ["pool 33%", "pool 67%", "pool 100%"]


def test_options_are_parsed_from_strings_and_errors_are_clear():
    items = rich_items(0)
    plan = build_order(items, "pacing", 1, schedule="root", c0="0.3", length="100")
    assert plan["options"]["c0"] == 0.3 and plan["options"]["length"] == 100 and len(plan["epochs"][0]) == 100
    assert build_order(items, "interleaved", 1, k="items")["options"]["k"] == "items"
    with pytest.raises(ConfigError, match="epoch_policy must be one of repeat, reshuffle"):
        build_order(items, "random", 1, epoch_policy="shuffle")
    with pytest.raises(ConfigError, match="epochs must be a positive integer"):
        build_order(items, "random", 1, epochs=0)
    with pytest.raises(ConfigError, match="schedule must be one of linear, root, step"):
        build_order(items, "pacing", 1, schedule="cosine")
    with pytest.raises(ConfigError, match=r"c0 must be in \(0.0, 1.0\]"):
        build_order(items, "pacing", 1, c0=0)


def test_write_and_read_order_round_trip(tmp_path):
    plan = build_order(rich_items(0), "interleaved-curriculum", 3, epochs=2, epoch_policy="reshuffle",
                       input_hashes={"items": "abc"})
    path = write_order(plan, tmp_path / "order.json")
    assert read_order(path) == plan
    assert len(path.read_text().splitlines()) < 30  # one line per epoch, not one per id
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**plan, "format": "other/9"}))
    with pytest.raises(InputError, match="unsupported format"):
        read_order(bad)
    bad.write_text(json.dumps({**plan, "epochs": [[1, 2]]}))
    with pytest.raises(InputError, match="epoch 0 is not a list of id strings"):
        read_order(bad)
    bad.write_text("{trunc")
    with pytest.raises(InputError, match="not a JSON file"):
        read_order(bad)


# ------------------------------------------------------------------------------------------------ inputs


def mcq(i: int, category=None, hd=None) -> MCQItem:
    return MCQItem(id=f"m{i}", question=f"q {i}?", options=["a", "b"], answer=0, source="t", split="train",
                   category=category, human_difficulty=hd)


def test_levels_become_buckets_and_floats_are_bucketed_by_the_paper_thresholds():
    items = [mcq(0, "a", "easy"), mcq(1, "b", "hard"), mcq(2, "a", 0.66), mcq(3, "b", 0.7), mcq(4, None, 0.81)]
    out = order_items(items)
    assert [(o.category, o.difficulty, o.bucket) for o in out] == [
        ("a", None, "easy"), ("b", None, "hard"), ("a", 0.66, "easy"), ("b", 0.7, "medium"), (None, 0.81, "hard")]


@given(values=st.lists(st.floats(0, 1, allow_nan=False), min_size=3, max_size=60, unique=True))
def test_tercile_bucketing_gives_near_equal_buckets(values):
    buckets = bucket_by_thresholds(values, tercile_thresholds(values))
    counts = [buckets.count(b) for b in BUCKETS]
    assert max(counts) - min(counts) <= 2
    # monotone: a harder value never lands in an easier bucket
    rank = {b: i for i, b in enumerate(BUCKETS)}
    pairs = sorted(zip(values, buckets, strict=True))
    assert [rank[b] for _, b in pairs] == sorted(rank[b] for _, b in pairs)


def _write(path, columns: dict):
    pq.write_table(pa.table(columns), path)
    return path


def test_files_override_the_items_own_fields(tmp_path):
    items = [mcq(i, "given", "easy") for i in range(4)]
    cats = _write(tmp_path / "c.parquet", {"id": [f"m{i}" for i in range(4)], "category": ["c1", "c2", "c1", "c2"],
                                          "probability": [1.0] * 4, "name": ["x", "y", "x", "y"]})
    diff = _write(tmp_path / "d.parquet", {"id": [f"m{i}" for i in range(4)], "difficulty": [0.1, 0.5, 0.7, 0.9],
                                          "bucket": ["easy", "easy", "hard", "hard"]})
    out = order_items(items, categories=read_categories_table(cats), difficulty=read_difficulty_table(diff))
    assert [o.category for o in out] == ["c1", "c2", "c1", "c2"]
    assert [o.bucket for o in out] == ["easy", "easy", "hard", "hard"]  # the file's own buckets
    out = order_items(items, difficulty=read_difficulty_table(diff), bucketing="thresholds")
    assert [o.bucket for o in out] == ["easy", "easy", "medium", "hard"]
    out = order_items(items, difficulty=read_difficulty_table(diff), bucketing="terciles")
    assert [o.bucket for o in out].count("easy") >= 1 and out[-1].bucket == "hard"


def test_missing_rows_and_bad_files_name_the_place(tmp_path):
    items = [mcq(0, "a", "easy"), mcq(1, "a", "easy")]
    cats = _write(tmp_path / "c.parquet", {"id": ["m0"], "category": ["c1"]})
    with pytest.raises(InputError, match="item 'm1' has no row in this file") as exc:
        order_items(items, categories=read_categories_table(cats))
    assert exc.value.file == str(cats)
    nocol = _write(tmp_path / "n.parquet", {"id": ["m0"], "score": [0.1]})
    with pytest.raises(InputError, match="not a difficulty file: no 'difficulty' column"):
        read_difficulty_table(nocol)
    dup = _write(tmp_path / "dup.parquet", {"id": ["m0", "m0"], "category": ["a", "b"]})
    with pytest.raises(InputError, match="duplicate id 'm0'"):
        read_categories_table(dup)
    with pytest.raises(InputError, match="file not found"):
        read_categories_table(tmp_path / "nope.parquet")
    with pytest.raises(InputError, match="thresholds must be two increasing numbers") as exc:
        order_items([mcq(0, "a", 0.5)], thresholds=(0.8, 0.6))
    assert exc.value.field == "thresholds"


def test_a_table_row_of_an_id_outside_the_items_file_is_named_by_row(tmp_path):
    """A table over more items than are ordered is fine when they are in the items file (another split);
    an id the file does not hold means the table belongs to other items."""
    items = [mcq(0, "a", "easy"), mcq(1, "a", "easy")]
    file_ids = ["m0", "m1", "m2"]  # m2: an item of another split, not ordered here
    diff = _write(tmp_path / "d.parquet", {"id": ["m0", "m1", "m2"], "difficulty": [0.1, 0.9, 0.5]})
    out = order_items(items, difficulty=read_difficulty_table(diff), file_ids=file_ids)
    assert [(o.id, o.difficulty, o.bucket) for o in out] == [("m0", 0.1, "easy"), ("m1", 0.9, "hard")]
    stray = _write(tmp_path / "s.parquet", {"id": ["m0", "m1", "zz9"], "category": ["c", "c", "c"]})
    with pytest.raises(InputError) as exc:
        order_items(items, categories=read_categories_table(stray), file_ids=file_ids)
    assert str(exc.value).startswith(f"{stray}, row 3, field 'id': id 'zz9' is not an item of the items file")
    with pytest.raises(InputError, match="id 'zz9'"):
        order_items(items, difficulty=read_difficulty_table(_write(tmp_path / "s2.parquet", {
            "id": ["zz9", "m0", "m1"], "difficulty": [0.1, 0.2, 0.3]})), file_ids=file_ids)
    # Without the file's ids (a caller that has only the items) the rows of other items are not judged.
    assert len(order_items(items, categories=read_categories_table(stray))) == 2


def test_a_non_numeric_difficulty_is_an_input_error_at_its_row(tmp_path):
    words = _write(tmp_path / "w.parquet", {"id": ["m0", "m1"], "difficulty": ["0.5", "hard-ish"]})
    with pytest.raises(InputError) as exc:
        read_difficulty_table(words)
    assert str(exc.value) == f"{words}, row 2, field 'difficulty': difficulty must be a number, got 'hard-ish'"
    irt = _write(tmp_path / "i.parquet", {"id": ["m0"], "difficulty": [0.5], "irt_b": ["high"]})
    with pytest.raises(InputError, match=r"row 1, field 'irt_b': difficulty must be a number, got 'high'"):
        read_difficulty_table(irt, "irt_b")
    endless = _write(tmp_path / "e.parquet", {"id": ["m0", "m1"], "difficulty": [0.2, float("inf")]})
    with pytest.raises(InputError, match=r"row 2, field 'difficulty': difficulty must be a finite number, got inf"):
        read_difficulty_table(endless)
    gaps = read_difficulty_table(_write(tmp_path / "g.parquet", {"id": ["m0", "m1"], "difficulty": [None, 0.7]}))
    assert [r["difficulty"] for r in gaps.rows.values()] == [None, 0.7]


def test_a_duplicate_table_id_names_both_rows(tmp_path):
    dup = _write(tmp_path / "dup.parquet", {"id": ["m0", "m1", "m0"], "category": ["a", "b", "c"]})
    with pytest.raises(InputError) as exc:
        read_categories_table(dup)
    assert str(exc.value) == f"{dup}, row 3, field 'id': duplicate id 'm0' (first seen at row 1)"


def test_order_items_feed_every_strategy():
    items = [mcq(i, f"c{i % 3}", (i * 37 % 100) / 100) for i in range(30)]
    oitems = order_items(items)
    assert all(isinstance(o, OrderItem) for o in oitems)
    for name in STRATEGIES:
        plan = build_order(oitems, name, 2)
        assert set(plan["epochs"][0]) <= {o.id for o in oitems}

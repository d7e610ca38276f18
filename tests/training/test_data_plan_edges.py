"""The data plan at its edges: which epochs a run trains on, where an unknown id is reported, and the step, rank
and micro-batch boundaries at exact multiples. Pure functions, no model."""

from __future__ import annotations

import pytest

from medtune.errors import InputError
from medtune.orders.orderfile import OrderFile
from medtune.training.data import (
    Encoded,
    check_ids_known,
    check_order,
    micro_batches,
    pack_next_fit,
    plan_steps,
    planned_epochs,
    rank_slice,
    read_order,
)


def test_planned_epochs_repeat_the_last_epoch_and_cut_to_the_run():
    epochs = [["a", "b"], ["b", "a"], ["c"]]
    order = {"epochs": epochs}  # no epoch_policy: repeat
    assert planned_epochs(order, 5) == [["a", "b"], ["b", "a"], ["c"], ["c"], ["c"]]
    assert planned_epochs(order, 2) == [["a", "b"], ["b", "a"]]
    assert planned_epochs(order, 3) == epochs
    whole = planned_epochs(order)
    assert whole == epochs and all(got is not given for got, given in zip(whole, epochs, strict=True))


def test_planned_epochs_read_the_policy_of_an_order_file_object():
    of = OrderFile(epochs=[["x", "y"], ["y", "x"]], epoch_policy="reshuffle")
    assert planned_epochs(of, 2) == [["x", "y"], ["y", "x"]]
    assert planned_epochs(of, 1) == [["x", "y"]]
    assert planned_epochs(of) == [["x", "y"], ["y", "x"]]
    with pytest.raises(InputError) as err:
        planned_epochs(of, 3)
    assert err.value.field == "epochs"
    assert err.value.reason == ("the run asks for 3 epochs but the order file holds 2 and its epoch_policy is "
                                "'reshuffle'; build the order with more epochs (medtune order ... --epochs N)")
    repeat = OrderFile(epochs=[["x", "y"]])
    assert planned_epochs(repeat, 2) == [["x", "y"], ["x", "y"]]


def test_an_unknown_id_is_reported_by_epoch_and_position():
    check_ids_known([["a", "b"], ["b", "a"]], {"a", "b"})
    with pytest.raises(InputError) as err:
        check_ids_known([["a", "b"], ["b", "z", "a"]], {"a", "b"}, file="order.json")
    e = err.value
    assert (e.file, e.record, e.field, e.record_kind) == ("order.json", 1, "epochs.1", "position")
    assert "id 'z' is not in the items file" in str(e)


def test_order_objects_and_files_come_back_with_the_defaults_filled_in(tmp_path):
    order = check_order({"format": "medtune.order/1", "epochs": [["a", "b", "a"]]})
    assert order["epoch_policy"] == "repeat" and order["n_items"] == 2 and order["segments"] == []
    path = tmp_path / "o.json"
    OrderFile(epochs=[["q", "r"]], strategy="random", seed=3).write(path)
    assert read_order(path) == OrderFile(epochs=[["q", "r"]], strategy="random", seed=3).to_dict()
    with pytest.raises(InputError) as err:
        check_order({"format": "medtune.order/1"}, file="bad.json")
    assert err.value.file == "bad.json" and err.value.field == "epochs"


def test_plan_steps_at_exact_multiples_and_a_zero_step_cap():
    epochs = [list("abcd"), list("efgh")]
    steps = plan_steps(epochs, 2)
    assert [(s.step, s.epoch, s.start, s.ids) for s in steps] == [
        (1, 0, 0, ("a", "b")), (2, 0, 2, ("c", "d")), (3, 1, 0, ("e", "f")), (4, 1, 2, ("g", "h"))]
    assert plan_steps(epochs, 2, max_steps=0) == []
    assert [s.ids for s in plan_steps(epochs, 3, max_steps=3)] == [("a", "b", "c"), ("d",), ("e", "f", "g")]
    assert [s.ids for s in plan_steps(epochs, 8)] == [tuple("abcd"), tuple("efgh")]


def test_rank_slices_at_exact_and_uneven_splits():
    assert [rank_slice(6, r, 3) for r in range(3)] == [(0, 2), (2, 4), (4, 6)]
    assert [rank_slice(7, r, 3) for r in range(3)] == [(0, 3), (3, 5), (5, 7)]
    assert [rank_slice(2, r, 4) for r in range(4)] == [(0, 1), (1, 2), (2, 2), (2, 2)]
    assert rank_slice(5, 0, 1) == (0, 5)


def test_next_fit_fills_a_bin_exactly_and_gives_a_long_item_its_own():
    assert pack_next_fit([3, 2, 5, 1], 5) == [[0, 1], [2], [3]]
    assert pack_next_fit([7, 1, 1], 5) == [[0], [1, 2]]
    assert pack_next_fit([1, 7], 5) == [[0], [1]]
    assert pack_next_fit([], 5) == []
    assert pack_next_fit([5], 5) == [[0]]
    assert pack_next_fit([1, 1], 1) == [[0], [1]]


def _enc(i: int, n: int) -> Encoded:
    return Encoded(f"x{i}", tuple(range(n)), tuple([-100] * (n - 1) + [1]))


def test_micro_batches_at_exact_multiples():
    batch = [_enc(i, 2 + i) for i in range(4)]  # 2, 3, 4, 5 tokens
    assert micro_batches([], packing=True, batch_size=2, pack_tokens=8) == []
    assert micro_batches([], packing=False, batch_size=2, pack_tokens=8) == []
    assert [[e.id for e in mb] for mb in micro_batches(batch, packing=False, batch_size=2, pack_tokens=0)] == [
        ["x0", "x1"], ["x2", "x3"]]
    assert [[e.id for e in mb] for mb in micro_batches(batch, packing=False, batch_size=4, pack_tokens=0)] == [
        ["x0", "x1", "x2", "x3"]]
    assert [[e.id for e in mb] for mb in micro_batches(batch, packing=True, batch_size=1, pack_tokens=5)] == [
        ["x0", "x1"], ["x2"], ["x3"]]

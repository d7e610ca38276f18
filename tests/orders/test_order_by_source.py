"""Blocked and interleaved orders by source (``by: source``): the groups are the items' sources, not categories."""

from __future__ import annotations

import pytest

from medtune.errors import InputError
from medtune.orders.inputs import order_items
from medtune.orders.plan import build_order
from medtune.orders.strategies import OrderItem, get_strategy
from medtune.schema import MCQItem


def items() -> list[OrderItem]:
    # categories cut across the sources, so grouping by one is visibly not grouping by the other
    return [OrderItem(f"{src}{i}", category="cardio" if i % 2 else "neuro", source=src)
            for src in ("medqa", "mmlu", "wiki") for i in range(6)]


def test_blocked_by_source_makes_one_block_per_source() -> None:
    order = get_strategy("blocked")(items(), 3, by="source")
    sources = [i.rstrip("0123456789") for i in order]
    blocks = [sources[j:j + 6] for j in (0, 6, 12)]
    assert all(len(set(b)) == 1 for b in blocks) and len({b[0] for b in blocks}) == 3  # three blocks of one source
    # the default still blocks by category, as before the option existed
    assert get_strategy("blocked")(items(), 3) == get_strategy("blocked")(items(), 3, by="category")
    assert build_order(items(), "blocked", 3)["options"] == {}  # the default is not stored: keys stay the same


def test_interleaved_items_by_source_alternates_sources() -> None:
    order = get_strategy("interleaved-items")(items(), 0, by="source", category_order="sorted")
    assert [i.rstrip("0123456789") for i in order[:6]] == ["medqa", "mmlu", "wiki"] * 2
    plan = build_order(items(), "interleaved", 0, by="source", k=2, category_order="sorted")
    assert [s["label"] for s in plan["segments"]] == ["medqa", "mmlu", "wiki"] * 2


def test_an_item_without_a_source_is_named() -> None:
    with pytest.raises(InputError, match="needs a source for every item, but item 'x' has none"):
        get_strategy("blocked")([OrderItem("x", category="a")], 0, by="source")


def test_order_items_take_the_mixture_part_else_the_items_source() -> None:
    base = {"question": "Q?", "options": ["a", "b"], "answer": 0, "split": "train"}
    seen = order_items([MCQItem(id="1", source="medqa", meta={"source": "usmle-part"}, **base),
                        MCQItem(id="2", source="mmlu", **base)])
    assert [o.source for o in seen] == ["usmle-part", "mmlu"]

"""A learning-order strategy defined outside medtune, as a plugin would: the items by id, longest id first.

Importing the module registers ``longest-id-first`` (``MEDTUNE_PLUGINS=medtune_test_strategy``). Its order is
known from the ids alone (longest first, then reverse alphabetical), so a test tells that this strategy, and no
built-in, planned an order; its option ``reverse`` (default false) turns it round, to show that a plugin's option
is parsed and checked like a built-in's.
"""

from __future__ import annotations

from collections.abc import Sequence

from medtune.orders.options import OptionSpec, choice
from medtune.orders.strategies import OrderItem, StrategySpec, register_strategy


def longest_id_first(items: Sequence[OrderItem], seed: int, *, reverse: str = "no", epoch: int = 0) -> list[str]:
    """Ids by (length, text), longest first; the seed and the epoch change nothing."""
    ids = sorted((it.id for it in items), key=lambda i: (len(i), i), reverse=True)
    return ids[::-1] if reverse == "yes" else ids


register_strategy(StrategySpec(
    "longest-id-first", longest_id_first, "items by id, longest first (a test plugin)",
    options={"reverse": OptionSpec("no", choice("reverse", ("no", "yes")), "yes: shortest id first")},
    random=False,
    segments=lambda order, by_id, options: [{"start": 0, "label": "by id"}] if order else [],
))

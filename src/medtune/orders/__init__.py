"""Learning orders: the paper's human-inspired strategies (and a few beyond) as pure, seeded functions.

``strategies`` holds the strategy functions and their registry, ``plan`` turns one into an order plan
(epochs, segments, provenance), ``orderfile`` is the order.json format (one reader, writer and validation),
``inputs`` builds the strategies' view of items from items / categories.parquet / difficulty.parquet, and
``stage`` is the order stage (:class:`OrderSettings`, :func:`run_order`) that the CLI and the grid call.
This package imports no model code.
"""

from medtune.bucketing import PAPER_THRESHOLDS
from medtune.orders.inputs import (
    bucket_by_thresholds,
    bucket_values,
    order_items,
    read_categories_table,
    read_difficulty_table,
    tercile_thresholds,
)
from medtune.orders.orderfile import EPOCH_POLICIES, FORMAT, OrderFile, read_order
from medtune.orders.plan import build_order, items_hash, write_order
from medtune.orders.stage import OrderSettings, run_order
from medtune.orders.strategies import (
    BUCKETS,
    STRATEGIES,
    OrderItem,
    StrategySpec,
    available_strategies,
    get_strategy,
    register_strategy,
)

__all__ = [
    "BUCKETS",
    "EPOCH_POLICIES",
    "FORMAT",
    "PAPER_THRESHOLDS",
    "STRATEGIES",
    "OrderFile",
    "OrderItem",
    "OrderSettings",
    "StrategySpec",
    "available_strategies",
    "bucket_by_thresholds",
    "bucket_values",
    "build_order",
    "get_strategy",
    "items_hash",
    "order_items",
    "read_categories_table",
    "read_difficulty_table",
    "read_order",
    "register_strategy",
    "run_order",
    "tercile_thresholds",
    "write_order",
]

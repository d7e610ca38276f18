"""From a strategy to an order.json plan: epochs, segments for plots, options and provenance.

The multi-epoch policy is explicit because it changes what is trained: ``repeat`` trains every epoch on
the same list; ``reshuffle`` re-draws the seeded within-bucket shuffles (and samples) per epoch while the
structure (category order, bucket order) stays fixed. The file format is :mod:`medtune.orders.orderfile`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medtune.errors import ConfigError
from medtune.io import stable_hash
from medtune.orders.orderfile import EPOCH_POLICIES, FORMAT, OrderFile
from medtune.orders.strategies import OrderItem, _check_seed, get_strategy


def items_hash(items: Sequence[OrderItem]) -> str:
    """Hash of what a strategy sees (ids, categories, difficulties, buckets), independent of input order."""
    rows = sorted((it.id, it.category, it.difficulty, it.bucket) for it in items)
    return stable_hash(rows)


def build_order(
    items: Sequence[OrderItem],
    strategy: str,
    seed: int,
    *,
    epochs: int = 1,
    epoch_policy: str = "repeat",
    input_hashes: Mapping[str, str] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Plan ``epochs`` epochs of ``strategy`` over ``items`` under ``seed``; returns the order.json dict.

    ``options`` are the strategy's own (e.g. ``k=3``); they are parsed, defaults filled in and stored, so
    the file records exactly what produced it. ``input_hashes`` (e.g. file hashes from the CLI) default to
    a hash of the items as the strategy saw them.
    """
    spec = get_strategy(strategy)
    _check_seed(seed)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be a positive integer, got {epochs!r}")
    if epoch_policy not in EPOCH_POLICIES:
        raise ConfigError(f"epoch_policy must be one of {', '.join(EPOCH_POLICIES)}, got {epoch_policy!r}")
    opts = spec.resolve_options(options)
    first = spec.func(items, seed, epoch=0, **opts)
    lists = [first]
    for e in range(1, epochs):
        lists.append(list(first) if epoch_policy == "repeat" else spec.func(items, seed, epoch=e, **opts))
    by_id = {it.id: it for it in items}
    segments = spec.segments(first, by_id, opts) if spec.segments else []
    hashes = dict(input_hashes) if input_hashes else {}
    hashes.setdefault("items", items_hash(items))
    return {
        "format": FORMAT,
        "strategy": spec.name,
        "seed": int(seed),
        "options": opts,
        "epoch_policy": epoch_policy,
        "epochs": lists,
        "n_items": len(items),
        "segments": segments,
        "input_hashes": hashes,
    }


def write_order(order: Mapping[str, Any] | OrderFile, path: str | Path) -> Path:
    """Validate and write an order.json atomically (see :meth:`OrderFile.write`)."""
    of = order if isinstance(order, OrderFile) else OrderFile.from_dict(order, file=path)
    return of.write(path)

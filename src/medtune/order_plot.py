"""Draw learning orders the way the paper's Figure 1 does: one strip per order, position along x, the item's
category as colour and its difficulty as bar height (and shade), strategy segments as thin lines.

Seeing an order is the quickest check that a strategy does what its name says (blocks contiguous, buckets
rising, categories alternating), so the plot is part of the order stage rather than the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medtune.errors import InputError
from medtune.io import write_figure_png_svg
from medtune.orders.orderfile import OrderFile
from medtune.orders.strategies import BUCKETS, OrderItem

# Bar height and opacity rise with the bucket (easiest first), so a curriculum reads as a rising staircase.
_BUCKET_HEIGHT = {b: (i + 1) / len(BUCKETS) for i, b in enumerate(BUCKETS)}
_BUCKET_ALPHA: dict[str | None, float] = {**dict(zip(BUCKETS, (0.45, 0.7, 1.0), strict=True)), None: 0.8}
_MAX_LEGEND = 24
_MAX_SEGMENT_LABELS = 12


def _heights(order: Sequence[str], by_id: Mapping[str, OrderItem]) -> tuple[list[float], str]:
    items = [by_id[i] for i in order]
    if items and all(it.difficulty is not None for it in items):
        return [float(it.difficulty) for it in items], "difficulty"  # type: ignore[arg-type]
    if items and all(it.bucket is not None for it in items):
        scale = ", ".join(f"{b} {h:.2g}" for b, h in _BUCKET_HEIGHT.items())
        return [_BUCKET_HEIGHT[it.bucket] for it in items], f"bucket ({scale})"  # type: ignore[index]
    return [1.0] * len(items), ""


def plot_orders(
    orders: Sequence[Mapping[str, Any] | OrderFile],
    items: Sequence[OrderItem],
    path: str | Path,
    *,
    epoch: int = 0,
    titles: Sequence[str] | None = None,
    category_names: Mapping[str, str] | None = None,
) -> list[Path]:
    """Plot ``epoch`` of each order (an order.json dict or :class:`OrderFile`) as one panel; writes ``path``
    (PNG) and the same stem as SVG.

    Every id in an order must be among ``items``: an order planned on other items is an error, not a
    silently blank bar.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    orders = [o.to_dict() if isinstance(o, OrderFile) else o for o in orders]
    by_id = {it.id: it for it in items}
    for k, order in enumerate(orders):
        if epoch >= len(order["epochs"]):
            raise InputError(f"order {k + 1} has {len(order['epochs'])} epoch(s), no epoch {epoch}")
        for i in order["epochs"][epoch]:
            if i not in by_id:
                raise InputError(f"order {k + 1} ({order.get('strategy')}) has id '{i}', which is not among the items")
    cats = sorted({str(it.category) for it in items})
    cmap = plt.get_cmap("tab20" if len(cats) > 10 else "tab10")
    colour = {c: cmap(j % cmap.N) for j, c in enumerate(cats)}
    names = category_names or {}

    fig_h = 1.2 + 1.6 * len(orders)
    fig, axes = plt.subplots(len(orders), 1, figsize=(12, fig_h), squeeze=False, sharex=False)
    for ax, order, k in zip(axes[:, 0], orders, range(len(orders)), strict=True):
        seq = order["epochs"][epoch]
        heights, what = _heights(seq, by_id)
        colours = [(*colour[str(by_id[i].category)][:3], _BUCKET_ALPHA[by_id[i].bucket]) for i in seq]
        ax.bar(range(len(seq)), heights, width=1.0, color=colours, linewidth=0, align="edge")
        segs = order.get("segments") or []
        for s in segs[1:]:
            ax.axvline(s["start"], color="black", linewidth=0.6, alpha=0.6)
        if 1 < len(segs) <= _MAX_SEGMENT_LABELS:
            ends = [s["start"] for s in segs[1:]] + [len(seq)]
            for s, end in zip(segs, ends, strict=True):
                if end - s["start"] < len(seq) / 40:  # too narrow to hold a label without overlapping
                    continue
                ax.text(s["start"] + 0.5, 1.02, str(s["label"])[:18], fontsize=6, va="bottom", ha="left",
                        transform=ax.get_xaxis_transform(), clip_on=False)
        title = titles[k] if titles else f"{order['strategy']} (seed {order['seed']})"
        ax.set_title(title, fontsize=9, loc="left", pad=10 if 1 < len(segs) <= _MAX_SEGMENT_LABELS else 3)
        ax.set_xlim(0, max(1, len(seq)))
        ax.set_ylim(0, 1.0 if max(heights, default=1) <= 1 else max(heights))
        ax.set_ylabel(what.split(" ")[0] if what else "", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    axes[-1, 0].set_xlabel("position in the training sequence", fontsize=8)
    handles = [Patch(color=colour[c], label=names.get(c, c)[:40]) for c in cats[:_MAX_LEGEND]]
    if len(cats) > 1:
        extra = f" (+{len(cats) - _MAX_LEGEND} more)" if len(cats) > _MAX_LEGEND else ""
        fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7,
                   title=f"category{extra}", title_fontsize=8, frameon=False)
    shade = ", ".join(f"{b} {_BUCKET_ALPHA[b]:.0%}" for b in BUCKETS)
    fig.text(0.01, 0.002, f"colour: category; opacity: bucket ({shade})", fontsize=6, va="bottom")
    fig.tight_layout(rect=(0, 0.02, 1, 1))

    return write_figure_png_svg(fig, path)

"""What a set of items holds, as tables: counts per split, category, answer position, difficulty, and lengths.

Shown by ``medtune data describe`` and by the demo before it trains: a look at the data before anything is
fitted to it (a skewed answer position or an empty split is visible here first).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.table import Table

from medtune.prompts import LETTERS
from medtune.schema import DIFFICULTY_LEVELS, Item, MCQItem


def _percentiles(values: list[int]) -> list[str]:
    import numpy as np

    if not values:
        return ["-"] * 6
    arr = np.asarray(values)
    return [f"{np.percentile(arr, q):.0f}" for q in (5, 25, 50, 75, 95)] + [str(int(arr.max()))]


def _count_table(title: str, label: str, items: list[Item], key, splits: list[str], order=None) -> Table:
    counts: dict[str, Counter] = {s: Counter() for s in splits}
    total: Counter = Counter()
    for it in items:
        v = key(it)
        counts[it.split][v] += 1
        total[v] += 1
    table = Table(title=title, title_justify="left")
    table.add_column(label)
    for s in splits:
        table.add_column(s, justify="right")
    table.add_column("total", justify="right")
    table.add_column("share", justify="right")
    values = order(total) if order else sorted(total, key=lambda v: (-total[v], str(v)))
    for v in values:
        row = [str(counts[s][v]) for s in splits]
        table.add_row("-" if v is None else str(v), *row, str(total[v]), f"{100 * total[v] / len(items):.1f}%")
    return table


def summary_tables(items: list[Item], max_categories: int = 30) -> list[Table]:
    """Counts per split, category, answer position, option count and human difficulty; length percentiles."""
    splits = sorted({it.split for it in items})
    tables = []
    overview = Table(title="Items", title_justify="left")
    for col in ("items", "kind", "sources", "splits"):
        overview.add_column(col)
    kinds = sorted({it.kind for it in items})
    overview.add_row(str(len(items)), ", ".join(kinds), ", ".join(sorted({it.source for it in items})),
                     ", ".join(f"{s}={sum(it.split == s for it in items)}" for s in splits))
    tables.append(overview)
    if not items:
        return tables

    def top_categories(total: Counter) -> list:
        ordered = sorted(total, key=lambda v: (-total[v], str(v)))
        return ordered[:max_categories]

    cat_title = "Categories" + (f" (top {max_categories})" if len({it.category for it in items}) > max_categories
                                else "")
    tables.append(_count_table(cat_title, "category", items, lambda it: it.category, splits, top_categories))
    mcq = [it for it in items if isinstance(it, MCQItem)]
    if mcq:
        tables.append(_count_table("Answer position", "answer", mcq, lambda it: LETTERS[it.answer], splits,
                                   lambda total: sorted(total)))
        tables.append(_count_table("Options per question", "options", mcq, lambda it: len(it.options), splits,
                                   lambda total: sorted(total)))
        if any(it.human_difficulty is not None for it in mcq):
            def diff_key(it: MCQItem) -> Any:
                d = it.human_difficulty
                return d if d is None or isinstance(d, str) else "numeric"

            def diff_order(total: Counter) -> list:
                rank = {lvl: i for i, lvl in enumerate(DIFFICULTY_LEVELS)}
                return sorted(total, key=lambda v: (rank.get(v, len(rank)), str(v)))

            tables.append(_count_table("Human difficulty", "level", mcq, diff_key, splits, diff_order))
    lengths = Table(title="Lengths (characters)", title_justify="left")
    lengths.add_column("text")
    for col in ("p5", "p25", "median", "p75", "p95", "max"):
        lengths.add_column(col, justify="right")
    lengths.add_row("question", *_percentiles([len(it.question) for it in items]))
    lengths.add_row("question (words)", *_percentiles([len(it.question.split()) for it in items]))
    if mcq:
        lengths.add_row("option", *_percentiles([len(o) for it in mcq for o in it.options]))
        expl = [len(it.explanation) for it in mcq if it.explanation]
        if expl:
            lengths.add_row(f"explanation ({len(expl)} items)", *_percentiles(expl))
    qa = [it for it in items if not isinstance(it, MCQItem)]
    if qa:
        lengths.add_row("answer", *_percentiles([len(it.answer) for it in qa]))
    tables.append(lengths)
    return tables

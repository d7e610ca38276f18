"""Hypothesis strategies shared by the order tests: category labels spread over several categories."""

from __future__ import annotations

from hypothesis import event
from hypothesis import strategies as st


@st.composite
def category_labels(draw, min_size: int = 1, max_size: int = 40, n_categories: int = 5) -> list[str]:
    """One category label per item. The number of categories is drawn first: one in about one list in eight, else 2
    to ``n_categories``, each on at least one item (the rest drawn freely, so sizes are uneven), so the branches for
    several categories run in most examples; the lists are long enough to hold every category."""
    k = 1 if draw(st.integers(0, 7)) == 0 else draw(st.integers(2, n_categories))
    n = draw(st.integers(max(min_size, k), max(max_size, k)))
    cats = [f"cat{c}" for c in range(k)]
    carrier = {item: c for c, item in enumerate(draw(st.permutations(range(n)))[:k])}
    event("categories: " + ("one" if k == 1 else "several"))  # --hypothesis-show-statistics shows the split
    return [cats[carrier[i]] if i in carrier else draw(st.sampled_from(cats)) for i in range(n)]

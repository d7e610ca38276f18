"""A data loader defined outside medtune, as a plugin would: a small generated multiple-choice set, no file.

Importing the module registers ``test-quiz`` (``MEDTUNE_PLUGINS=medtune_test_loader``). Item ``k`` of split ``s``
has id ``tq-<s>-<k>``, a question whose length grows with ``k mod 3``, the answer ``k mod 4``, the category
``c<k mod 2>`` and a numeric human difficulty ``k / n``, so a test knows every item it should find, and a grid can
order them by category and difficulty.
"""

from __future__ import annotations

from pathlib import Path

from medtune.data import LoadResult, OnError, register_loader
from medtune.data.registry import RecordCollector
from medtune.schema import MCQItem, make_item


def build_item(k: int, n: int, split: str) -> MCQItem:
    return make_item(MCQItem, {
        "id": f"tq-{split}-{k}", "question": f"Question {k}: which option is right?" + " Think." * (k % 3),
        "options": [f"option {j}" for j in range(4)], "answer": k % 4, "source": "test-quiz", "split": split,
        "category": f"c{k % 2}", "human_difficulty": k / n, "meta": {"k": k},
    })


@register_loader("test-quiz", needs_path=False, description="generated quiz for tests (options n, split)")
def load_test_quiz(path: str | Path | None = None, *, on_error: OnError = "raise", n: int = 8,
                   split: str = "train") -> LoadResult:
    """``n`` items of ``split``; ``path`` is not read (the items are generated)."""
    collector = RecordCollector(Path("test-quiz"), on_error, record_kind="item")
    for k in range(int(n)):
        collector.run(k + 1, lambda k=k: build_item(k, int(n), split))
    return collector.result()

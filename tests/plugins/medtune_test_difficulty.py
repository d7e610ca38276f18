"""A difficulty source defined outside medtune, as a plugin would: the longer the question, the harder.

Importing the module registers ``question-length`` (``MEDTUNE_PLUGINS=medtune_test_difficulty``). An item's
difficulty is its question's length in characters over the longest question's, bucketed by the stage's rule
(``thresholds`` / ``quantiles``), so a test knows each item's value from the items alone. It needs no model and
reads any items (not only multiple choice); the order stage reads it from the artifact like ``llm``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from medtune.difficulty import DifficultyResult
from medtune.difficulty_sources import DifficultySourceSpec, SourceInputs, register_difficulty_source


class QuestionLength(DifficultySourceSpec):
    name = "question-length"
    description = "question length over the longest question's (a test plugin)"
    multiple_choice = False

    def compute(self, settings: Any, items: Any, inputs: SourceInputs) -> tuple[DifficultyResult, dict[str, Any]]:
        lengths = np.array([len(it.question) for it in items], dtype=float)
        values = lengths / lengths.max()
        buckets, rule = settings.bucketing().assign(values)
        table = pd.DataFrame({"id": [it.id for it in items], "difficulty": values,
                              "irt_b": np.full(len(items), np.nan), "bucket": list(buckets)})
        meta = {**rule, "source": self.name, "models": [], "irt": None, "n_items": len(items)}
        return DifficultyResult(table, meta), {}


register_difficulty_source(QuestionLength())

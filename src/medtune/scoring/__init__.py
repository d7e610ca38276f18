"""Batched, resumable scoring of multiple-choice and free-text items with a causal LM, on any backend.

Public API: :func:`score_items` (see :mod:`medtune.scoring.engine` for the modes and output columns), the
backend interface and registry (:class:`ScoringBackend`, :func:`load_backend`, :func:`register_backend`,
:func:`get_backend`, :func:`backend_names`; see :mod:`medtune.scoring.backends`), :func:`letter_token_ids`,
:func:`question_permutation`, :func:`write_predictions`, and :class:`Sampling` (several sampled answers per question
and their vote, see :mod:`medtune.scoring.sampling`).
"""

from medtune.scoring.backends import (
    ScoringBackend,
    backend_names,
    get_backend,
    load_backend,
    reduce_scores,
    register_backend,
)
from medtune.scoring.engine import COLUMNS, MODES, question_permutation, score_items
from medtune.scoring.sampling import Sampling
from medtune.scoring.store import write_predictions
from medtune.scoring.tokens import letter_token_ids

__all__ = ["COLUMNS", "MODES", "Sampling", "ScoringBackend", "backend_names", "get_backend", "letter_token_ids",
           "load_backend", "question_permutation", "reduce_scores", "register_backend", "score_items",
           "write_predictions"]

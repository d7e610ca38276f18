"""Anchor-item evaluation: estimate a model's accuracy on a whole test set from ``k`` chosen items.

Scoring every item of a large test set is the expensive part of an in-training check or of a sweep over many
checkpoints. Following tinyBenchmarks (Polo et al., 2024), the responses of *known* models (models that were
scored on every item) are enough to pick a few representative items, the anchors, and to weight them:

1. :func:`choose_anchors` fits an IRT model (:mod:`medtune.irt`) to the known models' responses, represents
   each item by its parameters, clusters the items (k-means, ``k`` = the number of anchors) and takes the item
   nearest each centroid as that cluster's anchor, weighted by the cluster's share of the items. The result is
   an :class:`AnchorSet`, saved as ``anchors.json`` (:func:`write_anchors`, :func:`read_anchors`).
2. A new model is scored on the anchors only; :func:`estimate_accuracy` turns its anchor correctness into an
   estimate of its full-test accuracy with a 95 % interval (weighted anchors, p-IRT or gp-IRT), and
   :func:`estimate_ability` gives its IRT ability with a standard error (what adaptive schedules need).

The model being estimated must not be among the known models: its own responses would have chosen and
weighted the items that now estimate it, and the estimate would look better than it is.
"""

from medtune.anchors.ability import estimate_ability
from medtune.anchors.artifact import ANCHORS_FORMAT, AnchorSet, read_anchors, write_anchors
from medtune.anchors.choose import ANCHOR_METHODS, choose_anchors
from medtune.anchors.estimate import ESTIMATORS, estimate_accuracy
from medtune.anchors.responses import responses_from_predictions, responses_from_run

__all__ = [
    "ANCHORS_FORMAT",
    "ANCHOR_METHODS",
    "ESTIMATORS",
    "AnchorSet",
    "choose_anchors",
    "estimate_ability",
    "estimate_accuracy",
    "read_anchors",
    "responses_from_predictions",
    "responses_from_run",
    "write_anchors",
]

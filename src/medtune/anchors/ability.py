"""A model's IRT ability from its answers to a few items whose parameters are known.

The item parameters stay fixed (they come from the known models' fit); only the ability ``theta`` is fitted,
by maximum a posteriori under the fit's own prior ``theta ~ N(mean, sd)``. The prior matters with few items:
a model that answers every anchor right has no finite maximum-likelihood ability, and the prior is what put the
known models' abilities on their scale in the first place. The standard error is the posterior's (Laplace):
``1 / sqrt(sum a^2 p (1 - p) + 1 / sd^2)`` at the estimate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import expit

from medtune.errors import InputError

if TYPE_CHECKING:
    from medtune.anchors.artifact import AnchorSet


def map_theta(responses: np.ndarray, a: np.ndarray, b: np.ndarray, *, prior_mean: float = 0.0,
              prior_sd: float = 1.0, max_iter: int = 100, tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """MAP abilities and their posterior SDs for each row of ``responses`` (rows × items, NaN = not answered).

    Newton's method on the log-posterior, which is strictly concave (logistic likelihood + Gaussian prior), so
    it converges from 0; steps are capped at 1 logit so a saturated start cannot overshoot. Vectorised over rows:
    a parametric bootstrap re-fits thousands of abilities at once.
    """
    y = np.atleast_2d(np.asarray(responses, dtype=float))
    w = (~np.isnan(y)).astype(float)
    y0 = np.where(w > 0, y, 0.0)
    a = np.asarray(a, dtype=float)[None, :]
    b = np.asarray(b, dtype=float)[None, :]
    inv_var = 1.0 / prior_sd**2
    theta = np.full(y.shape[0], float(prior_mean))
    for _ in range(max_iter):
        p = expit(a * (theta[:, None] - b))
        grad = (w * a * (y0 - p)).sum(1) - (theta - prior_mean) * inv_var
        info = (w * a**2 * p * (1 - p)).sum(1) + inv_var
        step = np.clip(grad / info, -1.0, 1.0)
        theta = theta + step
        if np.max(np.abs(step)) < tol:
            break
    p = expit(a * (theta[:, None] - b))
    info = (w * a**2 * p * (1 - p)).sum(1) + inv_var
    return theta, 1.0 / np.sqrt(info)


def expected_correct(a: np.ndarray, b: np.ndarray, theta: np.ndarray, se: np.ndarray) -> np.ndarray:
    """P(correct) of each item averaged over each ability's posterior ``N(theta, se^2)`` (rows × items).

    The average rather than the plug-in ``sigmoid(a (theta - b))``: with few anchors the ability is uncertain,
    and the plug-in, a nonlinear function of it, is biased towards the extremes. Uses the probit approximation
    ``E sigmoid(x) ~ sigmoid(mu / sqrt(1 + pi s^2 / 8))`` for ``x ~ N(mu, s^2)``.
    """
    theta = np.atleast_1d(np.asarray(theta, dtype=float))[:, None]
    se = np.atleast_1d(np.asarray(se, dtype=float))[:, None]
    a = np.asarray(a, dtype=float)[None, :]
    scale = 1.0 / np.sqrt(1.0 + np.pi * (a * se) ** 2 / 8.0)
    return expit(scale * a * (theta - np.asarray(b, dtype=float)[None, :]))


def anchor_vector(anchor_set: AnchorSet, anchor_correct: Mapping[Any, Any]) -> np.ndarray:
    """The 0/1 correctness of each anchor, in the anchor set's order, from a mapping item id → correct.

    Ids that are not anchors are ignored (a full-test correctness mapping can be passed as it is); a missing
    anchor or a value other than 0/1 (bool) is an ``InputError`` naming the anchor.
    """
    given = {str(k): v for k, v in anchor_correct.items()}
    missing = [i for i in anchor_set.anchor_ids if i not in given]
    if missing:
        raise InputError(f"no correctness for {len(missing)} of the {anchor_set.k} anchors (first: {missing[0]!r}); "
                         "score the model on every anchor item", field="id")
    out = np.empty(anchor_set.k)
    for n, i in enumerate(anchor_set.anchor_ids):
        v = given[i]
        try:
            f = float(v)
        except (TypeError, ValueError):
            f = float("nan")
        if f not in (0.0, 1.0):
            raise InputError(f"correctness must be 0 or 1 (or a bool), got {v!r}", record=i, record_kind="item",
                             field="correct")
        out[n] = f
    return out


def estimate_ability(anchor_set: AnchorSet, anchor_correct: Mapping[Any, Any]) -> tuple[float, float]:
    """A model's ability ``theta`` (on the known models' scale) and its standard error, from its anchor answers.

    ``anchor_correct`` maps item id → 0/1 (extra ids are ignored). Higher ``theta`` = more able; the known
    models' abilities are in ``anchor_set.models``. See the module docstring for the estimator.
    """
    y = anchor_vector(anchor_set, anchor_correct)
    idx = anchor_set.anchor_index
    theta, se = map_theta(y[None, :], anchor_set.a[idx], anchor_set.b[idx],
                          prior_mean=anchor_set.theta_prior["mean"], prior_sd=anchor_set.theta_prior["sd"])
    return float(theta[0]), float(se[0])

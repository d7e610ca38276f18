"""Full-test accuracy from anchor correctness: weighted anchors, p-IRT and gp-IRT, each with a 95 % interval.

What is estimated is the model's accuracy on *all* ``N`` items of the test set the anchors were chosen on
(the number a full evaluation would report), not an abstract expected accuracy. The estimators
(Polo et al., 2024, "tinyBenchmarks"):

``weighted``
    ``sum_c w_c y_c``: each anchor's correctness weighted by its cluster's share of the items. The anchors are
    a stratified sample with the clusters as strata, so the interval uses the stratified-sampling variance
    ``sum_c W_c^2 s_c^2 / n_c (1 - n_c / N_c)`` (``W_c`` the stratum's weight, ``n_c`` anchors among its
    ``N_c`` items). One anchor per stratum cannot estimate its stratum's spread ``s_c^2``, so the IRT model
    supplies it: ``s_c^2 = pbar_c (1 - pbar_c)`` with ``pbar_c`` the mean predicted P(correct) of the
    stratum's items at the model's estimated ability (the Bernoulli variance of an item drawn from the stratum).
``pirt``
    The anchors' own answers for the anchors, the IRT prediction ``p_j`` for every other item:
    ``(sum_anchors y + sum_others p_j) / N``, ``p_j`` averaged over the ability's posterior (``theta_hat`` and its
    standard error from :func:`~medtune.anchors.estimate_ability`; the plug-in ``p_j(theta_hat)`` is biased when
    the ability is uncertain, see :func:`~medtune.anchors.ability.expected_correct`).
``gpirt``
    ``lam * weighted + (1 - lam) * pirt``, ``lam`` chosen per model to minimise the combination's mean squared
    error (from the bootstrap below, which sees the two errors' correlation: both come from the same anchor
    answers).

The p-IRT and gp-IRT intervals come from a parametric bootstrap at ``theta_hat``: every item's answer is
drawn from the IRT model, the ability is re-estimated from the drawn anchor answers, and each estimator's
error against the drawn full-test accuracy is recorded; the interval is ``estimate +- 1.96 rmse(error)``. That
counts the ability's uncertainty, the unscored items' own Bernoulli noise, their correlation, and the error's
mean at ``theta_hat`` (with few anchors the prior pulls the ability towards the known models' mean). The IRT
model's misfit measured on the known models (``AnchorSet.pirt_misfit_sd``) is added to the p-IRT error as
independent noise, so a model the IRT fits badly gets a wider interval rather than a confident wrong one.
Intervals are clipped to [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from medtune.anchors.ability import anchor_vector, expected_correct, map_theta
from medtune.anchors.artifact import AnchorSet
from medtune.errors import ConfigError

Estimator = Literal["weighted", "pirt", "gpirt"]
ESTIMATORS: tuple[str, ...] = ("weighted", "pirt", "gpirt")
DEFAULT_ESTIMATOR: Estimator = "gpirt"
DEFAULT_N_BOOT = 1000
_Z95 = 1.959963984540054
_BOOT_CELLS = 2_000_000  # bootstrap draws × items held in memory at once


def _interval(estimate: float, se: float) -> tuple[float, float]:
    return max(0.0, estimate - _Z95 * se), min(1.0, estimate + _Z95 * se)


def _stratified_se(anchor_set: AnchorSet, p_all: np.ndarray) -> float:
    """The weighted estimator's standard error: stratified sampling, strata spread from the IRT prediction."""
    n_clusters = int(anchor_set.cluster.max()) + 1
    size = np.bincount(anchor_set.cluster, minlength=n_clusters).astype(float)
    pbar = np.bincount(anchor_set.cluster, weights=p_all, minlength=n_clusters) / np.maximum(size, 1)
    acl = anchor_set.anchor_cluster
    n_anchor = np.bincount(acl, minlength=n_clusters).astype(float)
    weight = np.bincount(acl, weights=anchor_set.weights, minlength=n_clusters)
    has = n_anchor > 0
    fpc = 1 - n_anchor[has] / size[has]
    var = (weight[has] ** 2 * pbar[has] * (1 - pbar[has]) / n_anchor[has] * fpc).sum()
    return float(np.sqrt(max(var, 0.0)))


def _bootstrap_errors(anchor_set: AnchorSet, p_all: np.ndarray, *, n_boot: int, seed: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Errors (estimate − drawn full-test accuracy) of the weighted and p-IRT estimators under the IRT model."""
    rng = np.random.default_rng(seed)
    a, b, n = anchor_set.a, anchor_set.b, anchor_set.n_items
    idx = anchor_set.anchor_index
    others = np.ones(n, dtype=bool)
    others[idx] = False
    prior = anchor_set.theta_prior
    e_w, e_p = [], []
    chunk = max(1, _BOOT_CELLS // n)
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        y = (rng.random((m, n)) < p_all[None, :]).astype(float)
        truth = y.mean(1)
        ya = y[:, idx]
        th, se = map_theta(ya, a[idx], b[idx], prior_mean=prior["mean"], prior_sd=prior["sd"])
        pirt = (ya.sum(1) + expected_correct(a[others], b[others], th, se).sum(1)) / n
        e_w.append(ya @ anchor_set.weights - truth)
        e_p.append(pirt - truth)
    errs_p = np.concatenate(e_p)
    if anchor_set.pirt_misfit_sd > 0:
        errs_p = errs_p + rng.normal(0.0, anchor_set.pirt_misfit_sd, errs_p.shape)
    return np.concatenate(e_w), errs_p


def estimate_all(anchor_set: AnchorSet, anchor_correct: Mapping[Any, Any], *, n_boot: int = DEFAULT_N_BOOT,
                 seed: int = 0, methods: tuple[str, ...] = ESTIMATORS) -> dict[str, dict[str, Any]]:
    """:func:`estimate_accuracy` for several estimators at once (one ability fit, one bootstrap)."""
    unknown = [m for m in methods if m not in ESTIMATORS]
    if unknown:
        raise ConfigError(f"unknown anchor estimator {unknown[0]!r} (use one of {', '.join(ESTIMATORS)})")
    if n_boot < 2:
        raise ConfigError(f"n_boot must be at least 2, got {n_boot}")
    y = anchor_vector(anchor_set, anchor_correct)
    idx = anchor_set.anchor_index
    prior = anchor_set.theta_prior
    th, se_th = map_theta(y[None, :], anchor_set.a[idx], anchor_set.b[idx], prior_mean=prior["mean"],
                          prior_sd=prior["sd"])
    theta, theta_se = float(th[0]), float(se_th[0])
    n = anchor_set.n_items
    p_all = expected_correct(anchor_set.a, anchor_set.b, th, se_th)[0]
    others = np.ones(n, dtype=bool)
    others[idx] = False
    weighted = float(y @ anchor_set.weights)
    pirt = float((y.sum() + p_all[others].sum()) / n)
    common = {"k": anchor_set.k, "n_items": n, "theta": theta, "theta_se": theta_se,
              "anchor_accuracy": float(y.mean()), "anchor_method": anchor_set.method}
    out: dict[str, dict[str, Any]] = {}
    if "weighted" in methods:
        se = _stratified_se(anchor_set, p_all)
        lo, hi = _interval(weighted, se)
        out["weighted"] = {"method": "weighted", "estimate": weighted, "se": se, "ci_low": lo, "ci_high": hi,
                           "interval": "normal, stratified-sampling variance over the anchor clusters", **common}
    if {"pirt", "gpirt"} & set(methods):
        e_w, e_p = _bootstrap_errors(anchor_set, p_all, n_boot=n_boot, seed=seed)
        # Second moments about 0, not variances: an error's mean at theta_hat (the prior's pull on a few
        # anchors' ability) is part of what the interval must cover.
        m_w, m_p, m_wp = float(np.mean(e_w**2)), float(np.mean(e_p**2)), float(np.mean(e_w * e_p))
        boot = {"n_boot": n_boot, "seed": seed, "pirt_misfit_sd": anchor_set.pirt_misfit_sd}
        if "pirt" in methods:
            se = float(np.sqrt(m_p))
            lo, hi = _interval(pirt, se)
            out["pirt"] = {"method": "pirt", "estimate": pirt, "se": se, "ci_low": lo, "ci_high": hi,
                           "interval": "normal, parametric bootstrap of the ability at theta", **boot, **common}
        if "gpirt" in methods:
            denom = m_w + m_p - 2 * m_wp
            lam = float(np.clip((m_p - m_wp) / denom, 0.0, 1.0)) if denom > 1e-15 else 0.5
            est = lam * weighted + (1 - lam) * pirt
            se = float(np.sqrt(max(lam**2 * m_w + (1 - lam) ** 2 * m_p + 2 * lam * (1 - lam) * m_wp, 0.0)))
            lo, hi = _interval(est, se)
            out["gpirt"] = {"method": "gpirt", "estimate": est, "se": se, "ci_low": lo, "ci_high": hi,
                            "lambda": lam, "weighted": weighted, "pirt": pirt,
                            "interval": "normal, parametric bootstrap of the ability at theta", **boot, **common}
    return {m: out[m] for m in methods}


def estimate_accuracy(anchor_set: AnchorSet, anchor_correct: Mapping[Any, Any], *,
                      method: Estimator = DEFAULT_ESTIMATOR, n_boot: int = DEFAULT_N_BOOT, seed: int = 0
                      ) -> dict[str, Any]:
    """Estimate a model's accuracy on the whole test set from its correctness on the anchors.

    ``anchor_correct`` maps item id → 0/1 for every anchor (ids that are not anchors are ignored). Returns
    ``estimate``, ``ci_low``/``ci_high`` (95 %), ``se``, ``method``, ``k``, ``n_items``, the ability ``theta``
    with ``theta_se``, and for gp-IRT the mixing weight ``lambda``. How each estimate and its interval are built
    is in this module's docstring. The model must not be one of the models the anchors were chosen from.
    """
    return estimate_all(anchor_set, anchor_correct, n_boot=n_boot, seed=seed, methods=(method,))[method]

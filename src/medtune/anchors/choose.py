"""Choosing anchor items from known models' responses (tinyBenchmarks' anchor points).

``irt-clusters`` (the default) fits an IRT model to the known models × items matrix and represents each item
by its IRT-expected correctness over the known models, ``m_j = mean_i sigmoid(a_j (theta_i - b_j))``, taken as a
rank in [0, 1]; k-means on that coordinate cuts the items into ``k`` strata of near-equal size, and each
stratum's member nearest its centroid is its anchor, weighted by the stratum's share of the items. Why the rank
and not tinyBenchmarks' raw ``(a, a b)`` plane: with one anchor per stratum the weighted estimator's variance
is ``sum_c w_c^2 s_c^2``, and k-means on raw parameters leaves large central clusters and small tail ones,
whose unequal weights cost more than the stratification gains. On simulated 2PL responses (600 items,
100 known models) ``(a, a b)`` clusters were worse than random anchors at every k (MAE 0.039 against 0.035
at k = 100), rank strata better (0.032); benchmarks/bench_anchors.py measures it.
``correctness-clusters`` clusters the items' raw correctness vectors over the known models instead (no model
assumed; needs many known models to separate items). ``random`` takes ``k`` items uniformly at random, each
weighted ``1/k``: the baseline the others must beat.

Every method fits the IRT model, because p-IRT and gp-IRT need every item's parameters whatever chose the
anchors. The fit is also used once more: the p-IRT estimate of each known model from its own anchor answers,
against its known accuracy, measures how far the IRT model misses beyond its stated uncertainty
(``pirt_misfit_sd``). Those models were in the fit, so this is a floor on the misfit, not a held-out figure.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from scipy.special import expit
from scipy.stats import rankdata

from medtune.anchors.ability import expected_correct, map_theta
from medtune.anchors.artifact import AnchorSet
from medtune.errors import ConfigError, InputError
from medtune.irt import IRTFit, IRTModel, fit_irt

AnchorMethod = Literal["irt-clusters", "random", "correctness-clusters"]
ANCHOR_METHODS: tuple[str, ...] = ("irt-clusters", "random", "correctness-clusters")
_KMEANS_INIT = 10


def _matrix(responses: pd.DataFrame | np.ndarray, item_ids: Sequence[str] | None,
            model_names: Sequence[str] | None) -> tuple[np.ndarray, list[str], list[str]]:
    if isinstance(responses, pd.DataFrame):
        ids = [str(c) for c in (item_ids if item_ids is not None else responses.columns)]
        names = [str(i) for i in (model_names if model_names is not None else responses.index)]
        y = responses.to_numpy(dtype=float)
    else:
        y = np.asarray(responses, dtype=float)
        if y.ndim != 2:
            raise InputError(f"responses must be a models × items matrix, got shape {y.shape}")
        ids = [str(i) for i in (item_ids if item_ids is not None else range(y.shape[1]))]
        names = [str(i) for i in (model_names if model_names is not None else range(y.shape[0]))]
    if y.ndim != 2 or y.shape[1] != len(ids):
        raise InputError(f"{len(ids)} item ids for a responses matrix of shape {y.shape}")
    if len(names) != y.shape[0]:
        raise InputError(f"{len(names)} model names for {y.shape[0]} rows of responses")
    if len(set(ids)) != len(ids):
        raise InputError(f"duplicate item id {next(i for n, i in enumerate(ids) if i in ids[:n])!r}", field="id")
    if y.shape[0] < 2:
        raise InputError(f"anchors need the responses of at least 2 known models (got {y.shape[0]}); "
                         "the more models, the better the item parameters")
    finite = y[~np.isnan(y)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise InputError("responses must be correctness in [0, 1] (NaN: not answered)")
    empty = np.where(np.isnan(y).all(0))[0]
    if empty.size:
        raise InputError(f"item {ids[empty[0]]!r} has no response from any model", field="id")
    return y, ids, names


def _kmeans(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # fewer distinct items than k: handled below
        km = KMeans(n_clusters=k, n_init=_KMEANS_INIT, random_state=seed).fit(x)
    return km.labels_.astype(int), km.cluster_centers_


def _cluster_anchors(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cluster labels (renumbered 0.. over non-empty clusters, in anchor order) and each cluster's anchor.

    The anchor of a cluster is its member nearest the centroid (ties: the earliest item), which is not always
    the item nearest the centroid over all items: that one may belong to a neighbouring cluster.
    """
    distinct = len(np.unique(x, axis=0))
    labels, centers = _kmeans(x, min(k, distinct), seed)
    anchors, new_labels = [], np.full(len(labels), -1)
    for c in range(centers.shape[0]):
        members = np.where(labels == c)[0]
        if members.size == 0:
            continue
        d = ((x[members] - centers[c]) ** 2).sum(1)
        new_labels[members] = len(anchors)
        anchors.append(int(members[np.argmin(d)]))
    return new_labels, np.asarray(anchors, dtype=int)


def _misfit_sd(y: np.ndarray, a: np.ndarray, b: np.ndarray, idx: np.ndarray, prior_sd: float) -> float:
    """The known models' p-IRT error beyond its own variance: ``sqrt(max(0, mean r^2 - mean V))``."""
    n = y.shape[1]
    others = np.ones(n, dtype=bool)
    others[idx] = False
    ya = y[:, idx]
    th, se = map_theta(ya, a[idx], b[idx], prior_sd=prior_sd)
    p = expected_correct(a, b, th, se)
    seen = np.nansum(ya, 1)
    pirt = (seen + p[:, others].sum(1)) / n
    truth = np.nanmean(y, 1)
    resid2 = (pirt - truth) ** 2
    slope = (a[None, others] * p[:, others] * (1 - p[:, others])).sum(1) / n
    var = slope**2 * se**2 + (p[:, others] * (1 - p[:, others])).sum(1) / n**2
    return float(np.sqrt(max(0.0, resid2.mean() - var.mean())))


def choose_anchors(responses: pd.DataFrame | np.ndarray, item_ids: Sequence[str] | None = None, k: int = 100, *,
                   seed: int = 0, method: AnchorMethod = "irt-clusters", irt: IRTModel = "2pl",
                   model_names: Sequence[str] | None = None, fit: IRTFit | None = None) -> AnchorSet:
    """Choose ``k`` anchor items from the responses of known models (rows) to the items (columns).

    ``responses`` is 0/1 correctness (fractions in [0, 1] are accepted as soft correctness; NaN = not
    answered); as a DataFrame its columns are the item ids and its index the model names. Deterministic for a
    ``seed``. Returns an :class:`AnchorSet` whose weights sum to 1; with fewer distinct items than ``k`` (e.g.
    correctness vectors of a handful of models) it holds fewer anchors, one per distinct cluster. The models
    to be estimated later must not be among these rows. ``fit`` reuses an IRT fit of exactly these responses
    (choosing several anchor sets from one matrix need not refit; its ``model`` then decides, not ``irt``).
    """
    if method not in ANCHOR_METHODS:
        raise ConfigError(f"unknown anchor method {method!r} (use one of {', '.join(ANCHOR_METHODS)})")
    y, ids, names = _matrix(responses, item_ids, model_names)
    n_items = y.shape[1]
    if not 1 <= k <= n_items:
        raise ConfigError(f"k must be between 1 and the number of items ({n_items}), got {k}")
    if fit is None:
        fit = fit_irt(y, model=irt)
    elif fit.b.shape != (n_items,) or fit.theta.shape != (y.shape[0],):
        raise ConfigError(f"the IRT fit given is of {fit.theta.size} models × {fit.b.size} items, the responses "
                          f"are {y.shape[0]} × {n_items}")
    if method == "random":
        rng = np.random.default_rng(seed)
        anchors = np.sort(rng.choice(n_items, size=k, replace=False))
        labels = np.zeros(n_items, dtype=int)
        weights = np.full(k, 1.0 / k)
    else:
        if method == "irt-clusters":
            expected = expit(fit.a[None, :] * (fit.theta[:, None] - fit.b[None, :])).mean(0)
            x = ((rankdata(expected) - 0.5) / n_items)[:, None]
        else:
            col_mean = np.nanmean(y, 0)
            x = np.where(np.isnan(y), col_mean[None, :], y).T
        labels, anchors = _cluster_anchors(x, k, seed)
        weights = np.bincount(labels, minlength=len(anchors)) / n_items
    prior_sd = float(fit.priors.get("sigma_theta", 1.0))
    truth = np.nanmean(y, 1)
    return AnchorSet(
        method=method, seed=int(seed), item_ids=ids, a=fit.a.copy(), b=fit.b.copy(), cluster=labels,
        anchor_ids=[ids[j] for j in anchors], weights=np.asarray(weights, dtype=float), k_requested=int(k),
        irt=fit.summary(), theta_prior={"mean": 0.0, "sd": prior_sd},
        pirt_misfit_sd=_misfit_sd(y, fit.a, fit.b, anchors, prior_sd),
        models=[{"name": nm, "theta": float(t), "accuracy": float(acc)}
                for nm, t, acc in zip(names, fit.theta, truth, strict=True)],
    )

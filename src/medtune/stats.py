"""Seed-aware inference for comparing training strategies: the training run is the unit.

Two fine-tunes that differ only in their seed (initialisation of the new weights, data order, dropout) differ
in accuracy by about as much as the effects the orders study looks for: Dodge et al. 2020 ("Fine-Tuning
Pretrained Language Models: Weight Initializations, Data Orders, and Early Stopping") found weight
initialisation and data order each account for run-to-run spread of comparable size. The within-run tests of
:mod:`medtune.evaluation` (McNemar, the item bootstrap) resample test items only: they answer "do these two
*runs* differ on this test set?" and treat each run as a fixed system. Asked "does strategy A beat strategy B?"
they call two seeds of one strategy significantly different whenever runs vary by a few points. This module
answers the strategy question, with the training run as the unit of replication:

- :func:`paired_t_test` / :func:`run_level_test`: per-seed gains (A's run minus B's run of the same seed) and
  a one-sample t-test on them; Welch's t-test on per-run accuracies when the arms share fewer than two seeds;
  "not estimable" (NaN p-value, with the reason) with one run per arm.
- :func:`hierarchical_bootstrap`: a two-stage bootstrap of the gain (training runs, then items within each
  resampled run; Davison & Hinkley 1997, "Bootstrap Methods and their Application", §3.8), paired by seed
  and by item, with a percentile interval and a two-sided p-value.
- :func:`holm`: Holm's step-down adjustment (Holm 1979) across the strategies compared with one baseline.
- :func:`paired_t_power`, :func:`min_detectable_gain`, :func:`seeds_needed`, :func:`design_power`,
  :func:`power_of_runs`: power of the paired t-test on n seeds (noncentral t) from the observed variance of
  per-seed gains, floored by the item-level (binomial) variance of one run's gain.
- :func:`compare_runs`: all of the above for one strategy against the baseline, plus the within-run tests on
  the pooled (seed, item) pairs; what the grid report and ``medtune evaluate power`` call.
- :func:`variance_components`: with order seeds crossed with initialisation seeds, how much of the spread of
  one strategy's run accuracies each explains (two-way random-effects ANOVA without replication, method of
  moments: Searle, Casella & McCulloch 1992, "Variance Components", ch. 4), optionally pooled over arms.

The t-based answers are the primary ones: with 2–5 seeds a percentile bootstrap over seeds cannot reproduce
the heavy tails of t with n − 1 degrees of freedom, so its interval is too narrow when run-to-run variance
dominates (and too wide when item noise dominates, as both stages count the items' noise); the hierarchical
bootstrap is reported beside it as a check that needs no normality.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medtune.errors import InputError

DEFAULT_ALPHA = 0.05
DEFAULT_POWER = 0.8
DEFAULT_GAIN = 0.01
_BOOT_CELLS = 4_000_000  # resampled values held in memory at once by the hierarchical bootstrap
_MAX_SEEDS = 100_000


# ----------------------------------------------------------------------------------------------------------
# The run-level test


def paired_t_test(gains: Any, *, confidence: float = 0.95) -> dict[str, np.ndarray]:
    """One-sample t-test of per-seed gains against 0, vectorised over all axes but the last (the seeds).

    ``gains[..., s]`` is A's accuracy minus B's for seed s. Returns arrays of the leading shape: ``gain``
    (mean), ``sd`` (across seeds, ddof 1), ``t``, ``df``, ``p_value`` (two-sided), ``ci_low``/``ci_high``
    (the t interval). With one seed, or with gains that do not vary, t is undefined and p is NaN, except that
    gains all exactly 0 give p = 1 and the interval [0, 0].
    """
    from scipy.stats import t as t_dist

    g = np.asarray(gains, dtype=float)
    n = g.shape[-1]
    mean = g.mean(axis=-1)
    nan = np.full(mean.shape, np.nan)
    if n < 2:
        return {"gain": mean, "sd": nan, "t": nan, "df": nan, "p_value": nan, "ci_low": nan.copy(),
                "ci_high": nan.copy(), "n": np.full(mean.shape, n)}
    sd = g.std(axis=-1, ddof=1)
    se = sd / math.sqrt(n)
    spread = se > 1e-15
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(spread, mean / np.where(spread, se, 1.0), np.nan)
    df = n - 1
    p = np.where(spread, 2 * t_dist.sf(np.abs(np.nan_to_num(t)), df), np.nan)
    q = t_dist.ppf(0.5 + confidence / 2, df)
    low, high = np.where(spread, mean - q * se, np.nan), np.where(spread, mean + q * se, np.nan)
    zero = ~spread & (np.abs(mean) < 1e-15)
    p, low, high = np.where(zero, 1.0, p), np.where(zero, 0.0, low), np.where(zero, 0.0, high)
    return {"gain": mean, "sd": sd, "t": t, "df": np.full(mean.shape, float(df)), "p_value": p, "ci_low": low,
            "ci_high": high, "n": np.full(mean.shape, n)}


def _welch(x: np.ndarray, y: np.ndarray, confidence: float) -> dict[str, float]:
    """Welch's t-test of mean(x) − mean(y) with the Welch–Satterthwaite degrees of freedom."""
    from scipy.stats import t as t_dist

    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    diff = float(x.mean() - y.mean())
    se = math.sqrt(vx + vy)
    if se <= 1e-15:
        same = abs(diff) < 1e-15
        return {"gain": diff, "t": float("nan"), "df": float("nan"), "p_value": 1.0 if same else float("nan"),
                "ci_low": 0.0 if same else float("nan"), "ci_high": 0.0 if same else float("nan")}
    df = (vx + vy) ** 2 / ((vx**2 / (x.size - 1) if vx else 0.0) + (vy**2 / (y.size - 1) if vy else 0.0))
    t = diff / se
    q = float(t_dist.ppf(0.5 + confidence / 2, df))
    return {"gain": diff, "t": t, "df": float(df), "p_value": float(2 * t_dist.sf(abs(t), df)),
            "ci_low": diff - q * se, "ci_high": diff + q * se}


def run_level_test(
    acc_a: Mapping[Any, float],
    acc_b: Mapping[Any, float],
    *,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Compare two arms with the training run as the unit: ``acc_a``/``acc_b`` map seed → run accuracy.

    With two or more shared seeds: the per-seed gains (the same seed's two runs form a pair, which removes
    whatever the seed does to both, e.g. the initialisation of new weights) and :func:`paired_t_test`; seeds
    only one arm has are left out and counted. Otherwise, with two or more runs per arm: Welch's t-test on the
    per-run accuracies. With one run per arm the gain is given, p and the interval are NaN and ``reason`` says
    why: one run per arm cannot show how much runs vary.
    """
    shared = sorted(set(acc_a) & set(acc_b), key=str)
    base: dict[str, Any] = {"seeds_a": len(acc_a), "seeds_b": len(acc_b), "seeds": len(shared), "reason": None}
    if not acc_a or not acc_b:
        raise InputError("a run-level comparison needs at least one run per arm")
    if len(shared) >= 2:
        gains = np.array([acc_a[s] - acc_b[s] for s in shared], dtype=float)
        res = {k: float(v) for k, v in paired_t_test(gains, confidence=confidence).items()}
        reason = None
        if math.isnan(res["p_value"]):
            reason = "the per-seed gains do not vary: the t-test is undefined"
        return {**base, "test": "paired t (per-seed gains)", "design": "paired", "gain": res["gain"],
                "ci_low": res["ci_low"], "ci_high": res["ci_high"], "p_value": res["p_value"], "t": res["t"],
                "df": res["df"], "sd_gain": res["sd"], "per_seed": dict(zip(shared, gains.tolist(), strict=True)),
                "reason": reason}
    x = np.array(list(acc_a.values()), dtype=float)
    y = np.array(list(acc_b.values()), dtype=float)
    if x.size >= 2 and y.size >= 2:
        res = _welch(x, y, confidence)
        return {**base, "test": "Welch t (per-run accuracies)", "design": "unpaired", **res,
                "sd_gain": float(math.sqrt(x.var(ddof=1) + y.var(ddof=1))),
                "per_seed": dict(zip(shared, [acc_a[s] - acc_b[s] for s in shared], strict=True)),
                "reason": None if not math.isnan(res["p_value"]) else "the runs' accuracies do not vary"}
    per_seed = {s: acc_a[s] - acc_b[s] for s in shared}
    gain = float(np.mean(list(per_seed.values()))) if per_seed else float(x.mean() - y.mean())
    return {**base, "test": "not estimable", "design": "paired" if shared else "unpaired", "gain": gain,
            "ci_low": float("nan"), "ci_high": float("nan"), "p_value": float("nan"), "t": float("nan"),
            "df": float("nan"), "sd_gain": float("nan"), "per_seed": per_seed,
            "reason": "one training run per arm: the variance between training runs cannot be estimated, so "
                      "only within-run (item-level) tests are available"}


# ----------------------------------------------------------------------------------------------------------
# The hierarchical bootstrap


def _as_runs(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{name} must be a runs × items array with at least one run and one item")
    if np.isnan(arr).any():
        raise InputError(f"{name} contains missing values")
    return arr


def hierarchical_bootstrap(
    a: Any,
    b: Any,
    *,
    paired: bool = True,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Two-stage bootstrap of the gain mean(A's runs) − mean(B's runs): resample runs, then items within each.

    ``a`` and ``b`` are runs × items arrays of per-item scores (0/1 correctness) on the same items in the same
    order. Each replicate draws as many runs as were run, with replacement, then for every drawn run a fresh
    resample of the items (Davison & Hinkley 1997, §3.8, two-stage sampling). With ``paired`` (the arms share
    seeds; row k of ``a`` and of ``b`` are the same seed) a draw picks a seed and both arms' runs of it, on
    one item resample: paired by seed and by item. Unpaired, each arm draws its own runs, and the k-th drawn
    run of each arm shares the k-th item resample (still paired by item). The interval is the percentile
    interval; the two-sided p-value follows the shifted-null recipe of :func:`medtune.evaluation.paired_bootstrap`
    (the share of replicates at least as far from the observed gain as the gain is from 0, with the +1
    correction). Draws are vectorised in chunks of a few million values.
    """
    xa, xb = _as_runs(a, "a"), _as_runs(b, "b")
    if xa.shape[1] != xb.shape[1]:
        raise InputError(f"the arms were scored on different numbers of items ({xa.shape[1]} vs {xb.shape[1]})")
    if paired and xa.shape[0] != xb.shape[0]:
        raise InputError(f"paired by seed needs one run per seed in each arm ({xa.shape[0]} vs {xb.shape[0]} runs)")
    m = xa.shape[1]
    observed = float(xa.mean() - xb.mean())
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    slots = max(xa.shape[0], xb.shape[0])
    chunk = max(1, _BOOT_CELLS // (slots * m))
    d = xa - xb if paired else None
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        items = rng.integers(0, m, size=(k, slots, m))
        if d is not None:
            runs = rng.integers(0, d.shape[0], size=(k, d.shape[0]))
            boots[start:start + k] = d[runs[..., None], items].mean(axis=(1, 2))
        else:
            ra = rng.integers(0, xa.shape[0], size=(k, xa.shape[0]))
            rb = rng.integers(0, xb.shape[0], size=(k, xb.shape[0]))
            va = xa[ra[..., None], items[:, : xa.shape[0]]].mean(axis=(1, 2))
            vb = xb[rb[..., None], items[:, : xb.shape[0]]].mean(axis=(1, 2))
            boots[start:start + k] = va - vb
    alpha = 1 - confidence
    low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    extreme = int(np.sum(np.abs(boots - observed) >= abs(observed) - 1e-12))
    p = min(1.0, (extreme + 1) / (n_boot + 1)) if abs(observed) > 1e-15 else 1.0
    return {"gain": observed, "ci_low": float(low), "ci_high": float(high), "p_value": float(p),
            "runs_a": int(xa.shape[0]), "runs_b": int(xb.shape[0]), "n_items": m, "paired": paired,
            "n_boot": n_boot, "seed": seed, "confidence": confidence}


# ----------------------------------------------------------------------------------------------------------
# Multiple comparisons


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979), by ``statsmodels``' ``multipletests(method="holm")``.

    Sorted ascending, the i-th smallest of m p-values is multiplied by m − i + 1 (i from 1), a running maximum
    keeps the order, and values are capped at 1. It controls the family-wise error rate under any dependence
    between the tests, which the comparisons of several strategies with one shared baseline have. NaN entries
    (comparisons that could not be tested) stay NaN and do not count in m.
    """
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


# ----------------------------------------------------------------------------------------------------------
# Power


def paired_t_power(gain: float, sd: float, n: int, *, alpha: float = DEFAULT_ALPHA,
                   method: str = "t") -> float:
    """Power of the two-sided paired t-test on ``n`` seeds to detect a true mean gain ``gain``.

    ``sd`` is the standard deviation of one per-seed gain. ``method="t"``: exact under normal per-seed gains,
    from the noncentral t distribution (df n − 1, noncentrality gain·√n / sd), counting both rejection tails.
    ``method="normal"``: the large-sample approximation Φ(|gain|·√n/sd − z₁₋α/₂) (plus the far tail), which
    is optimistic for few seeds (it ignores that sd is estimated).
    """
    from scipy.stats import nct, norm
    from scipy.stats import t as t_dist

    if n < 2 or not sd > 0:
        return float("nan")
    nc = abs(gain) * math.sqrt(n) / sd
    if method == "normal":
        z = norm.ppf(1 - alpha / 2)
        return float(norm.sf(z - nc) + norm.cdf(-z - nc))
    if method != "t":
        raise ValueError(f"unknown power method '{method}' (t or normal)")
    crit = t_dist.ppf(1 - alpha / 2, n - 1)
    far = float(nct.cdf(-crit, n - 1, nc))  # the wrong-sign tail; scipy returns NaN where it underflows
    return float(nct.sf(crit, n - 1, nc)) + (far if far == far else 0.0)


def min_detectable_gain(sd: float, n: int, *, alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER,
                        method: str = "t") -> float:
    """The smallest true gain the paired t-test on ``n`` seeds detects with the given power (two-sided).

    ``method="normal"`` is closed-form: (z₁₋α/₂ + z_power)·sd/√n. ``method="t"`` solves
    :func:`paired_t_power` = power for the gain (the noncentral t; power rises monotonically with the gain,
    so a bracketing root finder is exact to its tolerance). NaN with fewer than two seeds or no variance.
    """
    from scipy.optimize import brentq
    from scipy.stats import norm

    if n < 2 or not sd > 0:
        return float("nan")
    normal = (norm.ppf(1 - alpha / 2) + norm.ppf(power)) * sd / math.sqrt(n)
    if method == "normal":
        return float(normal)
    hi = normal
    while paired_t_power(hi, sd, n, alpha=alpha) < power:
        hi *= 2
    return float(brentq(lambda g: paired_t_power(g, sd, n, alpha=alpha) - power, 0.0, hi, xtol=1e-10 * sd))


def seeds_needed(gain: float, sd: float, *, alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER,
                 method: str = "t", max_seeds: int = _MAX_SEEDS) -> int | None:
    """The fewest seeds (≥ 2) whose paired t-test detects a true gain ``gain`` with the given power.

    Starts from the normal-approximation count ⌈((z₁₋α/₂ + z_power)·sd/gain)²⌉ and walks to the exact
    count (the t needs a few more seeds than the normal). None when more than ``max_seeds`` are needed.
    """
    from scipy.stats import norm

    if not sd > 0 or gain == 0 or math.isnan(gain) or math.isnan(sd):
        return None
    z = norm.ppf(1 - alpha / 2) + norm.ppf(power)
    n = max(2, math.ceil((z * sd / abs(gain)) ** 2))
    if n > max_seeds:
        return None
    if method == "normal":
        return n
    while n > 2 and paired_t_power(gain, sd, n - 1, alpha=alpha) >= power:
        n -= 1
    while paired_t_power(gain, sd, n, alpha=alpha) < power:
        n += 1
        if n > max_seeds:
            return None
    return n


def item_variance(a: np.ndarray, b: np.ndarray) -> float:
    """Item-level (binomial) variance of one run pair's gain: var over items of a − b, divided by the items.

    For 0/1 correctness this is (p₁₀ + p₀₁ − (p₁₀ − p₀₁)²)/m with p₁₀, p₀₁ the discordant shares: the variance a
    per-seed gain has even if training runs did not vary at all. ``a``/``b``: runs × items, rows paired.
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    m = d.shape[-1]
    if m < 2:
        return float("nan")
    return float(np.mean(d.var(axis=-1, ddof=1)) / m)


def design_power(
    per_seed_gains: Sequence[float],
    item_var: float,
    *,
    gain: float = DEFAULT_GAIN,
    alpha: float = DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
    method: str = "t",
) -> dict[str, Any]:
    """Power of a grid as run: the minimum detectable gain on its seeds, and the seeds a named gain needs.

    The variance of one per-seed gain is estimated as max(s², item_var): s² is the sample variance of the
    observed per-seed gains (training-run and item noise together), and ``item_var`` (:func:`item_variance`)
    is the part the items alone contribute, a floor s² cannot fall below in expectation (with 2–3 seeds s²
    is very noisy). Their difference is the between-run variance (floored at 0). ``mdg`` is for the number
    of seeds run; ``seeds_needed`` keeps the test items as they are. ``mdg_items`` is the within-run
    bound: the gain the items of these seeds' runs alone could resolve (normal approximation) if training
    runs did not vary, the lower bound of ``mdg``. With one seed, s² is not estimable:
    ``mdg`` and ``seeds_needed`` are NaN/None and ``reason`` says so.
    """
    from scipy.stats import norm

    g = np.asarray(list(per_seed_gains), dtype=float)
    n = int(g.size)
    z = norm.ppf(1 - alpha / 2) + norm.ppf(power)
    out: dict[str, Any] = {"n_seeds": n, "alpha": alpha, "power": power, "gain": gain, "method": method,
                           "item_var": float(item_var), "mdg_items": float(z * math.sqrt(item_var / max(n, 1)))
                           if item_var == item_var else float("nan"), "reason": None}
    if n < 2:
        return {**out, "seed_var": float("nan"), "between_var": float("nan"), "sd_gain": float("nan"),
                "mdg": float("nan"), "seeds_needed": None,
                "reason": "one seed: the variance between training runs cannot be estimated"}
    s2 = float(g.var(ddof=1))
    var = max(s2, float(item_var)) if item_var == item_var else s2
    sd = math.sqrt(var)
    return {**out, "seed_var": s2, "between_var": max(0.0, s2 - float(item_var)) if item_var == item_var
            else float("nan"), "sd_gain": sd, "mdg": min_detectable_gain(sd, n, alpha=alpha, power=power,
                                                                         method=method),
            "seeds_needed": seeds_needed(gain, sd, alpha=alpha, power=power, method=method)}


def _aligned(a: Mapping[Any, Any], b: Mapping[Any, Any]) -> tuple[dict, dict]:
    if not a or not b:
        raise InputError("a comparison needs at least one run per arm")
    ra = {s: np.asarray(v, dtype=float) for s, v in a.items()}
    rb = {s: np.asarray(v, dtype=float) for s, v in b.items()}
    sizes = {v.size for v in (*ra.values(), *rb.values())}
    if len(sizes) != 1:
        raise InputError(f"every run must be scored on the same items (got {sorted(sizes)} items)")
    return ra, rb


def power_of_runs(
    a: Mapping[Any, Any],
    b: Mapping[Any, Any],
    *,
    gain: float = DEFAULT_GAIN,
    alpha: float = DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
) -> dict[str, Any]:
    """:func:`design_power` of one comparison from its runs (seed → per-item scores, as :func:`compare_runs`).

    Arms sharing two or more seeds: the per-seed gains of the shared seeds and the item variance of those
    pairs. Otherwise (runs not paired by seed) the variance of one run difference is estimated as the sum of
    the arms' run variances, with as many pairs as the smaller arm has runs (conservative: it forgoes what
    pairing by seed would remove).
    """
    ra, rb = _aligned(a, b)
    shared = sorted(set(ra) & set(rb), key=str)
    if len(shared) >= 2 or (shared and (len(ra) == 1 or len(rb) == 1)):
        xa, xb = np.stack([ra[s] for s in shared]), np.stack([rb[s] for s in shared])
        gains = (xa.mean(axis=1) - xb.mean(axis=1)).tolist()
        return design_power(gains, item_variance(xa, xb), gain=gain, alpha=alpha, power=power)
    xa, xb = np.stack(list(ra.values())), np.stack(list(rb.values()))
    k = min(xa.shape[0], xb.shape[0])
    out = design_power([], item_variance(xa[:k], xb[:k]), gain=gain, alpha=alpha, power=power)
    if k >= 2:
        s2 = float(xa.mean(axis=1).var(ddof=1) + xb.mean(axis=1).var(ddof=1))
        sd = math.sqrt(max(s2, out["item_var"]))
        out.update(n_seeds=k, seed_var=s2, between_var=max(0.0, s2 - out["item_var"]), sd_gain=sd,
                   mdg=min_detectable_gain(sd, k, alpha=alpha, power=power),
                   seeds_needed=seeds_needed(gain, sd, alpha=alpha, power=power), reason=None)
    return out


# ----------------------------------------------------------------------------------------------------------
# All of it for one comparison


def compare_runs(
    a: Mapping[Any, Any],
    b: Mapping[Any, Any],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    gain: float = DEFAULT_GAIN,
    alpha: float = DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
) -> dict[str, Any]:
    """Strategy A against B: the seed-aware test and interval, the within-run tests, and the design's power.

    ``a``/``b`` map seed → per-item scores (0/1, or token F1) on the same items in the same order (the caller
    aligns them). Returns one flat, JSON-able row:

    - seed-aware (training run as the unit): ``test``, ``gain``, ``ci_low``/``ci_high``, ``p_value``, ``df``,
      ``sd_gain``, ``per_seed``, ``reason`` (:func:`run_level_test`); ``hb_ci_low``/``hb_ci_high``/``p_hier``
      (:func:`hierarchical_bootstrap`, paired by seed when the arms share two or more seeds);
    - within-run, on the pooled (seed, item) pairs of the shared seeds, each run a fixed system:
      ``item_ci_low``/``item_ci_high``/``p_item_bootstrap`` (:func:`medtune.evaluation.paired_bootstrap`) and,
      for 0/1 scores, ``p_mcnemar``/``p_mcnemar_midp``/``only_a``/``only_b``;
    - power (:func:`power_of_runs`): ``mdg``, ``seeds_needed`` for ``gain``, ``power_seeds``, ``sd_gain_power``,
      ``between_var``, ``item_var``, ``mdg_items``.
    """
    from medtune.evaluation import mcnemar, paired_bootstrap

    ra, rb = _aligned(a, b)
    acc = run_level_test({s: float(v.mean()) for s, v in ra.items()}, {s: float(v.mean()) for s, v in rb.items()},
                         confidence=confidence)
    shared = sorted(set(ra) & set(rb), key=str)
    paired = len(shared) >= 2 or (len(shared) == 1 and len(ra) == len(rb) == 1)
    if paired:
        xa, xb = np.stack([ra[s] for s in shared]), np.stack([rb[s] for s in shared])
    else:
        xa, xb = np.stack(list(ra.values())), np.stack(list(rb.values()))
    hb = hierarchical_bootstrap(xa, xb, paired=paired, n_boot=n_boot, seed=seed, confidence=confidence)
    out: dict[str, Any] = {
        "seeds": acc["seeds"], "seeds_a": acc["seeds_a"], "seeds_b": acc["seeds_b"], "design": acc["design"],
        "test": acc["test"], "gain": acc["gain"], "ci_low": acc["ci_low"], "ci_high": acc["ci_high"],
        "p_value": acc["p_value"], "df": acc["df"], "sd_gain": acc["sd_gain"], "per_seed": acc["per_seed"],
        "reason": acc["reason"], "hb_ci_low": hb["ci_low"], "hb_ci_high": hb["ci_high"], "p_hier": hb["p_value"],
        "n_items": int(xa.shape[1]),
    }
    if shared:
        pa, pb = np.concatenate([ra[s] for s in shared]), np.concatenate([rb[s] for s in shared])
        boot = paired_bootstrap(pa, pb, n_boot=n_boot, seed=seed, confidence=confidence)
        out.update({"item_diff": boot["diff"], "item_ci_low": boot["ci_low"], "item_ci_high": boot["ci_high"],
                    "p_item_bootstrap": boot["p_value"], "n_pairs": int(pa.size)})
        if np.isin(pa, (0, 1)).all() and np.isin(pb, (0, 1)).all():
            mc = mcnemar(pa, pb)
            out.update({"p_mcnemar": mc["p_exact"], "p_mcnemar_midp": mc["p_midp"], "only_a": mc["a_only"],
                        "only_b": mc["b_only"]})
    pw = power_of_runs(ra, rb, gain=gain, alpha=alpha, power=power)
    out.update({"mdg": pw["mdg"], "seeds_needed": pw["seeds_needed"], "power_gain": gain, "power_seeds": pw["n_seeds"],
                "sd_gain_power": pw["sd_gain"], "between_var": pw["between_var"], "item_var": pw["item_var"],
                "mdg_items": pw["mdg_items"]})
    return out


# ----------------------------------------------------------------------------------------------------------
# Variance decomposition of crossed seeds


def variance_components(tables: Sequence[Any] | Any) -> dict[str, Any]:
    """Split run-to-run variance into order-seed, initialisation-seed and residual parts.

    ``tables``: one accuracy table (order seeds × initialisation seeds, one run per cell) or several (one per
    arm: each arm's own means are removed, the sums of squares pooled, so arms with different accuracies share
    one estimate). Model: acc = μ + order + init + residual, all random. With ``a`` order and ``b`` init seeds,
    E[MS_order] = σ²_res + b·σ²_order and E[MS_init] = σ²_res + a·σ²_init; the estimates are the moment
    solutions truncated at 0 (a negative estimate means "no detectable component", not a negative variance).
    The residual holds the order × init interaction, which no design with one run per pair can separate.
    ``p_order``/``p_init``: F-tests of "this seed explains nothing" (MS of the factor over the residual MS).
    """
    from scipy import stats as sps

    arrays = [np.asarray(t, dtype=float) for t in (tables if isinstance(tables, (list, tuple)) else [tables])]
    for t in arrays:
        if t.ndim != 2 or t.shape[0] < 2 or t.shape[1] < 2 or not np.isfinite(t).all():
            raise InputError("variance components need a complete table of at least 2 order seeds × 2 "
                             "initialisation seeds per arm", field="order_seeds")
    ss = {"order": 0.0, "init": 0.0, "residual": 0.0}
    df = {"order": 0, "init": 0, "residual": 0}
    for t in arrays:
        a, b = t.shape
        grand = t.mean()
        rows, cols = t.mean(axis=1), t.mean(axis=0)
        ss["order"] += b * float(np.sum((rows - grand) ** 2))
        ss["init"] += a * float(np.sum((cols - grand) ** 2))
        ss["residual"] += float(np.sum((t - rows[:, None] - cols[None, :] + grand) ** 2))
        df["order"] += a - 1
        df["init"] += b - 1
        df["residual"] += (a - 1) * (b - 1)
    ms = {k: ss[k] / df[k] for k in ss}
    # Per-arm sizes may differ; the moment equations use the df-weighted mean of the multipliers.
    b_mean = sum((t.shape[0] - 1) * t.shape[1] for t in arrays) / df["order"]
    a_mean = sum((t.shape[1] - 1) * t.shape[0] for t in arrays) / df["init"]
    var = {"order": max(0.0, (ms["order"] - ms["residual"]) / b_mean),
           "init": max(0.0, (ms["init"] - ms["residual"]) / a_mean),
           "residual": ms["residual"]}
    total = sum(var.values())
    out: dict[str, Any] = {"arms": len(arrays), "order_seeds": int(max(t.shape[0] for t in arrays)),
                           "init_seeds": int(max(t.shape[1] for t in arrays)), "df": df, "ss": ss, "ms": ms}
    for k, v in var.items():
        out[f"var_{k}"] = v
        out[f"sd_{k}"] = math.sqrt(v)
        out[f"share_{k}"] = v / total if total > 0 else float("nan")
    for k in ("order", "init"):
        out[f"p_{k}"] = (float(sps.f.sf(ms[k] / ms["residual"], df[k], df["residual"]))
                         if ms["residual"] > 0 else float("nan"))
    return out

"""The seed-aware tests at their edges: every field of each branch of the run-level test (paired t, Welch, not
estimable), the limits of no spread, the confidence level, and Holm's adjustment against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from medtune.errors import InputError
from medtune.stats import compare_runs, hierarchical_bootstrap, holm, paired_t_test, run_level_test


def test_paired_t_reports_every_field_at_another_confidence():
    g = [0.04, -0.01, 0.02, 0.03]
    res = {k: float(v) for k, v in paired_t_test(g, confidence=0.9).items()}
    ref = sps.ttest_1samp(g, 0)
    sd = float(np.std(g, ddof=1))
    assert res["n"] == 4 and res["df"] == 3
    assert res["sd"] == pytest.approx(sd) and res["gain"] == pytest.approx(0.02)
    assert res["t"] == pytest.approx(ref.statistic) and res["p_value"] == pytest.approx(ref.pvalue)
    half = sps.t.ppf(0.95, 3) * sd / 2
    assert res["ci_low"] == pytest.approx(0.02 - half) and res["ci_high"] == pytest.approx(0.02 + half)


def test_paired_t_with_one_seed_gives_the_gain_and_nothing_else():
    res = paired_t_test([[0.03], [-0.01]])
    assert res["gain"].tolist() == [0.03, -0.01] and res["n"].tolist() == [1, 1]
    for k in ("sd", "t", "df", "p_value", "ci_low", "ci_high"):
        assert np.isnan(res[k]).all(), k
    res["ci_low"][0] = 1.0  # the arrays are separate: writing one leaves the others NaN
    assert np.isnan(res["ci_high"][0]) and np.isnan(res["p_value"][0])


def test_paired_t_without_spread():
    zero = paired_t_test([0.0, 0.0, 0.0])
    assert float(zero["p_value"]) == 1.0 and float(zero["ci_low"]) == 0.0 and float(zero["ci_high"]) == 0.0
    assert math.isnan(float(zero["t"])) and float(zero["sd"]) == 0.0
    flat = paired_t_test([0.01, 0.01, 0.01])
    assert math.isnan(float(flat["p_value"])) and math.isnan(float(flat["ci_low"]))
    assert math.isnan(float(flat["t"])) and float(flat["gain"]) == pytest.approx(0.01)
    # a spread of a few ulps is no spread
    tiny = paired_t_test([0.1, 0.1 + 1e-17, 0.1])
    assert math.isnan(float(tiny["p_value"]))
    # a real but small spread is
    small = paired_t_test([1e-9, 2e-9, 3e-9])
    assert float(small["p_value"]) == pytest.approx(sps.ttest_1samp([1e-9, 2e-9, 3e-9], 0).pvalue)


def test_the_paired_branch_reports_every_field():
    a, b = {0: 0.60, 1: 0.55, 2: 0.58, 9: 0.7}, {0: 0.57, 1: 0.54, 2: 0.53, 8: 0.1}
    res = run_level_test(a, b, confidence=0.9)
    gains = [0.03, 0.01, 0.05]
    ref = paired_t_test(gains, confidence=0.9)
    assert (res["seeds_a"], res["seeds_b"], res["seeds"]) == (4, 4, 3)
    assert res["design"] == "paired" and res["test"] == "paired t (per-seed gains)" and res["reason"] is None
    for k, r in (("gain", "gain"), ("ci_low", "ci_low"), ("ci_high", "ci_high"), ("p_value", "p_value"),
                 ("t", "t"), ("df", "df"), ("sd_gain", "sd")):
        assert res[k] == pytest.approx(float(ref[r])), k
        assert type(res[k]) is float, k
    assert list(res["per_seed"]) == [0, 1, 2]


def test_seeds_pair_by_their_string_order_whatever_their_type():
    res = run_level_test({"s1": 0.6, "s0": 0.5, "s10": 0.7}, {"s0": 0.4, "s10": 0.5, "s1": 0.55})
    assert list(res["per_seed"]) == ["s0", "s1", "s10"]
    assert res["per_seed"] == pytest.approx({"s0": 0.1, "s1": 0.05, "s10": 0.2})


def test_paired_gains_that_do_not_vary_say_why():
    res = run_level_test({0: 0.6, 1: 0.7}, {0: 0.5, 1: 0.6})
    assert math.isnan(res["p_value"]) and res["reason"] == "the per-seed gains do not vary: the t-test is undefined"
    same = run_level_test({0: 0.6, 1: 0.7}, {0: 0.6, 1: 0.7})
    assert same["p_value"] == 1.0 and same["reason"] is None


def test_the_welch_branch_reports_every_field():
    x, y = {0: 0.60, 1: 0.55, 2: 0.58}, {3: 0.50, 4: 0.54, 0: 0.52}  # one shared seed: not enough to pair
    res = run_level_test(x, y, confidence=0.9)
    ref = sps.ttest_ind([0.60, 0.55, 0.58], [0.50, 0.54, 0.52], equal_var=False)
    assert res["test"] == "Welch t (per-run accuracies)" and res["design"] == "unpaired" and res["reason"] is None
    assert (res["seeds_a"], res["seeds_b"], res["seeds"]) == (3, 3, 1)
    assert res["t"] == pytest.approx(ref.statistic) and res["df"] == pytest.approx(ref.df)
    assert res["p_value"] == pytest.approx(ref.pvalue)
    assert res["gain"] == pytest.approx(np.mean([0.60, 0.55, 0.58]) - np.mean([0.50, 0.54, 0.52]))
    se = res["gain"] / ref.statistic
    q = sps.t.ppf(0.95, ref.df)
    assert res["ci_low"] == pytest.approx(res["gain"] - q * se)
    assert res["ci_high"] == pytest.approx(res["gain"] + q * se)
    assert res["sd_gain"] == pytest.approx(math.sqrt(np.var([0.60, 0.55, 0.58], ddof=1)
                                                     + np.var([0.50, 0.54, 0.52], ddof=1)))
    assert res["per_seed"] == pytest.approx({0: 0.08})


def test_welch_with_one_constant_arm_uses_the_other_arms_degrees_of_freedom():
    # 0.5 and 0.25 are exact in binary: the constant arm's variance is exactly 0
    x, y = {0: 0.75, 1: 0.5, 2: 0.625}, {3: 0.25, 4: 0.25}
    res = run_level_test(x, y)
    assert res["df"] == pytest.approx(2.0)  # all the variance is x's: df = n_x - 1
    assert res["p_value"] == pytest.approx(sps.ttest_1samp([0.75, 0.5, 0.625], 0.25).pvalue)
    flip = run_level_test(y | {5: 0.25}, x)
    assert flip["df"] == pytest.approx(2.0) and flip["gain"] == pytest.approx(-0.375)


def test_welch_without_spread():
    same = run_level_test({0: 0.5, 1: 0.5}, {2: 0.5, 3: 0.5})
    assert same["p_value"] == 1.0 and same["ci_low"] == 0.0 and same["ci_high"] == 0.0 and same["reason"] is None
    assert math.isnan(same["t"]) and math.isnan(same["df"]) and same["gain"] == 0.0
    apart = run_level_test({0: 0.6, 1: 0.6}, {2: 0.5, 3: 0.5})
    assert math.isnan(apart["p_value"]) and math.isnan(apart["ci_low"]) and math.isnan(apart["ci_high"])
    assert apart["gain"] == pytest.approx(0.1) and apart["reason"] == "the runs' accuracies do not vary"


def test_one_run_per_arm_is_not_estimable_paired_or_not():
    paired = run_level_test({3: 0.62}, {3: 0.50, 4: 0.40})
    assert paired["test"] == "not estimable" and paired["design"] == "paired" and paired["seeds"] == 1
    assert paired["gain"] == pytest.approx(0.12) and paired["per_seed"] == pytest.approx({3: 0.12})
    for k in ("ci_low", "ci_high", "p_value", "t", "df", "sd_gain"):
        assert math.isnan(paired[k]), k
    unpaired = run_level_test({1: 0.7}, {2: 0.5, 3: 0.4})
    assert unpaired["design"] == "unpaired" and unpaired["per_seed"] == {}
    assert unpaired["gain"] == pytest.approx(0.7 - 0.45)
    assert unpaired["reason"] == paired["reason"] == (
        "one training run per arm: the variance between training runs cannot be estimated, so only within-run "
        "(item-level) tests are available")
    with pytest.raises(InputError) as err:
        run_level_test({0: 0.5}, {})
    assert err.value.reason == "a run-level comparison needs at least one run per arm"


def test_holm_against_hand_computed_steps():
    # m = 3: 0.01·3 = 0.03; 0.02·2 = 0.04; 0.5·1 = 0.5 (input order kept in the output)
    np.testing.assert_allclose(holm([0.5, 0.01, 0.02]), [0.5, 0.03, 0.04])
    # the running maximum: 0.02·3 = 0.06, 0.025·2 = 0.05 → 0.06
    np.testing.assert_allclose(holm([0.025, 0.02, 0.9]), [0.06, 0.06, 0.9])
    assert np.isnan(holm([float("nan")])).all()
    np.testing.assert_allclose(holm(np.array([0.04])), [0.04])


def test_the_hierarchical_bootstrap_refuses_bad_arrays_and_keeps_its_settings():
    a = np.array([[1, 0, 1, 1], [0, 1, 1, 0]])
    b = np.array([[0, 0, 1, 0], [0, 1, 0, 0]])
    res = hierarchical_bootstrap(a, b, n_boot=50, seed=3, confidence=0.8)
    assert (res["runs_a"], res["runs_b"], res["n_items"], res["paired"]) == (2, 2, 4, True)
    assert (res["n_boot"], res["seed"], res["confidence"]) == (50, 3, 0.8)
    assert res["gain"] == pytest.approx(0.375)
    for bad in (np.zeros(4), np.zeros((0, 4)), np.zeros((2, 0))):
        with pytest.raises(InputError, match="runs × items"):
            hierarchical_bootstrap(bad, b)
    with pytest.raises(InputError, match="b contains missing values"):
        hierarchical_bootstrap(a, np.where(b == 1, np.nan, b))


def test_compare_runs_needs_both_arms_and_reads_boolean_scores_as_zero_one():
    a = {0: [1, 0, 1, 1, 0, 1], 1: [1, 1, 1, 0, 0, 1], 2: [0, 1, 1, 1, 0, 1]}
    b = {0: [0, 0, 1, 0, 0, 1], 1: [1, 0, 1, 0, 0, 0], 2: [0, 1, 0, 1, 0, 0]}
    for x, y in (({}, b), (a, {})):
        with pytest.raises(InputError) as err:
            compare_runs(x, y, n_boot=20)
        assert str(err.value) == "a comparison needs at least one run per arm"
    as_float = compare_runs(a, b, n_boot=50)
    as_bool = compare_runs({s: np.array(v, dtype=bool) for s, v in a.items()},
                           {s: np.array(v, dtype=bool) for s, v in b.items()}, n_boot=50)
    assert as_bool.keys() == as_float.keys()
    for k, v in as_float.items():
        assert as_bool[k] == pytest.approx(v, nan_ok=True), k


def test_two_shared_seeds_are_enough_to_pair():
    res = run_level_test({0: 0.6, 1: 0.7, 5: 0.1}, {0: 0.5, 1: 0.55})
    assert res["test"] == "paired t (per-seed gains)" and res["seeds"] == 2 and res["df"] == 1
    assert res["p_value"] == pytest.approx(sps.ttest_rel([0.6, 0.7], [0.5, 0.55]).pvalue)


A_RUNS = np.array([[1, 0, 1, 1, 0, 1, 1, 0], [1, 1, 1, 0, 0, 1, 1, 1], [0, 1, 1, 1, 0, 1, 0, 1]])
B_RUNS = np.array([[0, 0, 1, 0, 0, 1, 1, 0], [1, 0, 1, 0, 0, 0, 1, 0], [0, 1, 0, 1, 0, 0, 1, 1]])


def test_the_hierarchical_bootstrap_draws_are_the_ones_recorded():
    # interval and p-value for a fixed seed, recorded when this test was written: a change to what is resampled
    # (runs, items, their ranges), the interval's levels or the p-value's counting changes them
    paired = hierarchical_bootstrap(A_RUNS, B_RUNS, n_boot=400, seed=5, confidence=0.9)
    assert (paired["ci_low"], paired["ci_high"]) == pytest.approx((0.041666666666666664, 0.4583333333333333))
    assert paired["p_value"] == pytest.approx(28 / 401)
    unpaired = hierarchical_bootstrap(A_RUNS, B_RUNS[:2], paired=False, n_boot=400, seed=5, confidence=0.9)
    assert (unpaired["ci_low"], unpaired["ci_high"]) == pytest.approx((0.02083333333333337, 0.5208333333333334))
    assert unpaired["p_value"] == pytest.approx(25 / 401)
    as_bool = hierarchical_bootstrap(A_RUNS.astype(bool), B_RUNS.astype(bool), n_boot=400, seed=5, confidence=0.9)
    assert as_bool == paired
    fewer_a = hierarchical_bootstrap(A_RUNS[:2], B_RUNS, paired=False, n_boot=300, seed=4)  # the first arm smaller
    assert (fewer_a["ci_low"], fewer_a["ci_high"]) == pytest.approx((-0.01093749999999988, 0.5625))
    assert fewer_a["p_value"] == pytest.approx(27 / 301)


def test_the_hierarchical_bootstrap_in_small_chunks_and_with_its_defaults(monkeypatch):
    assert hierarchical_bootstrap(A_RUNS, B_RUNS) == hierarchical_bootstrap(A_RUNS, B_RUNS, n_boot=2000, seed=0)
    from medtune import stats

    monkeypatch.setattr(stats, "_BOOT_CELLS", 30)  # one replicate per chunk
    res = hierarchical_bootstrap(A_RUNS, B_RUNS, n_boot=50, seed=2)
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((0.05104166666666671, 0.44895833333333324))
    assert res["p_value"] == pytest.approx(3 / 51)
    monkeypatch.setattr(stats, "_BOOT_CELLS", 48)  # two replicates per chunk: the last chunk holds one
    res = hierarchical_bootstrap(A_RUNS, B_RUNS, n_boot=51, seed=2)
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((0.0, 0.4791666666666667))
    assert res["p_value"] == pytest.approx(6 / 52)


def test_the_hierarchical_bootstrap_names_the_bad_arm_and_the_sizes():
    with pytest.raises(InputError) as err:
        hierarchical_bootstrap(np.zeros(3), B_RUNS)
    assert err.value.reason == "a must be a runs × items array with at least one run and one item"
    with pytest.raises(InputError) as err:
        hierarchical_bootstrap(A_RUNS, B_RUNS[:2])
    assert err.value.reason == "paired by seed needs one run per seed in each arm (3 vs 2 runs)"

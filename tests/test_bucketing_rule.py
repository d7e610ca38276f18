"""The bucketing rule at its boundaries: values equal to a cut point, missing values, quantile cuts computed over
the observed values only, the stored description, and the refusals that name their field."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medtune.bucketing import DEFAULT_QUANTILES, PAPER_THRESHOLDS, TERCILES, Bucketing, cut, parse_pair
from medtune.errors import InputError


def test_cut_points_belong_to_the_easier_bucket_and_missing_values_stay_missing():
    values = [0.66, 0.6600001, 0.80, 0.8000001, None, float("nan"), np.float32("nan"), -5.0, 9.0]
    assert cut(values, 0.66, 0.80) == ["easy", "medium", "medium", "hard", None, None, None, "easy", "hard"]
    assert cut(np.array([0.1, 0.2]), 0.1, 0.2) == ["easy", "medium"]
    assert cut([], 0.0, 1.0) == []


def test_fixed_rule_keeps_its_thresholds_and_describes_itself():
    rule = Bucketing.fixed()
    assert rule == Bucketing() and rule.thresholds == PAPER_THRESHOLDS == (0.66, 0.80)
    assert rule.resolve([0.1, 0.99]) == (0.66, 0.80)
    labels, info = rule.assign(np.array([0.5, 0.7, np.nan, 0.9]))
    assert labels.dtype == object and labels.tolist() == ["easy", "medium", None, "hard"]
    assert info == {"rule": "fixed", "thresholds": [0.66, 0.80]}
    custom = Bucketing.fixed([1, 2])
    assert custom.thresholds == (1.0, 2.0) and type(custom.thresholds[0]) is float
    assert custom.labels([1, 1.5, 2.5, None]) == ["easy", "medium", "hard", None]


def test_quantile_rule_cuts_at_the_quantiles_of_the_observed_values():
    rule = Bucketing.by_quantiles((0.25, 0.75))
    assert rule.rule == "quantile" and rule.quantiles == (0.25, 0.75)
    values = [None, 0.0, 1.0, 2.0, 3.0, 4.0, float("nan")]
    assert rule.resolve(values) == (1.0, 3.0)
    assert type(rule.resolve(values)[0]) is float
    assert rule.labels(values) == [None, "easy", "easy", "medium", "medium", "hard", None]
    labels, info = rule.assign(np.array([0.0, 1.0, 2.0, 3.0, 4.0]))
    assert labels.tolist() == ["easy", "easy", "medium", "medium", "hard"]
    assert info == {"rule": "quantile", "thresholds": [1.0, 3.0], "quantiles": [0.25, 0.75]}
    assert Bucketing.terciles() == Bucketing.by_quantiles() == Bucketing.by_quantiles(TERCILES)
    assert Bucketing.terciles().quantiles == DEFAULT_QUANTILES == (1 / 3, 2 / 3)
    assert Bucketing.terciles().resolve(list(range(7))) == pytest.approx((2.0, 4.0))
    assert rule.labels([]) == [] and Bucketing.fixed().labels([]) == []
    with pytest.raises(InputError) as err:
        rule.resolve([None, float("nan")])
    assert err.value.reason == "cannot bucket by quantiles: no difficulty values"
    labels, _ = Bucketing.fixed().assign(np.array([0.1, 0.9]))
    assert labels.dtype == object and labels.tolist() == ["easy", "hard"]


@pytest.mark.parametrize("q", [(0.0, 0.5), (0.5, 1.0), (-0.1, 0.5), (0.2, 1.5)])
def test_quantiles_must_lie_strictly_inside_zero_and_one(q):
    with pytest.raises(InputError, match="0 < q1 < q2 < 1") as err:
        Bucketing.by_quantiles(q)
    assert err.value.field == "quantiles"


@pytest.mark.parametrize("pair", [(0.8, 0.66), (0.5, 0.5), (0.1,), (0.1, 0.2, 0.3), (0.1, float("inf")),
                                  (float("nan"), 0.5)])
def test_a_pair_must_be_two_increasing_finite_numbers(pair):
    with pytest.raises(InputError, match=r"thresholds must be two increasing numbers") as err:
        Bucketing.fixed(pair)
    assert err.value.field == "thresholds"
    with pytest.raises(InputError, match=r"quantiles must be two increasing numbers") as err:
        Bucketing.by_quantiles(pair)
    assert err.value.field == "quantiles"


def test_parse_pair_reads_the_cli_syntax_and_names_the_option():
    assert parse_pair(" 0.5, 0.7 ") == (0.5, 0.7)
    assert parse_pair("1,2", "quantiles") == (1.0, 2.0)
    with pytest.raises(InputError, match=r"^field 'thr': thr must be two comma-separated numbers, got '0.5;0.7'$"):
        parse_pair("0.5;0.7", "thr")
    with pytest.raises(InputError, match="thr must be two increasing numbers") as err:
        parse_pair("0.7,0.5", "thr")
    assert err.value.field == "thr"
    with pytest.raises(InputError) as err:
        parse_pair("a,b")
    assert err.value.field == "thresholds"
    assert not math.isnan(parse_pair("0,1")[0])

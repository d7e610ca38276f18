"""The ensemble difficulty table at its edges: missing model values, the accepted range of expected accuracies,
IRT on probabilities or on 0/1 outcomes, the provenance kept in the metadata, and re-bucketing that replaces the
rule instead of mixing two."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from medtune.bucketing import Bucketing
from medtune.difficulty import build_difficulty, ensemble_difficulty, fit_irt, rebucket
from medtune.errors import InputError


def _p(values, ids=None, models=("m1", "m2")) -> pd.DataFrame:
    values = np.asarray(values, dtype=float)
    return pd.DataFrame(values, index=ids or [f"q{i}" for i in range(len(values))], columns=list(models))


def test_ensemble_difficulty_leaves_out_a_missing_model_value():
    d = ensemble_difficulty(_p([[0.8, 0.6], [np.nan, 0.3], [0.0, 1.0]]))
    assert d.tolist() == pytest.approx([0.3, 0.7, 0.5])


def test_the_table_columns_values_and_metadata():
    p = _p([[0.9, 0.7], [0.2, 0.4], [0.5, np.nan]], ids=["a", "b", "c"])
    res = build_difficulty(p, bucketing=Bucketing.fixed((0.3, 0.6)), irt=None, source="mine",
                           extra_meta={"note": 1})
    t = res.table
    assert list(t.columns) == ["id", "p_correct__m1", "p_correct__m2", "difficulty", "irt_b", "bucket"]
    assert t["id"].tolist() == ["a", "b", "c"]
    assert t["difficulty"].tolist() == pytest.approx([0.2, 0.7, 0.5])
    assert t["bucket"].tolist() == ["easy", "hard", "medium"]
    assert t["irt_b"].isna().all() and t["irt_b"].dtype == np.float64 and len(t) == 3
    assert res.models == ["m1", "m2"]
    assert res.meta == {"rule": "fixed", "thresholds": [0.3, 0.6], "source": "mine", "models": ["m1", "m2"],
                        "irt": None, "n_items": 3, "note": 1}
    assert res.bucket_sizes() == {"easy": 1, "medium": 1, "hard": 1}
    default = build_difficulty(p, irt=None)
    assert default.meta["source"] == "ensemble" and default.meta["thresholds"] == [0.66, 0.80]
    assert "note" not in default.meta


def test_accuracies_just_outside_the_unit_interval_are_rounding_beyond_that_an_error():
    build_difficulty(_p([[1.0 + 1e-7, 0.5], [-1e-7, 0.5]]), irt=None)
    for bad in ([[1.001, 0.5], [0.2, 0.3]], [[-0.001, 0.5], [0.2, 0.3]]):
        with pytest.raises(InputError) as err:
            build_difficulty(_p(bad), irt=None)
        assert err.value.reason == "expected accuracies must lie in [0, 1]"
    with pytest.raises(InputError) as err:
        build_difficulty(_p(np.zeros((0, 2))), irt=None)
    assert err.value.reason == "no questions to compute difficulty for"
    with pytest.raises(InputError, match="duplicate id 'x'") as err:
        build_difficulty(_p([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], ids=["x", "y", "x"]), irt=None)
    assert err.value.field == "id"
    # all missing: nothing to range-check, every difficulty missing
    res = build_difficulty(_p([[np.nan, np.nan], [np.nan, np.nan]]), irt=None)
    assert res.table["difficulty"].isna().all() and res.table["bucket"].tolist() == [None, None]


def test_irt_is_fitted_on_the_probabilities_or_on_the_outcomes():
    rng = np.random.default_rng(0)
    p = _p(rng.uniform(0.05, 0.95, size=(12, 3)), models=("a", "b", "c"))
    correct = (p > 0.5).astype(float)
    prob = build_difficulty(p, correct=correct)
    fit = fit_irt(p.to_numpy().T, model="1pl")
    assert prob.table["irt_b"].to_numpy() == pytest.approx(fit.b)
    info = prob.meta["irt"]
    assert info["data"] == "prob" and info["model"] == "1pl"
    assert info["theta"] == pytest.approx({"a": fit.theta[0], "b": fit.theta[1], "c": fit.theta[2]})
    outcomes = build_difficulty(p, correct=correct.iloc[::-1], irt_data="correct")  # aligned by id
    fit01 = fit_irt(correct.to_numpy().T, model="1pl")
    assert outcomes.table["irt_b"].to_numpy() == pytest.approx(fit01.b)
    assert outcomes.meta["irt"]["data"] == "correct"
    with pytest.raises(InputError) as err:
        build_difficulty(p, irt_data="correct")
    assert err.value.reason == "IRT on correctness needs the 0/1 correctness matrix"
    two = build_difficulty(p, irt="2pl")
    assert two.meta["irt"]["model"] == "2pl"
    assert two.table["irt_b"].to_numpy() == pytest.approx(fit_irt(p.to_numpy().T, model="2pl").b)


def test_rebucketing_replaces_the_rule_and_keeps_the_rest():
    p = _p([[0.9, 0.7], [0.2, 0.4], [0.5, 0.6], [0.1, 0.1]])
    fixed = build_difficulty(p, irt=None, extra_meta={"keep": "me"})
    terc = rebucket(fixed, Bucketing.by_quantiles((0.25, 0.75)))
    t1, t2 = np.quantile(fixed.table["difficulty"], [0.25, 0.75])
    assert terc.meta["rule"] == "quantile" and terc.meta["quantiles"] == [0.25, 0.75]
    assert terc.meta["thresholds"] == pytest.approx([t1, t2])
    assert terc.meta["keep"] == "me" and terc.meta["source"] == "ensemble"
    assert terc.table["difficulty"].tolist() == fixed.table["difficulty"].tolist()
    back = rebucket(terc, Bucketing.fixed((0.4, 0.6)))
    assert "quantiles" not in back.meta and back.meta["rule"] == "fixed" and back.meta["thresholds"] == [0.4, 0.6]
    assert back.table["bucket"].tolist() == ["easy", "hard", "medium", "hard"]
    assert fixed.table["bucket"].tolist() == ["easy", "medium", "easy", "hard"]  # the input is left as it was
    assert math.isclose(fixed.meta["thresholds"][0], 0.66)


def test_the_range_check_allows_exactly_the_rounding_margin_and_irt_sees_clipped_values():
    edge = _p([[1.0 + 1e-6, 0.5], [-1e-6, 0.25], [0.7, 0.4]])
    res = build_difficulty(edge)
    clipped = np.clip(edge.to_numpy(), 0.0, 1.0)
    assert np.array_equal(res.table["irt_b"].to_numpy(), fit_irt(clipped.T, model="1pl").b)


def test_integer_accuracies_are_stored_as_floats():
    res = build_difficulty(_p([[1, 0], [0, 0], [1, 1]]).astype(int), irt=None)
    assert res.table["p_correct__m1"].dtype == np.float64 and res.table["p_correct__m2"].dtype == np.float64
    assert res.table["difficulty"].tolist() == [0.5, 1.0, 0.0]

"""The pure decisions: properties of each strategy's ``decide`` over random inputs (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtune.adaptive.strategies import (
    ADAPTIVE,
    AdaptiveStrategy,
    DecisionInputs,
    estimate_theta,
    get_adaptive,
    pass_state,
    register_adaptive,
)
from medtune.errors import ConfigError

NAMES = ["ability", "self-paced", "learnability", "rho"]


@st.composite
def decision(draw, name: str):
    k = draw(st.integers(1, 30))
    candidates = tuple(f"i{j}" for j in range(k))
    n = draw(st.integers(1, 40))
    total = draw(st.integers(1, 50))
    floats = st.floats(-3, 3, allow_nan=False, width=32)
    used = frozenset(draw(st.sets(st.sampled_from(candidates), max_size=k)))
    scores = {"b": draw(st.lists(floats, min_size=k, max_size=k)),
              "loss": draw(st.lists(st.floats(0, 8, allow_nan=False, width=32), min_size=k, max_size=k)),
              "ref_loss": draw(st.lists(st.floats(0, 8, allow_nan=False, width=32), min_size=k, max_size=k)),
              "p": draw(st.lists(st.floats(0, 1, allow_nan=False, width=32), min_size=k, max_size=k))}
    return DecisionInputs(step=draw(st.integers(0, total)), total_steps=total, n=n, candidates=candidates,
                          used=used, scores=scores, theta=draw(floats))


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=60, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1), replacement=st.booleans())
def test_decide_chooses_n_candidates_deterministically(name, data, seed, replacement):
    inputs = data.draw(decision(name))
    strategy = get_adaptive(name, {"replacement": replacement})
    chosen = strategy.decide(inputs, seed)
    assert len(chosen) == inputs.n
    assert set(chosen) <= set(inputs.candidates)
    assert chosen == strategy.decide(inputs, seed)  # pure: same inputs, same seed, same choice
    unused = [c for c in inputs.candidates if c not in inputs.used]
    if not replacement and len(unused) >= inputs.n:
        assert len(set(chosen)) == inputs.n and not set(chosen) & inputs.used
    if len(inputs.candidates) >= inputs.n and (replacement or len(unused) >= inputs.n):
        assert len(set(chosen)) == inputs.n  # no repeats while the pool allows


@settings(max_examples=80, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1), delta=st.floats(-1, 1))
def test_ability_picks_only_items_within_reach_when_enough_exist(data, seed, delta):
    inputs = data.draw(decision("ability"))
    chosen = get_adaptive("ability", {"delta": delta, "replacement": True}).decide(inputs, seed)
    b = dict(zip(inputs.candidates, inputs.scores["b"], strict=True))
    within = [c for c in inputs.candidates if b[c] <= inputs.theta + delta]
    if len(within) >= inputs.n:
        assert all(b[c] <= inputs.theta + delta for c in chosen)
    else:  # too few in reach: all of them, then the easiest of the rest
        assert set(within) <= set(chosen)
        rest = sorted((b[c], inputs.candidates.index(c)) for c in inputs.candidates if c not in within)
        outside = {c for c in chosen if c not in within}
        easiest = {inputs.candidates[i] for _, i in rest[:len(outside)]}
        assert outside == easiest or len(inputs.candidates) < inputs.n


@settings(max_examples=80, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_learnability_picks_the_largest_p_times_one_minus_p(data, seed):
    inputs = data.draw(decision("learnability"))
    if inputs.n > len(inputs.candidates):
        return
    chosen = get_adaptive("learnability", {"replacement": True}).decide(inputs, seed)
    p = np.asarray(inputs.scores["p"], dtype=float)
    value = dict(zip(inputs.candidates, p * (1 - p), strict=True))
    worst_chosen = min(value[c] for c in chosen)
    best_left = max((value[c] for c in inputs.candidates if c not in chosen), default=-1.0)
    assert worst_chosen >= best_left


def test_rho_prefers_the_largest_excess_loss_and_self_paced_the_smallest_loss():
    cands = tuple(f"i{j}" for j in range(6))
    inputs = DecisionInputs(step=0, total_steps=10, n=2, candidates=cands,
                            scores={"loss": [1, 5, 2, 9, 3, 4], "ref_loss": [0, 0, 0, 8.5, 0, 0]})
    assert set(get_adaptive("rho").decide(inputs, 0)) == {"i1", "i5"}  # excess 5 and 4; i3's is 0.5
    # self-paced at step 0 admits the lowest third of the losses: i0 (1) and i2 (2)
    assert set(get_adaptive("self-paced", {"start_quantile": 0.25}).decide(inputs, 0)) == {"i0", "i2"}


def test_different_seeds_draw_differently_and_bad_options_are_rejected():
    cands = tuple(f"i{j}" for j in range(40))
    inputs = DecisionInputs(step=0, total_steps=10, n=10, candidates=cands, scores={"b": [0.0] * 40}, theta=1.0)
    draws = {tuple(get_adaptive("ability").decide(inputs, s)) for s in range(5)}
    assert len(draws) > 1
    with pytest.raises(ConfigError, match="delta_typo"):
        get_adaptive("ability", {"delta_typo": 1})
    with pytest.raises(ConfigError, match="unknown adaptive strategy"):
        get_adaptive("nope")


def test_a_taken_strategy_name_is_refused_unless_replaced():
    class Mine(AdaptiveStrategy):
        name = "rho"
        needs = ("loss",)

    with ADAPTIVE.scoped():
        with pytest.raises(ConfigError, match=r"adaptive strategy 'rho' is already registered by .*Rho; .*Mine "
                                              r"registers it again \(pass replace=True"):
            register_adaptive(Mine)
        assert register_adaptive(replace=True)(Mine) is Mine and get_adaptive("rho").__class__ is Mine
    assert get_adaptive("rho").__class__ is not Mine
    with pytest.raises(ConfigError, match=r"unknown adaptive strategy 'self_paced'; did you mean 'self-paced'\?"):
        get_adaptive("self_paced")


def test_theta_rises_with_correct_answers_and_passes_start_when_the_pool_is_used_up():
    b = [-1.0, 0.0, 1.0, 2.0]
    low, _ = estimate_theta([0, 0, 0, 0], b)
    mid, se = estimate_theta([1, 1, 0, 0], b)
    high, _ = estimate_theta([1, 1, 1, 1], b)
    assert low < mid < high and 0 < se < 1
    assert pass_state([], 10, 4, False).epoch == 0
    st1 = pass_state([(0, ["a", "b", "c", "d"])], 10, 4, False)
    assert st1.epoch == 0 and st1.used == {"a", "b", "c", "d"}
    assert pass_state([(0, list("abcd")), (0, list("efgh"))], 10, 4, False).epoch == 1  # 2 left < 4

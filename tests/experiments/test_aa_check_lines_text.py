"""The A/A check's report lines from a gains table written by hand: one line per A/A row, the verdict at and
around the 0.05 boundary, and every number in its place."""

from __future__ import annotations

import pandas as pd

from medtune.report.inference import aa_check_lines


def _gains() -> pd.DataFrame:
    return pd.DataFrame([
        {"strategy": "random-aa", "model": "m1", "test_set": "t1", "gain": 0.0123, "p_holm": 0.5, "p_bootstrap": 0.01},
        {"strategy": "random-aa", "model": "m2", "test_set": "t2", "gain": -0.02, "p_holm": 0.05, "p_bootstrap": 0.2},
        {"strategy": "random-aa", "model": "m3", "test_set": "t3", "gain": 0.001, "p_holm": float("nan"),
         "p_bootstrap": 0.75},
        {"strategy": "curriculum", "model": "m1", "test_set": "t1", "gain": 0.3, "p_holm": 0.001, "p_bootstrap": 0.0},
        {"strategy": "random", "model": "m1", "test_set": "t1", "gain": 0.0, "p_holm": 1.0, "p_bootstrap": 1.0},
    ])


def test_one_line_per_aa_row_with_its_verdict_and_numbers():
    assert aa_check_lines(_gains(), "random") == [
        "A/A check (m1 / t1): random-aa − random = +1.2 pp, seed-aware p_holm 0.5 (null, as it must be); "
        "within-run p_bootstrap 0.01.",
        "A/A check (m2 / t2): random-aa − random = -2.0 pp, seed-aware p_holm 0.05 (SIGNIFICANT: the comparison is "
        "miscalibrated); within-run p_bootstrap 0.2.",
        "A/A check (m3 / t3): random-aa − random = +0.1 pp, seed-aware p_holm nan (not testable without two seeds); "
        "within-run p_bootstrap 0.75.",
    ]


def test_just_above_the_boundary_is_null_and_another_baseline_has_no_aa_rows():
    g = _gains()
    g.loc[1, "p_holm"] = 0.0501
    assert "(null, as it must be)" in aa_check_lines(g, "random")[1]
    assert aa_check_lines(g, "curriculum") == []

"""Evaluation metrics against hand-computed values and scipy/sklearn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest, bootstrap
from sklearn.metrics import f1_score

from medtune.errors import InputError
from medtune.evaluation import (
    accuracy_with_ci,
    compare_predictions,
    compute_metrics,
    mcnemar,
    normalize_answer,
    paired_bootstrap,
    qa_metrics,
    read_predictions,
    token_prf,
)
from medtune.schema import MCQItem, QAItem
from shared_data import shared_path


def test_accuracy_ci_hand_case_and_determinism():
    res = accuracy_with_ci([1, 1, 0, 1, True, False, 1, 1], n_boot=2000, seed=1)
    assert res["accuracy"] == 0.75 and res["n"] == 8
    assert 0 <= res["ci_low"] < 0.75 < res["ci_high"] <= 1
    assert accuracy_with_ci([1, 1, 0, 1, 1, 0, 1, 1], n_boot=2000, seed=1) == res
    assert accuracy_with_ci([1, 1, 0, 1, 1, 0, 1, 1], n_boot=2000, seed=2)["ci_low"] != res["ci_low"] or \
        accuracy_with_ci([1, 1, 0, 1, 1, 0, 1, 1], n_boot=2000, seed=2)["ci_high"] != res["ci_high"]
    const = accuracy_with_ci([1, 1, 1])
    assert (const["accuracy"], const["ci_low"], const["ci_high"]) == (1.0, 1.0, 1.0)
    with pytest.raises(InputError, match="no predictions"):
        accuracy_with_ci([])
    with pytest.raises(InputError, match="missing"):
        accuracy_with_ci([1, None, 0])


def test_accuracy_ci_matches_wilson_interval_for_large_n():
    # 240 / 400 correct: the bootstrap percentile interval is close to the Wilson score interval.
    x = np.array([1] * 240 + [0] * 160)
    res = accuracy_with_ci(x, n_boot=20_000, seed=0)
    wilson = binomtest(240, 400).proportion_ci(method="wilson")
    assert res["ci_low"] == pytest.approx(wilson.low, abs=0.01)
    assert res["ci_high"] == pytest.approx(wilson.high, abs=0.01)


def test_mcnemar_hand_computed():
    # a right & b wrong on 1 item, a wrong & b right on 6: exact p = 2·P(X ≤ 1), X ~ Bin(7, 1/2) = 2·8/128.
    a = [1] * 1 + [0] * 6 + [1] * 10 + [0] * 3
    b = [0] * 1 + [1] * 6 + [1] * 10 + [0] * 3
    res = mcnemar(a, b)
    assert (res["a_only"], res["b_only"], res["both"], res["neither"]) == (1, 6, 10, 3)
    assert res["p_exact"] == pytest.approx(16 / 128)
    assert res["p_midp"] == pytest.approx(16 / 128 - 7 / 128)
    assert res["chi2_cc"] == pytest.approx((5 - 1) ** 2 / 7)
    # symmetric discordance → p = 1 for both; no discordance → 1
    sym = mcnemar([1, 0, 1, 0], [0, 1, 0, 1])
    assert sym["p_exact"] == pytest.approx(1.0) and sym["p_midp"] == pytest.approx(1.0)
    assert mcnemar([1, 0], [1, 0])["p_exact"] == 1.0
    with pytest.raises(InputError, match="0/1"):
        mcnemar([0.5, 1], [1, 1])
    with pytest.raises(InputError, match="same items"):
        mcnemar([1, 0], [1])


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 30), st.integers(0, 30))
def test_mcnemar_exact_equals_scipy_binomtest(b, c):
    a = [1] * b + [0] * c
    bb = [0] * b + [1] * c
    res = mcnemar(a, bb)
    expected = 1.0 if b + c == 0 else binomtest(min(b, c), b + c, 0.5).pvalue
    assert res["p_exact"] == pytest.approx(expected)
    assert res["p_midp"] <= res["p_exact"] + 1e-12


def test_paired_bootstrap_against_scipy_and_limits():
    rng = np.random.default_rng(0)
    a = (rng.random(300) < 0.62).astype(int)
    b = np.where(rng.random(300) < 0.85, a, 1 - a)  # correlated, as two fine-tunes of one model are
    res = paired_bootstrap(a, b, n_boot=20_000, seed=3)
    assert res["diff"] == pytest.approx(a.mean() - b.mean())
    ref = bootstrap((a, b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), paired=True, vectorized=True,
                    n_resamples=20_000, method="percentile", rng=np.random.default_rng(9))
    assert res["ci_low"] == pytest.approx(ref.confidence_interval.low, abs=0.008)
    assert res["ci_high"] == pytest.approx(ref.confidence_interval.high, abs=0.008)
    # identical systems: no difference; totally different: the smallest attainable p
    same = paired_bootstrap(a, a, n_boot=1000)
    assert same["diff"] == 0 and same["p_value"] == 1.0 and same["ci_low"] == same["ci_high"] == 0
    far = paired_bootstrap([1] * 50, [0] * 50, n_boot=999)
    assert far["p_value"] == pytest.approx(1 / 1000)
    # agrees with McNemar on a clear difference and on no difference
    x = np.array([1] * 30 + [0] * 12 + [1] * 150 + [0] * 108)
    y = np.array([0] * 30 + [1] * 12 + [1] * 150 + [0] * 108)
    pb, mc = paired_bootstrap(x, y, n_boot=20_000, seed=0), mcnemar(x, y)
    assert mc["p_exact"] < 0.01 and pb["p_value"] < 0.01
    assert pb["ci_low"] > 0
    x2 = np.array([1] * 14 + [0] * 13 + [1] * 150 + [0] * 123)
    y2 = np.array([0] * 14 + [1] * 13 + [1] * 150 + [0] * 123)
    assert paired_bootstrap(x2, y2, seed=0)["p_value"] > 0.5 and mcnemar(x2, y2)["p_exact"] > 0.5


def test_qa_token_metrics_hand_computed():
    assert normalize_answer("The  Cat, sat on a mat!") == "cat sat on mat"
    assert token_prf("The cat sat on the mat", "A cat sat on a mat.") == (1.0, 1.0, 1.0)
    p, r, f = token_prf("cat dog", "cat")
    assert (p, r) == (0.5, 1.0) and f == pytest.approx(2 / 3)
    assert token_prf("", "") == (1.0, 1.0, 1.0) and token_prf("x", "") == (0.0, 0.0, 0.0)
    assert token_prf("dog", "cat") == (0.0, 0.0, 0.0)
    res = qa_metrics(["the cat sat", None], ["a cat sat down", "fever"])
    # item 1: tokens cat sat vs cat sat down → P 1, R 2/3, F1 0.8; item 2: empty prediction → 0
    assert res["precision"] == pytest.approx(0.5) and res["recall"] == pytest.approx(1 / 3)
    assert res["f1"] == pytest.approx(0.4) and res["exact_match"] == 0 and res["n"] == 2
    # ROUGE-L item 1: LCS(the cat sat, a cat sat down) = 2 → P 2/3, R 2/4, F 4/7
    assert res["rougeL_precision"] == pytest.approx(1 / 3) and res["rougeL_recall"] == pytest.approx(1 / 4)
    assert res["rougeL"] == pytest.approx(2 / 7)
    with pytest.raises(InputError):
        qa_metrics(["a"], ["a", "b"])


def _mcq_items():
    # 8 items: answers by position, categories, a meta key with two values.
    answers = [0, 1, 2, 0, 1, 2, 0, 3]
    cats = ["heart", "heart", "lung", "lung", "lung", "skin", "skin", "skin"]
    steps = ["step1", "step2", "step1", "step1", "step2", "step2", "step1", "step1"]
    return [MCQItem(id=f"q{i}", question="Q?", options=["a", "b", "c", "d"], answer=a, source="t", split="test",
                    category=c, human_difficulty=["easy", "hard"][i % 2], meta={"step": s, "line": i})
            for i, (a, c, s) in enumerate(zip(answers, cats, steps, strict=True))]


def _predictions(items, preds, mode="letter"):
    return pd.DataFrame({"id": [it.id for it in items], "mode": mode, "answer": [it.answer for it in items],
                         "pred": pd.array(preds, dtype="Int64"),
                         "correct": [p is not None and p == it.answer for it, p in zip(items, preds, strict=True)]})


def test_compute_metrics_hand_computed():
    items = _mcq_items()
    preds = [0, 1, 0, 0, 2, 2, None, 0]  # right: q0 q1 q3 q5 → 4/8
    m = compute_metrics(_predictions(items, preds, mode="generate"), items, n_boot=500, seed=0)
    assert m["kind"] == "mcq" and m["n"] == 8 and m["mode"] == "generate"
    assert m["accuracy"]["accuracy"] == 0.5 and m["unanswered"] == 1
    gold = [it.answer for it in items]
    pred = [-1 if p is None else p for p in preds]
    assert m["macro_f1"] == pytest.approx(f1_score(gold, pred, labels=[0, 1, 2, 3], average="macro", zero_division=0))
    # by hand: class A P 3/5... A: tp 2 (q0, q3), fp 2 (q2, q7), fn 1 (q6) → P .5 R 2/3 F1 4/7;
    # B: tp 1, fn 1 → F1 2/3; C: tp 1 (q5), fp 1 (q4), fn 1 (q2) → 1/2; D: 0 → macro (4/7+2/3+1/2+0)/4
    assert m["macro_f1"] == pytest.approx((4 / 7 + 2 / 3 + 1 / 2) / 4)
    assert m["weighted_f1"] == pytest.approx((3 * 4 / 7 + 2 * 2 / 3 + 2 * 1 / 2) / 8)
    assert m["answer_positions"] == {"gold": {"A": 3, "B": 2, "C": 2, "D": 1},
                                     "pred": {"none": 1, "A": 4, "B": 1, "C": 2}}
    assert {k: (v["n"], v["accuracy"]) for k, v in m["per_category"].items()} == {
        "heart": (2, 1.0), "lung": (3, 1 / 3), "skin": (3, 1 / 3)}
    assert {k: v["accuracy"] for k, v in m["per_human_difficulty"].items()} == {"easy": 0.25, "hard": 0.75}
    # auto meta keys: 'step' (2 values) yes; 'line' (a record number) no
    assert list(m["per_meta"]) == ["step"]
    assert {k: (v["n"], v["accuracy"]) for k, v in m["per_meta"]["step"].items()} == {
        "step1": (5, 2 / 5), "step2": (3, 2 / 3)}
    explicit = compute_metrics(_predictions(items, preds), items, n_boot=200, meta_keys=["line"])
    assert len(explicit["per_meta"]["line"]) == 8
    with pytest.raises(InputError, match="meta key 'nope'"):
        compute_metrics(_predictions(items, preds), items, n_boot=200, meta_keys=["nope"])


def test_compute_metrics_rejects_mismatched_predictions():
    items = _mcq_items()
    good = _predictions(items, [0] * 8)
    with pytest.raises(InputError, match="id 'zz' has no item"):
        compute_metrics(good.assign(id=[*good["id"][:-1], "zz"]), items, n_boot=100)
    with pytest.raises(InputError, match="answer 3 differs"):
        compute_metrics(good.assign(answer=[*good["answer"][:-1], 3])
                        .assign(answer=lambda f: f["answer"].where(f.index != 0, 3)), items, n_boot=100)
    with pytest.raises(InputError, match="'correct' disagrees"):
        compute_metrics(good.assign(correct=True), items, n_boot=100)
    partial = compute_metrics(good.iloc[:5], items, n_boot=100)
    assert partial["n"] == 5 and partial["n_items_missing"] == 3


def test_compute_metrics_free_text():
    items = [QAItem(id=f"m{i}", question="What?", answer=a, source="medquad", split="test", category=c)
             for i, (a, c) in enumerate([("Fever and cough.", "flu"), ("Rest and fluids", "flu"), ("Surgery", "x")])]
    frame = pd.DataFrame({"id": ["m0", "m1", "m2"], "mode": "generate", "answer": [it.answer for it in items],
                          "pred": pd.array([None] * 3, dtype="Int64"), "correct": [None] * 3,
                          "generated": ["fever, cough", "fluids", None]})
    m = compute_metrics(frame, items, n_boot=200)
    assert m["kind"] == "qa"
    # F1: "fever cough" vs "fever and cough" P 1 R 2/3 → 0.8; "fluids" vs "rest and fluids" P 1 R 1/3 → 0.5; none → 0
    assert m["qa"]["f1"] == pytest.approx(1.3 / 3)
    assert m["qa"]["recall"] == pytest.approx((2 / 3 + 1 / 3) / 3)
    assert m["per_category_f1"]["flu"]["accuracy"] == pytest.approx(0.65)
    other = frame.assign(generated=["fever", "rest and fluids", "surgery"])
    cmp = compare_predictions(frame, other, n_boot=500)
    assert cmp["metric"] == "token_f1" and "mcnemar" not in cmp
    assert cmp["paired_bootstrap"]["diff"] == pytest.approx(1.3 / 3 - (0.5 + 1 + 1) / 3)


def test_compare_predictions(tmp_path):
    items = _mcq_items()
    a = _predictions(items, [0, 1, 2, 0, 1, 2, 0, 3])
    b = _predictions(items, [1, 1, 2, 0, 0, 0, 0, 3]).iloc[::-1]  # other row order: matched by id
    cmp = compare_predictions(a, b, n_boot=1000, names=("full", "lora"))
    assert cmp["full"] == 1.0 and cmp["lora"] == 0.625
    assert cmp["mcnemar"]["a_only"] == 3 and cmp["mcnemar"]["b_only"] == 0
    assert cmp["paired_bootstrap"]["diff"] == pytest.approx(0.375)
    with pytest.raises(InputError, match="different items"):
        compare_predictions(a, b.iloc[1:])
    path = tmp_path / "p.parquet"
    a.to_parquet(path)
    back = read_predictions(path)
    assert list(back["id"]) == list(a["id"])
    a.drop(columns=["correct"]).to_parquet(path)
    with pytest.raises(InputError, match="missing column"):
        read_predictions(path)


def test_per_meta_on_real_medqa():
    from medtune.data import load

    items = load("medqa", shared_path("medqa", "test.jsonl")).items
    rng = np.random.default_rng(0)
    preds = rng.integers(0, 5, len(items)).tolist()
    m = compute_metrics(_predictions(items, preds), items, n_boot=500)
    steps = pd.Series([it.meta["meta_info"] for it in items]).value_counts().to_dict()
    assert {k: v["n"] for k, v in m["per_meta"]["meta_info"].items()} == steps
    assert m["n"] == 1273 and abs(m["accuracy"]["accuracy"] - 0.2) < 0.05
    assert sum(m["answer_positions"]["gold"].values()) == 1273


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=2, max_size=80), st.integers(0, 1000))
def test_paired_bootstrap_properties(pairs, seed):
    a = [int(x) for x, _ in pairs]
    b = [int(y) for _, y in pairs]
    ab = paired_bootstrap(a, b, n_boot=300, seed=seed)
    ba = paired_bootstrap(b, a, n_boot=300, seed=seed)
    assert ab["diff"] == pytest.approx(-ba["diff"])
    assert ab["ci_low"] == pytest.approx(-ba["ci_high"]) and ab["ci_high"] == pytest.approx(-ba["ci_low"])
    assert -1 <= ab["ci_low"] <= ab["diff"] + 1e-12 and ab["diff"] - 1e-12 <= ab["ci_high"] <= 1
    assert 0 < ab["p_value"] <= 1
    acc = accuracy_with_ci(a, n_boot=300, seed=seed)
    assert acc["ci_low"] <= acc["accuracy"] <= acc["ci_high"]


# ----------------------------------------------------------------------------------------------------------
# Calibration

_CAL_PROBS = [[0.7, 0.1, 0.1, 0.1], [0.2, 0.6, 0.1, 0.1], [0.25, 0.25, 0.45, 0.05], [0.05, 0.05, 0.05, 0.85],
              [0.1, 0.65, 0.15, 0.1]]
_CAL_ANSWERS = [0, 0, 2, 3, 1]


def test_calibration_hand_computed():
    from medtune.evaluation import calibration_metrics

    res = calibration_metrics(_CAL_PROBS, _CAL_ANSWERS)
    # confidences .70 (right), .60 (wrong: B beats the answer A), .45 (right), .85 (right), .65 (right)
    # bins [0.4,0.5): 1 item, |1 − .45| = .55; [0.6,0.7): 2 items, acc .5, conf .625 → 2·.125 = .25;
    # [0.7,0.8): |1 − .7| = .3; [0.8,0.9): |1 − .85| = .15 → ECE = 1.25 / 5
    assert res["ece"] == pytest.approx(0.25)
    # Brier per item: .12, 1.02, .43, .03, .165 → mean .353
    assert res["brier"] == pytest.approx(0.353)
    assert [(b["low"], b["n"]) for b in res["bins"]] == [(0.4, 1), (0.6, 2), (0.7, 1), (0.8, 1)]
    assert res["bins"][1]["accuracy"] == 0.5 and res["bins"][1]["confidence"] == pytest.approx(0.625)
    # one bin: ECE = |accuracy − mean confidence| = |0.8 − 3.25 / 5|
    assert calibration_metrics(_CAL_PROBS, _CAL_ANSWERS, n_bins=1)["ece"] == pytest.approx(0.15)
    # items with fewer options: a missing option has probability 0; perfect and certain → 0 and 0
    ragged = calibration_metrics([[0.0, 1.0], [1.0, 0.0, 0.0]], [1, 0])
    assert ragged["ece"] == 0 and ragged["brier"] == 0
    assert calibration_metrics([[1.0, 0.0]], [1])["brier"] == pytest.approx(2.0)
    with pytest.raises(InputError, match=r"record 1, field 'probs'.*not a probability vector"):
        calibration_metrics([[0.5, 0.5], [0.5, 0.6]], [0, 0])
    with pytest.raises(InputError, match="field 'answer'"):
        calibration_metrics([[0.5, 0.5]], [2])


def test_compute_metrics_reports_calibration_where_probabilities_exist():
    items = [MCQItem(id=f"c{i}", question="Q?", options=["a", "b", "c", "d"], answer=a, source="t", split="test")
             for i, a in enumerate(_CAL_ANSWERS)]
    preds = [int(np.argmax(p)) for p in _CAL_PROBS]
    frame = _predictions(items, preds, mode="option").assign(probs=_CAL_PROBS)
    m = compute_metrics(frame, items, n_boot=100)
    assert m["calibration"]["ece"] == pytest.approx(0.25) and m["calibration"]["brier"] == pytest.approx(0.353)
    assert m["calibration"]["n"] == 5 and m["accuracy"]["accuracy"] == pytest.approx(0.8)
    # generate mode has no option probabilities; letter mode without a probs column neither
    assert "calibration" not in compute_metrics(frame.assign(mode="generate"), items, n_boot=100)
    assert "calibration" not in compute_metrics(frame.drop(columns=["probs"]).assign(mode="letter"), items,
                                                n_boot=100)
    short = frame.assign(probs=[p[:3] if i == 2 else p for i, p in enumerate(_CAL_PROBS)])
    with pytest.raises(InputError, match=r"record 3, field 'probs'.*id 'c2'"):  # the third row, counted from 1
        compute_metrics(short, items, n_boot=100)

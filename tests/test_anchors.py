"""Anchor-item evaluation on simulated 2PL responses, the anchors.json file, and the CLI end to end.

The statistical tests draw many simulated test sets (known models to choose the anchors from, held-out models to
estimate) from :func:`medtune.irt.simulate_responses`; the anchors never see the held-out models.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import expit
from scipy.stats import rankdata

from medtune.anchors import (
    AnchorSet,
    choose_anchors,
    estimate_ability,
    estimate_accuracy,
    read_anchors,
    responses_from_predictions,
    responses_from_run,
    write_anchors,
)
from medtune.anchors.estimate import estimate_all
from medtune.cli import main
from medtune.errors import InputError
from medtune.irt import fit_irt, simulate_responses

# ----------------------------------------------------------------------------------------------------------
# Choosing anchors


@pytest.fixture(scope="module")
def sim():
    y, truth = simulate_responses(80, 300, model="2pl", seed=3)
    return {"y": y, "ids": [f"q{j}" for j in range(300)], "truth": truth}


def test_anchors_are_deterministic_for_a_seed_and_their_weights_sum_to_one(sim):
    for method in ("irt-clusters", "random", "correctness-clusters"):
        one = choose_anchors(sim["y"], sim["ids"], 30, seed=7, method=method)
        two = choose_anchors(sim["y"], sim["ids"], 30, seed=7, method=method)
        assert one.anchor_ids == two.anchor_ids, method
        np.testing.assert_array_equal(one.weights, two.weights)
        assert one.k == 30 and len(set(one.anchor_ids)) == 30
        assert one.weights.sum() == pytest.approx(1.0) and (one.weights > 0).all()
        # each anchor's weight is its cluster's share of the items
        share = np.bincount(one.cluster) / one.n_items
        np.testing.assert_allclose(np.bincount(one.anchor_cluster, weights=one.weights), share)
    assert choose_anchors(sim["y"], sim["ids"], 30, seed=8, method="random").anchor_ids != \
        choose_anchors(sim["y"], sim["ids"], 30, seed=7, method="random").anchor_ids


def test_each_anchor_is_the_member_of_its_cluster_nearest_the_centroid(sim):
    anchors = choose_anchors(sim["y"], sim["ids"], 40, seed=0, method="irt-clusters")
    fit = fit_irt(sim["y"], model="2pl")
    expected = expit(fit.a[None, :] * (fit.theta[:, None] - fit.b[None, :])).mean(0)
    x = (rankdata(expected) - 0.5) / len(expected)
    assert len(np.unique(anchors.cluster)) == anchors.k == 40
    for aid, c in zip(anchors.anchor_ids, anchors.anchor_cluster, strict=True):
        members = np.where(anchors.cluster == c)[0]
        centroid = x[members].mean()
        d = np.abs(x[members] - centroid)
        assert abs(x[sim["ids"].index(aid)] - centroid) <= d.min() + 1e-12
        assert sim["ids"].index(aid) in members
    # clusters are contiguous strata of the expected correctness, of near-equal size
    sizes = np.bincount(anchors.cluster)
    assert sizes.max() - sizes.min() <= 4


def test_correctness_clusters_anchor_is_nearest_its_centroid_in_correctness_space(sim):
    anchors = choose_anchors(sim["y"], sim["ids"], 25, seed=1, method="correctness-clusters")
    x = sim["y"].T
    for aid, c in zip(anchors.anchor_ids, anchors.anchor_cluster, strict=True):
        members = np.where(anchors.cluster == c)[0]
        d = ((x[members] - x[members].mean(0)) ** 2).sum(1)
        assert ((x[sim["ids"].index(aid)] - x[members].mean(0)) ** 2).sum() <= d.min() + 1e-9


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models=st.integers(2, 6), items=st.integers(3, 25), k=st.integers(1, 25), seed=st.integers(0, 10**6),
       method=st.sampled_from(["irt-clusters", "random", "correctness-clusters"]))
def test_any_response_matrix_gives_anchors_whose_weights_are_their_clusters_shares(models, items, k, seed, method):
    k = min(k, items)
    y = np.random.default_rng(seed).integers(0, 2, (models, items)).astype(float)
    anchors = choose_anchors(y, None, k, seed=seed, method=method)
    assert 1 <= anchors.k <= k and len(set(anchors.anchor_ids)) == anchors.k
    assert anchors.weights.sum() == pytest.approx(1.0)
    if method != "random":  # one anchor per non-empty cluster
        assert sorted(anchors.anchor_cluster) == list(range(anchors.k)) == sorted(set(anchors.cluster))


def test_bad_arguments_are_refused(sim):
    from medtune.errors import ConfigError

    with pytest.raises(ConfigError, match="k must be between"):
        choose_anchors(sim["y"], sim["ids"], 301)
    with pytest.raises(ConfigError, match="unknown anchor method"):
        choose_anchors(sim["y"], sim["ids"], 10, method="best")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="at least 2 known models"):
        choose_anchors(sim["y"][:1], sim["ids"], 10)
    with pytest.raises(InputError, match=r"in \[0, 1\]"):
        choose_anchors(sim["y"] * 2, sim["ids"], 10)
    with pytest.raises(InputError, match="duplicate item id"):
        choose_anchors(sim["y"], ["q0"] * 300, 10)


# ----------------------------------------------------------------------------------------------------------
# The weighted estimator over many simulated test sets


@pytest.fixture(scope="module")
def replicates():
    """10 simulated test sets (500 items, 80 known models, 400 held-out models each), k = 100."""
    k, errors = 100, {"irt-clusters": [], "random": []}
    for rep in range(10):
        y, _ = simulate_responses(480, 500, model="2pl", seed=1000 + rep)
        known, held = y[:80], y[80:]
        full = held.mean(1)
        anchors = choose_anchors(known, None, k, seed=rep, method="irt-clusters")
        errors["irt-clusters"].append(held[:, anchors.anchor_index] @ anchors.weights - full)
        # random anchors: a fresh draw for every held-out model
        idx = np.argsort(np.random.default_rng(rep).random(held.shape), axis=1)[:, :k]
        errors["random"].append(np.take_along_axis(held, idx, 1).mean(1) - full)
    return {m: np.stack(e) for m, e in errors.items()}


def test_weighted_estimator_is_unbiased_over_simulations(replicates):
    err = replicates["irt-clusters"]
    rep_means = err.mean(1)
    se = rep_means.std(ddof=1) / np.sqrt(len(rep_means))
    assert abs(err.mean()) < 0.005
    assert abs(err.mean()) < 4 * se + 1e-3


def test_weighted_irt_anchors_beat_random_anchors_at_k_100(replicates):
    mae = {m: float(np.abs(e).mean()) for m, e in replicates.items()}
    assert mae["irt-clusters"] < mae["random"], mae
    # per replicate too, in most of them (a real, not a lucky, difference)
    wins = (np.abs(replicates["irt-clusters"]).mean(1) < np.abs(replicates["random"]).mean(1)).sum()
    assert wins >= 7, (wins, mae)


# ----------------------------------------------------------------------------------------------------------
# Intervals and ability


@pytest.fixture(scope="module")
def coverage():
    """240 held-out models (8 test sets of 400 items, 60 known + 30 held-out models each), k = 50."""
    hits = {m: [] for m in ("weighted", "pirt", "gpirt")}
    errors = {m: [] for m in hits}
    for rep in range(8):
        y, _ = simulate_responses(90, 400, model="2pl", seed=2000 + rep)
        known, held = y[:60], y[60:]
        ids = [f"q{j}" for j in range(400)]
        anchors = choose_anchors(known, ids, 50, seed=rep)
        for i, row in enumerate(held):
            truth = row.mean()
            res = estimate_all(anchors, dict(zip(ids, row, strict=True)), n_boot=200, seed=i)
            for m, r in res.items():
                hits[m].append(r["ci_low"] <= truth <= r["ci_high"])
                errors[m].append(r["estimate"] - truth)
    return {m: float(np.mean(h)) for m, h in hits.items()}, {m: np.asarray(e) for m, e in errors.items()}


def test_intervals_cover_the_full_test_accuracy_at_close_to_95_percent(coverage):
    rates, _ = coverage
    for method, rate in rates.items():
        assert 0.88 <= rate <= 0.99, (method, rate)


def test_irt_estimators_are_no_worse_than_the_weighted_one(coverage):
    _, errors = coverage
    mae = {m: float(np.abs(e).mean()) for m, e in errors.items()}
    assert mae["gpirt"] <= mae["weighted"] * 1.05 and mae["pirt"] <= mae["weighted"] * 1.05, mae
    # one anchor set's error is shared by the models it estimates: 8 sets pin the mean only coarsely
    assert all(abs(e.mean()) < 0.02 for e in errors.values()), {m: e.mean() for m, e in errors.items()}


def _planted(n_items: int, seed: int) -> tuple[AnchorSet, np.random.Generator]:
    rng = np.random.default_rng(seed)
    a, b = np.exp(rng.normal(0, 0.3, n_items)), rng.normal(0, 1, n_items)
    ids = [f"i{j}" for j in range(n_items)]
    anchor_set = AnchorSet(method="random", seed=0, item_ids=ids, a=a, b=b, cluster=np.zeros(n_items, dtype=int),
                           anchor_ids=ids, weights=np.full(n_items, 1 / n_items), k_requested=n_items)
    return anchor_set, rng


def test_estimate_ability_recovers_planted_abilities():
    anchor_set, rng = _planted(150, seed=5)
    thetas = rng.normal(0, 1, 2000)  # drawn from the prior, so the posterior interval covers at its nominal 95%
    est, se = [], []
    for theta in thetas:
        y = (rng.random(150) < expit(anchor_set.a * (theta - anchor_set.b))).astype(int)
        t, s = estimate_ability(anchor_set, dict(zip(anchor_set.item_ids, y, strict=True)))
        est.append(t)
        se.append(s)
    est, se = np.asarray(est), np.asarray(se)
    assert np.corrcoef(est, thetas)[0, 1] > 0.95
    # 2000 examinees: the rate's own sd is 0.005, so ±0.02 holds a calibrated interval and rejects one whose
    # standard errors are off by 15% either way (x1.15: 0.975, x0.87: 0.91; x1.5: 0.996, x0.67: 0.81)
    rate = np.mean(np.abs(est - thetas) <= 1.96 * se)
    assert 0.93 <= rate <= 0.97, rate
    assert 0.1 < se.mean() < 0.3  # ~1/sqrt(150 a^2 p (1 - p))
    # a model far above the rest is placed far above them
    top, _ = estimate_ability(anchor_set, {i: 1 for i in anchor_set.item_ids})
    assert top > thetas.max()


@settings(max_examples=30, deadline=None)
@given(bits=st.lists(st.booleans(), min_size=20, max_size=20), flip=st.integers(0, 19))
def test_answering_one_more_anchor_right_never_lowers_the_ability(bits, flip):
    anchor_set, _ = _planted(20, seed=11)
    before = dict(zip(anchor_set.item_ids, bits, strict=True))
    after = {**before, anchor_set.item_ids[flip]: True}
    t0, _ = estimate_ability(anchor_set, before)
    t1, _ = estimate_ability(anchor_set, after)
    assert t1 >= t0 - 1e-9
    est0 = estimate_accuracy(anchor_set, before, method="pirt", n_boot=20)["estimate"]
    est1 = estimate_accuracy(anchor_set, after, method="pirt", n_boot=20)["estimate"]
    assert est1 >= est0 - 1e-9


def test_estimates_name_missing_or_bad_anchor_answers(sim):
    anchors = choose_anchors(sim["y"], sim["ids"], 10, seed=0)
    answers = {i: 1 for i in anchors.anchor_ids}
    with pytest.raises(InputError, match=f"no correctness for 1 of the 10 anchors .*{anchors.anchor_ids[3]}"):
        estimate_accuracy(anchors, {i: v for i, v in answers.items() if i != anchors.anchor_ids[3]})
    with pytest.raises(InputError, match="correctness must be 0 or 1"):
        estimate_accuracy(anchors, {**answers, anchors.anchor_ids[0]: 0.5})
    res = estimate_accuracy(anchors, {**answers, "not-an-anchor": 0}, method="weighted")
    assert res["estimate"] == pytest.approx(1.0) and res["k"] == 10 and res["method"] == "weighted"


# ----------------------------------------------------------------------------------------------------------
# anchors.json


def test_anchors_file_round_trips(sim, tmp_path):
    anchors = choose_anchors(sim["y"], sim["ids"], 20, seed=0, model_names=[f"m{i}" for i in range(80)])
    path = write_anchors(anchors, tmp_path / "anchors.json")
    back = read_anchors(path)
    assert back.anchor_ids == anchors.anchor_ids and back.item_ids == anchors.item_ids
    np.testing.assert_allclose(back.weights, anchors.weights)
    np.testing.assert_allclose(back.b, anchors.b)
    assert back.models[0]["name"] == "m0" and back.irt["model"] == "2pl"
    answers = {i: int(j % 2) for j, i in enumerate(anchors.item_ids)}
    assert estimate_all(back, answers, n_boot=50) == estimate_all(anchors, answers, n_boot=50)


def _corrupt(data: dict, how: str) -> dict | str:
    data = json.loads(json.dumps(data))
    if how == "weights":
        data["anchors"][0]["weight"] += 0.1
    elif how == "unknown-anchor":
        data["anchors"][1]["id"] = "nowhere"
    elif how == "short-column":
        data["items"]["b"] = data["items"]["b"][:-1]
    elif how == "format":
        data["format"] = "something-else"
    elif how == "nan":
        data["items"]["a"][2] = "x"
    elif how == "not-json":
        return '{"format": "medtune.anchors",\n  "anchors": [}'
    return data


@pytest.mark.parametrize(("how", "message"), [
    ("weights", "field 'anchors.weight': anchor weights sum to 1.1"),
    ("unknown-anchor", "record 2, field 'anchors.id': anchor 'nowhere' is not among items.id"),
    ("short-column", "field 'items.b': has 299 entries but items.id has 300"),
    ("format", "field 'format': not an anchors file"),
    ("nan", "field 'items.a': must hold numbers"),
    ("not-json", "line 2: not valid JSON"),
])
def test_a_bad_anchors_file_is_a_one_line_error(sim, tmp_path, capsys, how, message):
    anchors = choose_anchors(sim["y"], sim["ids"], 10, seed=0)
    bad = _corrupt(anchors.to_dict(), how)
    path = tmp_path / "anchors.json"
    path.write_text(bad if isinstance(bad, str) else json.dumps(bad))
    with pytest.raises(InputError, match=r"anchors\.json"):
        read_anchors(path)
    preds = tmp_path / "p.parquet"
    _write_predictions(preds, sim["ids"], sim["y"][0])
    capsys.readouterr()
    assert main(["evaluate", "anchors", "estimate", str(preds), "--anchors", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and message in err, err


def test_a_missing_anchors_file_is_a_one_line_error(tmp_path, capsys):
    assert main(["evaluate", "anchors", "estimate", str(tmp_path / "p.parquet"),
                 "--anchors", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "none.json: file not found" in err


# ----------------------------------------------------------------------------------------------------------
# Responses from medtune's files, and the CLI end to end


def _write_predictions(path, ids, correct) -> None:
    from medtune.scoring.store import write_predictions

    answer = np.arange(len(ids)) % 4
    pred = np.where(np.asarray(correct) > 0, answer, (answer + 1) % 4)
    write_predictions(pd.DataFrame({"id": ids, "answer": answer, "pred": pred,
                                    "correct": np.asarray(correct) > 0, "mode": "letter"}), path)


def test_responses_from_prediction_files_and_a_grid_run(tmp_path):
    ids = [f"q{j}" for j in range(12)]
    y, _ = simulate_responses(4, 12, seed=0)
    paths = []
    cells = tmp_path / "run" / "cells"
    cells.mkdir(parents=True)
    for i, row in enumerate(y):
        p = tmp_path / f"m{i}.parquet"
        _write_predictions(p, ids, row)
        paths.append(p)
        status = "done" if i < 3 else "failed"
        (cells / f"c{i}.json").write_text(json.dumps({"cell_id": f"c{i}", "status": status,
                                                      "tests": {"medqa": {"predictions": str(p)}}}))
    frame = responses_from_predictions(paths)
    np.testing.assert_array_equal(frame.to_numpy(), y)
    assert list(frame.columns) == ids and list(frame.index) == [str(p) for p in paths]
    run = responses_from_run(tmp_path / "run")
    assert list(run) == ["medqa"] and list(run["medqa"].index) == ["c0", "c1", "c2"]
    np.testing.assert_array_equal(run["medqa"].to_numpy(), y[:3])
    _write_predictions(tmp_path / "short.parquet", ids[:-1], y[0][:-1])
    with pytest.raises(InputError, match=r"short\.parquet, field 'id': lacks item 'q11'"):
        responses_from_predictions([paths[0], tmp_path / "short.parquet"])


@pytest.fixture(scope="module")
def mcq_setup(tmp_path_factory):
    from medtune.models import build_tiny_model
    from medtune.schema import MCQItem, write_items

    root = tmp_path_factory.mktemp("anchors")
    rng = np.random.default_rng(0)
    words = ["fever", "cough", "rash", "renal", "cardiac", "liver", "nerve", "bone", "lung", "skin"]
    items = [MCQItem(id=f"q{j}", question=f"Which finding fits case {j}: {' '.join(rng.choice(words, 6))}?",
                     options=[str(w) for w in rng.choice(words, 4, replace=False)], answer=int(j % 4),
                     source="synthetic", split="test") for j in range(80)]
    items_path = write_items(items, root / "items.parquet")
    model, tok = build_tiny_model([it.question + " " + " ".join(it.options) for it in items], vocab_size=300)
    model.save_pretrained(root / "tiny")
    tok.save_pretrained(root / "tiny")
    y, _ = simulate_responses(40, 80, seed=4)
    known = []
    for i, row in enumerate(y):
        p = root / f"known{i}" / "predictions.parquet"
        p.parent.mkdir()
        _write_predictions(p, [it.id for it in items], row)
        known.append(p)
    return {"root": root, "items": items, "items_path": items_path, "model": root / "tiny", "known": known}


def test_cli_chooses_anchors_scores_only_them_and_writes_the_estimate(mcq_setup, tmp_path, capsys):
    from medtune.evaluation import read_predictions

    anchors_path = tmp_path / "anchors.json"
    assert main(["evaluate", "anchors", "choose", *map(str, mcq_setup["known"]), "-o", str(anchors_path),
                 "--k", "12", "--seed", "3"]) == 0
    anchors = read_anchors(anchors_path)
    assert anchors.k == 12 and anchors.n_items == 80 and len(anchors.models) == 40
    assert anchors.anchor_ids == choose_anchors(responses_from_predictions(mcq_setup["known"]), k=12,
                                                seed=3).anchor_ids
    out = tmp_path / "eval"
    capsys.readouterr()
    assert main(["evaluate", "run", str(mcq_setup["items_path"]), "--model", str(mcq_setup["model"]), "-o",
                 str(out), "--anchors", str(anchors_path), "--no-progress", "--n-boot", "200"]) == 0
    printed = capsys.readouterr().out
    assert "estimated accuracy on all 80 items from 12 anchors" in printed
    pred = read_predictions(out / "predictions.parquet")
    assert sorted(pred["id"]) == sorted(anchors.anchor_ids)  # the anchors only
    metrics = json.loads((out / "metrics.json").read_text())
    est = metrics["estimate"]
    assert est["is_estimate"] is True and est["estimator"] == "gpirt" and est["k"] == 12 and est["n_items"] == 80
    assert metrics["n"] == 12 and metrics["scored"] == "anchor items only"
    correct = dict(zip(pred["id"], pred["correct"].astype(int), strict=True))
    expected = estimate_all(anchors, correct, n_boot=200, seed=0)
    assert est["estimate"] == pytest.approx(expected["gpirt"]["estimate"])
    assert est["ci_low"] <= est["estimate"] <= est["ci_high"]
    assert metrics["anchors"]["estimates"]["weighted"]["estimate"] == pytest.approx(
        float(sum(w * correct[i] for i, w in zip(anchors.anchor_ids, anchors.weights, strict=True))))
    # the estimate command on the same predictions gives the same figures
    est_path = tmp_path / "est.json"
    assert main(["evaluate", "anchors", "estimate", str(out / "predictions.parquet"), "--anchors",
                 str(anchors_path), "-o", str(est_path), "--n-boot", "200"]) == 0
    again = json.loads(est_path.read_text())
    assert again["is_estimate"] and again["estimates"]["gpirt"]["estimate"] == pytest.approx(est["estimate"])


def test_cli_refuses_anchors_of_another_test_set(mcq_setup, tmp_path, capsys):
    from medtune.schema import write_items

    anchors_path = tmp_path / "anchors.json"
    write_anchors(choose_anchors(responses_from_predictions(mcq_setup["known"]), k=10), anchors_path)
    anchors = read_anchors(anchors_path)
    fewer = write_items([it for it in mcq_setup["items"] if it.id != anchors.anchor_ids[0]],
                        tmp_path / "fewer.parquet")
    capsys.readouterr()
    assert main(["evaluate", "run", str(fewer), "--model", str(mcq_setup["model"]), "-o", str(tmp_path / "o"),
                 "--anchors", str(anchors_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fewer.parquet" in err and "another test set" in err


def test_the_anchor_choice_stage_is_what_the_cli_calls(mcq_setup, tmp_path):
    from medtune.anchors.stage import AnchorChoiceSettings, run_anchor_choice
    from medtune.errors import ConfigError
    from medtune.settings import validate_settings

    summary = run_anchor_choice(AnchorChoiceSettings(k=12, seed=3), mcq_setup["known"], tmp_path / "a.json")
    assert summary["k"] == 12 and summary["n_items"] == 80 and summary["known_models"] == 40
    assert read_anchors(tmp_path / "a.json").anchor_ids == choose_anchors(
        responses_from_predictions(mcq_setup["known"]), k=12, seed=3).anchor_ids
    with pytest.raises(ConfigError, match=r"options\.irt: must be 1pl or 2pl, not '3pl'"):
        validate_settings(AnchorChoiceSettings, {"irt": "3pl"}, "options")
    with pytest.raises(ConfigError, match=r"options\.method: must be one of"):
        validate_settings(AnchorChoiceSettings, {"method": "best"}, "options")

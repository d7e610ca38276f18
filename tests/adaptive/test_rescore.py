"""Partial re-scoring: a decision re-scores a share of the pool (the oldest scores among the items still
available) and carries the others' last scores; the replay checks both, and a resumed run rebuilds the state."""

from __future__ import annotations

import itertools
import json
import math
import shutil

import pytest
from adaptive_helpers import MICRO, tamper, write_inputs
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from medtune.adaptive.decisions import read_decisions
from medtune.adaptive.stage import AdaptiveSettings, run_adaptive_training
from medtune.adaptive.strategies import rescore_positions
from medtune.adaptive.verify import verify_run
from medtune.training.config import TrainSettings

RESCORE = 0.5  # items re-scored per item a decision trains: 4 of the pool's 24 per decision of 2 × 4


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n=st.integers(1, 30), m=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_rescore_positions_takes_the_never_scored_then_the_available_oldest(data, n, m, seed):
    scored_at = data.draw(st.lists(st.integers(-1, 20), min_size=n, max_size=n))
    available = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    picked = rescore_positions(scored_at, available, m, seed)
    assert picked == sorted(set(picked)) and all(0 <= i < n for i in picked)
    assert picked == rescore_positions(scored_at, available, m, seed)  # pure
    never = [i for i in range(n) if scored_at[i] < 0]
    if never:
        assert picked == never
        return
    assert len(picked) == min(m, n)
    rest = [i for i in range(n) if i not in picked]
    key = [(not available[i], scored_at[i]) for i in range(n)]
    if rest and picked:  # nothing left out comes before anything taken
        assert max(key[i] for i in picked) <= min(key[i] for i in rest)


def _config(**extra) -> TrainSettings:
    return TrainSettings.model_validate({"model": "tiny", "tiny": MICRO, "tiny_vocab_size": 400, "target": "option",
                                       "max_length": 128, "batch_size": 4, "lr": 1e-3, "save_every": 3,
                                       "keep_checkpoints": None, **extra})


@pytest.fixture(scope="module")
def rescored_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rescore")
    paths = write_inputs(folder, epochs=3)  # 24 items × 3 passes at batch 4: 18 steps, a decision every 2
    adaptive = AdaptiveSettings(strategy="rho", every=2, rescore=RESCORE)
    run = folder / "run"
    summary = run_adaptive_training(_config(), paths["items"], adaptive, run, order_path=paths["order"])
    return paths, adaptive, run, summary


def test_each_decision_after_the_first_rescores_its_share_and_carries_the_rest(rescored_run):
    _, _, run, summary = rescored_run
    decisions = read_decisions(run)
    pool = decisions[0]["candidates"]
    assert len(decisions) == 9 and sorted(decisions[0]["rescored"]) == sorted(pool)
    m = math.ceil(RESCORE * 2 * 4)
    for prev, d in itertools.pairwise(decisions):
        assert len(d["rescored"]) == m
        fresh = set(d["rescored"])
        # the items re-scored are ones that can still be drawn in this pass whenever enough are left
        if len(pool) - len(d["used"]) >= m:
            assert not fresh & set(d["used"])
        for k, c in enumerate(pool):
            if c not in fresh:
                assert d["scores"]["loss"][k] == prev["scores"]["loss"][k]
        assert d["scores"]["ref_loss"] == decisions[0]["scores"]["ref_loss"]
    assert any(d["scores"]["loss"] != decisions[0]["scores"]["loss"] for d in decisions[1:])
    result = verify_run(run)
    assert result.ok, result.message
    overhead = summary["adaptive"]
    assert overhead["decisions"] == 9 and 0 <= overhead["periodic_share"] <= overhead["score_share"] < 1
    assert json.loads((run / "config.json").read_text())["adaptive"]["rescore"] == RESCORE


def test_a_changed_carried_score_or_rescored_set_fails_the_replay(rescored_run, tmp_path):
    _, _, run, _ = rescored_run
    carried = tmp_path / "carried"
    shutil.copytree(run, carried)

    def nudge(rec):  # an item not re-scored at decision 2 whose score nevertheless moved
        k = next(k for k, c in enumerate(rec["candidates"]) if c not in rec["rescored"])
        rec["scores"]["loss"][k] += 1e-3
    tamper(carried / "decisions.jsonl", 2, nudge)
    result = verify_run(carried)
    assert not result.ok and result.first_bad_step == 5 and "not re-scored" in result.message

    swapped = tmp_path / "swapped"
    shutil.copytree(run, swapped)

    def other(rec):
        outside = next(c for c in rec["candidates"] if c not in rec["rescored"])
        rec["rescored"] = sorted([*rec["rescored"][1:], outside], key=rec["candidates"].index)
    tamper(swapped / "decisions.jsonl", 3, other)
    result = verify_run(swapped)
    assert not result.ok and result.first_bad_step == 7 and "re-scored items" in result.message


def test_resuming_mid_run_rebuilds_the_scores_and_makes_the_same_decisions(rescored_run, tmp_path):
    paths, adaptive, run, _ = rescored_run
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    # as if killed after the checkpoint of step 9: later checkpoints and the final model never written
    for ckpt in (resumed / "checkpoints").iterdir():
        if int(ckpt.name.split("-")[1]) > 9:
            shutil.rmtree(ckpt)
    shutil.rmtree(resumed / "adapter")
    run_adaptive_training(_config(), paths["items"], adaptive, resumed, order_path=paths["order"], resume=True)
    strip = [{k: v for k, v in d.items() if k not in ("timing", "wall")} for d in read_decisions(run)]
    assert [{k: v for k, v in d.items() if k not in ("timing", "wall")} for d in read_decisions(resumed)] == strip
    a, b = (load_file(r / "adapter" / "adapter_model.safetensors") for r in (run, resumed))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_ability_reads_its_scale_from_an_anchor_set_chosen_on_the_training_items(tmp_path):
    """With an anchors.json the anchors' IRT a, b and the fit's prior give θ (the estimate of
    medtune.anchors.estimate_ability), and every pool item's b comes from the same fit."""
    import numpy as np

    from medtune.anchors import choose_anchors, estimate_ability, read_anchors, write_anchors
    from medtune.schema import read_items

    paths = write_inputs(tmp_path, epochs=2)
    train_ids = [it.id for it in read_items(paths["items"]) if it.split == "train"]
    rng = np.random.default_rng(0)
    theta, b = rng.normal(size=(12, 1)), rng.normal(size=(1, len(train_ids)))
    responses = (rng.random((12, len(train_ids))) < 1 / (1 + np.exp(-(theta - b)))).astype(float)
    anchor_file = write_anchors(choose_anchors(responses, train_ids, k=6, seed=0), tmp_path / "anchors.json")
    anchor_set = read_anchors(anchor_file)
    run = tmp_path / "ability"
    adaptive = AdaptiveSettings(strategy="ability", every=3, anchors=[str(anchor_file)], options={"delta": 0.5})
    run_adaptive_training(_config(), paths["items"], adaptive, run, order_path=paths["order"])
    decisions = read_decisions(run)
    assert len(decisions) == 4
    b_of = dict(zip(anchor_set.item_ids, anchor_set.b.tolist(), strict=True))
    for d in decisions:
        assert d["anchors"]["ids"] == anchor_set.anchor_ids
        assert d["anchors"]["prior"] == anchor_set.theta_prior
        assert d["anchors"]["a"] == pytest.approx(anchor_set.a[anchor_set.anchor_index].tolist())
        assert d["scores"]["b"] == pytest.approx([b_of[c] for c in d["candidates"]])
        expected, se = estimate_ability(anchor_set, dict(zip(d["anchors"]["ids"], d["anchors"]["correct"],
                                                             strict=True)))
        assert d["theta"] == pytest.approx(expected, abs=1e-8) and d["theta_se"] == pytest.approx(se, abs=1e-8)
    result = verify_run(run)
    assert result.ok, result.message


def test_anchor_ids_longer_than_a_file_name_are_read_as_ids(tmp_path):
    """A grid passes its anchor sample as one comma-joined string, longer than a path may be."""
    from medtune.adaptive.stage import _anchor_items
    from medtune.schema import read_items

    paths = write_inputs(tmp_path)
    items = list(read_items(paths["items"]))
    ids = [it.id for it in items]
    spec = ",".join(ids)
    assert len(spec) > 255
    assert [it.id for it in _anchor_items([spec], items, paths["items"])] == ids


def test_rho_subtracts_a_given_reference_models_losses(rescored_run, tmp_path):
    """``reference``: a run folder's model (here one trained on the same pool, standing in for a model fine-tuned
    on held-out data) gives ref_loss, scored once before training; the base model is not the reference then."""
    from medtune.adaptive.stage import reference_item_losses
    from medtune.errors import ConfigError
    from medtune.schema import read_items

    paths, _, reference_run, _ = rescored_run
    run = tmp_path / "rho-ref"
    adaptive = AdaptiveSettings(strategy="rho", every=6, reference=str(reference_run))
    config = _config()
    run_adaptive_training(config, paths["items"], adaptive, run, order_path=paths["order"])
    decisions = read_decisions(run)
    first = decisions[0]
    by_id = {it.id: it for it in read_items(paths["items"])}
    expected = reference_item_losses(str(reference_run), [by_id[c] for c in first["candidates"]], config, 16)
    assert first["scores"]["ref_loss"] == pytest.approx(expected, abs=1e-6)
    assert first["scores"]["ref_loss"] != pytest.approx(first["scores"]["loss"], abs=1e-3)  # not the base model
    assert all(d["scores"]["ref_loss"] == first["scores"]["ref_loss"] for d in decisions)
    assert json.loads((run / "config.json").read_text())["adaptive"]["settings"]["reference"] == str(reference_run)
    result = verify_run(run)
    assert result.ok, result.message
    with pytest.raises(ConfigError, match="takes no reference"):
        run_adaptive_training(config, paths["items"], AdaptiveSettings(strategy="self-paced", reference=str(
            reference_run)), tmp_path / "sp", order_path=paths["order"])

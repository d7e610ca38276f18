"""Each strategy trains a tiny model on synthetic items, logs its decisions, and passes verify-order; tampering
with the decision log or the train log fails verification naming the step."""

from __future__ import annotations

import json

import pytest
from adaptive_helpers import micro_cli_options, strategy_args, tamper, write_inputs

from medtune.adaptive.decisions import read_decisions
from medtune.adaptive.verify import verify_run
from medtune.cli import main
from medtune.errors import ConfigError
from medtune.training.runlog import read_log

STRATEGIES = ["ability", "self-paced", "learnability", "rho"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adaptive")
    paths = write_inputs(folder)
    for name in STRATEGIES:
        rc = main(["train", "--items", str(paths["items"]), "--order", str(paths["order"]), "-o",
                   str(folder / name), "--no-progress", *micro_cli_options(), *strategy_args(name, paths)])
        assert rc in (0, None)
    return folder, paths


@pytest.mark.parametrize("name", STRATEGIES)
def test_each_strategy_logs_its_decisions_and_passes_verify(runs, name):
    folder, _ = runs
    run = folder / name
    decisions, log = read_decisions(run), read_log(run)
    assert len(log) == 6  # the order's plan: 24 items, batch 4
    assert [d["step"] for d in decisions] == [0, 2, 4]
    assert [r["ids"] for r in log] == [d["chosen"][k * 4:(k + 1) * 4] for d in decisions for k in range(2)]
    for d in decisions:
        assert d["strategy"] == name and set(d["chosen"]) <= set(d["candidates"])
        assert d["timing"]["score_seconds"] >= 0
    assert json.loads((run / "config.json").read_text())["adaptive"]["strategy"] == name
    result = verify_run(run)
    assert result.ok, result.message
    assert main(["verify-order", str(run)]) in (0, None)


def test_ability_logs_theta_from_the_anchor_answers_and_pacing_widens_the_reach(runs):
    folder, _ = runs
    decisions = read_decisions(folder / "ability")
    for d in decisions:
        assert len(d["anchors"]["correct"]) == 8 and set(d["anchors"]["correct"]) <= {0, 1}
        assert d["theta_se"] > 0
        b = dict(zip(d["candidates"], d["scores"]["b"], strict=True))
        reach = d["theta"] - 0.5 + 1.0 * d["step"] / 6  # delta paced linearly from -0.5 to 0.5
        within = [c for c in d["candidates"] if b[c] <= reach and c not in d["used"]]
        if len(within) >= len(d["chosen"]):
            assert all(b[c] <= reach for c in d["chosen"])
    # without replacement, the first pass (24 items) uses each item once
    chosen = [i for d in decisions for i in d["chosen"]]
    assert len(chosen) == len(set(chosen)) == 24


def test_a_tampered_decision_log_fails_verify_naming_the_step(runs, tmp_path):
    import shutil

    folder, _ = runs
    run = tmp_path / "run"
    shutil.copytree(folder / "self-paced", run)
    # swap two chosen ids of decision 1 (steps 3-4) and the train log alike: only the replay can tell
    def swap(rec):
        c = rec["chosen"]
        c[0], c[5] = c[5], c[0]
    tamper(run / "decisions.jsonl", 1, swap)
    d1 = read_decisions(run)[1]
    tamper(run / "train_log.jsonl", 2, lambda r: r.update(ids=d1["chosen"][:4]))
    tamper(run / "train_log.jsonl", 3, lambda r: r.update(ids=d1["chosen"][4:]))
    result = verify_run(run)
    assert not result.ok and result.first_bad_step == 3
    assert "step 3" in result.message and "replaying" in result.message
    assert main(["verify-order", str(run)]) == 1

    # a changed score is caught too: the logged choice no longer follows from the inputs
    shutil.copytree(folder / "rho", tmp_path / "rho")
    def boost(rec):  # make an item that was left out the one with the largest excess loss
        left = next(k for k, c in enumerate(rec["candidates"]) if c not in rec["used"] and c not in rec["chosen"])
        rec["scores"]["loss"][left] += 100.0
    tamper(tmp_path / "rho" / "decisions.jsonl", 1, boost)
    rho = verify_run(tmp_path / "rho")
    assert not rho.ok and rho.first_bad_step == 3


def test_a_tampered_train_log_fails_verify_naming_the_step(runs, tmp_path):
    import shutil

    folder, _ = runs
    run = tmp_path / "run"
    shutil.copytree(folder / "ability", run)
    tamper(run / "train_log.jsonl", 4, lambda r: r.update(ids=list(reversed(r["ids"]))))
    result = verify_run(run)
    assert not result.ok and result.first_bad_step == 5 and "step 5" in result.message
    # a decision that was dropped from the log
    shutil.copytree(folder / "learnability", tmp_path / "dropped")
    path = tmp_path / "dropped" / "decisions.jsonl"
    path.write_text("\n".join(path.read_text().splitlines()[:2]) + "\n")
    dropped = verify_run(tmp_path / "dropped")
    assert not dropped.ok and dropped.first_bad_step == 5


def test_ability_without_anchors_or_difficulty_is_a_config_error(runs, tmp_path):
    _, paths = runs
    base = ["train", "--items", str(paths["items"]), "--order", str(paths["order"]), "--no-progress",
            *micro_cli_options(), "--adaptive", "ability"]
    with pytest.raises(ConfigError, match="difficulty"):
        from medtune.adaptive.stage import AdaptiveSettings, run_adaptive_training
        from medtune.training.config import TrainSettings

        run_adaptive_training(TrainSettings(model="tiny"), paths["items"], AdaptiveSettings(strategy="ability"),
                              tmp_path / "x", order_path=paths["order"])
    assert main([*base, "-o", str(tmp_path / "y"), "--difficulty", str(paths["difficulty"])]) == 2

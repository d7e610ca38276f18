"""``--method dpo``: preference tuning by TRL's DPOTrainer on pairs loaded by the ``preference`` loader.

One run through the training stage (``run_training``) on a tiny model with LoRA is shared: the chosen-minus-rejected
log-probability margin, measured here with the scorer on the base and on the trained adapter, goes up; the log's
ids follow the order file step by step (a short last step of each epoch included) and ``verify-order`` agrees; the
run folder is an adapter run that ``run_evaluation`` scores like any other.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from training_helpers import DRUGS, ORGANS, make_order, micro_cli_options, micro_config

from medtune.adaptive.verify import verify_run
from medtune.data import load
from medtune.errors import ConfigError, InputError
from medtune.prompts import qa_prompt
from medtune.schema import write_items
from medtune.scoring.backends import load_backend
from medtune.training.data import plan_steps, planned_epochs
from medtune.training.methods.dpo import planned_pairs, step_batches

SETTINGS = {"method": "dpo", "lr": 1e-2, "batch_size": 3, "epochs": 2, "dpo": {"beta": 1.0}}


def _pairs(n: int = 8) -> list[dict]:
    """Pairs whose chosen answer follows a rule (organ → drug) and whose rejected answer is the next drug."""
    rows = []
    for i in range(n):
        organ = ORGANS[i % len(ORGANS)]
        k = ORGANS.index(organ)
        rows.append({"id": f"pair{i:02d}", "prompt": f"Which drug treats the {organ} disease number {i}?",
                     "chosen": DRUGS[k], "rejected": DRUGS[(k + 1) % len(DRUGS)]})
    return rows


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _margins(backend, items) -> list[float]:
    pairs = [(qa_prompt(it), text) for it in items for text in (it.answer, it.meta["rejected"])]
    scores = [s for s, _ in backend.loglikelihood(pairs)]
    return [scores[2 * k] - scores[2 * k + 1] for k in range(len(items))]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    from medtune.training.stage import run_training

    home = tmp_path_factory.mktemp("dpo")
    items = load("preference", _jsonl(home / "pairs.jsonl", _pairs())).items
    items_path = write_items(items, home / "items.parquet")
    order = make_order([it.id for it in reversed(items)], epochs=2)
    order_path = home / "order.json"
    order_path.write_text(json.dumps(order))
    config = micro_config(**SETTINGS)
    summary = run_training(config, items_path, order_path, home / "run")
    return {"home": home, "dir": home / "run", "items": items, "items_path": items_path, "order": order,
            "order_path": order_path, "summary": summary, "config": config}


def test_dpo_raises_the_chosen_minus_rejected_margin(run):
    out = run["dir"]
    before = _margins(load_backend(str(out / "base"), dtype="fp32", device="cpu"), run["items"])
    after = _margins(load_backend(str(out / "base"), adapter=out / "adapter", dtype="fp32", device="cpu"),
                     run["items"])
    assert sum(after) / len(after) > sum(before) / len(before) + 0.1
    assert sum(a > b for a, b in zip(after, before, strict=True)) >= 6
    # The run's own record agrees with the scorer: before training the policy is the base, after it the adapter.
    rows = [json.loads(line) for line in (out / "preference_logprobs.jsonl").read_text().splitlines()]
    by_id = {it.id: k for k, it in enumerate(run["items"])}
    # Recomputed here in fp32 on the CPU: exact for a CPU run, within half precision's error for a GPU run.
    tol = 1e-4 if json.loads((out / "config.json").read_text())["precision"]["dtype"] == "fp32" else 0.25
    for row in rows:
        k = by_id[row["id"]]
        assert row["before"]["margin"] == pytest.approx(before[k], abs=tol)
        assert row["after"]["margin"] == pytest.approx(after[k], abs=tol)
        assert row["reference"]["chosen"] - row["reference"]["rejected"] == pytest.approx(before[k], abs=tol)


def test_dpo_trains_in_the_planned_order_and_verify_order_agrees(run):
    log = [json.loads(line) for line in (run["dir"] / "train_log.jsonl").read_text().splitlines()]
    plan = plan_steps(planned_epochs(run["order"], 2), 3)
    assert [len(s.ids) for s in plan] == [3, 3, 2, 3, 3, 2]  # each epoch's last step is short
    assert [(r["step"], r["epoch"], r["ids"]) for r in log] == [(s.step, s.epoch, list(s.ids)) for s in plan]
    assert log[0]["ids"] == ["pair07", "pair06", "pair05"]  # the order file's, not the items file's
    assert all("loss" in r for r in log)
    assert verify_run(run["dir"]).ok


def test_the_run_folder_evaluates_like_any_adapter_run(run, tmp_path):
    from medtune.evaluation_stage import ModelRef, run_evaluation

    ref = ModelRef.from_run(run["dir"])
    assert ref.method == "dpo" and ref.adapter == run["dir"] / "adapter"
    assert run["summary"]["model_ref"]["method"] == "dpo" and run["summary"]["steps"] == 6
    meta = json.loads((run["dir"] / "config.json").read_text())
    assert meta["train"]["method"] == "dpo" and meta["train"]["dpo"]["beta"] == 1.0
    assert meta["dpo"]["loss"] == {"type": ["sigmoid"], "weights": [1.0], "beta": 1.0}
    assert meta["dpo"]["mean_margin_after"] > meta["dpo"]["mean_margin_before"]
    summary = run_evaluation({"max_new_tokens": 3, "bertscore": "none", "bootstrap": 50}, run["items_path"], ref,
                             tmp_path / "eval")
    assert summary["n"] == len(run["items"]) and summary["mode"] == "generate"
    assert (tmp_path / "eval" / "predictions.parquet").exists()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 9), epochs=st.integers(1, 3), batch=st.integers(1, 4), accum=st.integers(1, 3),
       max_steps=st.one_of(st.none(), st.integers(1, 8)), seed=st.integers(0, 10_000))
def test_the_batches_are_the_planned_steps_whatever_the_order(n, epochs, batch, accum, max_steps, seed):
    """Each pair once, in order of first use, and each step's batch is exactly the plan's ids of that step."""
    rng = random.Random(seed)
    items = load_pairs_once()[:n]
    order = make_order([], epochs=0)
    order["epochs"] = [rng.sample([it.id for it in items], n) for _ in range(epochs)]
    order["n_items"] = n
    config = micro_config(method="dpo", batch_size=batch, grad_accum=accum, epochs=epochs, max_steps=max_steps)
    pairs, plan = planned_pairs(items, order, config)
    assert plan == plan_steps(planned_epochs(order, epochs), batch * accum, max_steps)
    assert len({p.id for p in pairs}) == len(pairs) == len({i for s in plan for i in s.ids})
    assert [[pairs[k].id for k in b] for b in step_batches(pairs, plan)] == [list(s.ids) for s in plan]
    first = list(dict.fromkeys(i for s in plan for i in s.ids))
    assert [p.id for p in pairs] == first
    assert all(p.prompt == qa_prompt(by) and p.rejected == by.meta["rejected"]
               for p, by in zip(pairs, ({it.id: it for it in items}[p.id] for p in pairs), strict=True))


_PAIRS_CACHE: list = []


def load_pairs_once() -> list:
    if not _PAIRS_CACHE:
        with tempfile.TemporaryDirectory() as tmp:
            _PAIRS_CACHE.extend(load("preference", _jsonl(Path(tmp) / "pairs.jsonl", _pairs(9))).items)
    return _PAIRS_CACHE


# ----------------------------------------------------------------------------------------------------------
# Refused


def test_items_that_are_not_pairs_are_named(tmp_path, files):
    from medtune.training.stage import run_training

    with pytest.raises(InputError) as exc:
        run_training(micro_config(method="dpo"), files["items"], files["order"], tmp_path / "run")
    assert "not a preference pair" in str(exc.value) and "field 'meta.rejected'" in str(exc.value)
    assert not (tmp_path / "run" / "base").exists()


def test_a_pair_whose_prompt_fills_max_length_is_named_not_dropped(run, tmp_path):
    from medtune.training.stage import run_training

    config = micro_config(**{**SETTINGS, "max_length": 12})
    with pytest.raises(InputError) as exc:
        run_training(config, run["items_path"], run["order_path"], tmp_path / "short")
    assert str(exc.value).startswith(f"{run['items_path']}, record pair07, field 'prompt': the prompt alone fills "
                                     "max_length (12 tokens)")


def test_resume_another_optimizer_and_a_used_folder_are_refused(run, tmp_path):
    from medtune.training.stage import run_training

    with pytest.raises(ConfigError, match="cannot be resumed"):
        run_training(run["config"], run["items_path"], run["order_path"], tmp_path / "again", resume=True)
    with pytest.raises(ConfigError, match="optim 'adamw_8bit' does not apply"):
        run_training(micro_config(**SETTINGS, optim="adamw_8bit"), run["items_path"], run["order_path"],
                     tmp_path / "again")
    with pytest.raises(InputError, match="already holds a run"):
        run_training(run["config"], run["items_path"], run["order_path"], run["dir"])


def test_dpo_settings_from_the_command_line_and_their_checks(tmp_path, capsys):
    from medtune.cli import main

    code = main(["train", "--dry-run", "--method", "dpo", "--dpo-beta", "0.3", "--dpo-loss-type", "ipo",
                 "--dpo-sft-weight", "0.5", *micro_cli_options()])
    assert code == 0, capsys.readouterr().err
    code = main(["train", "--dry-run", "--method", "dpo", "--dpo-beta", "0", *micro_cli_options()])
    err = capsys.readouterr().err
    assert code == 2 and "beta" in err and "Traceback" not in err
    from medtune.training.config import TrainSettings

    config = TrainSettings(method="dpo", dpo={"loss_type": "ipo", "sft_weight": 0.5})
    from medtune.training.methods.dpo import dpo_loss

    assert dpo_loss(config.settings_group("dpo")).to_dict() == {"type": ["ipo", "sft"], "weights": [1.0, 0.5],
                                                                 "beta": 0.1}
    assert "dpo" not in TrainSettings(method="lora").to_dict()  # other runs' records do not change
    from medtune.training.memory import plan_run

    # A DPO step holds its whole global batch, chosen and rejected rows, in one micro-batch.
    dpo = plan_run(micro_config(method="dpo", batch_size=2, grad_accum=3))
    lora = plan_run(micro_config(method="lora", batch_size=2, grad_accum=3, packing=False))
    assert dpo.tokens == 6 * lora.tokens and dpo.activations > lora.activations

"""Validation during training: held-out items never trained on, the validation loss is the training loss on them,
early stopping on a plateau keeps the best weights and passes verify-order, and a resume keeps the stopping state."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from training_helpers import make_items, make_order, micro_cli_options, micro_config

from medtune.adaptive.verify import verify_run
from medtune.schema import MCQItem, write_items
from medtune.training import train
from medtune.training.checkpoint import checkpoint_dir
from medtune.training.data import IGNORE, encode_item
from medtune.training.loop import FinetuneRecipe
from medtune.training.runlog import read_log, read_log_records
from medtune.training.trainer import load_base_model
from medtune.training.validation_rules import EarlyStopping, held_out_share, replay_stop, without_ids

N_ITEMS = 24
MIN_DELTA = 0.005  # a change of the validation loss this small is no improvement: the plateau


def _items() -> list[MCQItem]:
    return make_items(N_ITEMS)


def _contradicting(items: list[MCQItem], n: int = 6) -> list[MCQItem]:
    """The first training questions with another option as the answer: a validation set that learning the training
    items cannot improve for long (its loss levels off within a few steps)."""
    return [it.model_copy(update={"id": f"v{i:03d}", "answer": (it.answer + 1) % len(it.options), "split": "dev"})
            for i, it in enumerate(items[:n])]


def _plateau_config(val_path: Path, **kw):
    v = {"items": str(val_path), "every": 2, "patience": 2, "min_delta": MIN_DELTA, "keep_best": True}
    # No LoRA dropout: two processes then train exactly as one (each rank would draw its own masks).
    return micro_config(method="lora", lr=5e-2, batch_size=2, save_every=2, keep_checkpoints="all",
                        lora={"dropout": 0.0}, validation=v, **kw)


@pytest.fixture(scope="module")
def plateau(tmp_path_factory) -> dict:
    """A run that validates on contradicting items every 2 steps, with patience 2 and keep_best."""
    root = tmp_path_factory.mktemp("plateau")
    items = _items()
    val_path = write_items(_contradicting(items), root / "dev.parquet")
    order = make_order([it.id for it in items], epochs=2)  # 24 planned steps
    result = train(_plateau_config(val_path), items, order, root / "run")
    return {"root": root, "items": items, "order": order, "val_path": val_path, "result": result}


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> dict:
    """A run holding out a quarter of its order, validated every 4 steps and at the end, without early stopping."""
    root = tmp_path_factory.mktemp("share")
    items = _items()
    order = make_order([it.id for it in items])
    cfg = micro_config(method="lora", lr=2e-2, batch_size=3,
                       validation={"share": 0.25, "seed": 5, "every": 4})
    return {"items": items, "order": order, "result": train(cfg, items, order, root / "run"), "config": cfg}


def _adapter_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def _as_adapter_names(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Trainable tensors named as in the PEFT model, renamed as PEFT saves them (without the adapter's name)."""
    return {k.replace(".default", ""): v for k, v in weights.items()}


def test_early_stopping_on_a_plateau_keeps_the_best_weights_and_passes_verify_order(plateau) -> None:
    run = plateau["result"].run_dir
    validations = read_log_records(run, "validation")
    [stop] = read_log_records(run, "stop")
    replayed, rules = replay_stop(validations, "val_loss", 2, MIN_DELTA)
    best_step = rules.best_step
    # It stopped before the plan's end, exactly where the rules stop on the logged values, two validations after
    # the best one; no later loss is lower than the best by more than min_delta.
    assert stop["step"] < stop["planned_steps"] == 24
    assert replayed == stop["step"] == best_step + 4
    best = next(r["val_loss"] for r in validations if r["step"] == best_step)
    assert all(r["val_loss"] >= best - MIN_DELTA for r in validations)
    assert [r["step"] for r in validations] == list(range(2, stop["step"] + 1, 2))
    assert len(read_log(run)) == stop["step"] == plateau["result"].steps
    record = json.loads((run / "config.json").read_text())["validation"]
    assert record["best_step"] == best_step and record["stopped_early"]["step"] == stop["step"]
    assert record["weights"] == "best" and record["held_out"] == []

    # The saved adapter is the weights of the best step (its checkpoint), not the last step's.
    saved = _adapter_tensors(run)
    at_best = _as_adapter_names(load_file(str(checkpoint_dir(run, best_step) / "weights.safetensors")))
    last = _as_adapter_names(load_file(str(checkpoint_dir(run, stop["step"] - 2) / "weights.safetensors")))
    assert saved.keys() == at_best.keys() and saved
    assert all(torch.equal(saved[k], at_best[k]) for k in saved)
    assert any(not torch.equal(saved[k], last[k]) for k in saved)

    result = verify_run(run)
    assert result.ok, result.message
    assert "stopped early" in result.message and result.n_planned == stop["step"]


def _tampered_copy(run: Path, dest: Path, edit) -> Path:
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("adapter", "base", "best", "checkpoints"))
    lines = [json.loads(x) for x in (dest / "train_log.jsonl").read_text().splitlines()]
    (dest / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in edit(lines)))
    return dest


def test_verify_order_still_fails_on_a_deviation_of_an_early_stopped_run(plateau, tmp_path) -> None:
    run = plateau["result"].run_dir

    def swap(lines):  # two items of one step trained in another order
        step = next(r for r in lines if "kind" not in r and r["step"] == 3)
        step["ids"] = step["ids"][::-1]
        return lines

    def drop_last_step(lines):  # the log ends a step before its stop record
        last = max(r["step"] for r in lines if "kind" not in r)
        return [r for r in lines if "kind" in r or r["step"] != last]

    def stop_sooner(lines):  # a stop the logged validations do not support
        for r in lines:
            if r.get("kind") == "stop":
                r["step"] -= 2
        return lines

    def no_stop_record(lines):  # a run that ended short without saying why
        return [r for r in lines if r.get("kind") != "stop"]

    for name, edit, words in [("swap", swap, "item 0 of the step"), ("short", drop_last_step, "missing"),
                              ("sooner", stop_sooner, "stop it at step"), ("silent", no_stop_record, "missing")]:
        result = verify_run(_tampered_copy(run, tmp_path / name, edit))
        assert not result.ok, name
        assert words in result.message, (name, result.message)


def test_validation_items_never_appear_in_a_training_step(held_out) -> None:
    run = held_out["result"].run_dir
    record = json.loads((run / "config.json").read_text())["validation"]
    held = set(record["held_out"])
    trained = {i for r in read_log(run) for i in r["ids"]}
    assert len(held) == round(0.25 * N_ITEMS) == record["n_items"] and set(record["ids"]) == held
    assert not held & trained
    assert held | trained == set(held_out["order"]["epochs"][0])
    steps = [r["step"] for r in read_log(run)]
    assert [r["step"] for r in read_log_records(run, "validation")] == [4, steps[-1]] == [4, 6]
    assert verify_run(run).ok
    # The same seed holds out the same items whatever the order's sequence (another strategy's order).
    assert held_out_share([list(reversed(held_out["order"]["epochs"][0]))], 0.25, 5) == sorted(held)


def test_validation_loss_equals_a_direct_computation_on_the_held_out_items(held_out) -> None:
    from medtune.training.export import load_trained

    run, cfg = held_out["result"].run_dir, held_out["config"]
    last = read_log_records(run, "validation")[-1]
    assert last["step"] == read_log(run)[-1]["step"]  # after the last step: the saved weights
    loaded = load_trained(run, device="cpu")
    by_id = {it.id for it in held_out["items"]}
    ids = json.loads((run / "config.json").read_text())["validation"]["ids"]
    total, count = 0.0, 0
    with torch.no_grad():
        for item in (it for it in held_out["items"] if it.id in set(ids) & by_id):
            enc = encode_item(item, loaded.tokenizer, target=cfg.target, template=cfg.template,
                              max_length=cfg.max_length, add_eos=cfg.add_eos)
            logits = loaded.model(input_ids=torch.tensor([enc.input_ids])).logits[0, :-1].float()
            labels = torch.tensor(enc.labels[1:])
            keep = labels != IGNORE
            total += float(F.cross_entropy(logits[keep], labels[keep], reduction="sum"))
            count += int(keep.sum())
    assert count == last["label_tokens"]
    assert last["val_loss"] == pytest.approx(total / count, rel=1e-5)


class _Interrupt:
    """A step hook that stops the process after one step, as a kill would (after that step's validation)."""

    key = "interrupt"

    def __init__(self, step: int) -> None:
        self.step = step

    def describe(self) -> dict:
        return {"step": self.step}

    def resume(self, run_dir: Path, step: int) -> None:
        return None

    def due(self, step: int, total_steps: int) -> bool:
        return step == self.step

    def run(self, model, tokenizer, *, step: int, epoch: int) -> dict:
        raise KeyboardInterrupt(f"interrupted after step {step}")

    def tracked(self, record: dict) -> dict:
        return {}


def test_resume_keeps_the_early_stopping_state(plateau, tmp_path) -> None:
    ref = plateau["result"].run_dir
    [ref_stop] = read_log_records(ref, "stop")
    ref_val = read_log_records(ref, "validation")
    cut = ref_stop["step"] - 1  # the last validation before it without improvement has its checkpoint before this
    config = _plateau_config(plateau["val_path"])
    run = tmp_path / "run"
    recipe = FinetuneRecipe(config, plateau["items"], plateau["order"], run, load_base_model,
                            hooks=[_Interrupt(cut)])
    with pytest.raises(KeyboardInterrupt):
        recipe.run()
    assert not (run / "adapter").exists()
    state = json.loads((checkpoint_dir(run, cut - 1) / "state.json").read_text())["validation"]
    assert state["bad"] >= 1  # the checkpoint holds a patience count that a fresh start would forget

    resumed = train(config, plateau["items"], plateau["order"], run, resume=True)

    assert resumed.steps == ref_stop["step"]
    assert [(r["step"], r["improved"], r["bad_validations"]) for r in read_log_records(run, "validation")] == \
        [(r["step"], r["improved"], r["bad_validations"]) for r in ref_val]
    assert [r["val_loss"] for r in read_log_records(run, "validation")] == pytest.approx(
        [r["val_loss"] for r in ref_val], rel=1e-5)
    assert [r["ids"] for r in read_log(run)] == [r["ids"] for r in read_log(ref)]
    a, b = _adapter_tensors(ref), _adapter_tensors(run)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert verify_run(run).ok


def test_early_stopping_rules_follow_the_metric_direction() -> None:
    loss = EarlyStopping("val_loss", patience=2, min_delta=0.1)
    assert [loss.observe(s, v) for s, v in [(1, 2.0), (2, 1.95), (3, 1.5), (4, 1.45)]] == [True, False, True, False]
    assert not loss.should_stop and loss.best_step == 3
    loss.observe(5, float("nan"))
    assert loss.should_stop
    acc = EarlyStopping("val_accuracy", patience=1)
    assert [acc.observe(s, v) for s, v in [(1, 0.5), (2, 0.6), (3, 0.6)]] == [True, True, False]
    assert acc.should_stop and acc.best_step == 2
    restored = EarlyStopping("val_accuracy", patience=1)
    restored.restore(acc.state())
    assert restored.state() == acc.state() and restored.should_stop


def test_the_report_draws_validation_curves_and_still_the_loss_curves(plateau, held_out, tmp_path) -> None:
    """The report reads each done cell's train_log.jsonl: the loss curves skip the validation records, and the
    validation curves are drawn from them (none when no run validated)."""
    from types import SimpleNamespace

    from medtune.report.figures import loss_figure, validation_figure

    def cell(run_dir: Path, strategy: str) -> dict:
        return {"status": "done", "train": {"dir": str(run_dir)}, "model": "tiny", "dataset": "d", "method": "lora",
                "strategy": strategy, "difficulty": "none"}

    run = SimpleNamespace(records={"a": cell(plateau["result"].run_dir, "hand"),
                                   "b": cell(held_out["result"].run_dir, "random")})
    assert validation_figure(run).startswith(b"\x89PNG") and loss_figure(run).startswith(b"\x89PNG")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "train_log.jsonl").write_text(
        "".join(r + "\n" for r in (plateau["result"].run_dir / "train_log.jsonl").read_text().splitlines()
                if '"kind"' not in r))
    assert validation_figure(SimpleNamespace(records={"a": cell(plain, "hand")})) is None


def test_bad_validation_settings_and_files_stop_with_one_line(files, tmp_path, capsys) -> None:
    from medtune.cli import main

    def train_cli(*extra: str) -> tuple[int, str]:
        code = main(["train", "--items", str(files["items"]), "--order", str(files["order"]), "-o",
                     str(tmp_path / f"run{len(extra)}"), "--no-progress", *micro_cli_options(), *extra])
        return code, capsys.readouterr().err

    code, err = train_cli("--validation-share", "0.1", "--validation-items", str(files["items"]))
    assert code == 2 and "validation" in err and "not both" in err and "Traceback" not in err
    code, err = train_cli("--validation-patience", "2")
    assert code == 2 and "patience set without validation items" in err
    code, err = train_cli("--validation-items", str(tmp_path / "missing.parquet"))
    assert code == 2 and "missing.parquet" in err and "Traceback" not in err
    code, err = train_cli("--validation-share", "1.5")
    assert code == 2 and "--validation-share" in err


@given(n=st.integers(2, 60), share=st.floats(0.01, 0.99), seed=st.integers(0, 2**31), epochs=st.integers(1, 3))
@settings(max_examples=60, deadline=None)
def test_a_held_out_share_is_a_seeded_subset_and_leaves_items_to_train(n, share, seed, epochs) -> None:
    ids = [f"i{k}" for k in range(n)]
    planned = [random.Random(e).sample(ids, n) for e in range(epochs)]
    held = held_out_share(planned, share, seed)
    assert held == held_out_share([list(reversed(planned[0]))], share, seed)  # the set of ids decides, not the order
    assert 1 <= len(held) < n and set(held) <= set(ids)
    rest = without_ids(planned, held)
    assert all(set(e).isdisjoint(held) for e in rest)
    assert all(e == [i for i in p if i not in set(held)] for e, p in zip(rest, planned, strict=True))


def test_validation_settings_layer_key_by_key_like_a_methods_group() -> None:
    """A model's own ``validation: {every: 5}`` keeps the grid's ``validation: {share: 0.1, patience: 2}``."""
    from medtune.training.config import resolve_training_settings

    grid, model = {"validation": {"share": 0.1, "patience": 2}}, {"validation": {"every": 5}}
    v = resolve_training_settings(grid, model).validation
    assert (v.share, v.patience, v.every, v.enabled) == (0.1, 2, 5, True)
    assert not resolve_training_settings({}).validation.enabled


@pytest.mark.slow
def test_two_processes_validate_and_stop_early_as_one(plateau, tmp_path) -> None:
    """DDP on two CPU processes (torchrun, gloo): each rank computes the loss of its slice of the validation items,
    rank 0 decides, and both ranks stop after the same step as the one-process run, with its best weights."""
    ref = plateau["result"].run_dir
    items_path = write_items(plateau["items"], tmp_path / "items.parquet")
    order_path = tmp_path / "order.json"
    order_path.write_text(json.dumps(plateau["order"]))
    out = tmp_path / "two"
    medtune = os.path.join(os.path.dirname(sys.executable), "medtune")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", medtune, "train",
           "--items", str(items_path), "--order", str(order_path), "-o", str(out), "--method", "lora",
           "--lora-dropout", "0", "--batch-size", "2", "--lr", "5e-2", "--save-every", "2", "--keep-checkpoints",
           "all", "--no-progress", *micro_cli_options(), "--validation-items", str(plateau["val_path"]),
           "--validation-every", "2", "--validation-patience", "2", "--validation-min-delta", str(MIN_DELTA),
           "--validation-keep-best"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    assert read_log_records(out, "stop")[0]["step"] == read_log_records(ref, "stop")[0]["step"]
    two, one = read_log_records(out, "validation"), read_log_records(ref, "validation")
    assert [r["step"] for r in two] == [r["step"] for r in one]
    assert [r["val_loss"] for r in two] == pytest.approx([r["val_loss"] for r in one], rel=1e-4)
    assert [r["label_tokens"] for r in two] == [r["label_tokens"] for r in one]
    a, b = _adapter_tensors(ref), _adapter_tensors(out)
    worst = max(float((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-8)) for k in a)
    assert worst < 1e-3, worst
    assert verify_run(out).ok

"""Kill a training process with SIGKILL once a checkpoint exists, resume it, and compare with a run that
was never interrupted: the same steps with the same items, and the same final weights."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import make_items, make_order, micro_cli_options, micro_config

from medtune.adaptive.verify import verify_run
from medtune.schema import write_items
from medtune.training.checkpoint import list_checkpoints
from medtune.training.runlog import read_log

MEDTUNE = [sys.executable, "-c", "import sys; from medtune.cli import main; sys.exit(main(sys.argv[1:]))"]


def _args(items: Path, order: Path, out: Path) -> list[str]:
    # LoRA with dropout: resuming must restore the RNG too, or the dropout masks (and weights) would differ.
    return ["train", "--items", str(items), "--order", str(order), "-o", str(out), "--method", "lora",
            "--lora-dropout", "0.1", "--batch-size", "2", "--lr", "1e-3", "--save-every", "4", "--no-progress",
            *micro_cli_options(), "--tiny-option", "hidden_size=64", "--tiny-option", "intermediate_size=256"]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted_run(tmp_path):
    items = make_items(40)
    items_path = write_items(items, tmp_path / "items.parquet")
    order_path = tmp_path / "order.json"
    order_path.write_text(json.dumps(make_order([it.id for it in items], epochs=2)))  # 40 steps
    ref, run = tmp_path / "ref", tmp_path / "run"

    subprocess.run([*MEDTUNE, *_args(items_path, order_path, ref)], env=_env(), check=True, capture_output=True)

    proc = subprocess.Popen([*MEDTUNE, *_args(items_path, order_path, run)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "step-8").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = read_log(run)
    assert 8 <= len(before) < 40, "the kill must land mid-run"
    assert not (run / "adapter").exists()
    killed_copy = tmp_path / "killed-log.jsonl"
    shutil.copy(run / "train_log.jsonl", killed_copy)

    subprocess.run([*MEDTUNE, *_args(items_path, order_path, run), "--resume"], env=_env(), check=True,
                   capture_output=True)

    ref_log, run_log = read_log(ref), read_log(run)
    assert [r["step"] for r in run_log] == list(range(1, 41))
    assert [r["ids"] for r in run_log] == [r["ids"] for r in ref_log]
    assert [r["loss"] for r in run_log] == pytest.approx([r["loss"] for r in ref_log], rel=1e-4, abs=1e-6)
    # the steps logged before the kill agree with the resumed log up to the checkpoint
    ck = max(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("step-*"))
    assert ck < 40
    assert [r["ids"] for r in read_log(killed_copy)][:8] == [r["ids"] for r in run_log][:8]
    assert verify_run(run).ok

    a = load_file(str(ref / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k
    # and training did change the adapter (a zero-initialised B would make equality vacuous)
    assert any(float(v.abs().max()) > 0 for k, v in a.items() if "lora_B" in k)


class _Killed(Exception):
    """Stands for the process dying between two optimizer steps."""


def test_resume_restores_the_learning_rate_schedule(tmp_path, monkeypatch):
    """Warm-up then linear decay: a run stopped after step 5 (latest checkpoint: step 4) and resumed takes the same
    learning rate, loss and update at every step as one never stopped. Restoring the weights and the optimizer
    alone is not enough: a fresh scheduler would restart the warm-up at the first resumed step."""
    from medtune.training import train
    from medtune.training.loop import FinetuneRecipe

    items = make_items(24)
    order = make_order([it.id for it in items])  # 12 steps at batch 2
    config = micro_config(lora_dropout=0.1, batch_size=2, lr=1e-2, scheduler="linear", warmup_steps=4,
                          save_every=2, keep_checkpoints=None)
    ref = train(config, items, order, tmp_path / "ref")
    ref_log = read_log(ref.run_dir)
    lrs = [r["lr"] for r in ref_log]
    assert len(lrs) == 12 and lrs[:4] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2])  # warm-up, then decay to 0
    assert lrs[4:] == pytest.approx([1e-2 * (1 - k / 8) for k in range(8)])

    real_step = FinetuneRecipe.train_step

    def dies_before_step_6(self, ps, pad_id):
        if ps.step == 6:
            raise _Killed
        return real_step(self, ps, pad_id)

    run = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(FinetuneRecipe, "train_step", dies_before_step_6)
        with pytest.raises(_Killed):
            train(config, items, order, run)
    assert [r["step"] for r in read_log(run)] == [1, 2, 3, 4, 5]
    assert [p.name for p in list_checkpoints(run)] == ["step-2", "step-4"]

    resumed = train(config, items, order, run, resume=True)
    run_log = read_log(run)
    assert [r["step"] for r in run_log] == list(range(1, 13))
    assert [r["ids"] for r in run_log] == [r["ids"] for r in ref_log]
    assert [r["lr"] for r in run_log] == pytest.approx(lrs, rel=1e-12)
    assert [r["loss"] for r in run_log] == pytest.approx([r["loss"] for r in ref_log], rel=1e-5, abs=1e-7)
    a, b = ref.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and any("lora_B" in k for k in a)
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7), k

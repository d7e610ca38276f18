"""Two CPU processes (torchrun, gloo) realise the same global order per optimizer step as one process, and —
with token-weighted gradient averaging — reach the same weights: sharded (FSDP2) for full fine-tuning, replicated
(DDP) for adapters, through the same accelerate-based code a GPU node runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import make_items, make_order, micro_cli_options

from medtune.adaptive.verify import verify_run
from medtune.schema import write_items
from medtune.training.runlog import read_log

MEDTUNE = shutil.which("medtune") or os.path.join(os.path.dirname(sys.executable), "medtune")


@pytest.mark.slow
def test_two_processes_realise_the_one_process_order(tmp_path):
    items = make_items(30)
    items_path = write_items(items, tmp_path / "items.parquet")
    order_path = tmp_path / "order.json"
    ids = [it.id for it in items][::-1]
    order_path.write_text(json.dumps(make_order(ids, epochs=2)))
    # global batch 5 (odd, so the ranks' slices differ in size: 3 + 2), with accumulation on one rank
    common = ["train", "--items", str(items_path), "--order", str(order_path), "--method", "full",
              "--batch-size", "1", "--grad-accum", "5", "--lr", "1e-3", "--no-progress", *micro_cli_options()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([MEDTUNE, *common, "-o", str(one)], env=env, check=True, capture_output=True)
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          MEDTUNE, *common, "-o", str(two)], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]

    meta = json.loads((two / "config.json").read_text())
    assert meta["world_size"] == 2 and meta["distributed"] == "fsdp"  # full fine-tuning is sharded by default
    log1, log2 = read_log(one), read_log(two)
    assert len(log1) == len(log2) == 12
    assert [r["ids"] for r in log2] == [r["ids"] for r in log1]
    assert [r["tokens"] for r in log2] == [r["tokens"] for r in log1]
    assert [r["loss"] for r in log2] == pytest.approx([r["loss"] for r in log1], rel=1e-4)
    assert verify_run(two).ok
    w1 = load_file(str(one / "model" / "model.safetensors"))
    w2 = load_file(str(two / "model" / "model.safetensors"))
    for k in w1:
        assert torch.allclose(w1[k], w2[k], rtol=1e-3, atol=1e-5), k


def _two_process_run(common: list[str], out, env, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           MEDTUNE, *common, "-o", str(out), *extra], env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_adapters_replicate_with_ddp_and_a_rank_with_no_item_still_joins(tmp_path):
    """LoRA under two processes is DDP-wrapped; with a global batch of one item the second rank holds nothing in
    every step, joins each gradient sync with a zero-weighted pass, and the adapter ends as in one process."""
    items = make_items(12)
    items_path = write_items(items, tmp_path / "items.parquet")
    order_path = tmp_path / "order.json"
    order_path.write_text(json.dumps(make_order([it.id for it in items])))
    common = ["train", "--items", str(items_path), "--order", str(order_path), "--method", "lora",
              "--batch-size", "1", "--lr", "1e-2", "--max-steps", "6", "--no-progress", *micro_cli_options()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([MEDTUNE, *common, "-o", str(one)], env=env, check=True, capture_output=True)
    res = _two_process_run(common, two, env)
    assert res.returncode == 0, res.stderr[-3000:]
    meta = json.loads((two / "config.json").read_text())
    assert meta["world_size"] == 2 and meta["distributed"] == "ddp"
    assert [r["ids"] for r in read_log(two)] == [r["ids"] for r in read_log(one)]
    a1 = load_file(str(one / "adapter" / "adapter_model.safetensors"))
    a2 = load_file(str(two / "adapter" / "adapter_model.safetensors"))
    assert a1.keys() == a2.keys()
    moved = max(float(a1[k].abs().max()) for k in a1 if "lora_B" in k)
    assert moved > 1e-4  # the adapter trained at all (lora_B starts at zero)
    for k in a1:
        assert torch.allclose(a1[k], a2[k], rtol=1e-3, atol=1e-6), k


@pytest.mark.slow
def test_a_sharded_run_resumes_from_its_checkpoint_to_the_same_weights(tmp_path):
    """Full fine-tuning on two processes is sharded (FSDP2 over gloo); its checkpoints hold the gathered weights and
    optimizer states, and a resume from one ends with the weights of the uninterrupted run, whose final weights
    are themselves those of a single process."""
    items = make_items(16)
    items_path = write_items(items, tmp_path / "items.parquet")
    order_path = tmp_path / "order.json"
    order_path.write_text(json.dumps(make_order([it.id for it in items], epochs=2)))
    common = ["train", "--items", str(items_path), "--order", str(order_path), "--method", "full",
              "--batch-size", "2", "--grad-accum", "2", "--lr", "1e-3", "--scheduler", "linear",
              "--warmup-steps", "2", "--save-every", "3", "--keep-checkpoints", "all", "--no-progress",
              *micro_cli_options()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    res = _two_process_run(common, whole, env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((whole / "config.json").read_text())["distributed"] == "fsdp"
    assert len(read_log(whole)) == 8
    # The state of a run killed after step 6: its checkpoints and log, no final weights.
    shutil.copytree(whole, resumed)
    shutil.rmtree(resumed / "model")
    shutil.rmtree(resumed / "checkpoints" / "step-6")  # resume from step 3: five steps to redo
    res = _two_process_run(common, resumed, env, "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert [r["ids"] for r in read_log(resumed)] == [r["ids"] for r in read_log(whole)]
    w1 = load_file(str(whole / "model" / "model.safetensors"))
    w2 = load_file(str(resumed / "model" / "model.safetensors"))
    assert w1.keys() == w2.keys()
    for k in w1:
        assert torch.allclose(w1[k], w2[k], rtol=1e-5, atol=1e-7), k


@pytest.mark.slow
def test_a_grid_cell_given_two_gpus_trains_as_two_processes(tmp_path, monkeypatch):
    """The executors tell a cell how many GPUs it holds (MEDTUNE_CELL_GPUS); the training stage then runs itself
    under torchrun on that many processes and returns the summary one process would (gloo stands in here)."""
    from training_helpers import micro_config

    from medtune.training.stage import CELL_GPUS_ENV, run_training

    items = make_items(12)
    items_path = write_items(items, tmp_path / "items.parquet")
    order_path = tmp_path / "order.json"
    order_path.write_text(json.dumps(make_order([it.id for it in items])))
    monkeypatch.setenv(CELL_GPUS_ENV, "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    summary = run_training(micro_config(method="full", max_steps=3), items_path, order_path, tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["world_size"] == 2
    assert summary["steps"] == 3 and len(read_log(tmp_path / "run")) == 3
    assert summary["final_loss"] == pytest.approx(read_log(tmp_path / "run")[-1]["loss"])
    assert summary["model_ref"]["model_dir"] == "run/model" and (tmp_path / "run" / "model").is_dir()
    assert verify_run(tmp_path / "run").ok

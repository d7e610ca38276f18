"""benchmarks/gpu_check.py in CPU mode: every part runs on tiny shapes and every check passes.

Why in the suite: the script's real job is on a GPU machine that is lent only now and then, with no network and
minutes to spare. Its CPU mode runs the same code (all five methods, packing, kill and resume, two gloo processes
under torchrun, bf16 scoring, the 4-bit evaluation, the TRL and lm-evaluation-harness baselines, and the workflow
part: chat template, validation with keep_best, DPO, seeded sampling, a 5-shot harness task), so a change that
breaks the script fails here rather than during a loan. It runs as a subprocess: ``--cpu`` hides any GPU
from its process, which must not leak into the other tests.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # about 35-60 s on 2 CPU cores (five subprocess runs of `medtune train`)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
METHODS = ("full", "lora", "dora", "qlora", "galore")
EXPECTED_CHECKS = (
    "models.large", "models.small",
    *(f"train.{m}.{c}" for m in METHODS for c in ("loss_finite", "device", "dtype")),
    "packing.equal",
    "scoring.bf16_model", "scoring.letter", "scoring.option", "scoring.generate",
    "qlora_eval.loaded", "qlora_eval.scores",
    "trl.lora", "trl.qlora",
    "lm_eval.compare",
    "resume.killed_mid_run", "resume.same_steps", "resume.equal", "resume.verify_order",
    "torchrun.two_process",
    "workflow.chat_one_bos", "workflow.validation_stop", "workflow.dpo_margin", "workflow.sampling_seeded",
    "workflow.harness_task",
)


@pytest.fixture(scope="module")
def check(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu-check") / "gpu_check.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu", "--out", str(out)], capture_output=True, text=True,
                          env=env, timeout=900, cwd=REPO)
    assert out.exists(), f"no JSON written (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(out.read_text(encoding="utf-8"))
    result["_exit"], result["_stdout"] = proc.returncode, proc.stdout
    return result


def test_every_check_present_and_passed(check):
    failed = {n: c["detail"][:600] for n, c in check["checks"].items() if c["status"] != "passed"}
    assert not failed, failed
    missing = [n for n in EXPECTED_CHECKS if n not in check["checks"]]
    assert not missing, missing
    assert check["passed"] is True and check["failed"] == []
    assert check["_exit"] == 0, check["_stdout"][-3000:]
    assert "all checks passed" in check["_stdout"]


def test_records_the_machine_and_the_time_of_each_part(check):
    assert check["format"] == "medtune.gpu_check/1" and check["mode"] == "cpu"
    env = check["environment"]
    for key in ("device", "torch", "transformers", "accelerate", "peft", "cpu_capability", "cuda_available"):
        assert key in env, key
    assert env["cuda_available"] is False  # --cpu hides any GPU
    for part in ("models", "methods", "packing", "scoring", "qlora_eval", "trl", "lm_eval", "workflow", "resume",
                 "torchrun"):
        assert check["parts"][part]["status"] == "ok", (part, check["parts"][part])
        assert check["parts"][part]["seconds"] >= 0
    assert check["wall_seconds"] > 0


def test_methods_trained_on_the_cpu_with_finite_losses(check):
    steps = check["settings"]["steps"]
    for method in METHODS:
        figures = check["parts"]["methods"][method]
        assert len(figures["losses"]) == steps and all(math.isfinite(x) for x in figures["losses"]), method
        assert set(figures["tensor_devices"]) == {"cpu"}, (method, figures["tensor_devices"])
        assert figures["tokens"] > 0 and figures["steady_tokens_per_s"] > 0
        assert figures["trainable_dtypes"] == {"float32": figures["trainable_dtypes"]["float32"]}
    assert check["parts"]["methods"]["qlora"]["quant_types"] == {"nf4": check["parts"]["methods"]["qlora"][
        "linear4bit_layers"]}
    assert set(check["parts"]["methods"]["lora"]["frozen_dtypes"]) == {"float32"}  # fp32 run: fp32 base


def test_packing_resume_and_two_processes_agree(check):
    parts = check["parts"]
    assert parts["packing"]["max_relative_difference"] <= 1e-5
    resume = parts["resume"]
    assert 0 < resume["killed_after_steps"] < resume["steps"] and resume["killed_returncode"] == -9
    assert resume["weights"]["bitwise_equal"] and resume["max_relative_loss_difference"] == 0.0
    torchrun = parts["torchrun"]
    assert torchrun["world_size"] == 2 and torchrun["backend"] == "gloo"
    assert torchrun["max_relative_loss_difference"] <= 1e-4


def test_baseline_ratios_are_positive_numbers(check):
    trl = check["parts"]["trl"]
    for method in ("lora", "qlora"):
        ratio = trl[method]["tokens_per_s_ratio"]
        assert isinstance(ratio, float) and math.isfinite(ratio) and ratio > 0, (method, trl[method])
        assert trl[method]["trl"]["steps"] == check["settings"]["steps"]
    ratio = check["parts"]["lm_eval"]["q_per_s_ratio"]
    assert isinstance(ratio, float) and math.isfinite(ratio) and ratio > 0
    assert check["parts"]["lm_eval"]["agreement"] >= 0.95
    # targets are reported beside the ratios, not asserted, in CPU mode
    for name in ("lora_vs_trl", "qlora_vs_trl", "scoring_vs_lm_eval"):
        assert check["targets"][name]["asserted"] is False and check["targets"][name]["measured"] > 0


def test_workflow_runs_on_the_device_with_its_figures(check):
    workflow = check["parts"]["workflow"]
    chat = workflow["chat_one_bos"]
    assert chat["same_prompt_ids"] == chat["one_bos"] == len(chat["prompt_ids"]) > 0
    assert set(chat["devices"]) == {"cpu"}
    validation = workflow["validation_stop"]
    assert validation["verify_order"] and validation["held_out"] > 0 and validation["best_step"] is not None
    assert all(math.isfinite(x) for x in validation["val_losses"])
    assert len(validation["val_losses"]) == validation["steps"]  # validated after every step
    dpo = workflow["dpo_margin"]
    assert dpo["dtype"] == "fp32" and all(math.isfinite(x) for x in dpo["losses"])
    assert dpo["mean_margin_after"] > dpo["mean_margin_before"]
    sampling = workflow["sampling_seeded"]
    assert sampling["repeat_identical"] and sampling["same_across_batching"] == 1.0  # fp32 on a CPU: exact
    assert sampling["self_consistency"]["samples"] == 3 and sampling["answers_read"] > 0  # the votes decide something
    harness = workflow["harness_task"]
    assert harness["task"] == "mmlu_anatomy" and harness["agreement"] >= 0.95 and harness["within_tolerance"] == 1.0

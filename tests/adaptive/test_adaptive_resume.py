"""SIGKILL an adaptive run once a checkpoint exists, resume it, and compare with an uninterrupted run: the same
decisions, the same steps and the same final weights (decisions depend only on the seed, the checkpointed model
and the logged scores)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from adaptive_helpers import micro_cli_options, strategy_args, write_inputs
from safetensors.torch import load_file

from medtune.adaptive.decisions import read_decisions
from medtune.adaptive.verify import verify_run
from medtune.cli import main
from medtune.training.runlog import read_log

MEDTUNE = [sys.executable, "-c", "import sys; from medtune.cli import main; sys.exit(main(sys.argv[1:]))"]
N_STEPS = 36  # 24 items × 6 epochs at batch 4


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _args(paths: dict, out, strategy: str) -> list[str]:
    # every 4 steps, a checkpoint every 3: the checkpoint of step 6 falls inside the decision of steps 5-8, so the
    # resumed run must reuse a logged decision for steps 7-8 and decide anew from step 8 on. LoRA dropout: the
    # scoring passes must not disturb the dropout's random numbers either.
    return ["train", "--items", str(paths["items"]), "--order", str(paths["order"]), "-o", str(out), "--no-progress",
            *micro_cli_options(), "--tiny-option", "hidden_size=64", "--tiny-option", "intermediate_size=256",
            "--method", "lora", "--lora-dropout", "0.1", "--save-every", "3",
            *strategy_args(strategy, paths), "--every", "4"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ability", "self-paced", "learnability", "rho"])
def test_killed_and_resumed_adaptive_run_matches_an_uninterrupted_one(tmp_path, strategy):
    paths = write_inputs(tmp_path, epochs=6)
    ref, run = tmp_path / "ref", tmp_path / "run"
    # Only the run that is killed needs a process of its own; the uninterrupted run and the resume run here, on one
    # thread like the killed process (so the arithmetic, and hence the weights, are the same to the bit).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(_args(paths, ref, strategy)) == 0

        proc = subprocess.Popen([*MEDTUNE, *_args(paths, run, strategy)], env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while not (run / "checkpoints" / "step-6").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert 6 <= len(read_log(run)) < N_STEPS, "the kill must land mid-run"
        assert not (run / "adapter").exists()

        assert main([*_args(paths, run, strategy), "--resume"]) == 0
    finally:
        torch.set_num_threads(threads)

    ref_d, run_d = read_decisions(ref), read_decisions(run)
    assert [d["step"] for d in run_d] == list(range(0, N_STEPS, 4))
    key = ("step", "seed", "epoch", "used", "chosen", "theta", "scores")
    for a, b in zip(ref_d, run_d, strict=True):
        assert {k: a.get(k) for k in key} == {k: b.get(k) for k in key}, a["step"]
    ref_log, run_log = read_log(ref), read_log(run)
    assert [r["step"] for r in run_log] == list(range(1, N_STEPS + 1))
    assert [r["ids"] for r in run_log] == [r["ids"] for r in ref_log]
    assert verify_run(run).ok and verify_run(ref).ok
    a = load_file(str(ref / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert any(float(v.abs().max()) > 0 for k, v in a.items() if "lora_B" in k)
    assert json.loads((run / "config.json").read_text())["adaptive"]["every"] == 4

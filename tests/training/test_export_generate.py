"""Export (adapter, merged model, hub push offline) and streamed generation from a trained run."""

from __future__ import annotations

import io

import pytest
import torch
from training_helpers import make_items, make_order, micro_config

from medtune.cli import main
from medtune.generation import build_prompt, stream_answer
from medtune.models import load_pretrained
from medtune.training import train
from medtune.training.export import load_trained


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    items = make_items(16)
    out = tmp_path_factory.mktemp("export") / "run"
    train(micro_config(method="lora", lr=1e-2, lora_dropout=0.0), items, make_order([i.id for i in items]), out)
    return out


def test_merged_model_equals_base_plus_adapter(lora_run, tmp_path):
    assert main(["export", str(lora_run), "-o", str(tmp_path / "merged")]) == 0
    merged = load_pretrained(tmp_path / "merged", dtype="fp32", device="cpu")
    assert not any("lora" in n for n, _ in merged.model.named_parameters())
    with_adapter = load_trained(lora_run)
    base = load_pretrained(lora_run / "base", dtype="fp32", device="cpu")
    x = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        a = merged.model(input_ids=x).logits
        b = with_adapter.model(input_ids=x).logits
        c = base.model(input_ids=x).logits
    assert torch.allclose(a, b, atol=1e-4)
    assert not torch.allclose(a, c, atol=1e-4)  # the adapter did change the model


def test_export_adapter_only_and_offline_push(lora_run, tmp_path, capsys, monkeypatch):
    assert main(["export", str(lora_run), "--adapter", "-o", str(tmp_path / "ad")]) == 0
    assert (tmp_path / "ad" / "adapter_model.safetensors").exists()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["export", str(lora_run), "--push-to-hub", "me/model"]) == 2
    assert "offline" in capsys.readouterr().err


def test_generate_streams_the_greedy_answer(lora_run, capsys):
    loaded = load_trained(lora_run)
    prompt = build_prompt("Which drug treats the heart disease?", ["Zorafen", "Quilmab"], "paper",
                          loaded.tokenizer, chat=False)
    buf = io.StringIO()
    text = stream_answer(loaded, prompt, max_new_tokens=6, out=buf)
    ids = loaded.tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        ref = loaded.model.generate(**ids, max_new_tokens=6, do_sample=False,
                                    pad_token_id=loaded.tokenizer.pad_token_id)
    expected = loaded.tokenizer.decode(ref[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text == expected and buf.getvalue() == expected + "\n"
    assert main(["generate", str(lora_run), "Which drug?", "--option", "A1", "--option", "B2",
                 "--max-new-tokens", "3"]) == 0
    assert main(["generate", str(lora_run), "Which drug?", "--option", "only-one"]) == 2

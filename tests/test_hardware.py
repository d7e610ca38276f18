"""bf16 only where the hardware runs it natively: elsewhere fp32 with a warning (forced capability checks)."""

from __future__ import annotations

import warnings

import pytest
import torch

from medtune import hardware
from medtune.models import resolve_dtype


@pytest.fixture
def no_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU like the AVX2-only EPYC: no AMX, no AVX-512 BF16 (bf16 matmuls emulated, ~150x slower)."""
    monkeypatch.delenv(hardware.ENV_OVERRIDE, raising=False)
    monkeypatch.setattr(hardware, "cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(hardware, "_cpu_flags", lambda: {"avx2", "fma", "sse4_2"})
    monkeypatch.setattr(hardware, "on_gpu", lambda: False)


@pytest.fixture
def native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hardware.ENV_OVERRIDE, raising=False)
    monkeypatch.setattr(hardware, "cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(hardware, "_cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    monkeypatch.setattr(hardware, "on_gpu", lambda: False)


def test_bf16_on_a_cpu_without_native_support_falls_back_to_fp32_with_a_warning(no_native_bf16: None) -> None:
    assert not hardware.cpu_has_native_bf16()
    with pytest.warns(RuntimeWarning, match="no native bf16"):
        assert hardware.training_dtype("bf16") == "fp32"
    with pytest.warns(RuntimeWarning, match="no native bf16"):
        assert resolve_dtype("bf16", "cpu") == torch.float32
    assert hardware.quantized_compute_dtype() == "fp32"  # the 4-bit base computes in fp32 there


def test_bf16_is_kept_where_the_cpu_has_it(native_bf16: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert hardware.cpu_has_native_bf16()
        assert hardware.training_dtype("bf16") == "bf16"
        assert resolve_dtype("bf16", "cpu") == torch.bfloat16
        assert hardware.quantized_compute_dtype() == "bf16"


def test_auto_is_fp32_on_a_cpu_and_the_override_wins(native_bf16: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hardware.training_dtype("auto") == "fp32"
    assert hardware.training_dtype("fp32") == "fp32"
    monkeypatch.setenv(hardware.ENV_OVERRIDE, "0")
    assert not hardware.cpu_has_native_bf16()
    monkeypatch.setenv(hardware.ENV_OVERRIDE, "1")
    monkeypatch.setattr(hardware, "_cpu_flags", lambda: set())
    assert hardware.cpu_has_native_bf16()


def test_the_real_capability_check_agrees_with_the_cpu_flags() -> None:
    flags = hardware._cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this machine")
    expected = bool(hardware.NATIVE_BF16_FLAGS & flags) or "AMX" in hardware.cpu_capability().upper()
    assert hardware.cpu_has_native_bf16() == expected or hardware.ENV_OVERRIDE in __import__("os").environ


def test_a_bf16_training_run_on_a_cpu_without_native_bf16_computes_in_fp32(
        no_native_bf16: None, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run asked for bf16 but trains in fp32 (no autocast), warns, and records what it really used."""
    import json

    from medtune.orders import build_order, order_items
    from medtune.schema import MCQItem
    from medtune.training import TrainConfig, train
    from medtune.training.placement import Placement

    items = [MCQItem(id=f"q{i}", question=f"Which drug treats disease {i}?", options=["alpha", "beta", "gamma"],
                     answer=i % 3, source="t", split="train") for i in range(8)]
    order = build_order(order_items(items), "random", 0)
    seen: list[str] = []
    real = Placement.create.__func__
    monkeypatch.setattr(Placement, "create",
                        classmethod(lambda cls, precision, strategy: seen.append(precision) or real(cls, precision,
                                                                                                   strategy)))
    config = TrainConfig(method="lora", model="tiny", dtype="bf16", max_steps=2, batch_size=4,
                         tiny={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                               "num_attention_heads": 2}, tiny_vocab_size=300)
    with pytest.warns(RuntimeWarning, match="no native bf16"):
        train(config, items, order, tmp_path / "run")
    assert seen and set(seen) == {"fp32"}
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["train"]["dtype"] == "bf16" and meta["precision"]["dtype"] == "fp32"

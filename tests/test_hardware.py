"""bf16 only where the hardware runs it natively: elsewhere fp32 with a warning (forced capability checks)."""

from __future__ import annotations

import warnings
from pathlib import Path

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


# Known processors, from their vendors' instruction-set listings (the flags Linux prints for them): bf16 is native
# with AVX-512 BF16 (Cooper Lake, Sapphire Rapids and later Xeons, AMD Zen 4 and later) or AMX-BF16; AVX-512
# alone (Skylake-SP, Cascade Lake, Ice Lake), AVX-VNNI (Alder Lake) and AVX2 (Haswell, Zen 2/3) have no bf16 math.
BASE_FLAGS = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht"
AVX2 = "ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand lahf_lm abm bmi1 avx2 smep bmi2"
AVX512 = "avx512f avx512dq avx512cd avx512bw avx512vl"
KNOWN_CPUS = [
    # (processor, torch's capability on it, flags beyond BASE_FLAGS, native bf16)
    ("Intel Xeon E5 v3 (Haswell)", "AVX2", f"{AVX2}", False),
    ("AMD EPYC 7002 (Zen 2, Rome)", "AVX2", f"{AVX2} sha_ni clzero", False),
    ("AMD EPYC 7003 (Zen 3, Milan)", "AVX2", f"{AVX2} sha_ni vaes vpclmulqdq", False),
    ("Intel Core i9-12900K (Alder Lake)", "AVX2", f"{AVX2} avx_vnni sha_ni", False),
    ("Intel Xeon Gold 6148 (Skylake-SP)", "AVX512", f"{AVX2} {AVX512}", False),
    ("Intel Xeon Gold 6248 (Cascade Lake)", "AVX512", f"{AVX2} {AVX512} avx512_vnni", False),
    ("Intel Xeon Platinum 8380 (Ice Lake-SP)", "AVX512",
     f"{AVX2} {AVX512} avx512ifma avx512vbmi avx512_vbmi2 avx512_vnni avx512_bitalg avx512_vpopcntdq", False),
    ("Intel Xeon Platinum 8380H (Cooper Lake)", "AVX512", f"{AVX2} {AVX512} avx512_vnni avx512_bf16", True),
    ("AMD EPYC 9004 (Zen 4, Genoa)", "AVX512",
     f"{AVX2} {AVX512} avx512ifma avx512vbmi avx512_vbmi2 avx512_vnni avx512_bf16 avx512_bitalg", True),
    ("Intel Xeon Platinum 8480+ (Sapphire Rapids)", "AVX512",
     f"{AVX2} {AVX512} avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8", True),
    ("Intel Xeon 6 (Granite Rapids)", "AMX",
     f"{AVX2} {AVX512} avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8 amx_fp16", True),
]


def _cpuinfo(flags: str) -> str:
    core = (f"processor\t: {{n}}\nvendor_id\t: GenuineIntel\nmodel name\t: some cpu\n"
            f"flags\t\t: {BASE_FLAGS} {flags}\nbugs\t\t: spectre_v1\n\n")
    return "".join(core.format(n=n) for n in range(2))


@pytest.mark.parametrize(("name", "capability", "flags", "native"), KNOWN_CPUS, ids=[c[0] for c in KNOWN_CPUS])
def test_native_bf16_on_known_cpus(name: str, capability: str, flags: str, native: bool, tmp_path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The decision from a /proc/cpuinfo written as these processors print it (the file read, not a flag set)."""
    import builtins

    info = tmp_path / "cpuinfo"
    info.write_text(_cpuinfo(flags))
    real_open = builtins.open

    def cpuinfo_open(path, *args, **kwargs):  # the module reads /proc/cpuinfo: this processor's copy of it
        return real_open(info if str(path) == "/proc/cpuinfo" else path, *args, **kwargs)

    monkeypatch.setattr(hardware, "open", cpuinfo_open, raising=False)
    monkeypatch.delenv(hardware.ENV_OVERRIDE, raising=False)
    monkeypatch.setattr(hardware, "cpu_capability", lambda: capability)
    monkeypatch.setattr(hardware, "on_gpu", lambda: False)
    assert hardware.cpu_has_native_bf16() is native, name
    assert hardware.quantized_compute_dtype() == ("bf16" if native else "fp32")
    if native:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert hardware.training_dtype("bf16") == "bf16"
    else:
        with pytest.warns(RuntimeWarning, match="no native bf16"):
            assert hardware.training_dtype("bf16") == "fp32"


# NVIDIA GPUs by compute capability: bf16 tensor cores from Ampere (8.x) on; Pascal, Volta and Turing emulate it.
KNOWN_GPUS = [
    ("Tesla P100", (6, 0), False), ("Jetson AGX Xavier", (7, 2), False), ("Tesla V100", (7, 0), False),
    ("Tesla T4", (7, 5), False), ("Quadro RTX 8000", (7, 5), False), ("A100", (8, 0), True),
    ("A10G", (8, 6), True), ("GeForce RTX 3090", (8, 6), True), ("L4", (8, 9), True), ("H100", (9, 0), True),
    ("B200", (10, 0), True), ("GeForce RTX 5090", (12, 0), True),
]


@pytest.mark.parametrize(("name", "capability", "native"), KNOWN_GPUS, ids=[g[0] for g in KNOWN_GPUS])
def test_native_bf16_on_known_gpus(name: str, capability: tuple[int, int], native: bool,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's device query answers as this GPU would (an older GPU can still make bf16 tensors: emulated)."""
    from types import SimpleNamespace

    from medtune.scoring.hf import auto_dtype

    props = SimpleNamespace(name=f"NVIDIA {name}", major=capability[0], minor=capability[1])
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True, raising=False)
    assert hardware.gpu_has_bf16() is native, name
    expected = "bf16" if native else "fp16"
    assert hardware.training_dtype("auto") == hardware.training_dtype("bf16") == expected
    assert hardware.quantized_compute_dtype() == expected
    assert auto_dtype("auto") == auto_dtype("cuda:0") == expected


def _proc_cpuinfo_flags() -> set[str]:
    """The first processor's flags, read here without the module's reader."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def test_this_machines_cpu_answer_matches_its_bf16_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real check on the real machine: native exactly where the CPU lists AVX-512 BF16 or AMX-BF16."""
    flags = _proc_cpuinfo_flags()  # none (not Linux on x86): no bf16 instruction is listed, so not native
    monkeypatch.delenv(hardware.ENV_OVERRIDE, raising=False)
    expected = "avx512_bf16" in flags or "amx_bf16" in flags
    assert hardware.cpu_has_native_bf16() is expected, sorted(f for f in flags if "avx512" in f or "amx" in f)


GPU_NAMES = [("H100", True), ("H200", True), ("A100", True), ("L40", True), ("L4", True), ("A10", True),
             ("RTX 40", True), ("RTX 30", True), ("V100", False), ("T4", False), ("P100", False)]


@pytest.mark.gpu
def test_this_machines_gpu_answer_matches_its_model() -> None:
    from medtune.scoring.hf import auto_dtype

    name = torch.cuda.get_device_name(0)
    native = hardware.gpu_has_bf16()
    expected = "bf16" if native else "fp16"
    # training and scoring decide alike (each its own way) ...
    assert hardware.training_dtype("auto") == auto_dtype("cuda:0") == expected, name
    # ... and, on a GPU whose model is known, as the model's tensor cores say
    known = [bf16 for key, bf16 in GPU_NAMES if key in name]
    assert not known or native is known[0], name


def test_a_bf16_training_run_on_a_cpu_without_native_bf16_computes_in_fp32(
        no_native_bf16: None, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run asked for bf16 but trains in fp32 (no autocast), warns, and records what it really used."""
    import json

    from medtune.orders import build_order, order_items
    from medtune.schema import MCQItem
    from medtune.training import TrainSettings, train
    from medtune.training.placement import Placement

    items = [MCQItem(id=f"q{i}", question=f"Which drug treats disease {i}?", options=["alpha", "beta", "gamma"],
                     answer=i % 3, source="t", split="train") for i in range(8)]
    order = build_order(order_items(items), "random", 0)
    seen: list[str] = []
    real = Placement.create.__func__
    monkeypatch.setattr(Placement, "create",
                        classmethod(lambda cls, precision, strategy: seen.append(precision) or real(cls, precision,
                                                                                                   strategy)))
    config = TrainSettings(method="lora", model="tiny", dtype="bf16", max_steps=2, batch_size=4,
                         tiny={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                               "num_attention_heads": 2}, tiny_vocab_size=300)
    with pytest.warns(RuntimeWarning, match="no native bf16"):
        train(config, items, order, tmp_path / "run")
    assert seen and set(seen) == {"fp32"}
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["train"]["dtype"] == "bf16" and meta["precision"]["dtype"] == "fp32"

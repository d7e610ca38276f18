"""The memory plan: exact parameter counts, hand-computed plans of published models, the activation formula against
what autograd really keeps, suggestions that really fit, and ``medtune train --dry-run``."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig

from medtune.cli import main
from medtune.errors import ConfigError
from medtune.training import memory_estimate
from medtune.training.config import TrainSettings
from medtune.training.memory import check_fits, gpu_memory_bytes, plan_memory, plan_run
from medtune.training.memory_estimate import NF4_BYTES
from medtune.training.memory_plan import GIB, MemoryPlan
from medtune.training.model_shape import ModelShape, model_shape, shape_from_sizes

# Published sizes
LLAMA2_7B = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "intermediate_size": 11008,
             "vocab_size": 32000}
LLAMA2_13B = {"hidden_size": 5120, "num_hidden_layers": 40, "num_attention_heads": 40, "intermediate_size": 13824,
              "vocab_size": 32000}
LLAMA31_8B = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
              "intermediate_size": 14336, "vocab_size": 128256, "tie_word_embeddings": False}


@pytest.fixture(scope="module")
def shapes() -> dict[str, ModelShape]:
    return {name: model_shape(LlamaConfig(**sizes))
            for name, sizes in (("7b", LLAMA2_7B), ("13b", LLAMA2_13B), ("8b", LLAMA31_8B))}


def _plan(config: TrainSettings, shape: ModelShape, **kw: Any) -> MemoryPlan:
    return plan_memory(config, shape, precision=kw.pop("precision", "bf16"), **kw)


# ----------------------------------------------------------------------------------------------------------
# Shapes


def test_published_parameter_counts(shapes: dict[str, ModelShape]) -> None:
    assert shapes["7b"].n_params == 6_738_415_616
    assert shapes["13b"].n_params == 13_015_864_320
    assert shapes["8b"].n_params == 8_030_261_248
    eight = shapes["8b"]
    assert eight.kv_dim == 1024 and eight.head_params == 128256 * 4096 and not eight.tied_embeddings
    # every linear but the head: 4 attention projections and 3 MLP ones per layer
    assert shapes["7b"].linear_params == 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)
    assert {g.name for g in shapes["7b"].linears} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                     "down_proj"}


def test_the_count_from_sizes_equals_the_built_model_for_llama(shapes: dict[str, ModelShape]) -> None:
    for name, sizes in (("7b", LLAMA2_7B), ("8b", LLAMA31_8B)):
        assert replace(shape_from_sizes(LlamaConfig(**sizes)), exact=True) == replace(shapes[name], source="")


def test_tiny_model_counts_equal_the_built_model_and_its_adapters() -> None:
    from medtune.models import build_tiny_model
    from medtune.training.methods import apply_lora

    sizes = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 96}
    texts = ["the heart pumps blood", "the lung takes air"] * 20
    model, tok = build_tiny_model(texts, vocab_size=300, **sizes)
    config = TrainSettings(tiny=sizes, tiny_vocab_size=len(tok), lora_r=4)  # the vocabulary is the tokenizer's
    built = sum(p.numel() for p in model.parameters())
    assert model_shape("tiny", config).n_params == built == model_shape(model).n_params
    for method in ("lora", "dora"):
        cfg = config.model_copy(update={"method": method})
        wrapped = apply_lora(build_tiny_model(texts, vocab_size=300, **sizes)[0], cfg, use_dora=method == "dora")
        trained = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
        assert _plan(cfg, model_shape("tiny", cfg)).trainable == trained
        assert model_shape(wrapped).n_params == built  # the adapters are not counted as the model's


def test_a_folder_with_only_config_json_is_read_without_weights(tmp_path: Path,
                                                               shapes: dict[str, ModelShape]) -> None:
    LlamaConfig(**LLAMA2_7B).save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json"]
    assert replace(model_shape(str(tmp_path / "m")), source="") == replace(shapes["7b"], source="")


def test_a_hub_id_in_the_local_cache_is_read_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      shapes: dict[str, ModelShape]) -> None:
    import huggingface_hub.constants

    snapshot = tmp_path / "hub" / "models--org--llama-7b" / "snapshots" / "abc123"
    LlamaConfig(**LLAMA2_7B).save_pretrained(snapshot)  # the cache's layout, config.json only
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    plan = plan_run(TrainSettings(model="org/llama-7b", gpu_memory=80))
    assert plan.note is None and plan.n_params == shapes["7b"].n_params and plan.fits


def test_a_model_that_cannot_be_read_gives_a_plan_that_says_so(tmp_path: Path) -> None:
    for spec in (str(tmp_path / "absent"), "some-org/not-in-the-cache"):
        plan = plan_run(TrainSettings(model=spec, gpu_memory=24))
        assert plan.fits is None and plan.note is not None and "cannot read the model's config" in plan.note
        check_fits(plan, "here")  # nothing to refuse
        assert "no estimate" in plan.describe()


# ----------------------------------------------------------------------------------------------------------
# Hand-computed plans


def test_llama2_7b_lora_bf16_by_hand(shapes: dict[str, ModelShape]) -> None:
    n, h, f, layers = 6_738_415_616, 4096, 11008, 32
    adapters = layers * 16 * (4 * (h + h) + 2 * (h + f) + (f + h))  # r (in + out) for q, k, v, o, gate, up, down
    config = TrainSettings(method="lora", batch_size=1, max_length=512, lora_r=16, lora_dropout=0.05)
    plan = _plan(config, shapes["7b"])
    assert plan.trainable == adapters == 39_976_960
    assert plan.weights == 2 * n + 4 * adapters  # bf16 base, fp32 adapters
    assert round(2 * n / GIB, 1) == 12.6
    assert (plan.gradients, plan.optimizer, plan.scratch, plan.master) == (4 * adapters, 8 * adapters, 4 * adapters, 0)
    # one item of 512 tokens: no mask; per layer and token (bytes): 2 norms keep their fp32 input (2 x 4h), SDPA
    # keeps q, k, v and its output in bf16 (2 x 4h) + its log-sum-exp (4 B per head), the MLP keeps gate, SiLU and
    # up outputs (3 x 2f), each adapter keeps a bf16 copy of its input, a 1-byte dropout mask and its rank-16 output
    inputs = 5 * h + h + f  # q, k, v, gate, up read h; o reads the attention output (h); down reads f
    per_token = 2 * 4 * h + 2 * 4 * h + 4 * 32 + 3 * 2 * f + (2 * inputs + inputs + 7 * 2 * 16)
    outside = (2 * h + 8) * 512 + 4 * h * 512 + (2 + 8) * 32000 * 2  # embedding + ids, final norm, 2 answer logits
    assert plan.activations == layers * per_token * 512 + outside
    assert plan.overhead == int(GIB + 0.05 * (plan.total - plan.overhead))
    # the peak is the forward/backward: weights and moments stay, the activations dwarf the adapters' gradients
    assert plan.peak == "forward/backward"
    assert plan.total == plan.weights + plan.optimizer + plan.activations + plan.overhead


def test_llama2_13b_qlora_by_hand(shapes: dict[str, ModelShape]) -> None:
    shape = shapes["13b"]
    linear = 40 * (4 * 5120 * 5120 + 3 * 5120 * 13824)
    adapters = 40 * 16 * (4 * 2 * 5120 + 3 * (5120 + 13824))
    config = TrainSettings(preset="paper-qlora", method="qlora", batch_size=4)
    plan = _plan(config, shape)
    # NF4 linears, the rest (embeddings, head, norms) in fp32 as PEFT's k-bit preparation leaves them, one
    # dequantised weight (the largest) at a time, fp32 adapters
    base = NF4_BYTES * linear + 4 * (13_015_864_320 - linear) + 2 * 5120 * 13824
    assert plan.weights == int(base + 4 * adapters)
    assert (plan.optimizer, plan.scratch) == (2 * adapters, 0)  # paged 8-bit AdamW
    assert round(plan.weights / GIB, 1) == 7.7  # vs 24.2 GiB for the same base in bf16
    on_24 = _plan(config, shape, gpu_bytes=24 * GIB)
    assert on_24.fits is False and on_24.suggestions[0] == "--gradient-checkpointing"
    assert _plan(config.model_copy(update={"gradient_checkpointing": True}), shape, gpu_bytes=24 * GIB).fits


def test_llama31_8b_full_fits_eight_80gb_gpus_with_fsdp_but_not_one(shapes: dict[str, ModelShape]) -> None:
    shape, config = shapes["8b"], TrainSettings(method="full", batch_size=4, max_length=512)
    eight = _plan(config, shape, world_size=8, gpu_bytes=80 * GIB)
    assert eight.sharded and eight.fits and eight.master == 4 * shape.n_params // 8
    assert eight.optimizer == 8 * shape.n_params // 8
    one = _plan(config, shape, gpu_bytes=80 * GIB)
    assert not one.sharded and one.fits is False
    # fp32 master + grads + AdamW moments + the foreach step's buffer: 20 bytes per parameter at the step
    assert one.master + one.gradients + one.optimizer + one.scratch == 20 * shape.n_params
    fsdp = [f for f in one.fixes if f["settings"].get("distributed") == "fsdp"]
    assert fsdp and fsdp[0]["world_size"] in (2, 4, 8)
    assert any(s.startswith("--distributed fsdp on ") for s in one.suggestions)
    smaller = [n for n in (2, 4, 8) if n < fsdp[0]["world_size"]]
    for n in smaller:  # the smallest GPU count that fits is the one suggested
        assert not _plan(config.model_copy(update={"distributed": "fsdp"}), shape, world_size=n,
                         gpu_bytes=80 * GIB).fits
    assert "distributed fsdp" in one.describe() and "80.0 GiB" in one.describe()


def test_galore_keeps_low_rank_moments_by_hand(shapes: dict[str, ModelShape]) -> None:
    shape, r = shapes["7b"], 64
    plan = _plan(TrainSettings(method="galore", galore_rank=r), shape)
    per_layer = 4 * (2 * 4 * r * 4096 + 4 * r * 4096) + 3 * (2 * 4 * r * 11008 + 4 * r * 4096)
    rest = shape.n_params - shape.linear_params  # embeddings, head, norms: plain AdamW
    assert plan.optimizer == 32 * per_layer + 8 * rest
    assert plan.optimizer < _plan(TrainSettings(method="full"), shape).optimizer / 8


def test_8bit_adamw_and_ddp(shapes: dict[str, ModelShape]) -> None:
    shape = shapes["7b"]
    adamw = _plan(TrainSettings(method="lora"), shape)
    eight_bit = _plan(TrainSettings(method="lora", optim="adamw_8bit"), shape)
    assert eight_bit.optimizer * 4 == adamw.optimizer and eight_bit.scratch == 0
    ddp = _plan(TrainSettings(method="lora"), shape, world_size=4)  # auto: adapters train under DDP, unsharded
    assert not ddp.sharded and ddp.weights == adamw.weights and ddp.gradients == 2 * adamw.gradients


def test_knowtuning_plans_its_larger_stage(shapes: dict[str, ModelShape]) -> None:
    shape = shapes["7b"]
    kt = _plan(TrainSettings(method="knowtuning", knowtuning_lora_targets=["q_proj", "v_proj"]), shape)
    assert kt.trainable == 32 * 16 * 2 * (4096 + 4096)  # LoRA on q_proj and v_proj only
    # the KC stage (TRL's DPO as medtune configures it) holds fp32 weights and chosen + rejected rows
    assert kt.stage == "the KC (DPO) stage" and kt.precision == "fp32" and kt.weights >= 4 * shape.n_params
    full = _plan(TrainSettings(method="knowtuning", knowtuning_inner_method="full"), shape, gpu_bytes=80 * GIB)
    assert full.weights >= 8 * shape.n_params  # the policy and its fp32 reference copy
    assert full.fits is False and "--knowtuning-inner-method lora" in " ".join(full.suggestions)


# ----------------------------------------------------------------------------------------------------------
# Activations


def test_gradient_checkpointing_reduces_activations(shapes: dict[str, ModelShape]) -> None:
    for method in ("full", "lora", "dora", "qlora", "galore"):
        config = TrainSettings(method=method, batch_size=4, max_length=512)
        plain = _plan(config, shapes["7b"]).activations
        checkpointed = _plan(config.model_copy(update={"gradient_checkpointing": True}), shapes["7b"]).activations
        assert checkpointed < plain / 4, method


@settings(max_examples=40, deadline=None)
@given(method=st.sampled_from(["full", "lora", "dora", "qlora", "galore"]),
       hidden=st.sampled_from([256, 1024, 4096]), layers=st.integers(1, 48), batch=st.integers(1, 8),
       length=st.integers(16, 2048), checkpointing=st.booleans(), packing=st.booleans(),
       precision=st.sampled_from(["fp32", "bf16", "fp16"]))
def test_activations_are_linear_in_tokens_without_a_mask(method: str, hidden: int, layers: int, batch: int,
                                                        length: int, checkpointing: bool, packing: bool,
                                                        precision: str) -> None:
    """Flash attention takes packed rows without a mask, so the activations grow linearly with the tokens; SDPA
    with several items a row keeps a tokens² mask per layer on top (superlinear)."""
    shape = shape_from_sizes(LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=8,
                                         intermediate_size=hidden * 3, vocab_size=1000))

    def act(n: int, attn: str) -> int:
        c = TrainSettings(method=method, batch_size=batch, max_length=n, gradient_checkpointing=checkpointing,
                        packing=packing, attn_implementation=attn)
        return plan_memory(c, shape, precision=precision).activations

    a1, a2, a3 = (act(k * length, "flash_attention_2") for k in (1, 2, 3))
    assert a2 > a1 and abs((a3 - a2) - (a2 - a1)) <= 2  # integer rounding only
    if batch > 1:
        s1, s2, s3 = (act(k * length, "sdpa") for k in (1, 2, 3))
        assert (s3 - s2) > (s2 - s1)


def _measured_per_layer(model: Any, tokens: int, items: int, autocast: bool) -> int:
    """Bytes autograd keeps for the backward in a 2-layer minus a 1-layer model: one decoder layer (the weights'
    half-precision copies excluded: the plan counts them with the weights)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    weight_shapes = {tuple(m.weight.shape) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    kept: dict[int, int] = {}
    alive = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        square = t.dim() == 2 and t.shape[0] == t.shape[1] != tokens  # DoRA's identity: freed right after the layer
        weight = t.dim() == 2 and t.shape[0] != tokens and (tuple(t.shape) in weight_shapes
                                                              or tuple(t.shape)[::-1] in weight_shapes)
        if ptr not in params and ptr not in kept and not square and not weight:
            kept[ptr] = t.untyped_storage().nbytes()
            alive.append(t)
        return t

    ids = torch.randint(0, 200, (1, tokens))
    positions = (torch.arange(tokens) % (tokens // items)).unsqueeze(0)  # packed items: positions restart
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), cast:
        base.model(input_ids=ids, position_ids=positions, use_cache=False)
    return sum(kept.values())


def _regime_model(layers: int, method: str, precision: str, dropout: float) -> tuple[Any, Any]:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=128, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=344, vocab_size=200, tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    if method in ("lora", "dora"):
        if precision == "bf16":
            model = model.to(torch.bfloat16)  # the frozen base in half precision, PEFT's adapters in fp32
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout, target_modules=targets,
                                                 use_dora=method == "dora"))
    return model.train(), cfg


@pytest.mark.parametrize(("method", "precision", "dropout"), [
    ("full", "bf16", 0.0), ("full", "fp32", 0.0), ("lora", "bf16", 0.1), ("lora", "fp32", 0.0), ("dora", "bf16", 0.0),
])
def test_the_per_layer_activations_are_what_autograd_keeps(method: str, precision: str, dropout: float,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The formula against PyTorch itself on a small Llama (GQA, SwiGLU, SDPA), packed rows of 1 and 3 items: the
    same tensors a GPU keeps, but for CPU dropout's float mask (4 bytes where CUDA keeps 1)."""
    monkeypatch.setattr(memory_estimate, "DROPOUT_MASK_BYTES", 4)
    for tokens, items in ((240, 1), (240, 3)):
        measured, planned = [], []
        for layers in (1, 2):
            model, cfg = _regime_model(layers, method, precision, dropout)
            measured.append(_measured_per_layer(model, tokens, items, autocast=precision == "bf16"))
            config = TrainSettings(method=method, batch_size=items, max_length=tokens // items, lora_r=8,
                                 lora_dropout=dropout)
            planned.append(plan_memory(config, model_shape(cfg), precision=precision).activations)
        layer_measured, layer_planned = measured[1] - measured[0], planned[1] - planned[0]
        assert layer_planned == pytest.approx(layer_measured, rel=0.01), (tokens, items)


# ----------------------------------------------------------------------------------------------------------
# Fitting, suggestions, the check


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(["full", "lora", "dora", "qlora", "galore"]),
       hidden=st.sampled_from([1024, 2048, 4096, 5120, 8192]), layers=st.integers(8, 80),
       kv=st.sampled_from([1, 4, 8]), batch=st.integers(1, 16), length=st.sampled_from([256, 512, 1024, 2048]),
       accum=st.integers(1, 4), gpu_gib=st.sampled_from([16, 24, 40, 48, 80]), world=st.sampled_from([1, 1, 2]),
       checkpointing=st.booleans())
def test_every_suggestion_fits_when_applied(method: str, hidden: int, layers: int, kv: int, batch: int, length: int,
                                            accum: int, gpu_gib: int, world: int, checkpointing: bool) -> None:
    shape = shape_from_sizes(LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_key_value_heads=kv,
                                         num_attention_heads=hidden // 128, intermediate_size=hidden * 3,
                                         vocab_size=32000))
    config = TrainSettings(method=method, batch_size=batch, max_length=length, grad_accum=accum,
                         gradient_checkpointing=checkpointing)
    gpu = gpu_gib * GIB
    plan = plan_memory(config, shape, world_size=world, gpu_bytes=gpu, precision="bf16")
    assert plan.fits == (plan.total <= gpu)
    assert len(plan.suggestions) == len(plan.fixes) and (plan.fits is False or not plan.fixes)
    for fix, text in zip(plan.fixes, plan.suggestions, strict=True):
        changed = config.model_copy(update=fix["settings"])
        assert changed.global_batch == config.global_batch  # a smaller micro-batch keeps the global batch
        assert changed != config or fix["world_size"] != world
        assert plan_memory(changed, shape, world_size=fix["world_size"], gpu_bytes=gpu, precision="bf16").fits
        assert text.startswith("--")
    if plan.fits is False and not plan.fixes:  # "no setting tried fits": not even all of them together
        everything = {"gradient_checkpointing": True, "batch_size": 1, "grad_accum": accum * batch,
                      "attn_implementation": "flash_attention_2"}
        for extra, n in (({"method": "qlora"}, world), ({"distributed": "fsdp"}, 8)):
            if "method" in extra and method == "qlora":
                continue
            if "distributed" in extra and method not in ("full", "galore"):
                continue
            trial = config.model_copy(update={**everything, **extra})
            assert not plan_memory(trial, shape, world_size=n, gpu_bytes=gpu, precision="bf16").fits


def test_check_fits_refuses_naming_the_estimate_the_gpu_and_what_fits(shapes: dict[str, ModelShape]) -> None:
    config = TrainSettings(method="lora", model="llama-2-7b", batch_size=4, max_length=512)
    plan = _plan(config, shapes["7b"], gpu_bytes=24 * GIB)
    with pytest.raises(ConfigError) as err:
        check_fits(plan, "cell x")
    text = str(err.value)
    assert "\n" not in text and text.startswith("cell x: lora on llama-2-7b (bf16) needs ~")
    assert f"~{plan.total / GIB:.1f} GiB per GPU, the GPU has 24.0 GiB" in text
    assert "would fit: --gradient-checkpointing" in text
    check_fits(_plan(config.model_copy(update={"memory_check": False}), shapes["7b"], gpu_bytes=24 * GIB), "x")
    check_fits(_plan(config, shapes["7b"]), "no GPU to compare with")
    roomy = _plan(config, shapes["7b"], gpu_bytes=80 * GIB)
    assert roomy.fits and not roomy.suggestions
    check_fits(roomy, "x")


def test_describe_and_to_dict(shapes: dict[str, ModelShape]) -> None:
    plan = _plan(TrainSettings(method="lora", model="llama-2-7b"), shapes["7b"], gpu_bytes=24 * GIB)
    text = plan.describe()
    assert f"{plan.weights / GIB:.1f} GiB" in text and "the GPU has 24.0 GiB: does not fit" in text
    assert "would fit: --gradient-checkpointing" in text
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["total"] == plan.total and data["allocated"] == plan.total - plan.overhead and data["fits"] is False


def test_gpu_memory_comes_from_the_setting() -> None:
    assert gpu_memory_bytes(TrainSettings(gpu_memory=24)) == 24 * GIB
    if not torch.cuda.is_available():
        assert gpu_memory_bytes(TrainSettings()) is None
        assert plan_run(TrainSettings()).fits is None


# ----------------------------------------------------------------------------------------------------------
# medtune train --dry-run


def test_train_dry_run_prints_the_plan_and_refuses_what_does_not_fit(tmp_path: Path, capsys) -> None:
    LlamaConfig(**LLAMA2_7B).save_pretrained(tmp_path / "llama")
    base = ["train", "--dry-run", "--model", str(tmp_path / "llama"), "--method", "lora", "--gpu-memory", "16"]
    assert main(base) == 2
    captured = capsys.readouterr()
    out, err = captured.out, " ".join(captured.err.split())
    assert "memory plan" in out and "weights" in out and "activations" in out and "does not fit" in out
    assert "needs ~" in err and "the GPU has 16.0 GiB" in err and "would fit: --gradient-checkpointing" in err
    assert main([*base, "--gradient-checkpointing"]) == 0
    assert "fits" in capsys.readouterr().out
    assert main([*base, "--no-memory-check"]) == 0
    assert not (tmp_path / "run").exists()
    assert main(["train", "--model", "tiny"]) == 2
    assert "--items" in capsys.readouterr().err

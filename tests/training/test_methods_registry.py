"""Fine-tuning methods are registered specs: the trainer asks the spec, so a plugin's method trains like a built-in."""

from __future__ import annotations

import json
import sys
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import make_items, make_order, micro_cli_options, micro_config

from medtune import plugins
from medtune.adaptive.verify import verify_run
from medtune.errors import ConfigError, InputError
from medtune.models import build_tiny_model
from medtune.training import TrainSettings, method_settings, train
from medtune.training.export import export_run, load_trained, run_method
from medtune.training.method_settings import METHODS, LoraSettings
from medtune.training.methods import (
    MethodSpec,
    build_optimizer,
    get_method,
    method_names,
    prepare_model,
    register_method,
)
from medtune.training.methods.lora import LoraMethod

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))

import medtune_test_method  # noqa: E402  (registers norm-only; needs tests/plugins on sys.path)

BUILT_INS = ("full", "lora", "dora", "qlora", "galore")


@pytest.fixture
def registry(monkeypatch):
    """The registry for tests that register methods: on exit it (and the settings groups) are as before."""
    monkeypatch.setattr(method_settings, "_PLUGIN_GROUPS", dict(method_settings._PLUGIN_GROUPS))
    monkeypatch.setattr(method_settings, "_METHOD_GROUPS", dict(method_settings._METHOD_GROUPS))
    with METHODS.scoped() as scoped:
        yield scoped


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


# ----------------------------------------------------------------------------------------------------------
# The registry


def test_built_ins_are_registered_and_describe_themselves():
    assert method_names()[: len(BUILT_INS)] == BUILT_INS
    adapters = {n for n in BUILT_INS if get_method(n).is_adapter}
    assert adapters == {"lora", "dora", "qlora"}
    assert {get_method(n).output_name for n in BUILT_INS} == {"adapter", "model"}
    assert [n for n in BUILT_INS if get_method(n).base_quantization] == ["qlora"]
    assert get_method("qlora").default_optim == "paged_adamw_8bit"
    assert get_method("dora").use_dora and not get_method("lora").use_dora
    fields = set(TrainSettings.model_fields)
    for name in method_names():
        spec = get_method(name)
        assert spec.summary and set(spec.settings) <= fields, name
    with pytest.raises(FrozenInstanceError):
        get_method("lora").is_adapter = False


def test_unknown_method_lists_the_available_names():
    with pytest.raises(ConfigError) as err:
        get_method("nope")
    assert "unknown method 'nope'" in str(err.value)
    assert all(name in str(err.value) for name in (*BUILT_INS, "norm-only"))
    with pytest.raises(ConfigError, match=r"training\.method: unknown method 'nope'"):
        TrainSettings.from_dict({"method": "nope"})


def test_a_taken_name_needs_replace(registry):
    clash = medtune_test_method.NormOnly(name="lora", summary="x", is_adapter=False)
    with pytest.raises(ConfigError, match="'lora' is already registered"):
        register_method(clash)
    assert get_method("lora").is_adapter  # untouched
    register_method(clash, replace=True)
    assert get_method("lora") is clash
    with pytest.raises(ConfigError, match="lower-case"):
        register_method(medtune_test_method.NormOnly(name="Bad Name", summary="x", is_adapter=False))
    with pytest.raises(TypeError):
        register_method("lora")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        MethodSpec(name="abstract", summary="x", is_adapter=False)  # type: ignore[abstract]


def test_a_spec_reading_a_setting_the_config_lacks_fails_before_training(registry):
    register_method(medtune_test_method.NormOnly(name="typo", summary="x", is_adapter=False,
                                                 settings=("lora_rank",)))
    model, _ = build_tiny_model(["a b c"], vocab_size=300, num_hidden_layers=1)
    with pytest.raises(ConfigError, match=r"reads setting.*lora_rank"):
        prepare_model(model, TrainSettings(method="typo"))


def test_the_spec_chooses_trainable_parameters_and_optimizer():
    model, _ = build_tiny_model(["a b c"], vocab_size=300, num_hidden_layers=1)
    cfg = TrainSettings(method="norm-only")
    prepared = prepare_model(model, cfg)
    trainable = {n for n, p in prepared.named_parameters() if p.requires_grad}
    assert trainable == medtune_test_method.norm_parameter_names(model)
    assert trainable and all("norm" in n for n in trainable)
    opt = build_optimizer(prepared, cfg)
    assert type(opt) is torch.optim.AdamW
    assert sum(len(g["params"]) for g in opt.param_groups) == len(trainable)


# ----------------------------------------------------------------------------------------------------------
# A plugin method through the trainer and the CLI


def test_plugin_method_trains_only_norm_weights_and_verifies(tmp_path):
    items = make_items(24)
    ids = [it.id for it in items]
    res = train(micro_config(method="norm-only", lr=1e-2), items, make_order(ids), tmp_path / "run")
    assert res.steps == 6 and all(torch.isfinite(torch.tensor(res.losses)))
    assert verify_run(res.run_dir).ok
    assert res.output_dir == res.run_dir / "model" and not (res.run_dir / "adapter").exists()

    before, after = _weights(res.run_dir / "base"), _weights(res.run_dir / "model")
    assert set(before) == set(after)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    norms = {k for k in before if "norm" in k}
    assert norms and changed == norms  # every norm weight moved, nothing else did

    meta = json.loads((res.run_dir / "config.json").read_text())
    assert meta["optimizer"] == "AdamW" and meta["base_model"] == str(res.run_dir / "base")
    assert meta["trainable_parameters"] == sum(before[k].numel() for k in norms)

    assert run_method(res.run_dir) is get_method("norm-only")
    loaded = load_trained(res.run_dir)  # a full model: loaded from model/, no base needed
    for k, v in loaded.model.state_dict().items():
        if k in after:
            assert torch.equal(v, after[k]), k
    exported = export_run(res.run_dir, tmp_path / "export", merge=False)  # nothing to merge: the full model
    assert _weights(exported).keys() == after.keys()


def test_an_adapter_method_registered_outside_medtune_keeps_its_base_and_merges(tmp_path, registry):
    """Whether a run saves adapter/, keeps base/ and merges on export follows ``is_adapter``, not the name."""
    register_method(LoraMethod(name="lora-plugin", summary="LoRA under another name", is_adapter=True,
                               settings_class=LoraSettings, settings_group="lora"))
    items = make_items(16)
    res = train(micro_config(method="lora-plugin", lora={"r": 4}), items, make_order([it.id for it in items]),
                tmp_path / "run")
    assert (res.run_dir / "adapter" / "adapter_config.json").exists() and not (res.run_dir / "model").exists()
    assert json.loads((res.run_dir / "adapter" / "adapter_config.json").read_text())["r"] == 4
    merged = export_run(res.run_dir, tmp_path / "merged", merge=True)
    assert not any("lora" in k for k in _weights(merged))
    base_w = _weights(res.run_dir / "base")
    assert any(not torch.equal(base_w[k], v) for k, v in _weights(merged).items() if k in base_w)


def test_a_run_of_an_unregistered_method_names_the_method(tmp_path, registry):
    items = make_items(8)
    res = train(micro_config(method="norm-only", max_steps=1), items, make_order([it.id for it in items]),
                tmp_path / "run")
    registry.unregister("norm-only")
    with pytest.raises(InputError, match=r"unknown method 'norm-only'.*MEDTUNE_PLUGINS"):
        load_trained(res.run_dir)


def test_cli_trains_with_a_plugin_method_named_in_the_environment(files, tmp_path, monkeypatch, registry):
    from medtune.cli import main

    # Forget the plugin, so the run works only if the CLI imports it from MEDTUNE_PLUGINS.
    registry.unregister("norm-only")
    monkeypatch.delitem(sys.modules, "medtune_test_method")
    monkeypatch.setattr(plugins, "_loaded", set())
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setenv(plugins.ENV_VAR, "medtune_test_method")
    out = tmp_path / "run"
    code = main(["train", "--items", str(files["items"]), "--order", str(files["order"]), "-o", str(out),
                 "--method", "norm-only", "--batch-size", "4", "--max-steps", "3", *micro_cli_options(),
                 "--no-progress"])
    assert code == 0
    assert json.loads((out / "config.json").read_text())["train"]["method"] == "norm-only"
    assert main(["verify-order", str(out)]) == 0
    assert (out / "model" / "config.json").exists()


def test_run_method_reads_the_record_and_earlier_dora_flag(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"train": {"method": "lora", "dora": True}}))
    assert run_method(tmp_path) is get_method("dora")  # DoRA was once a flag on lora
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))  # a model's own config
    assert run_method(tmp_path) is None

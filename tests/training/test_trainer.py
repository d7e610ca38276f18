"""The loop trains every method, in exactly the planned order, and verify-order proves it (or fails)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from training_helpers import make_items, make_order, micro_cli_options, micro_config

from medtune.adaptive.verify import verify_run
from medtune.cli import main
from medtune.errors import UnsupportedOnThisMachine
from medtune.models import build_tiny_model
from medtune.training import train
from medtune.training.config import TrainSettings, apply_preset
from medtune.training.methods import build_optimizer, find_target_modules, prepare_model
from medtune.training.runlog import read_log


def _run(tmp_path: Path, name: str, order: dict, **kw):
    items = make_items(40)
    cfg = micro_config(**kw)
    return train(cfg, items, order, tmp_path / name)


def test_target_modules_are_found_and_exclude_the_head():
    model, _ = build_tiny_model(["a b c"], vocab_size=300, num_hidden_layers=2)
    names = find_target_modules(model)
    leaves = {n.rsplit(".", 1)[-1] for n in names}
    assert leaves == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert len(names) == 14 and "lm_head" not in names


def test_untied_head_is_never_adapted():
    model, _ = build_tiny_model(["a b c"], vocab_size=300, num_hidden_layers=1)
    model.config.tie_word_embeddings = False
    model.lm_head = torch.nn.Linear(128, model.config.vocab_size, bias=False)
    peft_model = prepare_model(model, TrainSettings(method="lora"))
    assert not any("lm_head" in n for n, p in peft_model.named_parameters() if p.requires_grad)
    assert any("down_proj.lora_A" in n for n, _ in peft_model.named_parameters())


@pytest.mark.parametrize("method, extra", [
    ("full", {}), ("lora", {}), ("dora", {}), ("galore", {"galore": {"rank": 8}}),
    ("galore", {"galore": {"rank": 8, "optim": "galore_adafactor"}}), ("qlora", {"dtype": "bf16"}),
])
def test_every_method_trains_in_order(tmp_path, method, extra):
    items = make_items(40)
    ids = [it.id for it in items]
    random.Random(1).shuffle(ids)
    res = _run(tmp_path, method, make_order(ids), method=method, **extra)
    assert res.steps == 10 and all(torch.isfinite(torch.tensor(res.losses)))
    records = read_log(res.run_dir)
    assert [i for r in records for i in r["ids"]] == ids
    assert verify_run(res.run_dir).ok
    out = "adapter" if method in ("lora", "dora", "qlora") else "model"
    assert any((res.run_dir / out).glob("*.safetensors"))
    assert (res.run_dir / "loss.png").stat().st_size > 1000
    if method == "qlora":
        meta = json.loads((res.run_dir / "config.json").read_text())
        assert meta["optimizer"] == "AdamW8bit"
        base = res.model.get_base_model()
        import bitsandbytes as bnb

        assert any(isinstance(m, bnb.nn.Linear4bit) for m in base.modules())


def test_loss_decreases_on_repeated_items(tmp_path):
    ids = [it.id for it in make_items(8)]
    res = _run(tmp_path, "rep", make_order(ids, epochs=15), method="full", lr=3e-3)
    first, last = sum(res.losses[:2]) / 2, sum(res.losses[-2:]) / 2
    assert last < 0.5 * first


@pytest.mark.cpu_only
def test_galore_8bit_is_refused_on_cpu_with_the_alternative_named():
    model, _ = build_tiny_model(["a b"], vocab_size=300, num_hidden_layers=1)
    cfg = TrainSettings(method="galore", galore={"optim": "galore_adamw_8bit"})
    with pytest.raises(UnsupportedOnThisMachine, match="galore_adamw or galore_adafactor"):
        build_optimizer(prepare_model(model, cfg), cfg)


def test_paper_preset_and_explicit_options():
    cfg = apply_preset(TrainSettings(lora={"r": 8}), "paper-qlora", explicit={"lora.r"})
    assert (cfg.method, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.max_length) == ("qlora", 8, 64, 0.1, 512)
    assert cfg.target == "letter" and cfg.optim == "paged_adamw_8bit"


def test_global_batch_and_accumulation_cover_consecutive_items(tmp_path):
    ids = [it.id for it in make_items(40)]
    res = _run(tmp_path, "acc", make_order(ids, epochs=2), method="full", batch_size=3, grad_accum=2,
               packing=False)
    records = read_log(res.run_dir)
    # 40 items per epoch in global batches of 6: 7 steps per epoch, the last one short
    assert [len(r["ids"]) for r in records] == [6] * 6 + [4] + [6] * 6 + [4]
    assert [r["epoch"] for r in records] == [0] * 7 + [1] * 7
    assert verify_run(res.run_dir).ok


def test_packed_and_padded_runs_give_the_same_model(tmp_path):
    ids = [it.id for it in make_items(40)]
    a = _run(tmp_path, "packed", make_order(ids), method="full", packing=True)
    b = _run(tmp_path, "padded", make_order(ids), method="full", packing=False)
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5), n
    assert a.losses == pytest.approx(b.losses, rel=1e-5)


# ----------------------------------------------------------------------------------------------------------
# verify-order through the CLI


def _cli_train(files, out, order=None, *extra):
    return main(["train", "--items", str(files["items"]), "--order", str(order or files["order"]), "-o", str(out),
                 "--method", "full", "--batch-size", "4", *micro_cli_options(), "--no-progress", *extra])


def test_cli_train_and_verify_pass(files, tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli_train(files, out, None, "--max-steps", "5") == 0
    assert len(read_log(out)) == 5
    assert main(["verify-order", str(out)]) == 0
    assert "matches the plan: 5 steps" in capsys.readouterr().out


def test_shuffled_run_fails_verify_naming_the_first_differing_step(files, tmp_path, capsys):
    plan = json.loads(files["order"].read_text())
    ids = plan["epochs"][0]
    shuffled = ids[:8] + random.Random(3).sample(ids[8:], len(ids) - 8)  # steps 1-2 agree, step 3 differs
    assert shuffled[8:12] != ids[8:12]
    bad_order = files["dir"] / "shuffled.json"
    bad_order.write_text(json.dumps({**plan, "epochs": [shuffled]}))
    out = tmp_path / "shuffled-run"
    assert _cli_train(files, out, bad_order) == 0
    assert main(["verify-order", str(out)]) == 0  # it did follow its own (shuffled) plan ...
    capsys.readouterr()
    assert main(["verify-order", str(out), "--order", str(files["order"])]) == 1  # ... not the real one
    err = capsys.readouterr().err
    assert "step 3 (epoch 0)" in err


def test_tampered_or_truncated_logs_fail(files, tmp_path):
    out = tmp_path / "run"
    assert _cli_train(files, out, None, "--max-steps", "6") == 0
    log_path = out / "train_log.jsonl"
    lines = log_path.read_text().splitlines()
    log_path.write_text("\n".join(lines[:4] + lines[5:]) + "\n")  # step 5 missing
    res = verify_run(out)
    assert not res.ok and res.first_bad_step == 5
    recs = [json.loads(x) for x in lines]
    recs[1]["ids"] = list(reversed(recs[1]["ids"]))  # same items, wrong order within the step
    log_path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    res = verify_run(out)
    assert not res.ok and res.first_bad_step == 2
    log_path.write_text("\n".join(lines[:3]) + "\n")
    assert verify_run(out).first_bad_step == 4  # stopped early


def test_every_strategy_order_is_realised(tmp_path):
    from medtune.orders import OrderItem, available_strategies, build_order

    items = make_items(24)
    rng = random.Random(0)
    oitems = [OrderItem(it.id, it.category, rng.random(), it.human_difficulty) for it in items]
    for strategy in available_strategies():
        order = build_order(oitems, strategy, seed=2, epochs=2)
        res = train(micro_config(method="full", batch_size=5), items, order, tmp_path / strategy)
        result = verify_run(res.run_dir)
        assert result.ok, (strategy, result.message)
        realised = [i for r in read_log(res.run_dir) for i in r["ids"]]
        assert realised == [i for e in order["epochs"] for i in e], strategy


def test_existing_run_is_not_overwritten(files, tmp_path):
    out = tmp_path / "run"
    assert _cli_train(files, out, None, "--max-steps", "2") == 0
    assert _cli_train(files, out, None, "--max-steps", "2") == 2  # InputError: use --resume


def test_report_to_names_the_missing_package(tmp_path):
    import importlib.util

    from medtune.errors import ConfigError
    from medtune.training.trainer import Reporters

    missing = [n for n in ("tensorboard", "mlflow", "wandb") if importlib.util.find_spec(n) is None]
    if not missing:
        pytest.skip("every tracker is installed here")
    with pytest.raises(ConfigError, match=f"needs the '{missing[0]}' package"):
        Reporters([missing[0]], tmp_path, {})
    with pytest.raises(ConfigError, match="unknown report_to"):
        Reporters(["nonsense"], tmp_path, {})


def test_cli_paper_qlora_preset_with_explicit_override(files, tmp_path):
    out = tmp_path / "qlora"
    code = main(["train", "--items", str(files["items"]), "--order", str(files["order"]), "-o", str(out),
                 "--preset", "paper-qlora", "--max-length", "128", "--max-steps", "2", "--batch-size", "4",
                 "--lora-r", "8", *micro_cli_options()[:4], "--tiny-option", "hidden_size=64", "--no-progress"])
    assert code == 0
    meta = json.loads((out / "config.json").read_text())
    train_cfg = meta["train"]
    assert (train_cfg["method"], train_cfg["lora"]) == ("qlora", {"r": 8, "alpha": 64, "dropout": 0.1})
    assert train_cfg["max_length"] == 128  # explicit beats the preset's 512
    assert meta["optimizer"] == "AdamW8bit"  # paged on a GPU; bitsandbytes has no paging on CPU
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 8


@pytest.mark.parametrize("packing", [True, False])
def test_gradient_checkpointing_is_active_and_changes_nothing_but_memory(tmp_path, packing):
    ids = [it.id for it in make_items(24)]
    plain = _run(tmp_path, f"plain-{packing}", make_order(ids), method="lora", packing=packing)
    ckpt = _run(tmp_path, f"ckpt-{packing}", make_order(ids), method="lora", packing=packing,
                gradient_checkpointing=True)
    layers = [m for m in ckpt.model.modules() if hasattr(m, "gradient_checkpointing")]
    assert layers and all(m.gradient_checkpointing for m in layers)
    assert not any(getattr(m, "gradient_checkpointing", False) for m in plain.model.modules())
    assert ckpt.losses == pytest.approx(plain.losses, rel=1e-5)
    for (n, p), (_, q) in zip(plain.model.named_parameters(), ckpt.model.named_parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), n


def test_cli_trains_on_the_training_split_of_a_file_that_holds_several(tmp_path, capsys):
    """Following the README on the synthetic file (train and test questions in one file) never trains on test."""
    from medtune.schema import write_items
    from medtune.training.runlog import read_log

    items = make_items(24)
    mixed = [it.model_copy(update={"split": "test" if i >= 16 else "train"}) for i, it in enumerate(items)]
    items_path = tmp_path / "mixed.parquet"
    write_items(mixed, items_path)
    train_ids = [it.id for it in mixed if it.split == "train"]
    order_path = tmp_path / "order.json"
    order_path.write_text(json.dumps(make_order(train_ids)))
    out = tmp_path / "run"
    assert _cli_train({"items": items_path, "order": order_path}, out, None, "--max-steps", "2") == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "split 'train': 16 items (left out: {'test': 8})" in said
    assert {i for rec in read_log(out) for i in rec["ids"]} <= set(train_ids)

    # An order that names a test question is refused (it is not among the training items), naming the id.
    order_path.write_text(json.dumps(make_order([*train_ids[:3], mixed[-1].id])))
    assert _cli_train({"items": items_path, "order": order_path}, tmp_path / "run2", None) == 2
    assert mixed[-1].id in " ".join(capsys.readouterr().err.split())
    # ... unless the user names every split explicitly.
    assert _cli_train({"items": items_path, "order": order_path}, tmp_path / "run3", None, "--split", "all",
                      "--max-steps", "1") == 0

"""Checkpoints on a two-layer model: what a checkpoint folder holds, what restoring puts back (weights, optimizer,
scheduler, every RNG), which folders count as checkpoints and in what order, and the refusals. No training loop:
each test runs in well under a second."""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from galore_torch.galore_projector import GaLoreProjector
from safetensors.torch import load_file, save_file

from medtune.errors import InputError
from medtune.training import checkpoint as ckpt


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model[0].bias.requires_grad_(False)  # a frozen tensor: not part of the checkpoint
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    return model, opt, sched


def _step(model, opt, sched) -> None:
    loss = model(torch.ones(2, 3)).pow(2).sum()
    loss.backward()
    opt.step()
    sched.step()
    opt.zero_grad()


def _draws() -> tuple[float, float, float]:
    return float(torch.rand(1)), random.random(), float(np.random.rand())


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_restoring_continues_with_the_same_weights_optimizer_schedule_and_random_draws(tmp_path):
    model, opt, sched = _setup(0)
    _step(model, opt, sched)
    _step(model, opt, sched)
    torch.manual_seed(11)
    random.seed(12)
    np.random.seed(13)
    path = ckpt.save_checkpoint(tmp_path, 2, model, opt, sched, {"epoch": 1, "next_index": 5})
    assert path == tmp_path / "checkpoints" / "step-2" == ckpt.checkpoint_dir(tmp_path, 2)
    expected_draws = _draws()
    _step(model, opt, sched)
    expected = _params(model)
    expected_lr = sched.get_last_lr()

    other, other_opt, other_sched = _setup(1)  # different weights and fresh optimizer / schedule
    with torch.no_grad():
        other[0].bias.copy_(model[0].bias)  # the frozen base is the same model's
    frozen_before = other[0].bias.detach().clone()
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    state = ckpt.load_checkpoint(path, other, other_opt, other_sched)
    assert state["step"] == 2 and state["epoch"] == 1 and state["next_index"] == 5 and state["world_size"] == 1
    assert _draws() == expected_draws
    _step(other, other_opt, other_sched)
    got = _params(other)
    for name in ("0.weight", "1.weight", "1.bias"):
        assert torch.equal(got[name], expected[name]), name
    assert torch.equal(got["0.bias"], frozen_before)  # a frozen tensor is neither saved nor restored
    assert other_sched.get_last_lr() == expected_lr


def test_a_checkpoint_folder_holds_the_trainable_tensors_and_the_state_files_only(tmp_path):
    model, opt, sched = _setup(0)
    _step(model, opt, sched)
    path = ckpt.save_checkpoint(tmp_path, 7, model, opt, sched, {"epoch": 0})
    assert sorted(p.name for p in path.iterdir()) == ["optimizer.pt", "rng.safetensors", "state.json",
                                                      "weights.safetensors"]
    weights = load_file(str(path / "weights.safetensors"))
    assert sorted(weights) == ["0.weight", "1.bias", "1.weight"]
    assert torch.equal(weights["1.weight"], model[1].weight.detach())
    assert torch.equal(load_file(str(path / "rng.safetensors"))["torch"], torch.get_rng_state())
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    assert state["step"] == 7 and state["epoch"] == 0 and state["world_size"] == 1
    assert state["python_rng"][1] == list(random.getstate()[1])
    assert state["numpy_rng"][0] == "MT19937" and len(state["numpy_rng"]) == 5
    blob = torch.load(path / "optimizer.pt", weights_only=True)
    assert blob["sharded_format"] is False
    assert blob["scheduler"] == sched.state_dict()
    assert blob["optimizer"]["state"].keys() == opt.state_dict()["state"].keys()
    # nothing is left under a temporary name
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-7"]


def test_saving_over_a_leftover_and_over_the_same_step_replaces_them(tmp_path):
    model, opt, sched = _setup(0)
    leftover = tmp_path / "checkpoints" / f".tmp-step-3-{os.getpid()}"
    leftover.mkdir(parents=True)
    (leftover / "junk").write_text("half of a killed save")
    path = ckpt.save_checkpoint(tmp_path, 3, model, opt, sched, {})
    assert not (path / "junk").exists() and not leftover.exists()
    (path / "stale").write_text("x")
    _step(model, opt, sched)
    again = ckpt.save_checkpoint(tmp_path, 3, model, opt, sched, {})
    assert again == path and not (path / "stale").exists()
    assert torch.equal(load_file(str(path / "weights.safetensors"))["1.weight"], model[1].weight.detach())


def test_keep_prunes_the_oldest_and_the_listing_is_by_step_number(tmp_path):
    model, opt, sched = _setup(0)
    assert ckpt.list_checkpoints(tmp_path) == [] and ckpt.latest_checkpoint(tmp_path) is None
    for step in (9, 10, 2):
        ckpt.save_checkpoint(tmp_path, step, model, opt, sched, {})
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-2", "step-9", "step-10"]
    # not checkpoints: a file, a folder without state.json, a folder of another name
    root = tmp_path / "checkpoints"
    (root / "step-11").mkdir()
    (root / "step-12").write_text("")
    (root / "other-13").mkdir()
    (root / "other-13" / "state.json").write_text("{}")
    assert ckpt.latest_checkpoint(tmp_path) == root / "step-10"
    ckpt.save_checkpoint(tmp_path, 14, model, opt, sched, {})
    ckpt.save_checkpoint(tmp_path, 11, model, opt, sched, {}, keep=2)  # keeps the two latest by step number
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-11", "step-14"]
    ckpt.save_checkpoint(tmp_path, 13, model, opt, sched, {}, keep=None)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-11", "step-13", "step-14"]


def test_loading_refuses_a_folder_that_is_not_a_matching_checkpoint(tmp_path):
    model, opt, sched = _setup(0)
    with pytest.raises(InputError, match=r"state\.json missing"):
        ckpt.load_checkpoint(tmp_path, model, opt, sched)
    path = ckpt.save_checkpoint(tmp_path, 1, model, opt, sched, {})

    bigger = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2), torch.nn.Linear(2, 2))
    big_opt = torch.optim.AdamW(bigger.parameters(), lr=0.1)
    with pytest.raises(InputError, match=r"lacks 3 trainable tensors \(e\.g\. 0\.bias\)"):
        ckpt.load_checkpoint(path, bigger, big_opt, torch.optim.lr_scheduler.StepLR(big_opt, 1))

    # a frozen extra tensor is not required
    bigger.requires_grad_(False)
    bigger[0].weight.requires_grad_(True)
    bigger[1].weight.requires_grad_(True)
    bigger[1].bias.requires_grad_(True)
    few = torch.optim.AdamW([p for p in bigger.parameters() if p.requires_grad], lr=0.1)
    ckpt.load_checkpoint(path, bigger, few, torch.optim.lr_scheduler.StepLR(few, 1))

    blob = torch.load(path / "optimizer.pt", weights_only=True)
    torch.save({**blob, "sharded_format": True}, path / "optimizer.pt")
    with pytest.raises(InputError, match="another distributed setting"):
        ckpt.load_checkpoint(path, model, opt, sched)
    torch.save({k: v for k, v in blob.items() if k != "sharded_format"}, path / "optimizer.pt")
    ckpt.load_checkpoint(path, model, opt, sched)  # files from before the flag read as not sharded


@dataclass
class _OneProcess:
    """The part of a Placement the checkpoint code asks for, as one process of ``world_size`` sees it."""

    rank: int = 0
    world_size: int = 1
    sharded: bool = False
    restored: dict | None = None

    def broadcast_object(self, obj):
        return obj

    def barrier(self) -> None:
        pass

    def rng_tensors(self) -> dict[str, torch.Tensor]:
        return {"torch": torch.get_rng_state()}

    def set_rng_tensors(self, states) -> None:
        self.restored = dict(states)


def test_each_rank_restores_its_own_random_state_or_the_main_one(tmp_path):
    model, opt, sched = _setup(0)
    torch.manual_seed(5)
    main_state = torch.get_rng_state()
    path = ckpt.save_checkpoint(tmp_path, 1, model, opt, sched, {}, placement=_OneProcess(world_size=3))
    assert json.loads((path / "state.json").read_text())["world_size"] == 3
    assert ckpt._rng_file(0) == "rng.safetensors" and ckpt._rng_file(2) == "rng-rank2.safetensors"

    rank2 = _OneProcess(rank=2, world_size=3)
    ckpt.load_checkpoint(path, model, opt, sched, placement=rank2)
    assert torch.equal(rank2.restored["torch"], main_state)  # no file of its own: the main process's

    torch.manual_seed(6)
    own = torch.get_rng_state()
    save_file({"torch": own}, str(path / "rng-rank2.safetensors"))
    ckpt.load_checkpoint(path, model, opt, sched, placement=rank2)
    assert torch.equal(rank2.restored["torch"], own)
    rank0 = _OneProcess(rank=0, world_size=3)
    ckpt.load_checkpoint(path, model, opt, sched, placement=rank0)
    assert torch.equal(rank0.restored["torch"], main_state)


def test_galore_projectors_are_flattened_for_saving_and_rebuilt_on_loading():
    proj = GaLoreProjector(4, update_proj_gap=50, scale=0.25)
    proj.ortho_matrix = [torch.ones(2, 2), torch.zeros(2)]
    state = {"state": {0: {"projector": proj, "exp_avg": torch.ones(2)}}, "groups": [(1, 2), [3, {"a": 4}]]}
    flat = ckpt._flatten_state(state)
    assert flat["groups"] == [(1, 2), [3, {"a": 4}]] and type(flat["groups"][0]) is tuple
    saved = flat["state"][0]["projector"]
    assert isinstance(saved, dict) and saved[ckpt._PROJECTOR_KEY] is True
    assert saved["rank"] == 4 and saved["update_proj_gap"] == 50 and saved["scale"] == 0.25
    assert ckpt._flatten_state(7) == 7

    back = ckpt._restore_state(flat)
    rebuilt = back["state"][0]["projector"]
    assert isinstance(rebuilt, GaLoreProjector)
    assert (rebuilt.rank, rebuilt.update_proj_gap, rebuilt.scale) == (4, 50, 0.25)
    assert not hasattr(rebuilt, ckpt._PROJECTOR_KEY)
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.ortho_matrix, proj.ortho_matrix, strict=True))
    assert back["groups"] == [(1, 2), [3, {"a": 4}]] and type(back["groups"][0]) is tuple
    assert torch.equal(back["state"][0]["exp_avg"], torch.ones(2))
    plain = {_k: 1 for _k in ("rank", "scale")}
    assert ckpt._restore_state(plain) == plain  # a dict without the marker stays a dict


def test_projection_matrices_follow_their_parameters_and_keep_their_container():
    p = torch.nn.Parameter(torch.ones(2, 2))
    q = torch.nn.Parameter(torch.ones(2))
    r = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p, q, r], lr=0.1)
    one, many = GaLoreProjector(2), GaLoreProjector(2)
    one.ortho_matrix = torch.zeros(2, 2, dtype=torch.float64)
    many.ortho_matrix = (torch.zeros(2), "not a tensor")
    opt.state[p]["projector"] = one
    opt.state[q]["projector"] = many
    ckpt._projectors_to_their_parameters(opt)
    assert isinstance(one.ortho_matrix, torch.Tensor) and one.ortho_matrix.device == p.device
    assert type(many.ortho_matrix) is tuple and many.ortho_matrix[1] == "not a tensor"
    assert torch.equal(many.ortho_matrix[0], torch.zeros(2))


def test_the_optimizer_inside_a_wrapper_is_the_one_read():
    _, opt, _ = _setup(0)

    class Wrapped:
        optimizer = opt

    assert ckpt._inner_optimizer(Wrapped()) is opt
    assert ckpt._inner_optimizer(opt) is opt
    assert not ckpt._sharded(None) and not ckpt._sharded(_OneProcess()) and ckpt._sharded(_OneProcess(sharded=True))


def test_projection_matrices_move_to_a_parameter_on_another_device():
    first = torch.nn.Parameter(torch.ones(3, device="meta"))  # no projector: skipped, the others still moved
    p = torch.nn.Parameter(torch.ones(2, 2, device="meta"))
    q = torch.nn.Parameter(torch.ones(2, device="meta"))
    opt = torch.optim.SGD([first, p, q], lr=0.1)
    opt.state[first]["momentum_buffer"] = torch.zeros(3, device="meta")
    one, many = GaLoreProjector(2), GaLoreProjector(2)
    one.ortho_matrix = torch.zeros(2, 2)
    many.ortho_matrix = [torch.zeros(2), "not a tensor", torch.ones(1)]
    opt.state[p]["projector"] = one
    opt.state[q]["projector"] = many
    ckpt._projectors_to_their_parameters(opt)
    assert one.ortho_matrix.device.type == "meta"
    assert type(many.ortho_matrix) is list and many.ortho_matrix[1] == "not a tensor"
    assert [t.device.type for t in many.ortho_matrix if isinstance(t, torch.Tensor)] == ["meta", "meta"]


class _Root(torch.nn.Module):
    """The module the processes wrap: it holds the causal LM as ``model``, as the training loop's loss module does."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        model, _, _ = _setup(seed)
        self.model = model


def test_the_gathered_path_names_tensors_as_the_model_does_and_restores_them(tmp_path):
    root = _Root(0)
    opt = torch.optim.AdamW([p for p in root.parameters() if p.requires_grad], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    _step(root.model, opt, sched)
    gathered = _OneProcess(sharded=True)
    path = ckpt.save_checkpoint(tmp_path, 1, root.model, opt, sched, {}, placement=gathered, root=root)
    weights = load_file(str(path / "weights.safetensors"))
    assert sorted(weights) == ["0.weight", "1.bias", "1.weight"]  # no wrapper prefix, no frozen tensor
    assert torch.equal(weights["1.weight"], root.model[1].weight.detach())
    blob = torch.load(path / "optimizer.pt", weights_only=True)
    assert blob["sharded_format"] is True and sorted(blob["optimizer"]["state"]) == [
        "model.0.weight", "model.1.bias", "model.1.weight"]
    _step(root.model, opt, sched)
    expected = _params(root.model)

    other = _Root(1)
    with torch.no_grad():
        other.model[0].bias.copy_(root.model[0].bias)
    other_opt = torch.optim.AdamW([p for p in other.parameters() if p.requires_grad], lr=0.1)
    other_sched = torch.optim.lr_scheduler.StepLR(other_opt, step_size=1, gamma=0.5)
    with pytest.raises(InputError) as err:
        ckpt.load_checkpoint(path, other.model, other_opt, other_sched)
    assert err.value.file == str(path) and err.value.reason == (
        "the checkpoint was written by a run with another distributed setting (fsdp vs not); resume it with the "
        "same --distributed")
    ckpt.load_checkpoint(path, other.model, other_opt, other_sched, placement=_OneProcess(sharded=True), root=other)
    _step(other.model, other_opt, other_sched)
    got = _params(other.model)
    for name in ("0.weight", "1.weight", "1.bias"):
        assert torch.allclose(got[name], expected[name], rtol=1e-6, atol=1e-7), name


def test_refusals_name_the_folder_and_a_single_process_reads_the_main_random_state(tmp_path):
    model, opt, sched = _setup(0)
    with pytest.raises(InputError) as err:
        ckpt.load_checkpoint(tmp_path, model, opt, sched)
    assert err.value.file == str(tmp_path) and err.value.reason == "not a checkpoint folder (state.json missing)"
    torch.manual_seed(3)
    main_state = torch.get_rng_state()
    np.random.seed(4)
    np.random.randn()  # numpy's legacy generator now holds a cached Gaussian
    path = ckpt.save_checkpoint(tmp_path, 1, model, opt, sched, {})
    expected_gauss = [np.random.randn() for _ in range(3)]
    torch.manual_seed(6)
    save_file({"torch": torch.get_rng_state()}, str(path / "rng-rank1.safetensors"))  # another process's
    np.random.seed(5)
    ckpt.load_checkpoint(path, model, opt, sched)
    assert torch.equal(torch.get_rng_state(), main_state)
    assert [np.random.randn() for _ in range(3)] == expected_gauss

    bigger = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2), torch.nn.Linear(2, 2))
    big_opt = torch.optim.AdamW(bigger.parameters(), lr=0.1)
    with pytest.raises(InputError) as err:
        ckpt.load_checkpoint(path, bigger, big_opt, torch.optim.lr_scheduler.StepLR(big_opt, 1))
    assert err.value.file == str(path)
    assert err.value.reason.endswith("was it written by a different method or model?")


def test_the_first_checkpoint_creates_the_run_folder_and_stores_the_placements_random_state(tmp_path):
    model, opt, sched = _setup(0)
    torch.manual_seed(42)
    placed = torch.get_rng_state()

    class Placed(_OneProcess):
        def rng_tensors(self) -> dict[str, torch.Tensor]:
            return {"torch": placed}

    torch.manual_seed(1)
    run_dir = tmp_path / "not" / "yet"
    path = ckpt.save_checkpoint(run_dir, 1, model, opt, sched, {}, placement=Placed())
    assert path == run_dir / "checkpoints" / "step-1"
    assert torch.equal(load_file(str(path / "rng.safetensors"))["torch"], placed)

"""Checkpoints that let a killed run continue at the next item with the same numbers.

``RUN_DIR/checkpoints/step-N/`` holds the trainable weights (``weights.safetensors``, by parameter name),
the optimizer and scheduler state (``optimizer.pt``, read back with ``torch.load(weights_only=True)``:
tensors and plain containers only — GaLore's projector objects are flattened to dicts first), the RNG
states (``rng.safetensors``: torch's CPU generator and, on a GPU, the CUDA generator; one
``rng-rank{R}.safetensors`` per further process, since each rank draws its own dropout masks; Python's and
numpy's in ``state.json``) and the position in the order (``state.json``: the last finished step). The folder is
written under a temporary name and renamed into place, so a kill during saving leaves either the previous
checkpoint or the new one, never half of one.

Every process of a multi-process run takes part: a sharded (FSDP) model's weights and optimizer states are
gathered into full, unsharded tensors (``torch.distributed.checkpoint.state_dict``), so a checkpoint reads the
same whatever the number of processes that wrote it, and restoring puts every tensor back on its own device
(optimizer states follow their parameters; GaLore's projection matrices are moved explicitly).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from medtune.errors import InputError

if TYPE_CHECKING:
    from medtune.training.placement import Placement

_PROJECTOR_KEY = "__galore_projector__"


def _flatten_state(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _flatten_state(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_flatten_state(v) for v in obj)
    if type(obj).__name__ == "GaLoreProjector":
        return {_PROJECTOR_KEY: True, **{k: v for k, v in vars(obj).items()}}
    return obj


def _restore_state(obj: Any) -> Any:
    if isinstance(obj, dict):
        if obj.get(_PROJECTOR_KEY):
            from galore_torch.galore_projector import GaLoreProjector

            proj = GaLoreProjector(obj["rank"])
            for k, v in obj.items():
                if k != _PROJECTOR_KEY:
                    setattr(proj, k, v)
            return proj
        return {k: _restore_state(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_restore_state(v) for v in obj)
    return obj


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu").contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step}"


_WRAPPER_PREFIX = "model."  # the loss module that DDP / FSDP wrap holds the causal LM as ``model``


def _sharded(placement: Placement | None) -> bool:
    return placement is not None and placement.sharded


def full_model_state(root: torch.nn.Module, placement: Placement) -> dict[str, torch.Tensor]:
    """Every tensor of a sharded model gathered in full on CPU, named as in the causal LM (collective: every rank
    calls it; only the main process gets the tensors)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(root, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k.removeprefix(_WRAPPER_PREFIX): v for k, v in state.items()}


def _inner_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds the torch optimizer


def trainable_weights(model: torch.nn.Module, *, placement: Placement | None = None,
                      root: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """The trainable tensors of ``model`` on CPU by name, gathered in full from a sharded model (collective then:
    every rank calls it)."""
    return _weights_to_save(model, placement, root)


def save_weights(weights: dict[str, torch.Tensor], path: str | Path) -> None:
    """Write tensors by name as safetensors, durable before the caller renames the file into place."""
    save_file(weights, str(path))
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def load_trainable(path: str | Path, model: torch.nn.Module, *, placement: Placement | None = None,
                   root: torch.nn.Module | None = None) -> None:
    """Put the trainable tensors saved in ``path`` back into ``model`` (every rank calls it when sharded)."""
    path = Path(path)
    weights = load_file(str(path))
    _check_trainable(weights, model, path)
    _put_weights(weights, model, placement, root)


def _check_trainable(weights: dict[str, torch.Tensor], model: torch.nn.Module, path: Path) -> None:
    missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in weights]
    if missing:
        raise InputError(f"checkpoint lacks {len(missing)} trainable tensors (e.g. {missing[0]}); "
                         "was it written by a different method or model?", file=path)


def _put_weights(weights: dict[str, torch.Tensor], model: torch.nn.Module, placement: Placement | None,
                 root: torch.nn.Module | None) -> None:
    if _sharded(placement):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        assert root is not None
        set_model_state_dict(root, {_WRAPPER_PREFIX + k: v for k, v in weights.items()},
                             options=StateDictOptions(full_state_dict=True, strict=False))
        return
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor.to(params[name].dtype))


def checkpoint_position(path: str | Path) -> dict[str, Any]:
    """The ``state.json`` of a checkpoint folder (the step, the position in the order, what else the run kept)."""
    return json.loads((Path(path) / "state.json").read_text(encoding="utf-8"))


def _weights_to_save(model: torch.nn.Module, placement: Placement | None, root: torch.nn.Module | None):
    if not _sharded(placement):
        return trainable_state(model)
    assert placement is not None and root is not None
    full = full_model_state(root, placement)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in full.items() if k in names}


def _optimizer_to_save(optimizer: Any, placement: Placement | None, root: torch.nn.Module | None) -> Any:
    if not _sharded(placement):
        return _flatten_state(optimizer.state_dict())
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(root, _inner_optimizer(optimizer),
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _rng_file(rank: int) -> str:
    return "rng.safetensors" if rank == 0 else f"rng-rank{rank}.safetensors"


def save_checkpoint(run_dir: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, position: dict[str, Any], keep: int | None = None, *,
                    placement: Placement | None = None, root: torch.nn.Module | None = None) -> Path:
    """Write the checkpoint of ``step`` (every process of the run calls this; the main one writes the folder).

    ``model`` is the causal LM being trained; ``root`` the module the processes wrap (needed when sharded).
    """
    rank = placement.rank if placement is not None else 0
    main = rank == 0
    weights = _weights_to_save(model, placement, root)  # collective when sharded
    optim_state = _optimizer_to_save(optimizer, placement, root)
    ckpt_root = Path(run_dir) / "checkpoints"
    final = checkpoint_dir(Path(run_dir), step)
    owner = placement.broadcast_object(os.getpid()) if placement is not None else os.getpid()
    tmp = ckpt_root / f".tmp-step-{step}-{owner}"
    if main:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    if placement is not None:
        placement.barrier()
    rng = placement.rng_tensors() if placement is not None else {"torch": torch.get_rng_state()}
    save_file(rng, str(tmp / _rng_file(rank)))
    if placement is not None:
        placement.barrier()
    if main:
        save_file(weights, str(tmp / "weights.safetensors"))
        torch.save({"optimizer": optim_state, "scheduler": scheduler.state_dict(),
                    "sharded_format": _sharded(placement)}, tmp / "optimizer.pt")
        py_state = random.getstate()
        np_state = np.random.get_state()
        state = {
            "step": step,
            **position,
            "world_size": placement.world_size if placement is not None else 1,
            "python_rng": [py_state[0], list(py_state[1]), py_state[2]],
            "numpy_rng": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]),
                          float(np_state[4])],
        }
        (tmp / "state.json").write_text(json.dumps(state) + "\n", encoding="utf-8")
        for f in tmp.iterdir():  # make the bytes durable before the rename publishes the folder
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if keep:
            for old in list_checkpoints(run_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    if placement is not None:
        placement.barrier()
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.exists():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / "state.json").exists()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, *, placement: Placement | None = None,
                    root: torch.nn.Module | None = None) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG from ``path`` on every tensor's own device; returns its
    ``state.json``. Every process of the run calls this (each reads the files itself)."""
    path = Path(path)
    if not (path / "state.json").exists():
        raise InputError("not a checkpoint folder (state.json missing)", file=path)
    weights = load_file(str(path / "weights.safetensors"))
    _check_trainable(weights, model, path)
    blob = torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu")
    if bool(blob.get("sharded_format", False)) != _sharded(placement):
        raise InputError("the checkpoint was written by a run with another distributed setting (fsdp vs not); "
                         "resume it with the same --distributed", file=path)
    _put_weights(weights, model, placement, root)
    if _sharded(placement):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(root, _inner_optimizer(optimizer), blob["optimizer"],
                                 options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(_restore_state(blob["optimizer"]))  # states follow their parameters' devices
        _projectors_to_their_parameters(_inner_optimizer(optimizer))
    scheduler.load_state_dict(blob["scheduler"])
    state = checkpoint_position(path)
    rank = placement.rank if placement is not None else 0
    rng_path = path / _rng_file(rank)
    rng = load_file(str(rng_path if rng_path.exists() else path / _rng_file(0)))
    if placement is not None:
        placement.set_rng_tensors(rng)
    else:
        torch.set_rng_state(rng["torch"])
    py = state["python_rng"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy_rng"]
    np.random.set_state((npst[0], np.array(npst[1], dtype=np.uint32), npst[2], npst[3], npst[4]))
    return state


def _projectors_to_their_parameters(optimizer: torch.optim.Optimizer) -> None:
    """GaLore's projection matrices are attributes of an object in the optimizer state, which
    ``Optimizer.load_state_dict`` does not move: put them on their parameter's device."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            projector = optimizer.state.get(p, {}).get("projector")
            if projector is None:
                continue
            ortho = getattr(projector, "ortho_matrix", None)
            if isinstance(ortho, torch.Tensor):
                projector.ortho_matrix = ortho.to(p.device)
            elif isinstance(ortho, list | tuple):
                projector.ortho_matrix = type(ortho)(t.to(p.device) if isinstance(t, torch.Tensor) else t
                                                     for t in ortho)

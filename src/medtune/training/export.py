"""Use and ship a trained run: load it for scoring or generation, merge an adapter, push to the hub.

A run folder holds ``adapter/`` (LoRA, DoRA, QLoRA) with the base in ``base/`` (tiny and in-memory
models) or named in ``config.json`` (``base_model``), or a full ``model/`` (full, GaLore). Merging loads
the base in full precision (also for QLoRA, whose training base was 4-bit), applies the adapter and folds
it into the weights, so the result is an ordinary safetensors model any tool can load.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from medtune.errors import InputError, MedtuneError


def _run_meta(run_dir: Path) -> dict[str, Any]:
    cfg = run_dir / "config.json"
    if not cfg.exists():
        raise InputError("config.json not found: not a training run folder", file=run_dir)
    return json.loads(cfg.read_text(encoding="utf-8"))


def _base_path(run_dir: Path, meta: dict[str, Any]) -> Path:
    local = run_dir / "base"
    if (local / "config.json").exists():
        return local
    src = meta.get("base_model")
    if src and Path(src).exists():
        return Path(src)
    if src and str(src) not in ("memory",):
        from medtune.training.trainer import _resolve_path

        return _resolve_path(str(src))
    raise InputError("cannot find the base model of this run (no base/ folder and no base_model path)", file=run_dir)


def load_trained(run_dir: str | Path, *, merge: bool = False, dtype: str = "fp32"):
    """A :class:`medtune.models.LoadedModel` for a run folder (adapter applied, or the full model)."""
    from medtune.models import load_pretrained

    run_dir = Path(run_dir)
    if (run_dir / "model" / "config.json").exists():
        return load_pretrained(run_dir / "model", dtype=dtype, device="cpu")
    if not (run_dir / "adapter").exists():
        if (run_dir / "train_log.jsonl").exists():
            raise InputError("the run has neither adapter/ nor model/ (did training finish?)", file=run_dir)
        return load_pretrained(run_dir, dtype=dtype, device="cpu")  # an ordinary model folder
    meta = _run_meta(run_dir)
    loaded = load_pretrained(_base_path(run_dir, meta), dtype=dtype, device="cpu", adapter=run_dir / "adapter")
    if merge:
        loaded.model = loaded.model.merge_and_unload()
    loaded.spec = str(run_dir)
    return loaded


def merge_adapter(run_dir: str | Path, output: str | Path) -> Path:
    """Fold the run's adapter into its base and save a full safetensors model (+ tokenizer), atomically."""
    loaded = load_trained(run_dir, merge=True)
    return _save_atomic(loaded.model, loaded.tokenizer, Path(output))


def _save_atomic(model: Any, tokenizer: Any, output: Path) -> Path:
    from medtune.training.trainer import save_pretrained_atomic

    return save_pretrained_atomic(model, tokenizer, output)


def export_run(run_dir: str | Path, output: str | Path | None, *, merge: bool = True,
               push_to_hub: str | None = None) -> Path | None:
    run_dir = Path(run_dir)
    _run_meta(run_dir)
    out: Path | None = None
    if output is not None:
        output = Path(output)
        if merge or (run_dir / "model").exists():
            out = merge_adapter(run_dir, output) if (run_dir / "adapter").exists() else \
                _save_atomic(*_full(run_dir), output)
        else:
            if output.exists():
                shutil.rmtree(output)
            shutil.copytree(run_dir / "adapter", output)
            out = output
    if push_to_hub:
        push(run_dir if output is None else out, push_to_hub)
    return out


def _full(run_dir: Path) -> tuple[Any, Any]:
    loaded = load_trained(run_dir)
    return loaded.model, loaded.tokenizer


def push(folder: str | Path, repo_id: str) -> None:
    """Upload a folder (adapter or merged model) to the hub; a clear error when offline."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise MedtuneError(f"cannot push to '{repo_id}': the hub is offline (HF_HUB_OFFLINE=1); "
                           f"the exported files are in {folder}")
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id)
    except Exception as exc:  # network, auth: the user needs the reason, not a stack
        raise MedtuneError(f"pushing to '{repo_id}' failed: {exc}") from None

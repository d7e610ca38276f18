"""Use and ship a trained run: load it for scoring or generation, merge an adapter, push to the hub.

What a run folder holds is decided by the method it was trained with (``config.json``: ``train.method``, looked
up in :mod:`medtune.training.methods`): an adapter method keeps ``adapter/`` with the base in ``base/`` (tiny
and in-memory models) or named in ``config.json`` (``base_model``); any other keeps a full ``model/``. Merging
loads the base in full precision (also for a method whose training base was quantised, like QLoRA), applies the
adapter and folds it in (the spec's :meth:`~medtune.training.methods.MethodSpec.merge`), so the result is an
ordinary safetensors model any tool can load.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from medtune.errors import ConfigError, InputError, MedtuneError
from medtune.io import atomic_folder, check_folder_output
from medtune.run_record import read_config_json, read_run_record
from medtune.training.config import TrainSettings
from medtune.training.methods import MethodSpec, get_method, save_pretrained_atomic


def _run_meta(run_dir: Path) -> dict[str, Any]:
    return read_run_record(run_dir)


def run_method(run_dir: str | Path) -> MethodSpec | None:
    """The method a run folder was trained with; ``None`` for an ordinary model folder (no training record)."""
    run_dir = Path(run_dir)
    cfg = run_dir / "config.json"
    record = read_config_json(run_dir)
    if record is None:
        return None
    train = record.get("train")
    if not isinstance(train, dict) or "method" not in train:
        return None  # a model's own config.json
    try:  # read as the config reads it, so records of earlier versions keep working
        return get_method(TrainSettings.from_run_record(train).method)
    except ConfigError as exc:
        raise InputError(f"the run's training settings cannot be used here: {exc}", file=cfg) from None


def _base_path(run_dir: Path, meta: dict[str, Any]) -> Path | str:
    from medtune.models import local_model_path

    local = run_dir / "base"
    if (local / "config.json").exists():
        return local
    src = meta.get("base_model")
    if src and Path(src).exists():
        return Path(src)
    if src and str(src) not in ("memory",):
        return local_model_path(str(src))
    raise InputError("cannot find the base model of this run (no base/ folder and no base_model path)", file=run_dir)


def load_trained(run_dir: str | Path, *, merge: bool = False, dtype: str = "fp32", as_trained: bool = False,
                 device: str = "auto"):
    """A :class:`medtune.models.LoadedModel` for a run folder (adapter applied, or the full model), on ``device``
    (``auto``: the GPU when there is one, so scoring a run there does not run on the CPU).

    The base of an adapter is loaded in full precision unless ``as_trained``, which loads it as the method
    trained it (its ``base_quantization``, e.g. 4-bit for QLoRA). A folder that is not a training run is
    loaded as an ordinary model.
    """
    from medtune.models import load_pretrained

    run_dir = Path(run_dir)
    spec = run_method(run_dir)
    if spec is None:
        if (run_dir / "train_log.jsonl").exists():
            raise InputError("the run has no config.json with its training settings (did training start?)",
                             file=run_dir)
        return load_pretrained(run_dir, dtype=dtype, device=device)  # an ordinary model folder
    weights = run_dir / spec.output_name
    if not (weights.exists() and any(weights.iterdir())):
        raise InputError(f"the run has no {spec.output_name}/ (did training finish?)", file=run_dir)
    if not spec.is_adapter:
        loaded = load_pretrained(weights, dtype=dtype, device=device)
        if merge:
            loaded.model = spec.merge(loaded.model)
        return loaded
    if merge and as_trained and spec.base_quantization:
        raise ConfigError(f"merging needs the full-precision base, not the {spec.base_quantization} one "
                          "the run trained on (drop as_trained)")
    quantization = spec.base_quantization if as_trained else None
    loaded = load_pretrained(_base_path(run_dir, _run_meta(run_dir)), dtype=dtype, device=device, adapter=weights,
                             quantization=quantization)
    if merge:
        loaded.model = spec.merge(loaded.model)
    loaded.spec = str(run_dir)
    return loaded


def merge_adapter(run_dir: str | Path, output: str | Path) -> Path:
    """Fold the run's adapter into its base and save a full safetensors model (+ tokenizer), atomically."""
    loaded = load_trained(run_dir, merge=True, device="cpu")  # an fp32 merge of a 13B model fits no GPU
    return save_pretrained_atomic(loaded.model, loaded.tokenizer, Path(output))


def export_run(run_dir: str | Path, output: str | Path | None, *, merge: bool = True,
               push_to_hub: str | None = None) -> Path | None:
    """Write the run's weights to ``output``: merged into a full model, or (``merge=False``) the adapter alone.

    A method that keeps a full model exports that model either way. ``output`` is swapped in whole
    (:func:`medtune.io.atomic_folder`): a failed or killed export leaves an earlier export there as it was.
    """
    run_dir = Path(run_dir)
    _run_meta(run_dir)
    spec = run_method(run_dir)
    if spec is None:
        raise InputError("config.json holds no training settings: not a training run folder", file=run_dir)
    weights = run_dir / spec.output_name
    if not (weights.is_dir() and any(weights.iterdir())):  # before ``output`` is touched: an earlier export stays
        raise InputError(f"the run has no {spec.output_name}/ (did training finish?)", file=run_dir)
    out: Path | None = None
    if output is not None:
        output = check_folder_output(output, "-o")
        if output.resolve() == run_dir.resolve() or output.resolve() in run_dir.resolve().parents:
            raise InputError(f"-o {output}: is the run folder or holds it; the export replaces its folder whole, "
                             "give a folder of its own")
        if merge or not spec.is_adapter:
            out = merge_adapter(run_dir, output)
        else:
            with atomic_folder(output, "-o") as tmp:
                shutil.copytree(weights, tmp, dirs_exist_ok=True)
            out = output
    if push_to_hub:
        push(run_dir if output is None else out, push_to_hub)
    return out


def push(folder: str | Path, repo_id: str) -> None:
    """Upload a folder (adapter or merged model) to the hub; a clear error when the user's environment turns the hub
    off (medtune never sets ``HF_HUB_OFFLINE`` itself, so only the user's setting refuses a push)."""
    from medtune.models import hub_offline

    if hub_offline():
        raise MedtuneError(f"cannot push to '{repo_id}': the hub is offline (HF_HUB_OFFLINE=1); "
                           f"the exported files are in {folder}")
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id)
    except Exception as exc:  # network, auth: the user needs the reason, not a stack
        raise MedtuneError(f"pushing to '{repo_id}' failed: {exc}") from None

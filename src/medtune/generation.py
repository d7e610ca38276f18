"""Streaming generation: a model's answer to one question, token by token, as a user expects to see it.

The model is a training run folder (its adapter applied to its base, or its full model), a model folder,
``smollm2`` or a ``.gguf`` file (:func:`medtune.models.resolve_model`). The question is rendered with the same
prompt templates training and scoring use (:mod:`medtune.prompts`): as a multiple-choice prompt when options are
given, otherwise as the free-text QA prompt.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from medtune.errors import InputError


def load_for_generation(spec: str) -> Any:
    """A :class:`medtune.models.LoadedModel` for a run folder or any model spec."""
    path = Path(spec)
    if path.is_dir() and (path / "train_log.jsonl").exists():
        from medtune.training.export import load_trained

        return load_trained(path, dtype="auto")  # fp32 on a CPU, bf16 on a GPU with bf16
    from medtune.models import resolve_model

    return resolve_model(spec)


def build_prompt(question: str, options: list[str] | None, template: str, tokenizer: Any, chat: bool) -> str:
    from medtune.prompts import mcq_prompt, qa_prompt
    from medtune.schema import MCQItem, QAItem

    if options:
        if len(options) < 2:
            raise InputError("give at least two --option values (or none for a free-text question)")
        text = mcq_prompt(MCQItem(id="q", question=question, options=options, answer=0, source="cli", split="cli"),
                          template)
    else:
        text = qa_prompt(QAItem(id="q", question=question, answer="-", source="cli", split="cli"))
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise InputError("--chat: this model's tokenizer has no chat template")
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    return text


def stream_answer(loaded: Any, prompt: str, *, max_new_tokens: int = 128, temperature: float = 0.0,
                  out: Any = None) -> str:
    """Generate from ``prompt``, writing each piece to ``out`` (stdout) as it arrives; returns the text."""
    import torch
    from transformers import TextIteratorStreamer

    out = out or sys.stdout
    tok, model = loaded.tokenizer, loaded.model
    inputs = tok(prompt, return_tensors="pt")
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    kwargs = {**inputs, "max_new_tokens": max_new_tokens, "streamer": streamer,
              "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
              "do_sample": temperature > 0}
    if temperature > 0:
        kwargs["temperature"] = temperature
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with torch.no_grad():
                model.generate(**kwargs)
        except BaseException as exc:  # surfaced in the caller's thread
            errors.append(exc)
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    pieces = []
    for piece in streamer:
        pieces.append(piece)
        out.write(piece)
        out.flush()
    thread.join()
    out.write("\n")
    if errors:
        raise errors[0]
    return "".join(pieces)

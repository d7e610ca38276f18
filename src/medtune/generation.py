"""Streaming generation: a model's answer to one question, token by token, as a user expects to see it.

The model is a training run folder (its adapter applied to its base, or its full model), a model folder,
``smollm2`` or a ``.gguf`` file (:func:`medtune.models.resolve_model`). The question is rendered with the same
prompt templates training and scoring use (:mod:`medtune.prompts`): as a multiple-choice prompt when options are
given, otherwise as the free-text QA prompt. Under chat the prompt's ids are those of
:func:`medtune.chat_format.prompt_token_ids`, the ones training and scoring use; a run folder is asked as it
was trained (its recorded chat format) unless told otherwise.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medtune.errors import InputError

if TYPE_CHECKING:
    from medtune.chat_format import ChatFormat


def load_for_generation(spec: str) -> Any:
    """A :class:`medtune.models.LoadedModel` for a run folder or any model spec."""
    path = Path(spec)
    if path.is_dir() and (path / "train_log.jsonl").exists():
        from medtune.training.export import load_trained

        return load_trained(path, dtype="auto")  # fp32 on a CPU, bf16 on a GPU with bf16
    from medtune.models import resolve_model

    return resolve_model(spec)


def resolve_generation_chat(spec: str, tokenizer: Any, chat: bool | None, system_prompt: str | None = None
                            ) -> ChatFormat | None:
    """The chat format ``generate`` asks in: ``chat`` when given; otherwise a run folder's recorded one, and for a
    model the ``auto`` rule of :mod:`medtune.chat_format`. ``system_prompt`` (when given) replaces the run's."""
    from medtune.chat_format import chat_format, known_model_names, resolve_chat
    from medtune.run_record import read_config_json

    path = Path(spec)
    recorded = (read_config_json(path) or {}).get("chat") if (path / "train_log.jsonl").exists() else None
    if chat is None and isinstance(recorded, dict):
        enabled = bool(recorded.get("enabled"))
        if enabled:
            resolve_chat(True, tokenizer, [spec], where="--chat")
        return chat_format(enabled, system_prompt if system_prompt is not None else recorded.get("system_prompt"))
    choice = "auto" if chat is None else chat
    enabled = resolve_chat(choice, tokenizer, known_model_names(tokenizer, spec), where="--chat")
    return chat_format(enabled, system_prompt)


def build_prompt(question: str, options: list[str] | None, template: str, tokenizer: Any,
                 chat: bool | ChatFormat | None) -> str:
    """The question's prompt: a :class:`~medtune.chat_format.ChatPrompt` under ``chat`` (``True``: no system prompt)."""
    from medtune.chat_format import ChatFormat, as_prompt
    from medtune.prompts import mcq_prompt, qa_prompt
    from medtune.schema import MCQItem, QAItem

    if options:
        if len(options) < 2:
            raise InputError("give at least two --option values (or none for a free-text question)")
        text = mcq_prompt(MCQItem(id="q", question=question, options=options, answer=0, source="cli", split="cli"),
                          template)
    else:
        text = qa_prompt(QAItem(id="q", question=question, answer="-", source="cli", split="cli"))
    if chat is None or chat is False:
        return text
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("--chat: this model's tokenizer has no chat template")
    return as_prompt(text, chat if isinstance(chat, ChatFormat) else ChatFormat())


def stream_answer(loaded: Any, prompt: str, *, max_new_tokens: int = 128, temperature: float = 0.0,
                  out: Any = None) -> str:
    """Generate from ``prompt``, writing each piece to ``out`` (stdout) as it arrives; returns the text."""
    import torch
    from transformers import TextIteratorStreamer

    from medtune.chat_format import prompt_token_ids

    out = out or sys.stdout
    tok, model = loaded.tokenizer, loaded.model
    # A chat prompt as its template's ids (special tokens from the template only), else with the tokenizer's own.
    ids = torch.tensor([prompt_token_ids(tok, prompt)], device=next(model.parameters()).device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
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

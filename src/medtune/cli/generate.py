"""``medtune generate MODEL "question"``: stream a model's answer token by token (:mod:`medtune.generation`).

MODEL is a training run folder, a model folder, ``smollm2`` or a ``.gguf`` file. With ``--option`` (repeatable) the
question is rendered as a multiple-choice prompt with the same template training and scoring use; otherwise with
the free-text QA prompt. ``--chat`` wraps the prompt in the tokenizer's chat template (instruction-tuned models)
exactly as training and scoring do; without ``--chat``/``--no-chat`` a run folder is asked as it was trained and a
model by ``chat: auto``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from medtune.cli.options import COUNT, bounded
from medtune.generation import build_prompt, load_for_generation, resolve_generation_chat, stream_answer


def generate_command(
    model: Annotated[str, typer.Argument(help="run folder, model folder, smollm2 or .gguf")],
    question: Annotated[str, typer.Argument(help="the question")],
    option: Annotated[list[str] | None, typer.Option("--option", help="an answer option (repeatable)")] = None,
    template: Annotated[str, typer.Option(help="MCQ prompt template (as in training/scoring)")] = "paper",
    max_new_tokens: Annotated[int, typer.Option(help="generation budget", callback=bounded(**COUNT))] = 128,
    temperature: Annotated[float, typer.Option(help="0 = greedy", callback=bounded(ge=0))] = 0.0,
    chat: Annotated[bool | None, typer.Option(
        "--chat/--no-chat", help="wrap in the chat template (default: a run as it was trained, a model when it is an "
        "instruct/chat model with a template)", show_default=False)] = None,
    system_prompt: Annotated[str | None, typer.Option(help="system message of the chat template")] = None,
) -> None:
    """Stream MODEL's answer to QUESTION token by token."""
    loaded = load_for_generation(model)
    fmt = resolve_generation_chat(model, loaded.tokenizer, chat, system_prompt)
    prompt = build_prompt(question, list(option or []), template, loaded.tokenizer, fmt)
    stream_answer(loaded, prompt, max_new_tokens=max_new_tokens, temperature=temperature)


def register_generate_commands(app: typer.Typer) -> None:
    """Add ``generate`` to the main app."""
    app.command("generate")(generate_command)

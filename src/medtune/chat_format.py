"""Chat templates: the one way a (prompt, completion) pair becomes token ids under a model's chat template.

An instruction-tuned model answers best in the conversation format it was tuned on, and a fine-tune must be scored
on exactly the tokens it was trained on. Training (:mod:`medtune.training.data`), scoring
(:mod:`medtune.scoring.tokens`, so every backend with a local tokenizer) and ``medtune generate`` therefore all call
:func:`encode_turn` / :func:`prompt_token_ids`, and a run records what it used (:func:`chat_record`), which
the evaluation of the run reuses.

With chat, the conversation is ``[system (if set), user: prompt]`` and the assistant's turn is the completion:

- the prompt's ids are ``apply_chat_template(messages, add_generation_prompt=True, tokenize=True)``: the special
  tokens (BOS included) come from the template alone and are never added again, so a template that writes
  ``<|begin_of_text|>`` or ``{{ bos_token }}`` gives exactly one BOS;
- the assistant's content is the completion without its surrounding whitespace (``" B"`` → ``"B"``): a chat
  model's answer starts its own turn, where no space separates it from a word before it. Letter scoring under
  chat therefore scores the letter as the first token of the assistant's content, which is what training labels;
- the completion's ids are the tail of the whole conversation's ids after the prompt's ids: the content's tokens
  (:attr:`TurnIds.answer`, what scoring measures) followed by the template's end-of-turn tokens
  (:attr:`TurnIds.end`, e.g. ``<|eot_id|>`` or ``<|im_end|>\\n``; training labels them too, so the model learns to
  stop). A template whose rendering with the assistant's turn does not start with its generation prompt, or that
  does not write the content as given, cannot be split that way: that is a :class:`ConfigError` naming the model.

Without chat the rule is :func:`medtune.tokenization.split_prompt_completion`, unchanged.

``chat: auto`` (training and evaluation) is chat exactly when the tokenizer has a chat template *and* one of the
model's names (the spec given, the tokenizer's and the model config's ``name_or_path``) says it is an
instruction-tuned checkpoint: its last path part contains ``instruct`` or ``chat``, or ``it`` as a word of its own
(``gemma-7b-it``). A base model, the tiny model and any model without a template resolve to no chat. A remote
endpoint has no local template: there ``auto`` is no chat, and ``chat: true`` means the server's chat API.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator

from medtune.errors import ConfigError
from medtune.tokenization import encode, split_prompt_completion

CHAT_CHOICES = ("auto", "true", "false")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _chat_choice(value: Any) -> Any:
    """``auto``, ``True`` or ``False`` from a settings value (also written as text on the command line)."""
    if isinstance(value, bool) or value == "auto":
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(f"auto, true or false, not {value!r}")


# The type of a ``chat`` setting (training and evaluation): auto, true or false (see the module docstring).
ChatChoice = Annotated[bool | Literal["auto"], BeforeValidator(_chat_choice)]
CHAT_DESCRIPTION = ("wrap prompts in the tokenizer's chat template (auto | true | false); auto: only for an "
                    "instruct/chat model that has one")
SYSTEM_PROMPT_DESCRIPTION = "system message of the chat template (with chat only)"

# ``instruct`` or ``chat`` anywhere in a model's name, or ``it`` as a word of its own (gemma-7b-it, *-it-v1).
_INSTRUCT_NAME = re.compile(r"instruct|chat|(?:^|[-_.])it(?:$|[-_.])", re.IGNORECASE)


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None)) if tokenizer is not None else False


def is_instruct_name(name: str | None) -> bool:
    """Whether a model name or path names an instruction-tuned checkpoint (its last path part, by the rule above)."""
    if not name:
        return False
    last = str(name).rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]
    return bool(_INSTRUCT_NAME.search(last))


def known_model_names(tokenizer: Any, *specs: Any, model: Any = None) -> list[str]:
    """The names a model is known by: the specs given, the tokenizer's and the model config's ``name_or_path``."""
    names = [str(s) for s in specs if s]
    names.append(str(getattr(tokenizer, "name_or_path", "") or ""))
    config = getattr(model, "config", None)
    names.append(str(getattr(config, "name_or_path", "") or getattr(config, "_name_or_path", "") or ""))
    return [n for n in names if n]


def resolve_chat(choice: bool | str, tokenizer: Any, names: Iterable[str], *, where: str = "chat") -> bool:
    """Whether prompts are wrapped in the chat template for ``choice`` (auto, True, False) and this model.

    ``True`` with a tokenizer that has no chat template is a :class:`ConfigError` (naming ``where``); ``auto`` is
    the rule of the module docstring.
    """
    choice = _chat_choice(choice)
    if choice == "auto":
        return has_chat_template(tokenizer) and any(is_instruct_name(n) for n in names)
    if choice and tokenizer is not None and not has_chat_template(tokenizer):
        shown = next(iter(names), "the model")
        raise ConfigError(f"{where}: true, but the tokenizer of {shown} has no chat template (set {where}: false)")
    return bool(choice)


@dataclass(frozen=True)
class ChatFormat:
    """Prompts in the chat template, with an optional system message (``None`` everywhere means: no chat)."""

    system_prompt: str | None = None

    def messages(self, prompt: str, answer: str | None = None) -> list[dict[str, str]]:
        out = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        out.append({"role": "user", "content": prompt})
        if answer is not None:
            out.append({"role": "assistant", "content": answer})
        return out


def chat_format(enabled: bool, system_prompt: str | None = None) -> ChatFormat | None:
    return ChatFormat(system_prompt or None) if enabled else None


class ChatPrompt(str):
    """A prompt to be wrapped in the chat template: its text is the user's message, ``chat`` the format.

    Scoring backends receive prompts as text (:class:`medtune.scoring.backends.ScoringBackend`); a backend with a
    local tokenizer encodes a ``ChatPrompt`` with :func:`prompt_token_ids` / :func:`encode_turn`, the endpoint
    backend sends its messages to the server's chat API.
    """

    chat: ChatFormat

    def __new__(cls, text: str, chat: ChatFormat) -> ChatPrompt:
        self = super().__new__(cls, text)
        self.chat = chat
        return self

    def messages(self, answer: str | None = None) -> list[dict[str, str]]:
        return self.chat.messages(str(self), answer)

    def __reduce__(self) -> Any:  # pickles (process pools) as itself, not as plain text
        return (ChatPrompt, (str(self), self.chat))


def as_prompt(text: str, chat: ChatFormat | None) -> str:
    """``text`` as a :class:`ChatPrompt` under ``chat``, or unchanged without chat."""
    return text if chat is None else ChatPrompt(text, chat)


def chat_of(prompt: str) -> ChatFormat | None:
    return prompt.chat if isinstance(prompt, ChatPrompt) else None


# ----------------------------------------------------------------------------------------------------------
# Token ids


@dataclass(frozen=True)
class TurnIds:
    """A (prompt, completion) pair's ids: the prompt, the answer's own tokens, the template's end-of-turn tokens.

    Training labels ``answer + end``; scoring measures ``answer`` after ``prompt``. Without chat ``end`` is empty.
    """

    prompt: list[int]
    answer: list[int]
    end: list[int]

    @property
    def completion(self) -> list[int]:
        return self.answer + self.end


def _render(tokenizer: Any, messages: list[dict[str, str]], *, generation_prompt: bool, tokenize: bool) -> Any:
    try:
        out = tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=tokenize,
                                            return_dict=False)
    except Exception as exc:  # a template error (jinja), or a tokenizer without one
        raise ConfigError(f"chat: the chat template of {_name(tokenizer)} cannot render a "
                          f"{'prompt' if generation_prompt else 'conversation'}: {exc}") from None
    return out if not tokenize else [int(t) for t in out]


def _name(tokenizer: Any) -> str:
    return str(getattr(tokenizer, "name_or_path", "") or "the model")


def _check_template(tokenizer: Any) -> None:
    if not has_chat_template(tokenizer):
        raise ConfigError(f"chat: the tokenizer of {_name(tokenizer)} has no chat template (set chat: false)")


def prompt_token_ids(tokenizer: Any, prompt: str, chat: ChatFormat | None = None) -> list[int]:
    """The ids a model reads before answering: the chat template's generation prompt, or the prompt with the
    tokenizer's special tokens (``chat`` defaults to the prompt's own, for a :class:`ChatPrompt`)."""
    chat = chat if chat is not None else chat_of(prompt)
    if chat is None:
        return encode(tokenizer, prompt)
    _check_template(tokenizer)
    return _render(tokenizer, chat.messages(str(prompt)), generation_prompt=True, tokenize=True)


def template_head_length(tokenizer: Any, prompt_ids: Sequence[int], prompt: str, chat: ChatFormat) -> int:
    """How many of ``prompt_ids`` (``prompt`` in ``chat``) come before the user's text: BOS, the system turn and the
    user turn's header, which every prompt of this tokenizer and chat format shares.

    Found as the ids ``prompt_ids`` share with the same conversation around another user text, so no template needs
    parsing. Training cuts an over-long prompt just after them (the question's start) rather than at the very
    start, which would cut BOS and the system turn away.
    """
    other = "." if not str(prompt).startswith(".") else ","
    probe = _render(tokenizer, chat.messages(other), generation_prompt=True, tokenize=True)
    n = 0
    for a, b in zip(prompt_ids, probe, strict=False):
        if a != b:
            break
        n += 1
    return n


def encode_turn(tokenizer: Any, prompt: str, completion: str, chat: ChatFormat | None = None) -> TurnIds:
    """The ids of ``prompt`` and its ``completion`` for this tokenizer, with or without chat (module docstring).

    ``chat`` defaults to the prompt's own (a :class:`ChatPrompt`); without chat this is exactly
    :func:`medtune.tokenization.split_prompt_completion`.
    """
    chat = chat if chat is not None else chat_of(prompt)
    if chat is None:
        p_ids, c_ids = split_prompt_completion(tokenizer, prompt, completion)
        return TurnIds(p_ids, c_ids, [])
    _check_template(tokenizer)
    content = completion.strip()
    messages = chat.messages(str(prompt))
    prompt_ids = _render(tokenizer, messages, generation_prompt=True, tokenize=True)
    whole_ids = _render(tokenizer, chat.messages(str(prompt), content), generation_prompt=False, tokenize=True)
    prompt_text = _render(tokenizer, messages, generation_prompt=True, tokenize=False)
    whole_text = _render(tokenizer, chat.messages(str(prompt), content), generation_prompt=False, tokenize=False)
    n = len(prompt_ids)
    if whole_ids[:n] != prompt_ids or not whole_text.startswith(prompt_text):
        raise ConfigError(f"chat: the chat template of {_name(tokenizer)} renders the assistant's turn in a way that "
                          "does not start with its generation prompt, so the answer cannot be told from the prompt; "
                          "use chat: false or another template")
    rest = whole_text[len(prompt_text):]
    at = rest.find(content) if content else 0
    if at < 0:
        raise ConfigError(f"chat: the chat template of {_name(tokenizer)} does not write the assistant's answer "
                          f"{content!r} as given, so its tokens cannot be found; use chat: false")
    tail = whole_ids[n:]
    end = encode(tokenizer, rest[at + len(content):], special_tokens=False)
    if end and tail[len(tail) - len(end):] != end:
        raise ConfigError(f"chat: in the chat template of {_name(tokenizer)} the answer's last token merges with the "
                          "end of the turn, so the answer's tokens cannot be told apart; use chat: false")
    answer = tail[: len(tail) - len(end)]
    return TurnIds(prompt_ids, answer, end)


# ----------------------------------------------------------------------------------------------------------
# What a run records


def template_sha256(tokenizer: Any) -> str | None:
    """sha256 of the tokenizer's chat template text (``None`` without one): which template a run used."""
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if not template:
        return None
    text = template if isinstance(template, str) else json.dumps(template, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def chat_record(tokenizer: Any, chat: ChatFormat | None) -> dict[str, Any]:
    """``{"enabled", "system_prompt", "template_sha256"}``: what a run (or an evaluation) used, for its record."""
    return {"enabled": chat is not None, "system_prompt": chat.system_prompt if chat else None,
            "template_sha256": template_sha256(tokenizer) if chat else None}


def recorded_format(record: Any) -> ChatFormat | None:
    """The chat format a run record's ``chat`` (:func:`chat_record`) describes; ``None`` for no chat or no record."""
    if not isinstance(record, dict) or not record.get("enabled"):
        return None
    return ChatFormat(record.get("system_prompt") or None)

"""Token-level facts the scorer needs: which token is "the letter B after the answer prefix".

Tokenizers disagree about letters: byte-level BPE (GPT-2, SmolLM2) has distinct tokens for "A" and " A";
SentencePiece (Llama 2) writes "▁A"; some merge the letter with what precedes it. The only reliable way
is to ask the tokenizer how it actually tokenizes ``prefix + " A"`` and take the token that follows the
prefix's own tokens.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from medtune.chat_format import ChatFormat, ChatPrompt, encode_turn, prompt_token_ids
from medtune.errors import InputError


def letter_token_ids(tokenizer, answer_prefix: str, letters: Sequence[str], chat: ChatFormat | None = None
                     ) -> list[int]:
    """Token id of each letter as the template's completion (``" A"``) is tokenized after ``answer_prefix``.

    Under ``chat`` the letter is the first token of the assistant's content (:mod:`medtune.chat_format`), as training
    labels it. Raises :class:`InputError` if a letter is not exactly one token there, or two letters share a token:
    letter scoring would then compare the wrong things.
    """
    if chat is not None:
        return _chat_letter_ids(tokenizer, answer_prefix, letters, chat)
    base = tokenizer.encode(answer_prefix, add_special_tokens=False)
    ids: list[int] = []
    for letter in letters:
        full = tokenizer.encode(f"{answer_prefix} {letter}", add_special_tokens=False)
        if full[: len(base)] != base or len(full) != len(base) + 1:
            pieces = tokenizer.convert_ids_to_tokens(full[len(base) - 1:] if base else full)
            raise InputError(
                f"tokenizer has no single token for the letter '{letter}' after the answer prefix "
                f"{answer_prefix!r} (it tokenizes as {pieces}); letter mode needs one token per letter: "
                "use option or generate mode, or another template"
            )
        ids.append(full[-1])
    if len(set(ids)) != len(ids):
        raise InputError(f"tokenizer maps different letters {list(letters)} to the same token ids {ids}")
    return ids


def _chat_letter_ids(tokenizer, answer_prefix: str, letters: Sequence[str], chat: ChatFormat) -> list[int]:
    ids: list[int] = []
    for letter in letters:
        answer = encode_turn(tokenizer, answer_prefix, f" {letter}", chat).answer
        if len(answer) != 1:
            raise InputError(
                f"tokenizer has no single token for the letter '{letter}' at the start of the assistant's turn of its "
                f"chat template (it tokenizes as {tokenizer.convert_ids_to_tokens(answer)}); letter mode needs one "
                "token per letter: use option or generate mode, or chat: false"
            )
        ids.append(answer[0])
    if len(set(ids)) != len(ids):
        raise InputError(f"tokenizer maps different letters {list(letters)} to the same token ids {ids}")
    return ids


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of a prompt, with the special tokens (BOS) the tokenizer adds by default; a
    :class:`~medtune.chat_format.ChatPrompt` as its chat template renders it (the special tokens are the template's)."""
    return prompt_token_ids(tokenizer, text)


def split_continuation(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context ids and continuation ids, split exactly as training splits prompt and completion.

    The rule is :func:`medtune.chat_format.encode_turn` (without chat,
    :func:`medtune.tokenization.split_prompt_completion`): the context's ids are its own tokenization (every option
    of a question shares them, and their KV cache), the continuation's come from the whole string unless the
    tokenizer merges across the boundary. Under chat (a :class:`~medtune.chat_format.ChatPrompt` context) the
    continuation is the assistant's content without the template's end-of-turn tokens. A model is thus scored on the
    very tokens it was trained to produce.
    """
    turn = encode_turn(tokenizer, context, continuation)
    ctx, cont = turn.prompt, turn.answer
    if not cont:
        raise InputError(f"continuation {continuation!r} produced no tokens")
    return ctx, cont


# ----------------------------------------------------------------------------------------------------------
# Tokenization shared by the scorer (batch costs) and local backends (the forward passes): done once per text


class TokenCache:
    """Memoised :func:`~medtune.scoring.tokens.split_continuation` and ``encode_prompt`` for one tokenizer.

    The scorer tokenizes every prompt to size its batches, and the backend needs the same ids for the forward
    pass; caching them avoids tokenizing each question twice. Bounded: it starts afresh past ``limit`` entries.
    """

    def __init__(self, tokenizer: Any, limit: int = 200_000) -> None:
        self.tokenizer = tokenizer
        self.limit = limit
        self._split: dict[tuple[Any, ...], tuple[list[int], list[int]]] = {}
        self._encode: dict[tuple[Any, ...], list[int]] = {}

    @staticmethod
    def _key(*texts: str) -> tuple[Any, ...]:
        """A text's cache key: a chat prompt never shares one with the same plain text (its ids differ)."""
        chat = texts[0].chat if isinstance(texts[0], ChatPrompt) else None
        return (chat, *map(str, texts))

    def split(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        key = self._key(context, continuation)
        if key not in self._split:
            if len(self._split) >= self.limit:
                self._split.clear()
            self._split[key] = split_continuation(self.tokenizer, context, continuation)
        return self._split[key]

    def encode(self, text: str) -> list[int]:
        key = self._key(text)
        if key not in self._encode:
            if len(self._encode) >= self.limit:
                self._encode.clear()
            self._encode[key] = encode_prompt(self.tokenizer, text)
        return self._encode[key]


_TOKEN_CACHES: weakref.WeakKeyDictionary[Any, TokenCache] = weakref.WeakKeyDictionary()


def token_cache(tokenizer: Any) -> TokenCache:
    """The :class:`TokenCache` of ``tokenizer`` (one per tokenizer object, dropped with it)."""
    cache = _TOKEN_CACHES.get(tokenizer)
    if cache is None:
        cache = _TOKEN_CACHES[tokenizer] = TokenCache(tokenizer)
    return cache

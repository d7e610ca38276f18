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

from medtune.errors import InputError
from medtune.tokenization import encode, split_prompt_completion


def letter_token_ids(tokenizer, answer_prefix: str, letters: Sequence[str]) -> list[int]:
    """Token id of each letter as the template's completion (``" A"``) is tokenized after ``answer_prefix``.

    Raises :class:`InputError` if a letter is not exactly one token there, or two letters share a token:
    letter scoring would then compare the wrong things.
    """
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


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of a prompt, with the special tokens (BOS) the tokenizer adds by default."""
    return encode(tokenizer, text)


def split_continuation(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context ids and continuation ids, split exactly as training splits prompt and completion.

    The rule is :func:`medtune.tokenization.split_prompt_completion`: the context's ids are its own
    tokenization (every option of a question shares them, and their KV cache), the continuation's come from
    the whole string unless the tokenizer merges across the boundary. A model is thus scored on the very
    tokens it was trained to produce.
    """
    ctx, cont = split_prompt_completion(tokenizer, context, continuation)
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
        self._split: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
        self._encode: dict[str, list[int]] = {}

    def split(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        key = (context, continuation)
        if key not in self._split:
            if len(self._split) >= self.limit:
                self._split.clear()
            self._split[key] = split_continuation(self.tokenizer, context, continuation)
        return self._split[key]

    def encode(self, text: str) -> list[int]:
        if text not in self._encode:
            if len(self._encode) >= self.limit:
                self._encode.clear()
            self._encode[text] = encode_prompt(self.tokenizer, text)
        return self._encode[text]


_TOKEN_CACHES: weakref.WeakKeyDictionary[Any, TokenCache] = weakref.WeakKeyDictionary()


def token_cache(tokenizer: Any) -> TokenCache:
    """The :class:`TokenCache` of ``tokenizer`` (one per tokenizer object, dropped with it)."""
    cache = _TOKEN_CACHES.get(tokenizer)
    if cache is None:
        cache = _TOKEN_CACHES[tokenizer] = TokenCache(tokenizer)
    return cache

"""Token-level facts the scorer needs: which token is "the letter B after the answer prefix".

Tokenizers disagree about letters: byte-level BPE (GPT-2, SmolLM2) has distinct tokens for "A" and " A";
SentencePiece (Llama 2) writes "▁A"; some merge the letter with what precedes it. The only reliable way
is to ask the tokenizer how it actually tokenizes ``prefix + " A"`` and take the token that follows the
prefix's own tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

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

"""The one prompt/completion token split, shared by training (labels) and scoring (continuation ids).

A model must be scored on the very tokens it was trained on: if training labelled the answer as one token
sequence and scoring measured the likelihood of another, a fine-tune could look better or worse than it is
for reasons that have nothing to do with what it learned. Both :mod:`medtune.training.data` and
:mod:`medtune.scoring.tokens` therefore call :func:`split_prompt_completion`, and neither imports the other.

The rule, and why:

1. Trailing spaces of the prompt move to the completion (``"Answer: " + "B"`` is split as
   ``"Answer:" + " B"``), as lm-evaluation-harness does: byte-level and SentencePiece tokenizers attach a
   space to the *following* word, so a prompt ending in a space would otherwise end in a token that never
   occurs before a word in running text.
2. The prompt's ids are the prompt tokenised on its own. They never depend on the completion, so every
   option of a question shares them — option scoring runs the prompt once and reuses its KV cache.
3. The completion's ids are the tail of the whole text's tokenisation when that tokenisation starts with
   the prompt's ids: the completion is then tokenised exactly as the model sees it in running text.
4. When the tokenizer merges across the boundary (the whole text does *not* start with the prompt's ids,
   e.g. a BPE merge of the prompt's last character with the completion's first), the tail of the whole
   text is not a continuation of the prompt's ids at all: ``prompt_ids + tail`` would drop or repeat
   characters. The completion is then tokenised on its own, which keeps rule 2 and keeps
   ``decode(prompt_ids + completion_ids) == prompt + completion``.
"""

from __future__ import annotations

from typing import Any


def encode(tokenizer: Any, text: str, *, special_tokens: bool = True) -> list[int]:
    """Token ids of ``text``; ``special_tokens`` adds what the tokenizer adds by default (e.g. BOS)."""
    return list(tokenizer(text, add_special_tokens=special_tokens)["input_ids"])


def move_trailing_spaces(prompt: str, completion: str) -> tuple[str, str]:
    """``(prompt without its trailing spaces, those spaces + completion)``: rule 1 of the module docstring."""
    n_space = len(prompt) - len(prompt.rstrip(" "))
    if not n_space:
        return prompt, completion
    return prompt[:-n_space], prompt[-n_space:] + completion


def split_prompt_completion(tokenizer: Any, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """Prompt ids (with the tokenizer's special tokens) and completion ids, by the rule of this module.

    The completion ids may be empty only when the completion itself tokenises to nothing; callers decide
    whether that is an error (scoring) or is filled by an EOS token (training).
    """
    prompt, completion = move_trailing_spaces(prompt, completion)
    prompt_ids = encode(tokenizer, prompt)
    whole = encode(tokenizer, prompt + completion)
    n = len(prompt_ids)
    if len(whole) > n and whole[:n] == prompt_ids:
        return prompt_ids, whole[n:]
    return prompt_ids, encode(tokenizer, completion, special_tokens=False)


def merges_across_boundary(tokenizer: Any, prompt: str, completion: str) -> bool:
    """Whether the tokenizer merges the prompt's end with the completion's start (rule 4 applies)."""
    prompt, completion = move_trailing_spaces(prompt, completion)
    prompt_ids = encode(tokenizer, prompt)
    whole = encode(tokenizer, prompt + completion)
    return not (len(whole) > len(prompt_ids) and whole[: len(prompt_ids)] == prompt_ids)

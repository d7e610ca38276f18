"""A scoring backend defined outside medtune, as a plugin would: it prefers the longest option.

Importing the module registers ``longest`` (``MEDTUNE_PLUGINS=medtune_test_backend``; spec ``longest:ANYTHING``).
It needs no model: the log-likelihood of ``" X"`` is the length of option X's text as the prompt lists it
("X) text" lines), that of an option's text its length. Its predictions are therefore known from the items
alone — the longest option, the first one on ties — which is what lets a test tell that this backend, and not
the transformers one, did the scoring.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

from medtune.scoring.backends import register_backend

_OPTION_LINE = re.compile(r"^([A-J])\) (.*)$", re.MULTILINE)


class LongestOption:
    """Scores continuations by length; generates the letter of the longest option listed in the prompt."""

    name = "longest"
    tokenizer = None
    MODES: ClassVar[dict[str, str]] = {
        "letter": "length of the text of option X in the prompt's 'X) text' lines",
        "option": "length of the option's text",
        "generate": "' X', X the letter of the longest listed option",
    }

    def __init__(self, target: str) -> None:
        self.spec = f"longest:{target}"
        self.calls = 0

    @staticmethod
    def _listed(prompt: str) -> dict[str, str]:
        return {m.group(1): m.group(2).strip() for m in _OPTION_LINE.finditer(prompt)}

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, int]]:
        self.calls += 1
        out = []
        for context, continuation in pairs:
            text = continuation.strip()
            listed = self._listed(context)
            value = len(listed[text]) if len(text) == 1 and text in listed else len(text)
            out.append((float(value), max(1, len(text.split()))))
        return out

    def generate(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] | None = None) -> list[str]:
        answers = []
        for prompt in prompts:
            listed = self._listed(prompt)
            best = max(listed, key=lambda k: (len(listed[k]), -ord(k))) if listed else "A"
            answers.append(f" {best}")
        return answers


def make(target: str, **_: Any) -> LongestOption:
    return LongestOption(target)


register_backend("longest", make)

"""Sampled answers for self-consistency: ``n`` answers per prompt at a temperature and nucleus ``top_p``, seeded.

A backend that can sample implements :class:`SamplingBackend` (``sample``) beside the greedy ``generate`` of
:class:`~medtune.scoring.backends.ScoringBackend`; the transformers, vLLM and OpenAI-compatible backends do.

Seeds: every prompt gets its own seed, :func:`prompt_seed` (the run's ``seed`` and the prompt's text, hashed), so
a prompt's samples depend neither on which other prompts share its batch nor on their order. The transformers
backend draws each row's tokens from a generator of its own seeded with it (:mod:`medtune.scoring.hf`), vLLM takes
it as the request's ``seed``. An OpenAI-compatible server gets one request per batch with the run's ``seed``; a
vLLM server seeds each prompt of a request with it, other servers may not (OpenAI's own seeding is best effort).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from medtune.errors import ConfigError


@dataclass(frozen=True)
class Sampling:
    """``n`` samples per prompt at ``temperature`` (> 0) with nucleus ``top_p`` (1: the whole distribution)."""

    n: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"samples must be at least 1, got {self.n}")
        if not self.temperature > 0:
            raise ConfigError(f"sampling needs temperature > 0, got {self.temperature} (temperature 0 is greedy "
                              "decoding: one answer, samples 1)")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")

    def describe(self) -> dict[str, float | int]:
        return {"samples": self.n, "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}


def prompt_seed(seed: int, prompt: str) -> int:
    """The seed of one prompt's samples: the run's ``seed`` and the prompt's text, hashed to 63 bits."""
    digest = hashlib.sha256(f"{seed}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def sample_seed(seed: int, prompt: str, k: int) -> int:
    """The seed of sample ``k`` of a prompt, for backends that seed every sample (transformers)."""
    return prompt_seed(seed, f"{k}\0{prompt}")


@runtime_checkable
class SamplingBackend(Protocol):
    """A backend that can draw several answers per prompt (see the module docstring)."""

    def sample(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] | None,
               sampling: Sampling) -> list[list[str]]:
        """Per prompt, ``sampling.n`` continuations (at most ``max_new_tokens`` tokens, cut at a ``stop`` string)."""
        ...


def cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    """``text`` up to the first ``stop`` string it holds (servers leave it out; transformers keeps it)."""
    cut = len(text)
    for s in stop or ():
        if s and (k := text.find(s)) >= 0:
            cut = min(cut, k)
    return text[:cut]

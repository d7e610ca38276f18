"""Self-consistency: the majority vote over the answers extracted from several sampled answers to one question.

An answer that could not be read (``None``) casts no vote but still counts as a sample, so a question where 2 of
5 samples say C and the rest say nothing readable gets C with a share of 0.4. A tie goes to the answer of the
earliest sample among the tied answers (sample order is the backend's, fixed by the seed), so a vote never depends
on how a dictionary happens to order its keys. No readable answer at all gives no vote (``None``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Vote:
    """The outcome of one question's vote.

    ``answer``: the winning option (``None``: no sample had a readable answer); ``count``: its votes;
    ``runner_up``: the votes of the next answer (0 if none); ``n``: the samples, readable or not.
    """

    answer: int | None
    count: int
    runner_up: int
    n: int

    @property
    def share(self) -> float:
        """The winning answer's share of all samples (0 without a vote)."""
        return self.count / self.n if self.n else 0.0

    @property
    def margin(self) -> float:
        """Winner minus runner-up, as a share of all samples: 1 when every sample agrees, 0 for a tie."""
        return (self.count - self.runner_up) / self.n if self.n else 0.0


def majority_vote(answers: Sequence[int | None]) -> Vote:
    """The most frequent readable answer of ``answers`` (one per sample, in sample order); see the module docstring."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return Vote(None, 0, 0, len(answers))
    first = {}
    for i, a in enumerate(answers):
        if a is not None:
            first.setdefault(a, i)
    ranked = sorted(counts, key=lambda a: (-counts[a], first[a]))
    runner_up = counts[ranked[1]] if len(ranked) > 1 else 0
    return Vote(ranked[0], counts[ranked[0]], runner_up, len(answers))

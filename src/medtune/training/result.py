"""What a training run returns (:class:`TrainResult`), in a module of its own.

Method specs name this type in their signatures (a multi-stage method returns one); keeping it apart from the loop
lets them do so without importing the loop, which imports the method registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainResult:
    run_dir: Path
    model: Any
    tokenizer: Any
    steps: int
    losses: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    output_dir: Path | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")

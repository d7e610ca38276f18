"""Helpers for the training tests: small real-format items and hand-written order files."""

from __future__ import annotations

import random

from medtune.schema import MCQItem

ORGANS = ["heart", "lung", "liver", "kidney", "brain", "skin"]
DRUGS = ["Zorafen", "Quilmab", "Dextavir", "Pomerol", "Halcitra", "Venorin", "Miraxol", "Tobrexa"]


def make_items(n: int = 40, seed: int = 0) -> list[MCQItem]:
    """Small MCQ items with a learnable rule (organ → drug) and short prompts, in two categories."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        organ = ORGANS[i % len(ORGANS)]
        answer_drug = DRUGS[ORGANS.index(organ)]
        wrong = rng.sample([d for d in DRUGS if d != answer_drug], 3)
        options = [answer_drug, *wrong]
        rng.shuffle(options)
        items.append(MCQItem(
            id=f"q{i:03d}", question=f"Which drug treats the {organ} disease number {i}?", options=options,
            answer=options.index(answer_drug), source="test", split="train",
            category="a" if i % 2 else "b", human_difficulty=["easy", "medium", "hard"][i % 3],
        ))
    return items


def make_order(ids: list[str], *, epochs: int = 1, strategy: str = "hand", policy: str = "repeat",
               segments: list[dict] | None = None) -> dict:
    return {
        "format": "medtune.order/1", "strategy": strategy, "seed": 0, "options": {}, "epoch_policy": policy,
        "epochs": [list(ids) for _ in range(epochs)], "n_items": len(ids),
        "segments": segments or [{"start": 0, "label": "first"}, {"start": len(ids) // 2, "label": "second"}],
        "input_hashes": {},
    }


# A very small Llama for order/plumbing tests (the default tiny model is for learning tests).
MICRO = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def micro_config(**kw):
    from medtune.training.config import TrainSettings

    base = {"model": "tiny", "tiny": dict(MICRO), "tiny_vocab_size": 400, "batch_size": 4, "lr": 1e-3,
            "target": "option", "max_length": 128}
    base.update(kw)
    return TrainSettings(**base).validate()


def micro_cli_options() -> list[str]:
    return ["--model", "tiny", "--tiny-vocab-size", "400", "--target", "option", "--max-length", "128",
            *[x for k, v in MICRO.items() for x in ("--tiny-option", f"{k}={v}")]]

"""Fixtures for the scorer tests: real MedQA/MMLU items (read with medtune.data) and a tiny real model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from medtune.data.registry import load
from medtune.models import LoadedModel, build_tiny_model

_REPO = Path(__file__).resolve().parents[2]
# The same lookup as tests/conftest.py (a session-scoped copy, since its fixture is function-scoped).
SHARED_DATA = Path(os.environ.get("MEDTUNE_SHARED_DATA",
                                  Path(os.environ.get("MEDTUNE_SHARED", _REPO.parent / "shared")) / "data"))


def need(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} (set MEDTUNE_SHARED_DATA to the real data folder)")
    return path


@pytest.fixture(scope="session")
def medqa_all():
    return load("medqa", need("medqa", "test.jsonl")).items


@pytest.fixture(scope="session")
def mmlu_genetics():
    return load("mmlu", need("mmlu_medical", "test", "medical_genetics_test.csv")).items


@pytest.fixture(scope="session")
def tiny(medqa_all) -> LoadedModel:
    """A 2-layer Llama with a BPE tokenizer trained on real questions (random weights, seeded)."""
    model, tok = build_tiny_model([it.question for it in medqa_all[:200]], vocab_size=1024, seed=0)
    model.eval()
    return LoadedModel(model, tok, "tiny", torch.float32, "cpu")

"""Shared fixtures: where the real data lies, and temporary run folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDTUNE_SHARED", REPO.parent / "shared"))
SHARED_DATA = Path(os.environ.get("MEDTUNE_SHARED_DATA", SHARED / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Tests spread over worker processes (pytest -n N): one thread each, and subprocesses the tests start inherit
    # it, so N workers use N cores instead of fighting over them.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")


def bpe_tokenizer(merges: list[tuple[str, str]]):  # -> transformers.PreTrainedTokenizerFast
    """A byte-level BPE with exactly ``merges`` (no pre-tokenizer splits), BOS prepended: tokenizers whose
    merges a test chooses, e.g. " A" as one token, or ':' joined with the space after it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "</s>", "<pad>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate([*specials, *alphabet, *(a + b for a, b in merges)])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def shared_path(*parts: str) -> Path:
    """A path under the shared data folder; skip the test with a clear reason if it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} (set MEDTUNE_SHARED_DATA to the real data folder)")
    return path


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"real data folder not available: {SHARED_DATA} (set MEDTUNE_SHARED_DATA)")
    return SHARED_DATA

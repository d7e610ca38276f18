"""load → write_items → read_items is lossless for every source (real files; generated MedMCQA and tables)."""

from __future__ import annotations

import random

import pytest

from medtune.data import load
from medtune.schema import read_items, write_items
from shared_data import shared_path

from .badfiles import medmcqa_record, write_csv, write_jsonl

REAL = [
    ("medqa", ("medqa", "test.jsonl"), {}),
    ("medqa", ("medqa", "4_options", "phrases_no_exclude_test.jsonl"), {}),
    ("lek", ("lek", "Llama-2-7b-chat-hf.json"), {}),
    ("mmlu", ("mmlu_medical",), {}),
    ("pubmedqa", ("pubmedqa", "ori_pqal.json"), {}),
    ("pubmedqa", ("pubmedqa", "ori_pqal.json"), {"form": "qa"}),
    ("medquad", ("medquad",), {}),
]


@pytest.mark.parametrize(("source", "parts", "options"), REAL, ids=[f"{s}-{'/'.join(p)}-{o}" for s, p, o in REAL])
def test_real_sources_roundtrip(tmp_path, source, parts, options):
    items = load(source, shared_path(*parts), **options).items
    assert items
    back = read_items(write_items(items, tmp_path / "items.parquet"))
    assert back == items


def test_generated_sources_roundtrip(tmp_path):
    rng = random.Random(5)
    recs = [medmcqa_record(i, rng.randint(1, 4), exp=None if i % 4 == 0 else "Because.") for i in range(30)]
    sources = {
        "medmcqa": load("medmcqa", write_jsonl(tmp_path / "train.json", recs)).items,
        "tabular": load(
            "tabular",
            write_csv(tmp_path / "t.csv", [[f"Q{i}?", "a", "b", "ABAB"[i % 4], ["easy", "0.5", ""][i % 3], f"m{i}"]
                                           for i in range(9)], header=["q", "x", "y", "ans", "lvl", "note"]),
            question_col="q", options_cols="x,y", answer_col="ans", difficulty_col="lvl",
        ).items,
        "tabular-qa": load("tabular", write_jsonl(tmp_path / "qa.jsonl", [{"question": "Q?", "answer": "A.",
                                                                         "n": {"k": [1, 2.5, None]}}]),
                           kind="qa").items,
    }
    for name, items in sources.items():
        assert read_items(write_items(items, tmp_path / f"{name}.parquet")) == items, name

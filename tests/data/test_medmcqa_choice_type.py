"""MedMCQA's choice_type is "single" or "multi"; any other value is reported where it is, not kept as a third kind."""

from __future__ import annotations

import json

import pytest

from medtune.data import load
from medtune.errors import InputError

from .badfiles import medmcqa_record, write_jsonl


@pytest.mark.parametrize("value", ["singel", "MULTI", "", 3])
def test_unknown_choice_type_names_file_record_and_field(tmp_path, value):
    recs = [medmcqa_record(i, 1 + i % 4) for i in range(4)]
    recs[2]["choice_type"] = value
    path = write_jsonl(tmp_path / "dev.json", recs)
    with pytest.raises(InputError) as info:
        load("medmcqa", path)
    msg = str(info.value)
    assert str(path) in msg and "line 3" in msg and "field 'choice_type'" in msg and repr(value) in msg
    kept = load("medmcqa", path, on_error="skip")
    assert len(kept.items) == 3 and [e.record for e in kept.skipped] == [3]


def test_json_array_counts_records_from_one(tmp_path):
    recs = [medmcqa_record(i, 1 + i % 4, choice_type="multi") for i in range(3)]
    recs[1]["choice_type"] = "many"
    path = tmp_path / "train.json"
    path.write_text(json.dumps(recs), encoding="utf-8")
    with pytest.raises(InputError) as info:
        load("medmcqa", path)
    assert str(info.value) == f"{path}, record 2, field 'choice_type': 'many' is not one of single, multi"


def test_both_published_values_and_a_missing_one_load(tmp_path):
    recs = [medmcqa_record(0, 1, choice_type="single"), medmcqa_record(1, 2, choice_type="multi"),
            medmcqa_record(2, 3)]
    recs[2].pop("choice_type")
    items = load("medmcqa", write_jsonl(tmp_path / "dev.json", recs)).items
    assert [it.meta.get("choice_type") for it in items] == ["single", "multi", None]

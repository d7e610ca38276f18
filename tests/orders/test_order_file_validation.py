"""The order file's one validation, field by field: each refusal names its field, each accepted value comes back as
given, and what is left out (or null) takes its default."""

from __future__ import annotations

import json

import pytest

from medtune.errors import InputError
from medtune.orders.orderfile import FIELDS, OrderFile

MINIMAL = {"format": "medtune.order/1", "epochs": [["b", "a", "b"]]}


def _refused(change: dict, *, drop: tuple[str, ...] = ()) -> InputError:
    data = {k: v for k, v in {**MINIMAL, **change}.items() if k not in drop}
    with pytest.raises(InputError) as err:
        OrderFile.from_dict(data, file="o.json")
    assert err.value.file == "o.json"
    return err.value


@pytest.mark.parametrize("change, field, message", [
    ({"strategy": ""}, "strategy", "expected a non-empty string, got ''"),
    ({"strategy": 3}, "strategy", "expected a non-empty string, got 3"),
    ({"seed": True}, "seed", "non-negative integer, got True"),
    ({"seed": -1}, "seed", "non-negative integer, got -1"),
    ({"seed": 1.0}, "seed", "non-negative integer, got 1.0"),
    ({"n_items": -2}, "n_items", "non-negative integer, got -2"),
    ({"options": []}, "options", "expected a JSON object, got list"),
    ({"input_hashes": "abc"}, "input_hashes", "expected a JSON object, got str"),
    ({"input_hashes": {"items": "ab", "difficulty": 5}}, "input_hashes.difficulty",
     "the hash of 'difficulty' is not a string"),
    ({"epoch_policy": "again"}, "epoch_policy", "unknown epoch_policy 'again' (repeat or reshuffle)"),
    ({"segments": {"start": 0}}, "segments", "expected a list of {start, label} objects"),
    ({"segments": [{"start": 0, "label": "a"}, "x"]}, "segments.1", "segment 1 is not"),
    ({"segments": [{"start": True, "label": "a"}]}, "segments.0", "segment 0 is not"),
    ({"segments": [{"start": "0", "label": "a"}]}, "segments.0", "segment 0 is not"),
    ({"segments": [{"start": -1, "label": "a"}]}, "segments.0", "segment 0 is not"),
    ({"segments": [{"start": 2}]}, "segments.0", "segment 0 is not"),
    ({"epochs": []}, "epochs", "needs a non-empty list of epochs"),
    ({"epochs": ["ab"]}, "epochs.0", "epoch 0 is not a list of id strings"),
    ({"epochs": [["a"], ["b", None]]}, "epochs.1", "epoch 1 is not a list of id strings"),
    ({"epochs": {"0": ["a"]}}, "epochs", "needs a non-empty list of epochs"),
    ({"format": "medtune.order/0"}, "format", "unsupported format 'medtune.order/0' (expected 'medtune.order/1')"),
    ({"extra": 1, "more": 2}, "extra", "unknown field (an order file has format, strategy, seed"),
])
def test_each_bad_field_is_refused_by_name(change, field, message):
    err = _refused(change)
    assert err.field == field
    assert err.reason.startswith(message) or err.reason.endswith(message)


def test_the_two_required_fields_are_named_when_missing():
    for field in ("format", "epochs"):
        err = _refused({}, drop=(field,))
        assert err.field == field and err.reason == "missing field"
    with pytest.raises(InputError) as err:
        OrderFile.from_dict([MINIMAL], file="o.json")
    assert err.value.field is None and err.value.file == "o.json"
    assert err.value.reason == "an order file holds a JSON object"


def test_accepted_values_come_back_and_nulls_take_the_defaults():
    full = {**MINIMAL, "strategy": "blocked", "seed": 0, "options": {"k": 2}, "epoch_policy": "reshuffle",
            "n_items": 0, "segments": [{"start": 0, "label": "x", "extra": 1}], "input_hashes": {"items": "ab"}}
    of = OrderFile.from_dict(full)
    assert of.to_dict() == full and list(of.to_dict()) == list(FIELDS)
    assert of.n_items == 0  # given, even if 0: not recounted
    nulls = OrderFile.from_dict({**MINIMAL, **{k: None for k in FIELDS if k not in ("format", "epochs")}})
    assert nulls == OrderFile(epochs=[["b", "a", "b"]])
    assert nulls.n_items == 2 and nulls.epoch_policy == "repeat" and nulls.strategy is None and nulls.seed is None
    assert nulls.options == {} and nulls.segments == [] and nulls.input_hashes == {}
    assert OrderFile(epochs=[["a"], ["b", "c"], ["a"]]).n_items == 3


def test_the_object_does_not_share_its_lists_with_the_input_or_the_output():
    data = {"format": "medtune.order/1", "epochs": [["b", "a", "b"]], "options": {"k": 2},
            "segments": [{"start": 0, "label": "x"}], "input_hashes": {"i": "h"}}
    of = OrderFile.from_dict(data)
    data["epochs"][0].append("c")
    data["options"]["k"] = 9
    data["segments"][0]["label"] = "y"
    data["input_hashes"]["i"] = "g"
    assert of.epochs == [["b", "a", "b"]] and of.options == {"k": 2}
    assert of.segments == [{"start": 0, "label": "x"}] and of.input_hashes == {"i": "h"}
    out = of.to_dict()
    out["epochs"][0].append("d")
    out["options"]["k"] = 7
    out["segments"][0]["label"] = "z"
    out["input_hashes"]["i"] = "f"
    assert of.epochs == [["b", "a", "b"]] and of.options == {"k": 2}
    assert of.segments == [{"start": 0, "label": "x"}] and of.input_hashes == {"i": "h"}


def test_reading_refuses_a_folder_and_what_is_not_json(tmp_path):
    with pytest.raises(InputError) as err:
        OrderFile.read(tmp_path)
    assert err.value.file == str(tmp_path) and err.value.reason == "expected an order file, got a folder"
    with pytest.raises(InputError) as err:
        OrderFile.read(tmp_path / "none.json")
    assert err.value.reason == "order file not found"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match="not a JSON file") as err:
        OrderFile.read(bad)
    assert err.value.file == str(bad)
    bad.write_bytes(b'{"format": "\xff"}')
    with pytest.raises(InputError, match="not a JSON file"):
        OrderFile.read(bad)
    bad.write_text(json.dumps({**MINIMAL, "seed": -3}), encoding="utf-8")
    with pytest.raises(InputError) as err:
        OrderFile.read(bad)
    assert err.value.file == str(bad) and err.value.field == "seed"


def test_writing_keeps_ids_as_written_one_epoch_per_line(tmp_path):
    of = OrderFile(epochs=[["é-1", "b"], ["b", "é-1"]], strategy="hand", segments=[{"start": 0, "label": "α"}])
    path = of.write(tmp_path / "o.json")
    assert path == tmp_path / "o.json"
    text = path.read_text(encoding="utf-8")
    assert '  ["é-1", "b"],\n  ["b", "é-1"]\n ],' in text and '"label": "α"' in text
    assert text.startswith('{\n "format": "medtune.order/1",\n "strategy": "hand",\n') and text.endswith("\n}\n")
    assert OrderFile.read(path) == of

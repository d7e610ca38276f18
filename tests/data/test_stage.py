"""The data stage: :class:`DataSettings` validation, :func:`run_data`'s selection and files, the textbook helper."""

from __future__ import annotations

import pytest

from medtune.cli import main
from medtune.data import DataSettings, id_fraction, load, run_data
from medtune.errors import ConfigError, InputError
from medtune.schema import read_items
from medtune.settings import validate_settings
from medtune.textbook import read_textbook, textbook_path, write_textbook

from .badfiles import medqa_record, write_jsonl

SMALL = {"n_systems": 2, "diseases_per_system": 4}


def _settings(**kw) -> DataSettings:
    return validate_settings(DataSettings, {"source": "synthetic", "options": SMALL, **kw}, "datasets.0")


def test_run_data_writes_items_and_textbook_and_summarises_splits(tmp_path):
    summary = run_data(_settings(), tmp_path)
    items = read_items(tmp_path / "items.parquet")
    assert summary == {"n_items": len(items), "skipped": 0,
                       "splits": {"train": sum(it.split == "train" for it in items),
                                  "test": sum(it.split == "test" for it in items)}}
    assert list(summary["splits"]) == ["train", "test"] and all(summary["splits"].values())
    full = load("synthetic", None, **SMALL)
    assert [it.id for it in items] == [it.id for it in full.items]
    assert read_textbook(tmp_path / "items.parquet") == full.extras["textbook"]


def test_split_portion_and_limit_select_in_that_order(tmp_path):
    every = load("synthetic", None, **SMALL).items
    train = [it for it in every if it.split == "train"]
    a = run_data(_settings(split="train", portion=(0.0, 0.6), portion_seed=3), tmp_path / "a")
    b = run_data(_settings(split="train", portion=(0.6, 1.0), portion_seed=3), tmp_path / "b")
    ids_a = {it.id for it in read_items(tmp_path / "a" / "items.parquet")}
    ids_b = {it.id for it in read_items(tmp_path / "b" / "items.parquet")}
    assert not ids_a & ids_b and ids_a | ids_b == {it.id for it in train}  # disjoint and complete
    assert a["splits"] == {"train": len(ids_a)} and b["n_items"] == len(ids_b)
    assert ids_a == {it.id for it in train if id_fraction(it.id, 3) < 0.6}
    run_data(_settings(split="train", portion=(0.0, 0.6), portion_seed=3, limit=5), tmp_path / "c")
    limited = [it.id for it in read_items(tmp_path / "c" / "items.parquet")]
    assert limited == [it.id for it in train if it.id in ids_a][:5]  # the loader's order is kept


def test_id_fraction_is_stable():
    # Pinned values: cached grid artifacts and train/test portions depend on them.
    assert id_fraction("medqa-test-1", 0) == 0.659907755373188
    assert id_fraction("x", 7) == 0.8618177127557993


def test_nothing_left_is_an_error_naming_the_data_set(tmp_path):
    with pytest.raises(InputError, match=r"data set 'syn' has no items in split 'dev' \(of \d+ loaded\)"):
        run_data(_settings(name="syn", split="dev"), tmp_path)
    assert not list(tmp_path.iterdir())


def test_relative_path_resolves_against_root(tmp_path):
    write_jsonl(tmp_path / "test.jsonl", [medqa_record(i) for i in range(3)])
    settings = validate_settings(DataSettings, {"source": "medqa", "path": "test.jsonl"})
    assert run_data(settings, tmp_path / "out", root=tmp_path)["splits"] == {"test": 3}
    assert not textbook_path(tmp_path / "out" / "items.parquet").exists()  # medqa has none


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"source": "nosuch"}, "datasets.0.source: unknown data source 'nosuch'"),
        ({"source": "medqa"}, "datasets.0.path: source 'medqa' reads a file or folder"),
        ({"source": "medqa", "path": "x.jsonl", "options": {"cop_base": 1}},
         "datasets.0.options: unknown option(s) for medqa: cop_base (known: split)"),
        ({"source": "tabular", "path": "x.csv", "options": {"category_column": "c"}},
         "unknown option(s) for tabular: category_column"),
        ({"source": "synthetic", "options": {"n_system": 2}}, "unknown option(s) for synthetic: n_system"),
        ({"source": "synthetic", "options": {"on_error": "skip"}}, "on_error is a setting of the data set"),
        ({"source": "synthetic", "portion": [0.5, 0.5]}, "datasets.0.portion: portion must be [a, b)"),
        ({"source": "synthetic", "limit": 0}, "datasets.0.limit"),
        ({"source": "synthetic", "splt": "train"}, "datasets.0.splt: unknown key"),
        ({"source": "synthetic", "on_error": "ignore"}, "datasets.0.on_error"),
    ],
)
def test_settings_reject_bad_keys_by_name(data, message):
    with pytest.raises(ConfigError) as info:
        validate_settings(DataSettings, data, "datasets.0")
    assert message in str(info.value)


def test_settings_keep_the_grid_field_names_and_defaults():
    s = DataSettings(source="synthetic")
    assert s.to_dict() == {"name": None, "source": "synthetic", "path": None, "split": None, "portion": None,
                           "portion_seed": 0, "limit": None, "options": {}, "on_error": "raise"}
    assert s.label == "synthetic" and _settings(split="test").label == "synthetic-test"


def test_cli_and_run_data_select_the_same_items(tmp_path, capsys):
    out = tmp_path / "cli.parquet"
    argv = ["data", "load", "synthetic", "--option", "n_systems=2", "--option", "diseases_per_system=4",
            "--split", "test", "--portion", "0.2", "0.7", "--portion-seed", "5", "--limit", "20", "-o", str(out)]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    run_data(_settings(split="test", portion=(0.2, 0.7), portion_seed=5, limit=20), tmp_path / "grid")
    cli_items = read_items(out)
    assert cli_items == read_items(tmp_path / "grid" / "items.parquet") and len(cli_items) == 20
    assert "wrote 20 items" in stdout and "(test=20)" in stdout
    assert read_textbook(out) == read_textbook(tmp_path / "grid" / "items.parquet")


def test_textbook_helper_round_trip(tmp_path):
    items = tmp_path / "syn.parquet"
    assert textbook_path(items) == tmp_path / "syn.textbook.txt"
    assert read_textbook(items) is None
    write_textbook(items, ["Fact one.", "Fact two."])
    assert textbook_path(items).read_text(encoding="utf-8") == "Fact one.\nFact two.\n"
    textbook_path(items).write_bytes(b"\xef\xbb\xbfFact one.\r\n\r\n  \nFact two.\r\n")
    assert read_textbook(items) == ["Fact one.", "Fact two."]  # BOM, CRLF and blank lines dropped
    with pytest.raises(ValueError, match="line break"):
        write_textbook(items, ["one\ntwo"])
    assert read_textbook(items) == ["Fact one.", "Fact two."]  # the refused write left the file alone
    textbook_path(items).write_bytes(b"ok\n\xff\n")
    with pytest.raises(InputError, match=r"syn\.textbook\.txt, line 2: invalid UTF-8"):
        read_textbook(items)

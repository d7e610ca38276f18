"""The bad-input corpus (tests/data/badfiles.py) through every loader, ``read_items`` and ``medtune data``.

Every case must raise :class:`InputError` naming the file, the place (line, record, PMID, row) and the field,
and the command must exit 2 with that one line and write nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medtune.cli import main
from medtune.data import load
from medtune.errors import InputError
from medtune.schema import read_items

from .badfiles import (
    BOM,
    BadCase,
    items_cases,
    lek_record,
    loader_cases,
    medmcqa_record,
    medqa_record,
    medquad_xml,
    pubmedqa_record,
    usmle_record,
)

LOADER_CASES = loader_cases()
ITEMS_CASES = items_cases()


def _check(msg: str, case: BadCase, folder: Path, path: Path) -> None:
    named = case.named(folder) if case.named else path
    assert str(named) in msg, msg
    assert case.fragment in msg, msg
    if case.place:
        assert f", {case.place}" in msg, msg
    if case.field:
        assert f"field '{case.field}'" in msg, msg


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_corpus_covers_every_loader_that_reads_files():
    from medtune.data import available_loaders

    reading = {name for name, spec in available_loaders().items() if spec.needs_path}
    assert reading <= {c.source for c in LOADER_CASES}
    assert len({c.id for c in LOADER_CASES + ITEMS_CASES}) == len(LOADER_CASES) + len(ITEMS_CASES)


@pytest.mark.parametrize("case", LOADER_CASES, ids=[c.id for c in LOADER_CASES])
def test_loader_names_file_place_and_field(tmp_path, case):
    path = case.write(tmp_path)
    with pytest.raises(InputError) as info:
        load(case.source, path, **case.options)
    _check(str(info.value), case, tmp_path, path)


@pytest.mark.parametrize("case", LOADER_CASES, ids=[c.id for c in LOADER_CASES])
def test_data_load_exits_2_with_the_message_and_writes_nothing(tmp_path, capsys, case):
    folder = tmp_path / "in"
    folder.mkdir()
    path = case.write(folder)
    out = tmp_path / "out" / "items.parquet"
    argv = ["data", "load", case.source, str(path), "-o", str(out)]
    for key, value in case.options.items():
        argv += ["--option", f"{key}={value}"]
    code = main(argv)
    _, err = capsys.readouterr()
    assert code == 2
    _check(_one_error_line(err), case, folder, path)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ITEMS_CASES, ids=[c.id for c in ITEMS_CASES])
def test_read_items_names_file_row_and_field(tmp_path, case):
    path = case.write(tmp_path)
    with pytest.raises(InputError) as info:
        read_items(path)
    _check(str(info.value), case, tmp_path, path)


@pytest.mark.parametrize("case", ITEMS_CASES, ids=[c.id for c in ITEMS_CASES])
def test_data_commands_reject_bad_items_files(tmp_path, capsys, case):
    folder = tmp_path / "in"
    folder.mkdir()
    path = case.write(folder)
    out = tmp_path / "out" / "prepared.parquet"
    for argv in (["data", "describe", str(path)], ["data", "prepare", str(path), "-o", str(out)]):
        code = main(argv)
        _, err = capsys.readouterr()
        assert code == 2
        _check(_one_error_line(err), case, folder, path)
    assert not (tmp_path / "out").exists()


# --- files as Windows tools save them: a UTF-8 byte-order mark and CRLF line ends --------------------------------


def _windows(data: bytes) -> bytes:
    return BOM + data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _jsonl(records: list) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


WINDOWS = {
    "medqa": ("test.jsonl", _jsonl([medqa_record(i) for i in range(3)]), {}),
    "medmcqa-lines": ("train.json", _jsonl([medmcqa_record(i, 1 + i % 4) for i in range(3)]), {}),
    "medmcqa-array": ("train.json", json.dumps([medmcqa_record(i, 1 + i % 4) for i in range(3)], indent=1).encode(),
                      {}),
    "lek": ("Model.json", json.dumps({"questions": [lek_record(i) for i in range(3)]}, indent=1).encode(), {}),
    "pubmedqa": ("ori_pqal.json", json.dumps({str(i): pubmedqa_record(i) for i in range(3)}, indent=1).encode(), {}),
    "medquad": ("0001.xml", medquad_xml("0001", [("information", "What is X?", "X is a thing.")]).encode(), {}),
    "mmlu": ("anatomy_test.csv", b"Q1?,a,b,c,d,A\nQ2?,a,b,c,d,B\n", {}),
    "usmle": ("step1.json", json.dumps([usmle_record(1), usmle_record(2, 9, "I")], indent=1).encode(), {}),
    "tabular-jsonl": ("quiz.jsonl", _jsonl([{"q": f"Q{i}?", "a": "x", "b": "y", "ans": "B"} for i in range(3)]),
                      {"question_col": "q", "options_cols": "a,b", "answer_col": "ans"}),
    "tabular-json-array": ("quiz.json", json.dumps([{"q": "Q?", "a": "x", "b": "y", "ans": "A"}]).encode(),
                           {"question_col": "q", "options_cols": "a,b", "answer_col": "ans"}),
    "tabular-csv": ("quiz.csv", b"q,a,b,ans\nQ1?,x,y,A\nQ2?,x,y,B\n",
                    {"question_col": "q", "options_cols": "a,b", "answer_col": "ans"}),
}


@pytest.mark.parametrize("key", sorted(WINDOWS))
def test_bom_and_crlf_read_like_plain_files(tmp_path, key):
    name, data, options = WINDOWS[key]
    source = key.split("-")[0]
    (tmp_path / "plain").mkdir()
    (tmp_path / "windows").mkdir()
    (tmp_path / "plain" / name).write_bytes(data)
    (tmp_path / "windows" / name).write_bytes(_windows(data))
    plain = load(source, tmp_path / "plain" / name, **options).items
    windows = load(source, tmp_path / "windows" / name, **options).items
    assert plain and [it.model_dump(exclude={"meta"}) for it in windows] == [
        it.model_dump(exclude={"meta"}) for it in plain]
    assert "\r" not in "".join(it.question for it in windows)

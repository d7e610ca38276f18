"""USMLE self-assessment loader: step files in medAlpaca's format (written here, invented text), every field,
answers inline and from the solutions file, image questions flagged both ways, and each kind of bad record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medtune.cli import main
from medtune.data import available_loaders, load
from medtune.data.usmle import refers_to_figure
from medtune.errors import InputError
from medtune.schema import MCQItem, read_items, write_items

LETTERS = "ABCDEFGHI"


def record(no: int, n_options: int = 5, *, answer: str | None = None, question: str | None = None,
           **extra: Any) -> dict[str, Any]:
    """A record as the step files hold it; ``answer`` goes in inline when given."""
    rec: dict[str, Any] = {
        "no": no,
        "question": question or f"An invented patient number {no} presents with invented findings. Next step?",
        "options": {LETTERS[k]: f"invented choice {LETTERS[k].lower()} for question {no}" for k in range(n_options)},
    }
    if answer is not None:
        rec["answer"] = answer
    rec.update(extra)
    return rec


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture
def three_steps(tmp_path: Path) -> Path:
    """A folder as a user downloads it: three steps, solutions for two of them, the image list."""
    folder = tmp_path / "usmle"
    write_json(folder / "step1.json", [
        record(1, answer="C"),
        record(2, answer_idx="B: invented choice b for question 2"),
        record(3, answer="E", image_url="https://example.org/figure-3.png",
               question="An invented rash is shown in the photograph. What is the diagnosis?"),
    ])
    write_json(folder / "step2.json", [record(1, 9), record(2, 9), record(3, 5)])
    write_json(folder / "step2_solutions.json", {"1": "I", "2": "A", "3": "D"})
    write_json(folder / "step3.json", [record(7, 4), record(8, 2)])
    write_json(folder / "step3_solutions.json", {"7": "D", "8": "B"})
    write_json(folder / "question_with_images.json", {"step2": [2], "step3": [8]})
    return folder


def test_a_folder_of_three_steps_reads_every_field(three_steps: Path) -> None:
    res = load("usmle", three_steps)
    items = res.items
    assert not res.skipped and res.extras["dropped_images"] == 0
    assert [it.id for it in items] == ["usmle-step1-0001", "usmle-step1-0002", "usmle-step1-0003",
                                       "usmle-step2-0001", "usmle-step2-0002", "usmle-step2-0003",
                                       "usmle-step3-0007", "usmle-step3-0008"]
    assert all(isinstance(it, MCQItem) and it.source == "usmle" and it.split == "test" and it.category is None
               for it in items)
    assert [it.answer for it in items] == [2, 1, 4, 8, 0, 3, 3, 1]
    assert [len(it.options) for it in items] == [5, 5, 5, 9, 9, 5, 4, 2]
    assert [it.meta["step"] for it in items] == [1, 1, 1, 2, 2, 2, 3, 3]
    assert [it.meta["no"] for it in items] == [1, 2, 3, 1, 2, 3, 7, 8]
    assert [it.meta["image"] for it in items] == [False, False, True, False, True, False, False, True]
    assert [it.meta["refers_to_figure"] for it in items] == [False, False, True, False, False, False, False, False]
    assert items[2].meta["image_url"] == "https://example.org/figure-3.png"
    assert all("image_url" not in it.meta for i, it in enumerate(items) if i != 2)
    assert items[3].options[8] == "invented choice i for question 1"
    assert items[0].question.startswith("An invented patient number 1 ")
    assert isinstance(items[0].meta["step"], int)


def test_step_split_and_a_single_file(three_steps: Path) -> None:
    assert {it.meta["step"] for it in load("usmle", three_steps, step=2).items} == {2}
    assert [it.id for it in load("usmle", three_steps, step="step3").items] == ["usmle-step3-0007",
                                                                                 "usmle-step3-0008"]
    one = load("usmle", three_steps / "step2.json")
    assert [it.answer for it in one.items] == [8, 0, 3] and one.items[1].meta["image"] is True
    assert {it.split for it in load("usmle", three_steps, split="eval").items} == {"eval"}
    with pytest.raises(InputError, match=r"step2\.json, field 'step': file is step 2, not step 1"):
        load("usmle", three_steps / "step2.json", step=1)
    with pytest.raises(InputError, match="step must be 1, 2 or 3"):
        load("usmle", three_steps, step=4)
    (three_steps / "step3.json").unlink()
    with pytest.raises(InputError, match=r"folder has no USMLE step file \(step3\.json\)"):
        load("usmle", three_steps, step=3)


def test_the_image_list_as_a_plain_list_flags_those_numbers(tmp_path: Path) -> None:
    write_json(tmp_path / "step1.json", [record(n, answer="A") for n in (1, 2, 3)])
    write_json(tmp_path / "question_with_images.json", [2, "3"])
    assert [it.meta["image"] for it in load("usmle", tmp_path / "step1.json").items] == [False, True, True]


def test_image_field_as_a_flag_or_a_url(tmp_path: Path) -> None:
    write_json(tmp_path / "step1.json", [record(1, answer="A", image=True), record(2, answer="A", image=False),
                                         record(3, answer="A", image="https://example.org/x.jpg"),
                                         record(4, answer="A", image_url="")])
    items = load("usmle", tmp_path / "step1.json").items
    assert [it.meta["image"] for it in items] == [True, False, True, False]
    assert items[2].meta["image_url"] == "https://example.org/x.jpg" and "image_url" not in items[0].meta


def test_drop_images_drops_flagged_questions_and_reports_each(three_steps: Path) -> None:
    res = load("usmle", three_steps, drop_images=True)
    assert [it.id for it in res.items] == ["usmle-step1-0001", "usmle-step1-0002", "usmle-step2-0001",
                                           "usmle-step2-0003", "usmle-step3-0007"]
    assert res.extras["dropped_images"] == 3
    assert [(Path(e.file).name, e.record, e.field) for e in res.skipped] == [
        ("step1.json", 3, "image"), ("step2.json", 2, "image"), ("step3.json", 2, "image")]
    assert all("image question dropped" in str(e) for e in res.skipped)
    with pytest.raises(InputError, match="drop_images must be true or false"):
        load("usmle", three_steps, drop_images="yes")


def test_data_load_command_reports_the_dropped_questions(three_steps: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "usmle.parquet"
    code = main(["data", "load", "usmle", str(three_steps), "-o", str(out), "--option", "drop_images=true"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err.count("image question dropped") == 3
    assert [it.id for it in read_items(out)] == [it.id for it in load("usmle", three_steps, drop_images=True).items]


@pytest.mark.parametrize(("text", "expected"), [
    ("The x-ray shown below was taken on admission.", True),
    ("A photomicrograph of the biopsy specimen is shown.", True),
    ("Her ECG is shown.", True),
    ("Which structure is labelled in the figure below?", True),
    ("As shown in the accompanying graph, the curve rises.", True),
    ("A chest x-ray shows bilateral infiltrates.", False),
    ("Laboratory studies are shown below.", False),
    ("He has shown no improvement after the graphite exposure.", False),
])
def test_refers_to_figure_heuristic(text: str, expected: bool) -> None:
    assert refers_to_figure(text) is expected


# --- bad records ------------------------------------------------------------------------------------------

def _drop(rec: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k != key}


BAD_RECORDS: dict[str, tuple[Any, str, str]] = {
    "record not an object": ("a string", None, "expected a JSON object"),
    "missing question": (_drop(record(3, answer="A"), "question"), "question", "missing"),
    "blank question": (record(3, answer="A", question="  "), "question", "empty"),
    "question not text": ({**record(3, answer="A"), "question": 5}, "question", "expected text, got int"),
    "options not an object": ({**record(3, answer="A"), "options": ["x", "y"]}, "options", "expected an object"),
    "one option": ({**record(3, answer="A"), "options": {"A": "only"}}, "options", "at least 2 options"),
    "options skip a letter": ({**record(3, answer="A"), "options": {"A": "x", "B": "y", "D": "z"}}, "options",
                              "consecutive letters from A, got A, B, D"),
    "options lower case": ({**record(3, answer="A"), "options": {"a": "x", "b": "y"}}, "options",
                           "consecutive letters from A"),
    "empty option": ({**record(3, answer="A"), "options": {"A": "x", "B": " "}}, "options.B", "option is empty"),
    "letter not among options": (record(3, 4, answer="E"), "answer", "'E' is not among the options A-D"),
    "answer_idx not among options": (record(3, 5, answer_idx="F: nothing"), "answer_idx", "not among the options"),
    "answer not a letter": (record(3, answer="most likely the second"), "answer", "expected an answer letter"),
    "answer a number": (record(3, answer=2), "answer", "expected an answer letter"),
    "answer and answer_idx disagree": (record(3, answer="A", answer_idx="B"), "answer", "differs from answer_idx"),
    "no answer anywhere": (record(3), "answer", "no step1_solutions.json beside the file"),
    "duplicate no": (record(1, answer="A"), "no", "duplicate id 'usmle-step1-0001' (first seen at record 1)"),
    "no missing": (_drop(record(3, answer="A"), "no"), "no", "missing"),
    "no not a number": (record("three", answer="A"), "no", "expected an integer"),  # type: ignore[arg-type]
    "image_url not text": (record(3, answer="A", image_url=7), "image_url", "expected a URL"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_bad_record_names_file_record_and_field(tmp_path: Path, case: str) -> None:
    bad, field, fragment = BAD_RECORDS[case]
    records = [record(1, answer="A"), record(2, answer="B"), bad, record(4, answer="D")]
    path = write_json(tmp_path / "step1.json", records)
    with pytest.raises(InputError) as info:
        load("usmle", path)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1
    assert msg.startswith(f"{path}, record 3") and fragment in msg, msg
    if field:
        assert f"field '{field}'" in msg, msg
    res = load("usmle", path, on_error="skip")
    assert [it.id for it in res.items] == ["usmle-step1-0001", "usmle-step1-0002", "usmle-step1-0004"]
    assert [(e.record, e.field) for e in res.skipped] == [(3, field)]


def test_answers_from_the_solutions_file_are_checked(tmp_path: Path) -> None:
    path = write_json(tmp_path / "step2.json", [record(1), record(2, answer="B"), record(3), record(4)])
    sol = write_json(tmp_path / "step2_solutions.json", {"1": "A", "2": "C", "3": 5})
    with pytest.raises(InputError, match=r"step2\.json, record 2, field 'answer': answer 'B' differs from "
                                         r"step2_solutions\.json's 'C'"):
        load("usmle", path)
    res = load("usmle", path, on_error="skip")
    assert [it.id for it in res.items] == ["usmle-step2-0001"]
    assert [(Path(e.file).name, e.record, e.field) for e in res.skipped] == [
        ("step2.json", 2, "answer"), ("step2_solutions.json", 3, "3"), ("step2.json", 4, "answer")]
    assert "expected an answer letter, got 5 (the answer of question 3)" in str(res.skipped[1])
    assert "step2_solutions.json has no entry '4'" in str(res.skipped[2])
    write_json(sol, ["A", "B"])
    with pytest.raises(InputError, match=r"step2_solutions\.json: expected a JSON object mapping question number"):
        load("usmle", path, on_error="skip")  # a whole-file error: nothing to skip past
    write_json(sol, {"first": "A"})
    with pytest.raises(InputError, match=r"step2_solutions\.json, field 'first': expected a question number"):
        load("usmle", path)


@pytest.mark.parametrize(("name", "data", "fragment"), [
    ("step1.json", {"1": "A"}, "expected a JSON list of question records, got dict (is this an answers file?)"),
    ("step1.json", [], "the list of questions is empty"),
    ("step1_solutions.json", {"1": "A"}, "this is an answers file; load step1.json"),
    ("questions.json", [record(1, answer="A")], "cannot tell the USMLE step from the file name"),
])
def test_bad_files(tmp_path: Path, name: str, data: Any, fragment: str) -> None:
    path = write_json(tmp_path / name, data)
    with pytest.raises(InputError) as info:
        load("usmle", path, on_error="skip")
    assert str(info.value).startswith(f"{path}: {fragment}")


def test_bad_image_list(tmp_path: Path) -> None:
    path = write_json(tmp_path / "step1.json", [record(1, answer="A")])
    images = tmp_path / "question_with_images.json"
    for data, fragment in (({"step4": [1]}, "field 'step4': expected a step"),
                           ({"step1": 3}, "field 'step1': expected a list of question numbers"),
                           ("4, 11", "expected a list of question numbers or an object keyed by step")):
        write_json(images, data)
        with pytest.raises(InputError, match=fragment) as info:
            load("usmle", path)
        assert str(images) in str(info.value)


def test_registered_with_its_options() -> None:
    spec = available_loaders()["usmle"]
    assert spec.needs_path and "USMLE" in spec.description
    assert set(spec.options or ()) == {"step", "drop_images", "split", "strict"}
    with pytest.raises(InputError, match=r"unknown option\(s\) for usmle: steps"):
        load("usmle", Path(__file__), steps=1)


# --- round trip ------------------------------------------------------------------------------------------

QUESTIONS = st.lists(
    st.tuples(st.integers(2, 9), st.integers(0, 8), st.booleans(), st.sampled_from(["", ": text", ") text"])),
    min_size=1, max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(QUESTIONS)
def test_roundtrip_random_option_counts_and_answers(tmp_path_factory: pytest.TempPathFactory,
                                                    questions: list[tuple[int, int, bool, str]]) -> None:
    folder = tmp_path_factory.mktemp("rt")
    records, solutions, expected = [], {}, []
    for no, (n, pick, inline, tail) in enumerate(questions, start=1):
        answer = pick % n
        letter = LETTERS[answer]
        if inline:
            records.append(record(no, n, answer=letter + tail))
        else:
            records.append(record(no, n))
            solutions[str(no)] = letter
        expected.append((n, answer))
    write_json(folder / "step3.json", records)
    write_json(folder / "step3_solutions.json", solutions)
    items = load("usmle", folder).items
    assert [(len(it.options), it.answer) for it in items] == expected
    assert [it.options[it.answer] for it in items] == [r["options"][LETTERS[a]] for r, (_, a) in
                                                      zip(records, expected, strict=True)]
    assert read_items(write_items(items, folder / "items.parquet")) == items

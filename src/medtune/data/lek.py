"""LEK (Polish medical final exam, English translation) as published with the orders paper.

No standalone LEK release exists; the paper (Yang et al. 2024) published its 874 questions inside its LLM
response files: ``{"questions": [{question, correct_answer, question_index, shuffle, response, top3,
clls}, ...]}``, where ``question`` is the whole prompt: "Answer the following ... Question: <stem>
A)  <option>. B)  ... E)  ...". This loader parses the stem and the five options out of that prompt.

Parsing the prompt: option markers are "<letter>) " preceded by whitespace. Option texts themselves can
contain such markers (e.g. "(A and B) differ"), so markers are found from the end: E is the last "E) ",
D the last "D) " before it, and so on. Option texts are kept as published apart from outer whitespace
(including their final full stop, which the source's text carries: one prompt ends without one).

Ids and positions: ``id`` is ``lek-<question_index>``. The records are not stored in ``question_index``
order, and the paper's difficulty table (``llm_difficulty_lek.csv``) is keyed by the record's 0-based
position in the file's ``questions`` list, so that position is kept as ``meta.position`` (and
``question_index`` as ``meta.question_index``). The responding model's answer, top-3 and option
log-likelihoods are kept in ``meta`` too (``response_model`` is the file's stem): they are the raw material
of the paper's ensemble difficulty.

Also reads a plain CSV form with a header ``prompt, A, B, C, D, E, Answer`` (``form="csv"``, or a ``.csv``
file): ``prompt`` is the stem, ``Answer`` the gold letter; ``meta.position`` is the row's 0-based position;
ids use a ``question_index`` column when present, else ``lek-pos<position>``.

Split: the paper makes its own split of the whole set, so every item gets ``split`` (default "train").
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from medtune.data.parsing import (
    UniqueIds,
    as_int,
    letter_to_index,
    load_json,
    read_csv_dicts,
    require_object,
    require_str,
)
from medtune.data.registry import LoadResult, OnError, RecordCollector, register_loader
from medtune.errors import InputError
from medtune.schema import MCQItem, make_item

SOURCE = "lek"
LEK_LETTERS = "ABCDE"
_QUESTION_MARK = "Question:"


def parse_prompt(prompt: str, letters: str = LEK_LETTERS) -> tuple[str, list[str]]:
    """Split a LEK prompt into (stem, options); raise InputError (field ``question``) if a marker is missing."""
    start = prompt.find(_QUESTION_MARK)
    body = prompt[start + len(_QUESTION_MARK):] if start >= 0 else prompt
    body = " " + body  # so a marker at the very start is still preceded by whitespace
    ends = len(body)
    spans: list[tuple[int, int]] = []  # (marker start, text start) per letter, filled from the end
    for letter in reversed(letters):
        matches = [m for m in re.finditer(rf"(?<=\s){letter}\)\s", body) if m.end() <= ends]
        if not matches:
            raise InputError(f"option marker '{letter})' not found in the prompt", field="question")
        m = matches[-1]
        spans.append((m.start(), m.end()))
        ends = m.start()
    spans.reverse()
    stem = body[: spans[0][0]].strip()
    options = []
    for i, (_, text_start) in enumerate(spans):
        text_end = spans[i + 1][0] if i + 1 < len(spans) else len(body)
        options.append(body[text_start:text_end].strip())
    for letter, opt in zip(letters, options, strict=True):
        if not opt:
            raise InputError(f"option {letter} is empty in the prompt", field="question")
    if not stem:
        raise InputError("the question stem is empty", field="question")
    return stem, options


def _build_response(record: Any, position: int, split: str, model: str, ids: UniqueIds) -> MCQItem:
    rec = require_object(record)
    prompt = require_str(rec, "question")
    stem, options = parse_prompt(prompt)
    answer = letter_to_index(rec.get("correct_answer"), len(options), field="correct_answer")
    if rec.get("question_index") is None:
        raise InputError("missing", field="question_index")
    qindex = as_int(rec["question_index"], field="question_index")
    item_id = f"{SOURCE}-{qindex}"
    ids.claim(item_id, f"record {position}", field="question_index")
    meta: dict[str, Any] = {"position": position, "question_index": qindex, "response_model": model}
    for key in ("shuffle", "response", "top3", "clls"):
        if key in rec:
            meta[key] = rec[key]
    return make_item(
        MCQItem,
        {"id": item_id, "question": stem, "options": options, "answer": answer, "source": SOURCE,
         "split": split, "meta": meta},
    )


def _load_responses(path: Path, on_error: OnError, split: str) -> LoadResult:
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
        raise InputError("not a LEK response file: expected an object with a 'questions' list", file=path,
                         field="questions")
    if not data["questions"]:
        raise InputError("the 'questions' list is empty", file=path, field="questions")
    collector = RecordCollector(path, on_error, record_kind="record")
    ids = UniqueIds()
    for pos, rec in enumerate(data["questions"]):
        collector.run(pos, lambda r=rec, p=pos: _build_response(r, p, split, path.stem, ids))
    return collector.result()


def _build_csv(row: Any, position: int, line: int, split: str, ids: UniqueIds) -> MCQItem:
    rec = require_object(row)
    stem = require_str(rec, "prompt")
    options = [require_str(rec, letter, field=letter) for letter in LEK_LETTERS]
    answer = letter_to_index(rec.get("Answer"), len(options), field="Answer")
    meta: dict[str, Any] = {"position": position}
    if str(rec.get("question_index", "")).strip():
        qindex = as_int(rec["question_index"], field="question_index")
        meta["question_index"] = qindex
        item_id = f"{SOURCE}-{qindex}"
    else:
        item_id = f"{SOURCE}-pos{position}"
    ids.claim(item_id, f"line {line}")
    return make_item(
        MCQItem,
        {"id": item_id, "question": stem, "options": options, "answer": answer, "source": SOURCE,
         "split": split, "meta": meta},
    )


def _load_csv(path: Path, on_error: OnError, split: str) -> LoadResult:
    columns, rows = read_csv_dicts(path)
    missing = [c for c in ("prompt", *LEK_LETTERS, "Answer") if c not in columns]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)} (expected prompt, A..E, Answer)", file=path,
                         field=missing[0])
    collector = RecordCollector(path, on_error, record_kind="line")
    ids = UniqueIds()
    for pos, (line, row) in enumerate(rows):
        collector.run(line, lambda r=row, p=pos, n=line: _build_csv(r, p, n, split, ids))
    return collector.result()


@register_loader("lek", options=(),
                 description="LEK questions from the paper's LLM-response JSON files (or the CSV form)")
def load_lek(
    path: Path,
    *,
    on_error: OnError = "raise",
    split: str | None = None,
    form: Literal["auto", "responses", "csv"] = "auto",
    **options: Any,
) -> LoadResult:
    """Load LEK: a response file (``.json``) or the CSV form. ids ``lek-<question_index>``; ``meta.position``."""
    if options:
        raise InputError(f"unknown option(s) for lek: {', '.join(sorted(options))}")
    path = Path(path)
    if path.is_dir():
        raise InputError("expected one LEK response .json (or .csv) file, got a folder", file=path)
    if form == "auto":
        form = "csv" if path.suffix.lower() == ".csv" else "responses"
    if form not in ("responses", "csv"):
        raise InputError(f"form must be 'auto', 'responses' or 'csv', got {form!r}", field="form")
    split = split or "train"
    return _load_csv(path, on_error, split) if form == "csv" else _load_responses(path, on_error, split)

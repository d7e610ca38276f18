"""MMLU (Hendrycks et al. 2021) subject CSVs in the released ``data.tar`` form.

Each ``<subject>_<split>.csv`` (split: dev, val, test) has no header and six columns: question, the four
options A-D, and the answer letter. The subject (from the file name) becomes ``category`` and the split
word in the name becomes ``split``.

``path`` is one CSV, or a folder searched recursively for ``*_dev.csv`` / ``*_val.csv`` / ``*_test.csv``
(the release keeps them in ``dev/``, ``val/``, ``test/`` subfolders). With a folder, ``split=`` keeps one
split and ``subjects=`` (a list, a comma-separated string, or ``"medical"`` for the six medical subjects)
keeps some subjects; naming a subject with no file is an error. With a single file, ``split=`` overrides
the split read from the name. Ids are ``mmlu-<subject>-<split>-<row>`` (row: 1-based record number).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from medtune.data.parsing import UniqueIds, letter_to_index, merge_results, parse_list_option, read_csv_rows
from medtune.data.registry import LoadResult, OnError, RecordCollector, register_loader
from medtune.errors import InputError
from medtune.schema import MCQItem, make_item

SOURCE = "mmlu"
MMLU_SPLITS = ("dev", "val", "test")
MEDICAL_SUBJECTS = (
    "anatomy",
    "clinical_knowledge",
    "college_biology",
    "college_medicine",
    "medical_genetics",
    "professional_medicine",
)
_NAME = re.compile(r"^(?P<subject>.+)_(?P<split>dev|val|test)\.csv$")
N_COLUMNS = 6


def subject_and_split(path: Path) -> tuple[str, str]:
    m = _NAME.match(path.name)
    if not m:
        raise InputError("expected an MMLU file named <subject>_<dev|val|test>.csv", file=path)
    return m["subject"], m["split"]


def _build(cells: list[str], row: int, subject: str, split: str, ids: UniqueIds) -> MCQItem:
    if len(cells) != N_COLUMNS:
        raise InputError(f"expected {N_COLUMNS} columns (question, A, B, C, D, answer), got {len(cells)}",
                         field="columns")
    question, *options, letter = cells
    for name, opt in zip("ABCD", options, strict=True):
        if not opt.strip():
            raise InputError("option is empty", field=name)
    answer = letter_to_index(letter, len(options), field="answer")
    item_id = f"{SOURCE}-{subject}-{split}-{row}"
    ids.claim(item_id, f"row {row}")
    return make_item(
        MCQItem,
        {"id": item_id, "question": question, "options": options, "answer": answer, "source": SOURCE,
         "split": split, "category": subject, "meta": {"subject": subject, "row": row}},
    )


def _load_file(path: Path, on_error: OnError, subject: str, split: str) -> LoadResult:
    collector = RecordCollector(path, on_error, record_kind="line")
    ids = UniqueIds()
    rows = list(read_csv_rows(path))
    if not rows:
        raise InputError("file is empty", file=path)
    for row, (line, cells) in enumerate(rows, start=1):
        collector.run(line, lambda c=cells, r=row: _build(c, r, subject, split, ids))
    return collector.result()


@register_loader("mmlu", options=(),
                 description="MMLU subject CSVs (question, A-D, answer letter); a file or a folder")
def load_mmlu(
    path: Path,
    *,
    on_error: OnError = "raise",
    split: str | None = None,
    subjects: str | list[str] | None = None,
    **options: Any,
) -> LoadResult:
    """Load one MMLU ``<subject>_<split>.csv`` or a folder of them (``split=``, ``subjects=`` select)."""
    if options:
        raise InputError(f"unknown option(s) for mmlu: {', '.join(sorted(options))}")
    path = Path(path)
    wanted = parse_list_option(subjects)
    if wanted == ["medical"]:
        wanted = list(MEDICAL_SUBJECTS)
    if path.is_file():
        subject, file_split = subject_and_split(path)
        if wanted and subject not in wanted:
            raise InputError(f"file subject '{subject}' is not among subjects={wanted}", file=path)
        return _load_file(path, on_error, subject, split or file_split)
    if split is not None and split not in MMLU_SPLITS:
        raise InputError(f"split must be one of {', '.join(MMLU_SPLITS)} for an MMLU folder, got {split!r}",
                         field="split")
    files = []
    for f in sorted(path.rglob("*.csv")):
        m = _NAME.match(f.name)
        if m and (split is None or m["split"] == split) and (wanted is None or m["subject"] in wanted):
            files.append((f, m["subject"], m["split"]))
    if wanted:
        found = {s for _, s, _ in files}
        missing = [s for s in wanted if s not in found]
        if missing:
            where = f" for split '{split}'" if split else ""
            raise InputError(f"no MMLU file{where} for subject(s): {', '.join(missing)}", file=path)
    if not files:
        raise InputError(f"no MMLU <subject>_<{split or 'dev|val|test'}>.csv files in this folder", file=path)
    return merge_results(_load_file(f, on_error, subj, sp) for f, subj, sp in files)

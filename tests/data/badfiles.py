"""Writers for small source-format files (good and deliberately broken) used by the loader tests.

Everything here is generated: no text from the real datasets is copied into the project.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

INVALID_UTF8 = b"\xff\xfe bad bytes \xc3\x28"


def write_jsonl(path: Path, records: Iterable[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def replace_line(path: Path, lineno: int, raw: bytes) -> Path:
    """Replace 1-based line ``lineno`` of a text file by ``raw`` bytes (keeps the newline)."""
    lines = path.read_bytes().splitlines(keepends=True)
    lines[lineno - 1] = raw + b"\n"
    path.write_bytes(b"".join(lines))
    return path


def truncate_line(path: Path, lineno: int) -> Path:
    """Cut line ``lineno`` in half, as an interrupted download would leave a JSON line."""
    line = path.read_bytes().splitlines()[lineno - 1]
    return replace_line(path, lineno, line[: len(line) // 2])


def break_utf8(path: Path, lineno: int) -> Path:
    """Put invalid UTF-8 bytes inside line ``lineno`` (the line stays otherwise intact)."""
    line = path.read_bytes().splitlines()[lineno - 1]
    return replace_line(path, lineno, line[:5] + INVALID_UTF8 + line[5:])


def write_csv(path: Path, rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> Path:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    if header is not None:
        writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8", newline="")
    return path


# --- generated records in each source's format ------------------------------------------------------------


def medqa_record(i: int, n_options: int = 5, answer: int = 0) -> dict[str, Any]:
    letters = "ABCDE"[:n_options]
    options = {letter: f"option {letter.lower()} of question {i}" for letter in letters}
    return {
        "question": f"Generated question number {i}?",
        "answer": options[letters[answer]],
        "options": options,
        "meta_info": "step1" if i % 2 else "step2&3",
        "answer_idx": letters[answer],
    }


def medmcqa_record(i: int, cop1: int, *, choice_type: str = "single", exp: str | None = "Because.") -> dict[str, Any]:
    """A record in the original release's form (1-based ``cop``)."""
    return {
        "question": f"Generated MedMCQA question {i}?",
        "exp": exp,
        "cop": cop1,
        "opa": f"alpha {i}",
        "opb": f"beta {i}",
        "opc": f"gamma {i}",
        "opd": f"delta {i}",
        "subject_name": ["Anatomy", "Pharmacology", "Surgery"][i % 3],
        "topic_name": f"topic {i % 4}",
        "id": f"00000000-0000-4000-8000-{i:012d}",
        "choice_type": choice_type,
    }


def lek_prompt(stem: str, options: Sequence[str]) -> str:
    """A prompt in the form of the paper's response files."""
    opts = " ".join(f"{letter})  {text}" for letter, text in zip("ABCDE", options, strict=True))
    return (
        "Answer the following multiple choice question by giving the most appropriate response. "
        f"The answer should be one of [A, B, C, D, E]. Question: {stem} {opts}"
    )


def lek_record(question_index: int, answer: str = "A", stem: str | None = None,
               options: Sequence[str] | None = None) -> dict[str, Any]:
    stem = stem or f"Generated LEK stem {question_index}:"
    options = options or [f"choice {k} for {question_index}." for k in range(5)]
    return {
        "question": lek_prompt(stem, options),
        "correct_answer": answer,
        "question_index": question_index,
        "shuffle": [0, 1, 2, 3, 4],
        "response": "B",
        "top3": ["B", "A", "C"],
        "clls": [-1.5, -0.25, -3.0, -2.0, -4.125],
    }


def write_lek(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"questions": list(records)}, indent=1), encoding="utf-8")
    return path


def pubmedqa_record(i: int, decision: str = "yes") -> dict[str, Any]:
    return {
        "QUESTION": f"Does generated factor {i} matter?",
        "CONTEXTS": [f"Background sentence {i}.", f"Result sentence {i}."],
        "LABELS": ["BACKGROUND", "RESULTS"],
        "MESHES": ["Humans"],
        "YEAR": "2001",
        "reasoning_required_pred": decision,
        "reasoning_free_pred": decision,
        "final_decision": decision,
        "LONG_ANSWER": f"Generated conclusion {i}.",
    }


def medquad_xml(doc_id: str, pairs: Sequence[tuple[str, str, str]], *, root: str = "Document",
                group: str = "") -> str:
    """A MedQuAD document; ``pairs`` are (qtype, question, answer)."""
    qa = "\n".join(
        f'<QAPair pid="{k}">\n<Question qid="{doc_id}-{k}" qtype="{qtype}">{q}</Question>\n<Answer>{a}</Answer>\n'
        "</QAPair>"
        for k, (qtype, q, a) in enumerate(pairs, start=1)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<{root} id="{doc_id}" source="Generated" url="http://example.org/{doc_id}">\n'
        f"<Focus>Generated focus {doc_id}</Focus>\n"
        f"<UMLS>\n<CUI></CUI>\n<SemanticType></SemanticType>\n<SemanticGroup>{group}</SemanticGroup>\n</UMLS>\n"
        f"<QAPairs>\n{qa}\n</QAPairs>\n</{root}>\n"
    )


# --- the bad-input corpus: one small broken file per case, for every loader and for items.parquet --------------
#
# Each case writes its input under a fresh folder and says what the error must name: the file, the place
# (``line 3``, ``record 0``, ``PMID 11``, ``row 2``, ...) and the field, plus a fragment of the reason. The
# same cases run through ``load()`` and through ``medtune data load`` (tests/data/test_bad_corpus.py).

BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class BadCase:
    source: str
    name: str
    write: Callable[[Path], Path]  # writes the input under a folder, returns the path to load
    fragment: str
    place: str | None = None  # "line 3", "record 0", ...: None when the error is about the whole file
    field: str | None = None
    options: dict[str, Any] = dc_field(default_factory=dict)
    named: Callable[[Path], Path] | None = None  # the file the message names, when not the loaded path

    @property
    def id(self) -> str:
        return f"{self.source}-{self.name}"


def _bytes(name: str, data: bytes) -> Callable[[Path], Path]:
    def write(d: Path) -> Path:
        (d / name).write_bytes(data)
        return d / name

    return write


def _jsonl_of(name: str, records: Sequence[Any], *, tail: bytes = b"") -> Callable[[Path], Path]:
    return _bytes(name, "".join(json.dumps(r) + "\n" for r in records).encode() + tail)


def _json_of(name: str, obj: Any) -> Callable[[Path], Path]:
    return _bytes(name, json.dumps(obj, indent=1).encode())


def _folder(name: str, files: dict[str, bytes] | None = None) -> Callable[[Path], Path]:
    def write(d: Path) -> Path:
        (d / name).mkdir()
        for fname, data in (files or {}).items():
            (d / name / fname).write_bytes(data)
        return d / name

    return write


def _missing(name: str) -> Callable[[Path], Path]:
    return lambda d: d / name


def _with(rec: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(rec))
    for key, value in changes.items():
        if value is _DROP:
            out.pop(key, None)
        else:
            out[key] = value
    return out


_DROP = object()


def _parquet(name: str, rows: list[dict[str, Any]], schema: Any = None) -> Callable[[Path], Path]:
    def write(d: Path) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows, schema=schema) if rows else pa.table({"q": pa.array([], pa.string())})
        pq.write_table(table, d / name)
        return d / name

    return write


def _common(source: str, name: str, *, folder_fragment: str = "folder") -> list[BadCase]:
    """Cases every file-reading loader must handle the same way."""
    return [
        BadCase(source, "empty file", _bytes(name, b""), "file is empty"),
        BadCase(source, "only a BOM", _bytes(name, BOM + b"\r\n"), "file is empty"),
        BadCase(source, "missing file", _missing(name), "not found"),
        BadCase(source, "a folder", _folder(name), folder_fragment),
    ]


def _medqa_cases() -> list[BadCase]:
    good = [medqa_record(i) for i in range(3)]
    lines = [json.dumps(r).encode() for r in good]
    return [
        *_common("medqa", "test.jsonl"),
        BadCase("medqa", "truncated line", _bytes("test.jsonl", b"\n".join([lines[0], lines[1][:40], lines[2]])),
                "invalid JSON", "line 2"),
        BadCase("medqa", "a JSON array", _bytes("test.jsonl", json.dumps(good, indent=1).encode()),
                "got a JSON array", "line 1"),
        BadCase("medqa", "options a list", _jsonl_of("test.jsonl", [good[0], _with(good[1], options=["a", "b"])]),
                "non-empty object keyed by letters", "line 2", "options"),
        BadCase("medqa", "question a number", _jsonl_of("test.jsonl", [_with(good[0], question=7)]),
                "expected text, got int", "line 1", "question"),
        BadCase("medqa", "no answer_idx", _jsonl_of("test.jsonl", [*good[:2], _with(good[2], answer_idx=_DROP)]),
                "expected an answer letter", "line 3", "answer_idx"),
        BadCase("medqa", "letter not among options", _jsonl_of("test.jsonl", [_with(good[0], answer_idx="F")]),
                "outside the options", "line 1", "answer_idx"),
        BadCase("medqa", "options empty", _jsonl_of("test.jsonl", [good[0], _with(good[1], options={})]),
                "non-empty object", "line 2", "options"),
        BadCase("medqa", "invalid UTF-8", _bytes("test.jsonl", b"\n".join([lines[0], lines[1][:9] + INVALID_UTF8
                                                                             + lines[1][9:]])),
                "invalid UTF-8", "line 2"),
    ]


def _medmcqa_cases() -> list[BadCase]:
    good = [medmcqa_record(i, cop1=1 + i % 4) for i in range(3)]
    lines = [json.dumps(r).encode() for r in good]
    return [
        *_common("medmcqa", "train.json"),
        BadCase("medmcqa", "truncated line", _bytes("train.json", lines[0] + b"\n" + lines[1][:30] + b"\n"),
                "invalid JSON", "line 2"),
        BadCase("medmcqa", "truncated array", _bytes("train.json", json.dumps(good, indent=1).encode()[:-40]),
                "invalid JSON", "line"),
        BadCase("medmcqa", "cop not a number", _jsonl_of("train.json", [good[0], _with(good[1], cop="b")]),
                "expected an integer", "line 2", "cop"),
        BadCase("medmcqa", "no question", _jsonl_of("train.json", [_with(good[0], question=_DROP)]),
                "missing", "line 1", "question"),
        BadCase("medmcqa", "cop out of range", _jsonl_of("train.json", [good[0], good[1], _with(good[2], cop=5)]),
                "outside 1-4", "line 3", "cop"),
        BadCase("medmcqa", "option empty", _jsonl_of("train.json", [_with(good[0], opc=" ")]),
                "empty", "line 1", "opc"),
        BadCase("medmcqa", "duplicate ids",
                _jsonl_of("train.json", [good[0], good[1], _with(good[2], id=good[0]["id"])]),
                "duplicate id", "line 3", "id"),
        BadCase("medmcqa", "invalid UTF-8", _bytes("train.json", lines[0][:12] + INVALID_UTF8 + lines[0][12:]),
                "invalid UTF-8", "line 1"),
        BadCase("medmcqa", "Parquet with wrong columns", _parquet("train.parquet", [{"q": "Q?", "a": "x"}]),
                "missing column(s) id, question", None, "id"),
        BadCase("medmcqa", "not Parquet", _bytes("train.parquet", b"id,question\n1,Q?\n"),
                "not a readable Parquet file"),
    ]


def _lek_cases() -> list[BadCase]:
    good = [lek_record(i) for i in range(1, 4)]

    def responses(records: list[Any]) -> Callable[[Path], Path]:
        return _json_of("Model-7b.json", {"questions": records})

    return [
        *_common("lek", "Model-7b.json"),
        BadCase("lek", "truncated JSON", _bytes("Model-7b.json", json.dumps({"questions": good}, indent=1
                                                                          ).encode()[:300]),
                "invalid JSON", "line"),
        BadCase("lek", "an array, not the response object", _json_of("Model-7b.json", good),
                "not a LEK response file", None, "questions"),
        BadCase("lek", "questions empty", responses([]), "list is empty", None, "questions"),
        BadCase("lek", "no correct_answer", responses([good[0], _with(good[1], correct_answer=_DROP)]),
                "expected an answer letter", "record 1", "correct_answer"),
        BadCase("lek", "letter not among options", responses([_with(good[0], correct_answer="F")]),
                "outside the options", "record 0", "correct_answer"),
        BadCase("lek", "prompt without options", responses([_with(good[0], question="Question: What? A) x")]),
                "option marker", "record 0", "question"),
        BadCase("lek", "question_index not a number", responses([_with(good[0], question_index="first")]),
                "expected an integer", "record 0", "question_index"),
        BadCase("lek", "duplicate question_index", responses([good[0], _with(good[1], question_index=1)]),
                "duplicate id", "record 1", "question_index"),
        BadCase("lek", "invalid UTF-8", _bytes("Model-7b.json", b'{"questions": [' + INVALID_UTF8 + b"]}"),
                "invalid UTF-8", "line 1"),
        BadCase("lek", "CSV without Answer column", _bytes("lek.csv", b"prompt,A,B,C,D,E\nQ?,a,b,c,d,e\n"),
                "missing column(s) Answer", None, "Answer"),
    ]


def _mmlu_cases() -> list[BadCase]:
    rows = [[f"Q{i}?", "a", "b", "c", "d", "ABCD"[i]] for i in range(3)]

    def csv_of(cells: list[list[str]]) -> Callable[[Path], Path]:
        return lambda d: write_csv(d / "anatomy_test.csv", cells)

    return [
        *_common("mmlu", "anatomy_test.csv", folder_fragment="no MMLU"),
        BadCase("mmlu", "wrong column count", csv_of([rows[0], rows[1][:5]]), "expected 6 columns", "line 2",
                "columns"),
        BadCase("mmlu", "letter not among options", csv_of([rows[0], rows[1], [*rows[2][:5], "E"]]),
                "outside the options", "line 3", "answer"),
        BadCase("mmlu", "option empty", csv_of([["Q?", "a", "", "c", "d", "A"]]), "option is empty", "line 1", "B"),
        BadCase("mmlu", "invalid UTF-8",
                _bytes("anatomy_test.csv", b"Q?,a,b,c,d,A\nQ2" + INVALID_UTF8 + b",a,b,c,d,B\n"),
                "invalid UTF-8", "line 2"),
        BadCase("mmlu", "name without subject and split", _bytes("questions.csv", b"Q?,a,b,c,d,A\n"),
                "expected an MMLU file named"),
        BadCase("mmlu", "subject without a file", _folder("data", {"anatomy_test.csv": b"Q?,a,b,c,d,A\n"}),
                "no MMLU file for subject(s): virology", options={"subjects": "virology"}),
    ]


def _pubmedqa_cases() -> list[BadCase]:
    good = {str(10 + i): pubmedqa_record(i) for i in range(3)}

    def pqal(data: Any) -> Callable[[Path], Path]:
        return _json_of("ori_pqal.json", data)

    def with_truth(truth: bytes) -> Callable[[Path], Path]:
        def write(d: Path) -> Path:
            (d / "test_ground_truth.json").write_bytes(truth)
            return pqal(good)(d)

        return write

    return [
        *_common("pubmedqa", "ori_pqal.json", folder_fragment="no ori_pqal.json"),
        BadCase("pubmedqa", "truncated JSON", _bytes("ori_pqal.json", json.dumps(good, indent=1).encode()[:200]),
                "invalid JSON", "line"),
        BadCase("pubmedqa", "an array, not keyed by PMID", pqal(list(good.values())), "keyed by PubMed id"),
        BadCase("pubmedqa", "no QUESTION", pqal({**good, "11": _with(good["11"], QUESTION=_DROP)}), "missing",
                "PMID 11", "QUESTION"),
        BadCase("pubmedqa", "decision not yes/no/maybe",
                pqal({**good, "12": _with(good["12"], final_decision="perhaps")}),
                "expected one of yes, no, maybe", "PMID 12", "final_decision"),
        BadCase("pubmedqa", "CONTEXTS a string", pqal({"10": _with(good["10"], CONTEXTS="one context")}),
                "expected a list of strings", "PMID 10", "CONTEXTS"),
        BadCase("pubmedqa", "duplicate PMID", _bytes("ori_pqal.json", b'{"10": ' + json.dumps(good["10"]).encode()
                                                     + b', "10": ' + json.dumps(good["11"]).encode() + b"}"),
                "duplicate key '10'", None, "10"),
        BadCase("pubmedqa", "invalid UTF-8", _bytes("ori_pqal.json", b'{"10": {"QUESTION": "' + INVALID_UTF8 + b'"}}'),
                "invalid UTF-8", "line 1"),
        BadCase("pubmedqa", "ground truth label", with_truth(b'{"10": "perhaps"}'), "expected yes/no/maybe",
                "PMID 10", named=lambda d: d / "test_ground_truth.json"),
    ]


def _medquad_cases() -> list[BadCase]:
    good = medquad_xml("0001", [("information", "What is X?", "X is a thing."), ("symptoms", "What are Y?", "Y.")])
    return [
        *_common("medquad", "0001.xml", folder_fragment="no .xml files"),
        BadCase("medquad", "truncated XML", _bytes("0001.xml", good.encode()[:-60]), "malformed XML", "line"),
        BadCase("medquad", "not a MedQuAD document", _bytes("0001.xml", b"<Other><QAPairs/></Other>"),
                "not a MedQuAD document"),
        BadCase("medquad", "empty answer", _bytes("0001.xml", good.replace("Y.", "").encode()), "answer is empty",
                "QAPair 2", "Answer"),
        BadCase("medquad", "no question", _bytes("0001.xml", good.replace('<Question qid="0001-1" qtype="information">'
                                                                          "What is X?</Question>", "").encode()),
                "missing", "QAPair 1", "Question"),
        BadCase("medquad", "duplicate pid", _bytes("0001.xml", good.replace('pid="2"', 'pid="1"').encode()),
                "duplicate id", "QAPair 1", "pid"),
        BadCase("medquad", "invalid UTF-8", _bytes("0001.xml", good.encode().replace(b"X is a", INVALID_UTF8)),
                "invalid UTF-8", "line"),
    ]


TABULAR_MAPPING = {"question_col": "q", "options_cols": "a,b,c", "answer_col": "ans", "answer_format": "letter"}
_TAB_HEADER = ["q", "a", "b", "c", "ans", "topic"]
_TAB_ROWS = [[f"Q{i}?", "x", "y", "z", "ABC"[i % 3], "renal"] for i in range(3)]


def _tabular_cases() -> list[BadCase]:
    recs = [dict(zip(_TAB_HEADER, r, strict=True)) for r in _TAB_ROWS]
    lines = [json.dumps(r).encode() for r in recs]

    def csv_of(rows: list[list[Any]], header: list[str] = _TAB_HEADER) -> Callable[[Path], Path]:
        return lambda d: write_csv(d / "quiz.csv", rows, header=header)

    def case(name: str, write: Callable[[Path], Path], fragment: str, place: str | None = None,
             field: str | None = None, **options: Any) -> BadCase:
        return BadCase("tabular", name, write, fragment, place, field, {**TABULAR_MAPPING, **options})

    return [
        *(BadCase(c.source, c.name, c.write, c.fragment, c.place, c.field, dict(TABULAR_MAPPING))
          for c in _common("tabular", "quiz.csv")),
        # CSV
        case("CSV header only", csv_of([]), "header but no rows"),
        case("CSV mapped category column missing", csv_of(_TAB_ROWS), "column(s) subject not in the header", None,
             "subject", category_col="subject"),
        case("CSV mapped id column missing", csv_of(_TAB_ROWS), "check id_col", None, "qid", id_col="qid"),
        case("CSV row of the wrong width", csv_of([_TAB_ROWS[0], _TAB_ROWS[1][:4]]), "row has 4 columns", "line 3",
             "columns"),
        case("CSV letter not among options", csv_of([_TAB_ROWS[0], [*_TAB_ROWS[1][:4], "D", "renal"]]),
             "outside the options A-C", "line 3", "ans"),
        case("CSV duplicate ids", csv_of([["1", *r] for r in _TAB_ROWS[:2]], ["id", *_TAB_HEADER]),
             "duplicate id '1'", "line 3", "id", id_col="id"),
        case("CSV difficulty not a number", csv_of(_TAB_ROWS), "expected a number or one of easy", "line 2", "topic",
             difficulty_col="topic"),
        case("CSV invalid UTF-8", _bytes("quiz.csv", b"q,a,b,c,ans\nQ?,x,y,z,A\nQ" + INVALID_UTF8 + b",x,y,z,B\n"),
             "invalid UTF-8", "line 3"),
        # JSON lines
        case("JSONL truncated line", _bytes("quiz.jsonl", lines[0] + b"\n" + lines[1] + b"\n" + lines[2][:20]),
             "invalid JSON", "line 3"),
        case("JSONL mapped column missing", _jsonl_of("quiz.jsonl", recs), "column(s) subject not in the file", None,
             "subject", category_col="subject"),
        case("JSONL option a list", _jsonl_of("quiz.jsonl", [recs[0], {**recs[1], "b": ["y"]}]), "expected text",
             "line 2", "b"),
        case("JSONL question an object", _jsonl_of("quiz.jsonl", [{**recs[0], "q": {"text": "Q?"}}]),
             "expected text, got dict", "line 1", "q"),
        case("JSONL question missing", _jsonl_of("quiz.jsonl", [recs[0], {k: v for k, v in recs[1].items()
                                                                         if k != "q"}]),
             "column missing", "line 2", "q"),
        case("JSONL not objects", _jsonl_of("quiz.jsonl", ["Q?", "x"]), "expected a JSON object", "line 1"),
        # Parquet
        case("Parquet mapped column missing", _parquet("quiz.parquet", recs), "column(s) subject not in the file",
             None, "subject", category_col="subject"),
        case("Parquet wrong columns", _parquet("quiz.parquet", [{"question": "Q?", "answer": "A"}]),
             "column(s) q, ans, a, b, c not in the file", None, "q"),
        case("Parquet no rows", _parquet("quiz.parquet", []), "no rows"),
        case("not Parquet", _bytes("quiz.parquet", b"q,a\nQ?,x\n"), "not a readable Parquet file"),
    ]


def usmle_record(no: int, n_options: int = 5, answer: str | None = "A") -> dict[str, Any]:
    """A record of a USMLE self-assessment step file (medAlpaca's form); ``answer=None``: in the solutions file."""
    rec: dict[str, Any] = {"no": no, "question": f"Generated USMLE question {no}?",
                           "options": {k: f"choice {k} of {no}" for k in "ABCDEFGHI"[:n_options]}}
    if answer is not None:
        rec["answer"] = answer
    return rec


def _usmle_cases() -> list[BadCase]:
    good = [usmle_record(i) for i in range(1, 4)]

    def with_solutions(solutions: bytes) -> Callable[[Path], Path]:
        def write(d: Path) -> Path:
            (d / "step1_solutions.json").write_bytes(solutions)
            return _json_of("step1.json", [usmle_record(1, answer=None)])(d)

        return write

    return [
        *_common("usmle", "step1.json", folder_fragment="no USMLE step file"),
        BadCase("usmle", "truncated JSON", _bytes("step1.json", json.dumps(good, indent=1).encode()[:-30]),
                "invalid JSON", "line"),
        BadCase("usmle", "not a list", _json_of("step1.json", {"1": "A"}), "expected a JSON list"),
        BadCase("usmle", "options skip a letter",
                _json_of("step1.json", [good[0], {**good[1], "options": {"A": "x", "C": "y"}}]),
                "consecutive letters from A", "record 2", "options"),
        BadCase("usmle", "letter not among options", _json_of("step1.json", [{**good[0], "answer": "F"}]),
                "not among the options", "record 1", "answer"),
        BadCase("usmle", "duplicate no", _json_of("step1.json", [good[0], good[1], good[0]]), "duplicate id",
                "record 3", "no"),
        BadCase("usmle", "no answer anywhere", _json_of("step1.json", [usmle_record(1, answer=None)]),
                "no step1_solutions.json beside the file", "record 1", "answer"),
        BadCase("usmle", "solutions not an object", with_solutions(b'["A"]'), "expected a JSON object",
                named=lambda d: d / "step1_solutions.json"),
        BadCase("usmle", "invalid UTF-8", _bytes("step1.json", b'[{"no": 1, "question": "' + INVALID_UTF8 + b'"}]'),
                "invalid UTF-8", "line 1"),
    ]


def _instruct_cases() -> list[BadCase]:
    """alpaca, chat and preference files (JSON arrays, JSON lines, Parquet for pairs)."""
    alpaca = {"instruction": "Name the drug.", "input": "", "output": "Zorafen."}
    chat = {"messages": [{"role": "user", "content": "Which drug?"}, {"role": "assistant", "content": "Zorafen."}]}
    pair = {"prompt": "Which drug?", "chosen": "Zorafen.", "rejected": "Quilmab."}
    return [
        BadCase("alpaca", "output missing", _json_of("meadow.json", [alpaca, {"instruction": "Name it."}]),
                "missing", "record 2", "output"),
        BadCase("alpaca", "truncated line", _jsonl_of("meadow.jsonl", [alpaca], tail=b'{"instruction": "Na'),
                "invalid JSON", "line 2"),
        BadCase("alpaca", "not an object", _json_of("meadow.json", [alpaca, "Name the drug."]),
                "expected a JSON object", "record 2"),
        BadCase("chat", "ends with the user", _jsonl_of("chat.jsonl", [chat, {"messages": chat["messages"][:1]}]),
                "must end with the assistant's answer", "line 2", "messages.0"),
        BadCase("chat", "sharegpt unknown speaker",
                _json_of("sharegpt.json", [{"conversations": [{"from": "patient", "value": "Hi"},
                                                              {"from": "gpt", "value": "Hello"}]}]),
                "unknown role 'patient'", "record 1", "conversations.0.from"),
        BadCase("preference", "rejected missing", _jsonl_of("pairs.jsonl", [pair, {**pair, "rejected": None}]),
                "missing", "line 2", "rejected"),
        BadCase("preference", "same answers", _json_of("pairs.json", [{**pair, "rejected": "Zorafen."}]),
                "the chosen and the rejected answer are the same", "record 1", "rejected"),
    ]


def loader_cases() -> list[BadCase]:
    """The whole corpus of bad inputs for ``medtune data load``."""
    return [*_medqa_cases(), *_medmcqa_cases(), *_lek_cases(), *_mmlu_cases(), *_pubmedqa_cases(),
            *_medquad_cases(), *_tabular_cases(), *_usmle_cases(), *_instruct_cases()]


# items.parquet as read by medtune.schema.read_items (written here with pyarrow, never by write_items)

_ITEM_COLUMNS = ["id", "question", "options", "answer", "source", "split", "category", "subcategory",
                 "human_difficulty", "explanation", "meta"]


def item_row(i: int, **changes: Any) -> dict[str, Any]:
    row = {"id": f"q{i}", "question": f"Question {i}?", "options": ["a", "b", "c"], "answer": i % 3,
           "source": "test", "split": "train", "category": None, "subcategory": None, "human_difficulty": None,
           "explanation": None, "meta": "{}"}
    row.update(changes)
    return row


def _items(rows: list[dict[str, Any]], *, kind: bytes | None = b"mcq") -> Callable[[Path], Path]:
    def write(d: Path) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows)
        if kind is not None:
            table = table.replace_schema_metadata({b"medtune.kind": kind})
        pq.write_table(table, d / "items.parquet")
        return d / "items.parquet"

    return write


def items_cases() -> list[BadCase]:
    """Broken items files: what ``read_items`` (and so every command that reads items) must reject by name."""
    good = [item_row(i) for i in range(3)]
    return [
        BadCase("items", "missing file", _missing("items.parquet"), "file not found"),
        BadCase("items", "a folder", _folder("items.parquet"), "got a folder"),
        BadCase("items", "empty file", _bytes("items.parquet", b""), "not a readable Parquet file"),
        BadCase("items", "not Parquet", _bytes("items.parquet", b'{"id": "q1"}\n'), "not a readable Parquet file"),
        BadCase("items", "wrong columns", _items([{"id": "q1", "difficulty": 0.5}], kind=None),
                "not an items file: missing column(s) question", None, "question"),
        BadCase("items", "an extra column", _items([{**r, "bucket": "easy"} for r in good]),
                "unexpected column(s) bucket", None, "bucket"),
        BadCase("items", "unknown kind", _items(good, kind=b"essay"), "unknown item kind", None, "medtune.kind"),
        BadCase("items", "answer out of range", _items([good[0], item_row(1, answer=3)]), "outside the 3 options",
                "row 2", "answer"),
        BadCase("items", "options empty", _items([item_row(0, options=[])]), "options", "row 1", "options"),
        BadCase("items", "answer not a number", _items([item_row(0, answer="0"), item_row(1, answer="b")]),
                "valid integer", "row 2", "answer"),
        BadCase("items", "duplicate ids", _items([good[0], good[1], item_row(2, id="q0")]), "duplicate id 'q0'",
                "row 3", "id"),
        BadCase("items", "blank question", _items([item_row(0, question=" ")]), "question is empty", "row 1",
                "question"),
        BadCase("items", "meta not JSON", _items([good[0], item_row(1, meta="{oops")]), "JSON object", "row 2",
                "meta"),
        BadCase("items", "difficulty not a number", _items([item_row(0, human_difficulty="very")]),
                "expected a number or one of easy", "row 1", "human_difficulty"),
    ]

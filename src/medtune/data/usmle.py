"""The USMLE self-assessment sets (steps 1, 2 and 3) in medAlpaca's distribution.

Users get the files from the ``medalpaca/medical_meadow_usmle_self_assessment`` data set on the Hugging Face
Hub: ``step1.json``, ``step2.json``, ``step3.json``, each a JSON list of records::

    {"no": 1, "question": "...", "options": {"A": "...", ..., "E": "..."}}

with up to nine options (A-I); some records carry ``image_url`` (the question refers to a figure that is not
in the text). The answers come either in the record (``answer`` or ``answer_idx``: ``"C"`` or
``"C: option text"``) or in ``step1_solutions.json`` beside it, a JSON object mapping the question number
(as text) to the letter. ``question_with_images.json`` may lie beside them: a list of question numbers
(applied to each step file of the folder), or an object keyed by step (``{"step1": [4, 11], ...}``).

Choices made here (and why):
- ``path`` is one step file or a folder holding ``step1.json``..; a folder is read in step order.
  ``step=`` keeps one step (with a folder only its file is read).
- ids are ``usmle-step<N>-<no, 4 digits>``: the question number is the sets' own key (the solutions file
  uses it), so ids survive a re-download and sort in question order.
- the answer: ``answer_idx``, else ``answer``; the letter at the start is taken (a value that is exactly one
  option's text is read as that option). A record with no answer takes it from the solutions file; a record
  with both must agree with it: the two are meant to be the same key, so a disagreement means a corrupted
  file, reported rather than guessed.
- images: ``meta.image`` is True when the record has ``image_url`` (or ``image``) or is listed in
  ``question_with_images.json``; such questions cannot be answered from the text alone, so ``drop_images=True``
  drops them (each reported in ``LoadResult.skipped`` and counted in ``extras["dropped_images"]``).
  ``meta.refers_to_figure`` flags text that speaks of a figure, photograph, x-ray, ECG ... "shown": a
  heuristic (a regular expression over the question), kept as a flag only, never a reason to drop.
- unanswerable questions: the published files hold a few questions whose options are all empty (the choices are
  in a figure) and a few whose solutions-file letter is not among the question's options. Neither can be asked or scored
  from the text, and failing the whole load over them would make the published folder unloadable, so they are
  skipped by default, each reported in ``LoadResult.skipped`` (file and record) and counted in
  ``extras["unanswerable"]``; ``strict=True`` stops at the first one instead, like any other bad record.
- ``split`` is "test" unless given: the sets are self-assessment exams, never training data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtune.data.parsing import LETTERS, UniqueIds, as_int, load_json, optional_str, require_object, require_str
from medtune.data.registry import LoadResult, OnError, RecordCollector, register_loader
from medtune.errors import InputError
from medtune.schema import MIN_OPTIONS, MCQItem, make_item

SOURCE = "usmle"
STEPS = (1, 2, 3)
IMAGES_FILE = "question_with_images.json"
SOLUTIONS_SUFFIX = "_solutions"
ANSWER_FIELDS = ("answer_idx", "answer")
_STEP_IN_NAME = re.compile(r"(?:^|[^a-z0-9])step[ _-]?([1-3])$")
_STEP_KEY = re.compile(r"^\s*(?:step[ _-]?)?([1-3])\s*$", re.IGNORECASE)
# A letter alone, or followed by ":", ")" or "." and the option text ("C: Aspirin", "C) Aspirin").
_ANSWER_LETTER = re.compile(r"^\s*([A-Za-z])\s*(?:[:).]\s*.*)?$", re.DOTALL)

_FIGURE_NOUN = (r"(?:figures?|images?|photo(?:graph)?s?|photomicrographs?|micrographs?|pictures?|graphs?|charts?|"
                r"diagrams?|illustrations?|exhibits?|x-?rays?|radiographs?|ct scans?|mri|scans?|ecgs?|ekgs?|"
                r"electrocardiograms?|tracings?|smears?)")
_SHOWN = r"(?:shown|below|above|depicted|pictured|illustrated|displayed|provided|attached|accompanying)"
REFERS_TO_FIGURE = re.compile(
    rf"\b{_FIGURE_NOUN}\b[^.?!\n]{{0,40}}?\b{_SHOWN}\b|\b{_SHOWN}\b[^.?!\n]{{0,40}}?\b{_FIGURE_NOUN}\b",
    re.IGNORECASE,
)


def refers_to_figure(text: str) -> bool:
    """Whether the question speaks of a figure that is not in its text ("the x-ray shown", "the photograph
    below"). A heuristic: a regular expression, which can miss an unusual wording or flag a figure of speech."""
    return REFERS_TO_FIGURE.search(text) is not None


def step_of(path: Path) -> int:
    """The USMLE step (1-3) from a file name ``step<N>.json``; solutions files and other names are errors."""
    stem = path.stem.lower()
    if stem.endswith(SOLUTIONS_SUFFIX):
        raise InputError(f"this is an answers file; load {path.stem.removesuffix(SOLUTIONS_SUFFIX)}.json "
                         "(its answers are read from here)", file=path)
    m = _STEP_IN_NAME.search(stem)
    if not m:
        raise InputError("cannot tell the USMLE step from the file name (expected step1.json, step2.json or "
                         "step3.json)", file=path)
    return int(m[1])


class _Unanswerable(InputError):
    """A question the published files leave without usable choices or key: skipped unless ``strict``."""


def _answer_letter(value: Any, options: list[str], *, field: str, beyond: type[InputError] = InputError) -> str:
    """The letter of an answer value ("C", "C: text", or exactly one option's text), checked against the options.

    ``beyond``: the error for a letter past the last option (the solutions files hold a few such keys)."""
    if not isinstance(value, str):
        raise InputError(f"expected an answer letter, got {value!r}", field=field)
    m = _ANSWER_LETTER.match(value)
    if m is None:
        matches = [i for i, opt in enumerate(options) if opt.strip().casefold() == value.strip().casefold()]
        if len(matches) != 1:
            raise InputError(f"expected an answer letter, got {value!r}", field=field)
        return LETTERS[matches[0]]
    letter = m[1].upper()
    if letter not in LETTERS[: len(options)]:
        raise beyond(f"answer letter {letter!r} is not among the options A-{LETTERS[len(options) - 1]}",
                         field=field)
    return letter


def _options(rec: dict[str, Any]) -> list[str]:
    opts = rec.get("options")
    if opts is None:
        raise InputError("missing", field="options")
    if not isinstance(opts, dict):
        raise InputError(f"expected an object keyed by letters (A, B, ...), got {type(opts).__name__}",
                         field="options")
    if all(isinstance(v, str) and not v.strip() for v in opts.values()):
        raise _Unanswerable("every option is empty (the choices are in a figure)", field="options")
    if len(opts) < MIN_OPTIONS:
        raise InputError(f"needs at least {MIN_OPTIONS} options, got {len(opts)}", field="options")
    keys = sorted(opts)
    expected = list(LETTERS[: len(keys)])
    if keys != expected:
        raise InputError(f"option keys must be consecutive letters from A, got {', '.join(map(str, keys))}",
                         field="options")
    out = []
    for k in expected:
        v = opts[k]
        if not isinstance(v, str):
            raise InputError(f"expected text, got {type(v).__name__}", field=f"options.{k}")
        if not v.strip():
            raise InputError("option is empty", field=f"options.{k}")
        out.append(v)
    return out


def _image_url(rec: dict[str, Any]) -> tuple[bool, str | list[str] | None]:
    """(whether the record says it has an image, its URL(s)); ``image`` may be a flag or a URL."""
    flagged, url = False, None
    for key in ("image_url", "image"):
        v = rec.get(key)
        if v is None or v == "" or v == []:
            continue
        if isinstance(v, bool) and key == "image":
            flagged = flagged or v
        elif isinstance(v, str) and v.strip():
            flagged, url = True, url or v.strip()
        elif isinstance(v, list) and all(isinstance(u, str) and u.strip() for u in v):
            flagged, url = True, url or [u.strip() for u in v]
        else:
            raise InputError(f"expected a URL (text or a list of text), got {v!r}", field=key)
    return flagged, url


@dataclass
class _StepFile:
    """One step file and what lies beside it: its solutions and the numbers of its image questions."""

    path: Path
    step: int
    solutions: dict[int, Any] | None
    solutions_path: Path
    with_images: frozenset[int]
    record_of: dict[str, int] = field(default_factory=dict)


def _read_solutions(path: Path) -> dict[int, Any] | None:
    if not path.exists():
        return None
    data = load_json(path, unique_keys=True)
    if not isinstance(data, dict):
        raise InputError(f"expected a JSON object mapping question number to answer letter, got "
                         f"{type(data).__name__}", file=path)
    out: dict[int, Any] = {}
    for key, value in data.items():
        if not re.fullmatch(r"\s*\d+\s*", key):
            raise InputError("expected a question number as the key", file=path, field=key)
        out[int(key)] = value
    return out


def _numbers(value: Any, path: Path, field_name: str) -> frozenset[int]:
    if not isinstance(value, list):
        raise InputError(f"expected a list of question numbers, got {type(value).__name__}", file=path,
                         field=field_name)
    try:
        return frozenset(as_int(v, field=field_name) for v in value)
    except InputError as exc:
        raise exc.located(file=path) from None


def _read_images(folder: Path) -> dict[int, frozenset[int]]:
    """Question numbers with images per step, from ``question_with_images.json`` (a bare list: every step)."""
    path = folder / IMAGES_FILE
    if not path.exists():
        return {}
    data = load_json(path, unique_keys=True)
    if isinstance(data, list):
        numbers = _numbers(data, path, "question numbers")
        return dict.fromkeys(STEPS, numbers)
    if not isinstance(data, dict):
        raise InputError(f"expected a list of question numbers or an object keyed by step, got "
                         f"{type(data).__name__}", file=path)
    out: dict[int, frozenset[int]] = {}
    for key, value in data.items():
        m = _STEP_KEY.match(key)
        if m is None:
            raise InputError("expected a step (step1, step2, step3) as the key", file=path, field=key)
        out[int(m[1])] = out.get(int(m[1]), frozenset()) | _numbers(value, path, key)
    return out


def _answer(rec: dict[str, Any], options: list[str], no: int, sf: _StepFile) -> int:
    inline: str | None = None
    for key in ANSWER_FIELDS:
        if rec.get(key) is None or rec.get(key) == "":
            continue
        letter = _answer_letter(rec[key], options, field=key)
        if inline is not None and letter != inline:
            raise InputError(f"answer {letter!r} differs from answer_idx {inline!r}", field=key)
        inline = inline or letter
    solved: str | None = None
    if sf.solutions is not None and no in sf.solutions:
        try:
            solved = _answer_letter(sf.solutions[no], options, field=str(no), beyond=_Unanswerable)
        except _Unanswerable as exc:
            raise _Unanswerable(f"{exc.reason} ({sf.solutions_path.name}'s answer of question {no})",
                                field="answer") from None
        except InputError as exc:
            raise InputError(f"{exc.reason} (the answer of question {no})", file=sf.solutions_path,
                             field=str(no)) from None
    if inline is not None and solved is not None and inline != solved:
        raise InputError(f"answer {inline!r} differs from {sf.solutions_path.name}'s {solved!r}", field="answer")
    letter = inline or solved
    if letter is None:
        where = (f"{sf.solutions_path.name} has no entry '{no}'" if sf.solutions is not None
                 else f"there is no {sf.solutions_path.name} beside the file")
        raise InputError(f"no answer: the record has no answer or answer_idx, and {where}", field="answer")
    return LETTERS.index(letter)


def _build(record: Any, index: int, sf: _StepFile, split: str, ids: UniqueIds) -> MCQItem:
    rec = require_object(record)
    if rec.get("no") is None:
        raise InputError("missing", field="no")
    no = as_int(rec["no"], field="no")
    if no < 1:
        raise InputError(f"expected a question number from 1, got {no}", field="no")
    question = require_str(rec, "question")
    options = _options(rec)
    answer = _answer(rec, options, no, sf)
    has_image, url = _image_url(rec)
    meta: dict[str, Any] = {"step": sf.step, "no": no, "image": has_image or no in sf.with_images,
                            "refers_to_figure": refers_to_figure(question)}
    if url is not None:
        meta["image_url"] = url
    item_id = f"{SOURCE}-step{sf.step}-{no:04d}"
    ids.claim(item_id, f"record {index}", field="no")
    sf.record_of[item_id] = index
    return make_item(
        MCQItem,
        {"id": item_id, "question": question, "options": options, "answer": answer, "source": SOURCE,
         "split": split, "category": optional_str(rec, "category"), "explanation": optional_str(rec, "explanation"),
         "meta": meta},
    )


def _load_file(path: Path, step: int, on_error: OnError, split: str, images: dict[int, frozenset[int]],
               strict: bool = False) -> tuple[LoadResult, _StepFile, list[InputError]]:
    solutions_path = path.with_name(f"{path.stem}{SOLUTIONS_SUFFIX}{path.suffix}")
    sf = _StepFile(path, step, _read_solutions(solutions_path), solutions_path, images.get(step, frozenset()))
    data = load_json(path)
    if not isinstance(data, list):
        hint = " (is this an answers file?)" if isinstance(data, dict) else ""
        raise InputError(f"expected a JSON list of question records, got {type(data).__name__}{hint}", file=path)
    if not data:
        raise InputError("the list of questions is empty", file=path)
    collector = RecordCollector(path, on_error, record_kind="record")
    ids = UniqueIds()
    unanswerable: list[InputError] = []

    def build(record: Any, index: int) -> MCQItem | None:
        try:
            return _build(record, index, sf, split, ids)
        except _Unanswerable as exc:
            if strict:
                raise
            unanswerable.append(InputError(f"{exc.reason}; skipped (strict: true stops here)", file=path,
                                           record=index, field=exc.field, record_kind="record"))
            return None

    for index, record in enumerate(data, start=1):
        collector.run(index, lambda r=record, i=index: build(r, i))
    return collector.result(), sf, unanswerable


def _step_option(step: Any) -> int | None:
    if step is None:
        return None
    m = _STEP_KEY.match(str(step)) if isinstance(step, int | str) and not isinstance(step, bool) else None
    if m is None:
        raise InputError(f"step must be 1, 2 or 3, got {step!r}", field="step")
    return int(m[1])


def _step_files(path: Path, step: int | None) -> list[tuple[Path, int]]:
    if path.is_file():
        file_step = step_of(path)
        if step is not None and step != file_step:
            raise InputError(f"file is step {file_step}, not step {step}", file=path, field="step")
        return [(path, file_step)]
    wanted = [step] if step is not None else list(STEPS)
    files = [(path / f"step{n}.json", n) for n in wanted if (path / f"step{n}.json").is_file()]
    if not files:
        names = ", ".join(f"step{n}.json" for n in wanted)
        raise InputError(f"folder has no USMLE step file ({names})", file=path)
    return files


@register_loader("usmle", options=(),
                 description="USMLE self-assessment steps 1-3 (medAlpaca JSON lists; answers inline or in "
                 "step<N>_solutions.json); a file or a folder")
def load_usmle(
    path: Path,
    *,
    on_error: OnError = "raise",
    step: int | str | None = None,
    drop_images: bool = False,
    split: str | None = None,
    strict: bool = False,
    **options: Any,
) -> LoadResult:
    """Load ``step<N>.json`` or a folder of them. Ids: ``usmle-step<N>-<no>``; ``meta.step``, ``meta.image``.

    ``strict``: stop at an unanswerable question (all options empty, or a solutions letter beyond the options)
    instead of skipping and reporting it.
    """
    if options:
        raise InputError(f"unknown option(s) for usmle: {', '.join(sorted(options))}")
    if not isinstance(drop_images, bool):
        raise InputError(f"drop_images must be true or false, got {drop_images!r}", field="drop_images")
    if not isinstance(strict, bool):
        raise InputError(f"strict must be true or false, got {strict!r}", field="strict")
    if split is not None and (not isinstance(split, str) or not split.strip()):
        raise InputError(f"split must be a non-empty name, got {split!r}", field="split")
    path = Path(path)
    files = _step_files(path, _step_option(step))
    images = _read_images(files[0][0].parent)
    result = LoadResult([], [], {})
    dropped = unanswerable = 0
    for file, file_step in files:
        part, sf, skipped = _load_file(file, file_step, on_error, split or "test", images, strict)
        result.skipped.extend(part.skipped)
        result.skipped.extend(skipped)
        unanswerable += len(skipped)
        for item in part.items:
            if drop_images and item.meta["image"]:
                dropped += 1
                result.skipped.append(InputError("image question dropped (drop_images)", file=file,
                                                 record=sf.record_of[item.id], field="image"))
            else:
                result.items.append(item)
    result.extras["dropped_images"] = dropped
    result.extras["unanswerable"] = unanswerable
    return result

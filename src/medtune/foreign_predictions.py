"""Other tools' prediction files, read into what medtune scores: free-text generations or MCQ predictions.

Runs made elsewhere get medtune's metrics and statistics only if their files can be read as they are written, not
after renaming fields by hand. This module owns those formats; :func:`read_foreign_predictions` tells them apart by
their field names (or takes ``--format``) and returns :class:`ForeignPredictions`:

- ``medtune``: JSON lines ``prompt``, ``reference``, ``prediction`` (text or null), optional ``id`` — free text.
- ``llamafactory``: LLaMA-Factory's ``generated_predictions.jsonl`` (``do_predict``): ``prompt``, ``predict``,
  ``label`` per line, no id (``line-N``) — free text.
- ``lm-eval``: lm-evaluation-harness's ``--log_samples`` file (``samples_<task>_<time>.jsonl``: ``doc_id``,
  ``doc``, ``target``, ``arguments``, ``resps``, ``filtered_resps``, ``filter``, the metric fields). A
  ``generate_until`` task is free text (prompt ``arguments.gen_args_0.arg_0``, reference ``target``, prediction
  ``filtered_resps[0]``, the answer lm-eval scored); a ``multiple_choice`` task (one loglikelihood request per
  choice) is MCQ: ``scores`` the choices' log-likelihoods, ``pred`` their argmax (lm-eval's ``acc``) and
  ``scores_norm`` the log-likelihoods divided by the choices' character counts, whose argmax is lm-eval's
  ``acc_norm``; the gold is ``target`` (an index, or the text of a choice; with ``acc_mutual_info`` the
  unconditional requests after the choices are left out). The item id is the doc's own ``id``
  field when every doc has one, else ``doc_id``. A file with samples of several filters needs one chosen.
- ``mcq``: one chosen letter per item (``id``, the gold ``answer`` letter, the predicted ``pred`` letter, null or
  empty when unanswered).

Every format is JSON lines; a ``.csv`` or ``.tsv`` file (a header line, then one row per record) is read as the
same records, for the tools that write tables.

``--fields role=field,...`` maps medtune's names to the file's (``prompt``/``reference``/``prediction`` for free
text, ``answer``/``pred`` for letters, ``id`` for all); a field may be a dotted path into nested objects and lists
(``doc.qid``, ``filtered_resps.0``). A bad record is an :class:`InputError` naming the file, the line and the
file's own field name.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from medtune.errors import ConfigError, InputError
from medtune.io import require_file
from medtune.prompts import LETTERS
from medtune.schema import MAX_OPTIONS, MIN_OPTIONS, MCQItem
from medtune.scoring.engine import COLUMNS

FORMATS: tuple[str, ...] = ("auto", "medtune", "llamafactory", "lm-eval", "mcq")
FREE_TEXT_ROLES: tuple[str, ...] = ("id", "prompt", "reference", "prediction")
MCQ_ROLES: tuple[str, ...] = ("id", "answer", "pred")
ForeignKind = Literal["qa", "mcq"]

# Each free-text format's fields, by medtune's role.
_TEXT_FIELDS: dict[str, dict[str, str]] = {
    "medtune": {"id": "id", "prompt": "prompt", "reference": "reference", "prediction": "prediction"},
    "llamafactory": {"id": "id", "prompt": "prompt", "reference": "label", "prediction": "predict"},
}
_LM_EVAL_FIELDS = ("doc_id", "doc", "target", "arguments", "filtered_resps")
# A letters file's usual names; the first present is taken (``--fields`` names any other).
_MCQ_CANDIDATES: dict[str, tuple[str, ...]] = {
    "id": ("id", "question_id", "qid", "item_id"),
    "answer": ("answer", "answer_idx", "gold", "correct_answer"),
    "pred": ("pred", "prediction", "predicted", "predicted_answer", "model_answer"),
}
_LETTER = re.compile(r"^\(?([A-Za-z])[).:]?$")


@dataclass
class ForeignPredictions:
    """One prediction file, read: free-text ``generations`` or MCQ ``predictions`` on their ``items``.

    ``generations``: one dict per answer (``id``, ``prompt``, ``reference``, ``prediction``). ``predictions``: the
    scorer's columns (:data:`medtune.scoring.engine.COLUMNS`, plus ``scores_norm`` for lm-eval) with
    ``predictions_norm`` the same rows predicted by ``scores_norm`` (lm-eval's ``acc_norm``; None otherwise).
    ``source`` says what was read (format, fields, lm-eval task kind and filter, where ids came from).
    """

    format: str
    kind: ForeignKind
    generations: list[dict[str, Any]] = field(default_factory=list)
    items: list[MCQItem] = field(default_factory=list)
    predictions: pd.DataFrame | None = None
    predictions_norm: pd.DataFrame | None = None
    source: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------
# The mapping and the lines


def parse_fields(text: str | None, option: str = "--fields") -> dict[str, str]:
    """``"prompt=question,reference=answer"`` → ``{"prompt": "question", "reference": "answer"}``.

    Only the syntax and the known roles are checked here; which roles a format takes is the reader's check."""
    if text is None or not text.strip():
        return {}
    known = sorted(set(FREE_TEXT_ROLES) | set(MCQ_ROLES))
    out: dict[str, str] = {}
    for part in text.split(","):
        role, sep, name = (s.strip() for s in part.partition("="))
        if not sep or not role or not name:
            raise ConfigError(f"{option}: '{part.strip()}' is not ROLE=FIELD (e.g. prompt=question)")
        if role not in known:
            raise ConfigError(f"{option}: unknown role '{role}' (known: {', '.join(known)})")
        if role in out:
            raise ConfigError(f"{option}: role '{role}' is given twice")
        out[role] = name
    return out


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a line that is not a JSON object stops with its number."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines: JSON text may hold U+2028
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=path) from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc.msg})", file=path, record=lineno, record_kind="line") from None
        if not isinstance(obj, dict):
            raise InputError(f"expected a JSON object, got {type(obj).__name__}", file=path, record=lineno,
                             record_kind="line")
        yield lineno, obj


def _table_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of a CSV or TSV file with a header line (line 1); an empty cell is an empty string, and a
    row whose quoted cell spans lines is named by its last line."""
    import csv

    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=path) from None
    reader = csv.DictReader(text.splitlines(keepends=True), delimiter="\t" if path.suffix == ".tsv" else ",")
    for row in reader:
        if None in row:
            raise InputError(f"{len(row) + len(row[None]) - 1} cells for {len(reader.fieldnames or [])} columns",
                             file=path, record=reader.line_num, record_kind="line")
        if any(v not in ("", None) for v in row.values()):
            yield reader.line_num, {k: v for k, v in row.items() if v is not None}


def _records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """A file's records: JSON lines, or CSV/TSV rows for a ``.csv``/``.tsv`` file (a letters table, say)."""
    return list(_table_rows(path) if path.suffix in (".csv", ".tsv") else _json_lines(path))


_MISSING = object()


def _get(obj: Any, name: str) -> Any:
    """The value at ``name`` in ``obj``: a key, else a dotted path through objects and lists (``doc.qid``,
    ``filtered_resps.0``); ``_MISSING`` when there is none."""
    if isinstance(obj, dict) and name in obj:
        return obj[name]
    here = obj
    for part in name.split("."):
        if isinstance(here, dict) and part in here:
            here = here[part]
        elif isinstance(here, list) and part.lstrip("-").isdigit() and -len(here) <= int(part) < len(here):
            here = here[int(part)]
        else:
            return _MISSING
    return here


class _Ids:
    """Item ids of one file: ``line-N`` when a record has none, each id once."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def take(self, value: Any, lineno: int, bad: Callable[..., InputError], field_name: str) -> str:
        if value is _MISSING:
            value = f"line-{lineno}"
        if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
            raise bad("must be a non-empty string or an integer", field=field_name)
        rid = str(value)
        if rid in self.seen:
            raise bad(f"duplicate id '{rid}' (first on line {self.seen[rid]})", field=field_name)
        self.seen[rid] = lineno
        return rid


def _check_roles(fields: dict[str, str], allowed: tuple[str, ...], fmt: str) -> None:
    extra = sorted(set(fields) - set(allowed))
    if extra:
        raise ConfigError(f"--fields: the {fmt} format takes {', '.join(allowed)}, not {', '.join(extra)}")


# ----------------------------------------------------------------------------------------------------------
# Telling the formats apart


def detect_format(record: dict[str, Any], fields: dict[str, str] | None = None) -> str:
    """The format of a file whose first record is ``record`` (``--fields`` with ``answer``/``pred`` means letters,
    with any other role free text); an :class:`InputError` (no file named: the caller adds it) when none fits."""
    fields = fields or {}
    if {"answer", "pred"} & set(fields):
        return "mcq"
    if set(fields) - {"id"}:
        return "medtune"
    keys = set(record)
    if set(_LM_EVAL_FIELDS) <= keys:
        return "lm-eval"
    if {"prompt", "reference", "prediction"} <= keys:
        return "medtune"
    if {"prompt", "predict", "label"} <= keys:
        return "llamafactory"
    if all(any(name in keys for name in names) for role, names in _MCQ_CANDIDATES.items() if role != "id"):
        return "mcq"
    raise InputError(f"cannot tell the format from the fields {sorted(keys)}: expected medtune generations "
                     "(prompt, reference, prediction), LLaMA-Factory (prompt, predict, label), an lm-eval samples "
                     "log (doc_id, doc, target, arguments, filtered_resps) or MCQ letters (answer, pred); give "
                     "--format or --fields", record=1, record_kind="line")


def read_foreign_predictions(path: str | Path, *, format: str = "auto", fields: dict[str, str] | None = None,
                             lm_eval_filter: str | None = None) -> ForeignPredictions:
    """Read a prediction file of medtune or another tool (see the module docstring for the formats)."""
    if format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got '{format}'")
    path = require_file(path)
    fields = dict(fields or {})
    records = _records(path)
    if not records:
        raise InputError("no predictions (the file has no records)", file=path)
    if format == "auto":
        try:
            format = detect_format(records[0][1], fields)
        except InputError as exc:
            raise InputError(exc.reason, file=path, record=records[0][0], record_kind="line") from None
    if lm_eval_filter is not None and format != "lm-eval":
        raise ConfigError(f"--filter is for lm-eval samples logs; this file is read as {format}")
    if format == "lm-eval":
        _check_roles(fields, ("id",), "lm-eval")
        return _read_lm_eval(path, records, fields.get("id"), lm_eval_filter)
    if format == "mcq":
        _check_roles(fields, MCQ_ROLES, "mcq")
        return _read_letters(path, records, fields)
    _check_roles(fields, FREE_TEXT_ROLES, format)
    names = {**_TEXT_FIELDS[format], **fields}
    return ForeignPredictions(format=format, kind="qa", generations=_free_text(path, records, names),
                              source={"format": format, "fields": names})


def read_generations(path: str | Path) -> list[dict[str, Any]]:
    """The records of a medtune generations JSON-lines file: ``prompt``, ``reference``, ``prediction`` (text or
    null) and an optional ``id`` (default ``line-N``). A bad line is an :class:`InputError` naming the line and
    field."""
    path = require_file(path)
    records = list(_json_lines(path))
    if not records:
        raise InputError("no generations (the file has no records)", file=path)
    return _free_text(path, records, _TEXT_FIELDS["medtune"])


def _free_text(path: Path, records: list[tuple[int, dict[str, Any]]], names: dict[str, str]) -> list[dict[str, Any]]:
    ids = _Ids()
    out = []
    for lineno, obj in records:
        bad = functools.partial(InputError, file=path, record=lineno, record_kind="line")
        values = {role: _get(obj, names[role]) for role in ("prompt", "reference", "prediction")}
        for role, value in values.items():
            if value is _MISSING:
                raise bad("required field is missing", field=names[role])
        for role in ("prompt", "reference"):
            if not isinstance(values[role], str) or not values[role].strip():
                raise bad("must be a non-empty string", field=names[role])
        if values["prediction"] is not None and not isinstance(values["prediction"], str):
            raise bad("must be a string or null", field=names["prediction"])
        rid = ids.take(_get(obj, names["id"]), lineno, bad, names["id"])
        out.append({"id": rid, **values})
    return out


# ----------------------------------------------------------------------------------------------------------
# MCQ letters


def _letter(value: Any, bad: Callable[..., InputError], field_name: str, *, nullable: bool) -> int | None:
    if nullable and (value is None or (isinstance(value, str) and not value.strip())):
        return None
    match = _LETTER.match(value.strip()) if isinstance(value, str) else None
    index = LETTERS.find(match.group(1).upper()) if match else -1
    if index < 0:
        allowed = f"a letter {LETTERS[0]}-{LETTERS[-1]}" + (" (or null/empty: unanswered)" if nullable else "")
        raise bad(f"expected {allowed}, got {value!r}", field=field_name)
    return index


def _read_letters(path: Path, records: list[tuple[int, dict[str, Any]]], fields: dict[str, str]) -> ForeignPredictions:
    first = records[0][1]
    names = {role: fields.get(role) or next((n for n in cands if _get(first, n) is not _MISSING), cands[0])
             for role, cands in _MCQ_CANDIDATES.items()}
    ids = _Ids()
    rows: list[tuple[str, int, int | None]] = []
    for lineno, obj in records:
        bad = functools.partial(InputError, file=path, record=lineno, record_kind="line")
        for role in ("answer", "pred"):
            if _get(obj, names[role]) is _MISSING:
                raise bad("required field is missing", field=names[role])
        gold = _letter(_get(obj, names["answer"]), bad, names["answer"], nullable=False)
        pred = _letter(_get(obj, names["pred"]), bad, names["pred"], nullable=True)
        assert gold is not None  # not nullable
        rows.append((ids.take(_get(obj, names["id"]), lineno, bad, names["id"]), gold, pred))
    # The file names letters only: the items hold as many options as the furthest letter it uses.
    n_options = max(MIN_OPTIONS, max(max(g, -1 if p is None else p) for _, g, p in rows) + 1)
    options = [f"option {letter}" for letter in LETTERS[:n_options]]
    items = [MCQItem(id=rid, question=f"item {rid}", options=options, answer=gold, source="mcq letters",
                     split="test") for rid, gold, _ in rows]
    frame = pd.DataFrame({
        "id": [r[0] for r in rows], "mode": "generate", "answer": [r[1] for r in rows],
        "pred": pd.array([r[2] for r in rows], dtype="Int64"),
        "correct": [r[2] is not None and r[2] == r[1] for r in rows],
        "scores": None, "probs": None, "permutation": None, "generated": None}, columns=COLUMNS)
    return ForeignPredictions(format="mcq", kind="mcq", items=items, predictions=frame,
                              source={"format": "mcq", "fields": names, "n_options": n_options})


# ----------------------------------------------------------------------------------------------------------
# lm-evaluation-harness samples logs


def _float(value: Any) -> float:
    """A log-likelihood as lm-eval logs it: ``str(float)`` after its ``sanitize_list`` (or a plain number)."""
    if isinstance(value, bool):
        raise ValueError(value)
    out = float(value)
    if math.isnan(out):
        raise ValueError(value)
    return out


def _requests(obj: dict[str, Any], bad: Callable[..., InputError]) -> list[tuple[Any, Any]]:
    """The (context, continuation or generation settings) of each request, in order (``gen_args_0``, ...)."""
    args = obj["arguments"]
    if isinstance(args, list):  # the evaluator's own form, before its tracker sanitises it
        args = {f"gen_args_{i}": {f"arg_{j}": a for j, a in enumerate(arg)} for i, arg in enumerate(args)}
    if not isinstance(args, dict) or not args:
        raise bad("expected an object of gen_args_N requests", field="arguments")
    out = []
    for i in range(len(args)):
        req = args.get(f"gen_args_{i}")
        if not isinstance(req, dict) or "arg_0" not in req:
            raise bad(f"gen_args_{i} is missing or has no arg_0", field="arguments")
        out.append((req["arg_0"], req.get("arg_1")))
    return out


def _softmax(x: np.ndarray) -> list[float]:
    z = np.exp(x - x.max())
    return (z / z.sum()).tolist()


def _lm_eval_ids(path: Path, records: list[tuple[int, dict[str, Any]]], id_field: str | None) -> tuple[list[str], str]:
    """Each record's item id: ``id_field`` (``--fields id=...``), else the doc's ``id`` when every doc has one,
    else ``doc_id``; returns the ids and the field they came from."""
    if id_field is None:
        id_field = "doc.id" if all(_get(obj, "doc.id") is not _MISSING for _, obj in records) else "doc_id"
    ids = _Ids()
    out = []
    for lineno, obj in records:
        bad = functools.partial(InputError, file=path, record=lineno, record_kind="line")
        value = _get(obj, id_field)
        if value is _MISSING:
            raise bad("required field is missing", field=id_field)
        out.append(ids.take(value, lineno, bad, id_field))
    return out, id_field


def _read_lm_eval(path: Path, records: list[tuple[int, dict[str, Any]]], id_field: str | None,
                  chosen_filter: str | None) -> ForeignPredictions:
    for lineno, obj in records:
        for name in _LM_EVAL_FIELDS:
            if name not in obj:
                raise InputError("required field is missing", file=path, record=lineno, record_kind="line",
                                 field=name)
    filters = list(dict.fromkeys(str(obj.get("filter", "none")) for _, obj in records))
    if chosen_filter is not None:
        if chosen_filter not in filters:
            raise ConfigError(f"--filter: {path} holds the filters {', '.join(filters)}, not '{chosen_filter}'")
        records = [(n, obj) for n, obj in records if str(obj.get("filter", "none")) == chosen_filter]
    elif len(filters) > 1:
        raise ConfigError(f"--filter: {path} holds samples of several filters ({', '.join(filters)}); "
                          "choose one with --filter")
    ids, id_from = _lm_eval_ids(path, records, id_field)
    kinds = []
    for lineno, obj in records:
        bad = functools.partial(InputError, file=path, record=lineno, record_kind="line")
        reqs = _requests(obj, bad)
        kinds.append("generate_until" if isinstance(reqs[0][1], dict) else
                     "multiple_choice" if all(isinstance(c, str) for _, c in reqs) and len(reqs) > 1 else "other")
        if kinds[-1] == "other":
            raise bad("neither a generate_until sample (generation settings) nor a multiple_choice one (one "
                      "continuation per choice, at least two): medtune reads only these two", field="arguments")
        if kinds[-1] != kinds[0]:
            raise bad(f"a {kinds[-1]} sample in a file of {kinds[0]} samples", field="arguments")
    source = {"format": "lm-eval", "task_kind": kinds[0], "filter": filters[0] if chosen_filter is None
              else chosen_filter, "id_field": id_from}
    if kinds[0] == "generate_until":
        return ForeignPredictions(format="lm-eval", kind="qa", generations=_lm_eval_generations(path, records, ids),
                                  source=source)
    items, frame, norm = _lm_eval_choices(path, records, ids)
    return ForeignPredictions(format="lm-eval", kind="mcq", items=items, predictions=frame, predictions_norm=norm,
                              source=source)


def _lm_eval_generations(path: Path, records: list[tuple[int, dict[str, Any]]], ids: list[str]) -> list[dict]:
    out = []
    for (lineno, obj), rid in zip(records, ids, strict=True):
        bad = functools.partial(InputError, file=path, record=lineno, record_kind="line")
        prompt = _requests(obj, bad)[0][0]
        if not isinstance(prompt, str) or not prompt.strip():
            raise bad("the prompt (gen_args_0.arg_0) must be a non-empty string", field="arguments")
        if not isinstance(obj["target"], str) or not obj["target"].strip():
            raise bad("must be a non-empty string", field="target")
        resps = obj["filtered_resps"]
        if not isinstance(resps, list) or len(resps) != 1 or not isinstance(resps[0], str | type(None)):
            raise bad("expected one generated text (a list of one string)", field="filtered_resps")
        out.append({"id": rid, "prompt": prompt, "reference": obj["target"], "prediction": resps[0]})
    return out


def _gold_index(obj: dict[str, Any], choices: list[str], pred: int, bad: Callable[..., InputError]) -> int:
    """The gold choice from lm-eval's ``target`` (``str`` of an index or of the choice's text), as its
    ``process_results`` reads it; when both readings fit, the one that agrees with the logged ``acc``."""
    target = obj["target"]
    if isinstance(target, int) and not isinstance(target, bool):
        target = str(target)
    if not isinstance(target, str):
        raise bad(f"expected the gold choice's index or text, got {target!r}", field="target")
    fits = []
    if target.strip().isdigit() and int(target) < len(choices):
        fits.append(int(target))
    fits += [i for i, c in enumerate(choices) if target in (c, c.strip()) and i not in fits][:1]
    if not fits:
        several = " (several gold answers are not supported)" if target.lstrip().startswith("[") else ""
        raise bad(f"'{target}' is neither the index of one of the {len(choices)} choices nor one of their "
                  f"texts{several}", field="target")
    acc = obj.get("acc")
    if len(fits) > 1 and isinstance(acc, int | float):
        fits = [g for g in fits if (g == pred) == bool(acc)] or fits
    return fits[0]


def _lm_eval_choices(path: Path, records: list[tuple[int, dict[str, Any]]], ids: list[str]
                     ) -> tuple[list[MCQItem], pd.DataFrame, pd.DataFrame]:
    items, rows, rows_norm = [], [], []
    for (lineno, obj), rid in zip(records, ids, strict=True):
        bad = functools.partial(InputError, file=path, record=lineno, record_kind="line")
        reqs = _requests(obj, bad)
        half = len(reqs) // 2
        if "acc_mutual_info" in obj and len(reqs) % 2 == 0 and all(ctx == "" for ctx, _ in reqs[half:]) and \
                [c for _, c in reqs[:half]] == [c for _, c in reqs[half:]]:
            reqs = reqs[:half]  # acc_mutual_info's unconditional ("", choice) requests follow the choices
        if not MIN_OPTIONS <= len(reqs) <= MAX_OPTIONS:
            raise bad(f"{len(reqs)} choices; medtune's items hold {MIN_OPTIONS}-{MAX_OPTIONS}", field="arguments")
        continuations = [c for _, c in reqs]
        resps = obj["filtered_resps"]
        if isinstance(resps, list) and len(resps) == 2 * len(reqs) and len(reqs) < len(_requests(obj, bad)):
            resps = resps[: len(reqs)]
        if not isinstance(resps, list) or len(resps) != len(reqs):
            raise bad(f"expected one (log-likelihood, is-greedy) pair per choice ({len(reqs)})",
                      field="filtered_resps")
        try:
            lls = np.asarray([_float(r[0] if isinstance(r, list | tuple) else r) for r in resps], dtype=float)
        except (ValueError, TypeError, IndexError):
            raise bad("expected a log-likelihood (a number) first in each choice's pair",
                      field="filtered_resps") from None
        # lm-eval's continuation is target_delimiter + choice (" " by default); acc_norm divides by the choice's
        # characters: the delimiter is taken off when every continuation has it, else each is the choice.
        choices = [c[1:] for c in continuations] if all(c.startswith(" ") for c in continuations) else continuations
        lengths = np.asarray([max(len(c), 1) for c in choices], dtype=float)
        norm = lls / lengths
        pred, pred_norm = int(np.argmax(lls)), int(np.argmax(norm))
        gold = _gold_index(obj, choices, pred, bad)
        for name, guess in (("acc", pred), ("acc_norm", pred_norm)):
            logged = obj.get(name)
            if isinstance(logged, int | float) and not isinstance(logged, bool) and bool(logged) != (guess == gold):
                raise bad(f"lm-eval logged {logged} but the log-likelihoods give choice {guess} against gold "
                          f"{gold}: the file does not match its own log-likelihoods", field=name)
        context = reqs[0][0] if isinstance(reqs[0][0], str) and reqs[0][0].strip() else f"item {rid}"
        options = [c.strip() or f"({LETTERS[i]})" for i, c in enumerate(choices)]
        items.append(MCQItem(id=rid, question=context, options=options, answer=gold, source="lm-eval",
                             split="test"))
        base = {"id": rid, "mode": "option", "answer": gold, "scores": lls.tolist(), "permutation": None,
                "generated": None, "scores_norm": norm.tolist()}
        rows.append({**base, "pred": pred, "correct": pred == gold, "probs": _softmax(lls)})
        rows_norm.append({**base, "pred": pred_norm, "correct": pred_norm == gold, "probs": _softmax(norm)})
    columns = [*COLUMNS, "scores_norm"]
    return items, pd.DataFrame(rows, columns=columns), pd.DataFrame(rows_norm, columns=columns)

"""LLM-defined question difficulty: ensemble expected accuracy, IRT, buckets, and the difficulty artifact.

The paper (Yang et al. 2024) defines a question's difficulty as 1 − the mean, over an ensemble of LLMs,
of each model's *expected accuracy*: the softmax probability of the correct letter among the option
letters. This module computes that from any source of per-model probabilities — the scorer's output,
the paper's own response files (``clls``: log-softmax over the letter logits), or an external table — and
adds an IRT difficulty (:mod:`medtune.irt`) and easy/medium/hard buckets. Everything ends in one artifact,
``difficulty.parquet`` (docs/ARTIFACTS.md), so the orders stage never needs to know where it came from.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# The bucketing rule is medtune.bucketing's; its names stay importable from here.
from medtune.bucketing import DEFAULT_QUANTILES as DEFAULT_QUANTILES
from medtune.bucketing import PAPER_THRESHOLDS as PAPER_THRESHOLDS
from medtune.bucketing import Bucketing
from medtune.bucketing import parse_pair as parse_pair
from medtune.errors import InputError
from medtune.io import atomic_path, read_parquet_table, require_file, sha256_file
from medtune.irt import IRTModel, fit_irt
from medtune.prompts import LETTERS
from medtune.schema import DIFFICULTY_LEVELS, Item

METADATA_KEY = b"medtune.difficulty"
P_PREFIX = "p_correct__"

IRTData = Literal["prob", "correct"]
KeyKind = Literal["position", "id", "question_index"]


# ----------------------------------------------------------------------------------------------------------
# The difficulty table


@dataclass
class DifficultyResult:
    """The difficulty table (one row per id, artifact columns) and its provenance (Parquet metadata)."""

    table: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def models(self) -> list[str]:
        return [c.removeprefix(P_PREFIX) for c in self.table.columns if c.startswith(P_PREFIX)]

    def bucket_sizes(self) -> dict[str, int]:
        counts = self.table["bucket"].value_counts()
        return {level: int(counts.get(level, 0)) for level in DIFFICULTY_LEVELS}


def ensemble_difficulty(p_correct: pd.DataFrame) -> pd.Series:
    """The paper's difficulty: 1 − mean over models of the expected accuracy (rows: ids, columns: models).

    A model without a value for a question (NaN) is left out of that question's mean.
    """
    return 1.0 - p_correct.mean(axis=1, skipna=True)


def build_difficulty(
    p_correct: pd.DataFrame,
    *,
    correct: pd.DataFrame | None = None,
    bucketing: Bucketing | None = None,
    irt: IRTModel | None = "1pl",
    irt_data: IRTData = "prob",
    source: str = "ensemble",
    extra_meta: Mapping[str, Any] | None = None,
) -> DifficultyResult:
    """Difficulty table from a questions × models matrix of expected accuracies (index: item ids).

    ``correct`` (same shape, 0/1) is used for IRT when ``irt_data="correct"``; by default IRT is fitted on
    the probabilities, which with a handful of models carries far more information than 0/1 outcomes.
    """
    if p_correct.empty:
        raise InputError("no questions to compute difficulty for")
    if p_correct.index.has_duplicates:
        dup = p_correct.index[p_correct.index.duplicated()][0]
        raise InputError(f"duplicate id '{dup}'", field="id")
    values = p_correct.to_numpy(dtype=float)
    finite = values[~np.isnan(values)]
    if finite.size and (finite.min() < -1e-6 or finite.max() > 1 + 1e-6):
        raise InputError("expected accuracies must lie in [0, 1]")
    bucketing = bucketing or Bucketing.fixed()
    table = pd.DataFrame({"id": p_correct.index.astype(str)})
    for name in p_correct.columns:
        table[f"{P_PREFIX}{name}"] = p_correct[name].to_numpy(dtype=float)
    table["difficulty"] = ensemble_difficulty(p_correct).to_numpy()
    irt_info: dict[str, Any] | None = None
    if irt is not None:
        if irt_data == "correct":
            if correct is None:
                raise InputError("IRT on correctness needs the 0/1 correctness matrix")
            matrix = correct.loc[p_correct.index, p_correct.columns].to_numpy(dtype=float)
        else:
            matrix = np.clip(values, 0.0, 1.0)
        fit = fit_irt(matrix.T, model=irt)
        table["irt_b"] = fit.b
        irt_info = {**fit.summary(), "data": irt_data,
                    "theta": {str(m): float(t) for m, t in zip(p_correct.columns, fit.theta, strict=True)}}
    else:
        table["irt_b"] = np.full(len(table), np.nan)
    labels, rule = bucketing.assign(table["difficulty"].to_numpy())
    table["bucket"] = labels
    meta = {**rule, "source": source, "models": [str(c) for c in p_correct.columns], "irt": irt_info,
            "n_items": len(table), **(dict(extra_meta) if extra_meta else {})}
    return DifficultyResult(table, meta)


def rebucket(result: DifficultyResult, bucketing: Bucketing) -> DifficultyResult:
    """The same difficulties under another bucketing rule."""
    table = result.table.copy()
    labels, rule = bucketing.assign(table["difficulty"].to_numpy())
    table["bucket"] = labels
    meta = {k: v for k, v in result.meta.items() if k not in ("rule", "thresholds", "quantiles")}
    return DifficultyResult(table, {**rule, **meta})


# ----------------------------------------------------------------------------------------------------------
# From the scorer's output


def expected_accuracy_from_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Per id: expected accuracy (``probs[answer]``) and 0/1 correctness from a scorer DataFrame.

    ``probs`` are per *original* option index (the scorer undoes any option permutation), so indexing by
    the original answer is right whatever the shown order was.
    """
    missing = {"id", "answer", "probs", "correct"} - set(scores.columns)
    if missing:
        raise InputError(f"scores lack column(s) {sorted(missing)}")
    p = []
    for rec, (ident, answer, probs) in enumerate(zip(scores["id"], scores["answer"], scores["probs"], strict=True)):
        probs = list(probs) if probs is not None else []
        if not 0 <= int(answer) < len(probs):
            raise InputError(f"answer {answer} outside the {len(probs)} option probabilities", record=ident,
                             field="probs") from None
        total = float(sum(probs))
        if not total > 0:
            raise InputError("option probabilities sum to 0", record=rec, field="probs")
        p.append(float(probs[int(answer)]) / total)
    return pd.DataFrame({"p_correct": p, "correct": scores["correct"].astype(float).to_numpy()},
                        index=pd.Index(scores["id"].astype(str), name="id"))


def difficulty_from_scores(
    scores: Mapping[str, pd.DataFrame],
    *,
    ids: Sequence[str] | None = None,
    **kwargs: Any,
) -> DifficultyResult:
    """Difficulty from one scorer DataFrame per ensemble member (``{model name: scores}``).

    ``ids`` fixes the row order (the items' order); every model must have scored every id.
    """
    if not scores:
        raise InputError("no models given for the difficulty ensemble")
    per_model = {name: expected_accuracy_from_scores(df) for name, df in scores.items()}
    order = list(ids) if ids is not None else list(next(iter(per_model.values())).index)
    p_cols, c_cols = {}, {}
    for name, df in per_model.items():
        missing = [i for i in order if i not in df.index]
        if missing:
            raise InputError(f"model '{name}' has no score for id '{missing[0]}' ({len(missing)} missing)",
                             record=missing[0])
        p_cols[name] = df.loc[order, "p_correct"].to_numpy()
        c_cols[name] = df.loc[order, "correct"].to_numpy()
    index = pd.Index(order, name="id")
    return build_difficulty(pd.DataFrame(p_cols, index=index), correct=pd.DataFrame(c_cols, index=index),
                            **{"source": "scores", **kwargs})


# ----------------------------------------------------------------------------------------------------------
# From the paper's response files


def lek_id(question_index: int) -> str:
    """The id the LEK loader gives a question (``lek-<question_index>``)."""
    return f"lek-{int(question_index)}"


@dataclass
class ResponseFile:
    """One model's answers in the paper's format, one row per record in file order."""

    path: Path
    model: str
    table: pd.DataFrame  # columns: position, question_index, id, answer, p_correct, correct


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max()
    e = np.exp(z)
    return e / e.sum()


def read_response_file(path: str | Path, *, model: str | None = None, id_format=lek_id) -> ResponseFile:
    """Read a response file ``{"questions": [{question_index, correct_answer, clls, ...}, ...]}``.

    ``clls`` are the model's log-softmax scores of the option letters (the paper's difficulty script takes
    ``log_softmax`` over the letter logits at the answer position), so the expected accuracy is
    ``softmax(clls)[correct letter]`` — identical to the paper's ``exp(clls[correct])`` when the clls are
    normalised, and still a distribution if a producer stored raw letter log-likelihoods. Correctness is
    whether the correct letter has the highest score.
    """
    path = require_file(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not a valid JSON response file ({exc})", file=path) from None
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
        raise InputError("expected an object with a 'questions' list", file=path, field="questions")
    records = data["questions"]
    if not records:
        raise InputError("the 'questions' list is empty", file=path, field="questions")
    rows = []
    seen: dict[int, int] = {}
    for pos, rec in enumerate(records):
        def bad(msg: str, fld: str, pos: int = pos) -> InputError:
            return InputError(msg, file=path, record=pos, field=fld)

        if not isinstance(rec, dict):
            raise bad("record is not an object", "questions")
        qi = rec.get("question_index")
        if isinstance(qi, bool) or not isinstance(qi, int) or qi < 0:
            raise bad(f"question_index must be a non-negative integer, got {qi!r}", "question_index")
        if qi in seen:
            raise bad(f"duplicate question_index {qi} (first at record {seen[qi]})", "question_index")
        seen[qi] = pos
        clls = rec.get("clls")
        if not isinstance(clls, list) or not 2 <= len(clls) <= len(LETTERS):
            raise bad(f"clls must be a list of 2-{len(LETTERS)} numbers, got {clls!r}", "clls")
        try:
            scores = np.asarray([float(v) for v in clls], dtype=float)
        except (TypeError, ValueError):
            raise bad(f"clls must be numbers, got {clls!r}", "clls") from None
        if not np.all(np.isfinite(scores)):
            raise bad("clls contain a non-finite value", "clls")
        letters = LETTERS[: len(scores)]
        letter = rec.get("correct_answer")
        if not isinstance(letter, str) or letter.strip().upper() not in letters or not letter.strip():
            raise bad(f"correct_answer {letter!r} is not one of the {len(scores)} option letters "
                      f"[{', '.join(letters)}]", "correct_answer")
        answer = letters.index(letter.strip().upper())
        probs = _softmax(scores)
        rows.append({
            "position": pos,
            "question_index": qi,
            "id": id_format(qi),
            "answer": answer,
            "p_correct": float(probs[answer]),
            "correct": float(int(np.argmax(scores)) == answer),
        })
    return ResponseFile(path, model or path.stem, pd.DataFrame(rows))


def difficulty_from_responses(
    paths: Sequence[str | Path],
    *,
    models: Sequence[str] | None = None,
    **kwargs: Any,
) -> DifficultyResult:
    """Difficulty from several response files (one per model) of the same questions.

    Questions are matched by ``question_index`` (ids ``lek-<question_index>``, as the LEK loader assigns);
    rows keep the first file's record order. A question missing from any file, or a disagreeing gold
    letter, is an error naming the file and record: a silent inner join would quietly change the ensemble.
    """
    if not paths:
        raise InputError("no response files given")
    if models is not None and len(models) != len(paths):
        raise InputError(f"{len(models)} model names for {len(paths)} files")
    files = [read_response_file(p, model=models[i] if models else None) for i, p in enumerate(paths)]
    names = [f.model for f in files]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise InputError(f"two response files give the same model name '{dup}' (rename one or pass models=)")
    ref = files[0]
    ref_by_qi = ref.table.set_index("question_index")
    p_cols, c_cols = {}, {}
    for f in files:
        t = f.table.set_index("question_index")
        missing = ref_by_qi.index.difference(t.index)
        if len(missing):
            qi = int(missing[0])
            raise InputError(
                f"missing here (it is record {int(ref_by_qi.loc[qi, 'position'])} of {ref.path.name}); "
                f"{len(missing)} question(s) missing: this file has {len(t)}, {ref.path.name} {len(ref_by_qi)}",
                file=f.path, record=qi, record_kind="question_index")
        extra = t.index.difference(ref_by_qi.index)
        if len(extra):
            qi = int(extra[0])
            raise InputError(f"question_index {qi} is not in {ref.path.name} ({len(extra)} extra question(s))",
                             file=f.path, record=int(t.loc[qi, "position"]), field="question_index")
        t = t.loc[ref_by_qi.index]
        clash = t["answer"].to_numpy() != ref_by_qi["answer"].to_numpy()
        if clash.any():
            qi = int(ref_by_qi.index[np.argmax(clash)])
            raise InputError(
                f"correct_answer {LETTERS[int(t.loc[qi, 'answer'])]} disagrees with {ref.path.name} "
                f"({LETTERS[int(ref_by_qi.loc[qi, 'answer'])]}) for question_index {qi}",
                file=f.path, record=int(t.loc[qi, "position"]), field="correct_answer")
        p_cols[f.model] = t["p_correct"].to_numpy()
        c_cols[f.model] = t["correct"].to_numpy()
    index = pd.Index(ref.table["id"].to_numpy(), name="id")
    hashes = {f.path.name: sha256_file(f.path)[:16] for f in files}
    extra_meta = {"input_hashes": hashes, **kwargs.pop("extra_meta", {})}
    return build_difficulty(pd.DataFrame(p_cols, index=index), correct=pd.DataFrame(c_cols, index=index),
                            source="responses", extra_meta=extra_meta, **kwargs)


# ----------------------------------------------------------------------------------------------------------
# Importing an external difficulty table


@dataclass
class ImportReport:
    """What an import matched: table rows without an item, items without a value."""

    n_matched: int
    unmatched_keys: list[Any]
    items_without_value: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"n_matched": self.n_matched, "n_unmatched_keys": len(self.unmatched_keys),
                "unmatched_keys": self.unmatched_keys[:20], "n_items_without_value": len(self.items_without_value),
                "items_without_value": self.items_without_value[:20]}


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV/TSV/Parquet/JSON-lines table (chosen by extension)."""
    path = require_file(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in (".tsv", ".tab"):
            return pd.read_csv(path, sep="\t")
        if suffix in (".jsonl", ".ndjson"):
            return pd.read_json(path, lines=True)
        if suffix == ".json":
            return pd.read_json(path)
        return pd.read_csv(path)
    except (ValueError, OSError, pd.errors.ParserError, pa.ArrowInvalid) as exc:
        raise InputError(f"cannot read table ({exc})", file=path) from None


def _item_key(item: Item, key: KeyKind) -> Any:
    if key == "id":
        return item.id
    value = item.meta.get(key)
    if value is None:
        raise InputError(f"item has no meta.{key} to join on (use --key id, or items from a loader that sets it)",
                         record=item.id, field=f"meta.{key}")
    return int(value)


def import_difficulty(
    table_path: str | Path,
    items: Sequence[Item],
    *,
    key_column: str,
    value_column: str,
    key: KeyKind = "position",
    on_unmatched: Literal["error", "report"] = "error",
    one_minus: bool = False,
    bucketing: Bucketing | None = None,
    name: str | None = None,
) -> tuple[DifficultyResult, ImportReport]:
    """Join an external difficulty table to items and build the difficulty artifact.

    ``key`` says what ``key_column`` holds: ``position`` (``meta.position``, e.g. the paper's LEK table,
    whose ``Index`` is the record's position in the response files), ``question_index``
    (``meta.question_index``) or ``id``. ``on_unmatched="error"`` refuses table keys that match no item and
    items without a value (a wrong key silently misaligns difficulties — the paper's own table correlates
    0.70 with the responses when joined by position and ~0 by question_index); ``"report"`` keeps the
    matched rows and returns what did not match. ``one_minus`` turns an accuracy-like value into difficulty.
    The imported value is also stored as ``p_correct__<name>`` = 1 − difficulty only when ``one_minus``.
    """
    if key not in ("position", "id", "question_index"):
        raise InputError(f"unknown key {key!r} (use position, id or question_index)", field="key")
    if on_unmatched not in ("error", "report"):
        raise InputError(f"on_unmatched must be 'error' or 'report', got {on_unmatched!r}")
    if not items:
        raise InputError("no items to join the difficulty table to")
    path = Path(table_path)
    df = read_table(path)
    for col in (key_column, value_column):
        if col not in df.columns:
            raise InputError(f"no column '{col}' (columns: {', '.join(map(str, df.columns))})", file=path, field=col)
    item_by_key: dict[Any, str] = {}
    for item in items:
        k = _item_key(item, key)
        if k in item_by_key:
            raise InputError(f"two items share {key} {k!r} ({item_by_key[k]} and {item.id})", record=item.id,
                             field=key)
        item_by_key[k] = item.id
    values: dict[str, float] = {}
    unmatched: list[Any] = []
    seen_keys: dict[Any, int] = {}
    # rows are counted from 1 (the first data row), as the loaders count records
    for row, (raw_key, raw_value) in enumerate(zip(df[key_column], df[value_column], strict=True), start=1):
        k = _table_key(raw_key, key, path, row, key_column)
        if k in seen_keys:
            raise InputError(f"duplicate key {k!r} (first at row {seen_keys[k]})", file=path, record=row,
                             field=key_column, record_kind="row")
        seen_keys[k] = row
        try:
            v = float(raw_value)
        except (TypeError, ValueError):
            raise InputError(f"value {raw_value!r} is not a number", file=path, record=row, field=value_column,
                             record_kind="row") from None
        if not math.isfinite(v):
            raise InputError(f"value {raw_value!r} is not finite", file=path, record=row, field=value_column,
                             record_kind="row")
        if k not in item_by_key:
            unmatched.append(k)
            continue
        values[item_by_key[k]] = 1.0 - v if one_minus else v
    without = [it.id for it in items if it.id not in values]
    report = ImportReport(len(values), unmatched, without)
    if on_unmatched == "error" and (unmatched or without):
        if unmatched:
            raise InputError(
                f"{len(unmatched)} key(s) in column '{key_column}' match no item's {key} (first: {unmatched[0]!r}); "
                "check --key, or pass --on-unmatched report", file=path, record=seen_keys[unmatched[0]],
                field=key_column, record_kind="row")
        raise InputError(f"{len(without)} item(s) have no row in the table (first: {without[0]})", file=path,
                         field=key_column)
    if not values:
        raise InputError(f"no table row matched any item by {key}", file=path, field=key_column)
    ids = [it.id for it in items if it.id in values]
    bucketing = bucketing or Bucketing.fixed()
    table = pd.DataFrame({"id": ids})
    label = name or path.stem
    if one_minus:
        table[f"{P_PREFIX}{label}"] = [1.0 - values[i] for i in ids]
    table["difficulty"] = [values[i] for i in ids]
    table["irt_b"] = np.full(len(ids), np.nan)
    labels, rule = bucketing.assign(table["difficulty"].to_numpy())
    table["bucket"] = labels
    meta = {**rule, "source": "import", "table": path.name, "table_sha256": sha256_file(path)[:16],
            "key_column": key_column, "key": key, "value_column": value_column, "one_minus": one_minus,
            "models": [label] if one_minus else [], "irt": None, "n_items": len(table), "import": report.as_dict()}
    return DifficultyResult(table, meta), report


def _table_key(raw: Any, key: KeyKind, path: Path, row: int, column: str) -> Any:
    if key == "id":
        if raw is None or (isinstance(raw, float) and math.isnan(raw)):
            raise InputError("empty key", file=path, record=row, field=column, record_kind="row")
        return str(raw)
    try:
        f = float(raw)
        if not f.is_integer():
            raise ValueError
        return int(f)
    except (TypeError, ValueError):
        raise InputError(f"key {raw!r} is not an integer {key}", file=path, record=row, field=column,
                         record_kind="row") from None


# ----------------------------------------------------------------------------------------------------------
# The artifact


def write_difficulty(result: DifficultyResult, path: str | Path) -> Path:
    """Write ``difficulty.parquet`` atomically; the rule and provenance go in the schema metadata."""
    path = Path(path)
    table = pa.Table.from_pandas(result.table.reset_index(drop=True), preserve_index=False)
    md = dict(table.schema.metadata or {})
    md[METADATA_KEY] = json.dumps(result.meta, sort_keys=True, default=_json_default).encode()
    table = table.replace_schema_metadata(md)
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def read_difficulty(path: str | Path) -> DifficultyResult:
    """Read a difficulty artifact, checking the required columns."""
    path = Path(path)
    table = read_parquet_table(path)
    missing = {"id", "difficulty", "bucket"} - set(table.column_names)
    if missing:
        raise InputError(f"not a difficulty file: missing column(s) {sorted(missing)}", file=path)
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    meta = json.loads(raw) if raw else {}
    df = table.to_pandas()
    bad = ~df["bucket"].isin([*DIFFICULTY_LEVELS, None]) & df["bucket"].notna()
    if bad.any():
        row = int(np.argmax(bad.to_numpy()))
        raise InputError(f"bucket {df['bucket'].iloc[row]!r} is not {'/'.join(DIFFICULTY_LEVELS)}", file=path,
                         record=row, field="bucket")
    return DifficultyResult(df, meta)


def read_difficulty_rows(path: str | Path, column: str = "difficulty") -> list[dict[str, Any]]:
    """The rows of a difficulty file as dicts, in file order, requiring only ``id`` and ``column``.

    What the order stage reads: one column (``difficulty``, or ``irt_b`` for source irt) of a file that may also
    be a table made elsewhere (no ``bucket`` column, values still to be checked row by row, which the order stage
    does so its errors name the row). :func:`read_difficulty` is the full artifact's reader.
    """
    path = Path(path)
    table = read_parquet_table(path)
    for col in ("id", column):
        if col not in table.column_names:
            raise InputError(f"not a difficulty file: no '{col}' column", file=path, field=col)
    return table.to_pylist()


def plot_histogram(result: DifficultyResult, path: str | Path, *, bins: int = 40, title: str | None = None) -> Path:
    """Histogram of difficulty with the bucket thresholds drawn (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    d = result.table["difficulty"].dropna().to_numpy()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(d, bins=bins, color="#4c72b0", alpha=0.85, edgecolor="white")
    sizes = result.bucket_sizes()
    for t, style in zip(result.meta.get("thresholds", []), ("--", ":"), strict=False):
        ax.axvline(t, color="#c44e52", linestyle=style, linewidth=1.5, label=f"threshold {t:.3f}")
    source = result.meta.get("source")
    ax.set_xlabel({"import": "difficulty (imported)", "human": "difficulty (human)"}.get(
        str(source), "difficulty (1 − mean expected accuracy)"))
    ax.set_ylabel("questions")
    ax.set_title(title or f"{len(d)} questions · easy {sizes['easy']} / medium {sizes['medium']} / hard {sizes['hard']}"
                 f" ({result.meta.get('rule', '?')})")
    ax.legend(loc="upper left", frameon=False)
    fig.tight_layout()
    with atomic_path(path, suffix=path.suffix or ".png") as tmp:
        fig.savefig(tmp, format=(path.suffix.lstrip(".") or "png"), dpi=120)
    plt.close(fig)
    return path

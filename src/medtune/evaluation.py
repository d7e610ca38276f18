"""Evaluation metrics over the scorer's predictions: accuracy with bootstrap CIs, F1, breakdowns, paired tests.

Small effects are the point of the orders study (the paper's best gain over random order is 1.8 points),
so every accuracy comes with a seeded 95% bootstrap interval and two prediction files on the same items are
compared *paired* (McNemar on the discordant pairs, and a paired bootstrap of the accuracy difference):
an unpaired comparison would throw away most of the power. Free-text answers (MedQuAD) get SQuAD-style
token precision/recall/F1, ROUGE-L (rouge-score) and BERTScore (:mod:`medtune.bertscore`), per item
(:func:`qa_item_scores`, the stage's ``item_metrics.parquet``) and as means. Where the scorer gives option
probabilities (letter and option modes), :func:`calibration_metrics` adds the expected calibration error and the
Brier score.

McNemar and the paired bootstrap are *within-run* tests: they resample test items and treat each prediction
file as a fixed system, so they say whether two runs differ on these items. Whether one training *strategy*
beats another also depends on how much runs of one strategy vary with the seed; that comparison, with the
training run as the unit, is :mod:`medtune.stats`.

Public functions (also used by the experiment report): :func:`accuracy_with_ci`, :func:`paired_bootstrap`,
:func:`mcnemar`, :func:`calibration_metrics`, :func:`qa_metrics`, :func:`qa_item_scores`, :func:`qa_summary`,
:func:`compute_metrics`, :func:`compare_predictions`.
"""

from __future__ import annotations

import re
import string
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medtune.bertscore import BertScoreSettings, resolve_bertscore_model
from medtune.errors import InputError
from medtune.factsheet import FactSheet
from medtune.io import require_file
from medtune.prompts import LETTERS
from medtune.schema import DIFFICULTY_LEVELS, Item, MCQItem, QAItem, item_source

DEFAULT_N_BOOT = 10_000
# meta keys that identify a record or hold another model's answer, never a grouping worth reporting.
_META_SKIP = frozenset({"line", "position", "question_index", "response", "response_model", "top3", "clls",
                        "shuffle", "row", "index", "realidx", "no", "image_url", "generator_seed",
                        "source_id"})
_MAX_GROUPS = 20
_BOOT_CHUNK = 500


def _as_float_array(values: Iterable[Any], name: str) -> np.ndarray:
    arr = np.asarray([np.nan if v is None or v is pd.NA else float(v) for v in values], dtype=float)
    if arr.ndim != 1:
        raise InputError(f"{name} must be one-dimensional")
    if np.isnan(arr).any():
        raise InputError(f"{name} contains missing values (record {int(np.argmax(np.isnan(arr)))})")
    return arr


# ----------------------------------------------------------------------------------------------------------
# Accuracy and paired comparisons


def accuracy_with_ci(
    correct: Iterable[Any],
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Mean of 0/1 (or per-item scores) with a percentile bootstrap CI (``scipy.stats.bootstrap``).

    The percentile method is used rather than BCa because BCa's jackknife is undefined for the constant
    samples small categories often produce; a constant sample gets the degenerate interval [p, p].
    Resamples are drawn in batches of ~2M values so memory stays bounded on large test sets.
    """
    from scipy.stats import bootstrap

    x = _as_float_array(correct, "correct")
    if x.size == 0:
        raise InputError("no predictions to compute accuracy over")
    acc = float(x.mean())
    if x.size == 1 or np.all(x == x[0]):
        low = high = acc
    else:
        res = bootstrap((x,), np.mean, n_resamples=n_boot, confidence_level=confidence, method="percentile",
                        vectorized=True, batch=max(1, 2_000_000 // x.size), rng=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {"accuracy": acc, "ci_low": low, "ci_high": high, "n": int(x.size), "confidence": confidence,
            "n_boot": n_boot, "seed": seed, "method": "percentile bootstrap"}


def paired_bootstrap(
    correct_a: Iterable[Any],
    correct_b: Iterable[Any],
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Paired bootstrap of mean(a) − mean(b) over the same items: difference, percentile CI and p-value.

    A within-run test: the two vectors are fixed systems and only the items vary (see :mod:`medtune.stats`
    for strategies compared over training runs). Items are resampled with replacement, the same draw for
    both systems. The two-sided p-value follows the shifted-null recipe (Berg-Kirkpatrick et al. 2012): the
    share of resampled differences at least as far from the observed difference as the observed difference
    is from 0, with the +1 correction (so it is never exactly 0).
    """
    a = _as_float_array(correct_a, "correct_a")
    b = _as_float_array(correct_b, "correct_b")
    if a.shape != b.shape:
        raise InputError(f"paired comparison needs the same items: {a.size} vs {b.size} values")
    if a.size == 0:
        raise InputError("no items to compare")
    d = a - b
    observed = float(d.mean())
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for start in range(0, n_boot, _BOOT_CHUNK):
        k = min(_BOOT_CHUNK, n_boot - start)
        idx = rng.integers(0, d.size, size=(k, d.size))
        boots[start:start + k] = d[idx].mean(axis=1)
    alpha = 1 - confidence
    low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    extreme = np.sum(np.abs(boots - observed) >= abs(observed) - 1e-12)
    p = float((extreme + 1) / (n_boot + 1)) if observed != 0 else 1.0
    return {"diff": observed, "ci_low": float(low), "ci_high": float(high), "p_value": min(1.0, p),
            "n": int(d.size), "n_boot": n_boot, "seed": seed, "confidence": confidence,
            "accuracy_a": float(a.mean()), "accuracy_b": float(b.mean())}


def mcnemar(correct_a: Iterable[Any], correct_b: Iterable[Any]) -> dict[str, Any]:
    """McNemar's test on paired 0/1 outcomes: exact binomial p-value and the mid-p variant.

    A within-run test, like :func:`paired_bootstrap`: it compares two fixed prediction files on the same items.
    ``b`` = items A gets right and B wrong, ``c`` = the reverse. Under H0 the discordant items split
    50/50: exact p = 2·P(X ≤ min(b, c)) for X ~ Binomial(b+c, 1/2), capped at 1; mid-p =
    2·P(X ≤ k) − P(X = k), which counts the observed outcome half (Fagerland et al. 2013 recommend it:
    the exact test is conservative). With no discordant pairs both are 1. ``chi2_cc`` is the
    continuity-corrected chi-square statistic, for reference.
    """
    from scipy.stats import binom, binomtest

    a = _as_float_array(correct_a, "correct_a")
    b_arr = _as_float_array(correct_b, "correct_b")
    if a.shape != b_arr.shape:
        raise InputError(f"paired comparison needs the same items: {a.size} vs {b_arr.size} values")
    if not (np.isin(a, (0, 1)).all() and np.isin(b_arr, (0, 1)).all()):
        raise InputError("McNemar's test needs 0/1 correctness")
    b = int(((a == 1) & (b_arr == 0)).sum())
    c = int(((a == 0) & (b_arr == 1)).sum())
    n = b + c
    if n == 0:
        p_exact = p_mid = 1.0
    else:
        k = min(b, c)
        p_exact = float(binomtest(k, n, 0.5).pvalue)
        p_mid = float(min(1.0, 2 * binom.cdf(k, n, 0.5) - binom.pmf(k, n, 0.5)))
    chi2 = (abs(b - c) - 1) ** 2 / n if n else 0.0
    return {"a_only": b, "b_only": c, "both": int(((a == 1) & (b_arr == 1)).sum()),
            "neither": int(((a == 0) & (b_arr == 0)).sum()), "n_discordant": n, "p_exact": p_exact,
            "p_midp": p_mid, "chi2_cc": float(chi2)}


# ----------------------------------------------------------------------------------------------------------
# Calibration of option probabilities

DEFAULT_CALIBRATION_BINS = 10


def _prob_matrix(probs: Sequence[Sequence[float]]) -> np.ndarray:
    """Ragged probability vectors as one zero-padded matrix (a padded option has probability 0)."""
    width = max((len(p) for p in probs), default=0)
    out = np.zeros((len(probs), width))
    for r, p in enumerate(probs):
        row = np.asarray(p, dtype=float)
        if row.size == 0 or np.isnan(row).any() or (row < -1e-9).any() or abs(row.sum() - 1) > 1e-3:
            raise InputError(f"option probabilities {np.round(row, 4).tolist()} are not a probability vector "
                             "(non-negative, summing to 1)", record=r, field="probs")
        out[r, : row.size] = row
    return out


def calibration_metrics(
    probs: Sequence[Sequence[float]],
    answers: Sequence[int],
    *,
    n_bins: int = DEFAULT_CALIBRATION_BINS,
) -> dict[str, Any]:
    """Expected calibration error and multi-class Brier score of option probability vectors.

    A model whose 70 %-confident answers are right 70 % of the time can be trusted to say when it is
    unsure; accuracy alone does not show that, and orders of training data may change it. ECE (Naeini et
    al. 2015; Guo et al. 2017): the top probability of each item is its confidence and the hit is whether
    that option is the answer; items fall in ``n_bins`` equal-width bins of confidence ([0, 0.1), …,
    [0.9, 1.0] for 10), and ECE = Σ_b (n_b / N)·|accuracy_b − mean confidence_b|. Brier (Brier 1950, the
    original multi-class form): the mean over items of Σ_k (p_k − 1[k = answer])², from 0 (certain and right)
    to 2 (certain and wrong). ``bins`` lists the non-empty bins (for a reliability diagram).
    """
    if len(probs) != len(answers):
        raise InputError(f"{len(probs)} probability vectors for {len(answers)} answers")
    if not probs:
        raise InputError("no probabilities to assess calibration on")
    if n_bins < 1:
        raise InputError(f"calibration needs at least one bin (got {n_bins})")
    p = _prob_matrix(probs)
    gold = np.asarray(answers, dtype=int)
    if ((gold < 0) | (gold >= p.shape[1])).any():
        r = int(np.argmax((gold < 0) | (gold >= p.shape[1])))
        raise InputError(f"answer {gold[r]} has no probability ({p.shape[1]} options)", record=r, field="answer")
    onehot = np.zeros_like(p)
    onehot[np.arange(len(gold)), gold] = 1.0
    brier = float(((p - onehot) ** 2).sum(axis=1).mean())
    conf = p.max(axis=1)
    hit = (p.argmax(axis=1) == gold).astype(float)
    idx = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    hit_sum = np.bincount(idx, weights=hit, minlength=n_bins)
    nonempty = counts > 0
    gaps = np.abs(hit_sum[nonempty] - conf_sum[nonempty])  # n_b · |acc_b − conf_b|
    ece = float(gaps.sum() / len(gold))
    bins = [{"low": b / n_bins, "high": (b + 1) / n_bins, "n": int(counts[b]),
             "confidence": float(conf_sum[b] / counts[b]), "accuracy": float(hit_sum[b] / counts[b])}
            for b in np.nonzero(nonempty)[0]]
    return {"ece": ece, "brier": brier, "n": len(gold), "n_bins": n_bins, "mean_confidence": float(conf.mean()),
            "bins": bins}


def _calibration_of(frame: pd.DataFrame, items: Sequence[MCQItem]) -> dict[str, Any] | None:
    """Calibration of a letter/option-mode table's ``probs`` (rows without probabilities are left out)."""
    if "probs" not in frame.columns:
        return None
    rows = [r for r, v in enumerate(frame["probs"]) if v is not None and not (isinstance(v, float) and v != v)]
    if not rows:
        return None
    probs = [list(frame["probs"].iloc[r]) for r in rows]
    for r, p in zip(rows, probs, strict=True):
        if len(p) != len(items[r].options):
            raise InputError(f"{len(p)} option probabilities for id '{items[r].id}', which has "
                             f"{len(items[r].options)} options", record=r + 1, field="probs")
    try:
        return calibration_metrics(probs, [items[r].answer for r in rows])
    except InputError as exc:
        if exc.record is None:
            raise
        r = rows[int(exc.record)]
        raise InputError(f"{exc.reason} (id '{items[r].id}')", record=r + 1, field=exc.field) from None


# ----------------------------------------------------------------------------------------------------------
# Free-text QA


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and articles (a, an, the), squeeze whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_prf(prediction: str, reference: str) -> tuple[float, float, float]:
    """Token-overlap precision, recall and F1 after :func:`normalize_answer` (SQuAD's F1)."""
    pred = normalize_answer(prediction).split()
    ref = normalize_answer(reference).split()
    if not pred or not ref:
        same = float(pred == ref)
        return same, same, same
    overlap = sum((Counter(pred) & Counter(ref)).values())
    if overlap == 0:
        return 0.0, 0.0, 0.0
    p, r = overlap / len(pred), overlap / len(ref)
    return p, r, 2 * p * r / (p + r)


def _text_scores(predictions: Sequence[str | None], references: Sequence[str]) -> pd.DataFrame:
    """Per pair: token precision/recall/F1, exact match and ROUGE-L (rouge-score, stemmed); None counts as ""."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rows = []
    for pred, ref in zip(predictions, references, strict=True):
        pred = pred if isinstance(pred, str) else ""  # None / NaN: nothing generated
        p, r, f = token_prf(pred, ref)
        rl = scorer.score(ref, pred)["rougeL"]
        rows.append({"precision": p, "recall": r, "f1": f, "exact_match": float(normalize_answer(pred)
                                                                               == normalize_answer(ref)),
                     "rougeL": rl.fmeasure, "rougeL_precision": rl.precision, "rougeL_recall": rl.recall})
    return pd.DataFrame(rows, columns=["precision", "recall", "f1", "exact_match", "rougeL", "rougeL_precision",
                                       "rougeL_recall"])


def qa_metrics(predictions: Sequence[str | None], references: Sequence[str], *,
               per_item: bool = False) -> dict[str, Any]:
    """Mean token precision/recall/F1, exact match and ROUGE-L (rouge-score, stemmed) over QA pairs.

    A missing prediction (None) counts as an empty answer. ``per_item`` adds the per-pair lists.
    """
    if len(predictions) != len(references):
        raise InputError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise InputError("no QA pairs to evaluate")
    frame = _text_scores(predictions, references)
    out: dict[str, Any] = {k: float(frame[k].mean()) for k in frame.columns}
    out["n"] = len(frame)
    if per_item:
        out["per_item"] = {k: frame[k].tolist() for k in frame.columns}
    return out


# Per-item score columns of free text and the metrics.json key their mean goes under (qa block). BERTScore
# columns (``bertscore_*``) go to the qa block's ``bertscore`` sub-block instead.
_TEXT_COLUMNS = {"precision": "token_precision", "recall": "token_recall", "f1": "token_f1",
                 "exact_match": "exact_match", "rougeL": "rougeL", "rougeL_precision": "rougeL_precision",
                 "rougeL_recall": "rougeL_recall"}
BERTSCORE_PREFIX = "bertscore_"


def qa_item_scores(predictions: pd.DataFrame, items: Sequence[Item],
                   bertscore: BertScoreSettings | None = None, facts: FactSheet | None = None) -> pd.DataFrame:
    """One row per prediction of a free-text answer (``generated``) with every per-item score: the content of
    ``item_metrics.parquet``, and what :func:`compute_metrics` averages for the ``qa`` block.

    Columns: ``id``, ``token_precision``, ``token_recall``, ``token_f1``, ``exact_match``, ``rougeL`` (and its
    ``rougeL_precision``/``rougeL_recall``), and with ``bertscore`` on ``bertscore_precision``,
    ``bertscore_recall``, ``bertscore_f1``; with a fact sheet (``facts``, the world's facts, e.g. the synthetic
    task's ``.facts.json``) ``fact_precision``, ``fact_completeness``, ``fact_stated`` and ``no_fact``
    (:mod:`medtune.factcheck`). A score added here reaches metrics.json as its column's mean. Rows
    follow ``predictions``; the frame's ``attrs["bertscore"]`` holds what BERTScore used (None when off).
    """
    frame, aligned, _ = _align(predictions, items)
    if any(not isinstance(it, QAItem) for it in aligned):
        raise InputError("per-item QA scores need free-text items")
    if "generated" not in frame.columns:
        raise InputError("free-text items need generated answers (score with mode=generate)")
    generated = [g if isinstance(g, str) else None for g in frame["generated"]]
    refs = [it.answer for it in aligned if isinstance(it, QAItem)]
    text = _text_scores(generated, refs).rename(columns=_TEXT_COLUMNS)
    out = pd.concat([pd.DataFrame({"id": frame["id"].astype(str)}), text], axis=1)
    out.attrs["bertscore"] = None
    # ``auto`` without the packaged MiniLM resolves to no model: BERTScore is then left out, not an error.
    if bertscore is not None and resolve_bertscore_model(bertscore) is not None:
        from medtune.bertscore import bertscore as score_bert

        res = score_bert(generated, refs, bertscore)
        for key, values in res.pop("per_item").items():
            out[f"{BERTSCORE_PREFIX}{key}"] = values
        out.attrs["bertscore"] = {k: v for k, v in res.items() if k not in ("precision", "recall", "f1", "n")}
    if facts is not None:
        from medtune.factcheck import fact_metrics

        per = fact_metrics(generated, aligned, facts)["per_item"]
        out["fact_precision"] = per["factual_precision"]
        out["fact_completeness"] = per["completeness"]
        out["fact_stated"] = [float(n) for n in per["n_stated"]]
        out["no_fact"] = [float(v) for v in per["no_fact"]]
    return out


def qa_summary(scores: pd.DataFrame, *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> dict[str, Any]:
    """The ``qa`` block of metrics.json from :func:`qa_item_scores`' frame: every score column's mean (under its
    historical key: ``f1`` is the token F1), ``n``, the token F1's bootstrap CI, and ``bertscore``."""
    if scores.empty:
        raise InputError("no QA pairs to evaluate")
    keys = {v: k for k, v in _TEXT_COLUMNS.items()}
    out: dict[str, Any] = {}
    for col in scores.columns:
        if col != "id" and not col.startswith(BERTSCORE_PREFIX):
            out[keys.get(col, col)] = float(scores[col].mean())
    out["n"] = len(scores)
    out["f1_ci"] = _ci(scores["token_f1"], n_boot, seed)
    info = scores.attrs.get("bertscore")
    if f"{BERTSCORE_PREFIX}f1" in scores.columns:
        block = {k: float(scores[f"{BERTSCORE_PREFIX}{k}"].mean()) for k in ("precision", "recall", "f1")}
        block["f1_ci"] = _ci(scores[f"{BERTSCORE_PREFIX}f1"], n_boot, seed)
        out["bertscore"] = {**block, **(info or {})}
    return out


def _ci(values: Iterable[Any], n_boot: int, seed: int) -> dict[str, float]:
    res = accuracy_with_ci(values, n_boot=n_boot, seed=seed)
    return {"ci_low": res["ci_low"], "ci_high": res["ci_high"]}


# ----------------------------------------------------------------------------------------------------------
# Reading predictions and putting it together

PREDICTION_COLUMNS = ("id", "answer", "pred", "correct")


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read a predictions file (Parquet or JSON lines) written by the scorer, checking its columns."""
    path = require_file(path)
    try:
        frame = pd.read_json(path, lines=True) if path.suffix == ".jsonl" else pd.read_parquet(path)
    except (ValueError, OSError) as exc:
        raise InputError(f"not a readable predictions file ({exc})", file=path) from None
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"not a predictions file: missing column(s) {missing}", file=path)
    if frame["id"].duplicated().any():
        row = int(np.argmax(frame["id"].duplicated().to_numpy()))
        raise InputError(f"duplicate id '{frame['id'].iloc[row]}'", file=path, record=row + 1, field="id")
    return frame


def _correct_vector(frame: pd.DataFrame) -> np.ndarray:
    # A generate-mode answer that could not be extracted has pred/correct null: it counts as wrong.
    return np.asarray([bool(v) if v is not None and v is not pd.NA and v == v else False
                       for v in frame["correct"]], dtype=float)


def _pred_vector(frame: pd.DataFrame) -> np.ndarray:
    return np.asarray([int(v) if v is not None and v is not pd.NA and v == v else -1 for v in frame["pred"]])


def _groups(values: Sequence[Any], correct: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    keys = pd.Series([None if v is None else str(v) for v in values], dtype=object)
    for key in sorted(k for k in keys.dropna().unique()):
        mask = (keys == key).to_numpy()
        res = accuracy_with_ci(correct[mask], n_boot=n_boot, seed=seed)
        out[key] = {"n": res["n"], "accuracy": res["accuracy"], "ci_low": res["ci_low"], "ci_high": res["ci_high"]}
    return out


def _auto_meta_keys(items: Sequence[Item]) -> list[str]:
    keys: dict[str, set] = {}
    for it in items:
        for k, v in it.meta.items():
            if k in _META_SKIP:
                continue
            if isinstance(v, str | bool | int) or v is None:
                keys.setdefault(k, set()).add(v)
            else:
                keys[k] = {*keys.get(k, set()), *range(_MAX_GROUPS + 1)}  # unhashable/compound: never a group
    return sorted(k for k, vals in keys.items() if 2 <= len(vals - {None}) <= _MAX_GROUPS)


def _sources(items: Sequence[Item]) -> list[str | None] | None:
    """Each item's source (its mixture part, else its own source), when the items come from several; else None:
    a test set of one source has nothing to break down."""
    sources = [item_source(it) for it in items]
    return sources if len(set(sources) - {None}) > 1 else None


def _align(predictions: pd.DataFrame, items: Sequence[Item]) -> tuple[pd.DataFrame, list[Item], list[str]]:
    by_id = {it.id: it for it in items}
    unknown = [i for i in predictions["id"] if i not in by_id]
    if unknown:
        row = int(np.flatnonzero((predictions["id"] == unknown[0]).to_numpy())[0]) + 1  # counted from 1
        raise InputError(f"prediction for id '{unknown[0]}' has no item ({len(unknown)} unknown ids); "
                         "are these predictions for another items file?", record=row, field="id")
    predicted = set(predictions["id"])
    missing = [it.id for it in items if it.id not in predicted]
    aligned = [by_id[i] for i in predictions["id"]]
    return predictions.reset_index(drop=True), aligned, missing


def compute_metrics(
    predictions: pd.DataFrame,
    items: Sequence[Item],
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    meta_keys: Sequence[str] | None = None,
    bertscore: BertScoreSettings | None = None,
    item_scores: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """All metrics of one predictions table on its items (the content of ``metrics.json``).

    MCQ: accuracy with CI, macro and weighted F1 over answer positions, accuracy per category,
    subcategory, human difficulty level and meta key (auto: scalar meta fields with 2–20 values, e.g. the
    USMLE step), per source where the items come from several (``per_source``: a mixture's parts),
    gold/predicted answer-position distributions and the unanswered rate; in letter and option mode also
    ``calibration`` (ECE and Brier score of the option probabilities, see
    :func:`calibration_metrics`). Free text: the means of :func:`qa_item_scores` (token P/R/F1,
    exact match, ROUGE-L; BERTScore with ``bertscore`` settings, see :mod:`medtune.bertscore`), computed here
    unless the caller passes them as ``item_scores`` (the stage writes the same frame). Items without a
    prediction are counted (``n_items_missing``), predictions without an item are an error.
    """
    from sklearn.metrics import f1_score

    if predictions.empty:
        raise InputError("no predictions to evaluate")
    frame, aligned, missing = _align(predictions, items)
    kinds = {it.kind for it in aligned}
    if len(kinds) > 1:
        raise InputError("cannot evaluate MCQ and free-text items together")
    mode = str(frame["mode"].iloc[0]) if "mode" in frame.columns else None
    out: dict[str, Any] = {"n": len(frame), "n_items_missing": len(missing), "mode": mode, "seed": seed,
                           "n_boot": n_boot}
    if kinds == {"qa"}:
        scores = item_scores if item_scores is not None else qa_item_scores(frame, aligned, bertscore)
        if scores["id"].astype(str).tolist() != frame["id"].astype(str).tolist():
            raise InputError("per-item scores are not for these predictions (ids differ)", field="id")
        out["kind"] = "qa"
        out["qa"] = qa_summary(scores, n_boot=n_boot, seed=seed)
        cats = [it.category for it in aligned]
        if any(c is not None for c in cats):
            out["per_category_f1"] = _groups(cats, scores["token_f1"].to_numpy(dtype=float), n_boot, seed)
        sources = _sources(aligned)
        if sources is not None:
            out["per_source_f1"] = _groups(sources, scores["token_f1"].to_numpy(dtype=float), n_boot, seed)
        return out

    out["kind"] = "mcq"
    gold = np.asarray([it.answer for it in aligned if isinstance(it, MCQItem)])
    answers = frame["answer"].to_numpy()
    clash = np.nonzero(answers.astype(int) != gold)[0]
    if clash.size:
        r = int(clash[0])
        raise InputError(f"prediction's answer {answers[r]} differs from the item's {gold[r]} for id "
                         f"'{frame['id'].iloc[r]}'", record=r + 1, field="answer")
    correct = _correct_vector(frame)
    pred = _pred_vector(frame)
    recomputed = (pred == gold).astype(float)
    if not np.array_equal(recomputed, correct):
        r = int(np.argmax(recomputed != correct))
        raise InputError(f"'correct' disagrees with pred/answer for id '{frame['id'].iloc[r]}'", record=r + 1,
                         field="correct")
    out["accuracy"] = accuracy_with_ci(correct, n_boot=n_boot, seed=seed)
    labels = sorted(set(gold.tolist()) | (set(pred.tolist()) - {-1}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["macro_f1"] = float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0))
        out["weighted_f1"] = float(f1_score(gold, pred, labels=labels, average="weighted", zero_division=0))
    out["unanswered"] = int((pred == -1).sum())
    out["answer_positions"] = {
        "gold": {LETTERS[k]: int(v) for k, v in sorted(Counter(gold.tolist()).items())},
        "pred": {(LETTERS[k] if k >= 0 else "none"): int(v) for k, v in sorted(Counter(pred.tolist()).items())},
    }
    mcq = [it for it in aligned if isinstance(it, MCQItem)]
    if mode in ("letter", "option"):
        calibration = _calibration_of(frame, mcq)
        if calibration is not None:
            out["calibration"] = calibration
    for field in ("category", "subcategory"):
        vals = [getattr(it, field) for it in mcq]
        if any(v is not None for v in vals):
            out[f"per_{field}"] = _groups(vals, correct, n_boot, seed)
    sources = _sources(mcq)
    if sources is not None:
        out["per_source"] = _groups(sources, correct, n_boot, seed)
    levels = [it.human_difficulty if it.human_difficulty in DIFFICULTY_LEVELS else None for it in mcq]
    if any(v is not None for v in levels):
        out["per_human_difficulty"] = _groups(levels, correct, n_boot, seed)
    keys = list(meta_keys) if meta_keys is not None else _auto_meta_keys(mcq)
    per_meta = {}
    for key in keys:
        vals = [it.meta.get(key) for it in mcq]
        if all(v is None for v in vals):
            raise InputError(f"no item has meta key '{key}'", field=f"meta.{key}")
        per_meta[key] = _groups(vals, correct, n_boot, seed)
    if per_meta:
        out["per_meta"] = per_meta
    return out


def per_item_scores(frame: pd.DataFrame) -> np.ndarray:
    """Per item: 0/1 correctness (MCQ) or token F1 against the reference (free-text rows)."""
    if frame["correct"].notna().any() or "generated" not in frame.columns:
        return _correct_vector(frame)
    pairs = zip(frame["generated"], frame["answer"], strict=True)
    return np.asarray([token_prf(g if isinstance(g, str) else "", str(a))[2] for g, a in pairs])


def compare_predictions(
    a: pd.DataFrame,
    b: pd.DataFrame,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    names: tuple[str, str] = ("a", "b"),
) -> dict[str, Any]:
    """Paired comparison of two prediction tables on the same items (matched by id).

    MCQ: McNemar (exact and mid-p) and the paired bootstrap of the accuracy difference (a − b).
    Free text: the paired bootstrap of the mean token-F1 difference.
    """
    ids_a, ids_b = set(a["id"]), set(b["id"])
    if ids_a != ids_b:
        only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
        where = f"'{only_a[0]}' only in {names[0]}" if only_a else f"'{only_b[0]}' only in {names[1]}"
        raise InputError(f"the two prediction files cover different items ({len(only_a)} only in {names[0]}, "
                         f"{len(only_b)} only in {names[1]}; e.g. {where})")
    b_rows = {i: k + 1 for k, i in enumerate(b["id"])}  # B's own rows, counted from 1: the CLI names file B
    b = b.set_index("id").loc[a["id"]].reset_index()
    if a["answer"].astype(str).tolist() != b["answer"].astype(str).tolist():
        r = int(np.argmax(a["answer"].astype(str).to_numpy() != b["answer"].astype(str).to_numpy()))
        raise InputError(f"gold answers differ for id '{a['id'].iloc[r]}': not the same items",
                         record=b_rows[a["id"].iloc[r]], field="answer")
    sa, sb = per_item_scores(a), per_item_scores(b)
    binary = bool(np.isin(sa, (0, 1)).all() and np.isin(sb, (0, 1)).all()) and a["correct"].notna().any()
    out: dict[str, Any] = {"names": list(names), "n": len(a), "metric": "accuracy" if binary else "token_f1",
                           names[0]: float(sa.mean()), names[1]: float(sb.mean()),
                           "paired_bootstrap": paired_bootstrap(sa, sb, n_boot=n_boot, seed=seed)}
    if binary:
        out["mcnemar"] = mcnemar(sa, sb)
    return out

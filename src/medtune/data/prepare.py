"""Data preparation: the filtering, cleaning, selection and de-duplication the reference studies do by hand.

Steps (each a pure function of items, composed by :func:`prepare_items` in this order):

1. :func:`keep_single_answer` — drop multi-answer questions (MedMCQA marks them ``meta.choice_type ==
   "multi"``); a single-index ``answer`` cannot represent them.
2. :func:`filter_items` — keep items matching a small, safe filter expression (``split == 'train' and
   category in ['Anatomy', 'Surgery']``), evaluated on item fields without ``eval``.
3. :func:`clean_explanation` — strip the answer-restating prefixes MedMCQA explanations carry
   (``Ans. is 'a' i.e., X``), by the documented patterns in :data:`ANSWER_PREFIX_PATTERNS`.
4. :func:`deduplicate` — exact duplicates (normalised text) and near duplicates (MinHash LSH from
   ``datasketch``, confirmed by the exact Jaccard similarity of word shingles); the first occurrence is kept.
5. :func:`select_by_explanation_length` — keep N items with the longest, shortest or closest-to-median
   explanations (ties broken by id, so the choice is deterministic).

:func:`leakage_report` compares a training and a test set with the same text normalisation: medical QA
benchmarks are known to overlap, and a test question seen in training inflates accuracy.

What counts as "the same question": the normalised stem *plus* the sorted normalised options. Stems alone
would merge the many distinct "All of the following are true EXCEPT:" questions; sorting the options
catches the same question with shuffled options.
"""

from __future__ import annotations

import ast
import hashlib
import re
import statistics
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from medtune.errors import InputError
from medtune.schema import Item, MCQItem, QAItem
from medtune.settings import Settings, renamed_names

SelectMode = Literal["longest", "shortest", "median"]

# ----------------------------------------------------------------------------------------------------------
# 1. single answer


def keep_single_answer(items: Sequence[Item]) -> tuple[list[Item], list[Item]]:
    """Split items into (kept, removed): removed are MCQs whose ``meta.choice_type`` is ``"multi"``."""
    kept, removed = [], []
    for it in items:
        choice_type = str(it.meta.get("choice_type", "")).strip().lower()
        (removed if isinstance(it, MCQItem) and choice_type == "multi" else kept).append(it)
    return kept, removed


# ----------------------------------------------------------------------------------------------------------
# 2. filter expressions

FILTER_FIELDS = (
    "id", "question", "source", "split", "category", "subcategory", "human_difficulty", "explanation",
    "answer", "n_options", "question_length", "explanation_length", "meta",
)
_ALLOWED_NODES = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.Compare, ast.Eq, ast.NotEq,
    ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is, ast.IsNot, ast.Name, ast.Load, ast.Constant,
    ast.List, ast.Tuple, ast.Attribute, ast.USub,
)


class _Meta:
    """``meta.key`` access in filter expressions; a missing key reads as None."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self._meta = meta

    def get(self, key: str) -> Any:
        return self._meta.get(key)


def _item_fields(it: Item) -> dict[str, Any]:
    expl = getattr(it, "explanation", None)
    return {
        "id": it.id, "question": it.question, "source": it.source, "split": it.split, "category": it.category,
        "subcategory": getattr(it, "subcategory", None), "human_difficulty": getattr(it, "human_difficulty", None),
        "explanation": expl, "answer": it.answer, "n_options": len(getattr(it, "options", []) or []),
        "question_length": len(it.question), "explanation_length": len(expl or ""), "meta": _Meta(it.meta),
    }


def compile_filter(expression: str) -> Callable[[Item], bool]:
    """Compile a filter expression over item fields (see :data:`FILTER_FIELDS`) into a predicate.

    Allowed: comparisons (``== != < <= > >= in not in is``), ``and``/``or``/``not``, literals, lists and
    ``meta.KEY``. Anything else (calls, subscripts, other names) is rejected, so the expression cannot run code.
    """
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise InputError(f"invalid filter expression {expression!r}: {exc.msg}", field="where") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise InputError(f"filter expression {expression!r} uses unsupported syntax "
                             f"({type(node).__name__})", field="where")
        if isinstance(node, ast.Name) and node.id not in FILTER_FIELDS and node.id not in ("True", "False", "None"):
            raise InputError(f"unknown field '{node.id}' in filter (known: {', '.join(FILTER_FIELDS)})", field="where")
        if isinstance(node, ast.Attribute) and not (isinstance(node.value, ast.Name) and node.value.id == "meta"):
            raise InputError("only meta.KEY attribute access is allowed in filters", field="where")

    def evaluate(node: ast.AST, env: dict[str, Any]) -> Any:
        if isinstance(node, ast.Expression):
            return evaluate(node.body, env)
        if isinstance(node, ast.BoolOp):
            vals = (evaluate(v, env) for v in node.values)
            return all(vals) if isinstance(node.op, ast.And) else any(vals)
        if isinstance(node, ast.UnaryOp):
            v = evaluate(node.operand, env)
            return (not v) if isinstance(node.op, ast.Not) else -v
        if isinstance(node, ast.Compare):
            left = evaluate(node.left, env)
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = evaluate(comp, env)
                if not _compare(op, left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.Name):
            return env[node.id]
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.List | ast.Tuple):
            return [evaluate(e, env) for e in node.elts]
        if isinstance(node, ast.Attribute):
            return env["meta"].get(node.attr)
        raise AssertionError(node)  # pragma: no cover - rejected above

    def predicate(it: Item) -> bool:
        return bool(evaluate(tree, _item_fields(it)))

    return predicate


def _compare(op: ast.cmpop, a: Any, b: Any) -> bool:
    try:
        if isinstance(op, ast.Eq):
            return a == b
        if isinstance(op, ast.NotEq):
            return a != b
        if isinstance(op, ast.In):
            return a in b
        if isinstance(op, ast.NotIn):
            return a not in b
        if isinstance(op, ast.Is):
            return a is b
        if isinstance(op, ast.IsNot):
            return a is not b
        if a is None or b is None:
            return False  # an absent value is neither smaller nor larger than anything
        if isinstance(op, ast.Lt):
            return a < b
        if isinstance(op, ast.LtE):
            return a <= b
        if isinstance(op, ast.Gt):
            return a > b
        return a >= b
    except TypeError as exc:
        raise InputError(f"filter compares incompatible values {a!r} and {b!r} ({exc})", field="where") from None


def filter_items(items: Sequence[Item], expression: str) -> tuple[list[Item], list[Item]]:
    """Split items into (kept, removed) by a filter expression (see :func:`compile_filter`)."""
    pred = compile_filter(expression)
    kept, removed = [], []
    for it in items:
        (kept if pred(it) else removed).append(it)
    return kept, removed


# ----------------------------------------------------------------------------------------------------------
# 3. explanation cleaning
#
# MedMCQA explanations usually open by restating the answer, often more than once, e.g.
#   "Ans. is 'a' i.e., Lateral geniculate body  Lateral geniculate body relays ..."
#   "Ans: B. Ref: ..."   "Answer- C (Vitamin K)"   "Ans. (d) Cortisol"   "Ans is 'b' ie Nucleus ambiguus"
# Patterns:
#   ANS_IE      "Ans[.:]? is 'x' i.e.[,:]" / "Ans - x ie" (the "i.e." restatement), removed anywhere in the text
#               (it is distinctive enough), case-insensitive, with optional quotes/brackets around the letter.
#   ANS_LEAD    a leading "Ans." / "Ans:" / "Answer is" / "Answer-" followed by a letter a-e in quotes or
#               brackets, a bare capital, or a bare lower-case letter followed by punctuation ("Ans: b.");
#               only at the start of the text (or after a previous removal): a letter elsewhere may be prose.
# After each removal, the correct option's text is removed too when it follows at once (bare, or in
# brackets or quotes): it is the restated answer ("Ans. is 'a' i.e., Fluoride Fluoride is ..."). Citations
# ("Ref: Harrison 19th ed. p 234") are kept: they are content, and their abbreviations make their end
# ambiguous. Whitespace is collapsed afterwards; an explanation that ends up empty becomes None.

_LETTER = r"[\(\[\"'‘’“”]?\s*([a-eA-E])\s*[\)\]\"'‘’“”]?"
_ANS_HEAD = r"ans(?:wer)?\s*[.:\-–]*\s*(?:is\s*)?[:\-–]?\s*"
ANS_IE = re.compile(rf"\b{_ANS_HEAD}{_LETTER}\s*[,.:;\-–]?\s*i\.?\s*e\.?\s*[,:;\-–]?\s*", re.IGNORECASE)
# A bare lower-case letter must be followed by punctuation or the end ("Answer is a major ..." is prose); a
# bare capital, a quoted or a bracketed letter may be followed by anything.
_LEAD_LETTER = r"(?:[\(\[\"'‘’“”]\s*[a-eA-E]\s*[\)\]\"'‘’“”]|(?-i:[A-E])(?=\s)|[a-eA-E](?=\s*(?:[.:\-–),(]|$)))"
ANS_LEAD = re.compile(rf"^\s*{_ANS_HEAD}{_LEAD_LETTER}\s*[.:\-–),]*\s*", re.IGNORECASE)
ANSWER_PREFIX_PATTERNS: dict[str, re.Pattern[str]] = {"ANS_IE": ANS_IE, "ANS_LEAD": ANS_LEAD}
_OPEN, _CLOSE = "([\"'‘“", ")]\"'’”"


def _drop_restated_answer(rest: str, answer_text: str | None) -> str:
    """``rest`` without a leading copy of the answer text (bare, or in brackets or quotes)."""
    if not answer_text or not answer_text.strip():
        return rest
    ans = answer_text.strip()
    body = rest.lstrip()
    opener = body[:1] if body[:1] in _OPEN else ""
    body = body[len(opener):]
    if body[: len(ans)].lower() != ans.lower():
        return rest
    after = body[len(ans):]
    if after[:1].isalnum():
        return rest  # only a prefix of a longer word
    if opener:
        if after[:1] not in _CLOSE:
            return rest
        after = after[1:]
    return after.lstrip(" \t.,;:-–")


def clean_explanation(text: str | None, answer_text: str | None = None) -> str | None:
    """Remove answer-restating prefixes (see the patterns above) from an explanation; None if nothing is left."""
    if text is None:
        return None
    out = text
    while m := ANS_IE.search(out):
        out = out[: m.start()] + " " + _drop_restated_answer(out[m.end():], answer_text)
    while m := ANS_LEAD.match(out):
        out = _drop_restated_answer(out[m.end():], answer_text)
    out = re.sub(r"\s+", " ", out).strip()
    return out or None


def clean_explanations(items: Sequence[Item]) -> tuple[list[Item], int]:
    """Copies of items with cleaned explanations, and how many explanations changed."""
    out: list[Item] = []
    changed = 0
    for it in items:
        if isinstance(it, MCQItem) and it.explanation:
            new = clean_explanation(it.explanation, it.options[it.answer])
            if new != it.explanation:
                changed += 1
                it = it.model_copy(update={"explanation": new})
        out.append(it)
    return out, changed


# ----------------------------------------------------------------------------------------------------------
# 4. de-duplication


def normalize_text(text: str) -> str:
    """Unicode NFKC, lower case, punctuation to spaces, collapsed whitespace."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def item_text(it: Item) -> str:
    """The normalised text that identifies a question: stem plus sorted options (see the module docstring)."""
    parts = [normalize_text(it.question)]
    if isinstance(it, MCQItem):
        parts += sorted(normalize_text(o) for o in it.options)
    return " | ".join(parts)


def shingles(text: str, k: int = 3) -> set[str]:
    """Word k-gram shingles of normalised text (the whole token sequence when it is shorter than k)."""
    tokens = text.replace("|", " ").split()
    if len(tokens) <= k:
        return {" ".join(tokens)}
    return {" ".join(tokens[i: i + k]) for i in range(len(tokens) - k + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


@dataclass(frozen=True)
class DuplicatePair:
    """``removed`` (or, in a leakage report, the test item) duplicates ``kept`` (the training item)."""

    removed: str
    kept: str
    kind: Literal["exact", "near"]
    similarity: float


class _NearIndex:
    """MinHash LSH over item shingles; candidates are confirmed with the exact Jaccard similarity."""

    def __init__(self, threshold: float, num_perm: int = 128, k: int = 3) -> None:
        from datasketch import MinHash, MinHashLSH

        if not 0.0 < threshold <= 1.0:
            raise InputError(f"near-duplicate threshold must be in (0, 1], got {threshold}", field="threshold")
        self._MinHash = MinHash
        self.threshold = threshold
        self.num_perm = num_perm
        self.k = k
        # The LSH only proposes candidates (confirmed below by exact Jaccard), so it may use a lower threshold:
        # datasketch cannot band for thresholds above ~0.95 with 128 permutations.
        self.lsh = MinHashLSH(threshold=min(threshold, 0.9), num_perm=num_perm)
        self.sets: dict[str, set[str]] = {}

    def minhash(self, sh: set[str]):
        m = self._MinHash(num_perm=self.num_perm, seed=1)
        m.update_batch([s.encode("utf-8") for s in sorted(sh)])
        return m

    def query(self, sh: set[str]) -> list[tuple[str, float]]:
        """Indexed keys whose exact Jaccard similarity to ``sh`` is at least the threshold, most similar first."""
        hits = [(key, jaccard(sh, self.sets[key])) for key in self.lsh.query(self.minhash(sh))]
        hits = [(key, sim) for key, sim in hits if sim >= self.threshold]
        return sorted(hits, key=lambda kv: (-kv[1], kv[0]))

    def add(self, key: str, sh: set[str]) -> None:
        self.sets[key] = sh
        self.lsh.insert(key, self.minhash(sh))


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def deduplicate(
    items: Sequence[Item], *, near: bool = True, threshold: float = 0.9, num_perm: int = 128
) -> tuple[list[Item], list[DuplicatePair]]:
    """Remove exact and (optionally) near duplicates; keep the first occurrence; report what was removed."""
    kept: list[Item] = []
    removed: list[DuplicatePair] = []
    exact: dict[str, str] = {}
    index = _NearIndex(threshold, num_perm) if near else None
    for it in items:
        text = item_text(it)
        h = _digest(text)
        if h in exact:
            removed.append(DuplicatePair(it.id, exact[h], "exact", 1.0))
            continue
        sh = shingles(text)
        if index is not None:
            hits = index.query(sh)
            if hits:
                removed.append(DuplicatePair(it.id, hits[0][0], "near", round(hits[0][1], 4)))
                continue
            index.add(it.id, sh)
        exact[h] = it.id
        kept.append(it)
    return kept, removed


# ----------------------------------------------------------------------------------------------------------
# 5. selection by explanation length


def _length_for_selection(it: Item) -> int | None:
    # MCQ: the explanation; free-text QA has no explanation, so its reference answer stands in.
    if isinstance(it, QAItem):
        return len(it.answer)
    return len(it.explanation) if it.explanation else None


def select_by_explanation_length(items: Sequence[Item], n: int, mode: SelectMode = "longest") -> list[Item]:
    """Keep ``n`` items by explanation length, in their original order.

    ``longest`` / ``shortest``: the extremes; ``median``: the closest to the median length. Items without an
    explanation are never selected. Ties are broken by id, so the result does not depend on input order.
    """
    if n < 0:
        raise InputError(f"cannot select {n} items", field="select")
    if mode not in ("longest", "shortest", "median"):
        raise InputError(f"selection mode must be longest, shortest or median, not '{mode}'", field="select_by")
    scored = [(i, it, ln) for i, it in enumerate(items) if (ln := _length_for_selection(it)) is not None]
    if not scored:
        return []
    med = statistics.median(t[2] for t in scored)

    def key(t: tuple[int, Item, int]) -> tuple[float, str]:
        length, item_id = t[2], t[1].id
        return {"longest": -length, "shortest": length, "median": abs(length - med)}[mode], item_id
    chosen = sorted(scored, key=key)[:n]
    return [it for _, it, _ in sorted(chosen, key=lambda t: t[0])]


# ----------------------------------------------------------------------------------------------------------
# The whole preparation


class PrepareSettings(Settings):
    """The data-preparation stage's settings: which questions to keep, how to clean them, which to select."""

    single_answer: bool = Field(True, description="keep single-answer questions only (meta.choice_type != 'multi')")
    where: str | None = Field(None, description="keep items matching this expression, e.g. \"split == 'train' and "
                              "category in ['Anatomy']\" (fields: id, question, source, split, category, "
                              "subcategory, human_difficulty, answer, n_options, question_length, "
                              "explanation_length, meta.KEY)")
    clean_explanations: bool = Field(True, description="strip answer-restating prefixes from explanations")
    dedup: bool = Field(True, description="remove exact duplicates (normalised text)")
    near_duplicates: bool = Field(True, description="also remove near duplicates (MinHash LSH)")
    near_threshold: float = Field(0.9, gt=0, le=1, description="Jaccard similarity of word 3-grams for near "
                                  "duplicates")
    select: int | None = Field(None, ge=1, description="keep N items chosen by explanation length")
    select_by: SelectMode = Field("longest", description="longest, shortest or median explanations")


@dataclass
class PrepareStep:
    name: str
    before: int
    after: int
    detail: str = ""


@dataclass
class PrepareReport:
    config: dict[str, Any]
    steps: list[PrepareStep] = field(default_factory=list)
    duplicates: list[DuplicatePair] = field(default_factory=list)
    removed_ids: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "steps": [asdict(s) for s in self.steps],
            "duplicates": [asdict(d) for d in self.duplicates],
            "removed_ids": self.removed_ids,
        }


def prepare_items(items: Sequence[Item], config: PrepareSettings | None = None) -> tuple[list[Item], PrepareReport]:
    """Apply the preparation steps in order (single answer, filter, clean, dedup, select) with a report."""
    cfg = config or PrepareSettings()
    report = PrepareReport(config=cfg.to_dict())
    cur = list(items)
    if cfg.single_answer:
        before = len(cur)
        cur, gone = keep_single_answer(cur)
        report.steps.append(PrepareStep("single answer", before, len(cur), "dropped meta.choice_type == 'multi'"))
        report.removed_ids["single answer"] = [it.id for it in gone]
    if cfg.where:
        before = len(cur)
        cur, gone = filter_items(cur, cfg.where)
        report.steps.append(PrepareStep("filter", before, len(cur), cfg.where))
        report.removed_ids["filter"] = [it.id for it in gone]
    if cfg.clean_explanations:
        cur, changed = clean_explanations(cur)
        report.steps.append(PrepareStep("clean explanations", len(cur), len(cur), f"{changed} explanations changed"))
    if cfg.dedup:
        before = len(cur)
        cur, dups = deduplicate(cur, near=cfg.near_duplicates, threshold=cfg.near_threshold)
        n_exact = sum(d.kind == "exact" for d in dups)
        detail = f"{n_exact} exact, {len(dups) - n_exact} near (threshold {cfg.near_threshold})"
        report.steps.append(PrepareStep("deduplicate", before, len(cur), detail))
        report.duplicates = dups
        report.removed_ids["deduplicate"] = [d.removed for d in dups]
    if cfg.select is not None:
        before = len(cur)
        chosen = select_by_explanation_length(cur, cfg.select, cfg.select_by)
        ids = {it.id for it in chosen}
        report.removed_ids["select"] = [it.id for it in cur if it.id not in ids]
        cur = chosen
        detail = f"{cfg.select_by} explanations, n={cfg.select}"
        if len(cur) < cfg.select:
            detail += f" (only {len(cur)} items have an explanation)"
        report.steps.append(PrepareStep("select", before, len(cur), detail))
    return cur, report


# ----------------------------------------------------------------------------------------------------------
# Leakage between a training and a test set


@dataclass
class LeakageReport:
    n_train: int
    n_test: int
    threshold: float
    pairs: list[DuplicatePair]  # removed = test id, kept = train id

    @property
    def leaked_test_ids(self) -> list[str]:
        return sorted({p.removed for p in self.pairs})

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_train": self.n_train,
            "n_test": self.n_test,
            "threshold": self.threshold,
            "n_test_leaked": len(self.leaked_test_ids),
            "n_exact": sum(p.kind == "exact" for p in self.pairs),
            "n_near": sum(p.kind == "near" for p in self.pairs),
            "pairs": [{"train_id": p.kept, "test_id": p.removed, "kind": p.kind, "similarity": p.similarity}
                      for p in self.pairs],
        }


def leakage_report(
    train: Sequence[Item], test: Sequence[Item], *, threshold: float = 0.8, num_perm: int = 128
) -> LeakageReport:
    """Every (train, test) pair whose questions are exact (normalised) or near duplicates.

    Each test item lists all its exact matches and all near matches with Jaccard similarity ≥ threshold.
    """
    exact: dict[str, list[str]] = {}
    index = _NearIndex(threshold, num_perm)
    for it in train:
        text = item_text(it)
        exact.setdefault(_digest(text), []).append(it.id)
        if it.id not in index.sets:
            index.add(it.id, shingles(text))
    pairs: list[DuplicatePair] = []
    for it in test:
        text = item_text(it)
        same = exact.get(_digest(text), [])
        pairs += [DuplicatePair(it.id, tid, "exact", 1.0) for tid in same]
        pairs += [DuplicatePair(it.id, tid, "near", round(sim, 4))
                  for tid, sim in index.query(shingles(text)) if tid not in same]
    return LeakageReport(len(train), len(test), threshold, pairs)


def run_prepare(settings: PrepareSettings, items_path: Path, out: Path) -> tuple[list[Item], PrepareReport]:
    """The preparation stage: read ``items_path``, prepare, write ``out`` (items Parquet); nothing when all go.

    Returns the kept items and the report (``medtune data prepare`` prints and optionally saves it).
    """
    from medtune.schema import read_items, write_items

    items = read_items(items_path)
    kept, report = prepare_items(items, settings)
    if not kept:
        raise InputError("preparation removed every item; nothing to write", file=items_path)
    write_items(kept, out)
    return kept, report


# Names of the previous release, kept with a DeprecationWarning for one more.
__getattr__ = renamed_names(__name__, {'PrepareConfig': 'PrepareSettings'}, globals())

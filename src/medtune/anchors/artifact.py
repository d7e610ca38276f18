"""The :class:`AnchorSet`, its file ``anchors.json``, and the anchor items it names in an items file (what both the
anchor stage and the in-training check score).

The file holds everything an estimate needs without the known models' responses: the anchors with their
weights, and every item's IRT parameters and cluster (p-IRT predicts the items that were not scored; the
stratified interval needs each cluster's size). It is plain JSON, written atomically, and checked field by
field on reading, so a hand-edited or truncated file fails with the field that is wrong.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medtune.errors import InputError
from medtune.io import require_file, write_json_atomic
from medtune.schema import QAItem, read_items

ANCHORS_FORMAT = "medtune.anchors"
ANCHORS_VERSION = 1
_WEIGHT_TOL = 1e-6


@dataclass
class AnchorSet:
    """Anchors chosen on one test set from known models' responses, with what estimating from them needs.

    ``item_ids``, ``a``, ``b`` and ``cluster`` describe every item of the test set (IRT discrimination and
    difficulty, ``P(correct) = sigmoid(a (theta - b))``, and the stratum the item fell in); ``anchor_ids`` and
    ``weights`` (summing to 1) are the anchors. ``theta_prior`` is the ability prior of the IRT fit (an estimated
    ability is on the same scale as the known models'); ``pirt_misfit_sd`` is the IRT model's own error on the
    known models' accuracies beyond what its uncertainty explains (added to the p-IRT interval).
    """

    method: str
    seed: int
    item_ids: list[str]
    a: np.ndarray
    b: np.ndarray
    cluster: np.ndarray
    anchor_ids: list[str]
    weights: np.ndarray
    k_requested: int
    irt: dict[str, Any] = field(default_factory=dict)
    theta_prior: dict[str, float] = field(default_factory=lambda: {"mean": 0.0, "sd": 1.0})
    pirt_misfit_sd: float = 0.0
    models: list[dict[str, Any]] = field(default_factory=list)

    @property
    def k(self) -> int:
        """The number of anchors (can be below ``k_requested`` when fewer distinct items exist)."""
        return len(self.anchor_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def anchor_index(self) -> np.ndarray:
        """Positions of the anchors among ``item_ids``."""
        pos = {i: n for n, i in enumerate(self.item_ids)}
        return np.asarray([pos[i] for i in self.anchor_ids], dtype=int)

    @property
    def anchor_cluster(self) -> np.ndarray:
        return self.cluster[self.anchor_index]

    def to_dict(self) -> dict[str, Any]:
        clusters = self.anchor_cluster
        return {
            "format": ANCHORS_FORMAT,
            "version": ANCHORS_VERSION,
            "method": self.method,
            "seed": self.seed,
            "k_requested": self.k_requested,
            "k": self.k,
            "n_items": self.n_items,
            "irt": self.irt,
            "theta_prior": dict(self.theta_prior),
            "pirt_misfit_sd": float(self.pirt_misfit_sd),
            "models": self.models,
            "anchors": [{"id": i, "weight": float(w), "cluster": int(c)}
                        for i, w, c in zip(self.anchor_ids, self.weights, clusters, strict=True)],
            "items": {"id": list(self.item_ids), "a": [float(x) for x in self.a], "b": [float(x) for x in self.b],
                      "cluster": [int(c) for c in self.cluster]},
        }

    @classmethod
    def from_dict(cls, data: Any, *, file: str | Path | None = None) -> AnchorSet:
        """Build from :meth:`to_dict`'s form, checking every field (``InputError`` naming ``file`` and the field)."""

        def bad(msg: str, fld: str | None = None, record: int | None = None) -> InputError:
            return InputError(msg, file=file, field=fld, record=record)

        if not isinstance(data, dict):
            raise bad(f"not an anchors file: a JSON object expected, got {type(data).__name__}")
        if data.get("format") != ANCHORS_FORMAT:
            raise bad(f"not an anchors file: 'format' is {data.get('format')!r}, not {ANCHORS_FORMAT!r}", "format")
        if data.get("version") != ANCHORS_VERSION:
            raise bad(f"unsupported anchors file version {data.get('version')!r} (this medtune reads "
                      f"{ANCHORS_VERSION})", "version")
        for key in ("method", "seed", "k_requested", "anchors", "items"):
            if key not in data:
                raise bad("missing", key)
        items = data["items"]
        if not isinstance(items, dict):
            raise bad("must be an object with lists id, a, b, cluster", "items")
        cols: dict[str, list] = {}
        for key in ("id", "a", "b", "cluster"):
            col = items.get(key)
            if not isinstance(col, list) or not col:
                raise bad("missing or not a non-empty list", f"items.{key}")
            cols[key] = col
        n = len(cols["id"])
        for key in ("a", "b", "cluster"):
            if len(cols[key]) != n:
                raise bad(f"has {len(cols[key])} entries but items.id has {n}", f"items.{key}")
        ids = [str(i) for i in cols["id"]]
        if len(set(ids)) != n:
            dup = next(i for n_, i in enumerate(ids) if i in ids[:n_])
            raise bad(f"duplicate item id {dup!r}", "items.id")
        arrays = {}
        for key in ("a", "b"):
            try:
                arr = np.asarray(cols[key], dtype=float)
            except (TypeError, ValueError):
                raise bad("must hold numbers", f"items.{key}") from None
            if not np.isfinite(arr).all():
                raise bad(f"holds a non-finite value at entry {int(np.argmin(np.isfinite(arr)))}", f"items.{key}")
            arrays[key] = arr
        if (arrays["a"] <= 0).any():
            raise bad("discriminations must be positive", "items.a")
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in cols["cluster"]):
            raise bad("must hold non-negative integers", "items.cluster")
        cluster = np.asarray(cols["cluster"], dtype=int)
        anchors = data["anchors"]
        if not isinstance(anchors, list) or not anchors:
            raise bad("must be a non-empty list of {id, weight, cluster}", "anchors")
        pos = {i: j for j, i in enumerate(ids)}
        anchor_ids, weights = [], []
        for r, entry in enumerate(anchors):
            if not isinstance(entry, dict) or "id" not in entry or "weight" not in entry:
                raise bad("each anchor needs an id and a weight", "anchors", r + 1)
            aid = str(entry["id"])
            if aid not in pos:
                raise bad(f"anchor {aid!r} is not among items.id", "anchors.id", r + 1)
            w = entry["weight"]
            if not isinstance(w, int | float) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
                raise bad(f"weight must be a non-negative number, got {w!r}", "anchors.weight", r + 1)
            if "cluster" in entry and entry["cluster"] != int(cluster[pos[aid]]):
                raise bad(f"cluster {entry['cluster']!r} differs from the item's cluster {int(cluster[pos[aid]])}",
                          "anchors.cluster", r + 1)
            anchor_ids.append(aid)
            weights.append(float(w))
        if len(set(anchor_ids)) != len(anchor_ids):
            raise bad("an item is an anchor twice", "anchors.id")
        total = sum(weights)
        if abs(total - 1) > _WEIGHT_TOL:
            raise bad(f"anchor weights sum to {total:.6g}, not 1", "anchors.weight")
        seed, k_req = data["seed"], data["k_requested"]
        if not isinstance(seed, int) or not isinstance(k_req, int):
            raise bad("seed and k_requested must be integers", "seed" if not isinstance(seed, int) else "k_requested")
        prior = data.get("theta_prior", {"mean": 0.0, "sd": 1.0})
        if not (isinstance(prior, dict) and all(isinstance(prior.get(k), int | float) for k in ("mean", "sd"))
                and prior["sd"] > 0):
            raise bad("must be {mean, sd} with sd > 0", "theta_prior")
        misfit = data.get("pirt_misfit_sd", 0.0)
        if not isinstance(misfit, int | float) or not math.isfinite(misfit) or misfit < 0:
            raise bad("must be a non-negative number", "pirt_misfit_sd")
        return cls(method=str(data["method"]), seed=seed, item_ids=ids, a=arrays["a"], b=arrays["b"],
                   cluster=cluster, anchor_ids=anchor_ids, weights=np.asarray(weights), k_requested=k_req,
                   irt=dict(data.get("irt") or {}), theta_prior={"mean": float(prior["mean"]),
                                                                  "sd": float(prior["sd"])},
                   pirt_misfit_sd=float(misfit), models=list(data.get("models") or []))


def write_anchors(anchor_set: AnchorSet, path: str | Path) -> Path:
    """Write ``anchors.json`` atomically (an interrupted write never leaves a file :func:`read_anchors` trusts)."""
    path = Path(path)
    write_json_atomic(path, anchor_set.to_dict(), indent=1)
    return path


def read_anchors(path: str | Path) -> AnchorSet:
    """Read and check an ``anchors.json``; a missing, malformed or inconsistent file is an ``InputError``."""
    path = require_file(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg} at column {exc.colno})", file=path, record=exc.lineno,
                         record_kind="line") from None
    except UnicodeDecodeError:
        raise InputError("not a UTF-8 text file", file=path) from None
    return AnchorSet.from_dict(data, file=path)


def anchor_items(items_path: Path, anchor_set: AnchorSet, *, split: str | None = None) -> list:
    """The anchor items of ``items_path`` (``split`` only, if given), in the anchor set's order."""
    items = read_items(items_path)
    if split is not None:
        items = [it for it in items if it.split == split]
    by_id = {it.id: it for it in items}
    missing = [i for i in anchor_set.anchor_ids if i not in by_id]
    if missing:
        raise InputError(f"{len(missing)} of the {anchor_set.k} anchor items are not among these items "
                         f"{f'(split {split!r}) ' if split else ''}(first: {missing[0]!r}); were the anchors chosen "
                         "on another test set?", file=items_path, field="id")
    chosen = [by_id[i] for i in anchor_set.anchor_ids]
    if isinstance(chosen[0], QAItem):
        raise InputError("anchor estimates are of multiple-choice accuracy; these are free-text items",
                         file=items_path)
    return chosen

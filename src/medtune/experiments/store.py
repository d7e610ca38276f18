"""The run store: content-addressed stage artifacts and crash-safe per-cell results.

Stage artifacts live in ``STORE/<stage>/<key>/`` where ``key`` hashes the stage's config and the keys of
its inputs, so a stage shared by many cells (data, difficulty, categories, orders) is computed once for the
whole grid, and a stage whose key exists is never recomputed. A stage is built in a temporary folder beside
its final place and renamed into it only when complete: a killed run leaves no half-written artifact that
a later run would trust (the leftovers are removed on the next start).

Cell results are one small JSON file per cell (``RUN_DIR/cells/<cell_id>.json``, written atomically). The
results table (``results.parquet`` and ``results.sqlite``) is always *rebuilt from those files*, never
appended to, so a kill at any moment can neither duplicate nor lose a row.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtune.errors import InputError
from medtune.io import atomic_path, stable_hash, write_json_atomic

MANIFEST = "manifest.json"
FAILED = "failed.json"
STORE_VERSION = 1
# Bump a stage's number when a change alters what it computes (a fixed bug, a new default), so artifacts made
# before are recomputed rather than silently reused. The package version is in every key too: an upgrade never
# reuses artifacts of an older release.
STAGE_VERSIONS: dict[str, int] = {"data": 1, "base_model": 1, "difficulty": 1, "categories": 1, "order": 1,
                                  "train": 2, "eval": 3, "validation": 1}


def code_version(stage: str) -> dict[str, Any]:
    """What identifies the code that computes ``stage``: the package version, the stage's own number, and the
    plugins loaded (by module name and ``__version__``), whose methods, backends or strategies a stage may run."""
    import sys

    from medtune import __version__
    from medtune.plugins import loaded_plugins

    plugins = {name: str(getattr(sys.modules.get(name), "__version__", "")) for name in loaded_plugins()}
    return {"medtune": __version__, "stage": STAGE_VERSIONS.get(stage, 1), **({"plugins": plugins} if plugins else {})}


class SharedStageFailed(RuntimeError):
    """A stage that failed earlier in this run, recorded once: cells that need it fail fast with its error."""


@dataclass(frozen=True)
class Artifact:
    """A finished stage output: its folder and key (the key is what downstream stages hash)."""

    stage: str
    key: str
    path: Path
    cached: bool

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST).read_text())


class Store:
    """``STORE/<stage>/<key>/`` folders, each complete or absent."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(stage: str, config: Any, inputs: dict[str, str] | None = None) -> str:
        return stable_hash({"v": STORE_VERSION, "code": code_version(stage), "stage": stage, "config": config,
                            "inputs": inputs or {}})

    # Failures of stages: recorded once per run, so the cells needing a failed stage do not each recompute it.
    def _failure_path(self, stage: str, key: str) -> Path:
        return self.root / stage / f"{key}.{FAILED}"

    def record_failure(self, stage: str, key: str, error: str) -> None:
        write_json_atomic(self._failure_path(stage, key), {"stage": stage, "key": key, "error": error,
                                                           "when": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                 time.gmtime())})

    def failure(self, stage: str, key: str) -> str | None:
        try:
            return str(json.loads(self._failure_path(stage, key).read_text())["error"])
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return None

    def clear_failures(self) -> int:
        """Forget recorded failures (at the start of a run: its inputs may have been fixed since)."""
        n = 0
        for p in self.root.glob(f"*/*.{FAILED}"):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
        return n

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def has(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / MANIFEST).exists()

    def get_or_compute(
        self,
        stage: str,
        config: Any,
        inputs: dict[str, str] | None,
        compute: Callable[[Path], dict[str, Any] | None],
        *,
        record_failure: bool = False,
    ) -> Artifact:
        """Return the stage's artifact, running ``compute(tmp_dir)`` only if its key is absent.

        ``compute`` writes its files into the folder it is given and may return extra manifest fields. With
        ``record_failure`` an exception of ``compute`` is recorded under the key (see :meth:`record_failure`):
        later calls for the same key in this run raise :class:`SharedStageFailed` with that error at once.
        Two processes computing the same key at once both succeed; the first rename wins and the
        other's copy is discarded (stages are deterministic, so the copies are equivalent).
        """
        key = self.key(stage, config, inputs)
        final = self.path(stage, key)
        if (final / MANIFEST).exists():
            return Artifact(stage, key, final, cached=True)
        earlier = self.failure(stage, key)
        if earlier is not None:
            raise SharedStageFailed(f"stage '{stage}' failed earlier in this run: {earlier}")
        tmp = final.parent / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        t0 = time.time()
        try:
            try:
                extra = compute(tmp) or {}
            except Exception as exc:
                if record_failure:
                    self.record_failure(stage, key, f"{type(exc).__name__}: {exc}")
                raise
            manifest = {
                "stage": stage,
                "key": key,
                "config": config,
                "inputs": inputs or {},
                "code": code_version(stage),
                "seconds": round(time.time() - t0, 3),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **extra,
            }
            write_json_atomic(tmp / MANIFEST, json.loads(json.dumps(manifest, default=str)))
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / MANIFEST).exists():
                    if final.exists():  # an incomplete folder without manifest: replace it
                        shutil.rmtree(final, ignore_errors=True)
                        os.rename(tmp, final)
                        return Artifact(stage, key, final, cached=False)
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
                return Artifact(stage, key, final, cached=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Artifact(stage, key, final, cached=False)

    def clean_partial(self, older_than: float = 0.0) -> int:
        """Remove temporary folders of stages that never finished (a killed run). Returns the count."""
        n = 0
        now = time.time()
        for tmp in self.root.glob("*/.tmp-*"):
            with contextlib.suppress(FileNotFoundError):
                if now - tmp.stat().st_mtime >= older_than:
                    shutil.rmtree(tmp, ignore_errors=True)
                    n += 1
        return n

    def stages(self) -> dict[str, int]:
        """Number of finished artifacts per stage."""
        return {
            d.name: sum(1 for k in d.iterdir() if (k / MANIFEST).exists())
            for d in sorted(self.root.iterdir())
            if d.is_dir()
        }


# ----------------------------------------------------------------------------------------------------------
# Cell results


class ResultStore:
    """One JSON file per cell; the tables are rebuilt from them."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.cells_dir = self.run_dir / "cells"  # created by the first write: a dry run creates nothing

    def cell_path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.json"

    def read(self, cell_id: str) -> dict[str, Any] | None:
        p = self.cell_path(cell_id)
        try:
            return json.loads(p.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def write(self, record: dict[str, Any]) -> None:
        write_json_atomic(self.cell_path(record["cell_id"]), json.loads(json.dumps(record, default=str)))

    def all(self, *, strict: bool = False) -> list[dict[str, Any]]:
        """Every cell record. The runner passes over a damaged one (its cell counts as pending and runs again);
        ``strict`` (what a report reads) refuses it, naming the file and line, rather than report without it."""
        out = []
        for p in sorted(self.cells_dir.glob("*.json")):
            try:
                out.append(json.loads(p.read_text()))
            except json.JSONDecodeError as exc:
                if strict:
                    raise InputError(f"the cell record is damaged ({exc.msg}); run the grid again to redo the cell",
                                     file=p, record=exc.lineno, record_kind="line") from None
            except OSError:
                if strict:
                    raise
        return out

    def status(self, cell_id: str, key: str) -> str:
        """``done``, ``failed``, ``stale`` (finished under another config) or ``pending``."""
        rec = self.read(cell_id)
        if rec is None:
            return "pending"
        if rec.get("key") != key:
            return "stale"
        return str(rec.get("status", "pending"))

    # ------------------------------------------------------------------------------------------------
    def build_tables(self, cell_ids: Iterable[str] | None = None) -> Path:
        """Write ``results.parquet`` (one row per cell × test set) and ``results.sqlite`` atomically."""
        import pandas as pd

        wanted = set(cell_ids) if cell_ids is not None else None
        records = [r for r in self.all() if wanted is None or r["cell_id"] in wanted]
        rows = [row for rec in records for row in result_rows(rec)]
        df = pd.DataFrame(rows, columns=RESULT_COLUMNS) if rows else pd.DataFrame(columns=RESULT_COLUMNS)
        df = df.sort_values(["cell_id", "test_set"], na_position="first", kind="stable").reset_index(drop=True)
        # Fixed dtypes whatever the mix of done and failed cells (counts stay integers, NaN-able).
        for col in INT_COLUMNS:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
        for col in FLOAT_COLUMNS:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
        df["setting_shared"] = df["setting_shared"].astype("boolean")
        df["setting"] = df["setting"].astype("string")
        parquet = self.run_dir / "results.parquet"
        with atomic_path(parquet, suffix=".parquet") as tmp:
            df.to_parquet(tmp, index=False)
        cells = pd.DataFrame([cell_row(r) for r in records], columns=CELL_COLUMNS)
        with atomic_path(self.run_dir / "results.sqlite", suffix=".sqlite") as tmp, contextlib.closing(
            sqlite3.connect(tmp)
        ) as con:
            df.to_sql("results", con, index=False)
            cells.to_sql("cells", con, index=False)
            con.commit()
        with atomic_path(self.run_dir / "results.csv", suffix=".csv") as tmp:
            df.to_csv(tmp, index=False)
        return parquet


AXIS_COLUMNS = ["cell_id", "model", "dataset", "method", "strategy", "difficulty", "seed", "order_seed", "fold"]
# A sweep's cells (medtune.experiments.sweep): the setting, its place in sweep order, whether it is the arm's shared
# setting, and the headline metric on the validation items the setting is chosen on (empty without a sweep).
SWEEP_COLUMNS = ["setting", "setting_index", "setting_shared", "val_accuracy", "val_n_items"]
RESULT_COLUMNS = [
    *AXIS_COLUMNS,
    "test_set",
    "status",
    "error",
    "metric",
    "accuracy",
    "ci_low",
    "ci_high",
    "n_items",
    "n_correct",
    "final_loss",
    "train_steps",
    "train_seconds",
    "eval_seconds",
    "seconds",
    "predictions",
    "train_dir",
    "order",
    "key",
    "finished",
    *SWEEP_COLUMNS,
]
INT_COLUMNS = ["seed", "order_seed", "fold", "n_items", "n_correct", "train_steps", "setting_index", "val_n_items"]
FLOAT_COLUMNS = ["accuracy", "ci_low", "ci_high", "final_loss", "train_seconds", "eval_seconds", "seconds",
                 "val_accuracy"]
CELL_COLUMNS = [*AXIS_COLUMNS, "status", "error", "seconds", "train_seconds", "final_loss", "key", "finished",
                *SWEEP_COLUMNS]


def _axes(rec: dict[str, Any]) -> dict[str, Any]:
    """A record's axis values; a tied cell's order seed is its seed."""
    axes = {c: rec.get(c) for c in AXIS_COLUMNS}
    if axes["order_seed"] is None:
        axes["order_seed"] = axes["seed"]
    return axes


def _sweep(rec: dict[str, Any]) -> dict[str, Any]:
    val = rec.get("validation") or {}
    return {"setting": rec.get("setting"), "setting_index": rec.get("setting_index"),
            "setting_shared": rec.get("setting_shared"), "val_accuracy": val.get("accuracy"),
            "val_n_items": val.get("n_items")}


def result_rows(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """The table rows of one cell record: one per test set (failed cells too, with the error)."""
    base = {**_axes(rec), **_sweep(rec)}
    train = rec.get("train") or {}
    common = {
        "status": rec.get("status"),
        "error": rec.get("error"),
        "final_loss": train.get("final_loss"),
        "train_steps": train.get("steps"),
        "train_seconds": train.get("seconds"),
        "seconds": rec.get("seconds"),
        "train_dir": train.get("dir"),
        "order": rec.get("order"),
        "key": rec.get("key"),
        "finished": rec.get("finished"),
    }
    tests = rec.get("tests") or {}
    names = rec.get("test_sets") or list(tests)
    rows = []
    for name in names:
        t = tests.get(name) or {}
        rows.append(
            {
                **base,
                **common,
                "test_set": name,
                "metric": t.get("metric"),
                "accuracy": t.get("accuracy"),
                "ci_low": t.get("ci_low"),
                "ci_high": t.get("ci_high"),
                "n_items": t.get("n_items"),
                "n_correct": t.get("n_correct"),
                "eval_seconds": t.get("seconds"),
                "predictions": t.get("predictions"),
            }
        )
    return rows


def cell_row(rec: dict[str, Any]) -> dict[str, Any]:
    train = rec.get("train") or {}
    return {
        **_axes(rec),
        **_sweep(rec),
        "status": rec.get("status"),
        "error": rec.get("error"),
        "seconds": rec.get("seconds"),
        "train_seconds": train.get("seconds"),
        "final_loss": train.get("final_loss"),
        "key": rec.get("key"),
        "finished": rec.get("finished"),
    }

"""``verify-order``: compare the realised order (the run log) with the plan (order.json + config.json).

The plan is recomputed from the order file (read and checked by :class:`medtune.orders.orderfile.OrderFile`,
as training reads it) with :func:`medtune.training.data.plan_steps` and the run's
batch size, epochs and step limit, so the check does not trust anything the trainer wrote about its plan.
Any difference — different ids, a different order within a step, a missing, extra or repeated step —
is reported with the first step where it occurs.

An adaptive run (``config.json`` has an ``adaptive`` section, written by :mod:`medtune.adaptive`) has no fixed
plan: its plan is the replay of ``decisions.jsonl`` (:func:`medtune.adaptive.replay.replay_run`, pure: it
re-runs each strategy's ``decide`` on the logged inputs and imports neither torch nor the scorer), and the log is
compared with the replayed steps the same way. The check lives with the adaptive curricula, above training,
because it reads both a fixed plan (training's) and a replayed one (the adaptive package's); training itself
never imports an adaptive module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medtune.adaptive.replay import replay_run
from medtune.orders.orderfile import OrderFile
from medtune.run_record import read_config_json, read_run_record
from medtune.training.config import TrainSettings
from medtune.training.data import PlannedStep, plan_steps, planned_epochs
from medtune.training.runlog import read_log


@dataclass
class VerifyResult:
    ok: bool
    n_planned: int
    n_logged: int
    first_bad_step: int | None = None
    message: str = ""
    details: list[str] = field(default_factory=list)


def planned_for_run(run_dir: str | Path, order_path: str | Path | None = None) -> list[PlannedStep]:
    run_dir = Path(run_dir)
    config = TrainSettings.from_run_record(read_run_record(run_dir)["train"])
    order = OrderFile.read(order_path or run_dir / "order.json")
    return plan_steps(planned_epochs(order, config.epochs), config.global_batch, config.max_steps)


def _adaptive_meta(run_dir: Path) -> dict | None:
    record = read_config_json(run_dir)
    return None if record is None else record.get("adaptive")


def verify_run(run_dir: str | Path, order_path: str | Path | None = None) -> VerifyResult:
    adaptive = _adaptive_meta(Path(run_dir))
    if adaptive is not None:
        replay = replay_run(run_dir)
        planned, n_total = replay.steps, int(adaptive["total_steps"])
        logged = read_log(Path(run_dir))
        if replay.bad_step is not None:
            return VerifyResult(False, n_total, len(logged), replay.bad_step, replay.message)
        if len(planned) < n_total and len(logged) > len(planned):
            return VerifyResult(False, n_total, len(logged), len(planned) + 1,
                                f"step {len(planned) + 1}: trained but no decision in decisions.jsonl covers it")
    else:
        planned = planned_for_run(run_dir, order_path)
        logged = read_log(Path(run_dir))
    n_p, n_l = len(planned), len(logged)
    for i in range(min(n_p, n_l)):
        p, rec = planned[i], logged[i]
        if rec["step"] != p.step:
            return VerifyResult(False, n_p, n_l, p.step,
                                f"step {p.step}: the log's record {i + 1} is step {rec['step']} "
                                "(a step is missing or repeated)")
        if list(rec["ids"]) != list(p.ids):
            pairs = enumerate(zip(rec["ids"], p.ids, strict=False))
            diff = next((k for k, (a, b) in pairs if a != b), min(len(rec["ids"]), len(p.ids)))
            got = rec["ids"][diff] if diff < len(rec["ids"]) else "<none>"
            want = p.ids[diff] if diff < len(p.ids) else "<none>"
            return VerifyResult(False, n_p, n_l, p.step,
                                f"step {p.step} (epoch {p.epoch}): item {diff} of the step is '{got}', "
                                f"the plan has '{want}'",
                                [f"realised: {list(rec['ids'])}", f"planned:  {list(p.ids)}"])
        if "epoch" in rec and rec["epoch"] != p.epoch:
            return VerifyResult(False, n_p, n_l, p.step,
                                f"step {p.step}: logged epoch {rec['epoch']}, planned {p.epoch}")
    if n_l < n_p:
        return VerifyResult(False, n_p, n_l, planned[n_l].step,
                            f"step {planned[n_l].step}: missing from the log "
                            f"(the run logged {n_l} of {n_p} planned steps)")
    if n_l > n_p:
        return VerifyResult(False, n_p, n_l, logged[n_p]["step"],
                            f"step {logged[n_p]['step']}: logged but not planned (plan has {n_p} steps)")
    if adaptive is not None and n_p < int(adaptive["total_steps"]):
        return VerifyResult(False, int(adaptive["total_steps"]), n_l, n_p + 1,
                            f"step {n_p + 1}: not decided yet (the run decided {n_p} of "
                            f"{adaptive['total_steps']} steps; was it interrupted?)")
    what = f"the replayed decisions of '{adaptive['strategy']}'" if adaptive is not None else "the plan"
    return VerifyResult(True, n_p, n_l, None, f"realised order matches {what}: {n_p} steps, "
                        f"{sum(len(p.ids) for p in planned)} items")

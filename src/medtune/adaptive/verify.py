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

A run with validation (``config.json`` has a ``validation`` section) trained without its held-out items: the
re-plan leaves out the ids the run recorded as held out (``validation.held_out``). A run that early stopping
ended (a ``stop`` record in the log) is compared with the planned steps up to its stop, and the stop itself is
checked: the early-stopping rules (:mod:`medtune.training.validation_rules`), replayed on the logged validations,
must stop at the same step. A run that ended short without a stop record is still a deviation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medtune.adaptive.replay import replay_run
from medtune.orders.orderfile import OrderFile
from medtune.run_record import read_config_json, read_run_record
from medtune.training.config import TrainSettings
from medtune.training.data import PlannedStep, plan_steps, planned_epochs
from medtune.training.runlog import read_log, read_log_records
from medtune.training.validation_rules import STOP_KIND, VALIDATION_KIND, replay_stop, without_ids


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
    record = read_run_record(run_dir)
    config = TrainSettings.from_run_record(record["train"])
    order = OrderFile.read(order_path or run_dir / "order.json")
    epochs = planned_epochs(order, config.epochs)
    held_out = (record.get("validation") or {}).get("held_out") or []
    if held_out:
        epochs = without_ids(epochs, held_out)
    return plan_steps(epochs, config.global_batch, config.max_steps)


def _early_stop(run_dir: Path) -> tuple[int | None, str | None]:
    """(the step the run stopped early at, or ``None``; a message when the stop does not hold up)."""
    stops = read_log_records(run_dir, STOP_KIND)
    if not stops:
        return None, None
    if len(stops) > 1:
        return int(stops[0]["step"]), f"the log holds {len(stops)} stop records"
    step = int(stops[0]["step"])
    settings = (read_config_json(run_dir) or {}).get("validation")
    if not settings or settings.get("patience") is None:
        return step, f"step {step}: the log says the run stopped early, but the run has no early stopping"
    replayed, _ = replay_stop(read_log_records(run_dir, VALIDATION_KIND), settings["metric"], settings["patience"],
                              float(settings.get("min_delta") or 0.0))
    if replayed != step:
        return step, (f"step {step}: the log says the run stopped early there, but its logged validations stop it "
                      f"{'nowhere' if replayed is None else f'at step {replayed}'}")
    return step, None


def _adaptive_meta(run_dir: Path) -> dict | None:
    record = read_config_json(run_dir)
    return None if record is None else record.get("adaptive")


def verify_run(run_dir: str | Path, order_path: str | Path | None = None) -> VerifyResult:
    adaptive = _adaptive_meta(Path(run_dir))
    # the fixed plan first: a folder that is not a run is named by its missing config.json, not by its log
    fixed_plan = planned_for_run(run_dir, order_path) if adaptive is None else None
    stopped, bad_stop = _early_stop(Path(run_dir))
    if bad_stop is not None:
        return VerifyResult(False, 0, len(read_log(Path(run_dir))), stopped, bad_stop)
    if adaptive is not None:
        replay = replay_run(run_dir)
        planned, n_total = replay.steps, int(adaptive["total_steps"])
        if stopped is not None:
            planned, n_total = planned[:stopped], min(n_total, stopped)
        logged = read_log(Path(run_dir))
        if replay.bad_step is not None:
            return VerifyResult(False, n_total, len(logged), replay.bad_step, replay.message)
        if len(planned) < n_total and len(logged) > len(planned):
            return VerifyResult(False, n_total, len(logged), len(planned) + 1,
                                f"step {len(planned) + 1}: trained but no decision in decisions.jsonl covers it")
    else:
        planned = fixed_plan
        if stopped is not None:
            if stopped > len(planned):
                return VerifyResult(False, len(planned), len(read_log(Path(run_dir))), stopped,
                                    f"step {stopped}: the run stopped early after a step the plan does not have "
                                    f"({len(planned)} steps)")
            planned = planned[:stopped]
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
    total = int(adaptive["total_steps"]) if adaptive is not None else n_p
    if stopped is not None:
        total = min(total, stopped)
    if adaptive is not None and n_p < total:
        return VerifyResult(False, total, n_l, n_p + 1,
                            f"step {n_p + 1}: not decided yet (the run decided {n_p} of "
                            f"{adaptive['total_steps']} steps; was it interrupted?)")
    what = f"the replayed decisions of '{adaptive['strategy']}'" if adaptive is not None else "the plan"
    early = f", stopped early after step {stopped} by its validations" if stopped is not None else ""
    return VerifyResult(True, n_p, n_l, None, f"realised order matches {what}: {n_p} steps, "
                        f"{sum(len(p.ids) for p in planned)} items{early}")

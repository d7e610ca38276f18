"""Executors on GPU machines: each pool worker and Ray task sees its own GPUs, and as many cells run as fit.

No GPU is needed: CUDA_VISIBLE_DEVICES is only a variable until a process initialises CUDA, and Ray counts GPU
resources it is told about without touching a device. The cell functions here report what their process saw.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from medtune.errors import ConfigError
from medtune.experiments import config_from_dict, executors
from medtune.experiments.config import ExecutorSettings
from medtune.experiments.executors import CELL_GPUS_ENV, gpu_slots, pool_plan, ray_task_options, visible_gpus

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


# ----------------------------------------------------------------------------------------------------------
# Cell functions (module level: pool workers and Ray tasks import them by name)


def _where(payload: dict[str, Any]) -> dict[str, Any]:
    """Report the process and devices the cell ran with; raise or die when the payload says so."""
    if payload.get("raise"):
        raise ValueError("boom")
    if payload.get("exit"):
        os._exit(3)
    time.sleep(payload.get("sleep", 0))
    return {"key": payload["key"], "pid": os.getpid(), "devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "cell_gpus": os.environ.get(CELL_GPUS_ENV)}


def _timed(payload: dict[str, Any]) -> dict[str, Any]:
    """Hold ``hold`` seconds once ``together`` cells have started, so cells the executor lets run at once overlap
    even when one worker process starts seconds after another."""
    start = time.time()
    folder = Path(payload["dir"])
    (folder / f"start-{payload['key']}").touch()
    while len(list(folder.glob("start-*"))) < payload["together"] and time.time() < start + 90:
        time.sleep(0.05)
    time.sleep(payload["hold"])
    return {**_where(payload), "start": start, "end": time.time()}


def _payloads(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"cell": {"cell_id": f"c{i}"}, "key": f"k{i}", **extra} for i in range(n)]


def _collect(payloads: list[dict[str, Any]], fn, cfg: ExecutorSettings) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}

    def on_done(p: dict[str, Any], rec: dict[str, Any]) -> None:
        assert p["key"] not in out, "a cell reported twice"
        out[p["key"]] = rec

    executors.run_cells(payloads, fn, on_done, cfg)
    assert set(out) == {p["key"] for p in payloads}
    return out


def _max_overlap(recs: list[dict[str, Any]]) -> int:
    """Most cells running at the same instant (a cell ending as another starts does not overlap it)."""
    events = sorted([(r["start"], 1) for r in recs] + [(r["end"], -1) for r in recs], key=lambda e: (e[0], e[1]))
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


# ----------------------------------------------------------------------------------------------------------
# Which GPUs a process sees, and the slots the pool makes of them


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0,1,2,3", ["0", "1", "2", "3"]),
        ("2, 3", ["2", "3"]),
        ("", []),
        ("GPU-8932f937-d72c-4106-c12f-20bd9faed9f6,GPU-1a2b", ["GPU-8932f937-d72c-4106-c12f-20bd9faed9f6", "GPU-1a2b"]),
        ("MIG-4b7c-11aa", ["MIG-4b7c-11aa"]),
        ("1,-1,2", ["1"]),  # CUDA stops at the first entry that names no device
        ("NoDevFiles", []),  # SLURM's value for a job without GPUs
        ("0,0,1", ["0", "1"]),
    ],
)
def test_visible_gpus_reads_the_variable_as_cuda_does(value: str, expected: list[str]) -> None:
    def never() -> int:
        raise AssertionError("the device count is read only without the variable")

    assert visible_gpus({"CUDA_VISIBLE_DEVICES": value}, never) == expected


def test_visible_gpus_without_the_variable_counts_the_devices() -> None:
    assert visible_gpus({}, 3) == ["0", "1", "2"]
    assert visible_gpus({"PATH": "/bin"}, lambda: 2) == ["0", "1"]
    assert visible_gpus({}, 0) == []


@pytest.mark.parametrize(
    ("devices", "per_cell", "expected"),
    [
        ("0,1,2,3", 1, ["0", "1", "2", "3"]),
        ("0,1,2,3", 2, ["0,1", "2,3"]),
        ("0,1,2,3,4", 2, ["0,1", "2,3"]),  # the fifth GPU idles rather than give a cell one
        ("GPU-a,GPU-b,GPU-c,GPU-d", 2, ["GPU-a,GPU-b", "GPU-c,GPU-d"]),
        ("0,1", 4, []),
        ("", 1, []),
    ],
)
def test_gpu_slots(devices: str, per_cell: int, expected: list[str]) -> None:
    assert gpu_slots(visible_gpus({"CUDA_VISIBLE_DEVICES": devices}, 0), per_cell) == expected


def test_gpu_slots_refuse_zero_gpus_per_cell() -> None:
    with pytest.raises(ValueError, match="per_cell"):
        gpu_slots(["0"], 0)


_device = st.one_of(st.integers(0, 63).map(str), st.uuids().map(lambda u: f"GPU-{u}"))


@given(st.lists(_device, max_size=24, unique=True), st.integers(1, 8))
def test_slots_give_each_gpu_to_one_cell_at_a_time(devices: list[str], per_cell: int) -> None:
    slots = gpu_slots(devices, per_cell)
    assert len(slots) == len(devices) // per_cell
    seen: list[str] = []
    for slot in slots:
        ids = slot.split(",")
        assert len(ids) == per_cell == len(set(ids))
        seen += ids
    assert len(seen) == len(set(seen))  # disjoint: no GPU in two slots
    assert set(seen) <= set(devices)
    # What a worker is given reads back, through the variable, as exactly its devices.
    assert all(visible_gpus({"CUDA_VISIBLE_DEVICES": s}, 0) == s.split(",") for s in slots)


# ----------------------------------------------------------------------------------------------------------
# The pool's plan


def test_pool_plan_on_a_cpu_machine_is_unchanged() -> None:
    assert pool_plan(ExecutorSettings(kind="pool"), {}, 0) == executors.PoolPlan(2, None)
    assert pool_plan(ExecutorSettings(kind="pool", workers=5, gpus_per_cell=2), {}, 0) == executors.PoolPlan(5, None)
    assert pool_plan(ExecutorSettings(kind="pool"), {"CUDA_VISIBLE_DEVICES": ""}, 8) == executors.PoolPlan(2, None)


def test_pool_plan_gives_one_worker_per_gpu_slot() -> None:
    four = {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    assert pool_plan(ExecutorSettings(kind="pool"), four, 0).devices == ["0", "1", "2", "3"]
    assert pool_plan(ExecutorSettings(kind="pool", gpus_per_cell=2), four, 0).devices == ["0,1", "2,3"]
    assert pool_plan(ExecutorSettings(kind="pool", workers=3), four, 0) == executors.PoolPlan(3, ["0", "1", "2"])
    assert pool_plan(ExecutorSettings(kind="pool", num_gpus=2), four, 0).devices == ["0,1", "2,3"]  # an old config
    assert pool_plan(ExecutorSettings(kind="pool"), {}, 2).devices == ["0", "1"]  # no variable: torch's count
    # Cells on the CPU of a GPU machine: the GPUs are hidden, or every worker would use cuda:0.
    assert pool_plan(ExecutorSettings(kind="pool", gpus_per_cell=0), four, 0) == executors.PoolPlan(2, ["", ""])


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        (ExecutorSettings(kind="pool", workers=5), "executor.workers"),
        (ExecutorSettings(kind="pool", workers=3, gpus_per_cell=2), "executor.workers"),
        (ExecutorSettings(kind="pool", gpus_per_cell=8), "executor.gpus_per_cell"),
    ],
)
def test_pool_plan_refuses_more_than_the_gpus_hold(cfg: ExecutorSettings, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}: ") as exc:
        pool_plan(cfg, {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, 0)
    assert "\n" not in str(exc.value)


def test_session_refuses_an_impossible_pool_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    cfg = ExecutorSettings(kind="pool", workers=2)
    with pytest.raises(ConfigError, match=r"^executor\.workers: 2 workers, but 1 visible GPU"), executors.session(cfg):
        pytest.fail("the session must not start")


# ----------------------------------------------------------------------------------------------------------
# The config: new keys, old keys, and keys that contradict each other


def _tiny(executor: dict[str, Any]) -> dict[str, Any]:
    data = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    data["executor"] = executor
    return data


def test_old_executor_keys_still_load() -> None:
    cfg = config_from_dict(_tiny({"kind": "ray", "workers": 2, "num_gpus": 1, "num_cpus": 4})).executor
    assert (cfg.workers, cfg.num_gpus, cfg.num_cpus, cfg.gpus_per_cell) == (2, 1, 4, None)
    fresh = config_from_dict(_tiny({"kind": "pool"})).executor
    assert (fresh.workers, fresh.num_gpus, fresh.gpus_per_cell) == (None, None, None)


@pytest.mark.parametrize(
    ("executor", "key"),
    [
        ({"kind": "ray", "gpus_per_cell": 1, "num_gpus": 2}, "executor.num_gpus"),
        ({"kind": "ray", "gpus_per_cell": -1}, "executor.gpus_per_cell"),
        ({"kind": "ray", "address": "ray://head:10001", "ray_init": {"num_gpus": 2}}, "executor.ray_init"),
    ],
)
def test_bad_gpu_keys_name_their_key(executor: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"{key}: ") as exc:
        config_from_dict(_tiny(executor))
    assert "\n" not in str(exc.value)


def test_a_fraction_of_a_gpu_per_ray_task_agrees_with_one_gpu_per_cell() -> None:
    cfg = config_from_dict(_tiny({"kind": "ray", "gpus_per_cell": 1, "num_gpus": 0.5})).executor
    assert ray_task_options(cfg, {"CPU": 8, "GPU": 1}, local=True) == {"num_cpus": 1, "num_gpus": 0.5}


# ----------------------------------------------------------------------------------------------------------
# Ray's per-task request


def test_ray_requests_follow_the_instance() -> None:
    paper = ExecutorSettings(kind="ray", num_cpus=4, gpus_per_cell=1)
    assert ray_task_options(paper, {"CPU": 32, "GPU": 4}, local=True) == {"num_cpus": 4, "num_gpus": 1}
    # A laptop: no GPU, so none asked for; 2 CPUs, so a 4-CPU cell gets both instead of waiting forever.
    assert ray_task_options(paper, {"CPU": 2}, local=True) == {"num_cpus": 2, "num_gpus": 0}
    assert ray_task_options(ExecutorSettings(kind="ray"), {"CPU": 8, "GPU": 2}, local=True)["num_gpus"] == 1
    two = ExecutorSettings(kind="ray", gpus_per_cell=2)
    assert ray_task_options(two, {"CPU": 8, "GPU": 4}, local=True)["num_gpus"] == 2
    # A cluster may add nodes: its requests stay as written.
    assert ray_task_options(ExecutorSettings(kind="ray", num_cpus=4, num_gpus=1), {"CPU": 2}, local=False) == {
        "num_cpus": 4, "num_gpus": 1}


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        (ExecutorSettings(kind="ray", num_gpus=1), "executor.num_gpus"),  # an old GPU config on a CPU machine
        (ExecutorSettings(kind="ray", gpus_per_cell=4), "executor.gpus_per_cell"),
    ],
)
def test_ray_refuses_a_cell_the_local_instance_cannot_hold(cfg: ExecutorSettings, key: str) -> None:
    gpus = 0 if cfg.num_gpus else 2
    with pytest.raises(ConfigError, match=rf"^{key}: each cell asks for"):
        ray_task_options(cfg, {"CPU": 8, "GPU": gpus}, local=True)


# ----------------------------------------------------------------------------------------------------------
# Real pools: spawned workers, each with its own devices


@pytest.mark.parametrize(("per_cell", "slots"), [(1, {"0", "1", "2", "3"}), (2, {"0,1", "2,3"})])
def test_pool_workers_each_keep_their_own_gpus(monkeypatch: pytest.MonkeyPatch, per_cell: int,
                                               slots: set[str]) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    monkeypatch.delenv(CELL_GPUS_ENV, raising=False)
    recs = _collect(_payloads(8, sleep=0.2), _where, ExecutorSettings(kind="pool", gpus_per_cell=per_cell))
    by_pid: dict[int, set[str]] = {}
    for r in recs.values():
        by_pid.setdefault(r["pid"], set()).add(r["devices"])
        assert r["cell_gpus"] == str(per_cell)
    assert os.getpid() not in by_pid
    assert len(by_pid) <= len(slots)
    assert all(len(devs) == 1 for devs in by_pid.values())  # a worker keeps its devices for every cell
    assert {d for devs in by_pid.values() for d in devs} == slots  # every slot used, no two workers share one
    # The parent's environment is as it was.
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2,3" and CELL_GPUS_ENV not in os.environ


def test_a_crashed_worker_fails_its_cell_and_is_replaced_on_its_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    payloads = _payloads(4)
    payloads[0]["raise"] = True
    payloads[2]["exit"] = True
    got: list[tuple[str, dict[str, Any]]] = []
    executors.run_cells(payloads, _where, lambda p, r: got.append((p["key"], r)), ExecutorSettings(kind="pool"))
    recs = dict(got)
    assert [k for k, _ in got] == ["k0", "k1", "k2", "k3"]  # one worker: in order
    assert recs["k0"]["status"] == "failed" and recs["k0"]["error"] == "worker crashed: ValueError: boom"
    assert recs["k2"]["status"] == "failed" and recs["k2"]["cell_id"] == "c2" and recs["k2"]["key"] == "k2"
    assert recs["k2"]["error"].startswith("worker crashed: medtune.experiments.executors.WorkerDied: the worker")
    assert "CUDA_VISIBLE_DEVICES=5" in recs["k2"]["error"] and recs["k2"]["error"].endswith("exit code 3")
    # The worker survived the exception, not the exit; its replacement has the same GPU.
    assert recs["k1"]["devices"] == recs["k3"]["devices"] == "5"
    assert recs["k1"]["pid"] != recs["k3"]["pid"]


def test_pool_without_devices_leaves_the_environment_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv(CELL_GPUS_ENV, raising=False)
    got: list[dict[str, Any]] = []
    executors.run_pool(_payloads(2), _where, lambda p, r: got.append(r), 1, None)
    assert [(r["devices"], r["cell_gpus"]) for r in got] == [(None, None), (None, None)]


# ----------------------------------------------------------------------------------------------------------
# Ray: the paper's cells on a node with 2 GPUs


@pytest.mark.slow
def test_ray_runs_as_many_cells_as_the_gpus_hold(tmp_path: Path) -> None:
    cloudpickle = pytest.importorskip("ray.cloudpickle")
    # Ray's workers do not import test modules by name (pytest put this folder on the path of this process
    # only): the cell functions travel by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    fake_node = {"num_cpus": 8, "num_gpus": 2}  # resources Ray counts; no device is touched
    paper = ExecutorSettings(kind="ray", num_cpus=4, gpus_per_cell=1, ray_init=fake_node)
    pairs = ExecutorSettings(kind="ray", num_cpus=1, gpus_per_cell=2, ray_init=fake_node)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        with executors.session(paper):  # one Ray start-up for both grids
            one = list(_collect(_payloads(4, dir=str(tmp_path / "a"), together=2, hold=2.0), _timed, paper).values())
            two = list(_collect(_payloads(2, dir=str(tmp_path / "b"), together=1, hold=1.0), _timed, pairs).values())
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert all("error" not in r for r in one + two), [r.get("error") for r in one + two]
    # 4 CPUs and 1 GPU per cell on 8 CPUs and 2 GPUs: two cells at once, never three.
    assert _max_overlap(one) == 2
    assert all(r["devices"] in ("0", "1") and r["cell_gpus"] == "1" for r in one)
    for i, a in enumerate(one):
        for b in one[i + 1:]:
            if a["start"] < b["end"] and b["start"] < a["end"]:
                assert a["devices"] != b["devices"]  # cells running together hold different GPUs
    # 2 GPUs per cell: one cell at a time (CPUs would allow 8), each seeing both GPUs.
    assert _max_overlap(two) == 1
    assert all(sorted(r["devices"].split(",")) == ["0", "1"] and r["cell_gpus"] == "2" for r in two)

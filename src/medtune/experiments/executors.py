"""Executors: where grid cells run. Local (sequential), a process pool, or Ray (optional extra).

All three take the same picklable task payloads and the same module-level cell function, so a grid gives
the same results table under each (set ``executor.torch_threads`` so every cell uses the same number of
threads: Ray sets one thread per task, and float sums differ with the thread count). The cell function
writes its own result file; the executor only reports completion, and records a failure when a worker
died without writing one (a crashed process, a lost Ray node).

GPUs: the pool gives each worker process its own GPUs by exporting ``CUDA_VISIBLE_DEVICES`` before the
worker's interpreter starts (CUDA reads it once, when a process first touches a GPU), ``gpus_per_cell`` per
worker, so ⌊GPUs / gpus_per_cell⌋ cells run at once; Ray does the same for each task that asks for GPUs. Both
also export :data:`CELL_GPUS_ENV`, the number of GPUs the cell holds, for a training stage that runs one
process per GPU.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medtune.errors import ConfigError
from medtune.experiments.config import ExecutorSettings

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

Payload = dict[str, Any]
CellFn = Callable[[Payload], dict[str, Any]]
OnDone = Callable[[Payload, dict[str, Any]], None]

CELL_GPUS_ENV = "MEDTUNE_CELL_GPUS"
"""Set in a cell's process to the number of GPUs it holds ("0": none) by Ray and by a pool that sees GPUs; unset
(the local executor, a CPU machine's pool) the cell is free to use what its process sees."""
DEFAULT_WORKERS = 2  # the pool's workers where no GPU is visible


def crash_record(payload: Payload, exc: BaseException) -> dict[str, Any]:
    """The result of a cell whose worker died or could not return."""
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return {**payload["cell"], "key": payload["key"], "status": "failed", "error": f"worker crashed: {text}",
            "test_sets": payload.get("test_sets", [])}


def run_local(payloads: Sequence[Payload], fn: CellFn, on_done: OnDone) -> None:
    for p in payloads:
        on_done(p, fn(p))


# ----------------------------------------------------------------------------------------------------------
# GPUs: which this process sees, and how the pool shares them out


def visible_gpus(env: Mapping[str, str], device_count: int | Callable[[], int]) -> list[str]:
    """The GPUs a process with environment ``env`` may use, as ``CUDA_VISIBLE_DEVICES`` names them.

    Names are indices or ``GPU-…``/``MIG-…`` UUIDs, passed on as given: a child's ``CUDA_VISIBLE_DEVICES`` is
    read against the machine's devices, as the parent's was. Without the variable, every GPU the driver
    counts (``device_count``; a callable is called only then, so a set variable needs no torch import). CUDA
    reads the list up to its first entry that names no device (``-1``, SLURM's ``NoDevFiles``; an empty
    variable: no GPU), and so does this; a repeated device counts once, so no two workers share it.
    """
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        n = device_count() if callable(device_count) else device_count
        return [str(i) for i in range(n)]
    out: list[str] = []
    for part in (p.strip() for p in raw.split(",")):
        if not ((part.isascii() and part.isdigit()) or part.startswith(("GPU-", "MIG-"))):
            break
        if part not in out:
            out.append(part)
    return out


def gpu_slots(devices: Sequence[str], per_cell: int) -> list[str]:
    """The ``CUDA_VISIBLE_DEVICES`` of each cell that can run at once: ``per_cell`` distinct devices each.

    Neighbours go together (``0,1`` and ``2,3``), which on PCIe machines tend to share a switch. Devices left
    over (5 GPUs at 2 per cell) stay idle rather than give a cell fewer GPUs than it was planned for.
    """
    if per_cell < 1:
        raise ValueError(f"per_cell must be at least 1, got {per_cell}")
    return [",".join(devices[i:i + per_cell]) for i in range(0, len(devices) - per_cell + 1, per_cell)]


@dataclass(frozen=True)
class PoolPlan:
    """How many pool workers run, and each one's ``CUDA_VISIBLE_DEVICES`` (None: the parent's environment)."""

    workers: int
    devices: list[str] | None


def cell_gpus(cfg: ExecutorSettings) -> int | None:
    """GPUs per cell: ``gpus_per_cell``, else a config's Ray-only ``num_gpus`` rounded up; None: the default."""
    if cfg.gpus_per_cell is not None:
        return cfg.gpus_per_cell
    if cfg.num_gpus is not None:
        return int(-(-cfg.num_gpus // 1))
    return None


def pool_plan(cfg: ExecutorSettings, env: Mapping[str, str] | None = None,
              device_count: int | Callable[[], int] | None = None) -> PoolPlan:
    """The pool's workers and their devices: one worker per slot of ``gpus_per_cell`` (default 1) visible GPUs.

    Where no GPU is visible the pool is what it always was: ``workers`` (default 2), environment untouched.
    ``gpus_per_cell: 0`` on a GPU machine hides the GPUs, or every worker would put its cell on ``cuda:0``.
    ``env`` and ``device_count`` default to this process's (``torch.cuda.device_count()``).
    """
    gpus = visible_gpus(os.environ if env is None else env,
                        _torch_device_count if device_count is None else device_count)
    if not gpus:
        return PoolPlan(cfg.workers or DEFAULT_WORKERS, None)
    per_cell = cell_gpus(cfg)
    if per_cell == 0:
        n = cfg.workers or DEFAULT_WORKERS
        return PoolPlan(n, [""] * n)
    per_cell = per_cell or 1
    slots = gpu_slots(gpus, per_cell)
    if not slots:
        key = "gpus_per_cell" if cfg.gpus_per_cell is not None else "num_gpus"
        raise ConfigError(f"executor.{key}: {per_cell} GPUs per cell, but only {len(gpus)} visible "
                          f"(CUDA_VISIBLE_DEVICES={','.join(gpus)})")
    if cfg.workers is not None and cfg.workers > len(slots):
        raise ConfigError(f"executor.workers: {cfg.workers} workers, but {len(gpus)} visible GPU(s) at {per_cell} per "
                          f"cell give {len(slots)}; leave workers out (one per GPU slot), or set gpus_per_cell: 0 to "
                          "run the cells on the CPU")
    n = cfg.workers or len(slots)
    return PoolPlan(n, slots[:n])


def _torch_device_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count())


def _worker_env(devices: str) -> dict[str, str]:
    return {"CUDA_VISIBLE_DEVICES": devices, CELL_GPUS_ENV: str(len(devices.split(",")) if devices else 0)}


# ----------------------------------------------------------------------------------------------------------
# The process pool


class WorkerDied(RuntimeError):
    """A pool worker process ended while it ran a cell (killed, out of memory, a crash in native code)."""


@dataclass
class _Worker:
    proc: BaseProcess
    conn: Connection
    devices: str | None
    payload: Payload | None = None  # the cell it runs; None: idle


_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def _exported(env: Mapping[str, str]) -> Iterator[None]:
    """``env`` in this process's environment while a child starts (it inherits it), then as it was."""
    with _ENV_LOCK:
        before = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield
        finally:
            for k, v in before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _start_worker(ctx: Any, env: dict[str, str], fn_bytes: bytes) -> _Worker:
    parent_end, child_end = ctx.Pipe()
    # Exported while the child starts, so its interpreter starts with its devices: whatever it imports before
    # the cell function runs (a plugin, bitsandbytes) may already initialise CUDA.
    with _exported(env):
        proc = ctx.Process(target=_worker_main, args=(env, fn_bytes, child_end), name="medtune-cell")
        proc.start()
    child_end.close()
    return _Worker(proc, parent_end, env.get("CUDA_VISIBLE_DEVICES"))


def _worker_main(env: dict[str, str], fn_bytes: bytes, conn: Connection) -> None:
    """A pool worker: run the cells the parent sends, one at a time, until it sends None."""
    os.environ.update(env)  # inherited at start already; again in case the process was started some other way
    fn: CellFn | None = None
    broken: BaseException | None = None
    try:
        fn = pickle.loads(fn_bytes)  # imports the cell function's module (torch, ...) with the devices set
    except Exception as exc:
        broken = _portable(exc)
    while True:
        try:
            payload = conn.recv()
        except EOFError:  # the parent is gone
            return
        if payload is None:
            return
        try:
            if fn is None:
                raise broken or RuntimeError("no cell function")
            reply: tuple[str, Any] = ("ok", fn(payload))
        except Exception as exc:  # reported as the cell's failure, as a process pool re-raises it
            reply = ("error", _portable(exc))
        try:
            conn.send(reply)
        except Exception as exc:  # a result that does not pickle: nothing was written yet
            conn.send(("error", RuntimeError(f"the result could not be sent back: {type(exc).__name__}: {exc}")))


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (its type and message reach the record), else its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError("".join(traceback.format_exception_only(type(exc), exc)).strip())


def _died(w: _Worker) -> WorkerDied:
    w.proc.join(timeout=10)
    code = w.proc.exitcode
    if code is None:
        w.proc.terminate()
        w.proc.join()
        how = "closed its pipe"
    elif code < 0:
        try:
            how = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
    else:
        how = f"exit code {code}"
    w.conn.close()
    where = "" if w.devices is None else f", CUDA_VISIBLE_DEVICES={w.devices}"
    return WorkerDied(f"the worker process (pid {w.proc.pid}{where}) ended: {how}")


def run_pool(payloads: Sequence[Payload], fn: CellFn, on_done: OnDone, workers: int,
             devices: Sequence[str] | None = None) -> None:
    """Spawned worker processes (not forked: torch's thread pools and fork do not mix), ``workers`` at once.

    ``devices`` gives worker ``i`` its ``CUDA_VISIBLE_DEVICES`` (see :func:`pool_plan`); None leaves the workers
    the parent's environment. Each worker keeps its devices and takes the next cell when it finishes one; one
    that dies is recorded as its cell's failure and replaced on the same devices, and the others carry on.
    """
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")
    fn_bytes = pickle.dumps(fn)
    envs = [_worker_env(d) for d in devices] if devices is not None else [{} for _ in range(workers)]
    todo = deque(payloads)
    pool: list[_Worker | None] = [None] * len(envs)
    finished = False
    try:
        while True:
            for i in range(len(pool)):
                w = pool[i]
                if not todo or (w is not None and w.payload is not None):
                    continue
                if w is None or not w.proc.is_alive():
                    if w is not None:  # died while idle (killed from outside): a fresh one on its devices
                        w.proc.join()
                        w.conn.close()
                    w = pool[i] = _start_worker(ctx, envs[i], fn_bytes)
                p = todo.popleft()
                try:
                    w.conn.send(p)
                except OSError:
                    pass  # it died just now: found below, and recorded as this cell's failure
                except Exception as exc:  # a payload that does not pickle
                    on_done(p, crash_record(p, exc))
                    continue
                w.payload = p
            busy = [w for w in pool if w is not None and w.payload is not None]
            if not busy:
                if todo:
                    continue
                break
            ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy]))
            for i, w in enumerate(pool):
                if w is None or w.payload is None or (w.conn not in ready and w.proc.sentinel not in ready):
                    continue
                p, w.payload = w.payload, None
                try:
                    if not w.conn.poll():
                        raise EOFError
                    status, value = w.conn.recv()
                    rec = value if status == "ok" else crash_record(p, value)
                except (EOFError, OSError):
                    rec = crash_record(p, _died(w))
                    pool[i] = None
                except Exception as exc:  # a reply that does not unpickle here
                    rec = crash_record(p, exc)
                on_done(p, rec)
        finished = True
    finally:
        for w in pool:
            if w is not None and finished:
                with contextlib.suppress(OSError):
                    w.conn.send(None)
        for w in pool:
            if w is None:
                continue
            w.proc.join(timeout=30 if finished else 0)
            if w.proc.is_alive():  # interrupted (or a cell that would not stop): its cell is abandoned
                w.proc.terminate()
                w.proc.join()
            w.conn.close()


# ----------------------------------------------------------------------------------------------------------
# Ray


_RAY = {"local": False}  # whether ray_session started the instance in use: its resources are this machine's


def ray_task_options(cfg: ExecutorSettings, resources: Mapping[str, float], *, local: bool) -> dict[str, float]:
    """``num_cpus`` and ``num_gpus`` of each cell's Ray task, given the instance's total ``resources``.

    GPUs: ``num_gpus``, else ``gpus_per_cell`` (default 1) where the cluster has GPUs and none where it has
    none, so a config written for a GPU node runs on a laptop too. A local instance has no autoscaler: a task
    larger than it would wait forever, so its CPUs are capped at what it has and asking for more GPUs than it
    has is an error. A cluster may grow, so its requests go to Ray as written.
    """
    total_cpus, total_gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    cpus = float(cfg.num_cpus)
    if local and 0 < total_cpus < cpus:
        cpus = total_cpus
    if cfg.num_gpus is not None:
        gpus, key = float(cfg.num_gpus), "num_gpus"
    else:
        per_cell = cfg.gpus_per_cell if cfg.gpus_per_cell is not None else 1
        gpus, key = (float(per_cell) if total_gpus > 0 else 0.0), "gpus_per_cell"
    if local and gpus > total_gpus:
        hint = "; leave num_gpus out to ask for GPUs only where there are some" if key == "num_gpus" else ""
        raise ConfigError(f"executor.{key}: each cell asks for {gpus:g} GPU(s), but the local Ray instance has "
                          f"{total_gpus:g}{hint}")
    return {"num_cpus": cpus, "num_gpus": gpus}


def _ray_cell(fn: CellFn, payload: Payload) -> dict[str, Any]:
    """A cell in a Ray task. Ray has set ``CUDA_VISIBLE_DEVICES`` to the task's GPUs; say how many there are.

    Ray leaves the variable alone in a task that asked for no GPU, which would then share ``cuda:0`` with the
    cells that reserved it: such a task sees none.
    """
    import ray

    ids = ray.get_gpu_ids()
    if not ids:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ[CELL_GPUS_ENV] = str(len(ids))  # workers are reused: set for every task
    return fn(payload)


def run_ray(payloads: Sequence[Payload], fn: CellFn, on_done: OnDone, cfg: ExecutorSettings) -> None:
    """One Ray task per cell, each asking for :func:`ray_task_options` (inside :func:`ray_session`)."""
    import ray

    with ray_session(cfg):
        opts = ray_task_options(cfg, ray.cluster_resources(), local=_RAY["local"])
        remote = ray.remote(**opts, max_retries=0)(_ray_cell)
        pending = {remote.remote(fn, p): p for p in payloads}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                p = pending.pop(ref)
                try:
                    rec = ray.get(ref)
                except Exception as exc:  # RayTaskError, WorkerCrashedError, ...
                    rec = crash_record(p, exc)
                on_done(p, rec)


@contextlib.contextmanager
def ray_session(cfg: ExecutorSettings) -> Iterator[None]:
    """Connect to ``cfg.address`` (or ``RAY_ADDRESS``), or start a local instance; stop it on exit only if started here.

    A local instance has this machine's CPUs and GPUs (``cfg.ray_init`` may set others, e.g. in tests), and is
    always a new one, never an instance found running on the machine (give its address for that).
    Nested sessions reuse the running instance, so a grid's phases share one start-up (~15 s locally).
    On a cluster the run directory and store must be on a filesystem every node sees.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray executor needs Ray: pip install 'medtune[ray]'") from None
    if ray.is_initialized():
        yield
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(**{"include_dashboard": False, "log_to_driver": False, **(cfg.ray_init or {}), "address": "local"})
        _RAY["local"] = True
    try:
        yield
    finally:
        _RAY["local"] = False
        ray.shutdown()


@contextlib.contextmanager
def session(cfg: ExecutorSettings) -> Iterator[None]:
    """Keep the executor's resources (a Ray instance) alive across several :func:`run` calls.

    It also checks what the machine can give, so a config it cannot serve (more pool workers than GPU slots,
    more GPUs per cell than a local Ray instance has) fails before the grid's shared stages run.
    """
    if cfg.kind == "ray":
        with ray_session(cfg):
            import ray

            ray_task_options(cfg, ray.cluster_resources(), local=_RAY["local"])
            yield
    else:
        if cfg.kind == "pool":
            pool_plan(cfg)
        yield


def run_cells(payloads: Sequence[Payload], fn: CellFn, on_done: OnDone, cfg: ExecutorSettings) -> None:
    """Run every payload with the configured executor, calling ``on_done`` as each cell finishes."""
    if not payloads:
        return
    if cfg.kind == "local":
        run_local(payloads, fn, on_done)
    elif cfg.kind == "pool":
        plan = pool_plan(cfg)
        run_pool(payloads, fn, on_done, plan.workers, plan.devices)
    elif cfg.kind == "ray":
        run_ray(payloads, fn, on_done, cfg)
    else:  # pragma: no cover - the config's Literal prevents it
        raise ConfigError(f"unknown executor '{cfg.kind}'")

"""Executors for the live search: one worker per GPU slot, as local spawned processes or as Ray actors.

Both share one interface: `submit(job, slot) -> Handle`, `poll(timeout_s) -> [JobEvent]`,
`wait(handle)`, `cancel(handle, at_epoch_boundary=True)`, `shutdown()`. A slot is a GPU id
("0", "1", …) or a CPU slot ("cpu0", …); a worker on a GPU slot sees only that GPU
(CUDA_VISIBLE_DEVICES=<id>), a CPU slot sees none (CUDA_VISIBLE_DEVICES="").
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from jouled.errors import UserError
from jouled.scheduler.workers import Job, JobResult, close_worker, run_job

EventKind = Literal["started", "done", "cancelled", "error"]


@dataclass(frozen=True)
class Handle:
    job_id: str
    slot: str


@dataclass
class JobEvent:
    """`started` (the worker picked the job up), `done`, `cancelled` (stopped; result holds what was kept), `error`."""

    kind: EventKind
    job_id: str
    slot: str
    result: JobResult | None = None
    error: str = ""
    at_s: float = field(default_factory=time.time)


class Executor(Protocol):
    slots: list[str]

    def idle_slots(self) -> list[str]: ...

    def submit(self, job: Job, slot: str | None = None) -> Handle: ...

    def poll(self, timeout_s: float = 0.0) -> list[JobEvent]: ...

    def wait(self, handle: Handle, timeout_s: float = 60.0) -> JobEvent: ...

    def cancel(self, handle: Handle, at_epoch_boundary: bool = True) -> None: ...

    def shutdown(self) -> None: ...


def parse_slots(spec: str, option: str = "--devices") -> list[str]:
    """`0,1,3` (GPU ids), `cpu:2` or `2` on a machine without GPUs, or `cpu0,cpu1` → slot names; UserError otherwise."""
    text = spec.strip().lower()
    if not text:
        raise UserError(f"{option} is empty — pass GPU ids like 0,1 or CPU slots like cpu:2")
    if text.startswith("cpu:"):
        n = text[4:]
        if not n.isdigit() or int(n) < 1:
            raise UserError(f"{option} {spec!r}: cpu:N needs N ≥ 1 — e.g. {option} cpu:2")
        return [f"cpu{i}" for i in range(int(n))]
    parts = [p.strip() for p in text.split(",")]
    if any(not p for p in parts):
        raise UserError(f"{option} {spec!r}: empty entry — pass e.g. 0,1 or cpu:2")
    if all(p.startswith("cpu") and p[3:].isdigit() for p in parts):
        slots = parts
    elif all(p.isdigit() for p in parts):
        slots = [str(int(p)) for p in parts]
    else:
        raise UserError(f"{option} {spec!r}: not GPU ids or CPU slots — pass e.g. 0,1 or cpu:2 or cpu0,cpu1")
    if len(set(slots)) != len(slots):
        raise UserError(f"{option} {spec!r}: a slot is listed twice — list each once")
    return slots


def slot_env(slot: str) -> dict[str, str]:
    """The environment that pins a worker to its slot (set before torch is imported there)."""
    return {"CUDA_VISIBLE_DEVICES": "" if slot.startswith("cpu") else slot, "OMP_NUM_THREADS": os.environ.get(
        "JOULED_WORKER_THREADS", "1")}


# --- local processes -------------------------------------------------------------------------------


def _worker_main(slot: str, inbox: Any, outbox: Any, stop: Any) -> None:
    """A worker process: take jobs one at a time, report started/done/cancelled/error on the shared outbox."""
    os.environ.update(slot_env(slot))  # again, in case the parent environment raced
    try:
        import torch  # once, outside any job's timing, under the slot's environment

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    except ImportError:
        pass
    outbox.put(("ready", "", slot, None, ""))
    while True:
        job = inbox.get()
        if job is None:
            break
        stop.clear()
        outbox.put(("started", job.job_id, slot, None, ""))
        try:
            res = run_job(job, slot, stop.is_set)
            outbox.put(("done" if res.finished else "cancelled", job.job_id, slot, res, ""))
        except Exception as e:  # reported to the search, which decides; the worker keeps serving
            outbox.put(("error", job.job_id, slot, None, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=5)}"))
    close_worker()


_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def _patched_env(env: dict[str, str]) -> Iterator[None]:
    """Spawned children copy os.environ at start(): set the slot's variables around it, then restore."""
    with _ENV_LOCK:
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


class _EventQueue:
    """What both executors share: events not yet polled, and `wait` built on `poll`."""

    _pending: list[JobEvent]

    def poll(self, timeout_s: float = 0.0) -> list[JobEvent]:
        raise NotImplementedError

    def wait(self, handle: Handle, timeout_s: float = 60.0) -> JobEvent:
        """Block until the job ends (done, cancelled or error); other jobs' events are kept for the next poll."""
        deadline = time.monotonic() + timeout_s
        kept: list[JobEvent] = []
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"job {handle.job_id} still running after {timeout_s} s")
                for ev in self.poll(min(left, 0.5)):
                    if ev.job_id == handle.job_id and ev.kind != "started":
                        return ev
                    kept.append(ev)
        finally:
            self._pending = kept + self._pending


class LocalExecutor(_EventQueue):
    """One spawned worker process per slot; jobs run one at a time per slot."""

    def __init__(self, gpus: Sequence[str], *, start_timeout_s: float = 120.0) -> None:
        if not gpus:
            raise UserError("no worker slots — pass --gpus 0,1 or cpu:2")
        self.slots = list(gpus)
        self._ctx = mp.get_context("spawn")
        self._outbox: Any = self._ctx.Queue()
        self._inbox: dict[str, Any] = {}
        self._stop: dict[str, Any] = {}
        self._procs: dict[str, Any] = {}
        self._running: dict[str, str] = {}  # slot -> job_id (submitted, not yet done)
        self._pending: list[JobEvent] = []
        for s in self.slots:
            self._spawn(s)
        self._await_ready(set(self.slots), start_timeout_s)

    def _spawn(self, slot: str) -> None:
        self._inbox[slot] = self._ctx.Queue()
        self._stop[slot] = self._ctx.Event()
        p = self._ctx.Process(target=_worker_main, args=(slot, self._inbox[slot], self._outbox, self._stop[slot]),
                              name=f"jouled-worker-{slot}", daemon=True)
        with _patched_env(slot_env(slot)):
            p.start()
        self._procs[slot] = p

    def _await_ready(self, slots: set[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while slots:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"worker(s) {sorted(slots)} did not start within {timeout_s} s")
            try:
                msg = self._outbox.get(timeout=min(left, 1.0))
            except queue.Empty:
                dead = [s for s in slots if not self._procs[s].is_alive()]
                if dead:
                    raise RuntimeError(f"worker(s) {dead} exited while starting") from None
                continue
            if msg[0] == "ready":
                slots.discard(msg[2])
            else:
                self._pending.append(JobEvent(msg[0], msg[1], msg[2], msg[3], msg[4]))

    def idle_slots(self) -> list[str]:
        return [s for s in self.slots if s not in self._running]

    def submit(self, job: Job, slot: str | None = None) -> Handle:
        free = self.idle_slots()
        if slot is None:
            if not free:
                raise RuntimeError("no idle slot")
            slot = free[0]
        if slot not in self.slots:
            raise ValueError(f"unknown slot {slot!r}")
        if slot in self._running:
            raise RuntimeError(f"slot {slot} is busy with {self._running[slot]}")
        self._running[slot] = job.job_id
        self._inbox[slot].put(job)
        return Handle(job.job_id, slot)

    def _absorb(self, msg: tuple[Any, ...]) -> JobEvent | None:
        kind, job_id, slot, res, err = msg
        if kind == "ready":
            return None
        if kind in ("done", "cancelled", "error") and self._running.get(slot) == job_id:
            del self._running[slot]
        return JobEvent(kind, job_id, slot, res, err)

    def _check_dead(self) -> list[JobEvent]:
        """A worker that died mid-job (OOM, segfault): report the job as failed and start a fresh worker."""
        out: list[JobEvent] = []
        for slot, p in list(self._procs.items()):
            if not p.is_alive() and slot in self._running:
                job_id = self._running.pop(slot)
                out.append(JobEvent("error", job_id, slot, None, f"worker exited with code {p.exitcode}"))
                self._spawn(slot)
                self._await_ready({slot}, 120.0)
        return out

    def poll(self, timeout_s: float = 0.0) -> list[JobEvent]:
        out, self._pending = self._pending, []
        try:
            msg = self._outbox.get(timeout=timeout_s) if timeout_s > 0 and not out else self._outbox.get_nowait()
            while True:
                ev = self._absorb(msg)
                if ev is not None:
                    out.append(ev)
                msg = self._outbox.get_nowait()
        except queue.Empty:
            pass
        if not out:
            out.extend(self._check_dead())
        return out

    def cancel(self, handle: Handle, at_epoch_boundary: bool = True) -> None:
        """At a boundary: the job stops after its current epoch (checkpoint kept) and reports `cancelled`.
        Otherwise the worker is killed at once (work since the last checkpoint is lost) and restarted."""
        if self._running.get(handle.slot) != handle.job_id:
            return
        if at_epoch_boundary:
            self._stop[handle.slot].set()
            return
        p = self._procs[handle.slot]
        p.kill()
        p.join(10)
        del self._running[handle.slot]
        self._pending.append(JobEvent("cancelled", handle.job_id, handle.slot, None, "killed"))
        self._spawn(handle.slot)
        self._await_ready({handle.slot}, 120.0)

    def shutdown(self, timeout_s: float = 20.0) -> None:
        for slot, p in self._procs.items():
            if p.is_alive():
                self._stop[slot].set()
                with contextlib.suppress(Exception):
                    self._inbox[slot].put(None)
        deadline = time.monotonic() + timeout_s
        for p in self._procs.values():
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(5)
        self._running.clear()

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


# --- Ray -------------------------------------------------------------------------------------------


class _RayWorkerImpl:
    """The body of a Ray actor (threaded, so `request_stop` runs while `run` is busy)."""

    def __init__(self, slot: str) -> None:
        self.slot = slot
        self._stop = threading.Event()
        if slot.startswith("cpu"):
            os.environ["CUDA_VISIBLE_DEVICES"] = ""  # Ray sets it for GPU actors; a CPU slot must see none

    def run(self, job: Job) -> tuple[str, JobResult | None, str]:
        self._stop.clear()
        try:
            res = run_job(job, self.slot, self._stop.is_set)
            return ("done" if res.finished else "cancelled", res, "")
        except Exception as e:
            return ("error", None, f"{type(e).__name__}: {e}")

    def request_stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        close_worker()


class RayExecutor(_EventQueue):
    """One Ray actor per slot (`num_gpus=1` each on GPU slots, 0 on CPU slots); Ray places and pins them.

    Pass `address` for an existing cluster ("auto"), else a local Ray is started with `num_cpus`.
    """

    def __init__(self, gpus: Sequence[str], *, address: str | None = None, num_cpus: int | None = None,
                 local_mode: bool = False) -> None:
        from jouled.extras import require

        require("--executor ray", "scheduler", "ray")
        import ray
        if not gpus:
            raise UserError("no worker slots — pass --gpus 0,1 or cpu:2")
        self._ray = ray
        self.slots = list(gpus)
        self._own = not ray.is_initialized()
        if self._own:
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if address:
                kw["address"] = address
            else:
                kw["num_cpus"] = num_cpus or max(len(self.slots), 1)
            if local_mode:
                kw["local_mode"] = True
            ray.init(**kw)
        self._actor_cls = ray.remote(max_concurrency=2)(_RayWorkerImpl)  # type: ignore[call-overload]
        self._actors: dict[str, Any] = {s: self._new_actor(s) for s in self.slots}
        self._refs: dict[Any, tuple[str, str]] = {}  # object ref -> (job_id, slot)
        self._running: dict[str, str] = {}
        self._pending: list[JobEvent] = []

    def _new_actor(self, slot: str) -> Any:
        gpu = 0 if slot.startswith("cpu") else 1
        return self._actor_cls.options(num_gpus=gpu, num_cpus=1).remote(slot)

    def idle_slots(self) -> list[str]:
        return [s for s in self.slots if s not in self._running]

    def submit(self, job: Job, slot: str | None = None) -> Handle:
        if slot is None:
            free = self.idle_slots()
            if not free:
                raise RuntimeError("no idle slot")
            slot = free[0]
        if slot in self._running:
            raise RuntimeError(f"slot {slot} is busy with {self._running[slot]}")
        ref = self._actors[slot].run.remote(job)
        self._refs[ref] = (job.job_id, slot)
        self._running[slot] = job.job_id
        # Ray gives no start notification without an extra round trip; `started` is the dispatch time
        self._pending.append(JobEvent("started", job.job_id, slot))
        return Handle(job.job_id, slot)

    def poll(self, timeout_s: float = 0.0) -> list[JobEvent]:
        out, self._pending = self._pending, []
        if not self._refs:
            return out
        ready, _ = self._ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0 if out else timeout_s)
        for ref in ready:
            job_id, slot = self._refs.pop(ref)
            self._running.pop(slot, None)
            try:
                kind, res, err = self._ray.get(ref)
            except Exception as e:  # actor died
                kind, res, err = "error", None, f"{type(e).__name__}: {e}"
            out.append(JobEvent(kind, job_id, slot, res, err))
        return out

    def cancel(self, handle: Handle, at_epoch_boundary: bool = True) -> None:
        if self._running.get(handle.slot) != handle.job_id:
            return
        actor = self._actors[handle.slot]
        if at_epoch_boundary:
            actor.request_stop.remote()
            return
        # Ray cannot force-cancel an actor task: replace the actor (work since the last checkpoint is lost)
        ref = next(r for r, (j, _s) in self._refs.items() if j == handle.job_id)
        del self._refs[ref]
        del self._running[handle.slot]
        self._ray.kill(actor)
        self._actors[handle.slot] = self._new_actor(handle.slot)
        self._pending.append(JobEvent("cancelled", handle.job_id, handle.slot, None, "killed"))

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self._ray.get([a.close.remote() for a in self._actors.values()], timeout=10)
        for a in self._actors.values():
            with contextlib.suppress(Exception):
                self._ray.kill(a)
        self._actors.clear()
        self._running.clear()
        if self._own:
            self._ray.shutdown()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def make_executor(kind: str, slots: Sequence[str]) -> LocalExecutor | RayExecutor:
    if kind == "local":
        return LocalExecutor(slots)
    if kind == "ray":
        return RayExecutor(slots)
    raise UserError(f"--executor {kind!r}: unknown — use local or ray")

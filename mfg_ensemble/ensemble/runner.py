"""Run a sweep on Dask: one task per member, each writing its own region of the store.

While a member solves, its worker publishes its start (iteration 0, residuals NaN) and every
Picard iteration as a Dask event on the topic ``mfg-progress`` ({"index", "iteration",
"residual", "residual_u", "residual_m"}); the client subscribes, keeps the latest state of
every member in flight (queued until its first event, then running) and passes it to the
``on_event`` callback (the CLI's live display, :class:`SweepMonitor` in Python). Events and
finished members reach the callbacks on the thread that called :func:`run_sweep` (through one
queue), so a notebook's display updates live in the running cell. The whole
run is one ``distributed.span`` named ``mfg-sweep-<name>``, so the dashboard groups its work.

:func:`run_sweep` prepares the store (create, or check and resume), submits the members not
yet recorded as futures named ``mfg-solve-<index>-<run>`` (the dashboard groups them under
``mfg-solve``), at most ``max_in_flight`` at a time (by default all, up to 10,000: Dask's
queuing throttles them, and its Progress bar shows the sweep's total), and gathers the
outcomes as they complete. A member that raises or diverges is recorded as failed and the
sweep goes on; a task lost with its worker is rerun by Dask, and one that fails for another
reason (an I/O error, say) is retried ``retries`` times and then recorded as failed.
"""

from __future__ import annotations

import os
import queue
import socket
import time
import traceback
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xarray as xr
import zarr
from distributed import Client, get_worker, span

from mfg_ensemble import schema
from mfg_ensemble.ensemble.cluster import connect, size_rayon, thread_settings
from mfg_ensemble.ensemble.monitor import Progress, SweepMonitor
from mfg_ensemble.ensemble.store import STORAGE_ERRORS, SweepStore
from mfg_ensemble.ensemble.sweep import GEOMETRY_FIELDS, GRID_FIELDS, Sweep
from mfg_ensemble.errors import NoWorkers, StoreMismatch
from mfg_ensemble.game.problem import Problem
from mfg_ensemble.game.problem2d import Problem2D
from mfg_ensemble.game.solver import SolverOptions, solve
from mfg_ensemble.schema import DONE, FAILED, PENDING

__all__ = ["MemberTask", "Progress", "SweepMonitor", "run_sweep", "solve_member"]


@dataclass(frozen=True)
class MemberTask:
    """Everything a worker needs for one member (plain, picklable data)."""

    store: SweepStore
    index: int
    position: tuple[int, ...]
    problem: Problem | Problem2D
    solver: SolverOptions
    warm_from: tuple[int, ...] | None = None
    """The position of the neighbour along the warm-start axis whose converged m starts this
    member's iteration (None: a cold start from m0)."""


TOPIC = "mfg-progress"
FAILED_REASONS = ("diverged", "time limit")
SUBMIT_AT_ONCE = 10_000
"""Members submitted at once by default (more would load the scheduler for nothing)."""
FLUSH_MEMBERS, FLUSH_SECONDS = 256, 1.0
"""The client commits finished members in batches of this many, or this often."""
"""A solve that stops for these reasons is recorded as failed (``--retry-failed`` reruns it)."""


def _publisher(index: int) -> Callable[[int, float, float], None] | None:
    """A solve callback that logs each iteration as an event, when running on a worker."""
    try:
        worker = get_worker()
    except ValueError:  # not on a worker (a serial call)
        return None

    def publish(iteration: int, residual_u: float, residual_m: float) -> None:
        worker.log_event(
            TOPIC,
            {
                "index": index,
                "iteration": iteration,
                "residual": max(residual_u, residual_m),
                "residual_u": residual_u,
                "residual_m": residual_m,
            },
        )

    publish(0, float("nan"), float("nan"))  # the member has started: no longer queued
    return publish


def _warm_start(task: MemberTask, previous: dict[str, Any] | None) -> Any:
    """The first iterate of a warm-started member: the neighbour's m if it converged (its
    outcome ``previous`` when it ran in this run, else its status in the store), else None."""
    if task.warm_from is None:
        return None
    if previous is not None:
        ok = previous.get("status") == "done" and previous.get("converged") == 1
    else:
        group = zarr.open_group(str(task.store.path), mode="r")
        ok = group["status"][task.warm_from] == DONE and group["converged"][task.warm_from] == 1
    return task.store.read_density(task.warm_from, task.problem.field_shape) if ok else None


def solve_member(task: MemberTask, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Solve one member and write its large arrays to the store; returns its outcome with the
    small values and the digest, which the client commits (:meth:`SweepStore.commit`).
    ``previous``: the outcome of the warm-start neighbour when it ran in this run (a Dask
    dependency: this member starts once the neighbour is done)."""
    started = time.perf_counter()
    outcome: dict[str, Any] = {"index": task.index, "worker": f"{socket.gethostname()}:{os.getpid()}"}
    result: xr.Dataset | None = None
    try:
        initial = _warm_start(task, previous)
        outcome["warm_start"] = int(initial is not None)
        result = solve(task.problem, task.solver, callback=_publisher(task.index), initial=initial)
    except Exception as exc:  # a member's own failure: record it, the sweep goes on
        outcome.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    else:
        reason = str(result.attrs["reason"])
        outcome.update(
            status="failed" if reason.startswith(FAILED_REASONS) else "done",
            reason=reason,
            converged=int(result.attrs["converged"]),
            iterations=int(result.attrs["iterations"]),
        )
        if outcome["status"] == "failed":
            outcome["error"] = reason
    outcome["wall_time"] = time.perf_counter() - started
    outcome["position"] = task.position
    try:
        outcome.update(task.store.write_fields(task.position, result, outcome))
    except OSError as exc:  # a full or read-only store: stop the run (no retry would help)
        if exc.errno not in STORAGE_ERRORS:
            raise
        outcome.update(status="storage", errno=exc.errno, error=exc.strerror, file=str(exc.filename or task.store.path))
    return outcome


def _tasks(
    sweep: Sweep, store: SweepStore, retry_failed: bool = False, warm_start: str | None = None
) -> list[MemberTask]:
    """The members still pending; with ``retry_failed`` also the failed ones and the done ones
    whose data no longer matches their digest (:meth:`SweepStore.verify`). With ``warm_start``
    (an axis name) each member not first along that axis starts from its predecessor there,
    and the tasks come in the order of that axis (a member after its predecessor)."""
    status = store.status().ravel()
    redo = status == PENDING
    if retry_failed:
        redo |= status == FAILED
        redo[store.verify()["damaged"]] = True
    axis = warm_axis(sweep, warm_start)
    tasks = []
    for m in sweep.members():
        if not redo[m.index]:
            continue
        warm_from = None
        if axis is not None and m.position[axis] > 0:
            warm_from = m.position[:axis] + (m.position[axis] - 1,) + m.position[axis + 1 :]
        tasks.append(MemberTask(store, m.index, m.position, m.problem, m.solver, warm_from))
    if axis is not None:
        tasks.sort(key=lambda t: t.position[axis])  # stable: C order within each step of the axis
    return tasks


NUMERICS_CHANGED = {
    "0.3": "IMEX fourth-order HJB, second-order FV, adaptive coupling, coarse-grid start, relative WENO ε, "
    "σ-continuation restart where Newton stalls",
}
"""Versions whose default numerics differ from the one before, and how."""


def _warn_if_older(store: SweepStore, done: int) -> None:
    """A ``RuntimeWarning`` when a store whose members were computed by a version with other
    default numerics is resumed: its members would not all come from one scheme."""
    old = str(store.attrs().get(f"{schema.VERSION}mfg_ensemble", ""))
    new = schema.versions()[f"{schema.VERSION}mfg_ensemble"]
    since, until = _minor(old), _minor(new)
    if not done or since is None or until is None:
        return
    changed = [f"{v}: {what}" for v, what in NUMERICS_CHANGED.items() if since < _minor(v) <= until]  # type: ignore[operator]
    if changed:
        warnings.warn(
            f"{store.path}: its {done} finished member(s) were computed by mfg_ensemble {old}, the rest "
            f"will be by {new}, whose default numerics differ ({'; '.join(changed)}): the results agree "
            "to the schemes' accuracy, not bit for bit; for one scheme throughout, run into a new store",
            RuntimeWarning,
            stacklevel=3,
        )


def _minor(version: str) -> tuple[int, int] | None:
    """(major, minor) of a version string, None if it is not one ("unknown")."""
    try:
        major, minor = version.split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def warm_axis(sweep: Sweep, warm_start: str | None) -> int | None:
    """The index of the warm-start axis (None for None); ``ValueError`` if ``warm_start`` names
    no axis of the sweep, or one that changes the (t, x) grid (a warm start needs the same)."""
    if warm_start is None:
        return None
    names = [a.name for a in sweep.axes]
    if warm_start not in names:
        choices = ", ".join(names) or "none"
        raise ValueError(f"warm_start must name an axis of the sweep ({choices}), got {warm_start!r}")
    axis = sweep.axes[names.index(warm_start)]
    if any(f.split(".")[0] in GRID_FIELDS + GEOMETRY_FIELDS for f in axis.fields):
        raise ValueError(f"warm_start: axis {warm_start!r} changes the grid; a warm start needs the same (t, x) grid")
    return names.index(warm_start)


def run_sweep(
    sweep: Sweep | str | Path,
    store: str | Path | None = None,
    *,
    client: Client | str | None = None,
    resume: bool = True,
    overwrite: bool = False,
    retry_failed: bool = False,
    extend: bool = False,
    warm_start: str | None = None,
    worker_timeout: float | None = 60.0,
    retries: int = 2,
    max_in_flight: int | None = None,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    on_progress: Callable[[Progress], None] | None = None,
    on_start: Callable[[Client, Progress], None] | None = None,
    on_event: Callable[[Progress, dict[str, Any]], None] | None = None,
    monitor: SweepMonitor | None = None,
) -> xr.Dataset:
    """Run every member of ``sweep`` not yet in ``store`` and return the store's dataset.

    ``sweep``: a :class:`Sweep` or the path of a sweep file. ``store``: a Zarr store path
    (default: ``<sweep name>.zarr`` in the working folder). ``client``: a ``Client``, a
    scheduler address, or None for a LocalCluster started here (``n_workers`` processes of
    ``threads_per_worker`` threads) and closed at the end. An existing store of the same
    sweep is resumed (only pending members run; with ``retry_failed`` also the failed and the
    damaged ones); one of another sweep is refused unless ``overwrite``. ``extend``: a store
    whose sweep ``sweep`` extends (more seeds, more values at the end of an axis: see
    :meth:`SweepStore.extend`) grows to hold it, keeping its members. ``warm_start``: an axis
    name; each member's iteration then starts from the converged m of its predecessor along
    that axis (a Dask dependency: the axis runs in order, the other axes in parallel). ``max_in_flight``:
    most members submitted at once (default: all, up to 10,000 — Dask's scheduler queues them,
    and its dashboard's progress counts the whole sweep). On KeyboardInterrupt the
    futures are cancelled and the store stays consistent: a member is done only once its
    status is written.

    ``worker_timeout``: seconds to wait for a cluster that has no worker before raising
    :class:`~mfg_ensemble.errors.NoWorkers` (None: wait as long as it takes).

    Callbacks: ``on_start(client, progress)`` once the cluster is up, ``on_progress(progress)``
    after each finished member, ``on_event(progress, event)`` for each Picard iteration of a
    member in flight; ``monitor`` (a :class:`SweepMonitor`) subscribes to all three.
    """
    _check_arguments(
        retries=retries, max_in_flight=max_in_flight, n_workers=n_workers, threads_per_worker=threads_per_worker
    )
    if not isinstance(sweep, Sweep):
        sweep = Sweep.from_file(sweep)
    warm_axis(sweep, warm_start)  # a bad axis name is refused before anything is created
    target = SweepStore.for_sweep(sweep, store).prepare(sweep, resume=resume, overwrite=overwrite, extend=extend)
    if monitor is not None:
        on_start, on_progress, on_event = monitor.on_start, monitor.on_progress, monitor.on_event
    with target.lock():
        tasks = _tasks(sweep, target, retry_failed, warm_start)
        progress = Progress(total=len(sweep), skipped=len(sweep) - len(tasks))
        progress.labels = {t.index: _label(sweep, t.position) for t in tasks}
        if not tasks:
            return target.open()
        _warn_if_older(target, progress.skipped)
        with connect(client, n_workers=n_workers, threads_per_worker=threads_per_worker) as c:
            _wait_for_workers(c, worker_timeout)
            _check_reachable(c, target)
            target.update_attrs(thread_settings(c, size_rayon(c)))
            if on_start is not None:
                on_start(c, progress)

            inbox: queue.Queue[tuple[str, Any]] = queue.Queue()  # events and finished futures
            c.subscribe_topic(TOPIC, lambda event: inbox.put(("event", event[1])))
            try:
                with span(f"mfg-sweep-{sweep.name or 'sweep'}"):
                    _submit_all(c, tasks, progress, retries, max_in_flight, inbox, on_progress, on_event)
            finally:
                c.unsubscribe_topic(TOPIC)
    return target.open()


def _check_arguments(**values: int | None) -> None:
    """``ValueError`` for a count that makes no sense (None means the default)."""
    least = {"retries": 0}
    for name, value in values.items():
        low = least.get(name, 1)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ValueError(f"{name} must be None or an integer >= {low}, got {value!r}")


def _wait_for_workers(client: Client, timeout: float | None) -> None:
    """Return once the cluster has a worker; ``NoWorkers`` after ``timeout`` seconds (None:
    wait as long as it takes, e.g. for a batch queue to start dask-jobqueue's workers)."""
    if client.scheduler_info(n_workers=-1).get("workers"):
        return
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise NoWorkers(
            f"the cluster at {client.scheduler.address} has no worker after {timeout:g} s: its workers "
            "died (a notebook's kernel interrupt kills a LocalCluster's) or have not started; restart "
            "the cluster, or pass worker_timeout=None to wait for them"
        ) from None


def _check_reachable(client: Client, store: SweepStore) -> None:
    """``StoreMismatch`` before any compute if a worker cannot see the store (a cluster whose
    workers run on other machines needs the store on storage they share)."""
    seen = client.run(os.path.isdir, str(store.path))
    blind = sorted(worker for worker, ok in seen.items() if not ok)
    if blind:
        raise StoreMismatch(
            f"the store {store.path} is not reachable from {len(blind)} of {len(seen)} worker(s) "
            f"(e.g. {blind[0]}): put it on a file system every worker mounts at the same path"
        )


def _label(sweep: Sweep, position: tuple[int, ...]) -> str:
    """A member's parameter values, as a progress display shows them: "sigma=0.1, seed=2"."""
    return ", ".join(f"{a.name}={a.coords[i]}" for a, i in zip(sweep.axes, position))


def _submit_all(
    client: Client,
    tasks: list[MemberTask],
    progress: Progress,
    retries: int,
    max_in_flight: int | None,
    inbox: queue.Queue[tuple[str, Any]],
    on_progress: Callable[[Progress], None] | None,
    on_event: Callable[[Progress, dict[str, Any]], None] | None,
) -> None:
    """Submit the tasks (at most ``max_in_flight`` at once) and handle, on this thread, what
    arrives in ``inbox``: a worker's progress event, or a future that finished."""
    run = uuid.uuid4().hex[:8]
    limit = max_in_flight or SUBMIT_AT_ONCE
    queued = iter(tasks)
    by_key: dict[str, MemberTask] = {}
    live: dict[str, Any] = {}
    # finished futures are held (their outcomes are small) until the run ends, so that the
    # scheduler keeps them and the dashboard's Progress counts done out of the sweep's total
    finished: list[Any] = []
    at: dict[tuple[int, ...], Any] = {}  # position → future, for warm-start dependencies

    def submit_next() -> None:
        task = next(queued, None)
        if task is None:
            return
        after = at.get(task.warm_from) if task.warm_from is not None else None  # the neighbour, if in this run
        key = f"mfg-solve-{task.index}-{run}"
        fut = client.submit(solve_member, task, after, key=key, retries=retries, pure=False)
        at[task.position] = fut
        by_key[fut.key] = task
        live[fut.key] = fut
        progress.members[task.index] = {"index": task.index, "iteration": 0, "residual": float("nan"), "queued": True}
        fut.add_done_callback(lambda f: inbox.put(("finished", f)))

    for _ in range(limit):
        submit_next()
    progress.in_flight = len(live)
    batch = _Batch(tasks[0].store)
    try:
        while live:
            try:
                kind, item = inbox.get(timeout=1.0)  # a timeout keeps Ctrl-C responsive
            except queue.Empty:
                continue
            if kind == "event":
                if item.get("index") in progress.members:
                    progress.members[item["index"]] = item
                    if on_event is not None:
                        on_event(progress, item)
                continue
            fut = item
            if live.pop(fut.key, None) is None:
                continue
            finished.append(fut)
            task = by_key.pop(fut.key)
            progress.members.pop(task.index, None)
            if fut.status == "finished":
                outcome = fut.result()
            else:  # the task itself failed (after retries): record it from here
                exc = fut.exception()
                outcome = {
                    "index": task.index,
                    "position": task.position,
                    "status": "failed",
                    "error": f"{type(exc).__name__}: {exc}",
                    "wall_time": float("nan"),
                }
            if outcome["status"] == "storage":
                raise OSError(outcome["errno"], outcome["error"], outcome["file"])
            batch.add(outcome)
            if outcome["status"] == "done":
                progress.done += 1
            else:
                progress.failed += 1
                progress.errors[task.index] = str(outcome.get("error"))
            submit_next()
            progress.in_flight = len(live)
            if on_progress is not None:
                on_progress(progress)
    except BaseException:
        client.cancel(list(live.values()), force=True)
        raise
    finally:
        batch.commit()  # what has finished is recorded, also on an interrupt


class _Batch:
    """Finished members waiting to be committed by the client (the single writer of the small
    per-member values): committed every FLUSH_MEMBERS members or FLUSH_SECONDS seconds, and at
    the end of the run, also on an interrupt."""

    def __init__(self, store: SweepStore) -> None:
        self.store, self.records, self.last = store, [], time.monotonic()

    def add(self, outcome: dict[str, Any]) -> None:
        self.records.append(outcome)
        if len(self.records) >= FLUSH_MEMBERS or time.monotonic() - self.last >= FLUSH_SECONDS:
            self.commit()

    def commit(self) -> None:
        self.store.commit(self.records)
        self.records, self.last = [], time.monotonic()

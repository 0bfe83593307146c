"""Run a sweep on Dask: one task per member, each writing its own region of the store.

:func:`run_sweep` prepares the store (create, or check and resume), submits the members not
yet recorded as futures named ``mfg-solve-<index>-<run>`` (the dashboard groups them under
``mfg-solve``), keeps at most ``max_in_flight`` of them in flight, and gathers the small
outcomes as they complete. A member that raises or diverges is recorded as failed and the
sweep goes on; a task lost with its worker is rerun by Dask, and one that fails for another
reason (an I/O error, say) is retried ``retries`` times and then recorded as failed.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xarray as xr
from distributed import Client, as_completed

from mfg_ensemble import store as st
from mfg_ensemble.cluster import connect, thread_settings
from mfg_ensemble.problem import Problem
from mfg_ensemble.solver import SolverOptions, solve
from mfg_ensemble.sweep import Sweep


@dataclass(frozen=True)
class MemberTask:
    """Everything a worker needs for one member (plain, picklable data)."""

    store: str
    index: int
    position: tuple[int, ...]
    axes: tuple[str, ...]
    tdim: str
    xdim: str
    problem: Problem
    solver: SolverOptions


def solve_member(task: MemberTask) -> dict[str, Any]:
    """Solve one member and write it to the store; returns its small outcome."""
    started = time.perf_counter()
    outcome: dict[str, Any] = {"index": task.index, "worker": f"{socket.gethostname()}:{os.getpid()}"}
    result: xr.Dataset | None = None
    try:
        result = solve(task.problem, **task.solver.__dict__)
    except Exception as exc:  # a member's own failure: record it, the sweep goes on
        outcome.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    else:
        reason = str(result.attrs["reason"])
        outcome.update(
            status="failed" if reason.startswith("diverged") else "done",
            reason=reason,
            converged=int(result.attrs["converged"]),
            iterations=int(result.attrs["iterations"]),
        )
        if outcome["status"] == "failed":
            outcome["error"] = reason
    outcome["wall_time"] = time.perf_counter() - started
    st.write_member(task.store, list(task.axes), task.position, task.tdim, task.xdim, result, outcome)
    outcome.pop("traceback", None)
    return outcome


@dataclass
class Progress:
    """What a run has done so far (passed to the ``on_progress`` callback)."""

    total: int
    skipped: int = 0
    done: int = 0
    failed: int = 0
    in_flight: int = 0
    started: float = field(default_factory=time.perf_counter)
    errors: dict[int, str] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        return self.done + self.failed

    @property
    def eta(self) -> float | None:
        """Seconds left, from the mean rate so far (None before the first member finishes)."""
        remaining = self.total - self.skipped - self.finished
        elapsed = time.perf_counter() - self.started
        return elapsed / self.finished * remaining if self.finished else None


def _tasks(sweep: Sweep, path: Path) -> list[MemberTask]:
    """The members whose status is still pending."""
    status = st.status(path).ravel()
    tdim, xdim = st._dims(sweep)
    axes = tuple(a.name for a in sweep.axes)
    return [
        MemberTask(str(path), m.index, m.position, axes, tdim, xdim, m.problem, m.solver)
        for m in sweep.members()
        if status[m.index] == st.PENDING
    ]


def run_sweep(
    sweep: Sweep | str | Path,
    store: str | Path | None = None,
    *,
    client: Client | str | None = None,
    resume: bool = True,
    overwrite: bool = False,
    retries: int = 2,
    max_in_flight: int | None = None,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    on_progress: Callable[[Progress], None] | None = None,
    on_start: Callable[[Client, Progress], None] | None = None,
) -> xr.Dataset:
    """Run every member of ``sweep`` not yet in ``store`` and return the store's dataset.

    ``sweep``: a :class:`Sweep` or the path of a sweep file. ``store``: a Zarr store path
    (default: ``<sweep name>.zarr`` in the working folder). ``client``: a ``Client``, a
    scheduler address, or None for a LocalCluster started here (``n_workers`` processes of
    ``threads_per_worker`` threads) and closed at the end. An existing store of the same
    sweep is resumed (only pending members run); one of another sweep is refused unless
    ``overwrite``. ``max_in_flight``: most members submitted at once (default: 4 per
    worker thread). On KeyboardInterrupt the futures are cancelled and the store stays
    consistent: a member is done only once its status is written.
    """
    if not isinstance(sweep, Sweep):
        sweep = Sweep.from_file(sweep)
    path = Path(store) if store is not None else Path(f"{sweep.name or 'sweep'}.zarr")
    path = st.prepare(sweep, path, resume=resume, overwrite=overwrite)
    tasks = _tasks(sweep, path)
    progress = Progress(total=len(sweep), skipped=len(sweep) - len(tasks))
    if not tasks:
        return st.open_sweep(path)
    with connect(client, n_workers=n_workers, threads_per_worker=threads_per_worker) as c:
        st.update_attrs(path, thread_settings(c))
        if on_start is not None:
            on_start(c, progress)
        _submit_all(c, tasks, progress, retries, max_in_flight, on_progress)
    return st.open_sweep(path)


def _submit_all(
    client: Client,
    tasks: list[MemberTask],
    progress: Progress,
    retries: int,
    max_in_flight: int | None,
    on_progress: Callable[[Progress], None] | None,
) -> None:
    run = uuid.uuid4().hex[:8]
    limit = max_in_flight or 4 * max(1, sum(client.nthreads().values()))
    queue = iter(tasks)
    by_key: dict[str, MemberTask] = {}
    live: dict[str, Any] = {}

    def submit_next() -> Any:
        task = next(queue, None)
        if task is None:
            return None
        fut = client.submit(solve_member, task, key=f"mfg-solve-{task.index}-{run}", retries=retries, pure=False)
        by_key[fut.key] = task
        live[fut.key] = fut
        return fut

    first = [f for f in (submit_next() for _ in range(limit)) if f is not None]
    progress.in_flight = len(first)
    pending = as_completed(first)
    try:
        for fut in pending:
            task = by_key.pop(fut.key)
            live.pop(fut.key, None)
            if fut.status == "finished":
                outcome = fut.result()
            else:  # the task itself failed (after retries): record it from here
                exc = fut.exception()
                outcome = {"index": task.index, "status": "failed", "error": f"{type(exc).__name__}: {exc}", "wall_time": float("nan")}
                st.write_member(task.store, list(task.axes), task.position, task.tdim, task.xdim, None, outcome)
            if outcome["status"] == "done":
                progress.done += 1
            else:
                progress.failed += 1
                progress.errors[task.index] = str(outcome.get("error"))
            nxt = submit_next()
            if nxt is not None:
                pending.add(nxt)
            progress.in_flight = pending.count()
            if on_progress is not None:
                on_progress(progress)
    except BaseException:
        client.cancel(list(live.values()), force=True)
        raise

"""Run a sweep on Dask: one task per member, each writing its own region of the store.

While a member solves, its worker publishes every Picard iteration as a Dask event on the
topic ``mfg-progress`` ({"index", "iteration", "residual", "residual_u", "residual_m"});
the client subscribes, keeps the latest state of every member in flight and passes it to the
``on_event`` callback (the CLI's live display, :class:`SweepMonitor` in Python). The whole
run is one ``distributed.span`` named ``mfg-sweep-<name>``, so the dashboard groups its work.

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
from distributed import Client, as_completed, get_worker, span

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


TOPIC = "mfg-progress"


def _publisher(index: int) -> Callable[[int, float, float], None] | None:
    """A solve callback that logs each iteration as an event, when running on a worker."""
    try:
        worker = get_worker()
    except ValueError:  # not on a worker (a serial call)
        return None

    def publish(iteration: int, residual_u: float, residual_m: float) -> None:
        worker.log_event(
            TOPIC,
            {"index": index, "iteration": iteration, "residual": max(residual_u, residual_m),
             "residual_u": residual_u, "residual_m": residual_m},
        )

    return publish


def solve_member(task: MemberTask) -> dict[str, Any]:
    """Solve one member and write it to the store; returns its small outcome."""
    started = time.perf_counter()
    outcome: dict[str, Any] = {"index": task.index, "worker": f"{socket.gethostname()}:{os.getpid()}"}
    result: xr.Dataset | None = None
    try:
        result = solve(task.problem, **task.solver.__dict__, callback=_publisher(task.index))
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
    members: dict[int, dict[str, Any]] = field(default_factory=dict)
    """The latest progress event of every member in flight (index → event)."""

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
    tdim, xdim = st.grid_dims(sweep)
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
    on_event: Callable[[Progress, dict[str, Any]], None] | None = None,
    monitor: SweepMonitor | None = None,
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

    Callbacks: ``on_start(client, progress)`` once the cluster is up, ``on_progress(progress)``
    after each finished member, ``on_event(progress, event)`` for each Picard iteration of a
    member in flight; ``monitor`` (a :class:`SweepMonitor`) subscribes to all three.
    """
    if not isinstance(sweep, Sweep):
        sweep = Sweep.from_file(sweep)
    path = Path(store) if store is not None else Path(f"{sweep.name or 'sweep'}.zarr")
    path = st.prepare(sweep, path, resume=resume, overwrite=overwrite)
    tasks = _tasks(sweep, path)
    progress = Progress(total=len(sweep), skipped=len(sweep) - len(tasks))
    if not tasks:
        return st.open_sweep(path)
    if monitor is not None:
        on_start, on_progress, on_event = monitor.on_start, monitor.on_progress, monitor.on_event
    with connect(client, n_workers=n_workers, threads_per_worker=threads_per_worker) as c:
        st.update_attrs(path, thread_settings(c))
        if on_start is not None:
            on_start(c, progress)

        def handle(event: tuple[float, dict[str, Any]]) -> None:
            msg = event[1]
            if msg.get("index") in progress.members:
                progress.members[msg["index"]] = msg
                if on_event is not None:
                    on_event(progress, msg)

        c.subscribe_topic(TOPIC, handle)
        try:
            with span(f"mfg-sweep-{sweep.name or 'sweep'}"):
                _submit_all(c, tasks, progress, retries, max_in_flight, on_progress)
        finally:
            c.unsubscribe_topic(TOPIC)
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
        progress.members[task.index] = {"index": task.index, "iteration": 0, "residual": float("nan")}
        return fut

    first = [f for f in (submit_next() for _ in range(limit)) if f is not None]
    progress.in_flight = len(first)
    pending = as_completed(first)
    try:
        for fut in pending:
            task = by_key.pop(fut.key)
            live.pop(fut.key, None)
            progress.members.pop(task.index, None)
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


class SweepMonitor:
    """A live view of a running sweep for Python and Jupyter users.

    ``run_sweep(sweep, store, monitor=SweepMonitor())`` prints the dashboard link when the
    cluster is up and keeps :attr:`progress` current (done, failed, in flight with their
    iteration and residual, ETA). In Jupyter it shows one summary that updates in place;
    elsewhere it prints a line per finished member if ``verbose``.
    """

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose
        self.progress: Progress | None = None
        self.dashboard_link: str | None = None
        self._handle: Any = None

    def on_start(self, client: Client, progress: Progress) -> None:
        self.progress = progress
        self.dashboard_link = client.dashboard_link
        try:
            from IPython import get_ipython
            from IPython.display import HTML, display

            if get_ipython() is not None:
                self._handle = display(HTML(self._html()), display_id=True)
                return
        except ImportError:
            pass
        print(f"dashboard: {self.dashboard_link}")

    def on_progress(self, progress: Progress) -> None:
        self.progress = progress
        self._refresh()
        if self.verbose and self._handle is None:
            print(self.summary())

    def on_event(self, progress: Progress, event: dict[str, Any]) -> None:
        self.progress = progress
        self._refresh()

    def in_flight(self) -> list[dict[str, Any]]:
        """The latest iteration and residual of each member in flight."""
        return sorted(dict(self.progress.members).values(), key=lambda e: e["index"]) if self.progress else []

    def summary(self) -> str:
        p = self.progress
        if p is None:
            return "not started"
        eta = "–" if p.eta is None else f"{p.eta:.0f} s"
        return f"{p.skipped + p.finished}/{p.total} members: done {p.done}, failed {p.failed}, in flight {len(p.members)}, ETA {eta}"

    def _html(self) -> str:
        rows = "".join(
            f"<tr><td>{e['index']}</td><td>{e['iteration']}</td><td>{e['residual']:.2e}</td></tr>" for e in self.in_flight()
        )
        link = f'<a href="{self.dashboard_link}" target="_blank">{self.dashboard_link}</a>'
        return (f"<p>Dask dashboard: {link}<br>{self.summary()}</p>"
                f"<table><tr><th>member</th><th>iteration</th><th>residual</th></tr>{rows}</table>")

    def _refresh(self) -> None:
        if self._handle is not None:
            from IPython.display import HTML

            self._handle.update(HTML(self._html()))

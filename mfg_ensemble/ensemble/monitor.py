"""Watching a running sweep: the run's counts (:class:`Progress`) and a live view for Python and
Jupyter users (:class:`SweepMonitor`).

:func:`mfg_ensemble.run_sweep` keeps a :class:`Progress` current and passes it to its
callbacks; a :class:`SweepMonitor` subscribes to all three (``on_start``, ``on_progress``,
``on_event``).
"""

from __future__ import annotations

import html
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from distributed import Client


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
    """The latest progress event of every member in flight (index → event); a member submitted
    but not yet started on a worker has ``"queued": True``."""
    labels: dict[int, str] = field(default_factory=dict)
    """The parameter values of every member to run (index → "sigma=0.1, seed=2")."""

    @property
    def running(self) -> list[dict[str, Any]]:
        """The latest event of each member running on a worker, by index."""
        return sorted((e for e in dict(self.members).values() if not e.get("queued")), key=lambda e: e["index"])

    @property
    def queued(self) -> int:
        """Members submitted that no worker has started yet."""
        return sum(1 for e in dict(self.members).values() if e.get("queued"))

    @property
    def finished(self) -> int:
        return self.done + self.failed

    @property
    def eta(self) -> float | None:
        """Seconds left, from the mean rate so far (None before the first member finishes)."""
        remaining = self.total - self.skipped - self.finished
        elapsed = time.perf_counter() - self.started
        return elapsed / self.finished * remaining if self.finished else None


class SweepMonitor:
    """A live view of a running sweep for Python and Jupyter users.

    ``run_sweep(sweep, store, monitor=SweepMonitor())`` prints the dashboard link when the
    cluster is up and keeps :attr:`progress` current (done, failed, running with their
    parameter values, iteration and residual, queued, ETA). It shows a ``tqdm.auto`` bar over
    the sweep's members (a widget in Jupyter with ipywidgets installed, text on a terminal,
    nothing in a log) and, in Jupyter, a table of the running members; both update in place in
    the running cell, since :func:`run_sweep` calls the monitor on its own thread. ``verbose``
    also prints a line per finished member outside Jupyter.
    """

    REFRESH = 0.25
    """Seconds between two redraws for progress events (finished members always redraw)."""

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose
        self.progress: Progress | None = None
        self.dashboard_link: str | None = None
        self._handle: Any = None
        self._bar: Any = None
        self._drawn = 0.0

    def on_start(self, client: Client, progress: Progress) -> None:
        self.progress = progress
        self.dashboard_link = client.dashboard_link
        self._bar = _progress_bar(progress)
        if _in_jupyter():
            from IPython.display import HTML, display

            self._handle = display(HTML(self._html()), display_id=True)
        else:
            print(f"dashboard: {self.dashboard_link}")
        self._refresh(force=True)

    def on_progress(self, progress: Progress) -> None:
        self.progress = progress
        self._refresh(force=True)
        if self.verbose and self._handle is None:
            print(self.summary())

    def on_event(self, progress: Progress, event: dict[str, Any]) -> None:
        self.progress = progress
        self._refresh()

    def in_flight(self) -> list[dict[str, Any]]:
        """The latest iteration and residual of each member running, by index."""
        return self.progress.running if self.progress else []

    def summary(self) -> str:
        p = self.progress
        if p is None:
            return "not started"
        eta = "–" if p.eta is None else f"{p.eta:.0f} s"
        counts = f"done {p.done}, failed {p.failed}, running {len(p.running)}, queued {p.queued}"
        return f"{p.skipped + p.finished}/{p.total} members: {counts}, ETA {eta}"

    def _html(self) -> str:
        p = self.progress
        labels = p.labels if p else {}
        rows = "".join(
            f"<tr><td>{e['index']}</td><td>{html.escape(labels.get(e['index'], ''))}</td>"
            f"<td>{e['iteration']}</td><td>{e['residual']:.2e}</td></tr>"
            for e in self.in_flight()
        )
        link = f'<a href="{self.dashboard_link}" target="_blank">{self.dashboard_link}</a>'
        return (
            f"<p>Dask dashboard: {link}<br>{html.escape(self.summary())}</p>"
            "<table><tr><th>member</th><th>parameters</th><th>iteration</th><th>residual</th></tr>"
            f"{rows}</table>"
        )

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < self.REFRESH:
            return
        self._drawn = now
        p = self.progress
        if self._bar is not None and p is not None:
            self._bar.n = p.skipped + p.finished
            self._bar.set_postfix_str(
                f"done {p.done}, failed {p.failed}, running {len(p.running)}, queued {p.queued}", refresh=False
            )
            self._bar.refresh()
            if p.skipped + p.finished >= p.total:
                self._bar.close()
        if self._handle is not None:
            from IPython.display import HTML

            self._handle.update(HTML(self._html()))


def _in_jupyter() -> bool:
    """Whether this runs in a Jupyter kernel (not a terminal IPython, not a script)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _progress_bar(progress: Progress) -> Any:
    """A ``tqdm.auto`` bar over the members: a widget in Jupyter (text if ipywidgets is not
    installed), text on a terminal, disabled when the output is not a terminal."""
    from tqdm import tqdm as text_bar

    kwargs = dict(total=progress.total, initial=progress.skipped, desc="members", unit="member", dynamic_ncols=True)
    if _in_jupyter():
        try:
            from tqdm.notebook import tqdm as widget_bar

            return widget_bar(**kwargs)
        except ImportError:  # no ipywidgets: tqdm's text bar in the cell
            return text_bar(**kwargs, file=sys.stdout)
    return text_bar(**kwargs, disable=None)  # None: off when stderr is not a terminal

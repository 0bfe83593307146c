"""Watching a running sweep: the run's counts (:class:`Progress`) and a live view for Python and
Jupyter users (:class:`SweepMonitor`).

:func:`mfg_ensemble.run_sweep` keeps a :class:`Progress` current and passes it to its
callbacks; a :class:`SweepMonitor` subscribes to all three (``on_start``, ``on_progress``,
``on_event``).
"""

from __future__ import annotations

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
        counts = f"done {p.done}, failed {p.failed}, in flight {len(p.members)}"
        return f"{p.skipped + p.finished}/{p.total} members: {counts}, ETA {eta}"

    def _html(self) -> str:
        rows = "".join(
            f"<tr><td>{e['index']}</td><td>{e['iteration']}</td><td>{e['residual']:.2e}</td></tr>"
            for e in self.in_flight()
        )
        link = f'<a href="{self.dashboard_link}" target="_blank">{self.dashboard_link}</a>'
        return (
            f"<p>Dask dashboard: {link}<br>{self.summary()}</p>"
            f"<table><tr><th>member</th><th>iteration</th><th>residual</th></tr>{rows}</table>"
        )

    def _refresh(self) -> None:
        if self._handle is not None:
            from IPython.display import HTML

            self._handle.update(HTML(self._html()))

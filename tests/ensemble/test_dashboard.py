"""The Dask dashboard works after ``pip install .`` and shows the sweep while it runs."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from mfg_ensemble import Sweep, run_sweep

from conftest import PROBLEM, SOLVER, set_paused, solves_known

pytestmark = pytest.mark.slow


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200, url
        return response.read().decode("utf-8", "replace")


def test_the_dashboard_pages_answer_while_a_sweep_runs(client, tmp_path: Path) -> None:
    base = client.dashboard_link.rsplit("/", 1)[0]
    pages: dict[str, str] = {}

    def fetch(progress) -> None:  # after the first finished member: the sweep is running
        if not pages:
            for page in ("status", "individual-task-stream", "individual-progress"):
                pages[page] = _get(f"{base}/{page}")

    sweep = Sweep({**PROBLEM, "nx": 21, "nt": 6}, {**SOLVER, "fp": "fv"}, {"seed": {"count": 4}})
    run_sweep(sweep, tmp_path / "s.zarr", client=client, on_progress=fetch)
    assert set(pages) == {"status", "individual-task-stream", "individual-progress"}
    for page, html in pages.items():
        assert "bokeh" in html.lower() and "Dask needs bokeh" not in html, page


def test_dask_sees_the_whole_sweep(tmp_path: Path) -> None:
    """Every member is submitted at once (Dask's queuing throttles), so the dashboard's
    Progress bar counts the sweep's total, not a window of it. The workers are paused until
    the scheduler holds all 24 tasks (memory_limit=0: no memory monitor to un-pause them).
    Finished members stay known to the scheduler until the run ends, so its Progress reads
    "done out of 24" throughout, not "done out of what is left"."""
    import threading
    import time

    from distributed import Client

    from mfg_ensemble.ensemble.cluster import local_cluster

    sweep = Sweep({**PROBLEM, "nx": 21, "nt": 6}, {**SOLVER, "fp": "fv"}, {"seed": {"count": 24}})
    with local_cluster(2, dashboard_address=":0", memory_limit=0) as cluster, Client(cluster) as client:
        client.run(set_paused, paused=True)
        known: list[int] = []

        def count(progress) -> None:
            known.append(client.run_on_scheduler(solves_known))

        kwargs = {"client": client, "on_progress": count}
        runner = threading.Thread(target=run_sweep, args=(sweep, tmp_path / "s.zarr"), kwargs=kwargs)
        runner.start()
        try:
            deadline = time.monotonic() + 60
            while client.run_on_scheduler(solves_known) < 24:
                assert time.monotonic() < deadline, client.run_on_scheduler(solves_known)
                time.sleep(0.05)
        finally:
            client.run(set_paused, paused=False)
            runner.join(120)
    assert not runner.is_alive()
    assert len(known) == 24 and set(known) == {24}, known

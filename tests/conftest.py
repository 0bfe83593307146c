"""Shared fixtures: the two backends, and running code in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

BACKENDS = ("rust", "numpy")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261124)


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run ``code`` in a new interpreter (spawned, never forked) and return its stdout."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        # -P: no script directory on sys.path, so the installed package is imported
        [sys.executable, "-P", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``mfg-ensemble ARGS`` in a new interpreter (in ``cwd``) and return what it did."""
    return subprocess.run(
        [sys.executable, "-m", "mfg_ensemble.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def run_json(code: str, env: dict[str, str] | None = None) -> object:
    """Run ``code`` (which prints one JSON document last) in a new interpreter."""
    return json.loads(run_python(code, env).strip().splitlines()[-1])


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    """max |a − b| relative to max |b| (the scale of the result)."""
    scale = float(np.max(np.abs(b)))
    return float(np.max(np.abs(a - b))) / (scale if scale > 0 else 1.0)


# -- small sweeps on a real cluster (test_runner, test_accessor, test_report) ---------------

PROBLEM = {
    "nx": 41,
    "nt": 11,
    "sigma": 0.2,
    "coupling": {"kind": "log", "strength": 0.1},
    "m0": {"kind": "gaussian", "mean": 0.3, "std": 0.1},
    "terminal": {"kind": "quadratic", "strength": 1.0, "center": 0.7},
}
SOLVER = {"fp": "particles", "n_particles": 2000, "max_iter": 30, "tol": 1e-6, "seed": 7}


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 worker processes for the tests of one module."""
    from distributed import Client

    from mfg_ensemble.ensemble.cluster import local_cluster

    with local_cluster(2, dashboard_address=":0") as cluster, Client(cluster) as c:
        yield c


def interrupted_sweep(client, path: Path) -> Path:
    """sigma × seed (3 × 3) at ``path``, interrupted after 2 finished members and settled: a
    store with members done and pending (test_accessor, test_report)."""
    from mfg_ensemble import Sweep, run_sweep

    with pytest.raises(KeyboardInterrupt):
        run_sweep(
            Sweep(PROBLEM, SOLVER, {"sigma": [0.1, 0.2, 0.3], "seed": {"count": 3}}),
            path,
            client=client,
            on_progress=interrupt_after(2),
            max_in_flight=2,
        )
    settle(client)
    return path


def interrupt_after(n: int):
    """An on_progress callback that stops the run (as Ctrl-C would) after n finished members."""

    def interrupt(progress) -> None:
        if progress.finished >= n:
            raise KeyboardInterrupt

    return interrupt


def set_paused(dask_worker, paused: bool) -> None:
    """Pause a worker (it starts no task) or let it run again: members wait until released.
    Use a cluster with memory_limit=0, whose memory monitor cannot un-pause it."""
    from distributed.core import Status

    dask_worker.status = Status.paused if paused else Status.running


def solves_known(dask_scheduler) -> int:
    """The member tasks the scheduler holds (submitted, not yet released)."""
    return sum(str(key).startswith("mfg-solve-") for key in dask_scheduler.tasks)


def _running(dask_worker) -> int:
    """Tasks this worker still runs, including those cancelled while running."""
    return len(dask_worker.state.all_running_tasks)


def settle(client, timeout: float = 60.0) -> None:
    """Wait until no worker runs a task: a member cancelled while running completes and commits
    (its status is written inside the task), so after this the store no longer changes."""
    deadline = time.monotonic() + timeout
    while any(client.run(_running).values()):
        assert time.monotonic() < deadline, "members still running after the interrupt"
        time.sleep(0.05)

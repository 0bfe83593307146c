"""The ensemble runner on a real LocalCluster and a real Zarr store, with real faults:
bit-identical to serial solves, a killed worker, an interrupted and resumed sweep, failing
members, a store of another sweep."""

from __future__ import annotations

import os
import signal
import threading
import warnings

import numpy as np
import pytest
import xarray as xr

from mfg_ensemble import StoreMismatch, Sweep, SweepMonitor, open_sweep, run_sweep, solve
from mfg_ensemble.ensemble.cluster import worker_env
from mfg_ensemble.ensemble.store import SweepStore
from mfg_ensemble.schema import DONE, FAILED

from conftest import PROBLEM, SOLVER, interrupt_after, settle

pytestmark = pytest.mark.slow


def small_sweep(**axes: object) -> Sweep:
    return Sweep(PROBLEM, SOLVER, axes or {"sigma": [0.1, 0.2, 0.3], "seed": {"count": 3}})


def assert_matches_serial(ds: xr.Dataset, sweep: Sweep) -> None:
    for member in sweep.members():
        ref = solve(member.problem, **member.solver.__dict__)
        at = dict(zip((a.name for a in sweep.axes), member.position))
        got = ds.isel(at)
        assert int(got.status) == DONE
        np.testing.assert_array_equal(got.m.values, ref.m.values)
        np.testing.assert_array_equal(got.u.values, ref.u.values)
        n = ref.sizes["iteration"]
        np.testing.assert_array_equal(got.residual.values[:n], ref.residual.values)
        assert np.isnan(got.residual.values[n:]).all()
        assert int(got.iterations) == n and int(got.converged) == ref.attrs["converged"]


def test_sweep_on_two_workers_equals_serial_solves_bit_for_bit(client, tmp_path) -> None:
    sweep = small_sweep()
    ds = run_sweep(sweep, tmp_path / "s.zarr", client=client)
    assert dict(ds.sizes) == {"sigma": 3, "seed": 3, "t": 11, "x": 41, "iteration": 30}
    summary = SweepStore(tmp_path / "s.zarr").summary()
    assert summary["done"] == 9 and summary["not converged"] == int((ds.converged.values == 0).sum())
    assert ds.m.dims == ("sigma", "seed", "t", "x")
    assert_matches_serial(ds, sweep)
    # labelled and lazy: the post-analysis users write just works
    mean = ds.m.sel(sigma=0.2).mean("seed")
    assert mean.dims == ("t", "x") and np.isfinite(mean.values).all()
    for name in ("u", "m", "residual", "status", "converged", "iterations", "wall_time", "t", "x"):
        assert {"units", "long_name"} <= set(ds[name].attrs), name
    for key in (
        "mfg_ensemble.fingerprint",
        "mfg_ensemble.sweep_text",
        "version.dask",
        "version.zarr",
        "version.numpy",
        "version.rust_core",
        "run.rayon_num_threads",
        "run.backend",
    ):
        assert key in ds.attrs, key


def test_replicate_seeds_do_not_depend_on_the_other_axes(client, tmp_path) -> None:
    ds = run_sweep(small_sweep(), tmp_path / "s.zarr", client=client)
    seeds = [m.solver.seed for m in small_sweep().members()]
    assert seeds[0:3] == seeds[3:6] == seeds[6:9] and len(set(seeds[:3])) == 3
    assert ds.seed.values.tolist() == [0, 1, 2]


def test_a_killed_worker_loses_nothing(client, tmp_path) -> None:
    sweep = small_sweep(sigma=[0.1, 0.15, 0.2, 0.25, 0.3], seed={"count": 2})
    killed: list[int] = []

    def kill_one(progress) -> None:
        if not killed:
            pids = client.run(os.getpid)
            pid = sorted(pids.values())[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    ds = run_sweep(sweep, tmp_path / "k.zarr", client=client, on_progress=kill_one)
    assert killed
    assert (ds.status.values == DONE).all()
    assert_matches_serial(ds, sweep)
    client.wait_for_workers(2, timeout=60)


def test_an_interrupted_sweep_resumes_with_only_the_missing_members(client, tmp_path) -> None:
    sweep = small_sweep()
    path = tmp_path / "r.zarr"

    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, path, client=client, on_progress=interrupt_after(3), max_in_flight=2)
    settle(client)  # a member already running when the run stopped still commits
    done_before = int((SweepStore(path).status() == DONE).sum())
    assert 3 <= done_before < len(sweep)

    seen = {}
    resumed = run_sweep(sweep, path, client=client, on_start=lambda c, p: seen.update(skipped=p.skipped))
    assert seen["skipped"] == done_before
    whole = run_sweep(sweep, tmp_path / "whole.zarr", client=client)
    for name in ("u", "m", "residual", "status", "iterations", "converged"):
        np.testing.assert_array_equal(resumed[name].values, whole[name].values)


def test_failing_members_are_recorded_and_the_others_complete(client, tmp_path) -> None:
    def raises_on_a_worker(x):
        from distributed import get_worker

        try:
            get_worker()
        except ValueError:  # validation in the client: fine
            return np.zeros_like(x)
        raise RuntimeError("this potential cannot be evaluated on a worker")

    problem = {**PROBLEM, "nx": 21, "nt": 3}
    axes = {
        "case": {"field": "potential", "values": [{"kind": "zero"}, {"kind": "function", "func": raises_on_a_worker}]},
        "coupling.strength": [0.1, -1e300],
    }
    sweep = Sweep({**problem, "sigma": 0.0, "terminal": {"kind": "quadratic", "strength": 1e250}}, {"fp": "fv"}, axes)
    path = tmp_path / "f.zarr"
    ds = run_sweep(sweep, path, client=client)
    status = ds.status.values
    assert status[0, 0] == DONE or SweepStore(path).member_log(0)["error"].startswith("diverged")
    assert status[0, 1] == FAILED and SweepStore(path).member_log(1)["error"].startswith("diverged")
    assert (status[1] == FAILED).all()
    assert "RuntimeError: this potential cannot be evaluated" in SweepStore(path).member_log(2)["error"]
    summary = SweepStore(path).summary()
    assert summary["failed"] == int((status == FAILED).sum()) and summary["pending"] == 0


def test_a_store_of_another_sweep_is_refused(client, tmp_path) -> None:
    path = tmp_path / "o.zarr"
    run_sweep(small_sweep(sigma=[0.2]), path, client=client)
    with pytest.raises(StoreMismatch, match="different sweep"):
        run_sweep(small_sweep(sigma=[0.3]), path, client=client)
    ds = run_sweep(small_sweep(sigma=[0.3]), path, client=client, overwrite=True)
    assert ds.sigma.values.tolist() == [0.3]


def test_the_embedded_default_starts_and_closes_its_own_cluster(tmp_path) -> None:
    sweep = small_sweep(sigma=[0.2], seed=[1, 2])
    ds = run_sweep(sweep, tmp_path / "d.zarr", n_workers=2)
    assert (ds.status.values == DONE).all()
    assert ds.attrs["run.n_workers"] == 2 and ds.attrs["run.rayon_num_threads"] == ["1"]
    assert open_sweep(tmp_path / "d.zarr").seed.values.tolist() == [1, 2]


def test_rayon_is_sized_to_the_workers_share_of_the_cores() -> None:
    assert worker_env(2, cores=2)["RAYON_NUM_THREADS"] == "1"
    assert worker_env(1, cores=2)["RAYON_NUM_THREADS"] == "2"
    assert worker_env(4, cores=16)["RAYON_NUM_THREADS"] == "4"


def test_an_axis_that_changes_the_grid_pads_members_and_labels_them(client, tmp_path) -> None:
    sweep = Sweep(
        {**PROBLEM, "nx": 21, "nt": 5}, {"fp": "fv", "max_iter": 10}, {"zip": {"res": {"nx": [21, 41], "nt": [5, 9]}}}
    )
    ds = run_sweep(sweep, tmp_path / "g.zarr", client=client)
    assert ds.m.dims == ("res", "t_index", "x_index") and ds.x.dims == ("res", "x_index")
    assert ds.nx.values.tolist() == [21, 41] and ds.nt.values.tolist() == [5, 9]
    coarse = ds.isel(res=0)
    ref = solve(sweep.member(0).problem, fp="fv", max_iter=10)
    np.testing.assert_array_equal(coarse.m.values[:5, :21], ref.m.values)
    np.testing.assert_array_equal(coarse.x.values[:21], ref.x.values)
    assert np.isnan(coarse.m.values[5:]).all() and np.isnan(coarse.x.values[21:]).all()


def test_workers_publish_every_iteration_of_every_member(client, tmp_path) -> None:
    sweep = small_sweep(sigma=[0.15, 0.3], seed={"count": 2})
    events: list[dict] = []
    monitor = SweepMonitor()
    seen_in_flight: list[int] = []

    threads: set[int] = set()

    def on_event(progress, event) -> None:
        events.append(dict(event))
        seen_in_flight.append(len(progress.members))
        threads.add(threading.get_ident())

    ds = run_sweep(sweep, tmp_path / "e.zarr", client=client, on_event=on_event)
    assert {e["index"] for e in events} == set(range(len(sweep)))
    assert all(n >= 1 for n in seen_in_flight)
    assert threads == {threading.get_ident()}  # the caller's thread: a notebook cell updates live
    for member in sweep.members():
        mine = [e for e in events if e["index"] == member.index]
        history = ds.isel(dict(zip((a.name for a in sweep.axes), member.position))).residual.values
        n = int(ds.iterations.values.ravel()[member.index])
        assert [e["iteration"] for e in mine] == list(range(0, n + 1))  # 0: the member started
        assert mine[-1]["residual"] == history[n - 1]
    # the monitor object gets the same stream
    run_sweep(sweep, tmp_path / "e2.zarr", client=client, monitor=monitor)
    assert monitor.progress.done == len(sweep) and monitor.dashboard_link
    assert f"{len(sweep)}/{len(sweep)} members: done {len(sweep)}" in monitor.summary()
    assert monitor.progress.labels[1] == "sigma=0.15, seed=1" and monitor.progress.queued == 0


def test_rayon_is_sized_per_worker_on_a_hand_started_cluster(tmp_path) -> None:
    """Workers started without RAYON_NUM_THREADS (``dask worker`` by hand, dask-jobqueue): the
    run sizes each worker's pool to its share of the node's cores, and records the sizes used."""
    from distributed import Client, LocalCluster

    from mfg_ensemble.ensemble.cluster import usable_cores

    cores = usable_cores()
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        assert set(client.run(lambda: os.environ.get("RAYON_NUM_THREADS")).values()) == {None}
        ds = run_sweep(small_sweep(sigma=[0.2], seed={"count": 2}), tmp_path / "s.zarr", client=client)
        pools = client.run(lambda: __import__("mfg_ensemble").backend_info()["rayon_threads"])
    assert set(pools.values()) == {max(1, cores // 2)}
    assert ds.attrs["run.rayon_threads"] == [max(1, cores // 2)]


def test_oversubscribed_workers_are_warned_about(tmp_path) -> None:
    from distributed import Client, LocalCluster

    from mfg_ensemble.ensemble.cluster import usable_cores

    env = {"RAYON_NUM_THREADS": str(usable_cores())}  # every worker takes every core
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", env=env) as cluster,
        Client(cluster) as client,
        pytest.warns(RuntimeWarning, match="Rayon pools add up to .* threads on .* cores"),
    ):
        run_sweep(small_sweep(sigma=[0.2], seed={"count": 2}), tmp_path / "s.zarr", client=client)


def test_a_cluster_without_workers_is_a_clear_error_not_a_hang(tmp_path) -> None:
    """A LocalCluster whose workers died (a notebook's kernel interrupt kills them): the next
    run waits ``worker_timeout`` for one, then raises NoWorkers, and the store is released."""
    from distributed import Client, LocalCluster

    from mfg_ensemble import NoWorkers
    from mfg_ensemble.ensemble.store import SweepStore

    with (
        LocalCluster(n_workers=0, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
        pytest.raises(NoWorkers, match="has no worker after 1 s"),
    ):
        run_sweep(small_sweep(), tmp_path / "s.zarr", client=client, worker_timeout=1.0)
    assert not SweepStore(tmp_path / "s.zarr").lock_path.exists()


def test_warm_start_chains_members_along_an_axis(client, tmp_path) -> None:
    """``warm_start="coupling"``: each member after the first along the coupling axis starts
        from its predecessor's converged m (a Dask dependency), the seed axis stays parallel; the
        result equals the same chain of warm-started solves run serially, bit for bit, and costs
        fewer evaluations of G than cold starts (61 against 76 measured: cold, the adaptive
        method switches to Newton at λ = 0.8); a neighbour done in an earlier run starts its
    successor from the store. A bad axis name is refused before anything is made."""
    problem = {**PROBLEM, "nx": 61, "nt": 21}
    solver = {"fp": "fv", "max_iter": 100}
    axes = {"coupling": {"field": "coupling.strength", "values": [0.1, 0.4, 0.8]}, "zip": {"res": {"T": [1.0, 1.0]}}}
    sweep = Sweep(problem, solver, axes)
    ds = run_sweep(sweep, tmp_path / "w.zarr", client=client, warm_start="coupling")
    previous, warm, cold = None, 0, 0
    for k, member in enumerate(m for m in sweep.members() if m.position[1] == 0):
        ref = solve(member.problem, member.solver, initial=previous)
        got = ds.isel(coupling=k, res=0)
        np.testing.assert_array_equal(got.m.values, ref.m.values)
        assert int(got.iterations) == ref.attrs["iterations"]
        if previous is not None:
            warm += ref.attrs["evaluations"]
            cold += solve(member.problem, member.solver).attrs["evaluations"]
        previous = ref
    assert warm < cold, (warm, cold)
    # a neighbour done in an earlier run: read from the store (extending 0.1, 0.4 to 0.1, 0.4, 0.8)
    first = {**axes, "coupling": {"field": "coupling.strength", "values": [0.1, 0.4]}}
    run_sweep(Sweep(problem, solver, first), tmp_path / "x.zarr", client=client, warm_start="coupling")
    grown = run_sweep(sweep, tmp_path / "x.zarr", client=client, warm_start="coupling", extend=True)
    np.testing.assert_array_equal(grown.m.values, ds.m.values)
    with pytest.raises(ValueError, match=r"warm_start must name an axis of the sweep \(coupling, res\), got 'sigma'"):
        run_sweep(sweep, tmp_path / "bad.zarr", client=client, warm_start="sigma")
    assert not (tmp_path / "bad.zarr").exists()
    with pytest.raises(ValueError, match="axis 'res' changes the grid"):
        run_sweep(Sweep(problem, solver, {"zip": {"res": {"nx": [41, 61]}}}), tmp_path / "g.zarr", warm_start="res")
    assert not (tmp_path / "g.zarr").exists()


def test_resuming_a_store_of_older_numerics_warns(client, tmp_path) -> None:
    """A store whose done members came from 0.2 (explicit HJB, first-order FV, Picard) is
    resumed with a RuntimeWarning that says the schemes differ; one of this version is not."""
    from conftest import interrupted_sweep

    path = interrupted_sweep(client, tmp_path / "old.zarr")
    sweep = Sweep(PROBLEM, SOLVER, {"sigma": [0.1, 0.2, 0.3], "seed": {"count": 3}})
    SweepStore(path).update_attrs({"version.mfg_ensemble": "0.2.0"})
    with pytest.warns(RuntimeWarning, match=r"computed by mfg_ensemble 0\.2\.0.*0\.3: IMEX fourth-order HJB"):
        run_sweep(sweep, path, client=client)
    fresh = interrupted_sweep(client, tmp_path / "new.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        run_sweep(sweep, fresh, client=client)

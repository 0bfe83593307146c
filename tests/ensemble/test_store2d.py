"""2-D sweeps through the house: the store's (axes…, t, y, x) layout, padding when an axis
changes the grid, the accessor's 2-D moments and exited mass, warm starts, and the report."""

from __future__ import annotations

import numpy as np
import pytest

from mfg_ensemble import Sweep, make_report, run_sweep, solve
from mfg_ensemble.ensemble.store import SweepStore
from mfg_ensemble.schema import DONE

pytestmark = pytest.mark.slow

ROOM = {
    "nx": 13,
    "ny": 11,
    "nt": 6,
    "T": 0.5,
    "sigma": 0.2,
    "potential": {"kind": "constant", "value": 1.0},
    "terminal": {"kind": "constant", "value": 1.0},
    "coupling": {"kind": "linear", "strength": 0.5},
    "m0": {"kind": "gaussian", "mean": [0.4, 0.5], "std": 0.15},
    "obstacles": [{"kind": "rectangle", "x": [0.45, 0.55], "y": [0.3, 0.7]}],
    "exits": [{"side": "right", "lo": 0.3, "hi": 0.7}],
}
SOLVER = {"fp": "fv", "tol": 1e-7, "max_iter": 60}


def test_a_room_sweep_is_stored_over_axes_t_y_x_and_analysed(client, tmp_path) -> None:
    sweep = Sweep(ROOM, SOLVER, {"sigma": [0.1, 0.3]})
    ds = run_sweep(sweep, tmp_path / "room.zarr", client=client)
    assert ds.m.dims == ("sigma", "t", "y", "x") and ds.exited.dims == ("sigma", "t")
    assert dict(ds.sizes) == {"sigma": 2, "t": 6, "y": 11, "x": 13, "iteration": 60}
    assert (ds.converged.values == 1).all(), ds.iterations.values
    np.testing.assert_array_equal(ds.nodes.values, sweep.base_problem.nodes())
    assert ds.nodes.attrs["flag_meanings"] == "free obstacle exit" and ds.y.attrs["axis"] == "Y"
    assert "(t, y, x)" in ds.m.attrs["long_name"]
    for member in sweep.members():
        ref = solve(member.problem, **member.solver.__dict__)
        got = ds.isel(sigma=member.position[0])
        assert int(got.status) == DONE
        np.testing.assert_array_equal(got.m.values, ref.m.values)
        np.testing.assert_array_equal(got.u.values, ref.u.values)
        np.testing.assert_array_equal(got.exited.values, ref.exited.values)
    assert SweepStore(tmp_path / "room.zarr").verify() == {"damaged": [], "unverifiable": []}
    # the accessor: what is in the room plus what has left is the initial mass
    mass, exited = ds.mfg.mass().compute(), ds.mfg.exited().compute()
    np.testing.assert_allclose(mass + exited, 1.0, atol=1e-12)
    assert (exited.isel(t=-1) > 0.01).all() and (exited.diff("t") >= -1e-15).all()
    mean_y, cov = ds.mfg.mean_position(along="y").compute(), ds.mfg.covariance().compute()
    assert mean_y.dims == ("sigma", "t") and set(cov) == {"cov_xx", "cov_xy", "cov_yy"}
    assert float(cov.cov_xx.isel(sigma=0, t=0)) == pytest.approx(float(ds.mfg.variance().isel(sigma=0, t=0)))
    files = make_report(tmp_path / "room.zarr", tmp_path / "report")
    names = {f.name for f in files}
    assert {"snapshots.png", "density_animation.gif", "evacuation.png", "convergence.png"} <= names
    assert all(f.stat().st_size > 1000 for f in files)


def test_an_axis_that_changes_the_room_grid_pads_each_member(client, tmp_path) -> None:
    sweep = Sweep(ROOM, SOLVER, {"zip": {"res": {"nx": [13, 17], "ny": [11, 15]}}})
    ds = run_sweep(sweep, tmp_path / "pad.zarr", client=client)
    assert ds.m.dims == ("res", "t_index", "y_index", "x_index")
    assert ds.nodes.dims == ("res", "y_index", "x_index")
    small = ds.isel(res=0)
    assert np.isnan(small.m.values[:, 11:, :]).all() and np.isnan(small.x.values[13:]).all()
    assert (small.nodes.values[11:, :] == -1).all()
    np.testing.assert_array_equal(small.nodes.values[:11, :13], sweep.member(0).problem.nodes())
    np.testing.assert_allclose((ds.mfg.mass() + ds.mfg.exited()).compute(), 1.0, atol=1e-12)
    assert SweepStore(tmp_path / "pad.zarr").verify()["damaged"] == []


def test_a_room_sweep_warm_starts_along_an_axis(client, tmp_path) -> None:
    sweep = Sweep(ROOM, SOLVER, {"congestion": {"field": "coupling.strength", "values": [0.2, 0.4, 0.6]}})
    cold = run_sweep(sweep, tmp_path / "cold.zarr", client=client)
    warm = run_sweep(sweep, tmp_path / "warm.zarr", client=client, warm_start="congestion")
    assert (warm.converged.values == 1).all()
    assert int(warm.iterations.sum()) < int(cold.iterations.sum())
    np.testing.assert_allclose(warm.m.values, cold.m.values, atol=1e-5)


def test_an_axis_can_vary_the_doors_and_obstacles_of_the_room(client, tmp_path) -> None:
    """Geometry along axes: one exit's width ("exits.0.hi") zipped with the obstacle itself
    ("obstacles.0", a whole entry). The store keeps each member's map of node kinds (the
    padded layout, here without padding), its members equal the serial solves, mass plus
    exited is one, and the report draws each member's own room."""
    pillar = {"kind": "disc", "center": [0.5, 0.5], "radius": 0.15}
    axes = {"zip": {"room": {"exits.0.hi": [0.5, 0.7], "obstacles.0": [ROOM["obstacles"][0], pillar]}}}
    sweep = Sweep(ROOM, SOLVER, axes)
    assert sweep.varies_grid()
    ds = run_sweep(sweep, tmp_path / "rooms.zarr", client=client)
    assert ds.nodes.dims == ("room", "y_index", "x_index")
    assert (ds.converged.values == 1).all(), ds.iterations.values
    for member in sweep.members():
        problem = member.problem
        got = ds.isel(room=member.position[0])
        np.testing.assert_array_equal(got.nodes.values, problem.nodes())
        ref = solve(problem, **member.solver.__dict__)
        np.testing.assert_array_equal(got.m.values, ref.m.values)
        np.testing.assert_array_equal(got.exited.values, ref.exited.values)
    assert sweep.member(1).problem.exits[0].hi == 0.7 and sweep.member(1).problem.obstacles[0].kind == "disc"
    assert not np.array_equal(ds.nodes.values[0], ds.nodes.values[1])
    np.testing.assert_allclose((ds.mfg.mass() + ds.mfg.exited()).compute(), 1.0, atol=1e-12)
    assert SweepStore(tmp_path / "rooms.zarr").verify()["damaged"] == []
    files = make_report(tmp_path / "rooms.zarr", tmp_path / "report")
    assert "snapshots.png" in {f.name for f in files}
    with pytest.raises(ValueError, match="changes the grid"):
        run_sweep(sweep, tmp_path / "warm.zarr", client=client, warm_start="room")

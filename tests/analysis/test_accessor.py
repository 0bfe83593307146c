"""The ``ds.mfg`` accessor against NumPy on the raw arrays: mass, moments, final time and
seed statistics, lazy on the store, members not done left out — on finished, partial,
periodic and grid-varying stores, and on one solve's dataset."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import mfg_ensemble  # noqa: F401  (registers ds.mfg)
from mfg_ensemble import Problem, Sweep, open_sweep, run_sweep, solve
from mfg_ensemble.schema import DONE, FAILED

from conftest import PROBLEM, SOLVER, interrupted_sweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(client, tmp_path_factory):
    """sigma × coupling × seed, every member done."""
    axes = {
        "sigma": [0.1, 0.3],
        "coupling": {"field": "coupling.strength", "values": [0.05, 0.2]},
        "seed": {"count": 3},
    }
    path = tmp_path_factory.mktemp("acc") / "finished.zarr"
    run_sweep(Sweep(PROBLEM, SOLVER, axes), path, client=client)
    return path


@pytest.fixture(scope="module")
def partial(client, tmp_path_factory):
    """sigma × seed, interrupted after 2 members."""
    return interrupted_sweep(client, tmp_path_factory.mktemp("acc") / "partial.zarr")


def trapezoid(x: np.ndarray) -> np.ndarray:
    w = np.full(x.size, x[1] - x[0])
    w[0] = w[-1] = 0.5 * (x[1] - x[0])
    return w


def masked(ds: xr.Dataset, name: str, members: str = "converged") -> np.ndarray:
    """The raw array with members not analysed set to NaN (NumPy only): members not done, and
    with ``members="converged"`` (the accessor's default) those that did not converge."""
    values = np.asarray(ds[name].values, dtype=float)
    done = np.asarray(ds.status.values) == DONE
    if members == "converged":
        done &= np.asarray(ds.converged.values) == 1
    return np.where(done.reshape(done.shape + (1,) * (values.ndim - done.ndim)), values, np.nan)


def test_moments_equal_numpy_on_the_raw_arrays_and_stay_lazy(finished) -> None:
    ds = open_sweep(finished)
    results = {name: getattr(ds.mfg, name)() for name in ("mass", "mean_position", "variance", "done")}
    results["final"] = ds.mfg.final().m
    results["seed_stats"] = ds.mfg.seed_stats().m_mean
    for name, result in results.items():
        assert isinstance(result.data, da.Array), f"{name} is not lazy"

    m, x = masked(ds, "m"), ds.x.values
    assert np.isfinite(m).any(), "no member converged: the comparison below would be empty"
    w = trapezoid(x)
    mass = m @ w
    mean = (m * x) @ w / mass
    var = (m * (x - mean[..., None]) ** 2) @ w / mass
    np.testing.assert_allclose(results["mass"].values, mass, rtol=0, atol=1e-13)
    np.testing.assert_allclose(results["mass"].values[np.isfinite(mass)], 1.0, rtol=0, atol=1e-10)
    np.testing.assert_allclose(results["mean_position"].values, mean, rtol=1e-12)
    np.testing.assert_allclose(results["variance"].values, var, rtol=1e-10)
    np.testing.assert_allclose(ds.mfg.std_position().values, np.sqrt(var), rtol=1e-10)
    assert results["mass"].dims == ("sigma", "coupling", "seed", "t")
    assert results["mean_position"].attrs["units"] == "1"  # CF: dimensionless, parsable by UDUNITS
    assert 0.0 < np.nanmin(mean) and np.nanmax(mean) < 1.0
    np.testing.assert_array_equal(results["final"].values, m[..., -1, :])
    np.testing.assert_array_equal(ds.mfg.final().u.values, masked(ds, "u")[..., -1, :])
    every = ds.m.values  # members="all": every done member (all are done here), converged or not
    np.testing.assert_allclose(ds.mfg.mass(members="all").values, every @ w, rtol=0, atol=1e-13)
    np.testing.assert_array_equal(ds.mfg.final(members="all").m.values, every[..., -1, :])


def test_converged_only_is_the_default_and_says_so(finished) -> None:
    """Members that stopped at max_iter are done but left out of the default analysis."""
    ds = open_sweep(finished)
    converged = ds.converged.values == 1
    assert (ds.status.values == DONE).all() and not converged.all() and converged.any()
    np.testing.assert_array_equal(ds.mfg.done().values, converged)
    np.testing.assert_array_equal(ds.mfg.done("all").values, np.ones_like(converged))
    stats, every = ds.mfg.seed_stats("iterations"), ds.mfg.seed_stats("iterations", members="all")
    np.testing.assert_array_equal(stats.n_done.values, converged.sum(axis=-1))
    assert (every.n_done.values == 3).all()
    assert stats.attrs["members"] == "converged" and stats.n_done.attrs["long_name"] == "converged members"
    assert int(ds.mfg.counts()["converged"]) == converged.sum()
    with pytest.raises(ValueError, match="members must be one of 'converged', 'all'"):
        ds.mfg.done("some")


def test_seed_stats_equal_nanmean_and_nanstd(finished) -> None:
    ds = open_sweep(finished)
    stats = ds.mfg.seed_stats(["m", "iterations"], members="all")
    assert isinstance(stats.m_std.data, da.Array)
    axis = ds.m.dims.index("seed")
    m = masked(ds, "m", "all")
    np.testing.assert_allclose(stats.m_mean.values, np.nanmean(m, axis=axis), rtol=1e-13)
    np.testing.assert_allclose(stats.m_std.values, np.nanstd(m, axis=axis, ddof=1), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(stats.m_sem.values, np.nanstd(m, axis=axis, ddof=1) / np.sqrt(3), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(stats.iterations_mean.values, np.nanmean(masked(ds, "iterations", "all"), axis=-1))
    assert (stats.n_done.values == 3).all() and stats.m_mean.dims == ("sigma", "coupling", "t", "x")
    assert stats.m_mean.attrs["units"] == ds.m.attrs["units"]
    # a derived quantity: the seed statistics of the mean position
    pos = ds.mfg.seed_stats(ds.mfg.mean_position(members="all"), ddof=0, members="all")
    raw = np.asarray(ds.mfg.mean_position(members="all").values)
    np.testing.assert_allclose(pos.mean_position_std.values, np.nanstd(raw, axis=2), rtol=1e-10, atol=1e-15)


def test_members_not_done_are_left_out(partial) -> None:
    ds = open_sweep(partial)
    status = ds.status.values
    assert 2 <= (status == DONE).sum() < status.size
    # a failed member that wrote data (a diverged solve keeps its history) is left out too
    done_first = tuple(np.argwhere(status == DONE)[0])
    fake = status.copy()
    fake[done_first] = FAILED
    ds = ds.assign(status=(ds.status.dims, da.from_array(fake, chunks=1)))
    done = fake == DONE

    mass = ds.mfg.mass(members="all").values
    assert np.isnan(mass[~done]).all()
    np.testing.assert_allclose(mass[done], 1.0, rtol=0, atol=1e-10)
    assert np.isnan(ds.mfg.mean_position(members="all").values[~done]).all()
    assert np.isnan(ds.mfg.final("all").m.values[~done]).all()
    stats = ds.mfg.seed_stats(members="all")
    np.testing.assert_array_equal(stats.n_done.values, done.sum(axis=1))
    m = masked(ds, "m", "all")
    with warnings.catch_warnings():  # points with no done member: "mean of empty slice"
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanmean(m, axis=1)
    np.testing.assert_allclose(stats.m_mean.values, expected, rtol=1e-13)
    assert np.isnan(stats.m_mean.values[done.sum(axis=1) == 0]).all()
    assert int(ds.mfg.counts().done) == done.sum()
    where = ds.mfg.where_done("all")
    assert np.isnan(where.m.values[~done]).all() and np.isfinite(where.m.values[done]).all()


def test_periodic_and_grid_varying_stores(client, tmp_path) -> None:
    periodic = run_sweep(
        Sweep({**PROBLEM, "bc": "periodic"}, {"fp": "fv", "max_iter": 10}, {"sigma": [0.1, 0.3]}),
        tmp_path / "p.zarr",
        client=client,
    )
    w = periodic.mfg.weights().values
    np.testing.assert_allclose(w, 1 / 41, rtol=1e-12)  # dx at every node: hi is lo
    np.testing.assert_allclose(periodic.mfg.mass(members="all").values, 1.0, rtol=0, atol=1e-10)

    sweep = Sweep(
        {**PROBLEM, "nx": 21, "nt": 5},
        {"fp": "fv", "max_iter": 10},
        {"zip": {"res": {"nx": [21, 41], "nt": [5, 9]}}, "bc": ["reflect", "periodic"]},
    )
    ds = run_sweep(sweep, tmp_path / "g.zarr", client=client)
    assert ds.m.dims == ("res", "bc", "t_index", "x_index")
    mass, mean, final = ds.mfg.mass(members="all"), ds.mfg.mean_position(members="all"), ds.mfg.final("all")
    assert isinstance(mass.data, da.Array) and isinstance(final.m.data, da.Array)
    for member in sweep.members():
        at = dict(zip(("res", "bc"), member.position))
        p = member.problem
        ref = solve(p, fp="fv", max_iter=10)
        got_mass = mass.isel(at).values
        np.testing.assert_allclose(got_mass[: p.nt], 1.0, rtol=0, atol=1e-10)
        assert np.isnan(got_mass[p.nt :]).all()
        w = p.quadrature_weights()
        expected = ref.m.values @ (p.grid() * w) / (ref.m.values @ w)
        np.testing.assert_allclose(mean.isel(at).values[: p.nt], expected, rtol=1e-12)
        np.testing.assert_array_equal(final.m.isel(at).values[: p.nx], ref.m.values[-1])
        assert float(final.t.isel(at)) == p.T


def test_one_solve_and_no_seed_axis() -> None:
    p = Problem.model_validate({**PROBLEM, "nx": 31, "nt": 6})
    result = solve(p, fp="fv", max_iter=5)  # not converged: analysed with members="all"
    assert not result.attrs["converged"] and np.isnan(result.mfg.mass().values).all()
    np.testing.assert_allclose(result.mfg.mass(members="all").values, 1.0, rtol=0, atol=1e-10)
    np.testing.assert_allclose(result.mfg.weights().values, p.quadrature_weights(), rtol=1e-12)
    assert result.mfg.axes == [] and result.mfg.seed_dim is None
    with pytest.raises(ValueError, match="no seed axis"):
        result.mfg.seed_stats()


def test_open_sweep_chunks_for_analysis(finished) -> None:
    """Whole axes per dask chunk (a store of small members fits one), not one member per chunk
    as written: the same numbers, far fewer tasks. ``chunks=`` still chooses."""
    ds = open_sweep(finished)
    assert ds.m.data.chunksize[:3] == (2, 2, 3) and ds.m.data.npartitions == 1
    assert open_sweep(finished, chunks={}).m.data.npartitions == 12
    xr.testing.assert_identical(
        ds.mfg.mean_position().compute(), open_sweep(finished, chunks={}).mfg.mean_position().compute()
    )


def test_a_store_exports_to_netcdf(finished, tmp_path) -> None:
    """``to_netcdf`` (h5netcdf, i.e. netCDF4/HDF5) writes the whole store, labels and units
    included, and reads back the same values."""
    ds = open_sweep(finished)
    ds.to_netcdf(tmp_path / "sweep.nc", engine="h5netcdf")
    back = xr.open_dataset(tmp_path / "sweep.nc", engine="h5netcdf")
    for name in ("u", "m", "status", "iterations", "residual"):
        np.testing.assert_array_equal(back[name].values, ds[name].values)
        assert back[name].attrs["units"] == ds[name].attrs["units"]
    assert back.attrs["mfg_ensemble.fingerprint"] == ds.attrs["mfg_ensemble.fingerprint"]
    np.testing.assert_allclose(back.mfg.mass().values, ds.mfg.mass().values)


def test_seed_quantile_bands(finished) -> None:
    ds = open_sweep(finished)
    stats = ds.mfg.seed_stats(ds.mfg.mean_position(), quantiles=(0.0, 0.5, 1.0)).compute()
    q = stats["mean_position_quantile"]
    assert q.dims[0] == "quantile" and q["quantile"].values.tolist() == [0.0, 0.5, 1.0]
    position = ds.mfg.mean_position().where(ds.mfg.done()).values
    np.testing.assert_allclose(q.sel(quantile=0.0), np.nanmin(position, axis=2))
    np.testing.assert_allclose(q.sel(quantile=1.0), np.nanmax(position, axis=2))
    np.testing.assert_allclose(q.sel(quantile=0.5), np.nanmedian(position, axis=2))
    assert "quantile" not in ds.mfg.seed_stats("m").dims


def test_cf_attributes(finished) -> None:
    """CF-1.10: Conventions and history on the store, axis on t and x, units UDUNITS parses
    ("1" for the nondimensional model, "s" for wall time), also on derived quantities."""
    ds = open_sweep(finished)
    assert ds.attrs["Conventions"] == "CF-1.10"
    assert "Z mfg_ensemble " in ds.attrs["history"] and "created for 12 members" in ds.attrs["history"]
    assert ds.t.attrs["axis"] == "T" and ds.x.attrs["axis"] == "X"
    derived = [ds.mfg.mass(), ds.mfg.variance(), ds.mfg.mean_position(), ds.mfg.seed_stats("m").m_std]
    units = {str(v.attrs["units"]) for v in [*ds.variables.values(), *derived] if "units" in v.attrs}
    assert units <= {"1", "s"}, units
    assert ds.converged.attrs["flag_values"] == [0, 1] and ds.status.attrs["flag_meanings"] == "pending done failed"

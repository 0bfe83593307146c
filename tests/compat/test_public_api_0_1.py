"""Scripts written against mfg_ensemble 0.1 (the flat package) still run unchanged.

``quickstart_sweep_0_1.py`` is a verbatim copy of ``examples/quickstart_sweep.py`` as 0.1
shipped it (``from mfg_ensemble.report import make_report``, ``from mfg_ensemble.runner
import SweepMonitor``); the other tests run the snippets of the 0.1 README. Stores of 0.1
resume only if a sweep's 0.1 fingerprint (blind to the axes' order; the store's axes attr
tells it) is unchanged: the shipped configs' fingerprints are pinned here as 0.1 computed them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import PROBLEM, SOLVER, run_python

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parents[1] / "configs"

FINGERPRINTS_0_1 = {
    "quickstart": "634db8fe5df3655780fcc6fee4c55fce5a3ad413aebb82cda3b45404a8b91e93",
    "crowd_log": "1898bc6211012af1a0b8c3e4700a43311e03b35d0e498e8aafab853f7dbfff10",
    "lq_game": "81579c62bfda2dd5f01cf7980a94afdb60b603a112416e783558c4091414383d",
    "two_exits": "a09cfddbe5b85701fe40f174c50e6d47d8836570df8c0d7083053622536ede3d",
}


@pytest.mark.parametrize("name", sorted(FINGERPRINTS_0_1))
def test_fingerprints_are_those_of_0_1(name: str) -> None:
    from mfg_ensemble import Sweep

    sweep = Sweep.from_file(CONFIGS / f"{name}.toml")
    assert sweep.fingerprint_0_1 == FINGERPRINTS_0_1[name] != sweep.fingerprint


def test_old_module_paths_are_the_new_modules() -> None:
    out = run_python(
        """
        import mfg_ensemble
        import mfg_ensemble.store, mfg_ensemble.sweep, mfg_ensemble.kde
        from mfg_ensemble.report import make_report
        from mfg_ensemble.runner import SweepMonitor, run_sweep
        from mfg_ensemble.store import StoreMismatch, open_sweep
        from mfg_ensemble.sweep import ConfigError, Sweep
        from mfg_ensemble.problem import Problem
        from mfg_ensemble.solver import SolverOptions, solve
        from mfg_ensemble.cluster import local_cluster
        from mfg_ensemble.ensemble import store
        assert mfg_ensemble.store is store and mfg_ensemble.report.make_report is make_report
        assert SweepMonitor is mfg_ensemble.SweepMonitor and ConfigError is mfg_ensemble.ConfigError
        assert mfg_ensemble.kde is mfg_ensemble.kernels.reference.kde
        print("ok")
        """
    )
    assert out.strip() == "ok"


@pytest.mark.slow
def test_the_0_1_quickstart_example_runs_unchanged(tmp_path: Path) -> None:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    script = HERE / "quickstart_sweep_0_1.py"
    proc = subprocess.run(
        [sys.executable, "-P", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "members done: 9 of 9" in proc.stdout, proc.stdout
    assert len(list((tmp_path / "quickstart_small_report").glob("*.png"))) == 7


@pytest.mark.slow
def test_the_0_1_readme_snippets_run(tmp_path: Path, client) -> None:
    import xarray as xr

    import mfg_ensemble
    import mfg_ensemble as mfg
    from mfg_ensemble import kernels

    # "Sweeps": a Sweep from Python, run on a Client, opened with xarray
    sweep = mfg_ensemble.Sweep(problem=PROBLEM, solver=SOLVER, axes={"sigma": [0.2, 0.3], "seed": {"count": 2}})
    assert len(sweep) == 4 and "4 member(s)" in sweep.describe()
    mfg_ensemble.run_sweep(sweep, tmp_path / "quickstart.zarr", client=client)
    ds = xr.open_zarr(tmp_path / "quickstart.zarr")
    assert ds.m.sel(sigma=0.2).mean("seed").dims == ("t", "x")
    assert len(ds.iterations.to_series()) == 4
    # "Analysis"
    ds = mfg.open_sweep(tmp_path / "quickstart.zarr")
    np.testing.assert_allclose(ds.mfg.mass().values, 1.0, rtol=1e-12)
    for value in (ds.mfg.mean_position(), ds.mfg.variance(), ds.mfg.std_position(), ds.mfg.final().m):
        assert np.isfinite(value.values).all()
    assert set(ds.mfg.seed_stats("m")) == {"m_mean", "m_std", "m_sem", "n_done"}
    ds.mfg.seed_stats(ds.mfg.mean_position()).sel(sigma=0.2).compute()
    ds.mfg.done(), ds.mfg.where_done(), ds.mfg.counts()
    files = mfg_ensemble.report.make_report(tmp_path / "quickstart.zarr", tmp_path / "figures")
    assert files and all(f.exists() for f in files)
    # "One solve"
    p = mfg.Problem.from_file(CONFIGS / "crowd_log.toml").replace(nx=41, nt=11)
    ds = mfg.solve(p, fp="fv", max_iter=5)
    ds.m, ds.u, ds.residual, ds.attrs["converged"]
    ds = mfg.solve(p, fp="particles", n_particles=1000, seed=0, max_iter=2)
    # "Using the kernels"
    assert kernels.backend_info()["backend"] in ("rust", "numpy")
    x = np.linspace(0, 1, 201)
    d_minus, d_plus = kernels.weno5_derivatives(np.sin(2 * np.pi * x), x[1] - x[0], bc="reflect")
    p = kernels.evolve_particles(np.full(10_000, 0.5), 0.0, 1e-3, 0.3, lo=0, hi=1, seed=1, step=0)
    m = kernels.kde(p, x, "scott", method="binned")
    assert abs(kernels.quadrature_weights(x.size, x[1] - x[0], "reflect") @ m - 1.0) < 1e-12

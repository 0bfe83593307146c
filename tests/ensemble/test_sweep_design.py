"""Design axes: QMC points (Latin hypercube, Sobol, Halton) over bounds, and CSV designs.

A design axis sets several fields together, like a zip axis; its points are scipy's with the
given seed, scaled into the bounds (log-uniform for ``log`` fields, rounded for integer
bounds), or the rows of a CSV file. Bad designs are ConfigErrors naming the field.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import qmc

from mfg_ensemble import ConfigError, Sweep, run_sweep

from conftest import cli

BASE = """
[problem]
nx = 21
nt = 6
sigma = 0.2
coupling = { kind = "log", strength = 0.1 }
m0 = { kind = "gaussian", mean = 0.3, std = 0.1 }

[solver]
fp = "fv"
max_iter = 5
"""
DESIGN = """
[sweep.design.plane]
method = "{method}"
n = {n}
seed = 3
bounds = {{ sigma = [0.05, 0.5], "coupling.strength" = [0.01, 5.0], nx = [21, 41] }}
log = ["coupling.strength"]
"""


def design(tmp_path: Path, method: str = "sobol", n: int = 8, extra: str = "") -> Sweep:
    path = tmp_path / f"{method}_{n}.toml"
    path.write_text(BASE + DESIGN.format(method=method, n=n) + extra)
    return Sweep.from_file(path)


@pytest.mark.parametrize("method", ["lhs", "sobol", "halton"])
def test_points_are_scipys_scaled_into_the_bounds(tmp_path, method: str) -> None:
    sweep = design(tmp_path, method)
    (axis,) = sweep.axes
    assert axis.name == "plane" and axis.fields == ("sigma", "coupling.strength", "nx") and len(sweep) == 8
    engine = {"lhs": qmc.LatinHypercube, "sobol": qmc.Sobol, "halton": qmc.Halton}[method]
    unit = engine(d=3, rng=np.random.default_rng(3)).random(8)
    values = np.array(axis.values, dtype=float)
    np.testing.assert_allclose(values[:, 0], 0.05 + unit[:, 0] * 0.45, rtol=1e-15)
    np.testing.assert_allclose(np.log(values[:, 1]), np.log(0.01) + unit[:, 1] * np.log(500.0), rtol=1e-14)
    np.testing.assert_array_equal(values[:, 2], np.rint(21 + unit[:, 2] * 20))
    assert all(isinstance(v[2], int) for v in axis.values)  # integer bounds: integer nx
    members = list(sweep.members())
    assert [m.problem.sigma for m in members] == [v[0] for v in axis.values]
    assert [m.problem.coupling.strength for m in members] == [v[1] for v in axis.values]
    assert design(tmp_path, method).fingerprint == sweep.fingerprint  # the same points every time


def test_sobol_and_halton_extend_latin_hypercubes_do_not(tmp_path) -> None:
    """The first 4 points of an 8-point Sobol or Halton design are the 4-point design, so a
    store of 4 extends to 8 (``Sweep.prefix``); a Latin hypercube of 8 is another design."""
    for method in ("sobol", "halton"):
        big, small = design(tmp_path, method, 8), design(tmp_path, method, 4)
        assert big.prefix((4,)).fingerprint == small.fingerprint
        assert big.axes[0].values[:4] == small.axes[0].values
    assert design(tmp_path, "lhs", 8).prefix((4,)).fingerprint != design(tmp_path, "lhs", 4).fingerprint


def test_csv_design_and_its_fingerprint(tmp_path) -> None:
    (tmp_path / "points.csv").write_text("sigma, coupling.strength\n0.1,0.5\n\n0.3,2\n")
    path = tmp_path / "csv.toml"
    path.write_text(BASE + '[sweep.design.measured]\nfile = "points.csv"\n[sweep]\nseed = { count = 2 }\n')
    sweep = Sweep.from_file(path)
    assert [a.name for a in sweep.axes] == ["measured", "seed"] and sweep.shape == (2, 2)
    assert sweep.axes[0].values == ((0.1, 0.5), (0.3, 2))
    assert sweep.prefix((1, 2)).axes[0].values == ((0.1, 0.5),)
    first = sweep.fingerprint
    (tmp_path / "points.csv").write_text("sigma,coupling.strength\n0.1,0.5\n0.3,2.5\n")
    assert Sweep.from_file(path).fingerprint != first  # the points count, not the file's name


def test_a_design_sweep_runs_and_labels_the_points(client, tmp_path) -> None:
    sweep = design(tmp_path, "halton", 3)
    ds = run_sweep(sweep, tmp_path / "d.zarr", client=client)
    assert ds.m.dims[0] == "plane" and ds.sizes["plane"] == 3
    np.testing.assert_array_equal(ds["sigma"].values, [v[0] for v in sweep.axes[0].values])
    assert (ds.status.values == 1).all()


@pytest.mark.parametrize(
    ("table", "field", "message"),
    [
        ('method = "random"\nn = 4\nbounds = { sigma = [0.1, 0.2] }', "sweep.design.d.method", "lhs"),
        ('method = "lhs"\nbounds = { sigma = [0.1, 0.2] }', "sweep.design.d", "needs method"),
        ('method = "lhs"\nn = 4\nbounds = { sigma = [0.2, 0.1] }', "sweep.design.d.bounds.sigma", "lo < hi"),
        ('method = "lhs"\nn = 4\nbounds = { sigma = [0.1, 0.2] }\nlog = ["nx"]', "sweep.design.d.log", "no bounds"),
        (
            'method = "lhs"\nn = 4\nbounds = { "coupling.strength" = [0, 1] }\nlog = ["coupling.strength"]',
            "sweep.design.d.bounds.coupling.strength",
            "lo > 0",
        ),
        ('method = "lhs"\nn = 4\nbounds = { sigmaa = [0.1, 0.2] }', "sweep.d", "unknown field 'sigmaa'"),
        ('file = "missing.csv"', "sweep.design.d.file", "cannot read"),
        ('file = "bad.csv"', "sweep.design.d.file", "line 3: 1 values for 2 fields"),
        ('file = "bad.csv"\nmethod = "lhs"', "sweep.design.d", "not both"),
    ],
)
def test_bad_designs_name_the_field(tmp_path, table: str, field: str, message: str) -> None:
    (tmp_path / "bad.csv").write_text("sigma,nx\n0.1,21\n0.2\n")
    path = tmp_path / "bad.toml"
    path.write_text(BASE + "[sweep.design.d]\n" + table + "\n")
    with pytest.raises(ConfigError) as info:
        Sweep.from_file(path)
    text = str(info.value)
    assert str(path) in text and field in text and message in text, text
    result = cli("validate", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr and message in result.stderr

"""``make_report`` and ``mfg-ensemble report``: the expected, valid, non-empty PNG files on a
finished, a partial (interrupted), a one-axis and a grid-varying store; one member; errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mfg_ensemble import Sweep, open_sweep, run_sweep
from mfg_ensemble.analysis.report import _open, make_report
from mfg_ensemble.cli import main
from mfg_ensemble.ensemble.store import SweepStore
from mfg_ensemble.schema import DONE, PENDING

from conftest import PROBLEM, SOLVER, interrupted_sweep

pytestmark = pytest.mark.slow

PNG = b"\x89PNG\r\n\x1a\n"
SWEEP_WIDE = ["final_density_{}.png", "value_slices.png", "convergence.png", "summary.png"]


def assert_png(path: Path) -> None:
    """A non-empty, valid PNG that matplotlib reads back as a real picture (not one colour)."""
    from matplotlib.image import imread

    assert path.is_file() and path.stat().st_size > 2000, path
    assert path.read_bytes()[:8] == PNG, path
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300 and image.shape[2] in (3, 4), path
    assert float(image[..., :3].std()) > 0.01, f"{path} is blank"


def expected(densities: list[str], axes: list[str]) -> set[str]:
    return {f"density_{d}.png" for d in densities} | {f"final_density_{a}.png" for a in axes} | set(SWEEP_WIDE[1:])


@pytest.fixture(scope="module")
def finished(client, tmp_path_factory) -> Path:
    axes = {
        "sigma": [0.1, 0.3],
        "coupling": {"field": "coupling.strength", "values": [0.05, 0.2]},
        "seed": {"count": 2},
    }
    path = tmp_path_factory.mktemp("rep") / "finished.zarr"
    run_sweep(Sweep(PROBLEM, SOLVER, axes), path, client=client)
    return path


@pytest.fixture(scope="module")
def partial(client, tmp_path_factory) -> Path:
    return interrupted_sweep(client, tmp_path_factory.mktemp("rep") / "partial.zarr")


def test_report_of_a_finished_store(finished, tmp_path) -> None:
    files = make_report(finished, tmp_path / "out")
    names = {f.name for f in files}
    points = [f"sigma={s}_coupling={c}" for s in ("0.1", "0.3") for c in ("0.05", "0.2")]
    assert names == expected(points, ["sigma", "coupling"])
    assert len(files) == len(names) and all(f.parent == tmp_path / "out" for f in files)
    for f in files:
        assert_png(f)
    converged = int(open_sweep(finished).converged.sum())
    assert 0 < converged < 8  # max_iter = 30: some members stop before the tolerance
    assert _open(finished).headline() == f"8 of 8 members done, {converged} converged"


def test_report_with_quantile_bands_and_every_member(finished, tmp_path) -> None:
    """``band="quantiles"``: median and 5–95 % band; ``members="all"`` uses the members that
    did not converge too, and the titles say which."""
    files = make_report(finished, tmp_path / "q", band="quantiles", members="all")
    assert {f.name for f in files} == {f.name for f in make_report(finished, tmp_path / "s")}
    for f in files:
        assert_png(f)
    assert _open(finished, "all").used.sum() == 8
    with pytest.raises(ValueError, match="band"):
        make_report(finished, tmp_path / "bad", band="minmax")


def test_report_of_a_partial_store_shows_the_missing_members(partial, tmp_path) -> None:
    summary = SweepStore(partial).summary()
    assert 2 <= summary["done"] < summary["members"] == 9
    files = make_report(partial, tmp_path / "out")
    assert {f.name for f in files} == expected(["sigma=0.1", "sigma=0.2", "sigma=0.3"], ["sigma"])
    for f in files:
        assert_png(f)
    converged = int(open_sweep(partial).converged.sum())
    also = f", {converged} converged" if converged != summary["done"] else ""  # said when they differ
    assert _open(partial).headline() == f"{summary['done']} of 9 members done{also}, {summary['pending']} pending"
    # one member: a done one and a pending one (drawn as missing)
    status = SweepStore(partial).status().ravel()
    for index in (int(np.flatnonzero(status == DONE)[0]), int(np.flatnonzero(status == PENDING)[-1])):
        files = make_report(partial, tmp_path / f"member{index}", member=index)
        assert files[0].name == f"density_member{index}.png"
        for f in files:
            assert_png(f)


def test_report_of_one_axis_and_grid_varying_stores(client, tmp_path) -> None:
    one = tmp_path / "one.zarr"
    run_sweep(Sweep(PROBLEM, {**SOLVER, "max_iter": 8}, {"sigma": [0.1, 0.3]}), one, client=client)
    files = make_report(one, tmp_path / "one")
    assert {f.name for f in files} == expected(["sigma=0.1", "sigma=0.3"], ["sigma"])
    grid = tmp_path / "grid.zarr"
    sweep = Sweep(
        {**PROBLEM, "nx": 21, "nt": 5},
        {"fp": "fv", "max_iter": 10},
        {"zip": {"res": {"nx": [21, 41], "nt": [5, 9]}}, "seed": {"count": 2}},
    )
    run_sweep(sweep, grid, client=client)
    files += make_report(grid, tmp_path / "grid")
    assert {f.name for f in files[-6:]} == expected(["res=0", "res=1"], ["res"])
    for f in files:
        assert_png(f)


def test_the_report_command(partial, tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(main, ["report", str(partial), "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = sorted(out.iterdir())
    assert {p.name for p in written} == expected(["sigma=0.1", "sigma=0.2", "sigma=0.3"], ["sigma"])
    for p in written:
        assert str(p) in result.output
        assert_png(p)
    assert "7 figures in" in result.output and "of 9 members done" in result.output

    # default folder: next to the store
    result = runner.invoke(main, ["report", str(partial), "--member", "0"])
    assert result.exit_code == 0, result.output
    assert (partial.parent / "partial_report" / "density_member0.png").is_file()

    for bad, message in [
        (tmp_path / "nothing.zarr", "is not an mfg_ensemble store"),
        (tmp_path, "is not an mfg_ensemble store"),
    ]:
        result = runner.invoke(main, ["report", str(bad)])
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    result = runner.invoke(main, ["report", str(partial), "--member", "9", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "member 9 is out of range" in result.output
    assert not (tmp_path / "x").exists()

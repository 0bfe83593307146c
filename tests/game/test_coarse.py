"""The coarse start (start = "coarse", mfg_ensemble/game/coarse.py): the coarse grid and
problem, the prolongation, and what a solve records and gains from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mfg_ensemble import Problem, solve
from mfg_ensemble.game.coarse import COARSENING, MIN_COARSE_NODES, coarse_nodes, coarse_problem, prolong

ROOT = Path(__file__).resolve().parents[2]
CROWD = Problem.from_file(ROOT / "configs" / "crowd_log.toml")


@pytest.mark.parametrize("bc,nx,coarse", [("reflect", 201, 51), ("reflect", 202, 52), ("periodic", 200, 50)])
def test_the_coarse_grid_spans_the_domain_with_four_times_the_spacing(bc: str, nx: int, coarse: int) -> None:
    fine = CROWD.replace(nx=nx, bc=bc)
    assert coarse_nodes(fine) == coarse
    small = coarse_problem(fine)
    assert small is not None and small.nx == coarse
    assert small.dx == pytest.approx(COARSENING * fine.dx, rel=0.03)
    assert (small.lo, small.hi, small.T, small.nt, small.sigma) == (fine.lo, fine.hi, fine.T, fine.nt, fine.sigma)
    smallest = 4 * (MIN_COARSE_NODES - 1) + 1
    assert coarse_nodes(CROWD.replace(nx=smallest)) == MIN_COARSE_NODES
    assert coarse_problem(CROWD.replace(nx=smallest - 4)) is None


def test_node_values_are_interpolated_onto_the_coarse_grid() -> None:
    """Families given node by node ("values") are interpolated; named ones are evaluated."""
    x = CROWD.grid()
    fine = CROWD.replace(potential=np.sin(3 * x), terminal=x**2, m0=1.0 + x)
    small = coarse_problem(fine)
    assert small is not None
    xc = small.grid()
    np.testing.assert_allclose(small.potential_values(), np.sin(3 * xc), atol=(4 * fine.dx) ** 2)
    np.testing.assert_allclose(small.terminal_values(), xc**2, atol=(4 * fine.dx) ** 2)
    np.testing.assert_allclose(small.initial_density(), (1 + xc) / 1.5, rtol=1e-12)
    assert coarse_problem(CROWD).m0 == CROWD.m0


@pytest.mark.parametrize("bc", ["reflect", "periodic"])
def test_prolongation_keeps_linear_profiles_and_unit_mass(bc: str) -> None:
    fine = CROWD.replace(nx=200 if bc == "periodic" else 201, bc=bc, nt=3)
    coarse = coarse_problem(fine)
    assert coarse is not None
    xc = coarse.grid()
    profile = 1.0 + 0.5 * np.cos(2 * np.pi * (xc - coarse.lo) / (coarse.hi - coarse.lo))
    m = np.stack([profile, profile * 2, np.ones_like(xc)])
    out = prolong(m, coarse, fine)
    assert out.shape == (3, fine.nx)
    np.testing.assert_allclose(out @ fine.quadrature_weights(), 1.0, rtol=1e-14)
    np.testing.assert_allclose(out[2], 1.0 / (fine.hi - fine.lo), rtol=1e-14)
    np.testing.assert_allclose(out[0], out[1], rtol=1e-14)


def test_the_coarse_start_saves_fine_iterations_for_the_same_answer() -> None:
    """crowd_log with finite volumes: from m0, 15 iterations at nx = 201; from the coarse
    solve (9 iterations at nx = 51, ~1/16 of the cost each), 8 measured. Both stop at tol 1e-6,
    so they agree to about that."""
    cold = solve(CROWD, fp="fv", start="m0")
    warm = solve(CROWD, fp="fv")
    assert cold.attrs["converged"] and warm.attrs["converged"]
    assert cold.attrs["start"] == "m0"
    assert warm.attrs["start"].startswith("coarse (") and "nx = 51" in warm.attrs["start"]
    assert warm.attrs["iterations"] < 0.7 * cold.attrs["iterations"], (
        warm.attrs["iterations"],
        cold.attrs["iterations"],
    )
    scale = float(cold.m.max())
    assert float(abs(warm.m - cold.m).max()) < 1e-5 * scale
    assert warm.attrs["solver.start"] == "coarse"


def test_where_the_coarse_start_does_not_apply_the_solve_starts_from_m0() -> None:
    small = CROWD.replace(nx=61, nt=21)
    assert solve(small, fp="fv").attrs["start"] == "m0"  # a coarse grid of 16 nodes: too few
    given = solve(CROWD.replace(nt=21), fp="fv", initial=np.repeat(CROWD.initial_density()[None], 21, axis=0))
    assert given.attrs["start"] == "initial"
    newton = solve(CROWD.replace(nt=21), fp="fv", method="newton", max_iter=2)
    assert newton.attrs["start"] == "monotone scheme"
    # the coarse solve gets the same max_iter: one iteration does not converge, so m0 it is
    stopped = solve(CROWD.replace(nt=21), fp="fv", max_iter=1)
    assert stopped.attrs["start"] == "m0 (the coarse solve stopped after 1 iterations on nx = 51: max_iter reached)"

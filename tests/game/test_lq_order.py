"""The coupled linear-quadratic game converges at second order in m: the order of the whole
solve (IMEX HJB + MUSCL/SDIRK2 finite volumes + the coupling), measured by grid refinement
against the exact solution.

The game (configs/lq_game.toml): x ∈ [−4, 4], reflecting walls, σ = 0.3, T = 1, V = 0,
coupling (κ/2)(x − mean(m))² with κ = 0.5, terminal (γ/2)x² with γ = 1, m0 = N(0.5, 0.3²).
Then u = ½a x² + b x + c and m(t) = N(μ(t), s(t)²) with a' = a² − κ, a(T) = γ;
b' = a b + κ μ, b(T) = 0; μ' = −(a μ + b), μ(0) = μ0; (s²)' = −2a s² + σ², s²(0) = s0²
(a two-point boundary-value problem, solved here by ``scipy.integrate.solve_bvp`` to 1e-10).

Error measured: max over the output times of the L1 error of m over the interior window
x ∈ [−2, 2] ("away from the walls": the walls at ±4 see a density below 1e-30 of its peak).
Space and time are refined together, nt − 1 ∝ nx − 1 (dt = 0.04, 0.02, 0.01 at
nx = 101, 201, 401): the HJB (ARS(4,4,3), 3rd order in time) and the FV (SDIRK2, 2nd order)
then keep the time error at or below the space error. Coupling tol = 1e-9.

Measured (Rust, release; nx = 101, 201, 401; orders per refinement):

* defaults (hjb_scheme = "imex", fv_scheme = "muscl2", method = "adaptive"):
  L1(m) = 9.08e-3, 2.15e-3, 5.27e-4  (orders 2.08, 2.03); 16, 19, 20 iterations.
* the 0.2 schemes (hjb_scheme = "rk3", fv_scheme = "upwind1", method = "picard"):
  L1(m) = 8.79e-2, 4.66e-2, 2.41e-2  (orders 0.92, 0.95) — first order, 46× the error at
  nx = 401 (the issue's 0.95); 34, 35, 35 iterations.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_bvp

from mfg_ensemble import Problem, solve

KAPPA, GAMMA, SIGMA, MU0, S0, T = 0.5, 1.0, 0.3, 0.5, 0.3, 1.0
LEVELS = [(101, 26), (201, 51), (401, 101)]
WINDOW = (-2.0, 2.0)


def lq_problem(nx: int, nt: int) -> Problem:
    return Problem(
        lo=-4.0,
        hi=4.0,
        T=T,
        nx=nx,
        nt=nt,
        sigma=SIGMA,
        potential={"kind": "zero"},
        coupling={"kind": "mean_quadratic", "strength": KAPPA},
        m0={"kind": "gaussian", "mean": MU0, "std": S0},
        terminal={"kind": "quadratic", "strength": GAMMA, "center": 0.0},
        bc="reflect",
    )


def exact_m(t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """m(t, x) = N(μ(t), s²(t)) from the boundary-value problem of the module docstring."""

    def rhs(_, y):
        a, b, mu, s2 = y
        return np.vstack([a * a - KAPPA, a * b + KAPPA * mu, -(a * mu + b), -2 * a * s2 + SIGMA**2])

    def bc(y0, yT):
        return np.array([yT[0] - GAMMA, yT[1], y0[2] - MU0, y0[3] - S0**2])

    mesh = np.linspace(0, T, 201)
    sol = solve_bvp(rhs, bc, mesh, np.ones((4, mesh.size)), tol=1e-10, max_nodes=100_000)
    assert sol.success
    _, _, mu, s2 = sol.sol(t)
    return np.exp(-((x[None, :] - mu[:, None]) ** 2) / (2 * s2[:, None])) / np.sqrt(2 * np.pi * s2[:, None])


def l1_error(ds) -> float:
    """Max over t of ∫_window |m − m_exact| dx (rectangle rule on the grid)."""
    t, x = ds.t.values, ds.x.values
    inside = (x >= WINDOW[0]) & (x <= WINDOW[1])
    err = np.abs(ds.m.values - exact_m(t, x))[:, inside].sum(axis=1) * (x[1] - x[0])
    return float(err.max())


@pytest.mark.slow
def test_coupled_lq_game_is_second_order_in_m() -> None:
    errors = []
    for nx, nt in LEVELS:
        ds = solve(lq_problem(nx, nt), fp="fv", tol=1e-9, max_iter=200)
        assert ds.attrs["converged"] == 1, (nx, ds.attrs)
        errors.append(l1_error(ds))
    errors = np.array(errors)
    orders = np.log2(errors[:-1] / errors[1:])
    assert (orders >= 1.8).all(), (errors, orders)
    assert errors[-1] < 1e-3, errors

"""One 2-D MFG solve, proven: the separable linear-quadratic game's exact solution (a product of
two 1-D gaussians, u a sum of two quadratics) by refinement, symmetry and transposition, mass
in closed rooms and with exits, backends, and particles approaching finite volumes."""

from __future__ import annotations

import numpy as np
import pytest
from test_solver import GAMMA, KAPPA, MU0, S0, SIGMA, T, lq_exact

from mfg_ensemble import Problem2D, solve

L = 3.0
"""Half-width of the LQ room [−L, L]²: the walls see a density below 1e-20 of its peak."""


def lq_room(n: int, nt: int) -> Problem2D:
    """The LQ game of test_solver.py in each direction: m0 = N(μ0, s0²) ⊗ N(−μ0, s0²)."""
    return Problem2D(
        x_lo=-L,
        x_hi=L,
        y_lo=-L,
        y_hi=L,
        nx=n,
        ny=n,
        nt=nt,
        T=T,
        sigma=SIGMA,
        coupling={"kind": "mean_quadratic", "strength": KAPPA},
        m0={"kind": "gaussian", "mean": [MU0, -MU0], "std": S0},
        terminal={"kind": "quadratic", "strength": GAMMA, "center": [0.0, 0.0]},
    )


def lq_exact_m2(t: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """m(t, y, x) = N(μ(t), s²(t))(x) · N(−μ(t), s²(t))(y): each direction is the 1-D LQ game
    (the y direction mirrored: its mean starts at −μ0 and solves the same linear ODEs)."""
    ex = lq_exact(t)
    mu, s2 = ex["mu"][:, None], ex["s2"][:, None]
    gx = np.exp(-((x[None, :] - mu) ** 2) / (2 * s2)) / np.sqrt(2 * np.pi * s2)
    gy = np.exp(-((y[None, :] + mu) ** 2) / (2 * s2)) / np.sqrt(2 * np.pi * s2)
    return gy[:, :, None] * gx[:, None, :]


LQ_LEVELS = [(31, 11), (61, 21)]


@pytest.mark.slow
def test_separable_lq_room_converges_at_second_order_to_the_product_solution() -> None:
    """L1 error of m (max over t) against the exact product gaussian on grids refined in space
    and time together (dx = 0.2, 0.1; dt = 0.1, 0.05): order ≥ 1.8, as in 1-D."""
    errors = []
    for n, nt in LQ_LEVELS:
        ds = solve(lq_room(n, nt), fp="fv", tol=1e-9, max_iter=100)
        assert ds.attrs["converged"] == 1, ds.attrs["reason"]
        print(n, ds.attrs["iterations"], ds.attrs["wall_time"])
        t, x, y = ds.t.values, ds.x.values, ds.y.values
        err = np.abs(ds.m.values - lq_exact_m2(t, x, y)).sum(axis=(1, 2)) * (x[1] - x[0]) * (y[1] - y[0])
        errors.append(float(err.max()))
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    print("LQ room", errors, orders)
    assert (orders >= 1.8).all(), (errors, orders)


ROOM = dict(
    x_lo=-1.0,
    x_hi=1.0,
    y_lo=-1.0,
    y_hi=1.0,
    nx=21,
    ny=21,
    nt=11,
    T=0.5,
    sigma=0.3,
    coupling={"kind": "log", "strength": 0.3},
    terminal={"kind": "quadratic", "strength": 2.0, "center": [0.0, 0.0]},
    m0={"kind": "mixture", "means": [[0.5, 0.0], [-0.5, 0.0], [0.0, 0.5], [0.0, -0.5]], "stds": [0.2] * 4},
    obstacles=[{"kind": "disc", "center": [0.0, 0.0], "radius": 0.25}],
)


def test_a_symmetric_room_stays_symmetric_and_transposing_transposes() -> None:
    """m0 and the costs are symmetric under x ↔ y, x → −x and y → −y: in an open room so is
    the solution, to rounding; with the round pillar the two mirrors hold to rounding, and
    x ↔ y up to the splitting of the FV diffusion into x and y line solves, which do not
    commute at the pillar's corners (measured: L1 3.8e-5, 5.1e-5, 5.4e-5 at nx = 21, 41, 81 —
    a local error at the corners that refinement does not remove). The transposed problem
    gives the transposed answer (to rounding: in a rectangle without obstacles)."""
    for obstacles in ([], ROOM["obstacles"]):
        problem = Problem2D(**{**ROOM, "obstacles": obstacles})
        ds = solve(problem, fp="fv", tol=1e-10, max_iter=60)
        assert ds.attrs["converged"] == 1
        m, u = ds.m.values, ds.u.values
        scale, uscale = np.abs(m).max(), np.abs(u).max()
        for flipped in (m[:, :, ::-1], m[:, ::-1, :]):
            assert np.abs(m - flipped).max() < 1e-13 * scale
        swap = np.abs(m - m.transpose(0, 2, 1))
        if obstacles:
            assert (swap * problem.quadrature_weights()).sum(axis=(1, 2)).max() < 1e-4
        else:
            assert swap.max() < 1e-13 * scale
            assert np.abs(u - u.transpose(0, 2, 1)).max() < 1e-13 * uscale
    wide = dict(ROOM, obstacles=[], x_hi=2.0, nx=31, m0={"kind": "gaussian", "mean": [0.8, -0.2], "std": [0.3, 0.2]})
    turned = dict(
        wide, x_hi=1.0, nx=21, y_hi=2.0, ny=31, m0={"kind": "gaussian", "mean": [-0.2, 0.8], "std": [0.2, 0.3]}
    )
    a = solve(Problem2D(**wide), fp="fv", tol=1e-10, max_iter=60)
    b = solve(Problem2D(**turned), fp="fv", tol=1e-10, max_iter=60)
    assert np.abs(a.m.values - b.m.values.transpose(0, 2, 1)).max() < 1e-10 * a.m.values.max()
    assert np.abs(a.u.values - b.u.values.transpose(0, 2, 1)).max() < 1e-10 * np.abs(a.u.values).max()


def test_mass_is_kept_in_a_closed_room_and_accounted_for_with_exits() -> None:
    closed = Problem2D(**ROOM)
    w = closed.quadrature_weights()
    ds = solve(closed, fp="fv", max_iter=30)
    np.testing.assert_allclose(np.einsum("tji,ji->t", ds.m.values, w), 1.0, atol=1e-12)
    assert (ds.m.values >= 0).all() and (ds.exited.values == 0).all()
    door = Problem2D(**{**ROOM, "exits": [{"side": "right", "lo": -0.3, "hi": 0.3}]})
    for fp in ("fv", "particles"):
        ds = solve(door, fp=fp, n_particles=4000, max_iter=30)
        inside = np.einsum("tji,ji->t", ds.m.values, door.quadrature_weights())
        np.testing.assert_allclose(inside + ds.exited.values, 1.0, atol=1e-12)
        assert ds.exited.values[-1] > 0.01 and (np.diff(ds.exited.values) >= 0).all()
        assert (ds.m.values[:, door.nodes() != 0] == 0).all()


def test_rust_and_numpy_solve_the_same_room() -> None:
    room = Problem2D(**{**ROOM, "nx": 11, "ny": 9, "nt": 4, "exits": [{"side": "top", "lo": -0.3, "hi": 0.3}]})
    for fp in ("fv", "particles"):
        a = solve(room, fp=fp, n_particles=500, max_iter=2, backend="rust")
        b = solve(room, fp=fp, n_particles=500, max_iter=2, backend="numpy")
        assert np.abs(a.m.values - b.m.values).max() < 1e-10 * np.abs(b.m.values).max()
        assert np.abs(a.u.values - b.u.values).max() < 1e-10 * np.abs(b.u.values).max()


def test_particles_approach_finite_volumes_in_a_room() -> None:
    """16× the particles: the L1 gap to the FV solution (max over t) shrinks as the KDE bias
    (h² ∝ n^(−1/3) in 2-D: × 0.4) and the noise (n^(−1/2): × 0.25) do — by ≥ 35 %, in an open
    room with a door and with the pillar too. Measured (nx = 21, 2·10³ → 3.2·10⁴ → 5.1·10⁵
    particles): open 0.182 → 0.101 → 0.051, pillar 0.185 → 0.104 → 0.057. When the KDE was cut
    at the pillar, not divided by the room's share of its kernel, 0.20 → 0.14 (the test asked
    20 %); divided by the share of the room's nodes rather than of its binned cells, the pillar
    stopped at 0.096 with 5.1·10⁵ (h < dx there, where binning loses the obstacle cells' share)."""
    for obstacles in ([], ROOM["obstacles"]):
        room = Problem2D(**{**ROOM, "obstacles": obstacles, "exits": [{"side": "right", "lo": -0.3, "hi": 0.3}]})
        w = room.quadrature_weights()
        fv = solve(room, fp="fv", tol=1e-8)
        gaps = []
        for n in (2_000, 32_000):
            ds = solve(room, n_particles=n, seed=2, tol=1e-4, max_iter=30)
            gaps.append(float((np.abs(ds.m.values - fv.m.values) * w).sum(axis=(1, 2)).max()))
        assert gaps[1] < 0.65 * gaps[0], (obstacles, gaps)


def test_one_dimensional_schemes_are_refused_in_two_dimensions() -> None:
    with pytest.raises(ValueError, match="hjb_scheme = 'rk3' is 1-D only"):
        solve(Problem2D(**ROOM), hjb_scheme="rk3")
    with pytest.raises(ValueError, match="fv_scheme = 'upwind1' is 1-D only"):
        solve(Problem2D(**ROOM), fp="fv", fv_scheme="upwind1")

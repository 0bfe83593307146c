"""Newton's method for the coupling (issue 11, part 1): the monotone scheme's residual and
Jacobian, its Newton solve, and Newton–Krylov on the high-order fixed point, alone
(method = "newton") and as the adaptive default's second phase."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from mfg_ensemble import Problem, Problem2D, solve
from mfg_ensemble.game import newton
from mfg_ensemble.game.newton import STALL_STEPS, STALL_WINDOW, Coarse, MonotoneScheme, NewtonKrylov, coarser

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_convergence import cell  # noqa: E402


def _small(bc: str = "reflect", kind: str = "log") -> Problem:
    coupling = {"kind": kind, "strength": 2.0} | ({"delta": 0.05} if kind == "log" else {})
    return Problem(
        nx=31,
        nt=13,
        sigma=0.1,
        bc=bc,
        coupling=coupling,
        m0={"kind": "gaussian", "mean": 0.4, "std": 0.1},
        terminal={"kind": "quadratic", "strength": 1.0, "center": 0.7},
    )


@pytest.mark.parametrize("bc", ["reflect", "periodic"])
@pytest.mark.parametrize("kind", ["log", "linear", "power"])
def test_the_jacobian_is_the_derivative_of_the_residual(bc: str, kind: str) -> None:
    """Central differences of the residual at a random state (u, m > 0), in a random direction,
    agree with the assembled Jacobian to the differences' own error (~1e-9 relative); the
    upwind switches and the clipped coupling are smooth at a generic state."""
    assert_jacobian_matches(MonotoneScheme(_small(bc, kind)), seed=3)


def assert_jacobian_matches(scheme: MonotoneScheme, seed: int) -> None:
    """Central differences of the scheme's residual at a random state (u, m > 0), in a random
    direction, against its assembled Jacobian."""
    rng = np.random.default_rng(seed)
    shape = (scheme.nt, scheme.nx)
    u, m = rng.normal(size=shape), 0.2 + rng.random(shape)
    du, dm = rng.normal(size=shape), rng.normal(size=shape)
    eps = 1e-6
    plus = np.concatenate([r.ravel() for r in scheme.residual(u + eps * du, m + eps * dm)])
    minus = np.concatenate([r.ravel() for r in scheme.residual(u - eps * du, m - eps * dm)])
    exact = scheme.jacobian(u, m) @ np.concatenate([du.ravel(), dm.ravel()])
    assert np.abs((plus - minus) / (2 * eps) - exact).max() < 1e-7 * np.abs(exact).max()


def test_the_monotone_scheme_is_solved_by_newton_in_the_hardest_cell() -> None:
    """crowd_log at σ = 0.02, λ = 5 (nx = 201, nt = 101), the cell no iteration on the
    high-order map has solved: Newton on the monotone scheme converges from u = g, m = m0 with
    m ≥ 0 and the mass one at every time to rounding."""
    scheme = MonotoneScheme(cell("crowd_log", 0.02, 5.0))
    u, m, iterations, converged = scheme.solve()
    assert converged and iterations <= 30
    assert m.min() > -1e-12
    np.testing.assert_allclose(m @ scheme.w, 1.0, rtol=0, atol=1e-12)
    assert np.abs(np.concatenate([r.ravel() for r in scheme.residual(u, m)])).max() < 1e-6


def test_newton_converges_where_mixing_alone_stalls() -> None:
    """crowd_log at σ = 0.05, λ = 1: Anderson with backtracking alone stays near a residual of 1
    for 50 iterations (README table); method = "newton" converges in a few Newton steps, each
    costing several evaluations of G (recorded), to the same kind of result as any solve."""
    problem = cell("crowd_log", 0.05, 1.0)
    ds = solve(problem, fp="fv", method="newton", max_iter=20)
    assert ds.attrs["converged"] == 1, ds.residual.values
    assert ds.attrs["newton_steps"] == ds.attrs["iterations"] - 1
    assert ds.attrs["evaluations"] > 3 * ds.attrs["iterations"]
    np.testing.assert_allclose(ds.m.values @ problem.quadrature_weights(), 1.0, atol=1e-12)


def test_newton_and_mixing_find_the_same_fixed_point() -> None:
    """Both methods solve m = G(m) of the same high-order schemes: on a cell both converge in,
    the densities agree to the tolerance's order, not to the monotone scheme's O(dx)."""
    problem = cell("crowd_log", 0.3, 0.1)
    newton = solve(problem, fp="fv", method="newton", tol=1e-8)
    mixing = solve(problem, fp="fv", method="picard", damping=0.5, tol=1e-8)
    assert newton.attrs["converged"] and mixing.attrs["converged"]
    assert float(abs(newton.m - mixing.m).max()) < 1e-6 * float(mixing.m.max())


def test_the_adaptive_default_switches_to_newton_only_when_it_stalls() -> None:
    easy = solve(cell("crowd_log", 0.3, 0.1), fp="fv")
    assert easy.attrs["converged"] and easy.attrs["newton_steps"] == 0
    assert easy.attrs["evaluations"] == easy.attrs["iterations"]
    hard = solve(cell("two_exits", 0.05, 1.0), fp="fv", max_iter=50)
    assert hard.attrs["converged"] == 1, hard.residual.values[-3:]
    assert 0 < hard.attrs["newton_steps"] < hard.attrs["iterations"]


def test_newton_is_refused_where_it_does_not_apply() -> None:
    lq = Problem.from_file(ROOT / "configs" / "lq_game.toml")
    with pytest.raises(ValueError, match="method = 'newton' needs a local coupling .* 'mean_quadratic'"):
        solve(lq, fp="fv", method="newton")
    # the adaptive default does not switch where Newton does not apply: it runs as before
    ds = solve(lq.replace(nx=41, nt=11), fp="fv")
    assert ds.attrs["converged"] and ds.attrs["newton_steps"] == 0


def test_newton_gives_up_where_its_steps_stop_descending() -> None:
    """crowd_log at σ = 0.02, λ = 5 from the monotone scheme's solution alone (start = "m0": no
    continuation restart): the map is linear only within ~1e-3 of the start and its residual
    there is 0.30, so the preconditioned steps stop reducing it for good, and the solve ends
    (converged = 0) saying so instead of running to max_iter (6 minutes)."""
    ds = solve(cell("crowd_log", 0.02, 5.0), fp="fv", method="newton", start="m0", max_iter=50)
    assert ds.attrs["converged"] == 0
    assert ds.attrs["reason"].startswith("newton stalled: "), ds.attrs["reason"]
    assert ds.attrs["iterations"] <= STALL_WINDOW + 2, ds.attrs["iterations"]


def test_newton_gives_up_when_its_best_residual_stops_halving() -> None:
    """The second rule: steps that decrease the residual now and then but never for good (the
    loose GMRES tolerance lets them) stop once the best residual has not halved in
    STALL_WINDOW steps."""
    krylov = NewtonKrylov(None, None, None)  # type: ignore[arg-type]  # the rule reads residuals only
    krylov.residuals = [1.0, 0.4] + [0.3] * STALL_WINDOW
    assert krylov.stall_reason == f"the best residual did not halve in {STALL_WINDOW} steps"
    krylov.residuals[-1] = 0.19
    assert krylov.stall_reason is None
    krylov.failures = STALL_STEPS
    assert krylov.stall_reason == f"{STALL_STEPS} steps in a row did not reduce the residual"


def test_a_stalled_newton_restarts_from_the_game_at_twice_the_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where Newton stalls (forced here: the first iteration at the game's σ is reported as
    stalled), the solve restarts once from the same game solved by finite volumes at 2σ, and
    attrs ``start`` says so; a solve that does not stall never restarts. (The cells that need
    it, σ = 0.02 and λ = 5 in the table, take about two minutes each: bench_convergence.py.)"""
    from mfg_ensemble.game import solver as solver_mod

    real, calls = solver_mod.iterate, []

    def iterate(G, opts, callback=None, initial=None, started=None):  # type: ignore[no-untyped-def]
        u, m, history = real(G, opts, callback, initial, started)
        calls.append(G.problem.sigma)
        if len(calls) == 1:
            history.converged, history.reason = False, "newton stalled: forced by the test"
        return u, m, history

    monkeypatch.setattr(solver_mod, "iterate", iterate)
    problem = _small()
    ds = solve(problem, fp="fv", tol=1e-8)
    assert calls == [0.1, 0.2, 0.1]
    assert ds.attrs["converged"] and ds.attrs["start"].startswith("continuation (")
    assert "at sigma = 0.2" in ds.attrs["start"] and "stalled" in ds.attrs["start"]
    calls.clear()
    monkeypatch.setattr(solver_mod, "iterate", real)
    assert solve(problem, fp="fv", tol=1e-8).attrs["start"] == "m0"


# --- 2-D -------------------------------------------------------------------------------------


def _room(**changes: object) -> Problem2D:
    """configs/room.toml's room (two doors, a pillar) on a small grid, strong congestion."""
    room = dict(
        nx=15,
        ny=15,
        nt=11,
        sigma=0.1,
        potential={"kind": "constant", "value": 1.0},
        terminal={"kind": "wells", "strength": 4.0, "centers": [[1.0, 0.225], [1.0, 0.775]]},
        coupling={"kind": "linear", "strength": 5.0},
        m0={"kind": "gaussian", "mean": [0.25, 0.5], "std": [0.1, 0.15]},
        obstacles=[{"kind": "disc", "center": [0.65, 0.5], "radius": 0.12}],
        exits=[{"side": "right", "lo": 0.15, "hi": 0.3}, {"side": "right", "lo": 0.7, "hi": 0.85}],
    )
    return Problem2D(**(room | changes))


@pytest.mark.parametrize("bc", [("reflect", "reflect"), ("periodic", "reflect")])
def test_the_2d_jacobian_is_the_derivative_of_the_residual(bc: tuple[str, str]) -> None:
    """As in 1-D, on the room's faces (walls, the pillar, the doors as Dirichlet rows)."""
    problem = _room(bc=bc, exits=[] if bc[0] == "periodic" else _room().exits)
    assert_jacobian_matches(MonotoneScheme(problem), seed=4)


def test_the_2d_monotone_scheme_keeps_the_mass_and_lets_it_out_at_the_doors() -> None:
    """Closed room: the mass is one at every time to rounding. With the doors: it only falls,
    m ≥ 0, and u = m = 0 at obstacle and exit nodes. The transposed room gives the transposed
    solution (its faces are summed in another order: to rounding of the Newton solve)."""
    closed = MonotoneScheme(_room(exits=[]))
    u, m, _, converged = closed.solve()
    assert converged
    w = closed.problem.quadrature_weights()
    np.testing.assert_allclose((m * w).sum(axis=(1, 2)), 1.0, rtol=0, atol=1e-12)
    room = MonotoneScheme(_room())
    u, m, _, converged = room.solve()
    mass = (m * w).sum(axis=(1, 2))
    assert converged and m.min() > -1e-12 and (np.diff(mass) < 0).all() and mass[-1] < 0.9
    fixed = room.problem.nodes() != 0
    assert not u[:, fixed].any() and not m[:, fixed].any()
    turned = _room(
        m0={"kind": "gaussian", "mean": [0.5, 0.25], "std": [0.15, 0.1]},
        terminal={"kind": "wells", "strength": 4.0, "centers": [[0.225, 1.0], [0.775, 1.0]]},
        obstacles=[{"kind": "disc", "center": [0.5, 0.65], "radius": 0.12}],
        exits=[{"side": "top", "lo": 0.15, "hi": 0.3}, {"side": "top", "lo": 0.7, "hi": 0.85}],
    )
    ut, mt, _, _ = MonotoneScheme(turned).solve()
    np.testing.assert_allclose(mt.transpose(0, 2, 1), m, rtol=0, atol=1e-9 * m.max())
    np.testing.assert_allclose(ut.transpose(0, 2, 1), u, rtol=0, atol=1e-9 * np.abs(u).max())


def test_newton_converges_a_2d_room_where_mixing_stalls() -> None:
    """The room at λ = 5, σ = 0.1: the adaptive default (mixing; it does not switch in 2-D) is
    still near 3e-3 after 60 iterations; method = "newton" converges in about 18 Newton steps of
    ~15 evaluations each, mass accounted for (in the room + exited = 1)."""
    problem = _room()
    mixing = solve(problem, fp="fv", tol=1e-6, max_iter=60)
    assert mixing.attrs["converged"] == 0 and mixing.attrs["newton_steps"] == 0
    assert mixing.residual.values[-1] > 1e-3
    ds = solve(problem, fp="fv", method="newton", tol=1e-6, max_iter=30)
    assert ds.attrs["converged"] == 1, ds.residual.values
    assert ds.attrs["evaluations"] > 5 * ds.attrs["iterations"]
    mass = (ds.m.values * problem.quadrature_weights()).sum(axis=(1, 2)) + ds.exited.values
    np.testing.assert_allclose(mass, 1.0, rtol=0, atol=1e-12)


def test_a_large_2d_scheme_is_served_by_a_coarser_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above DIRECT_MAX_UNKNOWNS the scheme is solved on a coarser grid and prolonged, and
    Newton is preconditioned by the two-level operator: the room still converges. Restricting
    a prolonged coarse field gives it back (nested grids), Dirichlet nodes 0."""
    monkeypatch.setattr(newton, "DIRECT_MAX_UNKNOWNS", 2000)
    problem = _room(nx=17, ny=17, nt=9)
    scheme = MonotoneScheme(problem)
    coarse = Coarse(scheme)
    assert coarse.scheme.problem == coarser(problem) and coarse.scheme.size <= 2000
    field = np.random.default_rng(5).random(coarse.scheme.shape)
    field[:, coarse.scheme.fixed.reshape(coarse.scheme.shape[1:])] = 0.0
    fine = coarse.prolong(field)
    assert not fine[:, problem.nodes() != 0].any()
    kept = coarse.scheme.problem.nodes() == 0
    np.testing.assert_allclose(coarse.restrict(fine)[:, kept], field[:, kept], rtol=0, atol=1e-14)
    ds = solve(problem, fp="fv", method="newton", tol=1e-6, max_iter=40)
    assert ds.attrs["converged"] == 1, ds.residual.values
    # a door that covers no node of the coarser grid: the scheme is factorised as it is
    narrow = _room(nx=17, ny=17, nt=9, exits=[{"side": "right", "lo": 0.55, "hi": 0.6}])
    with pytest.raises(ValueError, match="covers no boundary node"):
        coarser(narrow)
    assert MonotoneScheme(narrow).direct
    assert solve(narrow, fp="fv", method="newton", tol=1e-6, max_iter=40).attrs["converged"] == 1

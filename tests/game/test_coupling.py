"""The coupling iteration (issue 11, part 1): the adaptive default against over-relaxation, the
0.1 method still selectable, every shipped config converging as shipped, and the hard cells of
the (σ, λ) convergence table (benchmarks/bench_convergence.py has the whole table)."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from mfg_ensemble import Problem, Sweep, solve
from mfg_ensemble.game.fixed_point import Anderson, Safeguarded

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_convergence import cell  # noqa: E402

CONFIGS = sorted((ROOT / "configs").glob("*.toml"))


def _linear_map(eigenvalues: np.ndarray, seed: int = 0):
    """G(m) = b + J(m − m*) with J = Q diag(eigenvalues) Qᵀ; fixed point m* (positive)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((eigenvalues.size, eigenvalues.size)))
    jac = q @ np.diag(eigenvalues) @ q.T
    fixed = 1.0 + rng.random(eigenvalues.size)
    return (lambda m: fixed + jac @ (m - fixed)), fixed


def _run(mixer, G, m, steps: int) -> tuple[np.ndarray, list[float]]:
    norms = []
    for _ in range(steps):
        g = G(m)
        norms.append(float(np.linalg.norm(g - m)))
        m = mixer.step(m, g)
    return m, norms


def test_adaptive_damping_tames_an_over_relaxed_map() -> None:
    """A monotone coupling makes G' strongly negative (eigenvalues down to −30 here): damped
    Picard at β = 0.5 multiplies that mode by 1 − 0.5·31 and diverges; the adaptive iteration
    halves β until its steps stop overshooting and converges to the fixed point."""
    G, fixed = _linear_map(-np.linspace(0.0, 30.0, 40))
    start = np.full(40, 1.5)
    _, picard = _run(Anderson(depth=0, damping=0.5), G, start, 30)
    assert picard[-1] > 1e3 * picard[0]
    mixer = Safeguarded(depth=10, damping=0.5)
    m, norms = _run(mixer, G, start, 60)
    assert norms[-1] < 1e-8 * norms[0]
    np.testing.assert_allclose(m, fixed, rtol=1e-7)
    assert mixer.restarts > 0 and mixer.damping < 0.5


def test_adaptive_damping_grows_back_on_an_easy_map() -> None:
    G, fixed = _linear_map(np.linspace(-0.5, 0.5, 30))
    mixer = Safeguarded(depth=5, damping=0.2)
    m, norms = _run(mixer, G, np.full(30, 1.5), 25)
    assert mixer.damping == 1.0
    np.testing.assert_allclose(m, fixed, rtol=1e-10)


def test_the_result_records_the_method_and_its_evaluations() -> None:
    problem = Problem.from_file(ROOT / "configs" / "lq_game.toml").replace(nx=41, nt=11)
    for method in ("adaptive", "picard"):
        ds = solve(problem, fp="fv", tol=1e-6, method=method)
        assert ds.attrs["solver.method"] == method
        assert ds.attrs["evaluations"] == ds.attrs["iterations"] == ds.sizes["iteration"]
        assert ds.attrs["converged"] == 1


def test_picard_is_still_the_0_1_iteration() -> None:
    """method = "picard" with damping β takes m + β r: one step at β = 0.2 and β = 1 differ."""
    problem = Problem.from_file(ROOT / "configs" / "lq_game.toml").replace(nx=41, nt=11)
    low = solve(problem, fp="fv", method="picard", damping=0.2, max_iter=2)
    high = solve(problem, fp="fv", method="picard", damping=1.0, max_iter=2)
    assert low.residual_m.values[0] == high.residual_m.values[0]
    assert low.residual_m.values[1] != high.residual_m.values[1]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_converges_with_its_own_settings(path: Path) -> None:
    """Each configs/*.toml, its problem and [solver] table as shipped (a sweep file: its base
    member), particles included."""
    with open(path, "rb") as fh:
        solver = tomllib.load(fh).get("solver", {})
    ds = solve(Sweep.from_file(path).base_problem, solver)
    assert ds.attrs["converged"] == 1, (ds.attrs["reason"], ds.residual.values[-3:])


# A subset of the 40-cell table (benchmarks/bench_convergence.py) that runs in about a minute:
# cells the adaptive mixing converges alone (from the coarse start; the last four needed Newton
# from m0), and cells where it stalls and Newton–Krylov takes over (each failed within 50
# iterations before Newton, and with damped Picard within 200).
MIXING_CELLS = [
    ("crowd_log", 0.02, 0.01),
    ("crowd_log", 0.1, 0.1),
    ("two_exits", 0.1, 0.1),
    ("crowd_log", 0.05, 0.1),
    ("crowd_log", 0.3, 5.0),
    ("two_exits", 0.02, 0.01),
    ("two_exits", 0.3, 5.0),
]
NEWTON_CELLS = [
    ("crowd_log", 0.1, 1.0),
    ("crowd_log", 0.1, 5.0),
    ("two_exits", 0.02, 0.1),
    ("two_exits", 0.05, 1.0),
    ("two_exits", 0.1, 5.0),
]


@pytest.mark.parametrize("name,sigma,strength", MIXING_CELLS + NEWTON_CELLS)
def test_hard_cells_converge_within_50_iterations(name: str, sigma: float, strength: float) -> None:
    ds = solve(cell(name, sigma, strength), fp="fv", tol=1e-6, max_iter=50)
    assert ds.attrs["converged"] == 1, ds.residual.values[-3:]
    assert (ds.attrs["newton_steps"] > 0) == ((name, sigma, strength) in NEWTON_CELLS)


def test_a_warm_start_from_a_neighbour_saves_iterations() -> None:
    """``solve(..., initial=neighbour)``: crowd_log at σ = 0.3, coupling 1.0 from the solution
    at 0.5 converges to the same solution (within the tolerance) with fewer evaluations of G
    than from m0 (from m0, the adaptive method stalls and switches to Newton: 16 iterations, 37
    evaluations measured; warm: 22 mixing iterations, one evaluation each). The default coarse
    start does better still here (12 mixing iterations): a neighbour is a worse first guess
    than the same game on a coarser grid. A bad warm start is a ValueError naming it."""
    base = cell("crowd_log", 0.3, 0.5)
    near = solve(base, fp="fv", max_iter=100)
    target = base.replace(coupling=base.coupling.model_copy(update={"strength": 1.0}))
    cold = solve(target, fp="fv", max_iter=100, start="m0")
    warm = solve(target, fp="fv", max_iter=100, initial=near)
    coarse = solve(target, fp="fv", max_iter=100)
    assert near.attrs["converged"] and cold.attrs["converged"] and warm.attrs["converged"]
    assert coarse.attrs["evaluations"] < warm.attrs["evaluations"] < cold.attrs["evaluations"], (
        coarse.attrs["evaluations"],
        warm.attrs["evaluations"],
        cold.attrs["evaluations"],
    )
    assert float(abs(warm.m - cold.m).max()) < 1e-4 * float(cold.m.max())
    with pytest.raises(ValueError, match=r"initial must be a density history of shape \(nt, nx\) = \(101, 201\)"):
        solve(target, fp="fv", initial=np.ones((3, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        solve(target, fp="fv", initial=-near.m.values)


def test_a_changed_map_is_not_judged_by_an_old_residual() -> None:
    """When a march's sub-step floors grow, G changes and the best residual met before is not
    comparable: the solver tells the mixer (``forget_best``), which then takes the next step as
    its new reference instead of backtracking against the stale one. crowd_log with 10⁴
    particles: the adaptive default took 28 iterations (6 backtracks, all after a floor grew by
    one sub-step) and now converges in fewer than damped Picard's 21 (14 measured)."""
    mixer = Safeguarded(depth=3, damping=0.5)
    G, fixed = _linear_map(np.linspace(-0.5, 0.5, 10))
    m = np.full(10, 1.5)
    m = mixer.step(m, G(m))
    worse = m + 10.0
    mixer.forget_best()
    mixer.step(worse, G(worse))
    assert mixer.restarts == 0 and mixer.damping == 0.5
    problem = Problem.from_file(ROOT / "configs" / "crowd_log.toml")
    adaptive = solve(problem, fp="particles", n_particles=10_000)
    picard = solve(problem, fp="particles", n_particles=10_000, method="picard")
    assert adaptive.attrs["converged"] and picard.attrs["converged"]
    assert adaptive.attrs["iterations"] < picard.attrs["iterations"], (
        adaptive.attrs["iterations"],
        picard.attrs["iterations"],
    )

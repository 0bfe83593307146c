"""The sub-step floors of the fixed-point map forget the wild first iterates but still settle.

The marches pick their sub-steps from the iterate; the floors (the counts used so far) keep G
from jumping where a count flips near the solution. Grown only, they kept the counts of the
first, wild iterates: on crowd_log (nx = 201, nt = 101, 10⁴ particles) the in-solve particle
sweep took 263 sub-steps where the final u needs 139, and cost 2.6-3× a direct
``particles_forward`` call with the final u. Reset to the counts of the current iterate when
the residual first falls below 0.5 and 0.05, the floors end at 139 (HJB: 4288 where the final
u needs 4287, before 4542), and the in-solve sweep costs 1.1× the direct call.
"""

from __future__ import annotations

import numpy as np
import pytest

from mfg_ensemble import Problem
from mfg_ensemble.game.solver import FixedPointMap, SolverOptions, SubstepFloors, iterate
from mfg_ensemble.kernels import fv_forward, hjb_backward, particles_forward


def test_floors_grow_and_a_reset_takes_the_next_counts() -> None:
    floors = SubstepFloors(3)
    assert floors.next().tolist() == [1, 1, 1]
    floors.record(np.array([5, 2, 7]))
    floors.record(np.array([3, 4, 1]))
    assert floors.next().tolist() == [5, 4, 7]
    floors.reset()
    assert floors.next() is None  # the next march runs without floors
    floors.record(np.array([2, 2, 3]))
    assert floors.next().tolist() == [2, 2, 3]
    floors.record(np.array([1, 3, 1]))
    assert floors.next().tolist() == [2, 3, 3]


def direct_counts(G: FixedPointMap, m: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sub-steps the two marches take, without floors, for the density m and the value u."""
    p = G.problem
    _, hjb = hjb_backward(p.running_cost(m), G.terminal, dx=p.dx, variant=G.opts.hjb_variant, **G.common)
    if G.opts.fp == "fv":
        _, fp = fv_forward(u, G.m0, dx=p.dx, **G.common)
    else:
        _, fp = particles_forward(
            G.x0, u, G.grid, lo=p.lo, hi=p.hi, seed=G.opts.seed, method=G.opts.kde_method, **G.common
        )
    return hjb, fp


@pytest.mark.parametrize("fp", ["particles", "fv"])
def test_floors_end_at_what_the_solution_needs_and_stay_there(fp: str) -> None:
    problem = Problem.from_file("configs/crowd_log.toml").model_copy(update={"nx": 101, "nt": 51})
    opts = SolverOptions(fp=fp, n_particles=10_000, tol=1e-7)
    G = FixedPointMap(problem, opts, None)
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    u, m, history = iterate(G, opts, lambda *_: seen.append((G.hjb_floor.copy(), G.fp_floor.copy())))
    assert history.converged
    assert len(G.floor_resets) == 2 and G.floor_resets[-1] < len(seen) - 5, G.floor_resets
    first, last = seen[0], seen[-1]
    # the first iterate asked for more sub-steps than the solution needs, and that is forgotten
    assert last[0].sum() < first[0].sum() and last[1].sum() < first[1].sum(), (first, last)
    # the floors are the counts the solution needs, up to one flip of hysteresis per interval
    for floor, need in zip(last, direct_counts(G, m, u)):
        assert (floor >= need).all() and (floor <= need + 1).all(), floor - need
        assert floor.sum() - need.sum() <= 0.01 * need.sum() + 1
    # near the solution G is one fixed map: the floors no longer move
    for hjb_floor, fp_floor in seen[-8:]:
        np.testing.assert_array_equal(hjb_floor, last[0])
        np.testing.assert_array_equal(fp_floor, last[1])


def test_no_reset_once_the_residual_is_already_small() -> None:
    """A solve that lands near its solution at once (no coupling, no damping: the first update
    is the answer) keeps its floors: a reset there would only move G."""
    problem = Problem.from_file("configs/crowd_log.toml").replace(nx=61, nt=21, coupling={"kind": "zero"})
    opts = SolverOptions(fp="fv", tol=1e-9, damping=1.0)
    G = FixedPointMap(problem, opts, None)
    _, _, history = iterate(G, opts)
    assert history.converged and len(history.residual_m) == 2 and G.floor_resets == []

"""The coarse start of a 1-D solve (nested iteration): the same game on a grid ``COARSENING``
times coarser in x, with the same output times, whose density history, interpolated linearly
in x onto the fine grid, is the fine iteration's first iterate.

Why it pays: the fixed-point iteration spends its first iterations (from m(t) = m0 and the
wild answers to it, which force the most sub-steps) far from the solution. On a grid four times
coarser an iteration costs about 1/16 as much (4× fewer nodes, 4× fewer CFL-limited
sub-steps), and the coarse solution differs from the fine one only by the discretisation
difference between the two grids, so the fine iteration starts near its answer: crowd_log with
finite volumes at nx = 201 takes 8 fine iterations from the start on nx = 51 instead of 15
from m0 (README, "One solve", "The first iterate"). The driver (coarse solve, tolerance, fallback to m0) is
:func:`mfg_ensemble.game.solver.solve`; this module does the grid work.
"""

from __future__ import annotations

import math

import numpy as np

from mfg_ensemble.game.problem import Problem, Values
from mfg_ensemble.kernels.checks import FloatArray

COARSENING = 4
"""Ratio of the fine to the coarse grid spacing."""
MIN_COARSE_NODES = 21
"""Smallest coarse grid: a finer problem whose coarse grid would have fewer nodes starts from m0."""
COARSE_TOL = 1e-3
"""Tolerance of the coarse solve (or the fine one's, if looser): the coarse solution is only
as close to the fine one as the grids' discretisation difference, so a tighter one buys nothing."""
FUNCTIONS_OF_X = ("potential", "m0", "terminal")
"""The problem's functions of x, which a ``values`` family gives node by node."""


def coarse_nodes(problem: Problem) -> int:
    """Nodes of the coarse grid: ⌈intervals / COARSENING⌉ intervals of the same domain."""
    if problem.bc == "periodic":
        return math.ceil(problem.nx / COARSENING)
    return math.ceil((problem.nx - 1) / COARSENING) + 1


def coarse_problem(problem: Problem) -> Problem | None:
    """``problem`` on the coarse grid, or None when that grid has fewer than
    ``MIN_COARSE_NODES`` nodes. Families given by node values are interpolated linearly onto it;
    the others are evaluated there."""
    nx = coarse_nodes(problem)
    if nx < MIN_COARSE_NODES:
        return None
    grid = problem.model_copy(update={"nx": nx}).grid()  # unvalidated: its families still fit nx
    changes: dict[str, object] = {"nx": nx}
    for name in FUNCTIONS_OF_X:
        family = getattr(problem, name)
        if isinstance(family, Values):
            values = interpolate(np.asarray(family.values), problem.grid(), grid, _period(problem))
            changes[name] = Values(values=values.tolist())
    return problem.replace(**changes)


def _period(problem: Problem) -> float | None:
    return problem.hi - problem.lo if problem.bc == "periodic" else None


def interpolate(values: FloatArray, x_from: FloatArray, x_to: FloatArray, period: float | None) -> FloatArray:
    """Values at the nodes ``x_from`` (last axis) interpolated linearly to ``x_to`` (periodically
    with ``period`` if given)."""
    rows = np.atleast_2d(values)
    out = np.stack([np.interp(x_to, x_from, row, period=period) for row in rows])
    return out.reshape(values.shape[:-1] + x_to.shape)


def prolong(m: FloatArray, coarse: Problem, fine: Problem) -> FloatArray:
    """A coarse density history m (nt, nx_coarse) on the fine grid: interpolated linearly in x,
    each time rescaled to mass one by the fine grid's quadrature (linear interpolation moves the
    mass by O(dx²))."""
    out = interpolate(m, coarse.grid(), fine.grid(), _period(fine))
    mass = out @ fine.quadrature_weights()
    return out / mass[:, None]

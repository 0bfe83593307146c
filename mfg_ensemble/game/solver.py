"""One mean-field-game solve: HJB backward, Fokker–Planck forward, coupled by a fixed point.

Given a :class:`~mfg_ensemble.problem.Problem` (domain, horizon T, σ, potential V, coupling F,
m0, terminal cost g, boundary condition), :func:`solve` looks for the pair (u, m) with

    −∂t u − (σ²/2) ∂xx u + ½ |∂x u|² = V(x) + F(m(t))(x),   u(T) = g      (HJB, backward)
     ∂t m − (σ²/2) ∂xx m − ∂x(m ∂x u) = 0,                   m(0) = m0     (FP, forward)

i.e. a fixed point m = G(m) of G: m ↦ FP(HJB(m)). The first iterate is ``initial`` if given;
else, with ``start = "coarse"`` (the default; 1-D), the same game solved by finite volumes on
a grid four times coarser and interpolated (:mod:`mfg_ensemble.game.coarse`; attrs ``start``
says what was used), or m(t) = m0. The iteration is the one
``method`` chooses: "adaptive" (the default: Anderson mixing with residual-based backtracking
and a damping that shrinks when a step overshoots and grows back on success, starting at
``damping``, depth ``anderson`` or 10 (:mod:`mfg_ensemble.game.fixed_point`); when it stalls,
a 1-D game with a local coupling goes on with Newton's method, :class:`_Adaptive`; where Newton
stalls too (1-D, ``start = "coarse"``, no ``initial``), the solve restarts once from the same
game solved at 2σ, :func:`_iterate`), "newton"
(Newton–Krylov preconditioned by a monotone scheme, from that scheme's solution:
:mod:`mfg_ensemble.game.newton`; 1-D and 2-D, while "adaptive" switches to it in 1-D only: a
2-D Newton step costs ~15 evaluations of G, where the mixing converges it costs ~2× its
evaluations) or "picard" (fixed damping β = ``damping``,
Anderson-accelerated when ``anderson`` > 0: the iteration of 0.1). A mixing iteration
evaluates G once, a Newton step several times (attrs ``evaluations``, ``newton_steps``;
``backtracks`` counts the returns to the best iterate and the halved Newton steps). The HJB march is
:func:`~mfg_ensemble.kernels.hjb_backward`; the FP march either the finite-volume scheme
(``fp="fv"``: deterministic, mass conserved to rounding) or particles (``fp="particles"``:
Euler–Maruyama with drift −∂x u, density by KDE; the same noise in every iteration, so G is
a deterministic map). The marches choose their sub-steps per output interval from the current
iterate (CFL), which would make G jump where a count flips; so each march is passed, as
``min_substeps``, floors that grow with the counts it uses. The floors are reset to the counts
of the current iterate twice, when the residual first falls below 0.5 and below 0.05, so the
counts forced by wild early iterates are forgotten; after that they only grow and are
bounded, so they settle and G is a fixed map near the solution (:class:`FixedPointMap`). The residuals are
relative L2 changes of the raw (undamped) updates,

    res_u = ‖u_k − u_{k−1}‖/‖u_k‖,   res_m = ‖G(m_k) − m_k‖/‖G(m_k)‖,

and the solve stops when both are below ``tol``, or after ``max_iter`` iterations, or when a
march blows up (then ``converged`` is False and ``reason`` says why; the history is kept).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict, Field

from mfg_ensemble import schema
from mfg_ensemble.errors import Diverged
from mfg_ensemble.game.coarse import COARSE_TOL, coarse_problem, prolong
from mfg_ensemble.game.fixed_point import Anderson, Safeguarded, not_halved, relative_change
from mfg_ensemble.game.newton import MonotoneScheme, NewtonKrylov
from mfg_ensemble.game.problem import Problem, physical_memory
from mfg_ensemble.game.problem2d import Problem2D
from mfg_ensemble.kernels import backend as _backend
from mfg_ensemble.kernels import (
    fv_forward,
    fv_forward_2d,
    hjb_backward,
    hjb_backward_2d,
    particles_forward,
    particles_forward_2d,
)
from mfg_ensemble.kernels.checks import UINT64_MAX, FloatArray
from mfg_ensemble.kernels.reference import rng
from mfg_ensemble.kernels.reference.substeps import IntArray

FP_METHODS = ("particles", "fv")
PARTICLE_ARRAYS = 4
"""Arrays of one value per particle a particle solve holds at once (positions, drift, noise, the
positions at the start of an output interval)."""
ADAPTIVE_DEPTH = 10
"""Anderson depth of method = "adaptive" when ``anderson`` is 0."""
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class SolverOptions(BaseModel):
    """Every solver parameter of :func:`solve` (validated), recorded in the result's attrs.

    Python callers get pydantic's lax conversion (``damping=1`` is 1.0); a sweep file is
    validated strictly (``damping = "0.5"`` is an error). Fields are keywords.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    fp: Literal["particles", "fv"] = "particles"
    n_particles: int = Field(10_000, ge=2, description="particles of the FP march (fp = 'particles')")
    seed: int = Field(0, ge=0, le=UINT64_MAX, description="seed of the particles' Philox streams")
    hjb_variant: Literal["js", "z"] = "js"
    hjb_scheme: Literal["imex", "rk3"] = Field(
        "imex",
        description="HJB time march: 'imex' (ARS(4,4,3), implicit 4th-order diffusion) or 'rk3' (explicit TVD-RK3)",
    )
    fv_scheme: Literal["muscl2", "upwind1"] = Field(
        "muscl2",
        description="finite-volume FP: 'muscl2' (2nd order, implicit diffusion) or 'upwind1' (1st order, as in 0.2)",
    )
    kde_method: Literal["exact", "binned"] = "binned"
    bandwidth: Literal["scott", "silverman"] | PositiveFloat = "scott"
    damping: float = Field(0.5, gt=0, le=1, allow_inf_nan=False, description="Picard damping β in (0, 1]")
    anderson: int = Field(0, ge=0, le=50, description="Anderson depth (0: damped Picard; 'adaptive': 0 means 10)")
    method: Literal["adaptive", "picard", "newton"] = Field(
        "adaptive",
        description="coupling iteration: 'adaptive' (Anderson with backtracking and adaptive damping, starting "
        "at β = damping), 'picard' (fixed damping β, Anderson if anderson > 0: the method of 0.1) or 'newton' "
        "(Newton–Krylov preconditioned by a monotone scheme; local couplings; in 2-D for the cells mixing "
        "cannot solve: ~15 evaluations of G per step)",
    )
    tol: PositiveFloat = 1e-6
    max_iter: int = Field(200, ge=1)
    time_limit: PositiveFloat | None = Field(
        None, description="seconds a solve may take; checked after each iteration (None: no limit)"
    )
    start: Literal["coarse", "m0"] = Field(
        "coarse",
        description="first iterate when no `initial` is given: 'coarse' (the game solved by finite volumes on a "
        "4x coarser grid, interpolated; 1-D, methods 'adaptive' and 'picard') or 'm0' (m(t) = m0: the start of 0.3)",
    )

    def replace(self, **changes: Any) -> SolverOptions:
        """A validated copy with ``changes``."""
        return type(self).model_validate({**dict(self), **changes})

    def to_attrs(self) -> dict[str, Any]:
        return schema.prefixed(schema.SOLVER, dict(self))

    def check_memory(self, problem: Problem) -> None:
        """``ValueError`` (naming n_particles) when one solve of ``problem`` with these options
        cannot fit in this machine's memory: the (t, x) arrays and the particles' arrays."""
        have = physical_memory()
        if have is None or self.fp != "particles":
            return
        need = problem.memory_estimate() + PARTICLE_ARRAYS * 8 * self.n_particles
        if need > have:
            raise ValueError(
                f"n_particles = {self.n_particles} needs about {need / 2**30:.3g} GiB per solve "
                f"({PARTICLE_ARRAYS} float64 arrays of particles), more than this machine's {have / 2**30:.3g} GiB"
            )


@dataclass
class History:
    """Residuals of each iteration and why the iteration stopped."""

    residual_u: list[float] = field(default_factory=list)
    residual_m: list[float] = field(default_factory=list)
    converged: bool = False
    reason: str = "max_iter reached"
    evaluations: int = 0
    """Evaluations of G (one per iteration for every method so far)."""
    backtracks: int = 0
    """Times the adaptive method went back to its best iterate, or a Newton step was halved."""
    newton_steps: int = 0
    """Iterations computed by a Newton–Krylov step (method "newton", or "adaptive" after it switched)."""
    start: str = "m0"
    """Where the first iterate came from: "m0", "initial", "monotone scheme" (method "newton")
    or "coarse (...)" (:func:`_coarse_start`)."""

    @property
    def residual(self) -> FloatArray:
        return np.maximum(np.array(self.residual_u), np.array(self.residual_m))


def sample_initial_particles(problem: Problem, n: int, seed: int) -> FloatArray:
    """n particles drawn from m0 on [lo, hi] by inverting a CDF at the uniforms of the Philox
    stream (seed, 0, STREAM_INIT): the same particles for every backend and thread count.

    * A family with an exact ``mass`` (gaussian, uniform, mixture) is sampled from its exact
      distribution restricted to [lo, hi]: x solves F(x) = U with F(x) = mass(lo, x)/mass(lo, hi),
      by Newton's method on F (F' = m0/mass(lo, hi)) safeguarded by bisection on a bracket
      that shrinks every step, started from the inverse of the interpolant's CDF below and
      stopped when the step is below 2⁻⁵⁰·(hi − lo) (the bracket alone would take ≤ 60 steps).
    * Any other m0 (values on the grid, a callable) is known only at the nodes: its particles
      follow the piecewise-linear interpolant of m0 exactly (:func:`interpolant_quantiles`).

    Uniform-within-cell sampling of the cell masses (the former method) adds about dx²/12 to
    the variance of m0; both methods above are exact for the density they sample.
    """
    u = rng.uniforms(seed, 0, rng.STREAM_INIT, n)
    x, m0 = problem.grid(), problem.initial_density()
    if problem.bc == "periodic":  # the period's last cell runs from the last node to hi ≡ lo
        x, m0 = np.r_[x, problem.hi], np.r_[m0, m0[0]]
    start = interpolant_quantiles(x, m0, u)
    family = problem.m0
    if not hasattr(family, "mass"):
        return start
    lo, hi = problem.lo, problem.hi
    total = float(family.mass(lo, np.float64(hi), lo, hi))
    if not (np.isfinite(total) and total > 0):
        return start

    def residual(y: FloatArray, idx: FloatArray) -> FloatArray:
        return family.mass(lo, y, lo, hi) / total - u[idx]

    return _invert_monotone(residual, lambda y: family(y, lo, hi) / total, start, lo, hi)


def _invert_monotone(
    residual: Callable[[FloatArray, FloatArray], FloatArray],
    slope: Callable[[FloatArray], FloatArray],
    start: FloatArray,
    lo: float,
    hi: float,
) -> FloatArray:
    """The roots in [lo, hi] of residual(x, idx), increasing in x (idx: which entries x holds),
    by Newton steps kept inside a bracket [a, b] with residual(a) ≤ 0 ≤ residual(b), bisecting
    when a step leaves it. An entry is done when its residual is within 2⁻⁵² (the accuracy of
    a CDF of uniforms of resolution 2⁻⁵³) or its step is below 2⁻⁵⁰·(hi − lo)."""
    x = np.clip(start, lo, hi)
    idx = np.arange(x.size)
    a, b = np.full_like(x, lo), np.full_like(x, hi)
    tol = 2.0**-50 * (hi - lo)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for _ in range(200):
            xi = x[idx]
            r = residual(xi, idx)
            ai = np.where(r <= 0, xi, a[idx])
            bi = np.where(r >= 0, xi, b[idx])
            nxt = xi - r / slope(xi)
            nxt = np.where((nxt > ai) & (nxt < bi), nxt, 0.5 * (ai + bi))  # the test is False for NaN, inf
            done = (np.abs(r) <= 2.0**-52) | (np.abs(nxt - xi) <= tol)
            x[idx] = np.where(np.abs(r) <= 2.0**-52, xi, nxt)
            a[idx], b[idx] = ai, bi
            idx = idx[~done]
            if idx.size == 0:
                break
    return x


def interpolant_quantiles(x: FloatArray, m: FloatArray, u: FloatArray) -> FloatArray:
    """The quantiles at ``u`` ∈ (0, 1) of the density proportional to the piecewise-linear
    interpolant of m ≥ 0 at the nodes x: in the cell [xᵢ, xᵢ + h] with end values a, b the mass
    up to xᵢ + y is a·y + (b − a)·y²/(2h), so the offset with mass r is the root of that
    quadratic, y = 2r/(a + √(a² + 2(b − a)r/h)) (the form without cancellation)."""
    h = np.diff(x)
    cdf = np.r_[0.0, np.cumsum(0.5 * (m[1:] + m[:-1]) * h)]
    t = u * cdf[-1]
    # the cell with cdf[i] ≤ t < cdf[i + 1]: one of positive mass (t > 0 lies past a flat stretch)
    i = np.clip(np.searchsorted(cdf, t, side="right") - 1, 0, h.size - 1)
    r = np.maximum(t - cdf[i], 0.0)
    a, b, hi = m[i], m[i + 1], h[i]
    root = np.sqrt(np.maximum(a * a + 2.0 * (b - a) * r / hi, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(r > 0, 2.0 * r / (a + root), 0.0)
    return np.clip(x[i] + np.clip(y, 0.0, hi), x[0], x[-1])


SAMPLING_ROUNDS = 64
"""Rounds of candidates :func:`sample_initial_particles_2d` draws before it gives up."""


def sample_initial_particles_2d(problem: Problem2D, n: int, seed: int) -> FloatArray:
    """n particles (n, 2) drawn from m0 in the room, from the uniforms of the Philox stream
    (seed, r, STREAM_INIT) of round r = 0, 1, …: the same particles for every backend and
    thread count.

    Each round draws n candidates, three uniforms (u_x, u_y, u_c) each; candidates in an
    obstacle's cell are rejected and the first n accepted are kept (rejection sampling of m0
    restricted to the free part of the room).

    * gaussian and mixture (products of 1-D gaussians) are sampled exactly, restricted to the
      rectangle: u_c picks component k with probability ∝ w_k·M_k (M_k its mass in the
      rectangle), then x and y invert the component's 1-D truncated CDFs at u_x and u_y (as in
      :func:`sample_initial_particles`); "uniform" is x_lo + u_x·(x_hi − x_lo), likewise y;
    * any other m0 (values, a callable) is known at the nodes only: u_c picks a node with
      probability w·m0 (its cell mass), and (u_x, u_y) a point uniform in its cell (half cells
      at walls) — which adds about (dx² + dy²)/12 to the variance.
    """
    from mfg_ensemble.game.problem import Gaussian as Gaussian1D

    nodes = problem.nodes()
    x_lo, x_hi, y_lo, y_hi = problem.box
    components = problem.m0.components() if hasattr(problem.m0, "components") else None
    out = np.empty((n, 2))
    filled = 0
    for r in range(SAMPLING_ROUNDS):
        ux, uy, uc = rng.uniforms(seed, r, rng.STREAM_INIT, 3 * n).reshape(n, 3).T
        if components is not None:
            cand = np.empty((n, 2))
            mass = []
            for w, (mx, my), (sx, sy) in components:
                gx, gy = Gaussian1D(mean=mx, std=sx), Gaussian1D(mean=my, std=sy)
                mass.append(w * _box_mass(gx, x_lo, x_hi) * _box_mass(gy, y_lo, y_hi))
            k = np.minimum(np.searchsorted(np.cumsum(mass) / sum(mass), uc, side="right"), len(mass) - 1)
            for c, (_, (mx, my), (sx, sy)) in enumerate(components):
                pick = k == c
                for axis, (u, mu, sd, lo, hi) in enumerate(((ux, mx, sx, x_lo, x_hi), (uy, my, sy, y_lo, y_hi))):
                    cand[pick, axis] = _truncated_gaussian(u[pick], Gaussian1D(mean=mu, std=sd), lo, hi)
        elif problem.m0.kind == "uniform":
            cand = np.column_stack([x_lo + ux * (x_hi - x_lo), y_lo + uy * (y_hi - y_lo)])
        else:
            cand = _cell_samples(problem, ux, uy, uc)
        take = cand[~in_obstacle(problem, nodes, cand)][: n - filled]
        out[filled : filled + take.shape[0]] = take
        filled += take.shape[0]
        if filled == n:
            return out
    raise ValueError(
        f"m0 puts too little mass outside the obstacles: {filled} of {n} particles after {SAMPLING_ROUNDS} rounds"
    )


def _box_mass(family: Any, lo: float, hi: float) -> float:
    """The mass of the 1-D ``family`` in [lo, hi]."""
    return float(family.mass(lo, np.float64(hi), lo, hi))


def _truncated_gaussian(u: FloatArray, family: Any, lo: float, hi: float) -> FloatArray:
    """The quantiles at u of the 1-D ``family`` restricted to [lo, hi] (Newton–bisection)."""
    total = _box_mass(family, lo, hi)

    def residual(y: FloatArray, idx: FloatArray) -> FloatArray:
        return family.mass(lo, y, lo, hi) / total - u[idx]

    return _invert_monotone(residual, lambda y: family(y, lo, hi) / total, lo + u * (hi - lo), lo, hi)


def _cell_samples(problem: Problem2D, ux: FloatArray, uy: FloatArray, uc: FloatArray) -> FloatArray:
    """Points uniform in the cells of nodes picked with probability w·m0 (u_c), at (u_x, u_y)."""
    cdf = np.cumsum((problem.initial_density() * problem.quadrature_weights()).ravel())
    node = np.minimum(np.searchsorted(cdf / cdf[-1], uc, side="right"), cdf.size - 1)
    j, i = np.divmod(node, problem.nx)
    x, y = problem.grid()
    out = []
    for u, c, d, lo, hi, bc in (
        (ux, x[i], problem.dx, problem.x_lo, problem.x_hi, problem.bc[0]),
        (uy, y[j], problem.dy, problem.y_lo, problem.y_hi, problem.bc[1]),
    ):
        if bc == "periodic":
            out.append(lo + np.mod(c + (u - 0.5) * d - lo, hi - lo))
        else:
            a, b = np.maximum(c - 0.5 * d, lo), np.minimum(c + 0.5 * d, hi)
            out.append(a + u * (b - a))
    return np.column_stack(out)


def in_obstacle(problem: Problem2D, nodes: np.ndarray, points: FloatArray) -> np.ndarray:
    """Whether each point (n, 2) lies in an obstacle node's cell (the nearest node is an obstacle)."""
    idx = []
    for col, lo, d, n, bc in (
        (0, problem.x_lo, problem.dx, problem.nx, problem.bc[0]),
        (1, problem.y_lo, problem.dy, problem.ny, problem.bc[1]),
    ):
        k = np.floor((points[:, col] - lo) / d + 0.5).astype(np.int64)
        idx.append(np.mod(k, n) if bc == "periodic" else np.clip(k, 0, n - 1))
    return nodes[idx[1], idx[0]] == 1


FLOOR_RESETS = (0.5, 0.05)
"""Residuals at which the sub-step floors are reset to the counts of the current iterate (each
once, the first time the residual of an evaluation of G falls below it)."""
FLOOR_RESET_MIN = 1e-3
"""A threshold crossed by a residual already below this is skipped: that close to the solution
a reset would cost more iterations (G moves by a time-discretisation difference) than it saves."""


class SubstepFloors:
    """The ``min_substeps`` of one march over a solve (one int per output interval).

    After each march the floors are raised to the sub-step counts it used (they only grow), so
    that G stops changing its sub-steps once they have settled. A :meth:`reset` makes the next
    march run without floors and take its counts as the new floors: the counts of the current
    iterate, so that a wild early iterate does not slow every later march.
    """

    def __init__(self, intervals: int) -> None:
        self.values = np.ones(intervals, dtype=np.int64)
        self.pending_reset = False

    def next(self) -> IntArray | None:
        """The ``min_substeps`` of the next march (None after a reset: no floor)."""
        return None if self.pending_reset else self.values

    def record(self, counts: IntArray) -> bool:
        """Take the counts of the march just run; whether the floors changed."""
        counts = np.asarray(counts, dtype=np.int64)
        new = counts.copy() if self.pending_reset else np.maximum(self.values, counts)
        changed = not np.array_equal(new, self.values)
        self.values, self.pending_reset = new, False
        return changed

    def reset(self) -> None:
        self.pending_reset = True


class FixedPointMap:
    """The map G: m ↦ FP(HJB(m)) of one problem with fixed options, and its two marches.

    The sub-step floors of the marches (:class:`SubstepFloors`, read as ``hjb_floor`` and
    ``fp_floor``) grow with the counts each march uses, and are reset to the counts of the
    current iterate when the residual of an evaluation (max of res_u, res_m, measured here on
    successive calls as the solver does) first falls below each of ``FLOOR_RESETS`` (0.5, then
    0.05; skipped below ``FLOOR_RESET_MIN``). So the counts forced by the wild first iterates
    are forgotten, G changes its sub-steps at most twice by a reset, and after the last reset
    the floors only grow: bounded, they settle and G is a fixed map near the solution.
    ``floor_resets`` lists the evaluations (1-based) after which a reset was made.
    """

    def __init__(self, problem: Problem | Problem2D, opts: SolverOptions, backend: str | None) -> None:
        self.problem, self.opts, self.backend = problem, opts, backend
        self.grid = problem.grid()
        self.common: dict[str, Any] = dict(sigma=problem.sigma, T=problem.T, bc=problem.bc, backend=backend)
        if isinstance(problem, Problem2D):
            self.common.update(dy=problem.dy, nodes=problem.nodes())
        self.terminal = problem.terminal_values()
        self.m0 = problem.initial_density()
        self.exited: FloatArray | None = np.zeros(problem.nt) if problem.ndim == 2 else None
        """The mass that has left through the exits by each output time (2-D), of the last FP march."""
        self.hjb_floors = SubstepFloors(problem.nt - 1)
        self.fp_floors = SubstepFloors(problem.nt - 1)
        self.floor_resets: list[int] = []
        self._resets_left = list(FLOOR_RESETS)
        self._evaluations = 0
        self._m: FloatArray | None = None
        self._u: FloatArray | None = None
        self._u_prev: FloatArray | None = None
        self._probing = False
        self.floors_changed = False
        """Whether the last evaluation changed a march's sub-step floors (so G changed there)."""
        if opts.fp == "particles":
            self.x0 = (
                sample_initial_particles_2d(problem, opts.n_particles, opts.seed)
                if isinstance(problem, Problem2D)
                else sample_initial_particles(problem, opts.n_particles, opts.seed)
            )

    @property
    def hjb_floor(self) -> IntArray:
        """The HJB march's current sub-step floors."""
        return self.hjb_floors.values

    @property
    def fp_floor(self) -> IntArray:
        """The FP march's current sub-step floors."""
        return self.fp_floors.values

    def evaluate(self, m: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(u, G(m)) = (HJB(m), FP(HJB(m))), an iterate of the solve."""
        u = self.hjb(m)
        return u, self.fp(u)

    def probe(self, m: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(u, G(m)) at the current floors, which it leaves as they are and which count no
        evaluation: G near an iterate, for difference quotients."""
        self._probing = True
        try:
            u = self.hjb(m)
            return u, self.fp(u)
        finally:
            self._probing = False

    def hjb(self, m: FloatArray) -> FloatArray:
        f = self.problem.running_cost(m)
        floor = self.hjb_floors.values if self._probing else self.hjb_floors.next()
        kw = dict(dx=self.problem.dx, variant=self.opts.hjb_variant, min_substeps=floor)
        if self.problem.ndim == 2:
            u, counts = hjb_backward_2d(f, self.terminal, **kw, **self.common)
        else:
            u, counts = hjb_backward(f, self.terminal, scheme=self.opts.hjb_scheme, **kw, **self.common)
        if not self._probing:
            self.floors_changed = self.hjb_floors.record(counts)
            self._m, self._u_prev, self._u = m, self._u, u
        return u

    def fp(self, u: FloatArray) -> FloatArray:
        floor = self.fp_floors.values if self._probing else self.fp_floors.next()
        if self.problem.ndim == 2:
            m, counts = self._fp_2d(u, floor)
        elif self.opts.fp == "fv":
            m, counts = fv_forward(
                u, self.m0, dx=self.problem.dx, scheme=self.opts.fv_scheme, min_substeps=floor, **self.common
            )
        else:
            m, counts = particles_forward(
                self.x0,
                u,
                self.grid,
                lo=self.problem.lo,
                hi=self.problem.hi,
                seed=self.opts.seed,
                method=self.opts.kde_method,
                bandwidth=self.opts.bandwidth,
                min_substeps=floor,
                **self.common,
            )
        if not self._probing:
            self.floors_changed |= self.fp_floors.record(counts)
            self._after_evaluation(u, m)
        return m

    def _fp_2d(self, u: FloatArray, floor: IntArray | None) -> tuple[FloatArray, IntArray]:
        """The 2-D FP march (finite volumes or particles); keeps its exited mass."""
        p = self.problem
        assert isinstance(p, Problem2D)
        if self.opts.fp == "fv":
            m, counts, exited = fv_forward_2d(u, self.m0, dx=p.dx, min_substeps=floor, **self.common)
        else:
            common = {k: v for k, v in self.common.items() if k != "dy"}
            m, counts, exited = particles_forward_2d(
                self.x0,
                u,
                lo=(p.x_lo, p.y_lo),
                hi=(p.x_hi, p.y_hi),
                seed=self.opts.seed,
                method=self.opts.kde_method,
                bandwidth=self.opts.bandwidth,
                min_substeps=floor,
                **common,
            )
        self.exited = exited
        return m, counts

    def _after_evaluation(self, u: FloatArray, g: FloatArray) -> None:
        """Count the evaluation of G and reset the floors where its residual says so."""
        self._evaluations += 1
        if self._m is None or self._u is not u or self._u_prev is None:
            return  # not a full evaluation m -> HJB -> FP, or the first one: no residual yet
        residual = max(relative_change(u, self._u_prev), relative_change(g, self._m))
        crossed = [level for level in self._resets_left if residual < level]
        if not crossed:
            return
        self._resets_left = [level for level in self._resets_left if level not in crossed]
        if residual >= FLOOR_RESET_MIN:
            self.hjb_floors.reset()
            self.fp_floors.reset()
            self.floor_resets.append(self._evaluations)


Callback = Callable[[int, float, float], None]
"""Called after every iteration with (iteration, residual_u, residual_m)."""


def iterate(
    G: FixedPointMap,
    opts: SolverOptions,
    callback: Callback | None = None,
    initial: FloatArray | None = None,
    started: float | None = None,
) -> tuple[FloatArray, FloatArray, History]:
    """The coupling iteration ``opts.method`` from ``initial`` (the density history m(t, x);
    None: m(t) = m0 at every t, or for "newton" the monotone scheme's solution); returns the
    last u, the last raw density G(m) and the history. Every iterate m costs one evaluation of
    G for "adaptive" and "picard" and the Krylov and line-search evaluations for "newton".
    ``started``: the ``time.perf_counter()`` from which ``time_limit`` counts (None: now)."""
    history = History()
    advance = _advance(G, opts, history)
    if initial is None and opts.method != "newton":
        initial = np.repeat(G.m0[None, :], G.problem.nt, axis=0)
    m = initial.copy() if initial is not None else advance.start()
    u_prev: FloatArray | None = None
    u, g = np.full_like(m, np.nan), np.full_like(m, np.nan)
    started = time.perf_counter() if started is None else started
    try:
        u, g = G.evaluate(m)
        history.evaluations += 1
        for _ in range(opts.max_iter):
            history.residual_u.append(relative_change(u, u_prev) if u_prev is not None else 1.0)
            history.residual_m.append(relative_change(g, m))
            if callback is not None:
                callback(len(history.residual_m), history.residual_u[-1], history.residual_m[-1])
            if history.residual_u[-1] < opts.tol and history.residual_m[-1] < opts.tol:
                history.converged, history.reason = True, "tolerance reached"
                return u, g, history
            if opts.time_limit is not None and time.perf_counter() - started > opts.time_limit:
                history.reason = f"time limit reached ({opts.time_limit:g} s)"
                return u, g, history
            if len(history.residual_m) == opts.max_iter:
                break
            u_prev = u
            m, u, g = advance(m, u, g)
            history.evaluations, history.backtracks = advance.evaluations, advance.backtracks
            history.newton_steps = advance.newton_steps
            if advance.stall_reason is not None:
                history.reason = f"newton stalled: {advance.stall_reason}"
                return u, g, history
            if not np.isfinite(m).all():
                history.reason = "diverged: the iterate is not finite"
                return u, g, history
    except Diverged as exc:
        history.reason = f"diverged: {exc}"
    return u, g, history


class _Mixing:
    """The next iterate of "adaptive" or "picard": m' = mixer(m, G(m)), then (u', G(m'))."""

    newton_steps = 0
    stall_reason: str | None = None

    def __init__(self, G: FixedPointMap, mixer: Anderson | Safeguarded) -> None:
        self.G, self.mixer, self.evaluations = G, mixer, 1

    @property
    def backtracks(self) -> int:
        return getattr(self.mixer, "restarts", 0)

    def __call__(self, m: FloatArray, u: FloatArray, g: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        if self.G.floors_changed and isinstance(self.mixer, Safeguarded):
            self.mixer.forget_best()
        m = self.mixer.step(m.ravel(), g.ravel()).reshape(m.shape)
        if not np.isfinite(m).all():
            return m, u, g
        self.evaluations += 1
        return (m, *self.G.evaluate(m))


STALL_WINDOW = 10
"""Iterations over which the adaptive method must halve its best residual (or else switch)."""
SWITCH_BUDGET = 50
"""Iterations within which the adaptive method, at its rate over the last STALL_WINDOW, must
reach the tolerance (or else switch), judged from iteration 2·STALL_WINDOW on."""


class _Adaptive:
    """ "adaptive": :class:`Safeguarded` mixing while it makes progress; then, for a 1-D game
    with a local coupling, Newton–Krylov (:class:`_Newton`) from the better of its best
    iterate (lowest res_m) and the monotone scheme's solution near it. It switches when the best residual has not
    halved over the last ``STALL_WINDOW`` iterations, or (from iteration 2·STALL_WINDOW on)
    when its rate over them would not reach ``tol`` within ``SWITCH_BUDGET`` iterations:
    one-evaluation steps are cheap where they work, and Newton where they cannot."""

    def __init__(self, G: FixedPointMap, opts: SolverOptions, history: History) -> None:
        self.G, self.tol, self.history = G, opts.tol, history
        self.mixing = _Mixing(G, Safeguarded(depth=opts.anderson or ADAPTIVE_DEPTH, damping=opts.damping))
        self.newton: _Newton | None = None
        self.can_switch = G.problem.ndim == 1 and hasattr(G.problem.coupling, "derivative")
        self.best: tuple[float, FloatArray] | None = None
        """(res_m, m) of the best iterate the mixing met: Newton starts from it (re-evaluated at
        the floors of the switch), not from the last iterate (at crowd_log σ = 0.02, λ = 5 the
        first mixing step from a start of residual 0.016 lands at 0.99, and it never gets back)."""

    @property
    def evaluations(self) -> int:
        return self.mixing.evaluations + (self.newton.evaluations if self.newton is not None else 0)

    @property
    def backtracks(self) -> int:
        return self.mixing.backtracks + (self.newton.backtracks if self.newton is not None else 0)

    @property
    def newton_steps(self) -> int:
        return self.newton.newton_steps if self.newton is not None else 0

    @property
    def stall_reason(self) -> str | None:
        return self.newton.stall_reason if self.newton is not None else None

    def __call__(self, m: FloatArray, u: FloatArray, g: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        if self.newton is not None:
            return self.newton(m, u, g)
        residual = self.history.residual_m[-1]  # relative_change(g, m), recorded by iterate
        if self.best is None or residual < self.best[0]:
            self.best = (residual, m)
        if not (self.can_switch and self._stalled()):
            return self.mixing(m, u, g)
        self.newton = _Newton(self.G, evaluations=0)
        if self.best[1] is not m:  # G at the best iterate with the floors of now
            m = self.best[1]
            self.newton.krylov.evaluations += 1
            u, g = self.G.evaluate(m)
        start = self.newton.start(near=(u, np.maximum(m, 0.0)))
        self.newton.krylov.evaluations += 1
        u_s, g_s = self.G.evaluate(start)
        if relative_change(g_s, start) < relative_change(g, m):
            m, u, g = start, u_s, g_s
        return self.newton(m, u, g)

    def _stalled(self) -> bool:
        """No halving of the best residual over the window, or a rate too slow for the budget."""
        res, w = self.history.residual, STALL_WINDOW
        k = res.size
        if not_halved(res, w):
            return True
        if k < 2 * w or res[-1] <= self.tol:
            return False
        before, now = res[:-w].min(), res[-w:].min()
        rate = (now / before) ** (1.0 / w)
        return k + np.log(self.tol / res[-1]) / np.log(rate) > SWITCH_BUDGET


def _advance(G: FixedPointMap, opts: SolverOptions, history: History) -> _Mixing | _Newton | _Adaptive:
    """The iteration ``opts.method`` as a step m, u, G(m) ↦ m', u', G(m') (the adaptive
    method reads the residuals recorded in ``history``)."""
    if opts.method == "picard":
        return _Mixing(G, Anderson(depth=opts.anderson, damping=opts.damping))
    if opts.method == "newton":
        return _Newton(G)
    return _Adaptive(G, opts, history)


class _Newton:
    """The next iterate of "newton" (:class:`~mfg_ensemble.game.newton.NewtonKrylov`); its
    start, when none is given, is the solution of the monotone scheme."""

    def __init__(self, G: FixedPointMap, evaluations: int = 1) -> None:
        assert isinstance(G.problem, (Problem, Problem2D))
        self.scheme = MonotoneScheme(G.problem)
        self.krylov = NewtonKrylov(self.scheme, G.evaluate, G.probe, evaluations=evaluations)

    evaluations = property(lambda self: self.krylov.evaluations)
    backtracks = property(lambda self: self.krylov.backtracks)
    newton_steps = property(lambda self: self.krylov.steps)
    stall_reason = property(lambda self: self.krylov.stall_reason)

    def start(self, near: tuple[FloatArray, FloatArray] | None = None) -> FloatArray:
        """The monotone scheme's m, solved from ``near`` = (u, m) if given (else from g, m0)."""
        _, m, _, _ = self.scheme.solve(near=near)
        return np.maximum(m, 0.0)

    def __call__(self, m: FloatArray, u: FloatArray, g: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        return self.krylov.step(m, u, g)


def solve(
    problem: Problem | Problem2D,
    options: SolverOptions | Mapping[str, Any] | None = None,
    *,
    backend: str | None = None,
    callback: Callback | None = None,
    initial: ArrayLike | xr.Dataset | None = None,
    **overrides: Any,
) -> xr.Dataset:
    """Solve the mean field game ``problem`` (see the module docstring).

    ``options``: a :class:`SolverOptions` (or a dict of its fields); ``overrides``: any of its
    fields as keywords (``solve(p, fp="fv", tol=1e-8)``), which win over ``options``.
    ``backend``: the kernels' backend (None, "rust" or "numpy"). Returns an
    ``xarray.Dataset`` laid out as :mod:`mfg_ensemble.schema` says: ``u(t, x)``, ``m(t, x)``,
    ``residual``, ``residual_u`` and ``residual_m`` along ``iteration``, and attrs
    ``converged``, ``reason``, ``iterations``, ``wall_time`` (s), ``backend``, every problem
    (``problem.*``) and solver (``solver.*``) parameter and the package versions. A blown-up
    solve is returned (not raised) with ``converged=False``. ``callback(iteration,
    residual_u, residual_m)``, if given, is called after every iteration. ``initial``: a warm
    start, the first iterate of m (an (nt, nx) array of densities, or the result of another
    solve on the same grid, e.g. a neighbouring parameter's); None starts from m(t) = m0.
    """
    opts = SolverOptions.model_validate({**dict(options or {}), **overrides})
    opts.check_memory(problem)
    check_dimension(problem, opts)
    first = _initial(problem, initial)
    active = _backend.resolve(backend)
    started = time.perf_counter()
    start = "initial"
    if first is None:
        first, start = _coarse_start(problem, opts, active)
    if initial is None and opts.start == "coarse":
        G, u, m, history, start = _iterate(problem, opts, active, callback, first, start, started)
    else:
        G = FixedPointMap(problem, opts, active)
        u, m, history = iterate(G, opts, callback, first, started)
    history.start = start
    wall = time.perf_counter() - started
    return to_dataset(problem, opts, u, m, history, wall, active, exited=G.exited)


def _coarse_start(problem: Problem | Problem2D, opts: SolverOptions, backend: str) -> tuple[FloatArray | None, str]:
    """The first iterate of ``start = "coarse"`` (:mod:`mfg_ensemble.game.coarse`) and what it was,
    for attrs["start"]: the game solved by finite volumes on the coarse grid to
    ``max(tol, COARSE_TOL)`` (itself from a coarser start while the grids allow), prolonged to
    ``problem``'s grid; ``(None, "m0")`` where it does not apply (2-D, a grid too coarse to
    coarsen) or the coarse solve did not converge; ``(None, "monotone scheme")`` for method
    "newton", which starts from that scheme's solution."""
    if opts.method == "newton":
        return None, "monotone scheme"
    coarse = coarse_problem(problem) if isinstance(problem, Problem) else None
    if opts.start != "coarse" or coarse is None:
        return None, "m0"
    loose = opts.replace(fp="fv", tol=max(opts.tol, COARSE_TOL))
    result = solve(coarse, loose, backend=backend)
    done = f"{result.attrs['iterations']} iterations on nx = {coarse.nx}"
    if not result.attrs["converged"]:
        return None, f"m0 (the coarse solve stopped after {done}: {result.attrs['reason']})"
    return prolong(result["m"].values, coarse, problem), f"coarse ({done}, tol {loose.tol:g})"


CONTINUATION_FACTOR = 2.0
"""The noise of a continuation restart (:func:`_iterate`): σ times this."""
CONTINUATION_LEVELS = 2
"""Continuation restarts one solve may nest (at σ·2, then σ·4)."""


def _iterate(
    problem: Problem | Problem2D,
    opts: SolverOptions,
    backend: str,
    callback: Callback | None,
    first: FloatArray | None,
    start: str,
    started: float | None,
    levels: int = CONTINUATION_LEVELS,
) -> tuple[FixedPointMap, FloatArray, FloatArray, History, str]:
    """:func:`iterate` from ``first`` (described by ``start``) and, where Newton stalled in a
    1-D game with σ > 0, once more from a continuation start in the noise: the game on the same
    grid at σ·CONTINUATION_FACTOR solved by finite volumes to ``tol`` (from its own coarse start,
    and itself restarted so while ``levels`` allow): not looser, as the solve returns the image
    G(m_k), whose error is the iterate's residual times |G'| ~ 10²–10³ (at 1e-3 the start's
    residual was 0.5). Returns the map, u, m,
    the history of the last iteration and what its first iterate was.

    Why: at strong coupling and low noise (crowd_log and two_exits at σ = 0.02, λ = 5) the
    fixed-point map amplifies errors of m by 10²–10³ and is linear only within ~1e-3 of them,
    so Newton converges only from close by. Neither the coarse solution (residual 0.66 on the
    fine grid) nor the monotone scheme's (0.30: its numerical diffusion |α|dx/2 + α²Δt/2 is up
    to 100 times σ²/2 there) is; the high-order solution at 2σ–2.5σ is (0.03), as the solution
    barely moves with σ there (the congestion shapes it)."""
    G = FixedPointMap(problem, opts, backend)
    u, m, history = iterate(G, opts, callback, first, started)
    stalled = not history.converged and history.reason.startswith("newton stalled")
    if not (stalled and levels > 0 and isinstance(problem, Problem) and problem.sigma > 0):
        return G, u, m, history, start
    wider = problem.replace(sigma=CONTINUATION_FACTOR * problem.sigma)
    same = opts.replace(fp="fv", time_limit=None)
    first_w, start_w = _coarse_start(wider, same, backend)
    _, _, m_w, history_w, start_w = _iterate(wider, same, backend, None, first_w, start_w, None, levels - 1)
    if not history_w.converged:
        return G, u, m, history, start
    stopped = f"{len(history.residual_m)} iterations from {start} stalled"
    G = FixedPointMap(problem, opts, backend)
    u, m, history = iterate(G, opts, callback, m_w, started)
    n = len(history_w.residual_m)
    return G, u, m, history, f"continuation ({n} iterations at sigma = {wider.sigma:g} from {start_w}; {stopped})"


TWO_D_SCHEMES = {"hjb_scheme": "imex", "fv_scheme": "muscl2"}
"""The only schemes of the 2-D kernels."""


def check_dimension(problem: Problem | Problem2D, opts: SolverOptions) -> None:
    """``ValueError`` naming the option when ``opts`` asks a 2-D problem for a 1-D-only scheme,
    or method = "newton" for a coupling without a local derivative."""
    if opts.method == "newton":
        if not hasattr(problem.coupling, "derivative"):
            raise ValueError(
                f"method = 'newton' needs a local coupling (zero, linear, log, power), got coupling.kind = "
                f"{problem.coupling.kind!r}"
            )
    if problem.ndim != 2:
        return
    for name, only in TWO_D_SCHEMES.items():
        if getattr(opts, name) != only:
            raise ValueError(f"{name} = {getattr(opts, name)!r} is 1-D only; 2-D games use {name} = {only!r}")


def _initial(problem: Problem | Problem2D, initial: ArrayLike | xr.Dataset | None) -> FloatArray | None:
    """A warm start checked: finite, non-negative, shaped (nt, nx) (2-D: (nt, ny, nx));
    ``ValueError`` otherwise."""
    if initial is None:
        return None
    values = np.asarray(initial["m"] if isinstance(initial, xr.Dataset) else initial, dtype=np.float64)
    shape, names = (problem.nt, problem.nx), "(nt, nx)"
    if isinstance(problem, Problem2D):
        shape, names = (problem.nt, problem.ny, problem.nx), "(nt, ny, nx)"
    if values.shape != shape:
        raise ValueError(f"initial must be a density history of shape {names} = {shape}, got {values.shape}")
    if not np.isfinite(values).all() or values.min() < 0:
        raise ValueError("initial must be finite and non-negative (a density history m(t, x))")
    return values


def to_dataset(
    problem: Problem | Problem2D,
    opts: SolverOptions,
    u: FloatArray,
    m: FloatArray,
    history: History,
    wall: float,
    backend: str,
    exited: FloatArray | None = None,
) -> xr.Dataset:
    """The labelled result of one solve (layout: :mod:`mfg_ensemble.schema`): fields over (t, x),
    or over (t, y, x) with the coordinate ``nodes`` (y, x) and ``exited`` (t) in 2-D."""
    n = len(history.residual_m)
    grid = schema.grid_dims(False, problem.ndim)
    coords = {
        schema.T: (schema.T, problem.times(), schema.attrs(schema.T)),
        schema.ITERATION: (schema.ITERATION, np.arange(1, n + 1), schema.attrs(schema.ITERATION)),
    }
    if isinstance(problem, Problem2D):
        x, y = problem.grid()
        coords[schema.X] = (schema.X, x, schema.attrs(schema.X))
        coords[schema.Y] = (schema.Y, y, schema.attrs(schema.Y))
        coords[schema.NODES] = ((schema.Y, schema.X), problem.nodes().astype(np.int8), schema.attrs(schema.NODES))
    else:
        coords[schema.X] = (schema.X, problem.grid(), schema.attrs(schema.X))
    values = {
        "u": u,
        "m": m,
        "residual": history.residual,
        "residual_u": history.residual_u,
        "residual_m": history.residual_m,
    }
    data = {name: grid for name in schema.FIELDS} | {name: (schema.ITERATION,) for name in schema.HISTORY}
    if exited is not None:
        values[schema.EXITED], data[schema.EXITED] = exited, (schema.T,)
    attrs: dict[str, Any] = {
        "converged": int(history.converged),
        "reason": history.reason,
        "iterations": n,
        "evaluations": history.evaluations,
        "backtracks": history.backtracks,
        "newton_steps": history.newton_steps,
        "start": history.start,
        "wall_time": wall,
        "backend": backend,
        **problem.to_attrs(),
        **opts.to_attrs(),
        **schema.versions(),
    }
    variables = {
        name: (dims, np.asarray(values[name]), schema.field_attrs(name, problem.ndim)) for name, dims in data.items()
    }
    return xr.Dataset(variables, coords=coords, attrs=attrs)

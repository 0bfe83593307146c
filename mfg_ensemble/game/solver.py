"""One mean-field-game solve: HJB backward, Fokker–Planck forward, coupled by a fixed point.

Given a :class:`~mfg_ensemble.problem.Problem` (domain, horizon T, σ, potential V, coupling F,
m0, terminal cost g, boundary condition), :func:`solve` looks for the pair (u, m) with

    −∂t u − (σ²/2) ∂xx u + ½ |∂x u|² = V(x) + F(m(t))(x),   u(T) = g      (HJB, backward)
     ∂t m − (σ²/2) ∂xx m − ∂x(m ∂x u) = 0,                   m(0) = m0     (FP, forward)

i.e. a fixed point m = G(m) of G: m ↦ FP(HJB(m)), starting from m(t) = m0, by the iteration
``method`` chooses (:mod:`mfg_ensemble.game.fixed_point`): "adaptive" (the default: Anderson
mixing with residual-based backtracking and a damping that shrinks when a step overshoots and
grows back on success, starting at ``damping``, depth ``anderson`` or 10) or "picard" (fixed
damping β = ``damping``, Anderson-accelerated when ``anderson`` > 0: the iteration of 0.1).
Each iteration evaluates G once (attrs ``evaluations``; ``backtracks`` counts the adaptive
method's returns to its best iterate). The HJB march is
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
from mfg_ensemble.game.fixed_point import Anderson, Safeguarded
from mfg_ensemble.game.problem import Problem, physical_memory
from mfg_ensemble.kernels import backend as _backend
from mfg_ensemble.kernels import fv_forward, hjb_backward, particles_forward
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
    method: Literal["adaptive", "picard"] = Field(
        "adaptive",
        description="coupling iteration: 'adaptive' (Anderson with backtracking and adaptive damping, starting "
        "at β = damping) or 'picard' (fixed damping β, Anderson if anderson > 0: the method of 0.1)",
    )
    tol: PositiveFloat = 1e-6
    max_iter: int = Field(200, ge=1)
    time_limit: PositiveFloat | None = Field(
        None, description="seconds a solve may take; checked after each iteration (None: no limit)"
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
    """Times the adaptive method went back to its best iterate."""

    @property
    def residual(self) -> FloatArray:
        return np.maximum(np.array(self.residual_u), np.array(self.residual_m))


def _l2(x: FloatArray) -> float:
    """The 2-norm by a NumPy reduction, not BLAS: ``np.linalg.norm`` calls the BLAS dot, whose
    threads (OpenBLAS, 2 by default) cost ≈ 3 ms a call on a loaded 2-core machine and spin
    against the Rust kernels — two thirds of a converged FV solve of crowd_log at nx = 201, nt = 101."""
    return float(np.sqrt(np.square(x).sum()))


def _relative_change(new: FloatArray, old: FloatArray) -> float:
    norm = _l2(new)
    return _l2(new - old) / (norm if norm > 0 else 1.0)


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

    def record(self, counts: IntArray) -> None:
        """Take the counts of the march just run."""
        counts = np.asarray(counts, dtype=np.int64)
        self.values = counts.copy() if self.pending_reset else np.maximum(self.values, counts)
        self.pending_reset = False

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

    def __init__(self, problem: Problem, opts: SolverOptions, backend: str | None) -> None:
        self.problem, self.opts, self.backend = problem, opts, backend
        self.grid = problem.grid()
        self.common = dict(sigma=problem.sigma, T=problem.T, bc=problem.bc, backend=backend)
        self.terminal = problem.terminal_values()
        self.m0 = problem.initial_density()
        self.hjb_floors = SubstepFloors(problem.nt - 1)
        self.fp_floors = SubstepFloors(problem.nt - 1)
        self.floor_resets: list[int] = []
        self._resets_left = list(FLOOR_RESETS)
        self._evaluations = 0
        self._m: FloatArray | None = None
        self._u: FloatArray | None = None
        self._u_prev: FloatArray | None = None
        if opts.fp == "particles":
            self.x0 = sample_initial_particles(problem, opts.n_particles, opts.seed)

    @property
    def hjb_floor(self) -> IntArray:
        """The HJB march's current sub-step floors."""
        return self.hjb_floors.values

    @property
    def fp_floor(self) -> IntArray:
        """The FP march's current sub-step floors."""
        return self.fp_floors.values

    def hjb(self, m: FloatArray) -> FloatArray:
        f = self.problem.running_cost(m)
        u, counts = hjb_backward(
            f,
            self.terminal,
            dx=self.problem.dx,
            variant=self.opts.hjb_variant,
            scheme=self.opts.hjb_scheme,
            min_substeps=self.hjb_floors.next(),
            **self.common,
        )
        self.hjb_floors.record(counts)
        self._m, self._u_prev, self._u = m, self._u, u
        return u

    def fp(self, u: FloatArray) -> FloatArray:
        floor = self.fp_floors.next()
        if self.opts.fp == "fv":
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
        self.fp_floors.record(counts)
        self._after_evaluation(u, m)
        return m

    def _after_evaluation(self, u: FloatArray, g: FloatArray) -> None:
        """Count the evaluation of G and reset the floors where its residual says so."""
        self._evaluations += 1
        if self._m is None or self._u is not u or self._u_prev is None:
            return  # not a full evaluation m -> HJB -> FP, or the first one: no residual yet
        residual = max(_relative_change(u, self._u_prev), _relative_change(g, self._m))
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
    G: FixedPointMap, opts: SolverOptions, callback: Callback | None = None, initial: FloatArray | None = None
) -> tuple[FloatArray, FloatArray, History]:
    """The fixed-point iteration from ``initial`` (the density history m(t, x); None: m(t) = m0
    at every t); returns the last u, the last raw density G(m) and the history."""
    history = History()
    mixer: Anderson | Safeguarded
    if opts.method == "picard":
        mixer = Anderson(depth=opts.anderson, damping=opts.damping)
    else:
        mixer = Safeguarded(depth=opts.anderson or ADAPTIVE_DEPTH, damping=opts.damping)
    m = np.repeat(G.m0[None, :], G.problem.nt, axis=0) if initial is None else initial.copy()
    u_prev: FloatArray | None = None
    u, g = np.full_like(m, np.nan), np.full_like(m, np.nan)
    started = time.perf_counter()
    for _ in range(opts.max_iter):
        try:
            history.evaluations += 1
            u = G.hjb(m)
            g = G.fp(u)
        except Diverged as exc:
            history.reason = f"diverged: {exc}"
            return u, g, history
        history.residual_u.append(_relative_change(u, u_prev) if u_prev is not None else 1.0)
        history.residual_m.append(_relative_change(g, m))
        if callback is not None:
            callback(len(history.residual_m), history.residual_u[-1], history.residual_m[-1])
        u_prev = u
        if history.residual_u[-1] < opts.tol and history.residual_m[-1] < opts.tol:
            history.converged, history.reason = True, "tolerance reached"
            return u, g, history
        if opts.time_limit is not None and time.perf_counter() - started > opts.time_limit:
            history.reason = f"time limit reached ({opts.time_limit:g} s)"
            return u, g, history
        m = mixer.step(m.ravel(), g.ravel()).reshape(m.shape)
        history.backtracks = getattr(mixer, "restarts", 0)
        if not np.isfinite(m).all():
            history.reason = "diverged: the iterate is not finite"
            return u, g, history
    return u, g, history


def solve(
    problem: Problem,
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
    first = _initial(problem, initial)
    active = _backend.resolve(backend)
    started = time.perf_counter()
    u, m, history = iterate(FixedPointMap(problem, opts, active), opts, callback, first)
    wall = time.perf_counter() - started
    return to_dataset(problem, opts, u, m, history, wall, active)


def _initial(problem: Problem, initial: ArrayLike | xr.Dataset | None) -> FloatArray | None:
    """A warm start checked: finite, non-negative, shaped (nt, nx); ``ValueError`` otherwise."""
    if initial is None:
        return None
    values = np.asarray(initial["m"] if isinstance(initial, xr.Dataset) else initial, dtype=np.float64)
    shape = (problem.nt, problem.nx)
    if values.shape != shape:
        raise ValueError(f"initial must be a density history of shape (nt, nx) = {shape}, got {values.shape}")
    if not np.isfinite(values).all() or values.min() < 0:
        raise ValueError("initial must be finite and non-negative (a density history m(t, x))")
    return values


def to_dataset(
    problem: Problem, opts: SolverOptions, u: FloatArray, m: FloatArray, history: History, wall: float, backend: str
) -> xr.Dataset:
    """The labelled result of one solve (layout: :mod:`mfg_ensemble.schema`)."""
    n = len(history.residual_m)
    coords = {
        schema.T: (schema.T, problem.times(), schema.attrs(schema.T)),
        schema.X: (schema.X, problem.grid(), schema.attrs(schema.X)),
        schema.ITERATION: (schema.ITERATION, np.arange(1, n + 1), schema.attrs(schema.ITERATION)),
    }
    values = {
        "u": u,
        "m": m,
        "residual": history.residual,
        "residual_u": history.residual_u,
        "residual_m": history.residual_m,
    }
    data = {name: (schema.T, schema.X) for name in schema.FIELDS} | {name: schema.ITERATION for name in schema.HISTORY}
    attrs: dict[str, Any] = {
        "converged": int(history.converged),
        "reason": history.reason,
        "iterations": n,
        "evaluations": history.evaluations,
        "backtracks": history.backtracks,
        "wall_time": wall,
        "backend": backend,
        **problem.to_attrs(),
        **opts.to_attrs(),
        **schema.versions(),
    }
    variables = {name: (dims, np.asarray(values[name]), schema.attrs(name)) for name, dims in data.items()}
    return xr.Dataset(variables, coords=coords, attrs=attrs)

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
``min_substeps``, the largest counts it has used so far in this solve. These floors only grow
and are bounded, so they settle and G is a fixed map near the solution. The residuals are
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
from pydantic import BaseModel, ConfigDict, Field

from mfg_ensemble import schema
from mfg_ensemble.errors import Diverged
from mfg_ensemble.game.fixed_point import Anderson, Safeguarded
from mfg_ensemble.game.problem import Problem, physical_memory
from mfg_ensemble.kernels import backend as _backend
from mfg_ensemble.kernels import fv_forward, hjb_backward, particles_forward
from mfg_ensemble.kernels.checks import UINT64_MAX, FloatArray
from mfg_ensemble.kernels.reference import rng

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


def _relative_change(new: FloatArray, old: FloatArray) -> float:
    norm = float(np.linalg.norm(new))
    return float(np.linalg.norm(new - old)) / (norm if norm > 0 else 1.0)


def sample_initial_particles(problem: Problem, n: int, seed: int) -> FloatArray:
    """n particles drawn from m0 by inverting its piecewise-linear CDF on the grid (trapezoid
    masses per cell, uniform within a cell), with uniforms from the Philox stream
    (seed, 0, STREAM_INIT): the same particles for every backend and thread count."""
    x = problem.grid()
    m0 = problem.initial_density()
    if problem.bc == "periodic":
        x = np.r_[x, problem.hi]
        m0 = np.r_[m0, m0[0]]
    cdf = np.r_[0.0, np.cumsum(0.5 * (m0[1:] + m0[:-1]) * np.diff(x))]
    cdf /= cdf[-1]
    u = rng.uniforms(seed, 0, rng.STREAM_INIT, n)
    # a flat stretch of the CDF (m0 = 0 there) must not attract samples: keep strict increases
    keep = np.r_[True, np.diff(cdf) > 0]
    return np.clip(np.interp(u, cdf[keep], x[keep]), problem.lo, problem.hi)


class FixedPointMap:
    """The map G: m ↦ FP(HJB(m)) of one problem with fixed options, and its two marches.

    ``hjb_floor`` and ``fp_floor`` (one int per output interval, starting at ones) are the
    ``min_substeps`` of the next march: after each call they are raised to the sub-step counts
    it used, so they only grow and, once they have settled, G no longer changes its sub-steps.
    """

    def __init__(self, problem: Problem, opts: SolverOptions, backend: str | None) -> None:
        self.problem, self.opts, self.backend = problem, opts, backend
        self.grid = problem.grid()
        self.common = dict(sigma=problem.sigma, T=problem.T, bc=problem.bc, backend=backend)
        self.terminal = problem.terminal_values()
        self.m0 = problem.initial_density()
        self.hjb_floor = np.ones(problem.nt - 1, dtype=np.int64)
        self.fp_floor = np.ones(problem.nt - 1, dtype=np.int64)
        if opts.fp == "particles":
            self.x0 = sample_initial_particles(problem, opts.n_particles, opts.seed)

    def hjb(self, m: FloatArray) -> FloatArray:
        f = self.problem.running_cost(m)
        u, counts = hjb_backward(
            f,
            self.terminal,
            dx=self.problem.dx,
            variant=self.opts.hjb_variant,
            min_substeps=self.hjb_floor,
            **self.common,
        )
        self.hjb_floor = np.maximum(self.hjb_floor, counts)
        return u

    def fp(self, u: FloatArray) -> FloatArray:
        if self.opts.fp == "fv":
            m, counts = fv_forward(u, self.m0, dx=self.problem.dx, min_substeps=self.fp_floor, **self.common)
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
                min_substeps=self.fp_floor,
                **self.common,
            )
        self.fp_floor = np.maximum(self.fp_floor, counts)
        return m


Callback = Callable[[int, float, float], None]
"""Called after every iteration with (iteration, residual_u, residual_m)."""


def iterate(
    G: FixedPointMap, opts: SolverOptions, callback: Callback | None = None
) -> tuple[FloatArray, FloatArray, History]:
    """The fixed-point iteration; returns the last u, the last raw density G(m) and the history."""
    history = History()
    mixer: Anderson | Safeguarded
    if opts.method == "picard":
        mixer = Anderson(depth=opts.anderson, damping=opts.damping)
    else:
        mixer = Safeguarded(depth=opts.anderson or ADAPTIVE_DEPTH, damping=opts.damping)
    m = np.repeat(G.m0[None, :], G.problem.nt, axis=0)
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
    residual_u, residual_m)``, if given, is called after every iteration.
    """
    opts = SolverOptions.model_validate({**dict(options or {}), **overrides})
    opts.check_memory(problem)
    active = _backend.resolve(backend)
    started = time.perf_counter()
    u, m, history = iterate(FixedPointMap(problem, opts, active), opts, callback)
    wall = time.perf_counter() - started
    return to_dataset(problem, opts, u, m, history, wall, active)


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

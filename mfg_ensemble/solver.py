"""One mean-field-game solve: HJB backward, Fokker–Planck forward, coupled by a fixed point.

Given a :class:`~mfg_ensemble.problem.Problem` (domain, horizon T, σ, potential V, coupling F,
m0, terminal cost g, boundary condition), :func:`solve` looks for the pair (u, m) with

    −∂t u − (σ²/2) ∂xx u + ½ |∂x u|² = V(x) + F(m(t))(x),   u(T) = g      (HJB, backward)
     ∂t m − (σ²/2) ∂xx m − ∂x(m ∂x u) = 0,                   m(0) = m0     (FP, forward)

i.e. a fixed point m = G(m) of G: m ↦ FP(HJB(m)), by damped Picard or Anderson iteration
(:mod:`mfg_ensemble.fixed_point`) starting from m(t) = m0. The HJB sweep is
:func:`~mfg_ensemble.kernels.hjb_backward`; the FP sweep either the finite-volume scheme
(``fp="fv"``: deterministic, mass conserved to rounding) or particles (``fp="particles"``:
Euler–Maruyama with drift −∂x u, density by KDE; the same noise in every iteration, so G is
a deterministic map). The sweeps choose their sub-steps per output interval from the current
iterate (CFL), which would make G jump where a count flips; so each sweep is passed, as
``min_substeps``, the largest counts it has used so far in this solve. These floors only grow
and are bounded, so they settle and G is a fixed map near the solution. The residuals are
relative L2 changes of the raw (undamped) updates,

    res_u = ‖u_k − u_{k−1}‖/‖u_k‖,   res_m = ‖G(m_k) − m_k‖/‖G(m_k)‖,

and the solve stops when both are below ``tol``, or after ``max_iter`` iterations, or when a
sweep blows up (then ``converged`` is False and ``reason`` says why; the history is kept).
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import xarray as xr

from mfg_ensemble import _backend, rng
from mfg_ensemble import _validate as v
from mfg_ensemble._validate import FloatArray
from mfg_ensemble.fixed_point import Anderson
from mfg_ensemble.kernels import fv_forward, hjb_backward, particles_forward
from mfg_ensemble.problem import Problem

FP_METHODS = ("particles", "fv")


@dataclass(frozen=True)
class SolverOptions:
    """Every solver parameter of :func:`solve` (validated), recorded in the result's attrs."""

    fp: Literal["particles", "fv"] = "particles"
    n_particles: int = 10_000
    seed: int = 0
    hjb_variant: Literal["js", "z"] = "js"
    kde_method: Literal["exact", "binned"] = "binned"
    bandwidth: float | str = "scott"
    damping: float = 0.5
    anderson: int = 0
    tol: float = 1e-6
    max_iter: int = 200

    def __post_init__(self) -> None:
        v.choice("fp", self.fp, FP_METHODS)
        v.choice("hjb_variant", self.hjb_variant, ("js", "z"))
        v.choice("kde_method", self.kde_method, ("exact", "binned"))
        if isinstance(self.bandwidth, str):
            v.choice("bandwidth", self.bandwidth, ("scott", "silverman"))
        else:
            v.positive("bandwidth", self.bandwidth)
        if not (isinstance(self.n_particles, int) and self.n_particles >= 2):
            raise ValueError(f"n_particles must be an integer >= 2, got {self.n_particles!r}")
        v.uint64("seed", self.seed)
        damping = v.positive("damping", self.damping)
        if damping > 1:
            raise ValueError(f"damping must be in (0, 1], got {damping}")
        if not (isinstance(self.anderson, int) and 0 <= self.anderson <= 50):
            raise ValueError(f"anderson must be an integer depth in [0, 50], got {self.anderson!r}")
        v.positive("tol", self.tol)
        if not (isinstance(self.max_iter, int) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be an integer >= 1, got {self.max_iter!r}")

    def to_attrs(self) -> dict[str, Any]:
        return {f"solver.{k}": val for k, val in self.__dict__.items()}


@dataclass
class History:
    """Residuals of each iteration and why the iteration stopped."""

    residual_u: list[float] = field(default_factory=list)
    residual_m: list[float] = field(default_factory=list)
    converged: bool = False
    reason: str = "max_iter reached"

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


class _Sweeps:
    """The HJB and FP sweeps of one problem with fixed options (the map G and its parts).

    ``hjb_floor`` and ``fp_floor`` (one int per output interval, starting at ones) are the
    ``min_substeps`` of the next sweep: after each call they are raised to the sub-step counts
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
    sweeps: _Sweeps, opts: SolverOptions, callback: Callback | None = None
) -> tuple[FloatArray, FloatArray, History]:
    """The fixed-point iteration; returns the last u, the last raw density G(m) and the history."""
    history = History()
    mixer = Anderson(depth=opts.anderson, damping=opts.damping)
    m = np.repeat(sweeps.m0[None, :], sweeps.problem.nt, axis=0)
    u_prev: FloatArray | None = None
    u, g = np.full_like(m, np.nan), np.full_like(m, np.nan)
    for _ in range(opts.max_iter):
        try:
            u = sweeps.hjb(m)
            g = sweeps.fp(u)
        except FloatingPointError as exc:
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
        m = mixer.step(m.ravel(), g.ravel()).reshape(m.shape)
        if not np.isfinite(m).all():
            history.reason = "diverged: the iterate is not finite"
            return u, g, history
    return u, g, history


def versions() -> dict[str, str]:
    """Versions of the packages that make a result, for provenance attrs."""
    out = {}
    for name in ("mfg_ensemble", "numpy", "xarray"):
        try:
            out[f"version.{name}"] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[f"version.{name}"] = "unknown"
    info = _backend.backend_info()
    out["version.rust_core"] = str(info["extension_version"])
    return out


def solve(
    problem: Problem,
    *,
    fp: str = "particles",
    n_particles: int = 10_000,
    seed: int = 0,
    hjb_variant: str = "js",
    kde_method: str = "binned",
    bandwidth: float | str = "scott",
    damping: float = 0.5,
    anderson: int = 0,
    tol: float = 1e-6,
    max_iter: int = 200,
    backend: str | None = None,
    callback: Callback | None = None,
) -> xr.Dataset:
    """Solve the mean field game ``problem`` (see the module docstring).

    Returns an ``xarray.Dataset`` with ``u(t, x)``, ``m(t, x)``, ``residual``, ``residual_u``
    and ``residual_m`` along ``iteration``, and attrs: ``converged``, ``reason``,
    ``iterations``, ``wall_time`` (s), ``backend``, every problem and solver parameter and the
    package versions. A blown-up solve is returned (not raised) with ``converged=False``.
    ``callback(iteration, residual_u, residual_m)``, if given, is called after every iteration.
    """
    opts = SolverOptions(fp, n_particles, seed, hjb_variant, kde_method, bandwidth, damping, anderson, tol, max_iter)  # type: ignore[arg-type]
    active = _backend.resolve(backend)
    started = time.perf_counter()
    u, m, history = iterate(_Sweeps(problem, opts, active), opts, callback)
    wall = time.perf_counter() - started
    return to_dataset(problem, opts, u, m, history, wall, active)


def to_dataset(
    problem: Problem, opts: SolverOptions, u: FloatArray, m: FloatArray, history: History, wall: float, backend: str
) -> xr.Dataset:
    """The labelled result of one solve."""
    n = len(history.residual_m)
    iteration = xr.DataArray(np.arange(1, n + 1), dims="iteration", attrs={"long_name": "Picard iteration"})
    coords = {
        "t": ("t", problem.times(), {"units": "time", "long_name": "time"}),
        "x": ("x", problem.grid(), {"units": "length", "long_name": "position"}),
        "iteration": iteration,
    }
    data = {
        "u": (("t", "x"), u, {"units": "cost", "long_name": "value function u(t, x)"}),
        "m": (("t", "x"), m, {"units": "1/length", "long_name": "density of players m(t, x)"}),
        "residual": ("iteration", history.residual, {"units": "1", "long_name": "max of the relative L2 residuals"}),
        "residual_u": ("iteration", np.array(history.residual_u), {"units": "1", "long_name": "relative L2 change of u"}),
        "residual_m": ("iteration", np.array(history.residual_m), {"units": "1", "long_name": "relative L2 residual G(m) - m"}),
    }
    attrs: dict[str, Any] = {
        "converged": int(history.converged),
        "reason": history.reason,
        "iterations": n,
        "wall_time": wall,
        "backend": backend,
        **problem.to_attrs(),
        **opts.to_attrs(),
        **versions(),
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)

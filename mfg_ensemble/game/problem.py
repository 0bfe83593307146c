"""The mean field game to solve: domain, horizon, noise, costs and initial density.

On the interval [lo, hi] and the horizon [0, T], a player at x controls its velocity α at
the cost ½α² per unit time and pays the running cost f(x, m(t)) = V(x) + F(m(t))(x), where m
is the density of all players, and the terminal cost g(x). The value function u and the
density m solve

    −∂t u − (σ²/2) ∂xx u + ½ |∂x u|² = V(x) + F(m(t))(x),   u(T, x) = g(x)
     ∂t m − (σ²/2) ∂xx m − ∂x(m ∂x u) = 0,                   m(0, x) = m0(x)

and the optimal control is α = −∂x u. Units: x in length, t in time, σ in length/√time, u,
g in cost, V and F in cost/time, m in 1/length (m0 is normalised to mass one).

Boundaries: "reflect" (no-flux walls; nx nodes lo + i·dx with dx = (hi − lo)/(nx − 1),
trapezoid weights) or "periodic" (one period of nx nodes, dx = (hi − lo)/nx, the node hi
is lo).

Named families (a TOML table or a dict with ``kind``):

* potential V and terminal cost g — "zero"; "constant" c; "quadratic"
  (s/2)(x − c)²; "wells" (s/2)·min_k (x − c_k)² (e.g. the distance cost to the nearest of
  several exits); "cosine" A·cos(2π k (x − lo)/(hi − lo)); "values" (one value per node);
* initial density m0 — "gaussian" N(mean, std²); "uniform"; "mixture" of gaussians with
  weights; "values" (one value per node); then normalised to mass one on the grid (the
  particle solver samples gaussian, uniform and mixture exactly, from their ``mass``);
* coupling F — "zero"; "linear" λ·m; "log" λ·log(m + δ); "power" λ·m^p;
  "mean_quadratic" (κ/2)(x − ∫ y m(t, y) dy)², the nonlocal coupling of the
  linear-quadratic game.

From Python, V, g and m0 may also be arrays (one value per node) or callables of the node
array.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mfg_ensemble import schema
from mfg_ensemble.kernels import quadrature_weights
from mfg_ensemble.kernels.checks import FloatArray

MIN_NX = 7
"""Fewest grid nodes a problem may have (the WENO5 stencil needs six)."""

SOLVE_ARRAYS = 8
"""(t, x) arrays a solve holds at once: the iterate, G(m), u, the running cost, the previous u,
the Picard/Anderson work arrays; a lower bound for the check before anything is allocated."""

_FORBID = ConfigDict(extra="forbid", frozen=True)


def _erfc(z: FloatArray) -> FloatArray:
    """erfc elementwise (``scipy.special.erfc``: NumPy has none)."""
    from scipy.special import erfc

    return np.asarray(erfc(z), dtype=np.float64)


def physical_memory() -> int | None:
    """This machine's memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return None


class _Family(BaseModel):
    model_config = _FORBID


class Zero(_Family):
    kind: Literal["zero"] = "zero"

    def __call__(self, x: FloatArray, lo: float, hi: float) -> FloatArray:
        return np.zeros_like(x)


class Constant(_Family):
    kind: Literal["constant"] = "constant"
    value: float = Field(allow_inf_nan=False)

    def __call__(self, x: FloatArray, lo: float, hi: float) -> FloatArray:
        return np.full_like(x, self.value)


class Quadratic(_Family):
    kind: Literal["quadratic"] = "quadratic"
    strength: float = Field(1.0, allow_inf_nan=False)
    center: float = Field(0.0, allow_inf_nan=False)

    def __call__(self, x: FloatArray, lo: float, hi: float) -> FloatArray:
        return 0.5 * self.strength * (x - self.center) ** 2


class Wells(_Family):
    kind: Literal["wells"] = "wells"
    strength: float = Field(1.0, allow_inf_nan=False)
    centers: list[Annotated[float, Field(allow_inf_nan=False)]] = Field(min_length=1)

    def __call__(self, x: FloatArray, lo: float, hi: float) -> FloatArray:
        dist = np.min(np.abs(x[None, :] - np.asarray(self.centers)[:, None]), axis=0)
        return 0.5 * self.strength * dist**2


class Cosine(_Family):
    kind: Literal["cosine"] = "cosine"
    amplitude: float = Field(1.0, allow_inf_nan=False)
    wavenumber: int = Field(1, ge=0)

    def __call__(self, x: FloatArray, lo: float, hi: float) -> FloatArray:
        return self.amplitude * np.cos(2.0 * np.pi * self.wavenumber * (x - lo) / (hi - lo))


class Values(_Family):
    """One value per grid node, given explicitly."""

    kind: Literal["values"] = "values"
    values: list[Annotated[float, Field(allow_inf_nan=False)]] = Field(min_length=1)

    def __call__(self, x: FloatArray, lo: float, hi: float) -> FloatArray:
        if len(self.values) != x.shape[0]:
            raise ValueError(f"'values' has {len(self.values)} entries but the grid has nx = {x.shape[0]} nodes")
        return np.asarray(self.values, dtype=np.float64)


class Function(BaseModel):
    """A Python callable of the node array (not expressible in a config file)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    kind: Literal["function"] = "function"
    func: Callable[[FloatArray], Any]

    def __call__(self, x: FloatArray, lo: float, hi: float) -> FloatArray:
        out = np.asarray(self.func(x.copy()), dtype=np.float64)
        if out.shape != x.shape:
            raise ValueError(f"the function {self.func!r} returned shape {out.shape}, expected {x.shape}")
        return out


class Gaussian(_Family):
    kind: Literal["gaussian"] = "gaussian"
    mean: float = Field(0.0, allow_inf_nan=False)
    std: float = Field(gt=0, allow_inf_nan=False)

    def __call__(self, x: FloatArray, lo: float, hi: float) -> FloatArray:
        return np.exp(-0.5 * ((x - self.mean) / self.std) ** 2) / (self.std * math.sqrt(2.0 * math.pi))

    def mass(self, a: float, x: FloatArray, lo: float, hi: float) -> FloatArray:
        """∫ₐˣ of the density (x ≥ a), from erfc on the side of the mean where it does not cancel."""
        za = (a - self.mean) / (self.std * math.sqrt(2.0))
        zx = (np.asarray(x, dtype=np.float64) - self.mean) / (self.std * math.sqrt(2.0))
        if za >= 0:  # a above the mean: upper tails, ½(erfc(za) − erfc(zx))
            return 0.5 * (math.erfc(za) - _erfc(zx))
        return 0.5 * (_erfc(-zx) - math.erfc(-za))  # Φ(x) − Φ(a) through lower tails


class Uniform(_Family):
    kind: Literal["uniform"] = "uniform"

    def __call__(self, x: FloatArray, lo: float, hi: float) -> FloatArray:
        return np.full_like(x, 1.0 / (hi - lo))

    def mass(self, a: float, x: FloatArray, lo: float, hi: float) -> FloatArray:
        """∫ₐˣ of the density."""
        return (np.asarray(x, dtype=np.float64) - a) / (hi - lo)


class Mixture(_Family):
    """Σ_k w_k N(mean_k, std_k²) / Σ_k w_k."""

    kind: Literal["mixture"] = "mixture"
    means: list[Annotated[float, Field(allow_inf_nan=False)]] = Field(min_length=1)
    stds: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(min_length=1)
    weights: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] | None = None

    @model_validator(mode="after")
    def _same_lengths(self) -> Mixture:
        n = len(self.means)
        if len(self.stds) != n or (self.weights is not None and len(self.weights) != n):
            raise ValueError("means, stds and weights must have the same length")
        return self

    def __call__(self, x: FloatArray, lo: float, hi: float) -> FloatArray:
        weights = self.weights or [1.0] * len(self.means)
        parts = [w * Gaussian(mean=mu, std=s)(x, lo, hi) for mu, s, w in zip(self.means, self.stds, weights)]
        return np.sum(parts, axis=0) / sum(weights)

    def mass(self, a: float, x: FloatArray, lo: float, hi: float) -> FloatArray:
        """∫ₐˣ of the density (x ≥ a)."""
        weights = self.weights or [1.0] * len(self.means)
        parts = [w * Gaussian(mean=mu, std=s).mass(a, x, lo, hi) for mu, s, w in zip(self.means, self.stds, weights)]
        return np.sum(parts, axis=0) / sum(weights)


class ZeroCoupling(_Family):
    kind: Literal["zero"] = "zero"

    def __call__(self, m: FloatArray, x: FloatArray, w: FloatArray) -> FloatArray:
        return np.zeros_like(m)

    def derivative(self, m: FloatArray) -> FloatArray:
        """∂F/∂m at each node (a local coupling: F(m)(x) depends on m(x) only)."""
        return np.zeros_like(m)


class Linear(_Family):
    kind: Literal["linear"] = "linear"
    strength: float = Field(1.0, allow_inf_nan=False)

    def __call__(self, m: FloatArray, x: FloatArray, w: FloatArray) -> FloatArray:
        return self.strength * m

    def derivative(self, m: FloatArray) -> FloatArray:
        """∂F/∂m = λ."""
        return np.full_like(m, self.strength)


class Log(_Family):
    kind: Literal["log"] = "log"
    strength: float = Field(1.0, allow_inf_nan=False)
    delta: float = Field(1e-2, gt=0, allow_inf_nan=False)

    def __call__(self, m: FloatArray, x: FloatArray, w: FloatArray) -> FloatArray:
        return self.strength * np.log(np.maximum(m, 0.0) + self.delta)

    def derivative(self, m: FloatArray) -> FloatArray:
        """∂F/∂m = λ/(m + δ) (for m > 0; the value at m = 0 where F is clipped)."""
        return self.strength / (np.maximum(m, 0.0) + self.delta)


class Power(_Family):
    kind: Literal["power"] = "power"
    strength: float = Field(1.0, allow_inf_nan=False)
    exponent: float = Field(1.0, gt=0, allow_inf_nan=False)

    def __call__(self, m: FloatArray, x: FloatArray, w: FloatArray) -> FloatArray:
        return self.strength * np.maximum(m, 0.0) ** self.exponent

    def derivative(self, m: FloatArray) -> FloatArray:
        """∂F/∂m = λ p m^(p−1), with m floored at 1e-12 where p < 1 makes it infinite at 0."""
        return self.strength * self.exponent * np.maximum(m, 1e-12) ** (self.exponent - 1.0)


class MeanQuadratic(_Family):
    kind: Literal["mean_quadratic"] = "mean_quadratic"
    strength: float = Field(1.0, allow_inf_nan=False)

    def __call__(self, m: FloatArray, x: FloatArray, w: FloatArray) -> FloatArray:
        mass = m @ w
        safe = np.where(mass > 0, mass, 1.0)
        mean = (m @ (w * x)) / safe
        return 0.5 * self.strength * (x[None, :] - mean[:, None]) ** 2


FunctionOfX = Annotated[Zero | Constant | Quadratic | Wells | Cosine | Values | Function, Field(discriminator="kind")]
Density = Annotated[Gaussian | Uniform | Mixture | Values | Function, Field(discriminator="kind")]
Coupling = Annotated[ZeroCoupling | Linear | Log | Power | MeanQuadratic, Field(discriminator="kind")]


def _as_family(value: Any) -> Any:
    """Arrays and callables given from Python become the "values" and "function" families."""
    if isinstance(value, BaseModel) or isinstance(value, dict):
        return value
    if callable(value):
        return {"kind": "function", "func": value}
    if isinstance(value, (np.ndarray, list, tuple)):
        return {"kind": "values", "values": np.asarray(value, dtype=np.float64).tolist()}
    return value


class Problem(BaseModel):
    """A validated one-dimensional mean field game (see the module docstring for the maths)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lo: float = Field(0.0, allow_inf_nan=False, description="left end of the domain (length)")
    hi: float = Field(1.0, allow_inf_nan=False, description="right end of the domain (length)")
    T: float = Field(1.0, gt=0, allow_inf_nan=False, description="time horizon (time)")
    nx: int = Field(101, ge=MIN_NX, description="grid nodes")
    nt: int = Field(51, ge=2, description="output times, t_j = j T/(nt - 1)")
    sigma: float = Field(0.2, ge=0, allow_inf_nan=False, description="noise (length/sqrt(time))")
    potential: FunctionOfX = Field(default_factory=Zero, description="potential V(x) (cost/time)")
    coupling: Coupling = Field(default_factory=ZeroCoupling, description="coupling F(m) (cost/time)")
    m0: Density = Field(default_factory=Uniform, description="initial density")
    terminal: FunctionOfX = Field(default_factory=Zero, description="terminal cost g(x) (cost)")
    bc: Literal["reflect", "periodic"] = "reflect"

    ndim: ClassVar[int] = 1
    """Space dimensions."""

    @field_validator("potential", "m0", "terminal", mode="before")
    @classmethod
    def _arrays_and_callables(cls, value: Any) -> Any:
        return _as_family(value)

    @model_validator(mode="after")
    def _consistent(self) -> Problem:
        if not self.lo < self.hi:
            raise ValueError(f"lo must be < hi, got lo={self.lo}, hi={self.hi}")
        need, have = self.memory_estimate(), physical_memory()
        if have is not None and need > have:
            raise ValueError(
                f"nx = {self.nx} with nt = {self.nt} needs about {need / 2**30:.3g} GiB per solve "
                f"(time levels × nodes × {SOLVE_ARRAYS} float64 arrays), more than this machine's "
                f"{have / 2**30:.3g} GiB"
            )
        x = self.grid()
        for name in ("potential", "terminal"):
            values = getattr(self, name)(x, self.lo, self.hi)
            if not np.isfinite(values).all():
                raise ValueError(f"{name} is not finite on the grid")
        m0 = self.m0(x, self.lo, self.hi)
        if not np.isfinite(m0).all() or (m0 < 0).any():
            raise ValueError("m0 must be finite and >= 0 on the grid")
        if not m0 @ self.quadrature_weights() > 0:
            raise ValueError("m0 must have a positive mass on the grid")
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> Problem:
        """The problem of a TOML file: its ``[problem]`` table, or its top level if it has none.
        Values are typed strictly, as in sweep files: ``sigma = "0.1"`` is an error."""
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        return cls.model_validate(data.get("problem", data), strict=True)

    def replace(self, **changes: Any) -> Problem:
        """A validated copy with ``changes`` (``model_copy`` does not validate)."""
        return type(self).model_validate({**dict(self), **changes})

    def memory_estimate(self) -> int:
        """Bytes one solve holds at least: SOLVE_ARRAYS float64 arrays over (t, x)."""
        return SOLVE_ARRAYS * 8 * self.nt * self.nx

    @property
    def field_shape(self) -> tuple[int, int]:
        """The shape (nt, nx) of u and m."""
        return (self.nt, self.nx)

    @property
    def dx(self) -> float:
        return (self.hi - self.lo) / (self.nx if self.bc == "periodic" else self.nx - 1)

    def grid(self) -> FloatArray:
        """The nx nodes lo + i·dx."""
        return self.lo + self.dx * np.arange(self.nx, dtype=np.float64)

    def times(self) -> FloatArray:
        """The nt output times j·T/(nt − 1)."""
        return np.linspace(0.0, self.T, self.nt)

    def quadrature_weights(self) -> FloatArray:
        """Weights w with ∫ φ dx ≈ Σ wᵢ φᵢ (:mod:`mfg_ensemble.kernels.quadrature`)."""
        return quadrature_weights(self.nx, self.dx, self.bc)

    def initial_density(self) -> FloatArray:
        """m0 on the grid, normalised to mass one."""
        m0 = self.m0(self.grid(), self.lo, self.hi)
        return m0 / (m0 @ self.quadrature_weights())

    def terminal_values(self) -> FloatArray:
        return self.terminal(self.grid(), self.lo, self.hi)

    def potential_values(self) -> FloatArray:
        return self.potential(self.grid(), self.lo, self.hi)

    def running_cost(self, m: FloatArray) -> FloatArray:
        """f = V(x) + F(m(t))(x) for a density history m of shape (nt, nx)."""
        return self.potential_values()[None, :] + self.coupling(m, self.grid(), self.quadrature_weights())

    def to_attrs(self) -> dict[str, Any]:
        """Flat, netCDF/Zarr-safe attrs ``problem.<field>``: scalars as they are, families as
        "kind(k=v, ...)"."""
        return schema.prefixed(schema.PROBLEM, {k: describe(v) if isinstance(v, BaseModel) else v for k, v in self})


def describe(family: BaseModel) -> str:
    """A one-line description of a family, e.g. ``gaussian(mean=0.5, std=0.1)``."""
    if isinstance(family, Function):
        return f"function({getattr(family.func, '__qualname__', repr(family.func))})"
    fields = ", ".join(f"{k}={v}" for k, v in family if k != "kind")
    return f"{family.kind}({fields})"

"""The two-dimensional mean field game: a crowd in a room, with obstacles and exits.

On the rectangle Ω = [x_lo, x_hi] × [y_lo, y_hi] and the horizon [0, T], a player at
p = (x, y) controls its velocity α at the cost ½|α|² per unit time and pays the running cost
V(p) + F(m(t))(p); the value function u and the density m solve

    −∂t u − (σ²/2) Δu + ½ |∇u|² = V + F(m(t)),   u(T) = g
     ∂t m − (σ²/2) Δm − div(m ∇u) = 0,          m(0) = m0

and the optimal control is α = −∇u: the 1-D game of :mod:`mfg_ensemble.game.problem` with ∇
and Δ. Each direction has its boundary, ``bc = [bc_x, bc_y]`` (or one word for both):
"reflect" (walls at the end nodes, nx nodes x_lo + i·dx with dx = (x_hi − x_lo)/(nx − 1)) or
"periodic" (one period of nx nodes).

**Obstacles** (``obstacles = [...]``): rectangles ``{kind = "rectangle", x = [a, b], y = [c, d]}``,
discs ``{kind = "disc", center = [cx, cy], radius = r}`` or a mask ``{kind = "values", values =
[[0, 1, ...], ...]}`` (ny rows of nx flags). A node inside one (boundary included) is blocked:
its cell [x_i ± dx/2] × [y_j ± dy/2] is a wall for the players (no flux, m = 0, particles
reflect off it), and u is 0 there (it is not part of the game).

**Exits** (``exits = [...]``): segments ``{side = "left" | "right" | "bottom" | "top", lo = a,
hi = b}`` of a "reflect" side; the boundary nodes of that side whose coordinate along the side
lies in [a, b] are exits. The formulation is an absorbing boundary: a player who reaches an
exit leaves the game for good at no further cost, so u = 0 on exits (a Dirichlet condition for
the HJB: the terminal cost g is what staying costs) and m = 0 there (the FP's mass that flows
into an exit node's cell leaves the room). What has left by time t is the result's
``exited(t)``; the mass in the room plus the exited mass is the initial mass, to rounding.

Named families (a TOML table with ``kind``), the 1-D families with points p = (x, y):

* potential V and terminal cost g — "zero"; "constant" c; "quadratic" (s/2)|p − c|²;
  "wells" (s/2)·min_k |p − c_k|²; "values" (ny rows of nx values);
* m0 — "gaussian" N(mean, diag(std²)) (``std`` one value or one per direction); "uniform";
  "mixture" of gaussians; "values"; normalised to mass one over the free nodes;
* coupling F — the local couplings of 1-D: "zero", "linear", "log", "power"; and
  "mean_quadratic" (κ/2)|p − p̄(t)|², p̄ the players' mean position (the LQ game's).

From Python, V, g and m0 may also be (ny, nx) arrays or callables f(X, Y) of the node arrays.
Units as in 1-D (x, y in length, m in 1/length²).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mfg_ensemble import schema
from mfg_ensemble.game.problem import (
    MIN_NX,
    SOLVE_ARRAYS,
    Linear,
    Log,
    Power,
    Problem,
    ZeroCoupling,
    physical_memory,
)
from mfg_ensemble.kernels import quadrature_weights
from mfg_ensemble.kernels.checks import FloatArray
from mfg_ensemble.kernels.reference.grid2d import EXIT, FREE, OBSTACLE

_FORBID = ConfigDict(extra="forbid", frozen=True)
Finite = Annotated[float, Field(allow_inf_nan=False)]
Point = Annotated[list[Finite], Field(min_length=2, max_length=2)]
Box = tuple[float, float, float, float]
"""(x_lo, x_hi, y_lo, y_hi)."""
SIDES = ("left", "right", "bottom", "top")


class _Family(BaseModel):
    model_config = _FORBID


class Zero(_Family):
    kind: Literal["zero"] = "zero"

    def __call__(self, X: FloatArray, Y: FloatArray, box: Box) -> FloatArray:
        return np.zeros_like(X)


class Constant(_Family):
    kind: Literal["constant"] = "constant"
    value: Finite

    def __call__(self, X: FloatArray, Y: FloatArray, box: Box) -> FloatArray:
        return np.full_like(X, self.value)


class Quadratic(_Family):
    kind: Literal["quadratic"] = "quadratic"
    strength: Finite = 1.0
    center: Point = Field(default_factory=lambda: [0.0, 0.0])

    def __call__(self, X: FloatArray, Y: FloatArray, box: Box) -> FloatArray:
        return 0.5 * self.strength * ((X - self.center[0]) ** 2 + (Y - self.center[1]) ** 2)


class Wells(_Family):
    kind: Literal["wells"] = "wells"
    strength: Finite = 1.0
    centers: list[Point] = Field(min_length=1)

    def __call__(self, X: FloatArray, Y: FloatArray, box: Box) -> FloatArray:
        d2 = np.min([(X - cx) ** 2 + (Y - cy) ** 2 for cx, cy in self.centers], axis=0)
        return 0.5 * self.strength * d2


class Values(_Family):
    """One value per node: ny rows of nx values."""

    kind: Literal["values"] = "values"
    values: list[list[Finite]] = Field(min_length=1)

    def __call__(self, X: FloatArray, Y: FloatArray, box: Box) -> FloatArray:
        arr = np.asarray(self.values, dtype=np.float64)
        if arr.shape != X.shape:
            raise ValueError(f"'values' has shape {arr.shape} but the grid has (ny, nx) = {X.shape}")
        return arr


class Function(BaseModel):
    """A Python callable f(X, Y) of the node arrays (not expressible in a config file)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    kind: Literal["function"] = "function"
    func: Callable[[FloatArray, FloatArray], Any]

    def __call__(self, X: FloatArray, Y: FloatArray, box: Box) -> FloatArray:
        out = np.asarray(self.func(X.copy(), Y.copy()), dtype=np.float64)
        if out.shape != X.shape:
            raise ValueError(f"the function {self.func!r} returned shape {out.shape}, expected {X.shape}")
        return out


def _pair(value: float | list[float]) -> tuple[float, float]:
    return (float(value), float(value)) if isinstance(value, (int, float)) else (float(value[0]), float(value[1]))


Std = (
    Annotated[float, Field(gt=0, allow_inf_nan=False)]
    | Annotated[list[Annotated[float, Field(gt=0, allow_inf_nan=False)]], Field(min_length=2, max_length=2)]
)


class Gaussian(_Family):
    """N(mean, diag(std_x², std_y²)): a product of two 1-D gaussians."""

    kind: Literal["gaussian"] = "gaussian"
    mean: Point = Field(default_factory=lambda: [0.0, 0.0])
    std: Std

    def __call__(self, X: FloatArray, Y: FloatArray, box: Box) -> FloatArray:
        sx, sy = _pair(self.std)
        zx, zy = (X - self.mean[0]) / sx, (Y - self.mean[1]) / sy
        return np.exp(-0.5 * (zx * zx + zy * zy)) / (2.0 * math.pi * sx * sy)

    def components(self) -> list[tuple[float, tuple[float, float], tuple[float, float]]]:
        """(weight, mean, std) of each product-gaussian component."""
        return [(1.0, (self.mean[0], self.mean[1]), _pair(self.std))]


class Uniform(_Family):
    kind: Literal["uniform"] = "uniform"

    def __call__(self, X: FloatArray, Y: FloatArray, box: Box) -> FloatArray:
        return np.full_like(X, 1.0 / ((box[1] - box[0]) * (box[3] - box[2])))


class Mixture(_Family):
    """Σ_k w_k N(mean_k, diag(std_k²)) / Σ_k w_k."""

    kind: Literal["mixture"] = "mixture"
    means: list[Point] = Field(min_length=1)
    stds: list[Std] = Field(min_length=1)
    weights: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] | None = None

    @model_validator(mode="after")
    def _same_lengths(self) -> Mixture:
        n = len(self.means)
        if len(self.stds) != n or (self.weights is not None and len(self.weights) != n):
            raise ValueError("means, stds and weights must have the same length")
        return self

    def components(self) -> list[tuple[float, tuple[float, float], tuple[float, float]]]:
        weights = self.weights or [1.0] * len(self.means)
        total = sum(weights)
        return [(w / total, (mu[0], mu[1]), _pair(s)) for w, mu, s in zip(weights, self.means, self.stds)]

    def __call__(self, X: FloatArray, Y: FloatArray, box: Box) -> FloatArray:
        parts = [w * Gaussian(mean=list(mu), std=list(s))(X, Y, box) for w, mu, s in self.components()]
        return np.sum(parts, axis=0)


class Rectangle(_Family):
    """The nodes with x in [x[0], x[1]] and y in [y[0], y[1]]."""

    kind: Literal["rectangle"] = "rectangle"
    x: Point
    y: Point

    def __call__(self, X: FloatArray, Y: FloatArray) -> np.ndarray:
        tol = 1e-12 * max(1.0, float(np.max(np.abs(X))), float(np.max(np.abs(Y))))
        return (X >= self.x[0] - tol) & (X <= self.x[1] + tol) & (Y >= self.y[0] - tol) & (Y <= self.y[1] + tol)


class Disc(_Family):
    """The nodes within ``radius`` of ``center``."""

    kind: Literal["disc"] = "disc"
    center: Point
    radius: Annotated[float, Field(gt=0, allow_inf_nan=False)]

    def __call__(self, X: FloatArray, Y: FloatArray) -> np.ndarray:
        r2 = (X - self.center[0]) ** 2 + (Y - self.center[1]) ** 2
        return r2 <= self.radius**2 * (1.0 + 1e-12)


class Mask(_Family):
    """ny rows of nx flags (1: blocked)."""

    kind: Literal["values"] = "values"
    values: list[list[Annotated[int, Field(ge=0, le=1)]]] = Field(min_length=1)

    def __call__(self, X: FloatArray, Y: FloatArray) -> np.ndarray:
        arr = np.asarray(self.values, dtype=bool)
        if arr.shape != X.shape:
            raise ValueError(f"the obstacle mask has shape {arr.shape} but the grid has (ny, nx) = {X.shape}")
        return arr


class Exit(_Family):
    """The boundary nodes of ``side`` whose coordinate along it lies in [lo, hi]."""

    side: Literal["left", "right", "bottom", "top"]
    lo: Finite
    hi: Finite

    @model_validator(mode="after")
    def _ordered(self) -> Exit:
        if not self.lo <= self.hi:
            raise ValueError(f"an exit needs lo <= hi, got lo={self.lo}, hi={self.hi}")
        return self


class MeanQuadratic(_Family):
    """(κ/2)|p − p̄(t)|² with p̄ = ∫∫ q m(t, q) dq / ∫∫ m: the nonlocal coupling of the
    linear-quadratic game (the mean over the players still in the room)."""

    kind: Literal["mean_quadratic"] = "mean_quadratic"
    strength: Finite = 1.0

    def __call__(self, m: FloatArray, mesh: tuple[FloatArray, FloatArray], w: FloatArray) -> FloatArray:
        X, Y = mesh
        mass = np.einsum("tji,ji->t", m, w)
        safe = np.where(mass > 0, mass, 1.0)
        mx = np.einsum("tji,ji->t", m, w * X) / safe
        my = np.einsum("tji,ji->t", m, w * Y) / safe
        return 0.5 * self.strength * ((X[None] - mx[:, None, None]) ** 2 + (Y[None] - my[:, None, None]) ** 2)


FunctionOfXY = Annotated[Zero | Constant | Quadratic | Wells | Values | Function, Field(discriminator="kind")]
Density = Annotated[Gaussian | Uniform | Mixture | Values | Function, Field(discriminator="kind")]
Coupling = Annotated[ZeroCoupling | Linear | Log | Power | MeanQuadratic, Field(discriminator="kind")]
Obstacle = Annotated[Rectangle | Disc | Mask, Field(discriminator="kind")]
BC = Literal["reflect", "periodic"]


def _as_family(value: Any) -> Any:
    """Arrays and callables given from Python become the "values" and "function" families."""
    if isinstance(value, (BaseModel, dict)):
        return value
    if callable(value):
        return {"kind": "function", "func": value}
    if isinstance(value, np.ndarray):
        return {"kind": "values", "values": np.asarray(value, dtype=np.float64).tolist()}
    return value


class Problem2D(BaseModel):
    """A validated two-dimensional mean field game (see the module docstring for the maths)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    x_lo: Finite = Field(0.0, description="left side of the room (length)")
    x_hi: Finite = Field(1.0, description="right side of the room (length)")
    y_lo: Finite = Field(0.0, description="bottom side of the room (length)")
    y_hi: Finite = Field(1.0, description="top side of the room (length)")
    T: float = Field(1.0, gt=0, allow_inf_nan=False, description="time horizon (time)")
    nx: int = Field(51, ge=MIN_NX, description="grid nodes along x")
    ny: int = Field(51, ge=MIN_NX, description="grid nodes along y")
    nt: int = Field(51, ge=2, description="output times, t_j = j T/(nt - 1)")
    sigma: float = Field(0.2, ge=0, allow_inf_nan=False, description="noise (length/sqrt(time))")
    potential: FunctionOfXY = Field(default_factory=Zero, description="potential V(x, y) (cost/time)")
    coupling: Coupling = Field(default_factory=ZeroCoupling, description="local coupling F(m) (cost/time)")
    m0: Density = Field(default_factory=Uniform, description="initial density")
    terminal: FunctionOfXY = Field(default_factory=Zero, description="terminal cost g(x, y) (cost)")
    bc: tuple[BC, BC] = Field(("reflect", "reflect"), description="boundary along x and along y")
    obstacles: tuple[Obstacle, ...] = Field((), description="blocked regions (walls)")
    exits: tuple[Exit, ...] = Field((), description="boundary segments where players leave")

    @field_validator("potential", "m0", "terminal", mode="before")
    @classmethod
    def _arrays_and_callables(cls, value: Any) -> Any:
        return _as_family(value)

    @field_validator("bc", mode="before")
    @classmethod
    def _one_word_for_both(cls, value: Any) -> Any:
        return (value, value) if isinstance(value, str) else tuple(value) if isinstance(value, list) else value

    @field_validator("obstacles", "exits", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @model_validator(mode="after")
    def _consistent(self) -> Problem2D:
        if not (self.x_lo < self.x_hi and self.y_lo < self.y_hi):
            raise ValueError(
                f"need x_lo < x_hi and y_lo < y_hi, got [{self.x_lo}, {self.x_hi}] x [{self.y_lo}, {self.y_hi}]"
            )
        need, have = self.memory_estimate(), physical_memory()
        if have is not None and need > have:
            raise ValueError(
                f"nx = {self.nx}, ny = {self.ny} with nt = {self.nt} needs about {need / 2**30:.3g} GiB per solve "
                f"(time levels × nodes × {SOLVE_ARRAYS} float64 arrays), more than this machine's "
                f"{have / 2**30:.3g} GiB"
            )
        nodes = self.nodes()  # raises on exits on periodic sides, empty exits, exits in obstacles
        X, Y = self.mesh()
        for name in ("potential", "terminal"):
            if not np.isfinite(getattr(self, name)(X, Y, self.box)).all():
                raise ValueError(f"{name} is not finite on the grid")
        m0 = self.m0(X, Y, self.box)
        if not np.isfinite(m0).all() or (m0 < 0).any():
            raise ValueError("m0 must be finite and >= 0 on the grid")
        if not (np.where(nodes == FREE, m0, 0.0) * self.quadrature_weights()).sum() > 0:
            raise ValueError("m0 must have a positive mass on the free nodes (not in obstacles or exits)")
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> Problem2D:
        """The problem of a TOML file: its ``[problem]`` table, or its top level if it has none."""
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        return cls.model_validate(data.get("problem", data), strict=True)

    def replace(self, **changes: Any) -> Problem2D:
        """A validated copy with ``changes``."""
        return type(self).model_validate({**dict(self), **changes})

    ndim: ClassVar[int] = 2
    """Space dimensions."""

    def memory_estimate(self) -> int:
        """Bytes one solve holds at least: SOLVE_ARRAYS float64 arrays over (t, y, x)."""
        return SOLVE_ARRAYS * 8 * self.nt * self.ny * self.nx

    @property
    def box(self) -> Box:
        return (self.x_lo, self.x_hi, self.y_lo, self.y_hi)

    @property
    def field_shape(self) -> tuple[int, int, int]:
        """The shape (nt, ny, nx) of u and m."""
        return (self.nt, self.ny, self.nx)

    @property
    def dx(self) -> float:
        return (self.x_hi - self.x_lo) / (self.nx if self.bc[0] == "periodic" else self.nx - 1)

    @property
    def dy(self) -> float:
        return (self.y_hi - self.y_lo) / (self.ny if self.bc[1] == "periodic" else self.ny - 1)

    def grid(self) -> tuple[FloatArray, FloatArray]:
        """The nodes along x (nx) and along y (ny)."""
        return (
            self.x_lo + self.dx * np.arange(self.nx, dtype=np.float64),
            self.y_lo + self.dy * np.arange(self.ny, dtype=np.float64),
        )

    def mesh(self) -> tuple[FloatArray, FloatArray]:
        """X, Y of shape (ny, nx): X[j, i] = x_i, Y[j, i] = y_j."""
        x, y = self.grid()
        X, Y = np.meshgrid(x, y)
        return X, Y

    def times(self) -> FloatArray:
        return np.linspace(0.0, self.T, self.nt)

    def nodes(self) -> np.ndarray:
        """The node kinds (uint8, (ny, nx)): FREE, OBSTACLE or EXIT
        (:mod:`mfg_ensemble.kernels.reference.grid2d`)."""
        X, Y = self.mesh()
        nodes = np.full(X.shape, FREE, dtype=np.uint8)
        for obstacle in self.obstacles:
            nodes[obstacle(X, Y)] = OBSTACLE
        for k, exit_ in enumerate(self.exits):
            axis = 0 if exit_.side in ("left", "right") else 1
            if self.bc[axis] != "reflect":
                raise ValueError(f"exits[{k}] is on the {exit_.side} side, which is periodic: exits need walls")
            x, y = self.grid()
            along = y if axis == 0 else x
            tol = 1e-12 * max(1.0, float(np.max(np.abs(along))))
            hit = (along >= exit_.lo - tol) & (along <= exit_.hi + tol)
            if not hit.any():
                raise ValueError(
                    f"exits[{k}] ({exit_.side}, [{exit_.lo}, {exit_.hi}]) covers no boundary node; "
                    f"the nodes are {np.diff(along)[0]:.4g} apart"
                )
            index = {"left": (hit, 0), "right": (hit, -1), "bottom": (0, hit), "top": (-1, hit)}[exit_.side]
            if (nodes[index] == OBSTACLE).any():
                raise ValueError(f"exits[{k}] ({exit_.side}, [{exit_.lo}, {exit_.hi}]) runs into an obstacle")
            nodes[index] = EXIT
        if not (nodes == FREE).any():
            raise ValueError("the obstacles and exits cover every node: the room has no free node")
        return nodes

    def quadrature_weights(self) -> FloatArray:
        """Weights w (ny, nx) with ∫∫ φ ≈ Σ w φ: products of the 1-D weights (the finite-volume
        cells), 0 on obstacle nodes."""
        wx = quadrature_weights(self.nx, self.dx, self.bc[0])
        wy = quadrature_weights(self.ny, self.dy, self.bc[1])
        w = np.outer(wy, wx)
        w[self.nodes() == OBSTACLE] = 0.0
        return w

    def initial_density(self) -> FloatArray:
        """m0 on the free nodes (0 on obstacles and exits), normalised to mass one."""
        X, Y = self.mesh()
        m0 = np.where(self.nodes() == FREE, self.m0(X, Y, self.box), 0.0)
        return m0 / (m0 * self.quadrature_weights()).sum()

    def terminal_values(self) -> FloatArray:
        """g on the grid (0 on obstacles and exits, where u is 0)."""
        X, Y = self.mesh()
        return np.where(self.nodes() == FREE, self.terminal(X, Y, self.box), 0.0)

    def potential_values(self) -> FloatArray:
        X, Y = self.mesh()
        return self.potential(X, Y, self.box)

    def running_cost(self, m: FloatArray) -> FloatArray:
        """f = V + F(m(t)) for a density history m of shape (nt, ny, nx)."""
        return self.potential_values()[None] + self.coupling(m, self.mesh(), self.quadrature_weights())

    def to_attrs(self) -> dict[str, Any]:
        """Flat, netCDF/Zarr-safe attrs ``problem.<field>``: scalars as they are, families as
        "kind(k=v, ...)", lists of them as "[kind(...), ...]"."""

        def flat(value: Any) -> Any:
            if isinstance(value, BaseModel):
                return _describe(value)
            if isinstance(value, tuple) and value and isinstance(value[0], BaseModel):
                return "[" + ", ".join(_describe(v) for v in value) + "]"
            if isinstance(value, tuple):
                return list(value) if value else "[]"
            return value

        return schema.prefixed(schema.PROBLEM, {k: flat(v) for k, v in self})


def _describe(family: BaseModel) -> str:
    if isinstance(family, Function):
        return f"function({getattr(family.func, '__qualname__', repr(family.func))})"
    fields = ", ".join(f"{k}={v}" for k, v in family if k != "kind")
    kind = getattr(family, "kind", type(family).__name__.lower())
    return f"{kind}({fields})"


TWO_D_FIELDS = ("x_lo", "x_hi", "y_lo", "y_hi", "ny", "obstacles", "exits")
"""Fields only a 2-D problem has: a problem table with any of them is a :class:`Problem2D`."""


def problem_model(table: Any) -> type[Problem] | type[Problem2D]:
    """The problem class a ``[problem]`` table (or a problem object) describes: 2-D when it
    names any of ``TWO_D_FIELDS`` (so 1-D sweep files keep working unchanged)."""
    if isinstance(table, (Problem, Problem2D)):
        return type(table)
    return Problem2D if any(k in table for k in TWO_D_FIELDS) else Problem

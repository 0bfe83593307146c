"""The 2-D HJB equation of the MFG backward in time: the NumPy reference of ``rust_core/src/hjb2d.rs``.

    −∂t u − (σ²/2)(∂xx + ∂yy) u + ½|∇u|² = f(t, x, y),   u(T) = g,

on the grid of SPEC2D (fields (ny, nx), index [j, i]; ``nodes`` FREE/OBSTACLE/EXIT, see
:mod:`mfg_ensemble.kernels.reference.grid2d`); u = 0 at EXIT and OBSTACLE nodes at all times
(g and f are ignored there). Everything not stated here is as in 1-D
(:mod:`mfg_ensemble.kernels.reference.hjb`).

Lines and runs. ∂x works on the rows, ∂y on the columns (a transposed copy). A line is split
into runs, the maximal stretches of non-obstacle nodes (exit nodes belong to runs); a periodic
line without obstacles is one cyclic run, the run of a periodic line crossing the seam is
wrapped. Each run end gets three ghost nodes: "wall" (a domain wall, the end node of a
"reflect" line) mirrors about the end node, u₋ₖ = uₖ; "face" (an obstacle neighbour) mirrors
about the face, u₋ₖ = uₖ₋₁; "exit" (the end node is an EXIT, Dirichlet u = 0) is odd about it,
u₋ₖ = 2u₀ − uₖ (the exit rule wins over the others). The ghosts are filled in the order left 1,
right 1, left 2, right 2, left 3, right 3, each from values already known, which folds the rules
repeatedly when a run is shorter than the stencil (a run of one node: every ghost is its value).

Space. On each run, the HJ-WENO5 one-sided derivatives (:mod:`mfg_ensemble.kernels.reference.weno`,
"js"/"z", relative ε) d⁻, d⁺ of the extended run, and the fourth-order Δ₄ = (−u_{+2} + 16u_{+1}
− 30u + 16u_{−1} − u_{−2})/(12d²) with the same ghosts. The Godunov Hamiltonian is separable,

    Ĥ = ½ max(max(dx⁻, 0)², min(dx⁺, 0)²) + ½ max(max(dy⁻, 0)², min(dy⁺, 0)²),

and the diffusion is (σ²/2)(Lx + Ly), Lx, Ly the Δ₄ of the rows and columns. Both vanish at
non-free nodes (Lx = Ly = 0 there: their rows of the implicit matrices are the identity).

Time. ARS(4,4,3) exactly as in 1-D: E = f − Ĥ explicit, I = (σ²/2)(Lx + Ly) implicit. Each
stage solves (I − c(Lx + Ly)) U = R, c = γ·dt·σ²/2, approximately, by K = 2 sweeps of
factorised (ADI) defect correction from U = 0:

    D = R − (U − c(Lx U + Ly U)),   U ← U + (I − cLy)⁻¹(I − cLx)⁻¹ D

(the first sweep's D is R itself). Each factor is one pentadiagonal solve per run (the ghosts
folded into the run's matrix, exit nodes identity rows;
:class:`~mfg_ensemble.kernels.reference.banded.PentaBatch`, and
:class:`~mfg_ensemble.kernels.reference.banded.CyclicPentaBatch` for cyclic runs), factored
once per value of c (once per output interval). With P = (I − cLx)(I − cLy) = A + c²LxLy
(A = I − c(Lx + Ly)) the error is multiplied by M = P⁻¹c²LxLy per sweep; when Lx and Ly
commute (the rectangle without obstacles) its eigenvalues (λx, λy ≤ 0 those of Lx, Ly) are
c²λxλy/((1 − cλx)(1 − cλy)) ∈ [0, 1): the sweeps contract. From U = 0 the error after K sweeps
is Mᴷ A⁻¹R: a mode of wave numbers (kx, ky) keeps the fraction ρᴷ ≈ (c²kx²ky²)ᴷ = O(dt²ᴷ) of
its exact value, O(dt⁴) for K = 2 — below the third-order time error; the stiff modes
(cλ ≫ 1, ρ → 1) are those the exact solve damps to |R|/(1 + c|λx| + c|λy|) anyway.

Measured on the Cole–Hopf solutions of tests/kernels/test_hjb2d.py (σ = 0.2, n = 16, 32, 64,
dt ∝ dx), max |u_K − u_6| for K = 1, 2, 3: reflect 2.5e-6, 5.3e-10, 7.2e-13 (n = 16) … 6.5e-7,
9.8e-12, 1.3e-15 (n = 64), periodic alike, against discretisation errors 2.4e-5 … 5.6e-8
(the errors with K = 2 equal those with K = 6 to three digits): K = 1 would spoil the order,
K = 2 is within 2e-4 of the error. On the coarse room of the tests (11 × 13 nodes, obstacles and
exits, 5–6 sub-steps per interval: c large) |u_2 − u_6| = 1.9e-6 relative against a time error
alone of 7.2e-5 (u_6 against 4× the sub-steps). One order (x then y) is not exactly invariant
under x ↔ y when obstacles or exits make Lx and Ly not commute: the transposed room problem
differs by 1.3e-6 relative with K = 2 (4.4e-9 with K = 3). The mean of both orders would be
exactly invariant but doubles the line solves (1.3× the cost of a sub-step at 101 × 101);
the defect being 40× below the time error, one order is used.

Sub-steps as in 1-D with the step limit δ = cfl/(px/dx + py/dy), px, py the largest |dx±|, |dy±|
over the FREE nodes; the same restart and ``Diverged`` rules, floors ``min_substeps``, counts
returned. Only the "imex" scheme.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from mfg_ensemble.errors import Diverged
from mfg_ensemble.kernels.checks import FloatArray, check_finite
from mfg_ensemble.kernels.reference.banded import CyclicPentaBatch, PentaBatch
from mfg_ensemble.kernels.reference.grid2d import EXIT, FREE, OBSTACLE
from mfg_ensemble.kernels.reference.hjb import (
    ARS_C,
    ARS_GAMMA,
    _more_substeps,
    ars_increment,
    godunov,
)
from mfg_ensemble.kernels.reference.substeps import IntArray, floors, step_limit, substeps
from mfg_ensemble.kernels.reference.weno import _combine

ADI_SWEEPS = 2
"""K, the defect-correction sweeps of each implicit stage."""

WALL, FACE, EXITEND, CYCLIC = "wall", "face", "exit", "cyclic"
LAPLACE = (-1.0, 16.0, -30.0, 16.0, -1.0)


def line_runs(kinds, periodic: bool) -> list[tuple[list[int], str, str]]:
    """The runs of one line: (node indices in order, left rule, right rule)."""
    n = len(kinds)
    obst = [k == OBSTACLE for k in kinds]
    if not any(obst):
        if periodic:
            return [(list(range(n)), CYCLIC, CYCLIC)]
        order = list(range(n))
    elif periodic:
        start = obst.index(True)
        order = [(start + 1 + s) % n for s in range(n)]  # ends at an obstacle
    else:
        order = list(range(n))
    runs, cur = [], []
    for i in order:
        if obst[i]:
            if cur:
                runs.append(cur)
            cur = []
        else:
            cur.append(i)
    if cur:
        runs.append(cur)
    out = []
    for r in runs:
        left = EXITEND if kinds[r[0]] == EXIT else (WALL if (not periodic and r[0] == 0) else FACE)
        right = EXITEND if kinds[r[-1]] == EXIT else (WALL if (not periodic and r[-1] == n - 1) else FACE)
        out.append((r, left, right))
    return out


def ghost_coefficients(length: int, left: str, right: str) -> list[dict[int, float]]:
    """The extended run (3 ghosts each side) as linear combinations of the run's values:
    entry p + 3 is {run position: coefficient} for position p ∈ [−3, L + 3)."""
    ext: list[dict[int, float] | None] = [None] * (length + 6)
    for p in range(length):
        ext[p + 3] = {p: 1.0}
    if left == CYCLIC:
        for p in range(-3, 0):
            ext[p + 3] = {p % length: 1.0}
        for p in range(length, length + 3):
            ext[p + 3] = {p % length: 1.0}
        return ext  # type: ignore[return-value]
    if length == 1:
        return [{0: 1.0} for _ in range(7)]

    def get(p):
        e = ext[p + 3]
        assert e is not None
        return e

    def odd(end, mirror):
        out = {q: 2.0 * c for q, c in get(end).items()}
        for q, c in get(mirror).items():
            out[q] = out.get(q, 0.0) - c
        return out

    last = length - 1
    for k in (1, 2, 3):
        if left == WALL:
            ext[3 - k] = dict(get(k))
        elif left == FACE:
            ext[3 - k] = dict(get(k - 1))
        else:
            ext[3 - k] = odd(0, k)
        if right == WALL:
            ext[last + k + 3] = dict(get(last - k))
        elif right == FACE:
            ext[last + k + 3] = dict(get(length - k))
        else:
            ext[last + k + 3] = odd(last, last - k)
    return ext  # type: ignore[return-value]


class Lines:
    """The runs of the lines (rows) of a (nl, n) array with node kinds ``kinds``, spacing d."""

    def __init__(self, kinds: np.ndarray, periodic: bool, d: float) -> None:
        nl, n = kinds.shape
        self.shape, self.d = (nl, n), d
        rows, cols, vals = [], [], []
        inner, pos, self.runs = [], [], []
        top = 0
        for j in range(nl):
            for idx, left, right in line_runs(list(kinds[j]), periodic):
                length = len(idx)
                flat = [j * n + i for i in idx]
                ext = ghost_coefficients(length, left, right)
                for p, comb in enumerate(ext):
                    for q, c in comb.items():
                        rows.append(top + p)
                        cols.append(flat[q])
                        vals.append(c)
                inner.extend(range(top + 3, top + 3 + length))
                pos.extend(flat)
                # the run's Δ₄ (times 12d²) as a dense matrix in run coordinates
                lap = np.zeros((length, length))
                for r in range(length):
                    for k in range(5):
                        for q, c in ext[r + 1 + k].items():
                            lap[r, q] += LAPLACE[k] * c
                free = np.array([kinds[j, i] == FREE for i in idx])
                self.runs.append((np.array(flat), left == CYCLIC, lap, free))
                top += length + 6
        self.E = sp.csr_matrix((vals, (rows, cols)), shape=(top, nl * n))
        self.inner, self.pos = np.array(inner, dtype=np.int64), np.array(pos, dtype=np.int64)
        self.free = (kinds.ravel() == FREE)[self.pos]
        self._solver: tuple[float, list] | None = None

    def _scatter(self, values: FloatArray) -> FloatArray:
        out = np.zeros(self.shape[0] * self.shape[1])
        out[self.pos] = values
        return out.reshape(self.shape)

    def derivatives(self, u: FloatArray, variant: str, eps: float) -> tuple[FloatArray, FloatArray, float]:
        """(d⁻, d⁺, their largest modulus over the free nodes); 0 at obstacle nodes."""
        e = self.E @ u.ravel()
        v = (e[1:] - e[:-1]) * (1.0 / self.d)  # as the Rust kernels (1-D too) take it
        p = self.inner
        w = [v[p + k - 3] for k in range(6)]
        dm = _combine(w[0], w[1], w[2], w[3], w[4], variant, eps)
        dp = _combine(w[5], w[4], w[3], w[2], w[1], variant, eps)
        big = np.maximum(np.abs(dm), np.abs(dp))[self.free]
        pmax = float(np.max(big)) if big.size else 0.0
        return self._scatter(dm), self._scatter(dp), pmax

    def laplacian(self, u: FloatArray) -> FloatArray:
        """Δ₄u on the free nodes (0 elsewhere)."""
        e = self.E @ u.ravel()
        p = self.inner
        lap = (-e[p + 2] + 16.0 * e[p + 1] - 30.0 * e[p] + 16.0 * e[p - 1] - e[p - 2]) / (12.0 * (self.d * self.d))
        return self._scatter(np.where(self.free, lap, 0.0))

    def solver(self, c: float) -> list:
        """The factors of I − cΔ₄ per run (identity rows at non-free nodes), batched by (length, cyclic)."""
        if self._solver is not None and self._solver[0] == c:
            return self._solver[1]
        scale = c / (12.0 * (self.d * self.d))
        groups: dict[tuple[int, bool], list] = {}
        for flat, cyclic, lap, free in self.runs:
            length = len(flat)
            a = np.eye(length) - scale * lap
            a[~free] = 0.0
            a[~free, ~free] = 1.0
            diags = np.zeros((5, length))
            for i in range(length):
                for k in range(5):
                    q = i + k - 2
                    if cyclic:
                        diags[k, i] = a[i, q % length]
                    elif 0 <= q < length:
                        diags[k, i] = a[i, q]
            groups.setdefault((length, cyclic), []).append((flat, diags))
        batches = []
        for (_, cyclic), members in groups.items():
            flats = np.array([m[0] for m in members])
            dg = np.stack([m[1] for m in members], axis=1)  # (5, b, n)
            batches.append((flats, (CyclicPentaBatch if cyclic else PentaBatch)(*dg)))
        self._solver = (c, batches)
        return batches

    def solve(self, c: float, r: FloatArray) -> FloatArray:
        """(I − cΔ₄)⁻¹ r line by line, run by run (0 at obstacle nodes)."""
        flat_r = r.ravel()
        out = np.zeros(flat_r.shape)
        for flats, solver in self.solver(c):
            out[flats] = solver.solve(flat_r[flats])
        return out.reshape(self.shape)


class Grid:
    """The x lines (rows) and y lines (columns, on transposed arrays) of a 2-D grid."""

    def __init__(self, nodes: np.ndarray, dx: float, dy: float, bc: tuple[str, str]) -> None:
        self.nodes = nodes
        self.free = nodes == FREE
        self.x = Lines(nodes, bc[0] == "periodic", dx)
        self.y = Lines(np.ascontiguousarray(nodes.T), bc[1] == "periodic", dy)
        self.dx, self.dy = dx, dy

    def explicit(self, u, f, variant, eps) -> tuple[FloatArray, float]:
        """(f − Ĥ on the free nodes, 0 elsewhere; the step limit's px/dx + py/dy)."""
        dxm, dxp, px = self.x.derivatives(u, variant, eps)
        dym, dyp, py = self.y.derivatives(np.ascontiguousarray(u.T), variant, eps)
        h = godunov(dxm, dxp) + godunov(dym, dyp).T
        return np.where(self.free, f - h, 0.0), px / self.dx + py / self.dy

    def diffusion(self, u: FloatArray) -> FloatArray:
        """(Lx + Ly) u (0 at non-free nodes)."""
        return self.x.laplacian(u) + self.y.laplacian(np.ascontiguousarray(u.T)).T

    def implicit_solve(self, c: float, r: FloatArray) -> FloatArray:
        """U ≈ (I − c(Lx + Ly))⁻¹ r by ADI_SWEEPS factorised defect-correction sweeps from U = 0."""
        u = np.zeros_like(r)
        for sweep in range(ADI_SWEEPS):
            defect = r if sweep == 0 else r - (u - c * self.diffusion(u))  # r − (0 − c·0) = r exactly
            u = u + self.y.solve(c, np.ascontiguousarray(self.x.solve(c, defect).T)).T
        return u


def hjb_backward_2d(
    f: FloatArray,
    g: FloatArray,
    *,
    dx: float,
    dy: float,
    sigma: float,
    T: float,
    bc: tuple[str, str] = ("reflect", "reflect"),
    nodes: np.ndarray | None = None,
    variant: str = "js",
    eps: float = 1e-6,
    cfl: float = 0.4,
    min_substeps: IntArray | None = None,
) -> tuple[FloatArray, IntArray]:
    """u at the output times t_j = j·T/(nt − 1) (shape (nt, ny, nx)) and the sub-steps taken in
    each output interval, for the running cost ``f`` (nt, ny, nx) and terminal cost ``g`` (ny, nx)."""
    check_finite("f", f.ravel())
    check_finite("g", g.ravel())
    nt, ny, nx = f.shape
    if nodes is None:
        nodes = np.zeros((ny, nx), dtype=np.uint8)
    grid = Grid(nodes, dx, dy, bc)
    floor = floors(min_substeps, nt - 1)
    dt_out = T / (nt - 1)
    out = np.full((nt, ny, nx), np.nan)
    u = np.where(grid.free, g, 0.0)
    out[-1] = u
    counts = np.zeros(nt - 1, dtype=np.int64)
    for j in range(nt - 2, -1, -1):
        with np.errstate(over="ignore", invalid="ignore"):  # a blow-up is reported below
            u, counts[j] = _interval(grid, u, f[j + 1], f[j], dt_out, cfl, sigma, variant, eps, j, int(floor[j]))
        if not np.isfinite(u).all():
            raise Diverged(f"HJB 2-D: u is not finite at t = {j * dt_out}")
        out[j] = u
    return out, counts


def _interval(grid, u, f_hi, f_lo, dt_out, cfl, sigma, variant, eps, j, floor) -> tuple[FloatArray, int]:
    """ARS(4,4,3) in k equal sub-steps over one output interval, restarted as in 1-D."""
    where = f"HJB 2-D near t = {j * dt_out}"

    def explicit(v, theta):
        return grid.explicit(v, (1.0 - theta) * f_hi + theta * f_lo, variant, eps)

    def limit(rate: float) -> float:
        return step_limit(cfl, rate)

    e_start, rate_start = explicit(u, 0.0)
    k, _ = substeps(dt_out, limit(rate_start), where, floor)
    half_var = 0.5 * sigma * sigma
    while True:
        dt, dtheta = dt_out / k, 1.0 / k
        c = ARS_GAMMA * dt * half_var
        v = u
        for s in range(k):
            theta = s / k
            e0, rate = (e_start, rate_start) if s == 0 else explicit(v, theta)
            allowed = limit(rate)
            if dt > 2.0 * allowed or np.isnan(allowed):
                k = _more_substeps(k, dt_out / allowed if allowed > 0 else math.inf, where)
                break
            e, li = [e0], []
            for st in range(1, 5):
                stage = v + dt * ars_increment(st, e, li)
                if sigma > 0.0:
                    stage = grid.implicit_solve(c, stage)
                if st < 4:
                    e_st, _ = explicit(stage, theta + ARS_C[st] * dtheta)
                    e.append(e_st)
                    li.append(half_var * grid.diffusion(stage))
            v = stage
        else:
            allowed = limit(explicit(v, 1.0)[1])
            if not (dt > 2.0 * allowed or np.isnan(allowed)):
                return v, k
            k = _more_substeps(k, dt_out / allowed if allowed > 0 else math.inf, where)

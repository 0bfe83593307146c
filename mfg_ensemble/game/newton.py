"""Newton's method for the coupled system (``method = "newton"``): a monotone first-order scheme
solved by Newton as a predictor, then Newton–Krylov on the fixed point m = G(m) of the
high-order schemes, preconditioned by that scheme's Jacobian.

**The monotone scheme** (Achdou & Capuzzo-Dolcetta 2010) on the problem's own grid (nodes xᵢ,
weights wᵢ, W = diag(w); output times t_n, Δt = T/(nt − 1)): faces f = i+½ between nodes i and
j = i + 1 (and the last and first node when periodic) carry the drift α_f = −(u_j − u_i)/dx,

    (A(α) m)ᵢ = Σ_f ± (α_f⁺ mᵢ + α_f⁻ m_j)        upwind flux divergence (+ at i, − at j)
    (Aᵀ(α) v)ᵢ                                      its transpose
    (Λ m)ᵢ   = Σ_f ± (σ²/2)(m_j − mᵢ)/dx             W × the 3-point Laplacian (no wall flux)

and the discrete system in (u, m) ∈ ℝ^{nt×nx} × ℝ^{nt×nx} is, implicit Euler in time,

    HJB_n:  W(u_n − u_{n+1})/Δt − Λu_n + ½Aᵀ(α(u_n))u_n = W(V + F(m_{n+1})),  u_{nt−1} = g
    FP_n:   W(m_{n+1} − m_n)/Δt − Λm_{n+1} + A(α(u_n))m_{n+1} = 0,            m_0 = m0.

½Aᵀ(α(u))u is W × the Engquist–Osher Hamiltonian ½(max(D⁻u, 0)² + min(D⁺u, 0)²) (exactly, away
from the half cells at walls), whose derivative in u is Aᵀ(α(u)): the FP operator is the adjoint
of the linearised HJB, so for a monotone coupling (F' ≥ 0) the Jacobian is invertible and the
discrete solution unique; each FP step is an M-matrix solve (m ≥ 0, mass conserved). It is
first order, so its solution is only the start and the preconditioner of the real solve.

**Newton–Krylov** on R(m) = m − G(m), G: m ↦ FP(HJB(m)) with the solver's own (high-order)
marches: the step δm solves J δm = −R(m), J = I − G'(m), by GMRES (restarted, tolerance
``KRYLOV_TOL`` relative: an inexact Newton step), with J v ≈ v − (G(m + εv) − G(m))/ε
(ε = 1e-7‖m‖/‖v‖) and the right preconditioner P⁻¹, P = I − G'_mono(m) the same Jacobian of the
monotone scheme linearised at the current (u, G(m)), one sparse LU per step. Where the two
schemes agree (smooth solutions, resolved grids) P⁻¹J ≈ I and GMRES needs a few evaluations of
G; the stiff modes that defeat one-evaluation-per-step iterations (G' down to −300 at strong
coupling and low noise) are the same in both and are removed by P. A step is shortened
(½, ¼, … down to 1/64) until the residual decreases.

**In 2-D** the scheme is the same on the faces of the 2-D finite-volume grid (walls and
obstacles closed, exits Dirichlet rows: :class:`MonotoneScheme`). Its LU fills in like a 3-D
one, so above ``DIRECT_MAX_UNKNOWNS`` it is solved on a coarser grid, and P⁻¹ is the two-level
v ↦ v + P(P_c⁻¹ − I)Rv (:class:`Coarse`). Measured on configs/room.toml's room at σ = 0.1,
λ = 3 (31² × 21, FV, tol 1e-6): the mixing is at 2e-3 after 60 iterations; Newton converges in
24 iterations and 376–460 evaluations of G (fine LU or the 16² × 11 coarse grid), ~110 s on one
thread. Where the mixing converges, Newton costs about twice its evaluations (the room at 51²,
λ = 1: 131 against 69), and on particle maps it pays less still (σ = 0.1, λ = 3 with 2·10⁴
particles: 412 evaluations to tol 1e-3). So "newton" is for the 2-D cells the mixing cannot
solve, by choice (2026-12-05).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from mfg_ensemble.game.fixed_point import l2, not_halved, relative_change
from mfg_ensemble.game.problem import Problem
from mfg_ensemble.game.problem2d import Problem2D
from mfg_ensemble.kernels import quadrature_weights
from mfg_ensemble.kernels.checks import FloatArray
from mfg_ensemble.kernels.reference.grid2d import FREE, OBSTACLE
from mfg_ensemble.kernels.reference.substeps import IntArray

KRYLOV_TOL = 0.3
"""GMRES stops at this residual relative to ‖R(m)‖ (an inexact Newton step). Each GMRES
iteration costs an evaluation of G, so a loose step pays: over the 40-cell table 0.3 took
1450 evaluations for the converged Newton cells, 0.1 1863 and 1e-2 2544, in about as many
Newton steps (2026-12-05)."""
KRYLOV_RESTART = 30
"""GMRES's Krylov space, at most one cycle per Newton step (evaluations of G per step)."""
FD_EPSILON = 1e-10
"""Relative size of the difference quotient for G'(m)v. G is smooth, but at strong coupling and
low noise it amplifies the rough directions GMRES probes (P⁻¹ of its Krylov vectors) by up to
~1e5, and is linear along them only while ‖G(m + εv) − G(m)‖ ≪ ‖G‖: at crowd_log σ = 0.02, λ = 5
the quotients grow like 1/ε (G saturates: m ≥ 0 of mass 1) down to ε ≈ 1e-7 and are constant
below. At 1e-7 the products were not linear in v, GMRES's true residual went above 1 and Newton
stalled near 1e-4 from a start that 1e-10 takes to 1e-6 (2026-12-05). The rounding error of a
quotient is ~1e-16/ε relative to ‖G‖ per unit of G', ≤ 1e-6 for the GMRES tolerance 0.3."""
DIRECT_MAX_UNKNOWNS = 20_000
"""The largest 2-D monotone system (2·nt·ny·nx unknowns) factorised as it is; a larger one is
solved on a coarser grid (:class:`Coarse`). The LU of a grid in space and time fills in like
a 3-D one: at 31² × 21 (40 362 unknowns) 2.5 s and 2.2e7 factor entries (2026-12-05)."""
SHORTEST_STEP = 1.0 / 64
"""The shortest fraction of a Newton step the line search tries."""
STALL_STEPS = 3
"""Consecutive Newton steps whose line search found no decrease after which the method gives up."""
STALL_WINDOW = 10
"""Newton steps within which the best residual must halve, or the method gives up."""


@dataclass
class MonotoneScheme:
    """Achdou's implicit upwind discretisation of ``problem`` (see the module docstring), in
    1-D or 2-D: the operators are sums over faces, so one code serves both.

    A 2-D grid (fields (ny, nx), flattened to the last axis here) has the faces of its
    finite-volume scheme (:mod:`mfg_ensemble.kernels.reference.fv2d`): an x-face between (j, i)
    and (j, i+1) (and the wrap-around face of "periodic") carries flux when neither end is an
    obstacle and one end is free; its length is the dual cells' width wy[j] and its spacing dx
    (y-faces alike). Face f has drift α_f = −(u_j − u_i)/h_f, advective flux
    a_f(α_f⁺mᵢ + α_f⁻m_j) and diffusive flux a_f(σ²/2)(m_j − mᵢ)/h_f (a_f = 1 in 1-D). Obstacle
    and exit nodes are Dirichlet rows, u = 0 and m = 0 (the exits absorb: what flows into them
    leaves), so every other row is the 1-D one with the 2-D faces."""

    problem: Problem | Problem2D

    def __post_init__(self) -> None:
        p = self.problem
        self.nt = p.nt
        self.dt = p.T / (p.nt - 1)
        m0 = p.initial_density()
        self.shape = (p.nt, *m0.shape)
        self.w = p.quadrature_weights().ravel()
        self.nx = self.w.size
        """Nodes per time level (nx in 1-D, ny·nx in 2-D)."""
        self.fi, self.fj, self.h, self.area, self.fixed = grid_faces(p)
        self.diffusion = self.area * (0.5 * p.sigma**2 / self.h)
        self.size = self.nt * self.nx
        self.terminal = p.terminal_values().ravel()
        self.m0 = m0.ravel()
        too_large = isinstance(p, Problem2D) and 2 * self.size > DIRECT_MAX_UNKNOWNS
        self.coarse_problem = coarse_problem(p) if too_large else None
        """The grid :class:`Coarse` solves on (None: this one, factorised directly)."""

    @property
    def direct(self) -> bool:
        """Whether the system is factorised as it is (always in 1-D; in 2-D up to
        ``DIRECT_MAX_UNKNOWNS`` unknowns, or where no coarser grid holds the room), else
        solved through :class:`Coarse`."""
        return self.coarse_problem is None

    def _flat(self, a: FloatArray) -> FloatArray:
        """Time levels of the problem's grid, (k, nx) or (k, ny, nx), as (k, nodes)."""
        return a.reshape(a.shape[0], self.nx)

    # --- the operators, on the last axis (leading axes are time levels) ---------------------
    def alpha(self, u: FloatArray) -> FloatArray:
        """The face drifts α_f = −(u_j − u_i)/h_f."""
        return -(u[..., self.fj] - u[..., self.fi]) / self.h

    def _scatter(self, out: FloatArray, nodes: IntArray, values: FloatArray) -> None:
        """out[..., nodes] += values, nodes repeated in 2-D (a node is the end of several faces)."""
        if self.problem.ndim == 1:
            out[..., nodes] += values  # each node ends one face on each side
        else:
            np.add.at(out, (..., nodes), values)

    def _divergence(self, flux: FloatArray) -> FloatArray:
        """Σ_f ± flux_f: + at the face's left node i, − at its right node j."""
        out = np.zeros(flux.shape[:-1] + (self.nx,))
        self._scatter(out, self.fi, flux)
        self._scatter(out, self.fj, -flux)
        return out

    def advection(self, alpha: FloatArray, m: FloatArray) -> FloatArray:
        """A(α) m."""
        flux = np.maximum(alpha, 0) * m[..., self.fi] + np.minimum(alpha, 0) * m[..., self.fj]
        return self._divergence(self.area * flux)

    def laplacian(self, m: FloatArray) -> FloatArray:
        """Λ m (W times the 3-point Laplacian with the diffusion σ²/2; 5-point in 2-D)."""
        return self._divergence(self.diffusion * (m[..., self.fj] - m[..., self.fi]))

    def adjoint_advection(self, alpha: FloatArray, v: FloatArray) -> FloatArray:
        """Aᵀ(α) v."""
        d = self.area * (v[..., self.fi] - v[..., self.fj])
        out = np.zeros(v.shape)
        self._scatter(out, self.fi, np.maximum(alpha, 0) * d)
        self._scatter(out, self.fj, np.minimum(alpha, 0) * d)
        return out

    def fp_operator(self, u: FloatArray, m: FloatArray) -> FloatArray:
        """The FP rows without m0: W(m_{n+1} − m_n)/Δt − Λm_{n+1} + A(α(u_n))m_{n+1}, and m_0
        (m itself at the Dirichlet nodes). u and m: (nt, nodes)."""
        out = np.empty_like(m)
        out[0] = m[0]
        out[1:] = self.w * (m[1:] - m[:-1]) / self.dt - self.laplacian(m[1:])
        out[1:] += self.advection(self.alpha(u[:-1]), m[1:])
        if self.fixed is not None:
            out[:, self.fixed] = m[:, self.fixed]
        return out

    def residual(self, u: FloatArray, m: FloatArray) -> tuple[FloatArray, FloatArray]:
        """The residuals (HJB rows, FP rows) of the scheme at (u, m), each (nt, nodes)."""
        p = self.problem
        ru = np.empty_like(u)
        a = self.alpha(u[:-1])
        f = self._flat(p.running_cost(m[1:].reshape((self.nt - 1, *self.shape[1:]))))
        ru[:-1] = self.w * (u[:-1] - u[1:] - self.dt * f) / self.dt - self.laplacian(u[:-1])
        ru[:-1] += 0.5 * self.adjoint_advection(a, u[:-1])
        ru[-1] = u[-1] - self.terminal
        if self.fixed is not None:
            ru[:, self.fixed] = u[:, self.fixed]
        rm = self.fp_operator(u, m)
        rm[0] -= self.m0
        return ru, rm

    # --- the Jacobian ---------------------------------------------------------------------
    def _faces(self, values: list[FloatArray], row0: FloatArray, col0: FloatArray) -> tuple[FloatArray, ...]:
        """COO entries at (i, i), (i, j), (j, i), (j, j) of every face, one block per time level."""
        fi, fj = self.fi, self.fj
        rows = np.concatenate([fi, fi, fj, fj])
        cols = np.concatenate([fi, fj, fi, fj])
        return (
            (row0[:, None] + rows).ravel(),
            (col0[:, None] + cols).ravel(),
            np.concatenate(values, axis=-1).ravel(),
        )

    def jacobian(self, u: FloatArray, m: FloatArray, g: FloatArray | None = None) -> sp.csc_matrix:
        """The Jacobian of :meth:`residual` at (u, m), unknowns ordered (u, m) time-major;
        ``g``: the density in the FP flux's derivative in u (default m)."""
        g = m if g is None else g
        nt, nx, n, w, dt = self.nt, self.nx, self.size, self.w, self.dt
        a = self.alpha(u[:-1])
        ap, am = self.area * np.maximum(a, 0), self.area * np.minimum(a, 0)
        c = np.broadcast_to(self.diffusion, a.shape)
        level = np.arange(nt - 1) * nx
        node = (level[:, None] + np.arange(nx)).ravel()
        last, first = (nt - 1) * nx + np.arange(nx), np.arange(nx)
        up = self.area * (np.where(a > 0, g[1:, self.fi], g[1:, self.fj]) / self.h)
        slope = self.problem.coupling.derivative(m[1:].reshape((nt - 1, *self.shape[1:])))
        pieces = [
            # HJB_n: Aᵀ − Λ and W/Δt on u_n, −W/Δt on u_{n+1}, −W F'(m_{n+1}) on m_{n+1}
            self._faces([ap + c, -ap - c, am - c, -am + c], level, level),
            (node, node, np.tile(w / dt, nt - 1)),
            (node, node + nx, np.tile(-w / dt, nt - 1)),
            (node, n + node + nx, (-w * self._flat(slope)).ravel()),
            (last, last, np.ones(nx)),
            # FP_n: A − Λ and W/Δt on m_{n+1}, −W/Δt on m_n, ∂(A(α(u_n)) g_{n+1})/∂u_n
            self._faces([ap + c, am - c, -ap - c, -am + c], n + level + nx, n + level + nx),
            (n + node + nx, n + node + nx, np.tile(w / dt, nt - 1)),
            (n + node + nx, n + node, np.tile(-w / dt, nt - 1)),
            self._faces([up, -up, -up, up], n + level + nx, level),
            (n + first, n + first, np.ones(nx)),
        ]
        rows, cols, vals = (np.concatenate(parts) for parts in zip(*pieces, strict=True))
        if self.fixed is not None:  # the Dirichlet rows u = 0, m = 0 at every time level
            fixed = (np.arange(2 * nt)[:, None] * nx + np.flatnonzero(self.fixed)).ravel()
            keep = ~np.isin(rows, fixed)
            rows, cols, vals = (np.concatenate([x[keep], fixed]) for x in (rows, cols, vals))
            vals[keep.sum() :] = 1.0
        return sp.csc_matrix((vals, (rows, cols)), shape=(2 * n, 2 * n))

    def solve(
        self, tol: float = 1e-8, max_iter: int = 50, near: tuple[FloatArray, FloatArray] | None = None
    ) -> tuple[FloatArray, FloatArray, int, bool]:
        """The scheme's solution by Newton's method with backtracking on the residual norm,
        from ``near`` = (u, m) if given (e.g. an iterate of the high-order solve: Newton then
        starts within the schemes' difference of the answer), else from u(t) = g, m(t) = m0;
        returns (u, m, iterations, converged), shaped as the problem's fields. ``tol`` bounds
        the residual norm relative to that at u(t) = g, m(t) = m0, wherever it starts."""
        if not self.direct:
            return Coarse(self).solve(tol, max_iter, near)
        u = np.repeat(self.terminal[None], self.nt, axis=0)
        m = np.repeat(self.m0[None], self.nt, axis=0)
        residual = self.residual(u, m)
        norm = start = l2(*residual)
        if near is not None:
            u, m = self._flat(near[0]).copy(), self._flat(near[1]).copy()
            residual = self.residual(u, m)
            norm = l2(*residual)
            if norm <= tol * start:
                return u.reshape(self.shape), m.reshape(self.shape), 0, True
        for k in range(1, max_iter + 1):
            step = factorize(self.jacobian(u, m))(-np.concatenate([r.ravel() for r in residual]))
            du, dm = step[: self.size].reshape(u.shape), step[self.size :].reshape(m.shape)
            t = 1.0
            while True:
                residual = self.residual(u + t * du, m + t * dm)
                trial = l2(*residual)
                if trial < (1 - 1e-4 * t) * norm or t <= SHORTEST_STEP:
                    break
                t *= 0.5
            u, m, norm = u + t * du, m + t * dm, trial
            if norm <= tol * start:
                return u.reshape(self.shape), m.reshape(self.shape), k, True
        return u.reshape(self.shape), m.reshape(self.shape), max_iter, False

    def preconditioner(self, u: FloatArray, m: FloatArray, g: FloatArray) -> spla.LinearOperator:
        """v ↦ P⁻¹v, P = I − G'_mono linearised at (u, m) with the image density g = G(m).

        P δm = v is the Newton system of the scheme with δg = δm − v substituted for the FP's
        unknown: [HJB Jacobian | −WF']·(δu, δm) = 0 and FP rows(δm) + ∂_u(A g)δu = FP rows(v).
        u, m, g: the problem's fields; v and P⁻¹v flat."""
        if not self.direct:
            return Coarse(self).preconditioner(u, m, g)
        u, m, g = self._flat(u), self._flat(m), self._flat(g)
        solve = factorize(self.jacobian(u, m, g))
        n, shape = self.size, u.shape

        def apply(v: FloatArray) -> FloatArray:
            return solve(np.concatenate([np.zeros(n), self.fp_operator(u, v.reshape(shape)).ravel()]))[n:]

        return spla.LinearOperator((n, n), matvec=apply, dtype=np.float64)


def factorize(matrix: sp.csc_matrix) -> Callable[[FloatArray], FloatArray]:
    """b ↦ matrix⁻¹b by a sparse LU (SuperLU). The scheme's diagonal is positive (the blocks are
    M-matrices), so the LU first pivots on the diagonal with a minimum-degree ordering of
    A + Aᵀ — at nx = 201, nt = 101 0.18 s and 3.3e6 factor entries, against 0.30 s and 5.6e6
    with COLAMD and partial pivoting — and falls back to partial pivoting when that LU fails or
    does not solve a system to 1e-8 of its right-hand side."""
    try:
        lu = spla.splu(matrix, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
        probe = np.ones(matrix.shape[0])
        x = lu.solve(probe)
        if np.isfinite(x).all() and np.abs(matrix @ x - probe).max() <= 1e-8 * (1.0 + np.abs(x).max()):
            return lu.solve
    except RuntimeError:
        pass
    return spla.splu(matrix, permc_spec="COLAMD").solve


Faces = tuple[IntArray, IntArray, FloatArray, FloatArray, np.ndarray | None]
"""A grid's faces: their two nodes i and j (flat indices), spacing h and length a; and the
mask of the Dirichlet nodes (None in 1-D)."""


def grid_faces(p: Problem | Problem2D) -> Faces:
    """The faces of the monotone scheme on ``p``'s grid (see :class:`MonotoneScheme`)."""
    if isinstance(p, Problem):
        fi = np.arange(p.nx if p.bc == "periodic" else p.nx - 1)
        return fi, (fi + 1) % p.nx, np.full(fi.size, p.dx), np.ones(fi.size), None
    kinds = p.nodes()
    ny, nx = kinds.shape
    index = np.arange(ny * nx).reshape(ny, nx)
    parts = []
    for axis, (n, h, bc) in enumerate(((nx, p.dx, p.bc[0]), (ny, p.dy, p.bc[1]))):
        faces = n if bc == "periodic" else n - 1
        across = quadrature_weights(ny, p.dy, p.bc[1]) if axis == 0 else quadrature_weights(nx, p.dx, p.bc[0])
        lo = index[:, :faces] if axis == 0 else index[:faces, :]
        hi = np.roll(index, -1, axis=1)[:, :faces] if axis == 0 else np.roll(index, -1, axis=0)[:faces, :]
        length = np.broadcast_to(across[:, None] if axis == 0 else across[None, :], lo.shape)
        ki, kj = kinds.ravel()[lo], kinds.ravel()[hi]
        carries = (ki != OBSTACLE) & (kj != OBSTACLE) & ((ki == FREE) | (kj == FREE))
        parts.append((lo[carries], hi[carries], np.full(int(carries.sum()), h), length[carries]))
    fi, fj, hs, a = (np.concatenate(x) for x in zip(*parts, strict=True))
    return fi, fj, hs, a, kinds.ravel() != FREE


def coarser(p: Problem2D) -> Problem2D:
    """``p`` on the grid of every other node in x, y and t (nested: a "reflect" side keeps its
    end nodes when its node count is odd, a "periodic" one when it is even)."""
    half = [(n + 1) // 2 if bc == "reflect" else n // 2 for n, bc in ((p.nx, p.bc[0]), (p.ny, p.bc[1]))]
    return p.replace(nx=half[0], ny=half[1], nt=(p.nt + 1) // 2)


def _interpolation(x_from: FloatArray, x_to: FloatArray, period: float | None) -> FloatArray:
    """The matrix of linear interpolation from nodes ``x_from`` to ``x_to`` (ascending; the
    line wrapped at ``period`` if given)."""
    eye = np.eye(x_from.size)
    return np.stack([np.interp(x_to, x_from, e, period=period) for e in eye], axis=1)


def coarse_problem(p: Problem2D) -> Problem2D | None:
    """The first of ``p``'s :func:`coarser` grids whose system fits ``DIRECT_MAX_UNKNOWNS``, or
    the coarsest that still holds the room if coarsening stops first (a door or an obstacle
    that covers no node of the next grid, a grid too small); None if not even one does."""
    found = None
    while found is None or 2 * found.nt * found.ny * found.nx > DIRECT_MAX_UNKNOWNS:
        try:
            found = coarser(found or p)
        except ValueError:
            break
    return found


class Coarse:
    """A 2-D monotone scheme too large to factorise, served by a coarser grid
    (:func:`coarse_problem`) and linear interpolation in x, y and t:

        restrict  R: the fine fields interpolated at the coarse nodes (on nested grids, the
                     coarse nodes' values),
        prolong   P: the coarse fields interpolated at the fine nodes (0 at Dirichlet nodes),

    the scheme's solution as P of the coarse one, and its preconditioner as the two-level
    v ↦ v + P(P_c⁻¹ − I)Rv: the coarse scheme's exact P_c⁻¹ on the smooth part of v (the stiff
    modes of the coupling are large-scale crowd movements), the identity on the rest."""

    def __init__(self, fine: MonotoneScheme) -> None:
        p, c = fine.problem, fine.coarse_problem
        assert isinstance(p, Problem2D) and c is not None
        self.fine, self.scheme = fine, MonotoneScheme(c)
        periods = [
            hi - lo if bc == "periodic" else None
            for lo, hi, bc in ((p.x_lo, p.x_hi, p.bc[0]), (p.y_lo, p.y_hi, p.bc[1]))
        ]
        (fx, fy), (cx, cy) = p.grid(), c.grid()
        axes = [(p.times(), c.times(), None), (fy, cy, periods[1]), (fx, cx, periods[0])]
        self.down = [_interpolation(f, k, period) for f, k, period in axes]
        """Interpolation matrices fine → coarse along t, y, x."""
        self.up = [_interpolation(k, f, period) for f, k, period in axes]

    @staticmethod
    def _apply(a: FloatArray, matrices: list[FloatArray]) -> FloatArray:
        return np.einsum("ta,yb,xc,abc->tyx", *matrices, a, optimize=True)

    def restrict(self, a: FloatArray) -> FloatArray:
        return self._apply(a.reshape(self.fine.shape), self.down)

    def prolong(self, a: FloatArray) -> FloatArray:
        out = self._apply(a.reshape(self.scheme.shape), self.up)
        out[:, self.fine.fixed.reshape(self.fine.shape[1:])] = 0.0
        return out

    def solve(
        self, tol: float, max_iter: int, near: tuple[FloatArray, FloatArray] | None
    ) -> tuple[FloatArray, FloatArray, int, bool]:
        """The coarse scheme's solution (from ``near`` restricted), prolonged."""
        start = None if near is None else (self.restrict(near[0]), self.restrict(near[1]))
        u, m, k, ok = self.scheme.solve(tol, max_iter, start)
        return self.prolong(u), np.maximum(self.prolong(m), 0.0), k, ok

    def preconditioner(self, u: FloatArray, m: FloatArray, g: FloatArray) -> spla.LinearOperator:
        """v ↦ v + P(P_c⁻¹ − I)Rv, P_c the coarse scheme's at (Ru, Rm, Rg)."""
        inner = self.scheme.preconditioner(self.restrict(u), self.restrict(m), self.restrict(g))

        def apply(v: FloatArray) -> FloatArray:
            vc = self.restrict(v).ravel()
            return v + self.prolong(inner.matvec(vc) - vc).ravel()

        n = self.fine.size
        return spla.LinearOperator((n, n), matvec=apply, dtype=np.float64)


Evaluate = Callable[[FloatArray], tuple[FloatArray, FloatArray]]
"""m ↦ (u, G(m)) = (HJB(m), FP(HJB(m)))."""


@dataclass
class NewtonKrylov:
    """Newton–Krylov steps on R(m) = m − G(m) preconditioned by ``scheme`` (module docstring).

    ``evaluate`` is G recorded as an iterate of the solve; ``probe`` is G for the difference
    quotients (the marches' sub-step floors are not raised by it)."""

    scheme: MonotoneScheme
    evaluate: Evaluate
    probe: Evaluate
    evaluations: int = 0
    backtracks: int = 0
    steps: int = 0
    failures: int = 0
    """Consecutive steps whose line search found no decrease (the shortest step was taken)."""
    residuals: list[float] = field(default_factory=list)
    """The residual ‖G(m) − m‖/‖G(m)‖ after each step."""
    _precondition: spla.LinearOperator | None = None

    @property
    def stall_reason(self) -> str | None:
        """Why the method gives up, or None: ``STALL_STEPS`` steps in a row found no decrease
        (the preconditioned directions are not descent directions here: the high-order map is
        too far from the monotone one), or the best residual did not halve in the last
        ``STALL_WINDOW`` steps (steps that decrease it a little now and then, never for good)."""
        if self.failures >= STALL_STEPS:
            return f"{STALL_STEPS} steps in a row did not reduce the residual"
        if not_halved(self.residuals, STALL_WINDOW):
            return f"the best residual did not halve in {STALL_WINDOW} steps"
        return None

    def step(self, m: FloatArray, u: FloatArray, g: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """The next iterate (m, u, G(m)) from the current one. The preconditioner is kept from
        step to step while GMRES reaches its tolerance with it, and rebuilt at the current
        iterate when it did not."""
        shape, r = m.shape, (m - g).ravel()
        self.steps += 1
        if self._precondition is None:
            self._precondition = self.scheme.preconditioner(u, m, g)
        precondition = self._precondition
        scale = l2(m)

        def jacobian(v: FloatArray) -> FloatArray:
            size = l2(v)
            if size == 0:
                return np.zeros_like(v)
            eps = FD_EPSILON * scale / size
            self.evaluations += 1
            return v - (self.probe(m + eps * v.reshape(shape))[1] - g).ravel() / eps

        operator = spla.LinearOperator(
            (r.size, r.size), matvec=lambda y: jacobian(precondition.matvec(y)), dtype=np.float64
        )
        y, info = spla.gmres(operator, -r, rtol=KRYLOV_TOL, restart=KRYLOV_RESTART, maxiter=1)
        if info != 0:
            self._precondition = None
        dm = precondition.matvec(y).reshape(shape)
        norm, t = relative_change(g, m), 1.0
        while True:
            trial = np.maximum(m + t * dm, 0.0)
            self.evaluations += 1
            u_t, g_t = self.evaluate(trial)
            residual = relative_change(g_t, trial)
            decreased = residual < norm
            if decreased or t <= SHORTEST_STEP:
                self.failures = 0 if decreased else self.failures + 1
                self.residuals.append(residual)
                return trial, u_t, g_t
            self.backtracks += 1
            t *= 0.5

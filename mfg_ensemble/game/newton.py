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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from mfg_ensemble.game.fixed_point import l2, not_halved, relative_change
from mfg_ensemble.game.problem import Problem
from mfg_ensemble.kernels.checks import FloatArray

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
SHORTEST_STEP = 1.0 / 64
"""The shortest fraction of a Newton step the line search tries."""
STALL_STEPS = 3
"""Consecutive Newton steps whose line search found no decrease after which the method gives up."""
STALL_WINDOW = 10
"""Newton steps within which the best residual must halve, or the method gives up."""


@dataclass
class MonotoneScheme:
    """Achdou's implicit upwind discretisation of ``problem`` (see the module docstring)."""

    problem: Problem

    def __post_init__(self) -> None:
        p = self.problem
        self.nt, self.nx, self.dx = p.nt, p.nx, p.dx
        self.dt = p.T / (p.nt - 1)
        self.w = p.quadrature_weights()
        self.diffusion = 0.5 * p.sigma**2 / p.dx
        faces = self.nx if p.bc == "periodic" else self.nx - 1
        self.fi = np.arange(faces)
        self.fj = (self.fi + 1) % self.nx
        self.size = self.nt * self.nx
        self.x = p.grid()
        self.potential = p.potential_values()
        self.terminal = p.terminal_values()
        self.m0 = p.initial_density()

    # --- the operators, on the last axis (leading axes are time levels) ---------------------
    def alpha(self, u: FloatArray) -> FloatArray:
        """The face drifts α_f = −(u_j − u_i)/dx."""
        return -(u[..., self.fj] - u[..., self.fi]) / self.dx

    def _divergence(self, flux: FloatArray) -> FloatArray:
        """Σ_f ± flux_f: + at the face's left node i, − at its right node j."""
        out = np.zeros(flux.shape[:-1] + (self.nx,))
        out[..., self.fi] += flux
        out[..., self.fj] -= flux
        return out

    def advection(self, alpha: FloatArray, m: FloatArray) -> FloatArray:
        """A(α) m."""
        return self._divergence(np.maximum(alpha, 0) * m[..., self.fi] + np.minimum(alpha, 0) * m[..., self.fj])

    def laplacian(self, m: FloatArray) -> FloatArray:
        """Λ m (W times the 3-point Laplacian with the diffusion σ²/2)."""
        return self._divergence(self.diffusion * (m[..., self.fj] - m[..., self.fi]))

    def adjoint_advection(self, alpha: FloatArray, v: FloatArray) -> FloatArray:
        """Aᵀ(α) v."""
        d = v[..., self.fi] - v[..., self.fj]
        out = np.zeros(v.shape)
        out[..., self.fi] += np.maximum(alpha, 0) * d
        out[..., self.fj] += np.minimum(alpha, 0) * d
        return out

    def fp_operator(self, u: FloatArray, m: FloatArray) -> FloatArray:
        """The FP rows without m0: W(m_{n+1} − m_n)/Δt − Λm_{n+1} + A(α(u_n))m_{n+1}, and m_0."""
        out = np.empty_like(m)
        out[0] = m[0]
        out[1:] = self.w * (m[1:] - m[:-1]) / self.dt - self.laplacian(m[1:])
        out[1:] += self.advection(self.alpha(u[:-1]), m[1:])
        return out

    def residual(self, u: FloatArray, m: FloatArray) -> tuple[FloatArray, FloatArray]:
        """The residuals (HJB rows, FP rows) of the scheme at (u, m)."""
        p = self.problem
        ru = np.empty_like(u)
        a = self.alpha(u[:-1])
        f = self.potential + p.coupling(m[1:], self.x, self.w)
        ru[:-1] = self.w * (u[:-1] - u[1:] - self.dt * f) / self.dt - self.laplacian(u[:-1])
        ru[:-1] += 0.5 * self.adjoint_advection(a, u[:-1])
        ru[-1] = u[-1] - self.terminal
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
        ap, am = np.maximum(a, 0), np.minimum(a, 0)
        c = np.full_like(a, self.diffusion)
        level = np.arange(nt - 1) * nx
        node = (level[:, None] + np.arange(nx)).ravel()
        last, first = (nt - 1) * nx + np.arange(nx), np.arange(nx)
        up = np.where(a > 0, g[1:, self.fi], g[1:, self.fj]) / self.dx
        pieces = [
            # HJB_n: Aᵀ − Λ and W/Δt on u_n, −W/Δt on u_{n+1}, −W F'(m_{n+1}) on m_{n+1}
            self._faces([ap + c, -ap - c, am - c, -am + c], level, level),
            (node, node, np.tile(w / dt, nt - 1)),
            (node, node + nx, np.tile(-w / dt, nt - 1)),
            (node, n + node + nx, (-w * self.problem.coupling.derivative(m[1:])).ravel()),
            (last, last, np.ones(nx)),
            # FP_n: A − Λ and W/Δt on m_{n+1}, −W/Δt on m_n, ∂(A(α(u_n)) g_{n+1})/∂u_n
            self._faces([ap + c, am - c, -ap - c, -am + c], n + level + nx, n + level + nx),
            (n + node + nx, n + node + nx, np.tile(w / dt, nt - 1)),
            (n + node + nx, n + node, np.tile(-w / dt, nt - 1)),
            self._faces([up, -up, -up, up], n + level + nx, level),
            (n + first, n + first, np.ones(nx)),
        ]
        rows, cols, vals = (np.concatenate(parts) for parts in zip(*pieces, strict=True))
        return sp.csc_matrix((vals, (rows, cols)), shape=(2 * n, 2 * n))

    def solve(
        self, tol: float = 1e-8, max_iter: int = 50, near: tuple[FloatArray, FloatArray] | None = None
    ) -> tuple[FloatArray, FloatArray, int, bool]:
        """The scheme's solution by Newton's method with backtracking on the residual norm,
        from ``near`` = (u, m) if given (e.g. an iterate of the high-order solve: Newton then
        starts within the schemes' difference of the answer), else from u(t) = g, m(t) = m0;
        returns (u, m, iterations, converged). ``tol`` bounds the residual norm relative to
        that at u(t) = g, m(t) = m0, wherever it starts."""
        u = np.repeat(self.terminal[None], self.nt, axis=0)
        m = np.repeat(self.m0[None], self.nt, axis=0)
        residual = self.residual(u, m)
        norm = start = l2(*residual)
        if near is not None:
            u, m = near[0].copy(), near[1].copy()
            residual = self.residual(u, m)
            norm = l2(*residual)
            if norm <= tol * start:
                return u, m, 0, True
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
                return u, m, k, True
        return u, m, max_iter, False

    def preconditioner(self, u: FloatArray, m: FloatArray, g: FloatArray) -> spla.LinearOperator:
        """v ↦ P⁻¹v, P = I − G'_mono linearised at (u, m) with the image density g = G(m).

        P δm = v is the Newton system of the scheme with δg = δm − v substituted for the FP's
        unknown: [HJB Jacobian | −WF']·(δu, δm) = 0 and FP rows(δm) + ∂_u(A g)δu = FP rows(v)."""
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

"""The HJB equation of the MFG backward in time: the NumPy reference of ``rust_core/src/hjb.rs``.

    −∂t u − (σ²/2) ∂xx u + H(∂x u) = f(t, x),   u(T, x) = g(x),   H(p) = p²/2

In backward time s = T − t: ∂s u = (σ²/2) ∂xx u − H(∂x u) + f. Space: the HJ-WENO5 one-sided
derivatives d⁻, d⁺ (:mod:`mfg_ensemble.kernels.reference.weno`) in Godunov's monotone numerical Hamiltonian of
the convex H,

    Ĥ(d⁻, d⁺) = ½ max(max(d⁻, 0)², min(d⁺, 0)²),

and the fourth-order central second difference Δ₄ (:func:`laplacian`) with the same ghost
nodes (mirror for "reflect": zero flux through the walls; wrap for "periodic"). f is linear in
t between output times. Time, from each output time to the previous one, by ``scheme``:

- "imex" (the default): the IMEX Runge–Kutta ARS(4,4,3) (Ascher, Ruuth & Spiteri 1997), third
  order, L-stable and stiffly accurate in its implicit part. With E(u) = f − Ĥ(d⁻, d⁺)
  explicit and I(u) = (σ²/2)Δ₄u implicit, a sub-step dt from v takes the stages U₀ = v and,
  for i = 1…4,

      (1 − ½·dt·(σ²/2)Δ₄) U_i = v + dt Σ_{j<i} (Â_ij E(U_j) + A_ij I(U_j)),

  E taken at s + c_j·dt (the tableaux: ``ARS_EXPLICIT``, ``ARS_IMPLICIT``, ``ARS_C``); the
  sub-step's result is U₄. Each stage is one banded solve of the five-point matrix
  (:mod:`mfg_ensemble.kernels.reference.banded`: pentadiagonal for "reflect", cyclic for
  "periodic"); none when σ = 0. The step limit is δ(p) = cfl·dx/p (the slopes' CFL only).
- "rk3": TVD-RK3 (Shu–Osher) of the whole right-hand side, with the step limit
  δ(p) = cfl/(p/dx + (4/3)σ²/dx²) (the largest decay rate of (σ²/2)Δ₄ is (8/3)σ²/dx²), so
  its cost grows like nx³.

With pmax = max|d±| of a state, output interval j (length Δt = T/(nt − 1)) takes
k_j = max(min_substeps[j], ⌈Δt/δ(pmax₀)⌉) equal sub-steps Δt/k_j, pmax₀ taken at the
interval's start, so they add up to Δt exactly. At the start of every sub-step, and at the
interval's end, the CFL is checked with the current slopes: if Δt/k_j > 2·δ(pmax) (a CFL
number above 2·cfl: the slopes steepened within the interval) the interval is restarted from
its start with ⌈Δt/δ(pmax)⌉ sub-steps, clamped to [2·k_j, 8·k_j] (the slopes of an overshot
state can be far steeper than the solution's). A limit that asks for more than 10⁶ sub-steps
(or is NaN), or a non-finite u, raises ``Diverged``. The k_j taken are returned.

Measured orders on an exact Cole–Hopf solution at σ = 0.2 (tests/kernels/test_hjb_order.py):
about 4 for either scheme with dt ∝ dx (imex) or dt ∝ dx² (rk3), where the space error
dominates; the imex time error alone is third order.
Units: u in cost, f in cost/time, σ in length/√time, x in length.
"""

from __future__ import annotations

import math

import numpy as np

from mfg_ensemble.errors import Diverged
from mfg_ensemble.kernels.checks import FloatArray, check_finite
from mfg_ensemble.kernels.reference.banded import StencilSolver
from mfg_ensemble.kernels.reference.substeps import MAX_SUBSTEPS, IntArray, floors, step_limit, substeps
from mfg_ensemble.kernels.reference.weno import weno5_derivatives


def ars_increment(st: int, e: list, li: list) -> FloatArray:
    """Σ_{j<st} Â_{st,j} E(U_j) + Σ_{1≤j<st} A_{st,j} I(U_j): the ARS(4,4,3) right-hand side of
    stage ``st`` (1…4) from the explicit terms ``e`` (E(U_0)…) and implicit terms ``li``
    (I(U_1)…) so far, summed in this order (the Rust twins sum in the same order)."""
    acc = 0.0
    for jj in range(st):
        acc = acc + ARS_EXPLICIT[st - 1][jj] * e[jj]
    for jj in range(1, st):
        acc = acc + ARS_IMPLICIT[st - 1][jj - 1] * li[jj - 1]
    return acc


def godunov(d_minus: FloatArray, d_plus: FloatArray) -> FloatArray:
    """Godunov's numerical Hamiltonian for H(p) = p²/2."""
    a = np.maximum(d_minus, 0.0)
    b = np.minimum(d_plus, 0.0)
    return 0.5 * np.maximum(a * a, b * b)


def laplacian(u: FloatArray, dx: float, bc: str) -> FloatArray:
    """(−u_{i+2} + 16u_{i+1} − 30u_i + 16u_{i−1} − u_{i−2})/(12 dx²) with mirror ("reflect") or
    wrapped ("periodic") ghosts: fourth order where u is smooth (for "reflect", where its odd
    derivatives vanish at the walls, as the zero-flux condition makes them)."""
    ext = np.pad(u, 2, mode="reflect" if bc == "reflect" else "wrap")
    return (-ext[4:] + 16.0 * ext[3:-1] - 30.0 * u + 16.0 * ext[1:-3] - ext[:-4]) / (12.0 * (dx * dx))


def _rhs_split(u, f_hi, f_lo, theta, dx, sigma, bc, variant, eps, implicit=True):
    """The IMEX split of the right-hand side: (f(θ) − Ĥ, (σ²/2)Δ₄u or None, pmax)."""
    dm, dp = weno5_derivatives(u, dx, bc, variant, eps)
    f = (1.0 - theta) * f_hi + theta * f_lo
    e = f - godunov(dm, dp)
    li = 0.5 * sigma * sigma * laplacian(u, dx, bc) if implicit else None
    return e, li, float(np.max(np.maximum(np.abs(dm), np.abs(dp))))  # NaN propagates


def _rhs(u, f_hi, f_lo, theta, dx, sigma, bc, variant, eps) -> tuple[FloatArray, float]:
    dm, dp = weno5_derivatives(u, dx, bc, variant, eps)
    f = (1.0 - theta) * f_hi + theta * f_lo
    out = 0.5 * sigma * sigma * laplacian(u, dx, bc) - godunov(dm, dp) + f
    return out, float(np.max(np.maximum(np.abs(dm), np.abs(dp))))  # NaN propagates


def hjb_backward(
    f: FloatArray,
    g: FloatArray,
    *,
    dx: float,
    sigma: float,
    T: float,
    bc: str = "reflect",
    variant: str = "js",
    eps: float = 1e-6,
    cfl: float = 0.4,
    min_substeps: IntArray | None = None,
    scheme: str = "imex",
) -> tuple[FloatArray, IntArray]:
    """u at the output times t_j = j·T/(nt − 1) (shape (nt, nx)) and the sub-steps taken in
    each output interval (shape (nt − 1,)), for the running cost ``f`` (nt, nx), the terminal
    cost ``g`` (nx) and the floors ``min_substeps`` of the sub-step counts."""
    check_finite("f", f.ravel())
    check_finite("g", g)
    nt, nx = f.shape
    floor = floors(min_substeps, nt - 1)
    dt_out = T / (nt - 1)
    rate_diffusion = 4.0 / 3.0 * (sigma * sigma) / (dx * dx) if scheme == "rk3" else 0.0
    interval = _interval if scheme == "rk3" else _interval_imex
    solvers: dict = {}  # the implicit solver of the last sub-step count
    args = (dx, sigma, bc, variant, eps)
    out = np.full((nt, nx), np.nan)
    out[-1] = g
    u = g.copy()
    counts = np.zeros(nt - 1, dtype=np.int64)
    for j in range(nt - 2, -1, -1):
        f_lo, f_hi = f[j], f[j + 1]
        with np.errstate(over="ignore", invalid="ignore"):  # a blow-up is reported below
            u, counts[j] = interval(u, f_hi, f_lo, dt_out, cfl, rate_diffusion, args, j, int(floor[j]), solvers)
        if not np.isfinite(u).all():
            raise Diverged(f"HJB: u is not finite at t = {j * dt_out}")
        out[j] = u
    return out, counts


def _more_substeps(k: int, wanted: float, where: str) -> int:
    """The sub-step count of a restarted interval: ⌈wanted⌉ clamped to [2k, 8k]."""
    nxt = min(max(math.ceil(wanted), 2 * k), 8 * k) if math.isfinite(wanted) else 8 * k
    if nxt > MAX_SUBSTEPS:
        raise Diverged(f"{where}: the CFL sub-step collapsed")
    return nxt


def _interval(u, f_hi, f_lo, dt_out, cfl, rate_diffusion, args, j, floor, _solvers) -> tuple[FloatArray, int]:
    """TVD-RK3 in k equal sub-steps from one output time back to the previous one, restarted
    with more sub-steps when the slopes steepen beyond twice the step limit."""
    dx = args[0]
    where = f"HJB near t = {j * dt_out}"

    def limit(pmax: float) -> float:
        return step_limit(cfl, pmax / dx + rate_diffusion)

    l1_start, pmax_start = _rhs(u, f_hi, f_lo, 0.0, *args)
    k, _ = substeps(dt_out, limit(pmax_start), where, floor)
    while True:
        dt, dtheta = dt_out / k, 1.0 / k
        v = u
        for s in range(k):
            theta = s / k
            l1, pmax = (l1_start, pmax_start) if s == 0 else _rhs(v, f_hi, f_lo, theta, *args)
            allowed = limit(pmax)
            if dt > 2.0 * allowed or np.isnan(allowed):
                k = _more_substeps(k, dt_out / allowed if allowed > 0 else math.inf, where)  # restart the interval
                break
            u1 = v + dt * l1
            l2, _ = _rhs(u1, f_hi, f_lo, theta + dtheta, *args)
            u2 = 0.75 * v + 0.25 * (u1 + dt * l2)
            l3, _ = _rhs(u2, f_hi, f_lo, theta + 0.5 * dtheta, *args)
            v = v / 3.0 + 2.0 / 3.0 * (u2 + dt * l3)
        else:
            allowed = limit(_rhs(v, f_hi, f_lo, 1.0, *args)[1])  # the last sub-step's own slopes
            if not (dt > 2.0 * allowed or np.isnan(allowed)):
                return v, k
            k = _more_substeps(k, dt_out / allowed if allowed > 0 else math.inf, where)


# ARS(4,4,3): explicit rows (coefficients of E₀…E₃) and implicit below-diagonal rows
# (coefficients of I₁…I₃) of the stages 1…4, the implicit diagonal γ, the explicit abscissae.
ARS_EXPLICIT = (
    (0.5, 0.0, 0.0, 0.0),
    (11.0 / 18.0, 1.0 / 18.0, 0.0, 0.0),
    (5.0 / 6.0, -5.0 / 6.0, 0.5, 0.0),
    (0.25, 1.75, 0.75, -1.75),
)
ARS_IMPLICIT = ((0.0, 0.0, 0.0), (1.0 / 6.0, 0.0, 0.0), (-0.5, 0.5, 0.0), (1.5, -1.5, 0.5))
ARS_GAMMA = 0.5
ARS_C = (0.0, 0.5, 2.0 / 3.0, 0.5)


def implicit_stencil(dt: float, dx: float, sigma: float) -> list[float]:
    """The five-point stencil of I − γ·dt·(σ²/2)Δ₄."""
    c = ARS_GAMMA * dt * (0.5 * sigma * sigma) / (12.0 * (dx * dx))
    return [c, -16.0 * c, 1.0 + 30.0 * c, -16.0 * c, c]


def _interval_imex(u, f_hi, f_lo, dt_out, cfl, _rate, args, j, floor, solvers) -> tuple[FloatArray, int]:
    """ARS(4,4,3) in k equal sub-steps from one output time back to the previous one (the
    WENO/Godunov part and f explicit, (σ²/2)Δ₄ implicit), restarted with more sub-steps when
    the slopes steepen beyond twice the step limit cfl·dx/pmax."""
    dx, sigma, bc = args[0], args[1], args[2]
    where = f"HJB near t = {j * dt_out}"

    def limit(pmax: float) -> float:
        return step_limit(cfl, pmax / dx)

    e_start, _, pmax_start = _rhs_split(u, f_hi, f_lo, 0.0, *args, implicit=False)
    k, _ = substeps(dt_out, limit(pmax_start), where, floor)
    while True:
        dt, dtheta = dt_out / k, 1.0 / k
        if sigma > 0.0 and solvers.get("k") != k:
            solvers["k"], solvers["solver"] = k, StencilSolver(len(u), implicit_stencil(dt, dx, sigma), bc)
        v = u
        for s in range(k):
            theta = s / k
            e0, _, pmax = (e_start, None, pmax_start) if s == 0 else _rhs_split(v, f_hi, f_lo, theta, *args, False)
            allowed = limit(pmax)
            if dt > 2.0 * allowed or np.isnan(allowed):
                k = _more_substeps(k, dt_out / allowed if allowed > 0 else math.inf, where)  # restart the interval
                break
            e, li = [e0], []
            for st in range(1, 5):
                stage = v + dt * ars_increment(st, e, li)
                if sigma > 0.0:
                    stage = solvers["solver"].solve(stage)
                if st < 4:
                    e_st, li_st, _ = _rhs_split(stage, f_hi, f_lo, theta + ARS_C[st] * dtheta, *args)
                    e.append(e_st)
                    li.append(li_st)
            v = stage
        else:
            allowed = limit(_rhs_split(v, f_hi, f_lo, 1.0, *args, implicit=False)[2])  # the last sub-step's slopes
            if not (dt > 2.0 * allowed or np.isnan(allowed)):
                return v, k
            k = _more_substeps(k, dt_out / allowed if allowed > 0 else math.inf, where)

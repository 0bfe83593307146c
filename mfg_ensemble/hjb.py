"""The HJB equation of the MFG backward in time: the NumPy reference of ``rust_core/src/hjb.rs``.

    −∂t u − (σ²/2) ∂xx u + H(∂x u) = f(t, x),   u(T, x) = g(x),   H(p) = p²/2

In backward time s = T − t: ∂s u = (σ²/2) ∂xx u − H(∂x u) + f. Space: the HJ-WENO5 one-sided
derivatives d⁻, d⁺ (:mod:`mfg_ensemble.weno`) in Godunov's monotone numerical Hamiltonian of
the convex H,

    Ĥ(d⁻, d⁺) = ½ max(max(d⁻, 0)², min(d⁺, 0)²),

and the central second difference (u_{i+1} − 2u_i + u_{i−1})/dx² with the same ghost nodes
(mirror for "reflect": zero flux through the walls; wrap for "periodic"). Time: TVD-RK3
(Shu–Osher) from each output time to the previous one in k equal sub-steps,
k = ⌈Δt/δ⌉, δ = cfl/(max|d±|/dx + σ²/dx²) taken afresh at each sub-step, so the sub-steps
add up to Δt = T/(nt − 1) exactly; f is linear in t between output times.
Units: u in cost, f in cost/time, σ in length/√time, x in length.
"""

from __future__ import annotations

import numpy as np

from mfg_ensemble._validate import FloatArray, check_finite
from mfg_ensemble.sweep_steps import Diverged, substeps
from mfg_ensemble.weno import weno5_derivatives_reference


def godunov(d_minus: FloatArray, d_plus: FloatArray) -> FloatArray:
    """Godunov's numerical Hamiltonian for H(p) = p²/2."""
    a = np.maximum(d_minus, 0.0)
    b = np.minimum(d_plus, 0.0)
    return 0.5 * np.maximum(a * a, b * b)


def laplacian(u: FloatArray, dx: float, bc: str) -> FloatArray:
    """(u_{i+1} − 2u_i + u_{i−1})/dx² with mirror ("reflect") or wrapped ("periodic") ghosts."""
    ext = np.pad(u, 1, mode="reflect" if bc == "reflect" else "wrap")
    return (ext[2:] - 2.0 * u + ext[:-2]) / (dx * dx)


def _rhs(u, f_hi, f_lo, theta, dx, sigma, bc, variant, eps) -> tuple[FloatArray, float]:
    dm, dp = weno5_derivatives_reference(u, dx, bc, variant, eps)
    f = (1.0 - theta) * f_hi + theta * f_lo
    out = 0.5 * sigma * sigma * laplacian(u, dx, bc) - godunov(dm, dp) + f
    return out, float(np.max(np.maximum(np.abs(dm), np.abs(dp))))  # NaN propagates


def hjb_backward_reference(
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
) -> tuple[FloatArray, int]:
    """u at the output times t_j = j·T/(nt − 1) (shape (nt, nx)) and the sub-step count,
    for the running cost ``f`` (nt, nx) and the terminal cost ``g`` (nx)."""
    check_finite("f", f.ravel())
    check_finite("g", g)
    nt, nx = f.shape
    dt_out = T / (nt - 1)
    rate_diffusion = sigma * sigma / (dx * dx)
    args = (dx, sigma, bc, variant, eps)
    out = np.full((nt, nx), np.nan)
    out[-1] = g
    u = g.copy()
    total = 0
    for j in range(nt - 2, -1, -1):
        f_lo, f_hi = f[j], f[j + 1]
        with np.errstate(over="ignore", invalid="ignore"):  # a blow-up is reported below
            u, steps = _interval(u, f_hi, f_lo, dt_out, cfl, rate_diffusion, args, j)
        total += steps
        if not np.isfinite(u).all():
            raise Diverged(f"HJB: u is not finite at t = {j * dt_out}")
        out[j] = u
    return out, total


def _interval(u, f_hi, f_lo, dt_out, cfl, rate_diffusion, args, j) -> tuple[FloatArray, int]:
    """TVD-RK3 sub-steps from one output time back to the previous one."""
    dx = args[0]
    theta, remaining, steps = 0.0, dt_out, 0
    while True:
        l1, pmax = _rhs(u, f_hi, f_lo, theta, *args)
        k, dt = substeps(remaining, cfl / (pmax / dx + rate_diffusion), f"HJB near t = {j * dt_out}")
        dtheta = dt / dt_out
        u1 = u + dt * l1
        l2, _ = _rhs(u1, f_hi, f_lo, theta + dtheta, *args)
        u2 = 0.75 * u + 0.25 * (u1 + dt * l2)
        l3, _ = _rhs(u2, f_hi, f_lo, theta + 0.5 * dtheta, *args)
        u = u / 3.0 + 2.0 / 3.0 * (u2 + dt * l3)
        steps += 1
        if k == 1:
            return u, steps
        remaining -= dt
        theta += dtheta


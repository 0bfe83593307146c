"""The Fokker–Planck equation by finite volumes: the NumPy reference of ``rust_core/src/fv.rs``.

    ∂t m − (σ²/2) ∂xx m − ∂x(m ∂x u) = 0,   m(0, x) = m0(x)

i.e. ∂t m + ∂x F = 0 with the flux F = α m − D ∂x m, drift α = −∂x u, D = σ²/2. Control
volumes are centred on the nodes: width dx inside and dx/2 at the two wall nodes of "reflect"
(so Σ wᵢ mᵢ is the trapezoid mass), dx everywhere for "periodic" — the weights of
:mod:`mfg_ensemble.kernels.quadrature`. At the face i+½:

    α_{i+½} = −(u_{i+1} − u_i)/dx
    F_{i+½} = max(α, 0)·m_i + min(α, 0)·m_{i+1} − D (m_{i+1} − m_i)/dx

(upwind drift, central diffusion); no flux through the walls of "reflect", a face between the
last and the first node for "periodic". Explicit Euler m_i ← m_i − δ/w_i (F_{i+½} − F_{i−½}):
the fluxes telescope, so mass is conserved to rounding, and δ ≤ cfl·dx/(2 max|α| + 2D/dx)
with cfl ≤ 1 makes each update a convex combination, so m ≥ 0. Output interval j (length
Δt = T/(nt − 1)) takes k_j = max(min_substeps[j], ⌈Δt/δ_j⌉) equal sub-steps Δt/k_j, with
δ_j = cfl·dx/(2A + 2D/dx) and A the max |α| of the output rows at both ends of the interval;
α is linear in t between output times and taken at the start of each sub-step. The k_j taken
are returned. First order in space and time. Units: m in 1/length.
"""

from __future__ import annotations

import numpy as np

from mfg_ensemble.errors import Diverged
from mfg_ensemble.kernels.checks import FloatArray, check_finite
from mfg_ensemble.kernels.quadrature import quadrature_weights
from mfg_ensemble.kernels.reference.substeps import IntArray, floors, step_limit, substeps


def face_drift(u: FloatArray, dx: float, bc: str) -> FloatArray:
    """α_{i+½} = −(u_{i+1} − u_i)/dx at the faces that carry flux."""
    if bc == "periodic":
        return -(np.roll(u, -1) - u) / dx
    return -(u[1:] - u[:-1]) / dx


def fv_forward(
    u: FloatArray,
    m0: FloatArray,
    *,
    dx: float,
    sigma: float,
    T: float,
    bc: str = "reflect",
    cfl: float = 0.9,
    min_substeps: IntArray | None = None,
) -> tuple[FloatArray, IntArray]:
    """m at the output times (shape (nt, nx)) and the sub-steps taken in each output interval
    (shape (nt − 1,)), at least ``min_substeps``."""
    check_finite("u", u.ravel())
    check_finite("m0", m0)
    nt, nx = u.shape
    floor = floors(min_substeps, nt - 1)
    diffusion = 0.5 * sigma * sigma
    dt_out = T / (nt - 1)
    widths = quadrature_weights(nx, dx, bc)  # the control-volume widths
    out = np.full((nt, nx), np.nan)
    out[0] = m0
    m = m0.copy()
    drift_now = face_drift(u[0], dx, bc)
    counts = np.zeros(nt - 1, dtype=np.int64)
    for j in range(nt - 1):
        drift_next = face_drift(u[j + 1], dx, bc)
        amax = float(np.max(np.abs(np.r_[drift_now, drift_next])))
        limit = step_limit(cfl * dx, 2.0 * amax + 2.0 * diffusion / dx)
        k, dt = substeps(dt_out, limit, f"FP near t = {j * dt_out}", int(floor[j]))
        for s in range(k):
            theta = s / k
            a = (1.0 - theta) * drift_now + theta * drift_next
            nxt = np.roll(m, -1)[: a.shape[0]]
            here = m[: a.shape[0]]
            flux = np.maximum(a, 0.0) * here + np.minimum(a, 0.0) * nxt - diffusion * (nxt - here) / dx
            if bc == "periodic":
                right, left = flux, np.roll(flux, 1)
            else:
                right, left = np.r_[flux, 0.0], np.r_[0.0, flux]
            m = m - dt / widths * (right - left)
        counts[j] = k
        if not np.isfinite(m).all():
            raise Diverged(f"FP: m is not finite at t = {(j + 1) * dt_out}")
        out[j + 1] = m
        drift_now = drift_next
    return out, counts

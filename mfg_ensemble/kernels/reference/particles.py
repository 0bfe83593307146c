"""Euler–Maruyama particles for Fokker–Planck: the NumPy reference of ``rust_core/src/particles.rs``.

One step of dX = b dt + σ dW for every particle i:

    x'ᵢ = xᵢ + bᵢ·dt + σ·√dt·ξᵢ,   ξᵢ = normal i of the Philox sequence (seed, step, STREAM_EM)

(see :mod:`mfg_ensemble.kernels.reference.rng`), so the noise is a pure function of (seed, step, i). x' is then
brought back into [lo, hi]: "reflect" folds it about the walls as often as needed,
"periodic" wraps it into [lo, hi). Units: x in length, b in length/time, σ in length/√time.

In the forward march, sub-step s of output interval j uses the Philox step
:func:`noise_step` (j, s) = (j << 32) | s = j·2³² + s: the noise of an interval depends only
on its own index and sub-step, so a different sub-step count in one interval leaves the noise
drawn in every other interval unchanged.
"""

from __future__ import annotations

import numpy as np

from mfg_ensemble.kernels.checks import FloatArray, check_finite, check_inside
from mfg_ensemble.kernels.reference import rng
from mfg_ensemble.kernels.reference.kde import bandwidth_rule, kde
from mfg_ensemble.kernels.reference.substeps import IntArray, floors, step_limit, substeps


def fold_into(x: FloatArray, lo: float, hi: float, bc: str) -> FloatArray:
    """Positions ``x`` brought back into [lo, hi] by reflection or periodic wrapping."""
    length = hi - lo
    if bc == "periodic":
        y = np.mod(x - lo, length)
        y = np.where(y >= length, 0.0, y)
    else:
        y = np.mod(x - lo, 2.0 * length)
        y = np.where(y > length, 2.0 * length - y, y)
    return np.clip(lo + y, lo, hi)


def evolve_particles(
    x: FloatArray,
    drift: FloatArray,
    dt: float,
    sigma: float,
    lo: float,
    hi: float,
    seed: int,
    step: int,
    bc: str,
) -> FloatArray:
    """One Euler–Maruyama step of the particles ``x`` (see the module docstring)."""
    check_finite("x", x)
    check_finite("drift", drift)
    check_inside("x", x, lo, hi, "[lo, hi]")
    return _advance(x, drift, dt, sigma, lo, hi, seed, step, bc)


def _advance(x, drift, dt, sigma, lo, hi, seed, step, bc) -> FloatArray:
    xi = rng.normals(seed, step, rng.STREAM_EM, x.shape[0])
    moved = x + drift * dt + (sigma * np.sqrt(dt)) * xi
    return fold_into(moved, lo, hi, bc)


def noise_step(j: int, s: int) -> int:
    """The Philox step of sub-step ``s`` of output interval ``j`` of the forward march:
    (j << 32) | s. Sub-step counts are at most 10⁶ < 2³², so distinct (j, s) never collide."""
    return (j << 32) | s


def node_gradient(u: FloatArray, dx: float, bc: str) -> FloatArray:
    """∂x u at the nodes: central differences, 0 at reflecting walls (mirror ghost), wrapped
    on a periodic grid."""
    if bc == "periodic":
        return (np.roll(u, -1) - np.roll(u, 1)) / (2.0 * dx)
    grad = np.zeros_like(u)
    grad[1:-1] = (u[2:] - u[:-2]) / (2.0 * dx)
    return grad


def interpolate(values: FloatArray, lo: float, dx: float, x: FloatArray, periodic: bool) -> FloatArray:
    """Linear interpolation of node values (nodes lo + i·dx) at ``x``; periodic grids wrap."""
    n = values.shape[0]
    t = (x - lo) / dx
    j = np.minimum(np.maximum(np.floor(t), 0.0).astype(np.int64), n - 1 if periodic else n - 2)
    f = t - j
    return (1.0 - f) * values[j] + f * values[(j + 1) % n]


def particles_forward(
    x0: FloatArray,
    u: FloatArray,
    grid: FloatArray,
    *,
    sigma: float,
    T: float,
    lo: float,
    hi: float,
    seed: int,
    bc: str,
    method: str,
    bandwidth: float | str,
    min_substeps: IntArray | None = None,
) -> tuple[FloatArray, IntArray]:
    """The particle Fokker–Planck march; returns (m of shape (nt, nx), the sub-steps taken in
    each output interval, shape (nt − 1,)).

    From the particles ``x0`` at t = 0: Euler–Maruyama steps with drift α = −∂x u (u of shape
    (nt, nx) on ``grid``, linear in t between output times; ∂x u by :func:`node_gradient`,
    linear in x between nodes) and the KDE of the particles at every output time. Output
    interval j (length Δt) takes k_j = max(min_substeps[j], ⌈Δt·G_j/dx⌉) ≥ 1 equal sub-steps
    Δt/k_j, G_j the max |∂x u| of the output rows at both ends of the interval (no particle
    drifts more than a cell per step); sub-step s of interval j draws its noise from Philox
    step :func:`noise_step` (j, s) = (j << 32) | s, so changing k_j changes the noise of
    interval j only.
    """
    check_finite("u", u.ravel())
    check_finite("x0", x0)
    check_inside("x0", x0, lo, hi, "[lo, hi]")
    nt, nx = u.shape
    floor = floors(min_substeps, nt - 1)
    periodic = bc == "periodic"
    dx = (hi - lo) / (nx if periodic else nx - 1)
    dt_out = T / (nt - 1)
    kde_bc = "periodic" if periodic else "reflect"

    def density(x: FloatArray) -> FloatArray:
        h = bandwidth if not isinstance(bandwidth, str) else bandwidth_rule(x, bandwidth)
        return kde(x, grid, h, method, kde_bc)

    m = np.full((nt, nx), np.nan)
    x = np.array(x0, dtype=np.float64)
    m[0] = density(x)
    grad_now = node_gradient(u[0], dx, bc)
    counts = np.zeros(nt - 1, dtype=np.int64)
    for j in range(nt - 1):
        grad_next = node_gradient(u[j + 1], dx, bc)
        gmax = float(np.max(np.abs(np.r_[grad_now, grad_next])))
        k, dt = substeps(dt_out, step_limit(dx, gmax), f"FP particles near t = {j * dt_out}", int(floor[j]))
        for s in range(k):
            theta = s / k
            grad = (1.0 - theta) * grad_now + theta * grad_next
            x = _advance(x, -interpolate(grad, lo, dx, x, periodic), dt, sigma, lo, hi, seed, noise_step(j, s), bc)
        counts[j] = k
        m[j + 1] = density(x)
        grad_now = grad_next
    return m, counts

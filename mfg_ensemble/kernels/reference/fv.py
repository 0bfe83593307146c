"""The Fokker–Planck equation by finite volumes: the NumPy reference of ``rust_core/src/fv.rs``.

    ∂t m − (σ²/2) ∂xx m − ∂x(m ∂x u) = 0,   m(0, x) = m0(x)

i.e. ∂t m + ∂x F = 0 with the flux F = α m − D ∂x m, drift α = −∂x u, D = σ²/2. Units: m in
1/length.

Control volumes are centred on the nodes: width dx inside and dx/2 at the two wall nodes of
"reflect" (so Σ wᵢ mᵢ is the trapezoid mass), dx everywhere for "periodic" — the weights wᵢ of
:mod:`mfg_ensemble.kernels.quadrature`. The face i+½ lies between nodes i and i+1 (for
"periodic" also between the last node and the first; "reflect" has no flux through its walls).
The face drift is α_{i+½} = −(u_{i+1} − u_i)/dx, linear in t between output rows. Every update
has the conservative form m_i ← m_i − δ/w_i (F_{i+½} − F_{i−½}): the fluxes telescope, so
Σ wᵢ mᵢ is conserved to rounding.

Output interval j (length Δt = T/(nt − 1)) takes k_j = max(min_substeps[j], ⌈Δt/δ_j⌉) equal
sub-steps δ = Δt/k_j; the k_j taken are returned. Two schemes:

``scheme = "muscl2"`` (the default): second order, diffusion implicit. δ_j = cfl·dx/(2A) with
A = max|α| over the output rows at both ends of the interval — the drift CFL only, whatever
σ²/dx² (no drift: one sub-step, or the floor). One sub-step from t to t + δ is the Strang
splitting m ← 𝒟_{δ/2} 𝒜_δ 𝒟_{δ/2} m of

* 𝒜_δ, advection by SSP-RK2 (Heun): m¹ = m + δ·R(m; α(t)), m² = m¹ + δ·R(m¹; α(t + δ)),
  m ← (m + m²)/2, where R(m; α)_i = −(G_{i+½} − G_{i−½})/w_i with the upwind flux of a van
  Leer–limited MUSCL reconstruction,

      G_{i+½} = max(α, 0)·(m_i + s_i/2) + min(α, 0)·(m_{i+1} − s_{i+1}/2),
      s_i = 2 Δ⁻Δ⁺/(Δ⁻ + Δ⁺) if Δ⁻Δ⁺ > 0 else 0,  Δ⁻ = m_i − m_{i−1}, Δ⁺ = m_{i+1} − m_i

  (periodic wrap; s = 0 at the two wall nodes of "reflect", which is the slope the mirror
  ghost m_{−1} = m_1 gives). As 0 ≤ m_i ± s_i/2 ≤ 2 m_i and the two outgoing reconstructions
  of a cell add up to 2 m_i, each Euler stage is a non-negative combination of the m_i when
  δ·max|α| ≤ dx/2 (half cells: s = 0, one face), so 𝒜_δ keeps m ≥ 0 under the CFL.
* 𝒟_τ, diffusion by the two-stage L-stable, stiffly accurate SDIRK2 (γ = 1 − 1/√2): with
  (L y)_i = D/dx·((y_{i+1} − y_i) − (y_i − y_{i−1})) (no term through a wall) and the
  tridiagonal M = W − γτL (W = diag(w)),

      M y¹ = W m,   M y² = W m + (1 − γ)τ L y¹,   m ← y².

  1ᵀL = 0, so every stage conserves Σ wᵢ mᵢ exactly in exact arithmetic.

Strang splitting of second-order pieces is second order in time; the limited reconstruction
is second order in space where m is smooth (first order at extrema and walls, locally). No
second-order linear step is positive for every δ (SDIRK2's second stage has a negative weight),
so the sub-step is checked a posteriori: if it made any m_i < 0 it is redone with the
first-order IMEX step — forward-Euler upwind advection (the flux G with s = 0), then backward
Euler (W − δL) m_new = W m_adv. The first is a non-negative combination under the same CFL,
the second an M-matrix solve (inverse ≥ 0), so that step is positive; it also conserves mass.

Measured (tests/kernels/test_fv_order.py: Ornstein–Uhlenbeck drift, exact Gaussian solution,
walls negligible, σ = 0.05, reflect): L1 errors 9.1e-3, 2.2e-3, 5.3e-4, 1.3e-4 at nx = 101,
201, 401, 801, orders 2.06, 2.04, 2.02; "upwind1" gives 9.6e-2 … 1.4e-2, orders 0.91–0.95.
In those tests and in random stiff trials the fallback was never needed (the two SDIRK2 halves
around a positive advection kept m ≥ 0); it is there so that positivity is guaranteed.

``scheme = "upwind1"`` (the former scheme): first order, explicit. F_{i+½} = max(α, 0)·m_i +
min(α, 0)·m_{i+1} − D (m_{i+1} − m_i)/dx, explicit Euler with α taken at the start of each
sub-step; δ_j = cfl·dx/(2A + 2D/dx) makes each update a convex combination, so m ≥ 0, and
it makes the cost grow like nx³ when diffusion dominates.

Tridiagonal solves (the same operations here and in Rust): Thomas' algorithm for "reflect";
for "periodic" the cyclic system by Sherman–Morrison (B = M − u vᵀ tridiagonal with
u = (−b₀, 0, …, 0, −c), v = (1, 0, …, 0, c/b₀), c = γτD/dx the off-diagonal coupling, b₀ the
first diagonal entry). Both keep m ≥ 0 in floating point (only sums of non-negative terms).
"""

from __future__ import annotations

import math

import numpy as np

from mfg_ensemble.errors import Diverged
from mfg_ensemble.kernels.checks import FloatArray, check_finite
from mfg_ensemble.kernels.quadrature import quadrature_weights
from mfg_ensemble.kernels.reference.substeps import IntArray, floors, step_limit, substeps

SCHEMES = ("muscl2", "upwind1")
GAMMA = 1.0 - math.sqrt(0.5)
"""γ = 1 − 1/√2 of the SDIRK2 diffusion stage."""


def face_drift(u: FloatArray, dx: float, bc: str) -> FloatArray:
    """α_{i+½} = −(u_{i+1} − u_i)/dx at the faces that carry flux."""
    if bc == "periodic":
        return -(np.roll(u, -1) - u) / dx
    return -(u[1:] - u[:-1]) / dx


def divergence(flux: FloatArray, bc: str, axis: int = 0) -> FloatArray:
    """F_{i+½} − F_{i−½} at every node along ``axis`` (no flux through the walls of "reflect")."""
    if bc == "periodic":
        return flux - np.roll(flux, 1, axis=axis)
    pad = [(0, 0)] * flux.ndim
    pad[axis] = (0, 1)
    after = np.pad(flux, pad)
    pad[axis] = (1, 0)
    return after - np.pad(flux, pad)


def van_leer_slopes(m: FloatArray, bc: str) -> FloatArray:
    """s_i = 2Δ⁻Δ⁺/(Δ⁻ + Δ⁺) where Δ⁻Δ⁺ > 0, else 0 (0 at the walls of "reflect")."""
    if bc == "periodic":
        minus, plus = m - np.roll(m, 1), np.roll(m, -1) - m
    else:
        d = m[1:] - m[:-1]
        minus, plus = np.r_[0.0, d], np.r_[d, 0.0]
    return van_leer(minus, plus)


def van_leer(minus: FloatArray, plus: FloatArray) -> FloatArray:
    """The van Leer slope 2Δ⁻Δ⁺/(Δ⁻ + Δ⁺) where Δ⁻Δ⁺ > 0, else 0."""
    prod = minus * plus
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(prod > 0.0, 2.0 * prod / (minus + plus), 0.0)


def upwind(a: FloatArray, left: FloatArray, right: FloatArray) -> FloatArray:
    """The upwind face flux max(α, 0)·left + min(α, 0)·right of the reconstructions either side."""
    return np.maximum(a, 0.0) * left + np.minimum(a, 0.0) * right


def advective_flux(m: FloatArray, a: FloatArray, bc: str, limited: bool) -> FloatArray:
    """G_{i+½}: upwind flux of the MUSCL (van Leer) reconstruction, or of m itself."""
    nf = a.shape[0]
    if limited:
        s = van_leer_slopes(m, bc)
        left = m + 0.5 * s
        right = m - 0.5 * s
    else:
        left = right = m
    return upwind(a, left[:nf], np.roll(right, -1)[:nf])


class Tridiagonal:
    """The factored M = W − cL (diagonal wᵢ + c·fᵢ, fᵢ the faces of node i that carry flux,
    off-diagonal −c), cyclic (the last node coupled to the first) or not: Thomas' algorithm,
    Sherman–Morrison for the corners. ``Tridiagonal(widths, c, bc)`` is a whole line (two faces
    per node, one at the walls of "reflect"); fv2d's line segments use :meth:`segment`."""

    def __init__(self, widths: FloatArray, c: float, bc: str) -> None:
        faces = np.full(widths.shape[0], 2.0)
        if bc != "periodic":
            faces[0] = faces[-1] = 1.0
        self._factor(widths, c, faces, bc == "periodic")

    @classmethod
    def segment(cls, widths: FloatArray, c: float, faces: FloatArray, cyclic: bool) -> Tridiagonal:
        """M with the face counts ``faces`` of each node, cyclic or not."""
        t = cls.__new__(cls)
        t._factor(widths, c, faces, cyclic)
        return t

    def _factor(self, widths: FloatArray, c: float, faces: FloatArray, cyclic: bool) -> None:
        n = widths.shape[0]
        self.c, self.cyclic, self.n = c, cyclic, n
        d = [float(w) + f * c for w, f in zip(widths, faces)]
        if cyclic:
            b0 = d[0]
            self.ratio = c / b0
            d[0] = b0 + b0
            d[n - 1] = d[n - 1] + c * self.ratio
        inv = [0.0] * n  # 1/den of the forward sweep
        g = [0.0] * n  # c/den
        inv[0] = 1.0 / d[0]
        g[0] = c * inv[0]
        for i in range(1, n):
            inv[i] = 1.0 / (d[i] - c * g[i - 1])
            g[i] = c * inv[i]
        self.inv, self.g = inv, g
        if cyclic:
            rhs = [0.0] * n
            rhs[0] = -b0
            rhs[n - 1] = -c
            self.z = self._thomas(rhs)
            self.denom = 1.0 + (self.z[0] + self.ratio * self.z[n - 1])

    def _thomas(self, r: list[float]) -> list[float]:
        n, c, inv, g = self.n, self.c, self.inv, self.g
        x = [0.0] * n
        x[0] = r[0] * inv[0]
        for i in range(1, n):
            x[i] = (r[i] + c * x[i - 1]) * inv[i]
        for i in range(n - 2, -1, -1):
            x[i] = x[i] + g[i] * x[i + 1]
        return x

    def solve(self, r: FloatArray) -> FloatArray:
        y = self._thomas(r.tolist())
        if self.cyclic:
            n = self.n
            q = (y[0] + self.ratio * y[n - 1]) / self.denom
            y = [y[i] - q * self.z[i] for i in range(n)]
        return np.array(y)


def diffusion_flux(y: FloatArray, bc: str) -> FloatArray:
    """y_{i+1} − y_i at the faces (the face differences L telescopes)."""
    if bc == "periodic":
        return np.roll(y, -1) - y
    return y[1:] - y[:-1]


def sdirk2(m: FloatArray, w: FloatArray, solver: Tridiagonal, c2: float, bc: str) -> FloatArray:
    """𝒟_τ m: M y¹ = W m, M y² = W m + c2·(Δy¹_{i+½} − Δy¹_{i−½}), with c2 = (1 − γ)τD/dx."""
    wm = w * m
    y1 = solver.solve(wm)
    return solver.solve(wm + c2 * divergence(diffusion_flux(y1, bc), bc))


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
    scheme: str = "muscl2",
) -> tuple[FloatArray, IntArray]:
    """m at the output times (shape (nt, nx)) and the sub-steps taken in each output interval
    (shape (nt − 1,)), at least ``min_substeps``."""
    check_finite("u", u.ravel())
    check_finite("m0", m0)
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of 'muscl2', 'upwind1', got '{scheme}'")
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
        if scheme == "upwind1":
            limit = step_limit(cfl * dx, 2.0 * amax + 2.0 * diffusion / dx)
        else:
            limit = step_limit(cfl * dx, 2.0 * amax)
        k, dt = substeps(dt_out, limit, f"FP near t = {j * dt_out}", int(floor[j]))
        if scheme == "upwind1":
            m = upwind1_interval(m, drift_now, drift_next, k, dt, widths, diffusion, dx, bc)
        else:
            m = muscl2_interval(m, drift_now, drift_next, k, dt, widths, diffusion, dx, bc)
        counts[j] = k
        if not np.isfinite(m).all():
            raise Diverged(f"FP: m is not finite at t = {(j + 1) * dt_out}")
        out[j + 1] = m
        drift_now = drift_next
    return out, counts


def upwind1_interval(m, drift_now, drift_next, k, dt, widths, diffusion, dx, bc) -> FloatArray:
    """k explicit first-order sub-steps (upwind drift, central diffusion) of length dt."""
    for s in range(k):
        theta = s / k
        a = (1.0 - theta) * drift_now + theta * drift_next
        nxt = np.roll(m, -1)[: a.shape[0]]
        here = m[: a.shape[0]]
        flux = np.maximum(a, 0.0) * here + np.minimum(a, 0.0) * nxt - diffusion * (nxt - here) / dx
        m = m - dt / widths * divergence(flux, bc)
    return m


def muscl2_interval(m, drift_now, drift_next, k, dt, widths, diffusion, dx, bc) -> FloatArray:
    """k second-order IMEX sub-steps of length dt (Strang: SDIRK2 half, SSP-RK2 MUSCL, SDIRK2
    half), each redone by the first-order IMEX step if it made m negative."""
    implicit = diffusion > 0.0
    half = 0.5 * dt
    half_solver = Tridiagonal(widths, GAMMA * half * diffusion / dx, bc) if implicit else None
    c2 = (1.0 - GAMMA) * half * diffusion / dx
    fallback_solver: Tridiagonal | None = None
    for s in range(k):
        a0 = (1.0 - s / k) * drift_now + (s / k) * drift_next
        a1 = (1.0 - (s + 1) / k) * drift_now + ((s + 1) / k) * drift_next
        y = sdirk2(m, widths, half_solver, c2, bc) if half_solver is not None else m
        y1 = y - dt / widths * divergence(advective_flux(y, a0, bc, True), bc)
        y2 = y1 - dt / widths * divergence(advective_flux(y1, a1, bc, True), bc)
        y = 0.5 * (y + y2)
        new = sdirk2(y, widths, half_solver, c2, bc) if half_solver is not None else y
        if (new < 0.0).any():
            if implicit and fallback_solver is None:
                fallback_solver = Tridiagonal(widths, dt * diffusion / dx, bc)
            new = first_order_imex_step(m, a0, dt, widths, fallback_solver, bc)
        m = new
    return m


def first_order_imex_step(
    m: FloatArray, a: FloatArray, dt: float, widths: FloatArray, solver: Tridiagonal | None, bc: str
) -> FloatArray:
    """The positive fallback: forward-Euler upwind advection, then backward-Euler diffusion
    (W − δL) m_new = W m_adv (``solver`` factors W − δL; None: no diffusion)."""
    new = m - dt / widths * divergence(advective_flux(m, a, bc, False), bc)
    return new if solver is None else solver.solve(widths * new)

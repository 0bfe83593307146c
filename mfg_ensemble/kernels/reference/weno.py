"""WENO5 for Hamilton–Jacobi equations: the NumPy reference of ``rust_core/src/weno.rs``.

Jiang & Peng (SIAM J. Sci. Comput. 21, 2000). On a uniform grid with spacing dx let
vₖ = (u_{k+1} − u_k)/dx. The left-biased derivative d⁻ at node i takes
(v1..v5) = (v_{i−3}, v_{i−2}, v_{i−1}, v_i, v_{i+1}), the right-biased d⁺ takes
(v_{i+2}, v_{i+1}, v_i, v_{i−1}, v_{i−2}); then

    φ1 = v1/3 − 7v2/6 + 11v3/6,  φ2 = −v2/6 + 5v3/6 + v4/3,  φ3 = v3/3 + 5v4/6 − v5/6
    S1 = 13/12 (v1 − 2v2 + v3)² + 1/4 (v1 − 4v2 + 3v3)²
    S2 = 13/12 (v2 − 2v3 + v4)² + 1/4 (v2 − v4)²
    S3 = 13/12 (v3 − 2v4 + v5)² + 1/4 (3v3 − 4v4 + v5)²
    d  = Σ αₖ φₖ / Σ αₖ,   ideal weights γ = (0.1, 0.6, 0.3)

with αₖ = γₖ/(ε + Sₖ)² ("js", Jiang–Shu) or αₖ = γₖ(1 + (τ/(ε + Sₖ))²), τ = |S1 − S3|
("z", WENO-Z of Borges et al. 2008 with exponent 2). The same S formula on five values
u_{i−2..i+2} gives the smoothness indicators β0, β1, β2 of a 5-point window.

ε is relative to the scale of the data, as Osher & Fedkiw (Level Set Methods and Dynamic
Implicit Surfaces, 2003, §3.4) set it for HJ-WENO: at each node and for each of d⁻, d⁺,

    ε = ε_rel · max(v1², …, v5²) + ε_floor,    ε_floor = 1e-300,

with ε_rel the ``eps`` argument (1e-6 by default; Osher & Fedkiw take ε_floor = 1e-99, the
normalised form below allows any floor that does not underflow). The weights are then
invariant under u ↦ c·u (for differences |vₖ| above ~1e-147, where ε_floor, which only keeps
0/0 away where all five vₖ vanish, is negligible): a kink of
slope 1e-4 is resolved like one of slope 1 (with an absolute ε = 1e-6 the weights of so
small differences were the linear ones, and d overshot the kink's slopes by 34 %). The weights
are computed from Sₖ/ε and τ/ε (the same αₖ up to the common factor ε², which cancels), so
that 1 ≤ 1 + Sₖ/ε ≤ 1 + 34/ε_rel at any scale of u: no overflow or underflow.

Ghost nodes: "periodic" wraps (node n is node 0, so the grid holds one period without its
end point); "reflect" mirrors about the end nodes, u_{−k} = u_k, u_{n−1+k} = u_{n−1−k}
(zero slope at the walls). The operations are ordered as in Rust, so both agree to rounding.
"""

from __future__ import annotations

import numpy as np

from mfg_ensemble.kernels.checks import FloatArray, check_finite

MIN_NODES = 6
"""Fewest nodes the derivative kernel accepts."""


def _betas(a, b, c, d, e) -> tuple[FloatArray, FloatArray, FloatArray]:
    s0, t0 = a - 2.0 * b + c, a - 4.0 * b + 3.0 * c
    s1, t1 = b - 2.0 * c + d, b - d
    s2, t2 = c - 2.0 * d + e, 3.0 * c - 4.0 * d + e
    return (
        13.0 / 12.0 * (s0 * s0) + 0.25 * (t0 * t0),
        13.0 / 12.0 * (s1 * s1) + 0.25 * (t1 * t1),
        13.0 / 12.0 * (s2 * s2) + 0.25 * (t2 * t2),
    )


def smoothness_indicators(u: FloatArray) -> FloatArray:
    """β0, β1, β2 of every 5-point window of ``u``: shape (3, n − 4)."""
    check_finite("u", u)
    n = u.shape[0]
    return np.stack(_betas(*(u[k : n - 4 + k] for k in range(5))))


EPS_FLOOR = 1e-300
"""The absolute floor of ε (see the module docstring)."""


def _combine(v1, v2, v3, v4, v5, variant: str, eps: float) -> FloatArray:
    phi1 = v1 / 3.0 - 7.0 * v2 / 6.0 + 11.0 * v3 / 6.0
    phi2 = -v2 / 6.0 + 5.0 * v3 / 6.0 + v4 / 3.0
    phi3 = v3 / 3.0 + 5.0 * v4 / 6.0 - v5 / 6.0
    s1, s2, s3 = _betas(v1, v2, v3, v4, v5)
    scale = np.maximum(np.maximum(np.maximum(v1 * v1, v2 * v2), np.maximum(v3 * v3, v4 * v4)), v5 * v5)
    inv = 1.0 / (eps * scale + EPS_FLOOR)  # 1/ε
    q1, q2, q3 = 1.0 + s1 * inv, 1.0 + s2 * inv, 1.0 + s3 * inv  # (ε + Sₖ)/ε
    if variant == "js":
        a1, a2, a3 = 0.1 / (q1 * q1), 0.6 / (q2 * q2), 0.3 / (q3 * q3)
    else:
        tau = np.abs(s1 - s3) * inv
        r1, r2, r3 = tau / q1, tau / q2, tau / q3
        a1, a2, a3 = 0.1 * (1.0 + r1 * r1), 0.6 * (1.0 + r2 * r2), 0.3 * (1.0 + r3 * r3)
    return (a1 * phi1 + a2 * phi2 + a3 * phi3) / (a1 + a2 + a3)


def with_ghosts(u: FloatArray, bc: str) -> FloatArray:
    """``u`` with three ghost nodes on each side for the boundary condition ``bc``."""
    mode = "reflect" if bc == "reflect" else "wrap"
    return np.pad(u, 3, mode=mode)


def weno5_derivatives(u: FloatArray, dx: float, bc: str, variant: str, eps: float) -> tuple[FloatArray, FloatArray]:
    """(d⁻, d⁺): left- and right-biased HJ-WENO5 derivatives of ``u`` at every node; ``eps`` is
    ε_rel, the relative ε."""
    check_finite("u", u)
    n = u.shape[0]
    ext = with_ghosts(u, bc)
    v = (ext[1:] - ext[:-1]) / dx  # v[j] is v_{j−3}; length n + 5
    w = [v[k : n + k] for k in range(6)]
    d_minus = _combine(w[0], w[1], w[2], w[3], w[4], variant, eps)
    d_plus = _combine(w[5], w[4], w[3], w[2], w[1], variant, eps)
    return d_minus, d_plus

"""Counter-based normals: the NumPy twin of ``rust_core/src/rng.rs``.

Philox4x64-10 (Salmon et al., SC'11), the generator of ``numpy.random.Philox``, turns a
256-bit counter and a 128-bit key into four 64-bit words. mfg_ensemble uses

    key = (seed, 0),   counter = (block, step, stream, 0)

and the Box–Muller transform on each pair of words (w_r, w_θ):
u1 = ((w_r >> 11) + 1)·2⁻⁵³ ∈ (0, 1], u2 = (w_θ >> 11)·2⁻⁵³, r = √(−2 ln u1), θ = 2π u2,
giving r cos θ and r sin θ. Normal number i of the (seed, step, stream) sequence is entry
i mod 4 of block i // 4. Both backends compute the very same words; the normals agree to the
rounding of ln/sin/cos.
"""

from __future__ import annotations

import numpy as np

from mfg_ensemble.kernels.checks import FloatArray

_MASK32 = np.uint64(0xFFFFFFFF)
_M0 = 0xD2E7470EE14C6C93
_M1 = 0xCA5A826395121157
_W0 = 0x9E3779B97F4A7C15
_W1 = 0xBB67AE8584CAA73B
_U64 = 2**64
STREAM_EM = 0
"""Stream tag of the Euler–Maruyama noise."""


def _mulhilo(a: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
    """High and low 64-bit halves of the 128-bit products a·b (a uint64 array, b a constant)."""
    b_lo, b_hi = np.uint64(b & 0xFFFFFFFF), np.uint64(b >> 32)
    a_lo, a_hi = a & _MASK32, a >> np.uint64(32)
    p0, p1, p2, p3 = a_lo * b_lo, a_lo * b_hi, a_hi * b_lo, a_hi * b_hi
    s32 = np.uint64(32)
    mid = (p0 >> s32) + (p1 & _MASK32) + (p2 & _MASK32)
    hi = p3 + (p1 >> s32) + (p2 >> s32) + (mid >> s32)
    return hi, a * np.uint64(b)


def philox4x64_10(counter: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Philox4x64-10 of every column of ``counter`` (uint64, shape (4, N)) under ``key``."""
    c0, c1, c2, c3 = (np.asarray(row, dtype=np.uint64) for row in counter)
    k0, k1 = key[0] % _U64, key[1] % _U64
    for rnd in range(10):
        if rnd:
            k0, k1 = (k0 + _W0) % _U64, (k1 + _W1) % _U64
        hi0, lo0 = _mulhilo(c0, _M0)
        hi1, lo1 = _mulhilo(c2, _M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ np.uint64(k0), lo1, hi0 ^ c3 ^ np.uint64(k1), lo0
    return np.stack([c0, c1, c2, c3])


def _box_muller(w_radius: np.ndarray, w_angle: np.ndarray) -> tuple[FloatArray, FloatArray]:
    s11 = np.uint64(11)
    u1 = ((w_radius >> s11) + np.uint64(1)).astype(np.float64) * 2.0**-53
    u2 = (w_angle >> s11).astype(np.float64) * 2.0**-53
    r = np.sqrt(-2.0 * np.log(u1))
    theta = 2.0 * np.pi * u2
    return r * np.cos(theta), r * np.sin(theta)


def normals(seed: int, step: int, stream: int, n: int, start: int = 0) -> FloatArray:
    """Normals ``start .. start + n`` of the (seed, step, stream) sequence."""
    if n == 0:
        return np.empty(0)
    first, last = start // 4, (start + n - 1) // 4
    blocks = np.arange(first, last + 1, dtype=np.uint64)
    counter = np.stack(
        [
            blocks,
            np.full_like(blocks, step),
            np.full_like(blocks, stream),
            np.zeros_like(blocks),
        ]
    )
    w = philox4x64_10(counter, (seed, 0))
    z0, z1 = _box_muller(w[0], w[1])
    z2, z3 = _box_muller(w[2], w[3])
    flat = np.stack([z0, z1, z2, z3], axis=1).ravel()
    offset = start % 4
    return flat[offset : offset + n]


STREAM_INIT = 1
"""Stream tag of the initial particle positions."""


def uniforms(seed: int, step: int, stream: int, n: int) -> FloatArray:
    """n uniforms in (0, 1) from the (seed, step, stream) sequence: ((w >> 11) + ½)·2⁻⁵³ for
    the four words w of each block in order."""
    blocks = np.arange((n + 3) // 4, dtype=np.uint64)
    counter = np.stack([blocks, np.full_like(blocks, step), np.full_like(blocks, stream), np.zeros_like(blocks)])
    words = philox4x64_10(counter, (seed, 0)).T.ravel()[:n]
    return ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53

"""Euler–Maruyama particles for Fokker–Planck: the NumPy reference of ``rust_core/src/particles.rs``.

One step of dX = b dt + σ dW for every particle i:

    x'ᵢ = xᵢ + bᵢ·dt + σ·√dt·ξᵢ,   ξᵢ = normal i of the Philox sequence (seed, step, STREAM_EM)

(see :mod:`mfg_ensemble.rng`), so the noise is a pure function of (seed, step, i). x' is then
brought back into [lo, hi]: "reflect" folds it about the walls as often as needed,
"periodic" wraps it into [lo, hi). Units: x in length, b in length/time, σ in length/√time.
"""

from __future__ import annotations

import numpy as np

from mfg_ensemble import rng
from mfg_ensemble._validate import FloatArray, check_finite


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


def check_inside(name: str, x: FloatArray, lo: float, hi: float, interval: str) -> None:
    outside = (x < lo) | (x > hi)
    if outside.any():
        i = int(np.argmax(outside))
        raise ValueError(f"{name} must lie in {interval} = [{lo}, {hi}], {name}[{i}] = {x[i]}")


def evolve_particles_reference(
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
    xi = rng.normals(seed, step, rng.STREAM_EM, x.shape[0])
    moved = x + drift * dt + (sigma * np.sqrt(dt)) * xi
    return fold_into(moved, lo, hi, bc)

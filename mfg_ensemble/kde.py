"""Gaussian kernel density estimation: the NumPy reference of ``rust_core/src/kde.rs``.

    m(g) = 1/(n h √(2π)) Σᵢ exp(−(g − xᵢ)²/(2h²)),   terms with |g − xᵢ| > 8h dropped

(the dropped tail is below e⁻³² ≈ 1.3·10⁻¹⁴ of the kernel's peak); m has units 1/length.

* "exact": the direct sum.
* "binned": linear binning onto the uniform grid (a particle at fraction f of the cell
  [g_j, g_{j+1}] puts weight 1 − f on node j and f on node j + 1), then the direct truncated
  convolution of the weights with exp(−(k dx)²/(2h²)).
* bc "reflect": walls at grid[0] = lo and grid[-1] = hi; every particle also contributes
  through its images 2·lo − x and 2·hi − x (for binned: weights mirrored about the end
  nodes), then the density is divided by its trapezoid mass so it integrates to exactly one.
  bc "none": no images and no normalisation.

Bandwidth rules follow ``scipy.stats.gaussian_kde``: with σ̂ the sample standard deviation
(ddof=1), "scott" h = σ̂ n^(−1/5) and "silverman" h = σ̂ (3n/4)^(−1/5).
"""

from __future__ import annotations

import numpy as np

from mfg_ensemble._validate import FloatArray, check_finite
from mfg_ensemble.particles import check_inside

CUTOFF = 8.0
"""Kernel truncation radius in bandwidths."""
_CHUNK = 2048
BANDWIDTH_RULES = ("scott", "silverman")


def bandwidth_rule(particles: FloatArray, rule: str) -> float:
    """Bandwidth h of the rule ``rule`` ("scott" or "silverman") for these particles."""
    check_finite("particles", particles)
    n = particles.shape[0]
    std = float(np.std(particles, ddof=1)) if n > 1 else 0.0
    if std <= 0.0:
        raise ValueError(
            f"bandwidth={rule!r} needs at least 2 distinct particles (sample standard deviation "
            f"is {std}); pass a float bandwidth instead"
        )
    factor = n ** (-0.2) if rule == "scott" else (0.75 * n) ** (-0.2)
    return std * factor


def trapezoid(f: FloatArray, grid: FloatArray) -> float:
    """Trapezoid rule ∫ f dx on the (not necessarily uniform) grid."""
    return float(np.sum(0.5 * (f[:-1] + f[1:]) * np.diff(grid)))


def _validate(particles: FloatArray, grid: FloatArray, bc: str) -> None:
    check_finite("particles", particles)
    check_finite("grid", grid)
    steps = np.diff(grid)
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0))
        raise ValueError(
            f"grid must be strictly increasing, grid[{i}] = {grid[i]} >= grid[{i + 1}] = {grid[i + 1]}"
        )
    if bc == "reflect":
        check_inside("particles", particles, grid[0], grid[-1], "[grid[0], grid[-1]]")


def _finish(density: FloatArray, grid: FloatArray, n: int, h: float, bc: str) -> FloatArray:
    density = density * (1.0 / (n * h * np.sqrt(2.0 * np.pi)))
    if bc == "reflect":
        mass = trapezoid(density, grid)
        if not (mass > 0 and np.isfinite(mass)):
            raise ValueError(
                f"bandwidth {h} is too small for this grid: the density vanishes at every grid point"
            )
        density = density / mass
    return density


def kde_exact_reference(particles: FloatArray, grid: FloatArray, h: float, bc: str) -> FloatArray:
    """Direct-sum KDE (see the module docstring)."""
    _validate(particles, grid, bc)
    lo, hi = grid[0], grid[-1]
    cut = CUTOFF * h
    sources = [particles]
    if bc == "reflect":
        sources += [2.0 * lo - particles, 2.0 * hi - particles]
    density = np.zeros_like(grid)
    for s in sources:
        for start in range(0, s.shape[0], _CHUNK):
            d = grid[None, :] - s[start : start + _CHUNK, None]
            z = d / h
            terms = np.where(np.abs(d) <= cut, np.exp(-0.5 * (z * z)), 0.0)
            density += terms.sum(axis=0)
    return _finish(density, grid, particles.shape[0], h, bc)


def uniform_spacing(grid: FloatArray) -> float:
    m = grid.shape[0]
    dx = (grid[-1] - grid[0]) / (m - 1)
    off = np.abs(grid - (grid[0] + np.arange(m) * dx)) > 1e-9 * (grid[-1] - grid[0])
    if off.any():
        i = int(np.argmax(off))
        raise ValueError(
            f"grid must be uniformly spaced for method='binned' (grid[{i}] = {grid[i]} is off the uniform grid)"
        )
    return float(dx)


def linear_binning(particles: FloatArray, g0: float, dx: float, m: int) -> FloatArray:
    """Weights on the m nodes g0 + j·dx: 1 − f on the left node of a particle's cell, f on the right."""
    t = (particles - g0) / dx
    j = np.minimum(np.maximum(np.floor(t), 0.0).astype(np.int64), m - 2)
    f = t - j
    return np.bincount(j, weights=1.0 - f, minlength=m) + np.bincount(j + 1, weights=f, minlength=m)


def kde_binned_reference(particles: FloatArray, grid: FloatArray, h: float, bc: str) -> FloatArray:
    """Linear binning + truncated direct convolution on a uniform grid."""
    _validate(particles, grid, bc)
    check_inside("particles", particles, grid[0], grid[-1], "[grid[0], grid[-1]]")
    dx = uniform_spacing(grid)
    m = grid.shape[0]
    weights = linear_binning(particles, grid[0], dx, m)
    reach = min(int(np.floor(CUTOFF * h / dx)), 2 * (m - 1))
    z = np.arange(reach + 1) * dx / h
    kernel = np.exp(-0.5 * (z * z))
    # extended node index e = -(m-1) .. 2(m-1); mirrored weights sit at -j and 2(m-1) - j
    ext = np.zeros(4 * m - 3)
    base = m - 1
    ext[base : base + m] += weights
    if bc == "reflect":
        ext[base - np.arange(m)] += weights
        ext[base + 2 * (m - 1) - np.arange(m)] += weights
    full = np.concatenate([kernel[:0:-1], kernel])  # offsets -reach .. reach
    density = np.convolve(ext, full, mode="same")[base : base + m]  # reach <= 2(m-1): fits
    return _finish(density, grid, particles.shape[0], h, bc)


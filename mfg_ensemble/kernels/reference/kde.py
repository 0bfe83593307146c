"""Gaussian kernel density estimation: the NumPy reference of ``rust_core/src/kde.rs``.

    m(g) = 1/(n h √(2π)) Σᵢ exp(−(g − xᵢ)²/(2h²)),   terms with |g − xᵢ| > 8h dropped

(the dropped tail is below e⁻³² ≈ 1.3·10⁻¹⁴ of the kernel's peak); m has units 1/length.

* "exact": the direct sum.
* "binned": linear binning onto the uniform grid (a particle at fraction f of the cell
  [g_j, g_{j+1}] puts weight 1 − f on node j and f on node j + 1), then the direct truncated
  convolution of the weights with exp(−(k dx)²/(2h²)).

Boundaries:

* "reflect": walls at lo = grid[0] and hi = grid[-1]; every particle also contributes
  through its images 2·lo − x and 2·hi − x (binned: weights mirrored about the end nodes),
  then the density is divided by its trapezoid mass so it integrates to exactly one (the
  factor differs from one by the quadrature error only).
* "periodic": the uniform grid holds one period lo + i·dx (i < m) of length L = m·dx;
  images x ± L; normalised so that dx·Σ m = 1.
* "none": no images, no normalisation.

One image on each side is used, which is exact while h ≤ L/16.

Bandwidth rules follow ``scipy.stats.gaussian_kde``: with σ̂ the sample standard deviation
(ddof=1), "scott" h = σ̂ n^(−1/5) and "silverman" h = σ̂ (3n/4)^(−1/5).
"""

from __future__ import annotations

import numpy as np

from mfg_ensemble.kernels.checks import FloatArray, check_finite, check_inside

CUTOFF = 8.0
"""Kernel truncation radius in bandwidths."""
_CHUNK = 2048
BANDWIDTH_RULES = ("scott", "silverman")


def bandwidth_rule(particles: FloatArray, rule: str) -> float:
    """Bandwidth h of the rule ``rule`` ("scott" or "silverman") for these particles."""
    check_finite("particles", particles)
    n = particles.shape[0]
    std = float(np.std(particles, ddof=1)) if n > 1 else 0.0
    if not std > 0.0:
        raise ValueError(
            f"bandwidth={rule!r} needs at least 2 distinct particles (sample standard deviation "
            f"is {std}); pass a float bandwidth instead"
        )
    factor = n ** (-0.2) if rule == "scott" else (0.75 * n) ** (-0.2)
    return std * factor


def trapezoid(f: FloatArray, grid: FloatArray) -> float:
    """Trapezoid rule ∫ f dx on the (not necessarily uniform) grid."""
    return float(np.sum(0.5 * (f[:-1] + f[1:]) * np.diff(grid)))


def uniform_spacing(grid: FloatArray, what: str) -> float:
    m = grid.shape[0]
    dx = (grid[-1] - grid[0]) / (m - 1)
    off = np.abs(grid - (grid[0] + np.arange(m) * dx)) > 1e-9 * (grid[-1] - grid[0])
    if off.any():
        i = int(np.argmax(off))
        raise ValueError(f"grid must be uniformly spaced for {what} (grid[{i}] = {grid[i]} is off the uniform grid)")
    return float(dx)


def _domain(particles: FloatArray, grid: FloatArray, bc: str) -> tuple[float, float]:
    """Validate the arrays; (lo, hi) of the domain (hi = lo + period for "periodic")."""
    check_finite("particles", particles)
    check_finite("grid", grid)
    steps = np.diff(grid)
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0))
        raise ValueError(f"grid must be strictly increasing, grid[{i}] = {grid[i]} >= grid[{i + 1}] = {grid[i + 1]}")
    lo, hi = float(grid[0]), float(grid[-1])
    if bc == "periodic":
        hi = lo + grid.shape[0] * uniform_spacing(grid, "bc='periodic'")
        check_inside("particles", particles, lo, hi, "[grid[0], grid[0] + period]")
    elif bc == "reflect":
        check_inside("particles", particles, lo, hi, "[grid[0], grid[-1]]")
    return lo, hi


def _finish(density: FloatArray, grid: FloatArray, n: int, h: float, bc: str) -> FloatArray:
    density = density * (1.0 / (n * h * np.sqrt(2.0 * np.pi)))
    if bc == "none":
        return density
    mass = trapezoid(density, grid) if bc == "reflect" else float(np.sum(density)) * (grid[1] - grid[0])
    if not (mass > 0 and np.isfinite(mass)):
        raise ValueError(f"bandwidth {h} is too small for this grid: the density vanishes at every grid point")
    return density / mass


def kde_exact(particles: FloatArray, grid: FloatArray, h: float, bc: str) -> FloatArray:
    """Direct-sum KDE (see the module docstring)."""
    lo, hi = _domain(particles, grid, bc)
    cut = CUTOFF * h
    sources = [particles]
    if bc == "reflect":
        sources += [2.0 * lo - particles, 2.0 * hi - particles]
    elif bc == "periodic":
        sources += [particles - (hi - lo), particles + (hi - lo)]
    density = np.zeros_like(grid)
    for s in sources:
        for start in range(0, s.shape[0], _CHUNK):
            d = grid[None, :] - s[start : start + _CHUNK, None]
            z = d / h
            density += np.where(np.abs(d) <= cut, np.exp(-0.5 * (z * z)), 0.0).sum(axis=0)
    return _finish(density, grid, particles.shape[0], h, bc)


def linear_binning(particles: FloatArray, g0: float, dx: float, m: int, wrap: bool = False) -> FloatArray:
    """Weights on the m nodes g0 + j·dx: 1 − f on the left node of a particle's cell, f on
    the right one; with ``wrap`` the cell after the last node ends on node 0."""
    t = (particles - g0) / dx
    j = np.minimum(np.maximum(np.floor(t), 0.0).astype(np.int64), m - 1 if wrap else m - 2)
    f = t - j
    return np.bincount(j, weights=1.0 - f, minlength=m) + np.bincount((j + 1) % m, weights=f, minlength=m)


def kde_binned(particles: FloatArray, grid: FloatArray, h: float, bc: str) -> FloatArray:
    """Linear binning + truncated direct convolution on a uniform grid."""
    lo, hi = _domain(particles, grid, bc)
    if bc == "none":
        check_inside("particles", particles, lo, hi, "[grid[0], grid[-1]]")
    dx = uniform_spacing(grid, "method='binned'")
    m = grid.shape[0]
    weights = linear_binning(particles, lo, dx, m, wrap=bc == "periodic")
    reach = min(int(np.floor(CUTOFF * h / dx)), 2 * m)
    z = np.arange(reach + 1) * dx / h
    kernel = np.exp(-0.5 * (z * z))
    # weights and their images on the extended node index e = -2m .. 3m - 1 (base 2m)
    base, j = 2 * m, np.arange(m)
    ext = np.zeros(5 * m)
    ext[base + j] += weights
    if bc == "reflect":
        ext[base - j] += weights
        ext[base + 2 * (m - 1) - j] += weights
    elif bc == "periodic":
        ext[base + j - m] += weights
        ext[base + j + m] += weights
    full = np.concatenate([kernel[:0:-1], kernel])  # offsets -reach .. reach, reach <= 2m
    density = np.convolve(ext, full, mode="same")[base : base + m]
    return _finish(density, grid, particles.shape[0], h, bc)


def kde(particles: FloatArray, grid: FloatArray, h: float, method: str, bc: str) -> FloatArray:
    """The density by ``method``: "exact" (:func:`kde_exact`) or "binned" (:func:`kde_binned`)."""
    return (kde_exact if method == "exact" else kde_binned)(particles, grid, h, bc)

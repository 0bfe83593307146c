"""Two-dimensional Gaussian kernel density estimation: the NumPy reference of ``rust_core/src/kde2d.rs``.

Particles (n, 2) (columns x, y) give the density on the nodes (x_i, y_j) = (x_lo + i·dx, y_lo + j·dy)
of a field (ny, nx) (see SPEC2D: index [j, i]) with the product Gaussian kernel of bandwidths (hx, hy):

    m(x, y) ∝ Σ_p Σ_images exp(−(x − s_x)²/(2hx²)) · exp(−(y − s_y)²/(2hy²)),

a factor dropped where |x − s_x| > 8hx, and likewise in y (the 1-D truncation of
:mod:`~mfg_ensemble.kernels.reference.kde`, per dimension). Images, per dimension: "reflect" →
s = p, 2lo − p, 2hi − p (walls at the end nodes, hi = lo + (n − 1)·d); "periodic" → s = p, p ± L
(L = n·d, one period of nodes). One image per side: exact while h ≤ L/16.

* "exact": the direct truncated sum. It factorises per particle: m[j, i] = Σ_p Ay[p, j]·Ax[p, i]
  with Ax[p, i] the sum over p's x-sources of the truncated 1-D kernel at x_i (and Ay likewise).
* "binned": bilinear binning (a particle at fractions (fx, fy) of the lattice cell with lower-left
  node (i, j) puts (1 − fx)(1 − fy), fx(1 − fy), (1 − fx)fy, fx·fy on the four corners; periodic
  dimensions wrap the cell after the last node onto node 0), then the separable truncated
  convolution with exp(−(k·d)²/(2h²)), |k| ≤ ⌊8h/d⌋ (capped at 2n): along the rows (x) then along
  the columns (y), the weights of a line mirrored about its end nodes ("reflect": node k's weight
  also sits at −k and 2(n − 1) − k) or wrapped (± n) as in 1-D.

Obstacles are walls the particles reflect off, but a disc or a rectangle has no images: the part of
a node's kernel that falls on the obstacle would be lost, and the density within ~2h of it come out
low (by up to half at its surface; −13 … −19 % in a 6 cm ring around configs/room.toml's pillar at
51² with 10⁵ particles). So where there are OBSTACLE nodes, m at each FREE node is divided by the
room's share of that node's kernel (the zero-order boundary renormalisation of Jones 1993),

    c = S(B) / S(1),   R = 1 off the OBSTACLE nodes, 0 on them,

S the separable convolution of "binned" (the same kernels and wall images) of a field of nodes,
and B what the method makes of a uniform crowd over the room's node cells (the particle march's
room) before its kernel: "binned" bins it, B = T R with, along each axis, (T v)_i = ¾v_i +
⅛(v_{i−1} + v_{i+1}) (beyond a "reflect" end node its mirror image v_{−1} = v_1, wrapped when
"periodic"); "exact" evaluates the kernel at the nodes, B = R (the cells by their midpoints).
c = 1 exactly where no obstacle node is within reach, and a flat crowd stays flat up to the
obstacle: "binned" for any bandwidth (with R for B, the nodes next to a pillar stayed 5 % low
at h = 0.6 dx, where binning, not the kernel, loses the obstacle cells' share), "exact" where
h ≳ dx (3 % low next to the pillar at h = 0.6 dx, the midpoint rule of a kernel narrower than a
cell). EXIT nodes count as room (the density falls to 0 there by itself: no correction near the
doors).

Then m = 0 at OBSTACLE and EXIT nodes (see :mod:`~mfg_ensemble.kernels.reference.grid2d`), and m is
scaled so that Σ w·m = ``mass`` with the quadrature weights w of SPEC2D (w = wy ⊗ wx, 0 at obstacle
nodes): ``mass`` = 1 for :func:`kde_2d` (the facade), the alive fraction in the particle march.

Bandwidth rules (per dimension, σ̂_d the sample standard deviation of column d with ddof = 1; scipy's
factors for d = 2 dimensions): "scott" h_d = σ̂_d·n^(−1/(d+4)) = σ̂_d·n^(−1/6); "silverman"
h_d = σ̂_d·(n(d + 2)/4)^(−1/(d+4)) = σ̂_d·n^(−1/6) too: for d = 2 the two rules coincide. Unlike
``scipy.stats.gaussian_kde`` (full covariance), the kernel is diagonal (no correlation term).

**Weights** (the particle march's survival weights next to exits): particle p of weight w_p
counts w_p times in every sum above (its kernel, its binning), and the rules take the weighted
mean x̄ = Σw x/Σw, the variance Σw(x − x̄)²/(Σw − Σw²/Σw) (reliability weights: ddof = 1 when all
w = 1) and Kish's effective count n_eff = (Σw)²/Σw² for n, as ``scipy.stats.gaussian_kde`` does
with ``weights``. Weights 1 give the unweighted bits (a product by 1 is exact). The sums run in
particle order.
"""

from __future__ import annotations

import numpy as np

from mfg_ensemble.kernels.checks import FloatArray
from mfg_ensemble.kernels.quadrature import quadrature_weights
from mfg_ensemble.kernels.reference.grid2d import EXIT, FREE, OBSTACLE
from mfg_ensemble.kernels.reference.kde import CUTOFF

BANDWIDTH_RULES = ("scott", "silverman")
_CHUNK = 4096


def bandwidth_rule_2d(
    particles: FloatArray, rule: str, weights: FloatArray | None = None
) -> tuple[float, float] | None:
    """(hx, hy) of ``rule`` ("scott" or "silverman": both σ̂_d·n^(−1/6) in 2-D) for the particles
    (n, 2), weighted as the module docstring says (None: all 1), or None when a column has no
    spread (fewer than 2 particles, all on one line, or n_eff ≤ 1)."""
    n = particles.shape[0]
    if n < 2:
        return None
    w = np.ones(n) if weights is None else weights
    sw, sw2 = ordered_sum(w), ordered_sum(w * w)
    denominator = sw - sw2 / sw
    if not denominator > 0.0:
        return None
    factor = (sw * sw / sw2) ** (-1.0 / 6.0)
    out = []
    for d in range(2):
        x = particles[:, d]
        mean = ordered_sum(w * x) / sw
        std = float(np.sqrt(ordered_sum(w * ((x - mean) * (x - mean))) / denominator))
        if not std > 0.0:
            return None
        out.append(std * factor)
    return out[0], out[1]


def ordered_sum(a: FloatArray) -> float:
    """Σ a in index order (np.sum is pairwise: other roundings than the Rust kernel's loop)."""
    return float(np.cumsum(a)[-1]) if a.size else 0.0


def weights_2d(nx: int, dx: float, ny: int, dy: float, bc: tuple[str, str], kinds: np.ndarray) -> FloatArray:
    """Quadrature weights w[j, i] = wy[j]·wx[i], 0 at OBSTACLE nodes (SPEC2D)."""
    w = np.outer(quadrature_weights(ny, dy, bc[1]), quadrature_weights(nx, dx, bc[0]))
    return np.where(kinds == OBSTACLE, 0.0, w)


def _sources(p: FloatArray, lo: float, d: float, n: int, bc: str) -> list[FloatArray]:
    if bc == "periodic":
        length = n * d
        return [p, p - length, p + length]
    hi = lo + (n - 1) * d
    return [p, 2.0 * lo - p, 2.0 * hi - p]


def axis_kernel(p: FloatArray, lo: float, d: float, n: int, h: float, bc: str) -> FloatArray:
    """Ax[q, i] = Σ over the sources s of particle q of exp(−(g_i − s)²/(2h²)), |g_i − s| ≤ 8h,
    g_i = lo + i·d."""
    g = lo + np.arange(n) * d
    cut = CUTOFF * h
    out = np.zeros((p.shape[0], n))
    for s in _sources(p, lo, d, n, bc):
        diff = g[None, :] - s[:, None]
        z = diff / h
        out += np.where(np.abs(diff) <= cut, np.exp(-0.5 * (z * z)), 0.0)
    return out


def raw_exact(
    particles: FloatArray, axes: tuple, h: tuple[float, float], bc: tuple[str, str], weights: FloatArray | None = None
) -> FloatArray:
    (lox, dx, nx), (loy, dy, ny) = axes
    m = np.zeros((ny, nx))
    for start in range(0, particles.shape[0], _CHUNK):
        p = particles[start : start + _CHUNK]
        ax = axis_kernel(p[:, 0], lox, dx, nx, h[0], bc[0])
        ay = axis_kernel(p[:, 1], loy, dy, ny, h[1], bc[1])
        if weights is not None:
            ay = weights[start : start + _CHUNK, None] * ay
        m += ay.T @ ax
    return m


def _cell(p: FloatArray, lo: float, d: float, n: int, wrap: bool) -> tuple[np.ndarray, FloatArray]:
    t = (p - lo) / d
    k = np.minimum(np.maximum(np.floor(t), 0.0).astype(np.int64), n - 1 if wrap else n - 2)
    return k, t - k


def bilinear_binning(
    particles: FloatArray, axes: tuple, bc: tuple[str, str], weights: FloatArray | None = None
) -> FloatArray:
    """The binning weights (ny, nx) of the particles (see the module docstring)."""
    (lox, dx, nx), (loy, dy, ny) = axes
    i, fx = _cell(particles[:, 0], lox, dx, nx, bc[0] == "periodic")
    j, fy = _cell(particles[:, 1], loy, dy, ny, bc[1] == "periodic")
    i1, j1 = (i + 1) % nx, (j + 1) % ny
    if weights is not None:
        fy, gy = weights * fy, weights * (1.0 - fy)
    else:
        gy = 1.0 - fy
    size = nx * ny
    w = np.zeros(size)
    corners = ((j, i, (1.0 - fx) * gy), (j, i1, fx * gy), (j1, i, (1.0 - fx) * fy), (j1, i1, fx * fy))
    for jj, ii, wt in corners:
        w += np.bincount(jj * nx + ii, weights=wt, minlength=size)
    return w.reshape(ny, nx)


def convolution_matrix(n: int, d: float, h: float, bc: str) -> FloatArray:
    """C[i, k] = Σ over the images e of node k of exp(−((i − e)·d)²/(2h²)), |i − e| ≤ ⌊8h/d⌋ (capped at 2n)."""
    reach = min(int(np.floor(CUTOFF * h / d)), 2 * n)
    z = np.arange(reach + 1) * d / h
    kernel = np.exp(-0.5 * (z * z))
    k = np.arange(n)
    images = [k, -k, 2 * (n - 1) - k] if bc == "reflect" else [k, k - n, k + n]
    c = np.zeros((n, n))
    i = np.arange(n)[:, None]
    for e in images:
        off = np.abs(i - e[None, :])
        c += np.where(off <= reach, kernel[np.minimum(off, reach)], 0.0)
    return c


def raw_binned(
    particles: FloatArray, axes: tuple, h: tuple[float, float], bc: tuple[str, str], weights: FloatArray | None = None
) -> FloatArray:
    (lox, dx, nx), (loy, dy, ny) = axes
    w = bilinear_binning(particles, axes, bc, weights)
    rows = w @ convolution_matrix(nx, dx, h[0], bc[0]).T
    return convolution_matrix(ny, dy, h[1], bc[1]) @ rows


def uniform_binning(v: FloatArray, bc: tuple[str, str]) -> FloatArray:
    """T v (ny, nx): along x, then y, ¾v_i + ⅛(v_{i−1} + v_{i+1}), mirrored at a "reflect" end
    node, wrapped for "periodic" (see the module docstring)."""
    for axis, b in ((1, bc[0]), (0, bc[1])):
        a = np.moveaxis(v, axis, -1)
        if b == "periodic":
            lo, hi = np.roll(a, 1, axis=-1), np.roll(a, -1, axis=-1)
        else:
            lo = np.concatenate([a[..., 1:2], a[..., :-1]], axis=-1)
            hi = np.concatenate([a[..., 1:], a[..., -2:-1]], axis=-1)
        v = np.moveaxis(0.75 * a + 0.125 * (lo + hi), -1, axis)
    return v


def room_fraction(
    axes: tuple, h: tuple[float, float], method: str, bc: tuple[str, str], kinds: np.ndarray
) -> FloatArray | None:
    """c = S(B)/S(1) on the nodes (see the module docstring), or None when there is no OBSTACLE node."""
    if not (kinds == OBSTACLE).any():
        return None
    (_, dx, nx), (_, dy, ny) = axes
    cx, cy = convolution_matrix(nx, dx, h[0], bc[0]), convolution_matrix(ny, dy, h[1], bc[1])
    room = np.where(kinds == OBSTACLE, 0.0, 1.0)
    if method == "binned":
        room = uniform_binning(room, bc)
    return (cy @ (room @ cx.T)) / (cy @ (np.ones((ny, nx)) @ cx.T))


def density(
    particles: FloatArray,
    axes: tuple,
    h: tuple[float, float],
    method: str,
    bc: tuple[str, str],
    kinds: np.ndarray,
    mass: float = 1.0,
    weights: FloatArray | None = None,
) -> FloatArray:
    """The KDE (ny, nx) of ``particles`` (of ``weights``, None: 1) on the nodes of ``axes`` =
    ((x_lo, dx, nx), (y_lo, dy, ny)), divided by :func:`room_fraction` next to obstacles, zero at
    obstacle and exit nodes, scaled to Σ w·m = ``mass`` (see the module docstring)."""
    (_, dx, nx), (_, dy, ny) = axes
    if particles.shape[0] == 0:
        return np.zeros((ny, nx))
    raw = (raw_exact if method == "exact" else raw_binned)(particles, axes, h, bc, weights)
    share = room_fraction(axes, h, method, bc, kinds)
    if share is not None:
        raw = raw / np.where(kinds == FREE, share, 1.0)
    raw = np.where((kinds == OBSTACLE) | (kinds == EXIT), 0.0, raw)
    total = float(np.sum(weights_2d(nx, dx, ny, dy, bc, kinds) * raw))
    if not (total > 0 and np.isfinite(total)):
        raise ValueError(
            f"bandwidth ({h[0]}, {h[1]}) is too small for this grid: the density vanishes at every free node"
        )
    return raw * (mass / total)


def kde_2d(
    particles: FloatArray,
    axes: tuple,
    h: tuple[float, float],
    method: str,
    bc: tuple[str, str],
    kinds: np.ndarray,
) -> FloatArray:
    """The facade's KDE: unit mass Σ w·m = 1 (arguments as :func:`density`)."""
    return density(particles, axes, h, method, bc, kinds, 1.0)

"""The numerical kernels of mfg_ensemble, each on whole arrays.

Every function runs in the Rust extension (``mfg_ensemble._rust_core``: Rayon inside, GIL
released) or in its NumPy reference (``backend="numpy"``), which is the test oracle. The maths
of each kernel is written once, in the docstring of its reference module:
:mod:`mfg_ensemble.weno`, :mod:`mfg_ensemble.kde`, :mod:`mfg_ensemble.particles`,
:mod:`mfg_ensemble.rng`. ``backend=None`` picks Rust when it is built (see
:func:`backend_info`, ``$MFG_ENSEMBLE_BACKEND``).

Arrays are converted to C-contiguous float64 (integers and float32 are accepted; complex,
boolean and object data raise ``TypeError``). Bad values raise ``ValueError`` naming the
argument, from either backend.
"""

from __future__ import annotations

from mfg_ensemble import _backend
from mfg_ensemble import _validate as v
from mfg_ensemble._backend import backend_info
from mfg_ensemble._validate import FloatArray
from mfg_ensemble.kde import BANDWIDTH_RULES, bandwidth_rule, kde_binned_reference, kde_exact_reference
from mfg_ensemble.particles import evolve_particles_reference
from mfg_ensemble.weno import MIN_NODES, smoothness_indicators_reference, weno5_derivatives_reference

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "backend_info",
    "evolve_particles",
    "kde",
    "smoothness_indicators",
    "weno5_derivatives",
]


def smoothness_indicators(u: ArrayLike, *, backend: str | None = None) -> FloatArray:
    """Jiang–Shu smoothness indicators β0, β1, β2 of every 5-point window of ``u``.

    Returns an array of shape (3, n − 4); column i belongs to the window u[i : i + 5].
    """
    arr = v.float_array("u", u)
    v.min_length("u", arr, 5, "a 5-point window")
    if _backend.resolve(backend) == "rust":
        return _backend.rust().smoothness_indicators(arr)
    return smoothness_indicators_reference(arr)


def weno5_derivatives(
    u: ArrayLike,
    dx: float,
    *,
    bc: str = "periodic",
    variant: str = "js",
    eps: float = 1e-6,
    backend: str | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Left- and right-biased HJ-WENO5 approximations (d⁻, d⁺) of ∂u/∂x at every node.

    ``bc``: "periodic" (``u`` holds one period, without the repeated end node) or "reflect"
    (mirror ghost nodes, zero slope at the walls). ``variant``: "js" (Jiang–Shu weights) or
    "z" (WENO-Z). ``eps`` keeps the weights finite where the data is flat.
    """
    arr = v.float_array("u", u)
    v.min_length("u", arr, MIN_NODES, "the WENO5 stencil")
    dx = v.positive("dx", dx)
    eps = v.positive("eps", eps)
    bc = v.choice("bc", bc, ("periodic", "reflect"))
    variant = v.choice("variant", variant, ("js", "z"))
    if _backend.resolve(backend) == "rust":
        return _backend.rust().weno5_derivatives(arr, dx, bc, variant, eps)
    return weno5_derivatives_reference(arr, dx, bc, variant, eps)


def kde(
    particles: ArrayLike,
    grid: ArrayLike,
    bandwidth: float | str,
    *,
    method: str = "exact",
    bc: str = "reflect",
    backend: str | None = None,
) -> FloatArray:
    """Gaussian kernel density of ``particles`` on the increasing ``grid`` (units 1/length).

    ``bandwidth``: a float h > 0, or "scott" / "silverman" (scipy's rules). ``method``:
    "exact" (direct sum, truncated at 8h) or "binned" (linear binning + convolution; needs a
    uniform grid). ``bc``: "reflect" (walls at grid[0] and grid[-1], no mass lost, the result
    integrates to one by the trapezoid rule) or "none".
    """
    p = v.float_array("particles", particles)
    g = v.float_array("grid", grid)
    if p.shape[0] == 0:
        raise ValueError("particles must not be empty")
    v.min_length("grid", g, 2, "a density")
    method = v.choice("method", method, ("exact", "binned"))
    bc = v.choice("bc", bc, ("reflect", "none"))
    if isinstance(bandwidth, str):
        h = bandwidth_rule(p, v.choice("bandwidth", bandwidth, BANDWIDTH_RULES))
    else:
        h = v.positive("bandwidth", bandwidth)
    if _backend.resolve(backend) == "rust":
        return _backend.rust().kde(p, g, h, method, bc)
    reference = kde_exact_reference if method == "exact" else kde_binned_reference
    return reference(p, g, h, bc)


def evolve_particles(
    x: ArrayLike,
    drift: ArrayLike | float,
    dt: float,
    sigma: float,
    *,
    lo: float,
    hi: float,
    seed: int,
    step: int,
    bc: str = "reflect",
    backend: str | None = None,
) -> FloatArray:
    """One Euler–Maruyama step x + drift·dt + sigma·√dt·ξ of every particle, kept in [lo, hi].

    ξ is drawn inside the kernel from the Philox stream (seed, step, particle index), so the
    result is the same for any thread count and both backends agree to rounding. ``drift`` is
    one value per particle or a scalar. ``bc``: "reflect" (fold about the walls) or "periodic".
    """
    xa = v.float_array("x", x)
    da = np.asarray(drift)
    if da.ndim == 0:
        da = np.full(xa.shape, v.real("drift", da.item()))
    da = v.float_array("drift", da)
    if da.shape != xa.shape:
        raise ValueError(
            f"drift must have one value per particle: len(x)={xa.shape[0]}, len(drift)={da.shape[0]}"
        )
    dt = v.positive("dt", dt)
    sigma = v.non_negative("sigma", sigma)
    lo, hi = v.interval(lo, hi)
    seed = v.uint64("seed", seed)
    step = v.uint64("step", step)
    bc = v.choice("bc", bc, ("reflect", "periodic"))
    if _backend.resolve(backend) == "rust":
        return _backend.rust().evolve_particles(xa, da, dt, sigma, lo=lo, hi=hi, seed=seed, step=step, bc=bc)
    return evolve_particles_reference(xa, da, dt, sigma, lo, hi, seed, step, bc)

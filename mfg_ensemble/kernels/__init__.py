"""The numerical kernels of mfg_ensemble, each on whole arrays.

Every function runs in the Rust extension (``mfg_ensemble._rust_core``: Rayon inside, GIL
released) or in its NumPy reference (``backend="numpy"``), which is the test oracle. The maths
of each kernel is written once, in the docstring of its reference module in
:mod:`mfg_ensemble.kernels.reference` (``weno``, ``hjb``, ``banded``, ``fv``, ``particles``, ``kde``, ``rng``,
``substeps``, and in 2-D ``grid2d``, ``hjb2d``, ``fv2d``, ``particles2d``, ``kde2d``: the same stems as
``rust_core/src``; 2-D fields are (ny, nx) arrays, see ``grid2d`` for the node kinds).
``backend=None`` picks Rust when it is built (see :func:`backend_info`, ``$MFG_ENSEMBLE_BACKEND``).

Arrays are converted to C-contiguous float64 (integers and float32 are accepted; complex,
boolean and object data raise ``TypeError``). Bad values raise ``ValueError`` naming the
argument, from either backend.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from mfg_ensemble.kernels import backend as _backend
from mfg_ensemble.kernels import checks as v
from mfg_ensemble.kernels.backend import backend_info
from mfg_ensemble.kernels.checks import FloatArray
from mfg_ensemble.kernels.quadrature import quadrature_weights
from mfg_ensemble.kernels.reference import fv as _fv
from mfg_ensemble.kernels.reference import fv2d as _fv2d
from mfg_ensemble.kernels.reference import hjb as _hjb
from mfg_ensemble.kernels.reference import hjb2d as _hjb2d
from mfg_ensemble.kernels.reference import kde as _kde
from mfg_ensemble.kernels.reference import kde2d as _kde2d
from mfg_ensemble.kernels.reference import particles as _particles
from mfg_ensemble.kernels.reference import particles2d as _particles2d
from mfg_ensemble.kernels.reference import weno as _weno
from mfg_ensemble.kernels.reference.grid2d import check_nodes
from mfg_ensemble.kernels.reference.kde import BANDWIDTH_RULES, bandwidth_rule, uniform_spacing
from mfg_ensemble.kernels.reference.substeps import IntArray, floors
from mfg_ensemble.kernels.reference.weno import MIN_NODES

__all__ = [
    "backend_info",
    "evolve_particles",
    "fv_forward",
    "fv_forward_2d",
    "hjb_backward",
    "hjb_backward_2d",
    "kde",
    "kde_2d",
    "particles_forward",
    "particles_forward_2d",
    "quadrature_weights",
    "smoothness_indicators",
    "weno5_derivatives",
]
SOLVER_BCS = ("reflect", "periodic")


def smoothness_indicators(u: ArrayLike, *, backend: str | None = None) -> FloatArray:
    """Jiang–Shu smoothness indicators β0, β1, β2 of every 5-point window of ``u``.

    Returns an array of shape (3, n − 4); column i belongs to the window u[i : i + 5].
    """
    arr = v.float_array("u", u)
    v.min_length("u", arr, 5, "a 5-point window")
    if _backend.resolve(backend) == "rust":
        return _backend.rust().smoothness_indicators(arr)
    return _weno.smoothness_indicators(arr)


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
    "z" (WENO-Z). ``eps``: ε relative to the data, ε = eps·max(v1², …, v5²) + 1e-300 over each
    stencil's differences (so the weights do not depend on the scale of ``u``; see
    :mod:`mfg_ensemble.kernels.reference.weno`).
    """
    arr = v.float_array("u", u)
    v.min_length("u", arr, MIN_NODES, "the WENO5 stencil")
    dx = v.positive("dx", dx)
    eps = v.positive("eps", eps)
    bc = v.choice("bc", bc, ("periodic", "reflect"))
    variant = v.choice("variant", variant, ("js", "z"))
    if _backend.resolve(backend) == "rust":
        return _backend.rust().weno5_derivatives(arr, dx, bc, variant, eps)
    return _weno.weno5_derivatives(arr, dx, bc, variant, eps)


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
    integrates to one by the trapezoid rule), "periodic" (the uniform grid holds one period
    without its end node; dx·Σ m = 1) or "none".
    """
    p = v.float_array("particles", particles)
    g = v.float_array("grid", grid)
    if p.shape[0] == 0:
        raise ValueError("particles must not be empty")
    v.min_length("grid", g, 2, "a density")
    method = v.choice("method", method, ("exact", "binned"))
    bc = v.choice("bc", bc, ("reflect", "periodic", "none"))
    if isinstance(bandwidth, str):
        h = bandwidth_rule(p, v.choice("bandwidth", bandwidth, BANDWIDTH_RULES))
    else:
        h = v.positive("bandwidth", bandwidth)
    if _backend.resolve(backend) == "rust":
        return _backend.rust().kde(p, g, h, method, bc)
    return _kde.kde(p, g, h, method, bc)


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
        raise ValueError(f"drift must have one value per particle: len(x)={xa.shape[0]}, len(drift)={da.shape[0]}")
    dt = v.positive("dt", dt)
    sigma = v.non_negative("sigma", sigma)
    lo, hi = v.interval(lo, hi)
    seed = v.uint64("seed", seed)
    step = v.uint64("step", step)
    bc = v.choice("bc", bc, ("reflect", "periodic"))
    if _backend.resolve(backend) == "rust":
        return _backend.rust().evolve_particles(xa, da, dt, sigma, lo=lo, hi=hi, seed=seed, step=step, bc=bc)
    return _particles.evolve_particles(xa, da, dt, sigma, lo, hi, seed, step, bc)


def _time_grid(name: str, values: ArrayLike, nx: int | None = None) -> FloatArray:
    arr = v.float_array(name, values, ndim=2)
    if arr.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 output times (rows), got shape {arr.shape}")
    if nx is not None and arr.shape[1] != nx:
        raise ValueError(f"{name} must have {nx} columns (one per grid node), got shape {arr.shape}")
    return arr


def _cfl(value: float) -> float:
    c = v.positive("cfl", value)
    if c > 1.0:
        raise ValueError(f"cfl must be in (0, 1], got {c}")
    return c


def _floors(min_substeps: ArrayLike | None, nt: int) -> IntArray | None:
    """``min_substeps`` checked for a march over nt output times (None stays None)."""
    return None if min_substeps is None else floors(min_substeps, nt - 1)


def hjb_backward(
    f: ArrayLike,
    g: ArrayLike,
    *,
    dx: float,
    sigma: float,
    T: float,
    bc: str = "reflect",
    variant: str = "js",
    eps: float = 1e-6,
    cfl: float = 0.4,
    min_substeps: ArrayLike | None = None,
    scheme: str = "imex",
    backend: str | None = None,
) -> tuple[FloatArray, IntArray]:
    """Solve the HJB equation backward from u(T) = g for the running cost f (the maths:
    :mod:`mfg_ensemble.kernels.reference.hjb`).

    ``f`` has shape (nt, nx) on the output times t_j = j·T/(nt − 1); ``g`` has nx values.
    ``min_substeps``: None, or nt − 1 integers ≥ 1, the least number of sub-steps of each output
    interval. ``scheme``: "imex" (ARS(4,4,3), diffusion implicit: the sub-steps are limited by
    the slopes alone) or "rk3" (TVD-RK3, all explicit: limited by the slopes and σ²/dx²).
    Returns u of shape (nt, nx) and the sub-steps taken in each output interval (int64, shape
    (nt − 1,)). Raises :class:`~mfg_ensemble.errors.Diverged` if the solution blows up.
    """
    ga = v.float_array("g", g)
    v.min_length("g", ga, MIN_NODES, "the WENO5 stencil")
    fa = _time_grid("f", f, ga.shape[0])
    kw = dict(
        dx=v.positive("dx", dx),
        sigma=v.non_negative("sigma", sigma),
        T=v.positive("T", T),
        bc=v.choice("bc", bc, SOLVER_BCS),
        variant=v.choice("variant", variant, ("js", "z")),
        eps=v.positive("eps", eps),
        cfl=_cfl(cfl),
        min_substeps=_floors(min_substeps, fa.shape[0]),
        scheme=v.choice("scheme", scheme, ("imex", "rk3")),
    )
    if _backend.resolve(backend) == "rust":
        return _backend.rust().hjb_backward(fa, ga, **kw)
    return _hjb.hjb_backward(fa, ga, **kw)


def fv_forward(
    u: ArrayLike,
    m0: ArrayLike,
    *,
    dx: float,
    sigma: float,
    T: float,
    bc: str = "reflect",
    cfl: float = 0.9,
    min_substeps: ArrayLike | None = None,
    backend: str | None = None,
    scheme: str = "muscl2",
) -> tuple[FloatArray, IntArray]:
    """Solve the Fokker–Planck equation forward from m0 with the drift −∂x u by finite volumes
    (see :mod:`mfg_ensemble.kernels.reference.fv`). ``min_substeps``: None, or nt − 1 integers ≥ 1, the least
    number of sub-steps of each output interval. ``scheme``: "muscl2" (second order, implicit
    diffusion, sub-steps set by the drift CFL only) or "upwind1" (the first-order explicit
    scheme, sub-steps ∝ σ²/dx² when diffusion dominates). Returns m of shape (nt, nx) and the
    sub-steps taken in each output interval (int64, shape (nt − 1,))."""
    m0a = v.float_array("m0", m0)
    v.min_length("m0", m0a, 3, "the finite-volume scheme")
    ua = _time_grid("u", u, m0a.shape[0])
    if (m0a < 0).any():
        i = int(np.argmax(m0a < 0))
        raise ValueError(f"m0 must be >= 0, m0[{i}] = {m0a[i]}")
    kw = dict(
        dx=v.positive("dx", dx),
        sigma=v.non_negative("sigma", sigma),
        T=v.positive("T", T),
        bc=v.choice("bc", bc, SOLVER_BCS),
        cfl=_cfl(cfl),
        min_substeps=_floors(min_substeps, ua.shape[0]),
        scheme=v.choice("scheme", scheme, _fv.SCHEMES),
    )
    if _backend.resolve(backend) == "rust":
        return _backend.rust().fv_forward(ua, m0a, **kw)
    return _fv.fv_forward(ua, m0a, **kw)


def particles_forward(
    x0: ArrayLike,
    u: ArrayLike,
    grid: ArrayLike,
    *,
    sigma: float,
    T: float,
    lo: float,
    hi: float,
    seed: int,
    bc: str = "reflect",
    method: str = "binned",
    bandwidth: float | str = "scott",
    min_substeps: ArrayLike | None = None,
    backend: str | None = None,
) -> tuple[FloatArray, IntArray]:
    """The particle Fokker–Planck march (see :func:`mfg_ensemble.kernels.reference.particles.particles_forward`):
    the particles ``x0`` moved by the drift −∂x u with Euler–Maruyama steps (noise from the
    Philox stream of ``seed``), their KDE on ``grid`` at every output time. ``min_substeps``:
    None, or nt − 1 integers ≥ 1, the least number of sub-steps of each output interval.
    Returns m of shape (nt, nx) and the sub-steps taken in each output interval (int64, shape
    (nt − 1,))."""
    xa = v.float_array("x0", x0)
    if xa.shape[0] == 0:
        raise ValueError("x0 must not be empty")
    ga = v.float_array("grid", grid)
    v.min_length("grid", ga, 3, "a density")
    ua = _time_grid("u", u, ga.shape[0])
    lo, hi = v.interval(lo, hi)
    kw = dict(
        sigma=v.non_negative("sigma", sigma),
        T=v.positive("T", T),
        lo=lo,
        hi=hi,
        seed=v.uint64("seed", seed),
        bc=v.choice("bc", bc, SOLVER_BCS),
        method=v.choice("method", method, ("exact", "binned")),
        min_substeps=_floors(min_substeps, ua.shape[0]),
    )
    if isinstance(bandwidth, str):
        rule: str | None = v.choice("bandwidth", bandwidth, BANDWIDTH_RULES)
        h = None
    else:
        rule, h = None, v.positive("bandwidth", bandwidth)
    if _backend.resolve(backend) == "rust":
        return _backend.rust().particles_forward(xa, ua, ga, bandwidth=h, rule=rule or "scott", **kw)
    return _particles.particles_forward(xa, ua, ga, bandwidth=h if rule is None else rule, **kw)


# --- 2-D HJB (issue 12; hjb2d) ---------------------------------------------------------------


def _bc_pair(bc: object) -> tuple[str, str]:
    if isinstance(bc, str) or not isinstance(bc, (tuple, list)) or len(bc) != 2:
        raise ValueError(f"bc must be a pair (bc_x, bc_y) of 'reflect' or 'periodic', got {bc!r}")
    return (v.choice("bc[0]", bc[0], SOLVER_BCS), v.choice("bc[1]", bc[1], SOLVER_BCS))


def _history_2d(name: str, values: ArrayLike, shape: tuple[int, int], like: str) -> FloatArray:
    """A (nt, ny, nx) history with nt ≥ 2 whose (ny, nx) is ``shape`` (that of ``like``)."""
    arr = v.float_array(name, values, ndim=3)
    if arr.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 output times, got shape {arr.shape}")
    if arr.shape[1:] != shape:
        want = f"(nt, {shape[0]}, {shape[1]})"
        raise ValueError(f"{name} must have shape (nt, ny, nx) = {want} like {like}, got {arr.shape}")
    return arr


def _nodes_2d(nodes: ArrayLike | None, ny: int, nx: int, bc: tuple[str, str]) -> np.ndarray:
    if nodes is None:
        return np.zeros((ny, nx), dtype=np.uint8)  # all FREE
    return check_nodes(nodes, ny, nx, bc)


def hjb_backward_2d(
    f: ArrayLike,
    g: ArrayLike,
    *,
    dx: float,
    dy: float,
    sigma: float,
    T: float,
    bc: tuple[str, str] = ("reflect", "reflect"),
    nodes: ArrayLike | None = None,
    variant: str = "js",
    eps: float = 1e-6,
    cfl: float = 0.4,
    min_substeps: ArrayLike | None = None,
    backend: str | None = None,
) -> tuple[FloatArray, IntArray]:
    """Solve the 2-D HJB equation backward from u(T) = g for the running cost f (the maths:
    :mod:`mfg_ensemble.kernels.reference.hjb2d`; grid conventions: SPEC2D).

    ``f`` has shape (nt, ny, nx) on the output times t_j = j·T/(nt − 1); ``g`` (ny, nx), both
    ignored at exit and obstacle nodes (u = 0 there). ``bc`` = (bc_x, bc_y), each "reflect" or
    "periodic"; ``nodes``: None (all free) or uint8 (ny, nx) of FREE/OBSTACLE/EXIT. Returns u of
    shape (nt, ny, nx) and the sub-steps taken in each output interval (int64, (nt − 1,)).
    Raises :class:`~mfg_ensemble.errors.Diverged` if the solution blows up.
    """
    ga = v.float_array("g", g, ndim=2)
    ny, nx = ga.shape
    if nx < MIN_NODES or ny < MIN_NODES:
        raise ValueError(f"g must have at least {MIN_NODES} nodes along each axis (the WENO5 stencil), got {ga.shape}")
    fa = _history_2d("f", f, (ny, nx), "g")
    bcs = _bc_pair(bc)
    kind = _nodes_2d(nodes, ny, nx, bcs)
    kw = dict(
        dx=v.positive("dx", dx),
        dy=v.positive("dy", dy),
        sigma=v.non_negative("sigma", sigma),
        T=v.positive("T", T),
        bc=bcs,
        nodes=kind,
        variant=v.choice("variant", variant, ("js", "z")),
        eps=v.positive("eps", eps),
        cfl=_cfl(cfl),
        min_substeps=_floors(min_substeps, fa.shape[0]),
    )
    if _backend.resolve(backend) == "rust":
        u, counts = _backend.rust().hjb_backward_2d(fa, ga, **kw)
        return u.reshape(fa.shape), counts
    return _hjb2d.hjb_backward_2d(fa, ga, **kw)


# -- 2-D finite-volume Fokker–Planck (fv2d) ------------------------------------------------------


def fv_forward_2d(
    u: ArrayLike,
    m0: ArrayLike,
    *,
    dx: float,
    dy: float,
    sigma: float,
    T: float,
    bc: tuple[str, str] = ("reflect", "reflect"),
    nodes: ArrayLike | None = None,
    cfl: float = 0.9,
    min_substeps: ArrayLike | None = None,
    backend: str | None = None,
) -> tuple[FloatArray, IntArray, FloatArray]:
    """Solve the 2-D Fokker–Planck equation forward from m0 (ny, nx) with the drift −∇u by finite
    volumes (see :mod:`mfg_ensemble.kernels.reference.fv2d`). ``u``: (nt, ny, nx) on the output
    times. ``bc`` = (bc_x, bc_y); ``nodes``: None (all free) or the node kinds (ny, nx) of
    :mod:`~mfg_ensemble.kernels.reference.grid2d` (m0 is taken as 0 at obstacle and exit nodes).
    ``min_substeps``: None, or nt − 1 integers ≥ 1. Returns m (nt, ny, nx), the sub-steps taken
    in each output interval (int64, (nt − 1,)) and the mass that has left by the exits by each
    output time (nt,), with Σ w·m[k] + exited[k] = Σ w·m[0] to rounding."""
    m0a = v.float_array("m0", m0, ndim=2)
    ny, nx = m0a.shape
    if nx < 3 or ny < 3:
        raise ValueError(f"m0 needs at least 3 x 3 nodes for the finite-volume scheme, got shape {m0a.shape}")
    ua = _history_2d("u", u, (ny, nx), "m0")
    v.check_finite("m0", m0a.ravel())
    v.check_finite("u", ua.ravel())
    if (m0a < 0).any():
        j, i = map(int, np.argwhere(m0a < 0)[0])
        raise ValueError(f"m0 must be >= 0, m0[{j}, {i}] = {m0a[j, i]}")
    bcs = _bc_pair(bc)
    kinds = _nodes_2d(nodes, ny, nx, bcs)
    kw = dict(
        dx=v.positive("dx", dx),
        dy=v.positive("dy", dy),
        sigma=v.non_negative("sigma", sigma),
        T=v.positive("T", T),
        bc=bcs,
        nodes=kinds,
        cfl=_cfl(cfl),
        min_substeps=_floors(min_substeps, ua.shape[0]),
    )
    if _backend.resolve(backend) == "rust":
        return _backend.rust().fv_forward_2d(ua, m0a, **kw)
    return _fv2d.fv_forward_2d(ua, m0a, **kw)


# -- 2-D particles and KDE (issue 12; the maths: reference/kde2d.py, reference/particles2d.py) --------


def _pair(name: str, value: object) -> tuple[object, object]:
    if isinstance(value, str) or not hasattr(value, "__len__") or len(value) != 2:  # type: ignore[arg-type]
        raise ValueError(f"{name} must be a pair (x, y), got {value!r}")
    return value[0], value[1]  # type: ignore[index]


def _bandwidth_2d(bandwidth: object) -> tuple[float, float] | str:
    """A rule name, or (hx, hy) from a float (both) or a pair."""
    if isinstance(bandwidth, str):
        return v.choice("bandwidth", bandwidth, BANDWIDTH_RULES)
    if np.ndim(bandwidth) == 0:
        h = v.positive("bandwidth", bandwidth)
        return h, h
    hx, hy = _pair("bandwidth", bandwidth)
    return v.positive("bandwidth[0]", hx), v.positive("bandwidth[1]", hy)


def _particles_2d(name: str, value: ArrayLike) -> FloatArray:
    arr = v.float_array(name, value, ndim=2)
    if arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} must have shape (n, 2) with n >= 1 (columns x, y), got {arr.shape}")
    return arr


def _axis_2d(name: str, values: ArrayLike, bc: str) -> tuple[float, float, int]:
    """(lo, spacing, n) of a uniform increasing axis of nodes (``name`` is "x" or "y")."""
    g = v.float_array(name, values)
    v.min_length(name, g, 2, "a density")
    v.check_finite(name, g)
    steps = np.diff(g)
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0))
        raise ValueError(f"{name} must be strictly increasing, {name}[{i}] = {g[i]} >= {name}[{i + 1}] = {g[i + 1]}")
    try:
        d = uniform_spacing(g, f"kde_2d (the nodes {name})")
    except ValueError as err:
        raise ValueError(str(err).replace("grid", name, 1)) from None
    return float(g[0]), d, g.shape[0]


def kde_2d(
    particles: ArrayLike,
    x: ArrayLike,
    y: ArrayLike,
    bandwidth: float | tuple[float, float] | str,
    *,
    method: str = "exact",
    bc: tuple[str, str] = ("reflect", "reflect"),
    nodes: ArrayLike | None = None,
    backend: str | None = None,
) -> FloatArray:
    """Product-Gaussian kernel density (ny, nx) of ``particles`` (n, 2) on the uniform nodes ``x``
    (nx,) × ``y`` (ny,) (see :mod:`mfg_ensemble.kernels.reference.kde2d`), with Σ w·m = 1 over the
    SPEC2D quadrature weights and m = 0 at obstacle and exit nodes.

    ``bandwidth``: a float (both dimensions), a pair (hx, hy), or "scott" / "silverman" (per
    dimension σ̂_d·n^(−1/6); the two coincide in 2-D). ``method``: "exact" (direct sum truncated
    at 8h) or "binned" (bilinear binning + separable convolution). ``bc``: per dimension "reflect"
    (walls at the end nodes, image particles) or "periodic" (the nodes hold one period)."""
    p = _particles_2d("particles", particles)
    bcs = _bc_pair(bc)
    axes = (_axis_2d("x", x, bcs[0]), _axis_2d("y", y, bcs[1]))
    kinds = _nodes_2d(nodes, axes[1][2], axes[0][2], bcs)
    method = v.choice("method", method, ("exact", "binned"))
    v.check_finite("particles", p.ravel())
    for a, (lo, d, n) in enumerate(axes):
        hi = lo + (n if bcs[a] == "periodic" else n - 1) * d
        col = p[:, a]
        bad = (col < lo) | (col > hi)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"particles[{i}, {a}] = {col[i]} lies outside the nodes' domain [{lo}, {hi}]")
    bw = _bandwidth_2d(bandwidth)
    if isinstance(bw, str):
        rule_h = _kde2d.bandwidth_rule_2d(p, bw)
        if rule_h is None:
            raise ValueError(
                f"bandwidth={bw!r} needs at least 2 particles spread in both x and y; pass a float bandwidth instead"
            )
        bw = rule_h
    if _backend.resolve(backend) == "rust":
        return _backend.rust().kde_2d(p, axes[0], axes[1], bw, method, bcs, kinds)
    return _kde2d.kde_2d(p, axes, bw, method, bcs, kinds)


def particles_forward_2d(
    x0: ArrayLike,
    u: ArrayLike,
    *,
    lo: tuple[float, float],
    hi: tuple[float, float],
    sigma: float,
    T: float,
    seed: int,
    bc: tuple[str, str] = ("reflect", "reflect"),
    nodes: ArrayLike | None = None,
    method: str = "binned",
    bandwidth: float | tuple[float, float] | str = "scott",
    min_substeps: ArrayLike | None = None,
    backend: str | None = None,
) -> tuple[FloatArray, IntArray, FloatArray]:
    """The 2-D particle Fokker–Planck march (see :mod:`mfg_ensemble.kernels.reference.particles2d`):
    the particles ``x0`` (n, 2) moved by the drift −∇u (u of shape (nt, ny, nx)) with Euler–Maruyama
    steps (noise from the Philox streams of ``seed``), reflected at walls and obstacles, removed at
    exits; at every output time the KDE of the alive particles (Σ w·m = alive fraction).
    Returns m (nt, ny, nx), the sub-steps of each output interval (int64, (nt − 1,)) and
    exited (nt,), the fraction of particles removed by each output time."""
    xa = _particles_2d("x0", x0)
    ua = v.float_array("u", u, ndim=3)
    nt, ny, nx = ua.shape
    if nt < 2 or ny < 3 or nx < 3:
        raise ValueError(f"u must have shape (nt, ny, nx) with nt >= 2 and ny, nx >= 3, got {ua.shape}")
    lo_x, lo_y = _pair("lo", lo)
    hi_x, hi_y = _pair("hi", hi)
    lx, hx_ = v.interval(lo_x, hi_x)
    ly, hy_ = v.interval(lo_y, hi_y)
    bcs = _bc_pair(bc)
    kw = dict(
        lo=(lx, ly),
        hi=(hx_, hy_),
        sigma=v.non_negative("sigma", sigma),
        T=v.positive("T", T),
        seed=v.uint64("seed", seed),
        bc=bcs,
        kinds=_nodes_2d(nodes, ny, nx, bcs),
        method=v.choice("method", method, ("exact", "binned")),
        bandwidth=_bandwidth_2d(bandwidth),
        min_substeps=_floors(min_substeps, nt),
    )
    if _backend.resolve(backend) == "rust":
        m, counts, exited, _ = _backend.rust().particles_forward_2d(xa, ua, **kw)
        return m.reshape(nt, ny, nx), counts, exited
    return _particles2d.particles_forward_2d(xa, ua, **kw)

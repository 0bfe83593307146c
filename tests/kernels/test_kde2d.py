"""2-D KDE: unit mass over the SPEC2D weights, binned close to exact, Rust = NumPy, reflection
keeps the mass, a tensor product of particles gives the product of the 1-D KDEs, transposition."""

from __future__ import annotations

import numpy as np
import pytest

from mfg_ensemble.kernels import backend as _backend
from mfg_ensemble.kernels import kde, kde_2d
from mfg_ensemble.kernels.reference import kde2d as ref
from mfg_ensemble.kernels.reference.grid2d import EXIT, OBSTACLE

from conftest import max_rel

BCS = [("reflect", "reflect"), ("periodic", "reflect"), ("reflect", "periodic"), ("periodic", "periodic")]


def axis(n: int, bc: str, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    return lo + np.arange(n) * ((hi - lo) / (n if bc == "periodic" else n - 1))


def cloud(n: int, seed: int = 1) -> np.ndarray:
    """Correlated normal particles folded into [0, 1] × [0, 2] (mass near the walls)."""
    z = np.random.default_rng(seed).normal(0.0, 1.0, (n, 2))
    p = np.c_[0.3 + 0.25 * z[:, 0], 1.2 + 0.5 * (0.6 * z[:, 0] + 0.8 * z[:, 1])]
    p[:, 0] = 1.0 - np.abs(1.0 - np.abs(p[:, 0]))
    p[:, 1] = 2.0 - np.abs(2.0 - np.abs(p[:, 1]))
    return np.clip(p, [0.0, 0.0], [1.0, 2.0])


def room(ny: int, nx: int, bc: tuple[str, str]) -> np.ndarray:
    nodes = np.zeros((ny, nx), dtype=np.uint8)
    nodes[ny // 3 : ny // 2, nx // 3 : nx // 2] = OBSTACLE
    if bc[0] == "reflect":
        nodes[ny // 2 : ny // 2 + 3, -1] = EXIT
    if bc[1] == "reflect":
        nodes[0, 2:5] = EXIT
    return nodes


def weights(x: np.ndarray, y: np.ndarray, bc: tuple[str, str], nodes: np.ndarray) -> np.ndarray:
    return ref.weights_2d(x.size, x[1] - x[0], y.size, y[1] - y[0], bc, nodes)


def has_rust() -> bool:
    try:
        return hasattr(_backend.rust(), "kde_2d")
    except Exception:
        return False


needs_rust = pytest.mark.skipif(not has_rust(), reason="Rust extension without kde_2d")


@pytest.mark.parametrize("method", ["exact", "binned"])
@pytest.mark.parametrize("bc", BCS)
def test_unit_mass_and_zero_at_obstacles_and_exits(method: str, bc: tuple[str, str], backend: str) -> None:
    x, y = axis(23, bc[0]), axis(31, bc[1], 0.0, 2.0)
    nodes = room(31, 23, bc)
    p = cloud(3000)
    m = kde_2d(p, x, y, (0.05, 0.08), method=method, bc=bc, nodes=nodes, backend=backend)
    assert m.shape == (31, 23) and (m >= 0).all()
    assert abs(float(np.sum(weights(x, y, bc, nodes) * m)) - 1.0) <= 1e-13
    assert (m[nodes != 0] == 0).all() and (m[nodes == 0] > 0).any()


def test_binned_is_close_to_exact_and_converges(backend: str) -> None:
    """The binning error is O(dx²/h²): halving dx divides it by about 4."""
    p = cloud(8000, 2)
    errs = []
    for n in (41, 81):
        x, y = axis(n, "reflect"), axis(n, "reflect", 0.0, 2.0)
        exact = kde_2d(p, x, y, "scott", method="exact", backend=backend)
        binned = kde_2d(p, x, y, "scott", method="binned", backend=backend)
        errs.append(np.abs(binned - exact).max() / exact.max())
    assert errs[1] <= 3e-3 and errs[0] / errs[1] > 3.0, errs


@needs_rust
@pytest.mark.parametrize("method", ["exact", "binned"])
@pytest.mark.parametrize("bc", BCS)
@pytest.mark.parametrize("n", [1, 7, 5000, 20_000])
def test_rust_matches_numpy_reference(n: int, method: str, bc: tuple[str, str]) -> None:
    x, y = axis(23, bc[0]), axis(31, bc[1], 0.0, 2.0)
    nodes = room(31, 23, bc)
    p = cloud(n, n)
    args = dict(method=method, bc=bc, nodes=nodes)
    rust = kde_2d(p, x, y, (0.04, 0.1), backend="rust", **args)
    numpy = kde_2d(p, x, y, (0.04, 0.1), backend="numpy", **args)
    assert max_rel(rust, numpy) <= 1e-12


@pytest.mark.parametrize("method", ["exact", "binned"])
@pytest.mark.parametrize("h", [0.03, 0.06])  # one image per side: h <= L/16
def test_reflection_images_keep_the_mass(method: str, h: float) -> None:
    """Before the renormalisation the images already give mass one (to the quadrature error):
    particles on and near the walls lose nothing through them."""
    x, y = axis(41, "reflect"), axis(81, "reflect", 0.0, 2.0)
    p = np.r_[cloud(2000, 5), [[0.0, 0.0], [1.0, 2.0], [0.0, 1.0], [0.5, 2.0]]]
    axes = ((0.0, x[1], 41), (0.0, y[1], 81))
    raw = (ref.raw_exact if method == "exact" else ref.raw_binned)(p, axes, (h, h), ("reflect", "reflect"))
    raw /= p.shape[0] * h * h * 2.0 * np.pi
    mass = float(np.sum(weights(x, y, ("reflect", "reflect"), np.zeros((81, 41))) * raw))
    assert abs(mass - 1.0) <= 1e-9


@pytest.mark.parametrize(
    ("method", "n", "h", "count"),
    [("exact", 61, 0.04, 600_000), ("binned", 61, 0.04, 600_000), ("binned", 21, 0.03, 2_000_000)],
)
def test_a_flat_crowd_around_a_pillar_stays_flat(method: str, n: int, h: float, count: int, backend: str) -> None:
    """Particles uniform in the unit square off the cells of a disc's obstacle nodes (the room of
    the particle march: nearest-node cells): the density is flat up to the pillar, as at the
    walls, for a bandwidth of 2.4 node spacings and, binned, of 0.6. Measured (min/mean; the
    mean of the nodes next to the pillar), binned: cut at the pillar 0.58 (0.63) and 0.68
    (0.78); divided by the room's share of the kernel 0.97 (1.00) and 0.985 (1.002) — 0.92
    (0.945) at h = 0.6 dx with the share of the room's nodes instead of that of its binned
    cells. "exact" at h = 0.6 dx: 0.95 (0.97), the kernel's midpoint rule on cells wider than
    it (not asked)."""
    x = y = axis(n, "reflect")
    centre, radius = 0.5, 0.2
    nodes = np.where(np.hypot(*np.meshgrid(x - centre, y - centre)) < radius, OBSTACLE, 0).astype(np.uint8)
    p = np.random.default_rng(11).uniform(0.0, 1.0, (count, 2))
    nearest = np.floor(p / x[1] + 0.5).astype(int)
    p = p[nodes[nearest[:, 1], nearest[:, 0]] == 0]
    m = kde_2d(p, x, y, (h, h), method=method, nodes=nodes, backend=backend)
    free, obstacle = nodes == 0, nodes == OBSTACLE
    beside = free & (
        np.roll(obstacle, 1, 0) | np.roll(obstacle, -1, 0) | np.roll(obstacle, 1, 1) | np.roll(obstacle, -1, 1)
    )
    flat = m / m[free].mean()
    assert 0.95 < flat[free].min() and flat[free].max() < 1.05
    assert abs(flat[beside].mean() - 1.0) < 0.02


@pytest.mark.parametrize("method", ["exact", "binned"])
@pytest.mark.parametrize("bc", BCS)
def test_tensor_product_of_particles_gives_the_product_of_1d_kdes(
    method: str, bc: tuple[str, str], backend: str
) -> None:
    """Particles at all pairs (a_k, b_l): the 2-D KDE factorises exactly into the 1-D KDEs of
    the a's and of the b's (same bandwidths, images and normalisation per dimension)."""
    x, y = axis(33, bc[0]), axis(29, bc[1], 0.0, 2.0)
    a = np.random.default_rng(7).uniform(0.0, 1.0, 60)
    b = np.random.default_rng(8).uniform(0.0, 2.0, 45)
    p = np.stack(np.meshgrid(a, b, indexing="ij"), axis=-1).reshape(-1, 2)
    hx, hy = 0.06, 0.15
    m = kde_2d(p, x, y, (hx, hy), method=method, bc=bc, backend=backend)
    mx = kde(a, x, hx, method=method, bc=bc[0], backend=backend)
    my = kde(b, y, hy, method=method, bc=bc[1], backend=backend)
    assert max_rel(m, np.outer(my, mx)) <= 1e-12


@pytest.mark.parametrize("method", ["exact", "binned"])
def test_transposition_is_exact_to_rounding(method: str, backend: str) -> None:
    bc = ("periodic", "reflect")
    x, y = axis(23, bc[0]), axis(31, bc[1], 0.0, 2.0)
    nodes = room(31, 23, bc)
    p = cloud(4000, 9)
    m = kde_2d(p, x, y, (0.05, 0.09), method=method, bc=bc, nodes=nodes, backend=backend)
    t = kde_2d(p[:, ::-1], y, x, (0.09, 0.05), method=method, bc=bc[::-1], nodes=nodes.T, backend=backend)
    assert max_rel(t, m.T) <= 1e-13


def test_bandwidth_rules(backend: str) -> None:
    """Scott and Silverman are both σ̂_d·n^(−1/6) in 2-D (scipy's factors for d = 2)."""
    p = cloud(5000, 3)
    x, y = axis(21, "reflect"), axis(21, "reflect", 0.0, 2.0)
    h = np.std(p, axis=0, ddof=1) * 5000 ** (-1 / 6)
    explicit = kde_2d(p, x, y, tuple(h), method="binned", backend=backend)
    for rule in ("scott", "silverman"):
        assert max_rel(kde_2d(p, x, y, rule, method="binned", backend=backend), explicit) <= 1e-13
    scalar = kde_2d(p, x, y, 0.1, method="binned", backend=backend)
    np.testing.assert_array_equal(scalar, kde_2d(p, x, y, (0.1, 0.1), method="binned", backend=backend))


def test_weights_count_a_particle_that_many_times() -> None:
    """The reference's weighted KDE (the particle march's survival weights; the Rust march is
    checked against it in test_particles2d): integer weights give the KDE of the particles
    repeated that many times, a common factor changes nothing, and the weighted bandwidth rule
    (reliability weights, Kish's n_eff) is the plain rule when all weights are 1."""
    p = cloud(400, 5)
    bc = ("reflect", "reflect")
    x, y = axis(21, "reflect"), axis(17, "reflect", 0.0, 2.0)
    nodes = room(17, 21, bc)
    axes = ((0.0, x[1], 21), (0.0, y[1], 17))
    w = np.random.default_rng(2).integers(1, 4, p.shape[0]).astype(np.float64)
    for method in ("exact", "binned"):
        weighted = ref.density(p, axes, (0.1, 0.15), method, bc, nodes, 1.0, w)
        repeated = ref.density(np.repeat(p, w.astype(int), axis=0), axes, (0.1, 0.15), method, bc, nodes, 1.0)
        assert max_rel(weighted, repeated) <= 1e-12
        assert max_rel(ref.density(p, axes, (0.1, 0.15), method, bc, nodes, 1.0, 0.3 * w), weighted) <= 1e-12
        ones = ref.density(p, axes, (0.1, 0.15), method, bc, nodes, 1.0, np.ones(p.shape[0]))
        np.testing.assert_array_equal(ones, ref.density(p, axes, (0.1, 0.15), method, bc, nodes, 1.0))
    np.testing.assert_allclose(ref.bandwidth_rule_2d(p, "scott", np.ones(400)), ref.bandwidth_rule_2d(p, "scott"))
    h = ref.bandwidth_rule_2d(p, "scott", w)
    n_eff = w.sum() ** 2 / (w * w).sum()
    mean = (w[:, None] * p).sum(axis=0) / w.sum()
    var = (w[:, None] * (p - mean) ** 2).sum(axis=0) / (w.sum() - (w * w).sum() / w.sum())
    np.testing.assert_allclose(h, np.sqrt(var) * n_eff ** (-1 / 6), rtol=1e-13)
    assert ref.bandwidth_rule_2d(p[:3], "scott", np.array([1.0, 0.0, 0.0])) is None  # n_eff = 1


X, Y = axis(11, "reflect"), axis(9, "reflect")
P = np.full((5, 2), 0.5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(particles=np.ones(4)), "particles must be 2-dimensional"),
        (dict(particles=np.ones((4, 3))), r"particles must have shape \(n, 2\)"),
        (dict(particles=np.ones((0, 2))), r"particles must have shape \(n, 2\)"),
        (dict(particles=np.r_[P, [[np.nan, 0.1]]]), "particles contains NaN"),
        (dict(particles=np.r_[P, [[0.2, 1.5]]]), r"particles\[5, 1\] = 1.5 lies outside"),
        (dict(x=X[::-1]), "x must be strictly increasing"),
        (dict(y=np.r_[0.0, 0.1, 0.5, 1.0]), "y must be uniformly spaced"),
        (dict(x=[0.0]), "x needs at least 2 points"),
        (dict(bandwidth=0.0), "bandwidth must be finite and > 0"),
        (dict(bandwidth=(0.1, -1.0)), r"bandwidth\[1\] must be finite and > 0"),
        (dict(bandwidth=(0.1, 0.2, 0.3)), "bandwidth must be a pair"),
        (dict(bandwidth="wide"), "bandwidth must be one of 'scott', 'silverman'"),
        (dict(bandwidth="scott"), "bandwidth='scott' needs at least 2 particles spread"),
        (dict(method="fast"), "method must be one of"),
        (dict(bc="reflect"), "bc must be a pair"),
        (dict(bc=("reflect", "none")), r"bc\[1\] must be one of"),
        (dict(nodes=np.zeros((11, 9))), r"nodes must have shape \(ny, nx\) = \(9, 11\)"),
        (dict(nodes=np.full((9, 11), 3)), "nodes must hold only"),
        (dict(nodes=np.pad(np.full((7, 9), 0), 1, constant_values=1) * 0 + 1), "nodes must have at least one free"),
    ],
)
def test_errors_name_the_argument(kwargs: dict, match: str, backend: str) -> None:
    args = dict(particles=P, x=X, y=Y, bandwidth=0.1) | kwargs
    with pytest.raises(ValueError, match=match):
        kde_2d(args.pop("particles"), args.pop("x"), args.pop("y"), args.pop("bandwidth"), backend=backend, **args)

"""2-D particles: Rust = NumPy (positions, densities, exits), thread-count independence, walls and
obstacles that hold, pure-diffusion statistics, exact mass accounting with exits, the sub-step
rule, transposition symmetry and the facade's errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import ndtr

from mfg_ensemble.kernels import backend as _backend
from mfg_ensemble.kernels import hjb_backward_2d, particles_forward_2d
from mfg_ensemble.kernels.reference import particles2d as ref
from mfg_ensemble.kernels.reference.grid2d import EXIT, OBSTACLE
from mfg_ensemble.kernels.reference.kde2d import weights_2d

from conftest import max_rel, run_python


def has_rust() -> bool:
    try:
        return hasattr(_backend.rust(), "particles_forward_2d")
    except Exception:
        return False


needs_rust = pytest.mark.skipif(not has_rust(), reason="Rust extension without particles_forward_2d")

NX, NY, NT = 21, 17, 5
LO, HI = (0.0, 0.0), (1.0, 0.8)


def coords(bc=("reflect", "reflect"), nx=NX, ny=NY, lo=LO, hi=HI):
    dx = ref.spacing(lo[0], hi[0], nx, bc[0])
    dy = ref.spacing(lo[1], hi[1], ny, bc[1])
    return lo[0] + np.arange(nx) * dx, lo[1] + np.arange(ny) * dy


def room(bc=("reflect", "reflect"), nx=NX, ny=NY) -> np.ndarray:
    """A pillar in the middle and exits on the right wall (and the bottom if it is a wall)."""
    nodes = np.zeros((ny, nx), dtype=np.uint8)
    nodes[6:10, 9:12] = OBSTACLE
    if bc[0] == "reflect":
        nodes[5:11, -1] = EXIT
    if bc[1] == "reflect":
        nodes[0, 3:6] = EXIT
    return nodes


def value(bc=("reflect", "reflect"), nt=NT, strength=1.0):
    """A value function falling towards the right exit (and rising in time): (x − 1)² + (y − 0.4)²/2,
    or its smooth periodic cousin L²·sin²(π(·)/L)/π² along a periodic direction."""
    x, y = coords(bc)
    X, Y = np.meshgrid(x, y)

    def bowl(v, centre, length, periodic):
        return (length * np.sin(np.pi * (v - centre) / length) / np.pi) ** 2 if periodic else (v - centre) ** 2

    periodic = (bc[0] == "periodic", bc[1] == "periodic")
    base = strength * (bowl(X, 1.0, HI[0], periodic[0]) + 0.5 * bowl(Y, 0.4, HI[1], periodic[1]))
    return np.stack([(1.0 + 0.1 * k) * base for k in range(nt)])


def start(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform([0.05, 0.05], [0.4, 0.75], (n, 2))


def march(backend: str, positions: bool = False, weights: bool = False, **kw):
    """The march (m, counts, exited), with ``positions`` also the final positions and alive mask,
    with ``weights`` their weights too."""
    args = dict(lo=LO, hi=HI, sigma=0.2, T=0.5, seed=11, nodes=room(), method="binned", bandwidth="scott") | kw
    x0, u = args.pop("x0", start(3000)), args.pop("u", value(args.get("bc", ("reflect", "reflect"))))
    if not positions:
        return particles_forward_2d(x0, u, backend=backend, **args)
    from mfg_ensemble.kernels import _bandwidth_2d, _bc_pair, _nodes_2d

    args["bc"] = _bc_pair(args.get("bc", ("reflect", "reflect")))
    args["bandwidth"] = _bandwidth_2d(args["bandwidth"])
    args["kinds"] = _nodes_2d(args.pop("nodes"), u.shape[1], u.shape[2], args["bc"])
    if backend == "rust":
        m, counts, exited, (xs, alive, w) = _backend.rust().particles_forward_2d(x0, u, positions=True, **args)
        out = (m.reshape(u.shape), counts, exited, xs, alive, w)
    else:
        out = ref.particles_forward_2d(x0, u, positions=True, **args)
    return out if weights else out[:5]


BCS = [("reflect", "reflect"), ("periodic", "reflect"), ("reflect", "periodic")]


@needs_rust
@pytest.mark.parametrize("method", ["exact", "binned"])
@pytest.mark.parametrize("bc", BCS)
def test_rust_matches_numpy_reference(bc: tuple[str, str], method: str) -> None:
    kw = dict(bc=bc, nodes=room(bc), u=value(bc, strength=3.0), method=method, sigma=0.3)
    rust = march("rust", positions=True, weights=True, **kw)
    numpy = march("numpy", positions=True, weights=True, **kw)
    np.testing.assert_array_equal(rust[1], numpy[1])  # sub-steps
    np.testing.assert_array_equal(rust[4], numpy[4])  # alive
    # the bridge's weights: products of 1 − exp(·), libm's exp against NumPy's (not correctly rounded)
    assert max_rel(rust[5][rust[4]], numpy[5][numpy[4]]) <= 1e-13
    assert (numpy[5][numpy[4]] < 1.0).any()
    np.testing.assert_allclose(rust[2], numpy[2], rtol=0, atol=1e-14)  # exited
    assert max_rel(rust[3], numpy[3]) <= 1e-12  # final positions
    assert max_rel(rust[0], numpy[0]) <= 1e-11  # densities
    assert numpy[2][-1] > 0 or bc[0] == "periodic"


@needs_rust
def test_bit_identical_for_one_and_two_threads() -> None:
    code = """
        import hashlib, numpy as np
        from mfg_ensemble.kernels import particles_forward_2d
        nx, ny = 31, 25
        x = np.linspace(0, 1, nx); y = np.linspace(0, 1, ny)
        X, Y = np.meshgrid(x, y)
        u = np.stack([(X - 1) ** 2 + (Y - 0.5) ** 2] * 4)
        nodes = np.zeros((ny, nx), np.uint8); nodes[8:14, 12:16] = 1; nodes[10:15, -1] = 2
        x0 = np.random.default_rng(0).uniform(0.02, 0.3, (12_000, 2))
        h = hashlib.sha256()
        for method in ("binned", "exact"):
            m, k, e = particles_forward_2d(x0, u, lo=(0, 0), hi=(1, 1), sigma=0.3, T=0.6, seed=5,
                                           nodes=nodes, method=method, backend="rust")
            h.update(m.tobytes()); h.update(k.tobytes()); h.update(e.tobytes())
        print(h.hexdigest())
    """
    assert run_python(code, {"RAYON_NUM_THREADS": "1"}) == run_python(code, {"RAYON_NUM_THREADS": "2"})


@pytest.mark.parametrize("bc", BCS)
def test_no_particle_ever_inside_an_obstacle(bc: tuple[str, str], backend: str) -> None:
    """A strong drift and noise push particles into the pillar: none ends in a blocked cell,
    and the density vanishes there and at the exits."""
    nodes = room(bc)
    x, y = coords(bc)
    X, Y = np.meshgrid(x, y)
    u = np.stack([5.0 * ((X - 0.5) ** 2 + (Y - 0.4) ** 2)] * 3)  # drift towards the pillar
    for T in (0.1, 0.4):
        m, k, e, xs, alive = march(backend, positions=True, bc=bc, nodes=nodes, u=u, sigma=0.5, T=T)
        geo = ref.Geometry(LO, HI, NX, NY, bc, nodes)
        assert not geo.blocked(xs).any()
        assert (xs >= LO).all() and (xs <= HI).all()
        assert (m[:, nodes != 0] == 0).all()


def test_pure_diffusion_mean_and_variance(backend: str) -> None:
    """No drift, walls far away: X_T = x0 + σ√T·N(0, I) exactly in law (Euler–Maruyama is exact
    here); mean and variance of each coordinate within 5 standard errors, coordinates uncorrelated."""
    n, sigma, T = 20_000, 0.3, 0.5
    lo, hi = (-5.0, -4.0), (5.0, 6.0)
    u = np.zeros((3, 9, 11))
    x0 = np.tile([[0.2, 1.0]], (n, 1))
    kw = dict(x0=x0, u=u, lo=lo, hi=hi, sigma=sigma, T=T, nodes=None, bandwidth=0.5)
    _, k, e, xs, _ = march(backend, positions=True, **kw)
    np.testing.assert_array_equal(k, [1, 1])
    var = sigma**2 * T
    for a, mu in enumerate((0.2, 1.0)):
        assert abs(xs[:, a].mean() - mu) < 5 * np.sqrt(var / n)
        assert abs(xs[:, a].var() / var - 1.0) < 5 * np.sqrt(2 / n)
    assert abs(np.corrcoef(xs.T)[0, 1]) < 5 / np.sqrt(n)


@pytest.mark.parametrize("bc", BCS)
def test_exits_account_for_all_the_mass(bc: tuple[str, str], backend: str) -> None:
    nodes = room(bc)
    m, k, e = march(backend, bc=bc, nodes=nodes, u=value(bc, strength=3.0), sigma=0.3, T=1.0, x0=start(1500))
    x, y = coords(bc)
    w = weights_2d(NX, x[1] - x[0], NY, y[1] - y[0], bc, nodes)
    remaining = np.einsum("ji,kji->k", w, m)
    assert e[0] == 0 and (np.diff(e) >= 0).all()
    np.testing.assert_allclose(remaining + e, 1.0, rtol=0, atol=1e-13)
    if bc[0] == "reflect":
        assert e[-1] > 0.05


def test_only_exits_remove_particles(backend: str) -> None:
    """Without exit nodes nothing leaves, whatever the drift and the walls."""
    nodes = room()
    nodes[nodes == EXIT] = 0
    _, _, e = march(backend, nodes=nodes, u=value(strength=3.0), sigma=0.5, T=1.0)
    assert (e == 0).all()


@pytest.mark.parametrize("substeps", [1, 16])
def test_exits_follow_the_first_passage_law_at_any_step(substeps: int, backend: str) -> None:
    """A constant drift b towards an exit wall at distance a (u = −b·x, exits all along the right
    wall, y periodic: a 1-D first passage): the fraction exited by t is the inverse Gaussian law
    P(τ ≤ t) = Φ((bt − a)/(σ√t)) + e^(2ab/σ²)·Φ((−bt − a)/(σ√t)) at any step, because the Brownian
    bridge's survival weights count the exits between the end points. Asked: every output time
    within 4.5 binomial standard deviations (2·10⁵ particles; the scores are cumulative, so
    correlated). Measured: z = 1.3, 1.8, 1.5, 1.9, 1.7 at δ = 0.2 (one step per output interval)
    and 0.8, 2.2, 2.2, 2.6, 2.4 at δ = 0.0125; over six seeds at 10⁶ particles the t = 1 scores
    average 0.17 (sd 0.86) and 0.22 (sd 1.0). End points alone (before 2026-12-05) gave 0.327 at
    t = 1 for δ = 0.2 and 0.379 for δ = 0.0125, against the law's 0.402: z = −49 and −15."""
    a, b, sigma, T, nt, n = 0.4, 0.3, 0.2, 1.0, 6, 200_000
    x = np.linspace(0.0, 1.0, 11)
    nodes = np.zeros((11, 11), dtype=np.uint8)
    nodes[:, -1] = EXIT
    u = np.broadcast_to(-b * x, (nt, 11, 11)).copy()
    x0 = np.column_stack([np.full(n, 1.0 - a), np.linspace(0.3, 0.7, n)])
    _, counts, exited = particles_forward_2d(
        x0, u, lo=(0.0, 0.0), hi=(1.0, 1.0), bc=("reflect", "periodic"), sigma=sigma, T=T, seed=1, nodes=nodes,
        method="binned", bandwidth=(0.05, 0.05), min_substeps=np.full(nt - 1, substeps), backend=backend,
    )  # fmt: skip
    assert (counts == substeps).all()  # the rule asks ⌈0.2·b/dx⌉ = 1
    t = np.linspace(0.0, T, nt)[1:]
    spread = sigma * np.sqrt(t)
    law = ndtr((b * t - a) / spread) + math.exp(2 * a * b / sigma**2) * ndtr((-b * t - a) / spread)
    z = (exited[1:] - law) / np.sqrt(law * (1.0 - law) / n)
    assert np.abs(z).max() < 4.5, z


def test_the_exited_mass_is_continuous_in_u(backend: str) -> None:
    """configs/room.toml's room without its pillar (31², two doors; u the HJB's for the running
    cost 1): the survival weights make the exited mass a continuous function of u, so its
    difference quotients max_t |exited(u + εv) − exited(u)|/ε agree from ε = 1e-5 to 1e-7
    (measured 1.994, 1.990, 1.991). Removals alone change it by whole particles: with 2·10⁴
    particles the quotients were 3.0 at ε = 1e-4 and 0 below it (no particle flipped)."""
    n, nt = 31, 21
    x = np.linspace(0.0, 1.0, n)
    X, Y = np.meshgrid(x, x)
    nodes = np.zeros((n, n), dtype=np.uint8)
    nodes[((x >= 0.15) & (x <= 0.3)) | ((x >= 0.7) & (x <= 0.85)), -1] = EXIT
    g = 2.0 * np.minimum((X - 1) ** 2 + (Y - 0.225) ** 2, (X - 1) ** 2 + (Y - 0.775) ** 2)
    g[nodes == EXIT] = 0.0
    kw = dict(sigma=0.1, T=1.0, bc=("reflect", "reflect"), nodes=nodes, backend=backend)
    u, _ = hjb_backward_2d(np.ones((nt, n, n)), g, dx=x[1], dy=x[1], **kw)
    x0 = np.clip(np.random.default_rng(1).normal([0.25, 0.5], [0.1, 0.15], (20_000, 2)), 0.01, 0.99)
    v = (np.sin(3 * X + 1) * np.cos(2 * Y))[None]

    def exited(uu: np.ndarray, floors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        _, counts, e = particles_forward_2d(
            x0, uu, lo=(0, 0), hi=(1, 1), seed=0, method="binned", bandwidth=(0.05, 0.05), min_substeps=floors, **kw
        )
        return e, counts

    e0, counts = exited(u)
    assert e0[-1] > 0.9
    quotients = [np.abs(exited(u + eps * v, counts)[0] - e0).max() / eps for eps in (1e-5, 1e-6, 1e-7)]
    assert quotients[0] > 1.0
    np.testing.assert_allclose(quotients, quotients[0], rtol=0.01)


def test_substeps_follow_the_gradient_rule(backend: str) -> None:
    """u = a·x + b·y: |∂x u| = a, |∂y u| = b inside, so k = ⌈Δt·(a/dx + b/dy)⌉; floors win when larger."""
    a, b, T, nt = 3.03, 2.0, 1.0, 3
    x, y = coords()
    X, Y = np.meshgrid(x, y)
    u = np.stack([a * X + b * Y] * nt)
    dx, dy = x[1], y[1]
    k = int(np.ceil(0.5 * (a / dx + b / dy)))
    _, counts, _ = march(backend, u=u, nodes=None, T=T, x0=start(50))
    np.testing.assert_array_equal(counts, [k, k])
    _, counts, _ = march(backend, u=u, nodes=None, T=T, x0=start(50), min_substeps=[k + 5, 1])
    np.testing.assert_array_equal(counts, [k + 5, k])


def test_deterministic_drift_moves_particles_by_minus_grad_u(backend: str) -> None:
    """σ = 0, u = −c·x − d·y: particles away from walls move by (c, d)·T."""
    c, d, T = 0.2, -0.1, 1.0
    x, y = coords()
    X, Y = np.meshgrid(x, y)
    u = np.stack([-c * X - d * Y] * 3)
    x0 = np.array([[0.3, 0.5], [0.41, 0.33]])
    *_, xs, alive = march(backend, positions=True, u=u, x0=x0, nodes=None, sigma=0.0, T=T, bandwidth=0.1)
    np.testing.assert_allclose(xs, x0 + [c * T, d * T], atol=1e-13)
    assert alive.all()


def test_a_particle_pushed_into_a_pillar_is_reflected_at_its_face(backend: str) -> None:
    """σ = 0, one step of drift (0.1, 0) from x = 0.4: the pillar's cells start at x = 0.425
    (node 9 at 0.45); the end point 0.5 is reflected about the face to 0.35."""
    x, y = coords()
    nodes = np.zeros((NY, NX), np.uint8)
    nodes[:, 9:12] = OBSTACLE
    X, _ = np.meshgrid(x, y)
    u = np.stack([-0.1 * X] * 2)
    x0 = np.array([[0.1, 0.3], [0.2, 0.6]])
    *_, xs, _ = march(backend, positions=True, u=u, x0=x0, nodes=nodes, sigma=0.0, T=1.0, bandwidth=0.1)
    np.testing.assert_allclose(xs[:, 0], [0.2, 0.3], atol=1e-13)  # far from the pillar: free motion
    x0 = np.array([[0.35, 0.3]])
    u = np.stack([-0.05 * X] * 2)  # the node gradient next to the face is halved: mirror ghost
    *_, xs, _ = march(backend, positions=True, u=u, x0=x0, nodes=nodes, sigma=0.0, T=2.0, bandwidth=0.1)
    assert xs[0, 0] <= 0.425 and xs[0, 1] == 0.3


def test_transposition(backend: str) -> None:
    """Swapping x and y (u, nodes, lo/hi, bc, x0 transposed): with σ = 0 the march gives the
    transposed result to rounding (bilinear interpolation rounds in another order); with σ > 0
    only in law, since x draws Philox stream 0 and y stream 2 (the paths differ)."""
    bc = ("reflect", "periodic")
    nodes, u = room(bc), value(bc, strength=3.0)
    x0 = start(2000, 4)
    kw = dict(bc=bc, nodes=nodes, u=u, sigma=0.0, x0=x0, method="exact", bandwidth=(0.05, 0.07), T=0.5)
    m, k, e = march(backend, **kw)
    swapped = dict(
        bc=bc[::-1], nodes=nodes.T.copy(), u=u.transpose(0, 2, 1).copy(), x0=x0[:, ::-1].copy(), bandwidth=(0.07, 0.05)
    )
    mt, kt, et = march(backend, **(kw | swapped), lo=LO[::-1], hi=HI[::-1])
    np.testing.assert_array_equal(kt, k)
    np.testing.assert_array_equal(et, e)
    assert max_rel(mt.transpose(0, 2, 1), m) <= 1e-10


def test_removed_particles_never_move_and_exited_counts_them(backend: str) -> None:
    """The march to T = 2 repeats the march to T = 1 over its first two intervals (same rows of
    u, same noise): the particles removed by T = 1 are still where they left, and still removed.
    exited counts them and what the bridge took of the weights of the others: 1 − Σ_alive w/n."""
    u = value(nt=5, strength=3.0)
    _, _, e1, x1, alive1, w1 = march(backend, positions=True, weights=True, u=u[:3], sigma=0.3, T=1.0)
    _, _, e2, x2, alive2, w2 = march(backend, positions=True, weights=True, u=u, sigma=0.3, T=2.0)
    np.testing.assert_array_equal(e2[:3], e1)
    for e, alive, w in ((e1, alive1, w1), (e2, alive2, w2)):
        assert e[-1] == (w.size - np.cumsum(w[alive])[-1]) / w.size and e[-1] > np.mean(~alive)
    assert 0 < e1[-1] < e2[-1]
    assert not alive2[~alive1].any()
    np.testing.assert_array_equal(x2[~alive1], x1[~alive1])
    gone = x2[~alive2]
    assert ((gone[:, 0] > 0.85) | (gone[:, 1] < 0.15)).all()  # near the exits they left through


X0 = start(10)
U = value()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(x0=np.ones(4)), "x0 must be 2-dimensional"),
        (dict(x0=np.ones((4, 3))), r"x0 must have shape \(n, 2\)"),
        (dict(x0=np.r_[X0, [[0.5, 0.9]]]), r"x0 must lie in the domain: x0\[10\]"),
        (dict(x0=np.r_[X0, [[0.5, 0.4]]]), r"x0 must not lie in an obstacle: x0\[10\]"),
        (dict(x0=np.r_[X0, [[np.nan, 0.4]]]), "x0 contains NaN"),
        (dict(u=U[:1]), r"u must have shape \(nt, ny, nx\)"),
        (dict(u=U[0]), "u must be 3-dimensional"),
        (dict(u=np.where(U > 0.5, np.inf, U)), "u contains NaN or inf"),
        (dict(lo=(0.0,)), "lo must be a pair"),
        (dict(hi=(1.0, -1.0)), "lo and hi must be finite with lo < hi"),
        (dict(sigma=-1.0), "sigma must be finite and >= 0"),
        (dict(T=0.0), "T must be finite and > 0"),
        (dict(seed=-1), "seed must be in"),
        (dict(bc=("reflect", "open")), r"bc\[1\] must be one of"),
        (dict(nodes=np.zeros((NX, NY))), "nodes must have shape"),
        (dict(nodes=np.pad(np.full((NY - 2, NX - 2), EXIT), 1)), "is an exit but not a boundary node"),
        (dict(method="kde"), "method must be one of"),
        (dict(bandwidth=-0.1), "bandwidth must be finite and > 0"),
        (dict(bandwidth=[0.1]), "bandwidth must be a pair"),
        (dict(min_substeps=[1]), "min_substeps must have nt - 1"),
    ],
)
def test_errors_name_the_argument(kwargs: dict, match: str, backend: str) -> None:
    with pytest.raises(ValueError, match=match):
        march(backend, **(dict(x0=X0) | kwargs))


def test_x_only_drift_reproduces_the_1d_march(backend: str) -> None:
    """u = u(t, x), no nodes: the x noise is the 1-D noise (stream STREAM_EM, index p), the node
    slopes and sub-steps are the 1-D ones, so the x coordinates follow the 1-D particles_forward
    march and the x-marginal Σ_j wy[j]·m[j, i] of the 2-D density is its 1-D exact KDE (the
    y-kernel integrates to one by the trapezoid rule with its images; measured 2e-15)."""
    from mfg_ensemble.kernels import particles_forward, quadrature_weights

    x, y = coords()
    u1 = np.stack([(1.0 + 0.2 * k) * np.sin(3.0 * x) for k in range(NT)])
    u2 = np.repeat(u1[:, None, :], NY, axis=1)
    x0 = start(2000, 6)
    kw = dict(sigma=0.25, T=0.8, seed=21, method="exact")
    m1, k1 = particles_forward(x0[:, 0], u1, x, lo=LO[0], hi=HI[0], bandwidth=0.05, backend=backend, **kw)
    m2, k2, e2 = particles_forward_2d(x0, u2, lo=LO, hi=HI, bandwidth=(0.05, 0.1), backend=backend, **kw)
    np.testing.assert_array_equal(k2, k1)
    assert (e2 == 0).all()
    marginal = np.einsum("j,kji->ki", quadrature_weights(NY, y[1], "reflect"), m2)
    assert max_rel(marginal, m1) <= 1e-12


@pytest.mark.parametrize("bandwidth", ["scott", 0.1])
def test_when_everyone_has_left_the_density_is_zero(bandwidth: object, backend: str) -> None:
    """Particles next to the exit with a strong pull: all leave; m = 0 and exited = 1 from then
    on (a bandwidth rule keeps its last value once fewer than 2 particles remain)."""
    x0 = np.c_[np.linspace(0.9, 0.97, 5), np.linspace(0.35, 0.45, 5)]
    m, _, e = march(backend, x0=x0, u=value(nt=3, strength=4.0), sigma=0.05, T=0.6, bandwidth=bandwidth)
    assert e[-1] == 1.0 and (np.diff(e) >= 0).all()
    # one particle left at t_1 (its weight just below 1): the rule falls back to the previous bandwidth
    assert 0.8 < e[1] < 0.8 + 1e-6
    assert (m[-1] == 0).all()


PILLAR = (0.425, 0.575, 0.275, 0.475)  # the cells of nodes i = 9..11, j = 6..9 of room()


def test_a_stream_into_a_pillar_is_mirrored_about_the_face_it_hits(backend: str) -> None:
    """σ = 0, one step of the drift of u = −c·x − e·y (bilinear node slopes, smaller next to the
    pillar) from a fan of points below and left of the pillar: every step that would end in the
    pillar ends mirrored about the pillar face its path crosses first (the slab method on the
    whole pillar rectangle, independent of the cell walk), none stays where it was, also those
    ending in another pillar cell than the one they entered (the end-cell rule left them there)."""
    x, y = coords()
    X, Y = np.meshgrid(x, y)
    nodes = np.zeros((NY, NX), np.uint8)
    nodes[6:10, 9:12] = OBSTACLE
    c, e = 0.03, 0.018  # c/dx + e/dy = 0.96: one step for T = 1
    u = np.stack([-c * X - e * Y] * 2)
    rng = np.random.default_rng(3)
    x0 = np.r_[
        rng.uniform([0.39, 0.235], [0.4249, 0.47], (300, 2)), rng.uniform([0.39, 0.235], [0.57, 0.2749], (300, 2))
    ]
    _, k, _, xs, alive = march(backend, positions=True, u=u, x0=x0, nodes=nodes, sigma=0.0, T=1.0, bandwidth=0.1)
    np.testing.assert_array_equal(k, [1])
    geo = ref.Geometry(LO, HI, NX, NY, ("reflect", "reflect"), nodes)
    gx, gy = ref.node_gradients(u[0], geo.d[0], geo.d[1], geo.bc, nodes)
    drift = -np.c_[
        ref.interpolate(gx, 0, geo.d[0], 0, geo.d[1], x0, geo.bc),
        ref.interpolate(gy, 0, geo.d[0], 0, geo.d[1], x0, geo.bc),
    ]
    p = x0 + drift
    # slab method on the pillar rectangle: the segment x0 → p crosses it where t_in < t_out, 0 <= t_in <= 1
    box = np.array(PILLAR).reshape(2, 2)
    with np.errstate(divide="ignore"):
        t0, t1 = (box[:, 0] - x0) / drift, (box[:, 1] - x0) / drift
    t_in, t_out = np.minimum(t0, t1), np.maximum(t0, t1)
    axis = np.argmax(t_in, axis=1)
    rows = np.arange(len(x0))
    enter = t_in[rows, axis]
    hits = (enter < t_out.min(axis=1)) & (enter >= 0) & (enter <= 1)
    face = box[axis, np.where(drift[rows, axis] > 0, 0, 1)]
    expected = p.copy()
    expected[rows[hits], axis[hits]] = 2 * face[hits] - p[hits, axis[hits]]
    assert (hits & (axis == 0)).sum() > 20 and (hits & (axis == 1)).sum() > 20
    # steps ending in another pillar cell than the one they entered (the old end-cell rule let them stay)
    j_in, i_in = geo.cell(x0 + enter[:, None] * drift + 1e-9 * np.sign(drift) * np.eye(2)[axis])
    j_end, i_end = geo.cell(p)
    ends_inside = geo.blocked(p)
    assert (ends_inside & ((i_end != i_in) | (j_end != j_in))).sum() >= 5
    assert (hits & ~ends_inside).sum() >= 2  # paths that clip a corner and end outside are mirrored too
    assert alive.all() and not geo.blocked(xs).any()
    assert np.max(np.abs(xs - expected)) <= 1e-12
    assert (xs != x0).any(axis=1).all()  # nobody stays


def test_the_reference_walk_bounces_at_most_max_bounces_times() -> None:
    """A corridor one cell wide (node column 5, cells [0.225, 0.275]) between obstacle columns: a
    step of 0.31 along x from 0.25 crosses faces at path lengths 0.025, 0.075, ..., 0.275 (six
    reflections) and ends at 0.26; a step of 0.5 would need ten (> MAX_BOUNCES = 8): it stays.
    (The Rust twin has the same cases in its unit tests.)"""
    nodes = np.zeros((NY, NX), np.uint8)
    nodes[:, [4, 6]] = OBSTACLE
    geo = ref.Geometry(LO, HI, NX, NY, ("reflect", "reflect"), nodes)
    x = np.array([[0.25, 0.4], [0.25, 0.4]])
    q, gone, stay = geo.walk(x, np.array([[0.56, 0.4], [0.75, 0.4]]))
    assert ref.MAX_BOUNCES == 8 and not gone.any()
    np.testing.assert_array_equal(stay, [False, True])
    np.testing.assert_allclose(q, [[0.26, 0.4], [0.25, 0.4]], rtol=0, atol=1e-13)

"""The whole-horizon sweeps (HJB backward, FV and particle FP forward): Rust equals the NumPy
reference, mass is conserved, densities stay non-negative, blow-ups are reported, the
per-interval sub-step floors ``min_substeps`` are honoured."""

from __future__ import annotations

import numpy as np
import pytest

from mfg_ensemble import _rust_core
from mfg_ensemble.kernels import fv_forward, hjb_backward, particles_forward, quadrature_weights

from conftest import max_rel, run_python

NX, NT = 81, 21


def grid(bc: str) -> tuple[np.ndarray, float]:
    if bc == "periodic":
        return np.arange(NX) / NX, 1.0 / NX
    x = np.linspace(0.0, 1.0, NX)
    return x, x[1]


def problem(bc: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    x, dx = grid(bc)
    f = np.cos(2 * np.pi * x)[None, :] * np.linspace(1.0, 2.0, NT)[:, None]
    g = 2.0 * np.sin(2 * np.pi * x) ** 2
    m0 = np.exp(-((x - 0.3) ** 2) / 0.005)
    return x, f, g, m0, dx


@pytest.mark.parametrize("bc", ["reflect", "periodic"])
@pytest.mark.parametrize("variant", ["js", "z"])
def test_hjb_rust_matches_numpy(bc: str, variant: str) -> None:
    _, f, g, _, dx = problem(bc)
    rust, k_rust = hjb_backward(f, g, dx=dx, sigma=0.2, T=0.5, bc=bc, variant=variant, backend="rust")
    ref, k_ref = hjb_backward(f, g, dx=dx, sigma=0.2, T=0.5, bc=bc, variant=variant, backend="numpy")
    assert k_rust.dtype == np.int64 and k_rust.shape == (NT - 1,) and (k_rust >= 1).all()
    np.testing.assert_array_equal(k_rust, k_ref)
    assert max_rel(rust, ref) <= 1e-12
    np.testing.assert_array_equal(rust[-1], g)


def test_hjb_with_space_independent_cost_is_its_time_integral(backend: str) -> None:
    """f(t) only, g constant: u(t) = g + ∫_t^T f, and the trapezoid-in-time f is exact for linear f."""
    t = np.linspace(0, 1, NT)
    f = np.repeat((1.0 + 3.0 * t)[:, None], NX, axis=1)
    u, _ = hjb_backward(f, np.full(NX, 0.5), dx=1 / (NX - 1), sigma=0.3, T=1.0, backend=backend)
    exact = 0.5 + (1.0 - t) + 1.5 * (1.0 - t**2)
    np.testing.assert_allclose(u, np.repeat(exact[:, None], NX, axis=1), rtol=1e-12)


@pytest.mark.parametrize("bc", ["reflect", "periodic"])
def test_fv_rust_matches_numpy_and_conserves_mass(bc: str) -> None:
    _, f, g, m0, dx = problem(bc)
    u, _ = hjb_backward(f, g, dx=dx, sigma=0.2, T=0.5, bc=bc)
    rust, k = fv_forward(u, m0, dx=dx, sigma=0.2, T=0.5, bc=bc, backend="rust")
    ref, k_ref = fv_forward(u, m0, dx=dx, sigma=0.2, T=0.5, bc=bc, backend="numpy")
    assert k.dtype == np.int64 and k.shape == (NT - 1,)
    np.testing.assert_array_equal(k, k_ref)
    assert max_rel(rust, ref) <= 1e-12
    w = quadrature_weights(NX, dx, bc)
    mass = rust @ w
    np.testing.assert_allclose(mass, mass[0], rtol=1e-12)
    assert (rust >= 0).all()


@pytest.mark.parametrize("bc", ["reflect", "periodic"])
@pytest.mark.parametrize("method", ["binned", "exact"])
def test_particle_sweep_rust_matches_numpy(bc: str, method: str) -> None:
    x, f, g, _, dx = problem(bc)
    u, _ = hjb_backward(f, g, dx=dx, sigma=0.2, T=0.5, bc=bc)
    x0 = np.random.default_rng(1).uniform(0.2, 0.4, 3000)
    kw = dict(sigma=0.2, T=0.5, lo=0.0, hi=1.0, seed=11, bc=bc, method=method)
    rust, k = particles_forward(x0, u, x, backend="rust", **kw)
    ref, k_ref = particles_forward(x0, u, x, backend="numpy", **kw)
    assert k.dtype == np.int64 and k.shape == (NT - 1,)
    np.testing.assert_array_equal(k, k_ref)
    assert max_rel(rust, ref) <= 1e-11


def test_particle_sweep_is_thread_count_independent() -> None:
    code = """
        import hashlib, numpy as np
        from mfg_ensemble.kernels import hjb_backward, particles_forward
        x = np.linspace(0, 1, 101)
        f = np.tile(np.cos(6 * x), (11, 1))
        u, _ = hjb_backward(f, (x - 0.8) ** 2, dx=0.01, sigma=0.3, T=1.0)
        x0 = np.random.default_rng(2).uniform(0, 0.5, 40_000)
        m, _ = particles_forward(x0, u, x, sigma=0.3, T=1.0, lo=0, hi=1, seed=5)
        print(hashlib.sha256(m.tobytes()).hexdigest())
    """
    assert run_python(code, {"RAYON_NUM_THREADS": "1"}) == run_python(code, {"RAYON_NUM_THREADS": "2"})


def test_hjb_is_thread_count_independent() -> None:
    """A grid large enough for the parallel WENO chunks, both schemes, both conditions."""
    code = """
        import hashlib, numpy as np
        from mfg_ensemble.kernels import hjb_backward
        h = hashlib.sha256()
        for bc in ("reflect", "periodic"):
            for scheme in ("imex", "rk3"):
                x = np.arange(6000) / 6000
                f = np.tile(np.cos(4 * np.pi * x), (3, 1))
                g = 0.1 * np.cos(2 * np.pi * x)
                u, k = hjb_backward(f, g, dx=x[1], sigma=0.05, T=1e-3, bc=bc, scheme=scheme)
                h.update(u.tobytes() + k.tobytes())
        print(h.hexdigest())
    """
    assert run_python(code, {"RAYON_NUM_THREADS": "1"}) == run_python(code, {"RAYON_NUM_THREADS": "2"})


@pytest.mark.parametrize("bc", ["reflect", "periodic"])
def test_hjb_rk3_scheme_rust_matches_numpy(bc: str) -> None:
    _, f, g, _, dx = problem(bc)
    rust, k_rust = hjb_backward(f, g, dx=dx, sigma=0.2, T=0.5, bc=bc, scheme="rk3", backend="rust")
    ref, k_ref = hjb_backward(f, g, dx=dx, sigma=0.2, T=0.5, bc=bc, scheme="rk3", backend="numpy")
    np.testing.assert_array_equal(k_rust, k_ref)
    assert max_rel(rust, ref) <= 1e-12


def sweep_call(kind: str, bc: str = "reflect"):
    """One sweep of the test problem as a function of (min_substeps, backend)."""
    x, f, g, m0, dx = problem(bc)
    if kind == "hjb":
        return lambda floor, backend: hjb_backward(
            f, g, dx=dx, sigma=0.2, T=0.5, bc=bc, min_substeps=floor, backend=backend
        )
    u, _ = hjb_backward(f, g, dx=dx, sigma=0.2, T=0.5, bc=bc)
    if kind == "fv":
        return lambda floor, backend: fv_forward(
            u, m0, dx=dx, sigma=0.2, T=0.5, bc=bc, min_substeps=floor, backend=backend
        )
    x0 = np.random.default_rng(1).uniform(0.2, 0.4, 3000)
    return lambda floor, backend: particles_forward(
        x0, u, x, sigma=0.2, T=0.5, lo=0.0, hi=1.0, seed=11, bc=bc, min_substeps=floor, backend=backend
    )


@pytest.mark.parametrize("kind", ["hjb", "fv", "particles"])
def test_min_substeps_is_honoured(kind: str, backend: str) -> None:
    call = sweep_call(kind)
    values, free = call(None, backend)
    ones, k_ones = call(np.ones(NT - 1, dtype=np.int64), backend)
    # a floor of ones is no floor
    np.testing.assert_array_equal(k_ones, free)
    np.testing.assert_array_equal(ones, values)
    # a floor above the free count on every other interval, ones elsewhere (as a list)
    floor = [int(2 * k + 3) if j % 2 == 0 else 1 for j, k in enumerate(free)]
    floored, k = call(floor, backend)
    assert k.dtype == np.int64 and k.shape == (NT - 1,)
    assert (k >= floor).all()
    np.testing.assert_array_equal(k[::2], floor[::2])
    np.testing.assert_array_equal(k[1::2], free[1::2])
    assert np.isfinite(floored).all() and not np.array_equal(floored, values)
    # passing the counts used back as floors reproduces the sweep exactly
    again, k_again = call(k, backend)
    np.testing.assert_array_equal(k_again, k)
    np.testing.assert_array_equal(again, floored)


@pytest.mark.parametrize("kind", ["hjb", "fv", "particles"])
@pytest.mark.parametrize("bc", ["reflect", "periodic"])
def test_rust_matches_numpy_with_floors(kind: str, bc: str) -> None:
    call = sweep_call(kind, bc)
    _, free = call(None, "rust")
    floor = free + np.arange(NT - 1) % 3
    rust, k_rust = call(floor, "rust")
    ref, k_ref = call(floor, "numpy")
    np.testing.assert_array_equal(k_rust, k_ref)
    assert max_rel(rust, ref) <= (1e-11 if kind == "particles" else 1e-12)


def test_hjb_restarts_an_interval_whose_slopes_steepen(backend: str) -> None:
    """g = 0 and σ = 0: no step limit at the start of the last interval, so the floor (4) is
    taken; the steep running cost gives a CFL number far above 2·cfl after the first sub-step,
    and the interval must be redone with more sub-steps (not blow up)."""
    nx, nt = 21, 3
    x = np.linspace(0.0, 1.0, nx)
    f = np.tile(50.0 * np.cos(np.pi * x), (nt, 1))
    kw = dict(dx=x[1], sigma=0.0, T=1.0)
    u, k = hjb_backward(f, np.zeros(nx), min_substeps=[4, 4], backend=backend, **kw)
    assert k[-1] > 8, k
    # the same answer as a finely stepped solve (Rust: fast), and the same in both backends
    fine, _ = hjb_backward(f, np.zeros(nx), min_substeps=[20_000, 20_000], backend="rust", **kw)
    assert max_rel(u, fine) < 1e-3
    rust, k_rust = hjb_backward(f, np.zeros(nx), min_substeps=[4, 4], backend="rust", **kw)
    np.testing.assert_array_equal(k, k_rust)
    assert max_rel(rust, u) <= 1e-12


def test_hjb_checks_the_last_sub_step_of_an_interval(backend: str) -> None:
    """g = 0, σ = 0 and no floor: one sub-step looks allowed from the flat start, but the
    slopes it produces break the CFL bound: the end-of-interval check must redo it."""
    nx, nt = 21, 3
    x = np.linspace(0.0, 1.0, nx)
    f = np.tile(50.0 * np.cos(np.pi * x), (nt, 1))
    kw = dict(dx=x[1], sigma=0.0, T=1.0)
    u, k = hjb_backward(f, np.zeros(nx), backend=backend, **kw)
    assert np.isfinite(u).all() and (k > 1).all(), k
    fine, _ = hjb_backward(f, np.zeros(nx), min_substeps=[20_000, 20_000], backend="rust", **kw)
    assert max_rel(u, fine) < 1e-3


BAD_FLOORS = [
    (np.ones(NT - 2, dtype=np.int64), r"min_substeps must have nt - 1 = 20 values"),
    (np.ones((NT - 1, 1), dtype=np.int64), r"min_substeps must have nt - 1 = 20 values"),
    (
        np.r_[np.ones(NT - 2, dtype=np.int64), -1],
        r"min_substeps must be integers in \[1, 1000000\], min_substeps\[19\] = -1",
    ),
    (np.r_[0, np.ones(NT - 2, dtype=np.int64)], r"min_substeps\[0\] = 0"),
    (np.full(NT - 1, 10**7), r"min_substeps must be integers in \[1, 1000000\]"),
    (np.full(NT - 1, 2.0), r"min_substeps must be None or an array of integers"),
    (np.full(NT - 1, True), r"min_substeps must be None or an array of integers"),
    ("1" * (NT - 1), r"min_substeps must be None or an array of integers"),
]


@pytest.mark.parametrize("kind", ["hjb", "fv", "particles"])
@pytest.mark.parametrize("floor,message", BAD_FLOORS, ids=range(len(BAD_FLOORS)))
def test_bad_min_substeps(kind: str, floor, message: str, backend: str) -> None:
    with pytest.raises(ValueError, match=message):
        sweep_call(kind)(floor, backend)


@pytest.mark.parametrize(
    "floor,message",
    [
        ([1] * (NT - 2), r"min_substeps must have nt - 1 = 20 values"),
        ([1] * (NT - 2) + [-3], r"min_substeps\[19\] = -3"),
        ([1] * (NT - 2) + [0], r"min_substeps\[19\] = 0"),
        ([1.5] * (NT - 1), r"min_substeps must be None or a sequence of integers"),
        (np.full(NT - 1, 2.0), r"min_substeps must be None or a sequence of integers"),
        ("abc", r"min_substeps must be None or a sequence of integers"),
    ],
)
def test_extension_refuses_bad_min_substeps_with_value_error(floor, message: str) -> None:
    x, f, g, m0, dx = problem("reflect")
    u = np.zeros((NT, NX))
    calls = [
        lambda: _rust_core.hjb_backward(f, g, dx=dx, sigma=0.2, T=0.5, min_substeps=floor),
        lambda: _rust_core.fv_forward(u, m0, dx=dx, sigma=0.2, T=0.5, min_substeps=floor),
        lambda: _rust_core.particles_forward(
            x[10:20], u, x, sigma=0.2, T=0.5, lo=0.0, hi=1.0, seed=1, min_substeps=floor
        ),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=message):
            call()


def test_blow_up_is_a_floating_point_error(backend: str) -> None:
    f = np.zeros((3, 11))
    g = 1e200 * np.linspace(0, 1, 11) ** 2
    with pytest.raises(FloatingPointError):
        hjb_backward(f, g, dx=0.1, sigma=0.1, T=1.0, backend=backend)


@pytest.mark.parametrize(
    "call,message",
    [
        (
            lambda: hjb_backward(np.zeros((1, 11)), np.zeros(11), dx=0.1, sigma=0.1, T=1),
            "f needs at least 2 output times",
        ),
        (lambda: hjb_backward(np.zeros((3, 10)), np.zeros(11), dx=0.1, sigma=0.1, T=1), "f must have 11 columns"),
        (
            lambda: hjb_backward(np.zeros((3, 11)), np.zeros(11), dx=0.1, sigma=0.1, T=1, cfl=1.5),
            r"cfl must be in \(0, 1\]",
        ),
        (lambda: hjb_backward(np.zeros((3, 11)), np.zeros(11), dx=0.1, sigma=-1, T=1), "sigma must be finite and >= 0"),
        (lambda: fv_forward(np.zeros((3, 11)), -np.ones(11), dx=0.1, sigma=0.1, T=1), "m0 must be >= 0"),
        (lambda: fv_forward(np.zeros((3, 11)), np.ones(11), dx=0.1, sigma=0.1, T=0), "T must be finite and > 0"),
        (
            lambda: particles_forward([], np.zeros((3, 11)), np.linspace(0, 1, 11), sigma=0.1, T=1, lo=0, hi=1, seed=0),
            "x0 must not be empty",
        ),
        (
            lambda: particles_forward(
                [2.0], np.zeros((3, 11)), np.linspace(0, 1, 11), sigma=0.1, T=1, lo=0, hi=1, seed=0
            ),
            r"x0 must lie in \[lo, hi\]",
        ),
    ],
)
def test_bad_sweep_input(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()

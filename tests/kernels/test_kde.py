"""KDE: Rust equals the NumPy reference, the exact sum equals scipy's gaussian_kde, binning
is close to exact, reflection keeps all the mass and the result is thread-count independent."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import gaussian_kde

from mfg_ensemble.kernels import kde
from mfg_ensemble.kernels.reference.kde import trapezoid

from conftest import max_rel, run_python


def samples(n: int, seed: int = 1) -> np.ndarray:
    """Normal samples folded into [-1, 1] (a density with mass near both walls)."""
    z = np.random.default_rng(seed).normal(0.2, 0.45, n)
    z = np.abs(z + 1.0) - 1.0  # reflect at -1
    return 1.0 - np.abs(1.0 - z)  # reflect at +1


GRID = np.linspace(-1.0, 1.0, 201)


@pytest.mark.parametrize("method", ["exact", "binned"])
@pytest.mark.parametrize("bc", ["reflect", "none"])
@pytest.mark.parametrize(
    "particles",
    [samples(5000), samples(1), np.full(50, 0.25), np.array([-1.0, 1.0, 0.0]), samples(100_000, 4)],
    ids=["5000", "one", "all_equal", "on_walls", "1e5"],
)
def test_rust_matches_numpy_reference(particles: np.ndarray, method: str, bc: str) -> None:
    rust = kde(particles, GRID, 0.07, method=method, bc=bc, backend="rust")
    ref = kde(particles, GRID, 0.07, method=method, bc=bc, backend="numpy")
    assert max_rel(rust, ref) <= 1e-12


@pytest.mark.parametrize("n", [300, 20_000])
def test_exact_equals_scipy_gaussian_kde(n: int, backend: str) -> None:
    x = np.random.default_rng(2).normal(0.0, 1.0, n)
    reference = gaussian_kde(x)  # scott's rule
    grid = np.linspace(-6, 6, 301)
    ours = kde(x, grid, "scott", method="exact", bc="none", backend=backend)
    theirs = reference(grid)
    bulk = theirs > 1e-3 * theirs.max()  # away from the far tails, where 8h truncation shows
    np.testing.assert_allclose(ours[bulk], theirs[bulk], rtol=1e-10)
    ours_s = kde(x, grid, "silverman", bc="none", backend=backend)
    theirs_s = gaussian_kde(x, bw_method="silverman")(grid)
    np.testing.assert_allclose(ours_s[bulk], theirs_s[bulk], rtol=1e-10)


def test_binned_is_within_1e3_of_exact_on_1e5_samples(backend: str) -> None:
    x = samples(100_000, 3)
    grid = np.linspace(-1, 1, 1000)
    exact = kde(x, grid, "scott", method="exact", backend=backend)
    binned = kde(x, grid, "scott", method="binned", backend=backend)
    assert np.max(np.abs(binned - exact) / exact) <= 1e-3


@pytest.mark.parametrize("method", ["exact", "binned"])
@pytest.mark.parametrize("h", [0.005, 0.05, 0.4, 3.0])
def test_reflection_keeps_unit_mass(method: str, h: float, backend: str) -> None:
    m = kde(samples(3000), GRID, h, method=method, backend=backend)
    assert abs(trapezoid(m, GRID) - 1.0) <= 1e-12
    assert (m >= 0).all()


def test_reflection_removes_the_boundary_bias(backend: str) -> None:
    """Uniform particles on [0, 1]: with reflection the density is ≈1 up to the walls;
    without it, it falls to ≈1/2 at the walls (half the kernel mass is lost)."""
    x = (np.arange(20_000) + 0.5) / 20_000
    grid = np.linspace(0, 1, 101)
    reflected = kde(x, grid, 0.05, bc="reflect", backend=backend)
    plain = kde(x, grid, 0.05, bc="none", backend=backend)
    np.testing.assert_allclose(reflected, 1.0, atol=2e-3)
    assert abs(plain[0] - 0.5) < 2e-3 and abs(plain[-1] - 0.5) < 2e-3


def test_non_uniform_grid_works_for_exact(backend: str) -> None:
    grid = np.sort(np.r_[-1.0, 1.0, np.random.default_rng(5).uniform(-1, 1, 150)])
    m = kde(samples(2000), grid, 0.1, backend=backend)
    assert abs(trapezoid(m, grid) - 1.0) <= 1e-12


def test_bit_identical_for_any_number_of_threads() -> None:
    code = """
        import hashlib, numpy as np
        from mfg_ensemble.kernels import kde
        x = np.random.default_rng(9).uniform(-1, 1, 300_000)
        g = np.linspace(-1, 1, 777)
        h = hashlib.sha256()
        for method in ("exact", "binned"):
            h.update(kde(x, g, 0.03, method=method, backend="rust").tobytes())
        print(h.hexdigest())
    """
    one = run_python(code, {"RAYON_NUM_THREADS": "1"})
    two = run_python(code, {"RAYON_NUM_THREADS": "2"})
    assert one == two


PERIODIC_GRID = np.arange(160) / 160.0  # one period of [0, 1), no end node


@pytest.mark.parametrize("method", ["exact", "binned"])
def test_periodic_rust_matches_numpy_and_has_unit_mass(method: str) -> None:
    x = np.random.default_rng(6).uniform(0.0, 1.0, 4000) ** 3  # crowded near 0: wraps to 1
    rust = kde(x, PERIODIC_GRID, 0.04, method=method, bc="periodic", backend="rust")
    ref = kde(x, PERIODIC_GRID, 0.04, method=method, bc="periodic", backend="numpy")
    assert max_rel(rust, ref) <= 1e-12
    assert abs(rust.sum() / 160.0 - 1.0) <= 1e-12


def test_periodic_density_is_translation_invariant(backend: str) -> None:
    """Shifting every particle by whole cells (wrapping) shifts the density by as many nodes."""
    x = np.random.default_rng(8).uniform(0.0, 1.0, 3000)
    shifted = np.mod(x + 37 / 160.0, 1.0)
    a = kde(x, PERIODIC_GRID, 0.05, bc="periodic", backend=backend)
    b = kde(shifted, PERIODIC_GRID, 0.05, bc="periodic", backend=backend)
    np.testing.assert_allclose(np.roll(a, 37), b, rtol=1e-9)

"""Particles: the shared Philox stream, Rust = NumPy to rounding, thread-count independence,
walls that hold, and the statistics of pure diffusion."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from mfg_ensemble._rust_core import philox_normals
from mfg_ensemble.kernels import evolve_particles
from mfg_ensemble.kernels.reference import rng as philox

from conftest import run_python

U64 = np.uint64


def test_numpy_philox_is_numpy_random_philox() -> None:
    """Our vectorised Philox4x64-10 gives the words of numpy.random.Philox."""
    gen = np.random.default_rng(3)
    for _ in range(20):
        ctr = [int(c) for c in gen.integers(1, 2**63, 4, dtype=np.int64)]
        key = [int(k) for k in gen.integers(0, 2**63, 2, dtype=np.int64)]
        # numpy.random.Philox adds one to the counter before it makes a block
        as_int = lambda words: sum(w << (64 * i) for i, w in enumerate(words))  # noqa: E731
        bitgen = np.random.Philox(counter=as_int([ctr[0] - 1, *ctr[1:]]), key=as_int(key))
        expected = bitgen.random_raw(4)
        ours = philox.philox4x64_10(np.array(ctr, dtype=U64)[:, None], (key[0], key[1]))[:, 0]
        np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("start,n", [(0, 1), (0, 4), (3, 10), (5, 100_001)])
def test_rust_normals_equal_numpy_normals_to_rounding(start: int, n: int) -> None:
    ours = philox.normals(11, 4, 0, n, start)
    rust = philox_normals(11, 4, 0, n, start)
    np.testing.assert_allclose(rust, ours, rtol=1e-13, atol=1e-14)


def test_normals_are_standard_normal() -> None:
    z = philox_normals(2026, 0, 0, 200_000)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(z.mean()) < 5 / np.sqrt(z.size)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / z.size)


@pytest.mark.parametrize("bc", ["reflect", "periodic"])
@pytest.mark.parametrize("n", [1, 3, 4, 5, 8192 * 2 + 3, 100_000])
def test_rust_matches_numpy_reference(n: int, bc: str) -> None:
    x = np.random.default_rng(n).uniform(-1, 1, n)
    args = dict(lo=-1.0, hi=1.0, seed=77, step=5, bc=bc)
    rust = evolve_particles(x, -2.0 * x, 0.01, 0.8, backend="rust", **args)
    ref = evolve_particles(x, -2.0 * x, 0.01, 0.8, backend="numpy", **args)
    np.testing.assert_allclose(rust, ref, rtol=0, atol=1e-13)


def test_noise_depends_on_seed_step_and_index_only(backend: str) -> None:
    x = np.zeros(10)
    a = evolve_particles(x, 0.0, 1e-4, 1.0, lo=-1, hi=1, seed=1, step=2, backend=backend)
    b = evolve_particles(x[:3], 0.0, 1e-4, 1.0, lo=-1, hi=1, seed=1, step=2, backend=backend)
    c = evolve_particles(x, 0.0, 1e-4, 1.0, lo=-1, hi=1, seed=1, step=3, backend=backend)
    d = evolve_particles(x, 0.0, 1e-4, 1.0, lo=-1, hi=1, seed=2, step=2, backend=backend)
    np.testing.assert_array_equal(a[:3], b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


def test_bit_identical_for_any_number_of_threads() -> None:
    code = """
        import hashlib, numpy as np
        from mfg_ensemble.kernels import evolve_particles
        x = np.random.default_rng(0).uniform(-1, 1, 250_001)
        for step in range(5):
            x = evolve_particles(x, -x, 0.01, 0.6, lo=-1, hi=1, seed=123, step=step, backend="rust")
        print(hashlib.sha256(x.tobytes()).hexdigest())
    """
    assert run_python(code, {"RAYON_NUM_THREADS": "1"}) == run_python(code, {"RAYON_NUM_THREADS": "2"})


@pytest.mark.parametrize("bc", ["reflect", "periodic"])
def test_particles_never_leave_the_domain(bc: str, backend: str) -> None:
    x = np.r_[np.full(1000, -1.0), np.full(1000, 1.0), np.linspace(-1, 1, 1000)]
    for step in range(20):
        x = evolve_particles(
            x, 50.0 * np.sign(x + 1e-3), 0.05, 5.0, lo=-1, hi=1, seed=5, step=step, bc=bc, backend=backend
        )
        assert x.min() >= -1.0 and x.max() <= 1.0


def test_deterministic_drift_reflects_at_the_wall(backend: str) -> None:
    out = evolve_particles([0.95, -0.5, 0.0], [1.0, -1.0, 0.0], 0.1, 0.0, lo=-1, hi=1, seed=0, step=0, backend=backend)
    np.testing.assert_allclose(out, [0.95, -0.6, 0.0], atol=1e-15)
    wrapped = evolve_particles([0.95], [1.0], 0.1, 0.0, lo=-1, hi=1, seed=0, step=0, bc="periodic", backend=backend)
    np.testing.assert_allclose(wrapped, [-0.95], atol=1e-15)


def test_pure_diffusion_variance_is_sigma_squared_t(backend: str) -> None:
    n, sigma, dt, steps = 100_000, 0.7, 2e-3, 50
    x = np.zeros(n)
    for step in range(steps):
        x = evolve_particles(x, 0.0, dt, sigma, lo=-50, hi=50, seed=8, step=step, backend=backend)
    var = sigma**2 * dt * steps
    assert abs(x.mean()) < 5 * np.sqrt(var / n)
    assert abs(x.var() / var - 1) < 5 * np.sqrt(2 / n)
    assert stats.kstest(x / np.sqrt(var), "norm").pvalue > 1e-3


def test_reflected_diffusion_tends_to_uniform(backend: str) -> None:
    x = np.full(50_000, 0.9)
    for step in range(200):
        x = evolve_particles(x, 0.0, 0.01, 1.0, lo=0, hi=1, seed=3, step=step, backend=backend)
    assert stats.kstest(x, "uniform").pvalue > 1e-3

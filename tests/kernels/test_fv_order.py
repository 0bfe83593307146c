"""The second-order finite-volume Fokker–Planck scheme ("muscl2", the default of
:func:`~mfg_ensemble.kernels.fv_forward`): its order measured by grid refinement against an
exact solution, mass to rounding, positivity on steep and vacuum data, sub-steps set by the
drift alone, Rust ≡ NumPy, thread-count independence.

The exact solution: the Ornstein–Uhlenbeck drift of u(x) = a(x − c)²/2, α = −a(x − c), keeps a
Gaussian m0 Gaussian with mean c + (μ0 − c)e^{−at} and variance v0 e^{−2at} + (D/a)(1 − e^{−2at}),
D = σ²/2. The face drifts −(u_{i+1} − u_i)/dx of a quadratic u are exact at the faces, and the
walls (or the wrap-around face) see a density below 1e-9 of its peak, so the discrete problem
is the continuous one. Space and time are refined together: nt = 11 output rows, sub-steps
from the drift CFL (δ ∝ dx).

Measured L1 errors at T = 0.5 (nx = 101, 201, 401, 801; orders per refinement):

* σ = 0.2, a = 4, reflect:   1.78e-3, 4.16e-4, 1.00e-4, 2.45e-5  (2.09, 2.05, 2.03)
* σ = 0.05, a = 2, reflect:  9.10e-3, 2.18e-3, 5.30e-4, 1.31e-4  (2.06, 2.04, 2.02)
* σ = 0.2, a = 4, periodic:  1.74e-3, 4.12e-4, 9.97e-5, 2.45e-5  (2.08, 2.05, 2.03)
* σ = 0.05, a = 2, periodic: 8.99e-3, 2.15e-3, 5.27e-4, 1.31e-4  (2.06, 2.03, 2.01)
* "upwind1" (the former first-order scheme), reflect: σ = 0.2: 4.37e-2, 2.24e-2, 1.14e-2,
  5.73e-3 (0.96, 0.98, 0.99); σ = 0.05: 9.62e-2, 5.14e-2, 2.69e-2, 1.39e-2 (0.91, 0.93,
  0.95) — 11× the "muscl2" error at nx = 101, 106× at nx = 801.
"""

from __future__ import annotations

import numpy as np
import pytest

from mfg_ensemble.kernels import fv_forward, quadrature_weights
from mfg_ensemble.kernels.reference import fv as _fv

from conftest import max_rel, run_python

T = 0.5
C, MU0, SD0 = 0.5, 0.4, 0.06
GRIDS = (101, 201, 401, 801)


def gaussian(x: np.ndarray, t: float, a: float, sigma: float) -> np.ndarray:
    mean = C + (MU0 - C) * np.exp(-a * t)
    var = SD0**2 * np.exp(-2 * a * t) + sigma**2 / (2 * a) * (1 - np.exp(-2 * a * t))
    return np.exp(-((x - mean) ** 2) / (2 * var)) / np.sqrt(2 * np.pi * var)


def nodes(nx: int, bc: str) -> tuple[np.ndarray, float]:
    if bc == "periodic":
        return np.arange(nx) / nx, 1.0 / nx
    x = np.linspace(0.0, 1.0, nx)
    return x, x[1]


def ou_error(nx: int, bc: str, sigma: float, a: float, scheme: str = "muscl2") -> float:
    """L1 error at T of the march of the OU problem on nx nodes."""
    x, dx = nodes(nx, bc)
    nt = 11
    u = np.tile(a * (x - C) ** 2 / 2, (nt, 1))
    m, _ = fv_forward(u, gaussian(x, 0.0, a, sigma), dx=dx, sigma=sigma, T=T, bc=bc, scheme=scheme, backend="rust")
    return float(np.abs(m[-1] - gaussian(x, T, a, sigma)) @ quadrature_weights(nx, dx, bc))


@pytest.mark.parametrize("bc", ["reflect", "periodic"])
@pytest.mark.parametrize("sigma,a", [(0.2, 4.0), (0.05, 2.0)])
def test_muscl2_is_second_order_on_the_ornstein_uhlenbeck_gaussian(bc: str, sigma: float, a: float) -> None:
    x, _ = nodes(GRIDS[0], bc)
    walls = gaussian(np.array([x[0], 1.0]), T, a, sigma)
    assert walls.max() < 1e-9 * gaussian(np.array([C]), T, a, sigma)[0]  # the walls do not matter
    errors = np.array([ou_error(nx, bc, sigma, a) for nx in GRIDS])
    orders = np.log2(errors[:-1] / errors[1:])
    assert (orders >= 1.8).all(), (errors, orders)
    assert errors[-1] < 2e-4, errors


def test_upwind1_stays_available_and_first_order() -> None:
    errors = np.array([ou_error(nx, "reflect", 0.2, 4.0, "upwind1") for nx in GRIDS[:3]])
    orders = np.log2(errors[:-1] / errors[1:])
    assert ((orders > 0.8) & (orders < 1.2)).all(), (errors, orders)
    assert ou_error(GRIDS[0], "reflect", 0.2, 4.0) < 0.2 * errors[0]


def vacuum_case(bc: str, sigma: float) -> dict:
    """A block of mass next to vacuum, pushed by a strong, time-dependent, converging and
    diverging drift (steep fronts, exact zeros in m0)."""
    nx, nt = 81, 11
    x, dx = nodes(nx, bc)
    m0 = np.where((x > 0.2) & (x < 0.35), 5.0, 0.0)
    u = np.tile(-8 * np.cos(2 * np.pi * x), (nt, 1)) * np.linspace(1.0, 3.0, nt)[:, None]
    return dict(u=u, m0=m0, dx=dx, sigma=sigma, T=0.3, bc=bc)


@pytest.mark.parametrize("bc", ["reflect", "periodic"])
@pytest.mark.parametrize("sigma", [0.0, 0.05, 1.0])
def test_steep_vacuum_data_stay_non_negative_with_mass_to_rounding(bc: str, sigma: float, backend: str) -> None:
    case = vacuum_case(bc, sigma)
    m, _ = fv_forward(**case, backend=backend)
    assert (m >= 0).all()
    mass = m @ quadrature_weights(m.shape[1], case["dx"], bc)
    # ~1600 sub-steps of 4 tridiagonal solves each: rounding accumulates to ~2e-13
    np.testing.assert_allclose(mass, mass[0], rtol=1e-12)


@pytest.mark.parametrize("bc", ["reflect", "periodic"])
@pytest.mark.parametrize("sigma", [0.0, 0.05, 1.0])
def test_rust_matches_numpy_on_steep_data(bc: str, sigma: float) -> None:
    case = vacuum_case(bc, sigma)
    rust, k_rust = fv_forward(**case, backend="rust")
    ref, k_ref = fv_forward(**case, backend="numpy")
    np.testing.assert_array_equal(k_rust, k_ref)
    assert max_rel(rust, ref) <= 1e-12


def test_the_substeps_do_not_depend_on_the_diffusion() -> None:
    """Implicit diffusion: the same sub-steps for σ = 0 and σ = 4 (the drift CFL), where the
    explicit "upwind1" takes 1 + (2D/dx)/(2 max|α|) ≈ 5 times more; with no drift at all, one
    sub-step per interval."""
    case = vacuum_case("reflect", 0.0)
    _, k0 = fv_forward(**case)
    _, k4 = fv_forward(**{**case, "sigma": 4.0})
    np.testing.assert_array_equal(k0, k4)
    _, k_explicit = fv_forward(**{**case, "sigma": 4.0}, scheme="upwind1")
    assert (k_explicit > 4 * k4).all()
    _, k_still = fv_forward(**{**case, "u": np.zeros_like(case["u"]), "sigma": 4.0})
    assert (k_still == 1).all()


def test_sdirk2_alone_can_go_negative_and_the_fallback_step_cannot() -> None:
    """Why the a-posteriori fallback exists (NumPy reference; Rust has the same unit test): a
    spike under stiff diffusion (τD/dx² = 20) goes negative under one SDIRK2 step, but not
    under the first-order IMEX step; both conserve mass."""
    for bc in ("reflect", "periodic"):
        nx, dx, diffusion, dt = 21, 0.05, 0.5, 0.1
        w = quadrature_weights(nx, dx, bc)
        m = np.zeros(nx)
        m[10] = 1 / dx
        a = np.where(np.arange(nx if bc == "periodic" else nx - 1) < 10, 0.2, -0.2)
        solver = _fv.Tridiagonal(w, _fv.GAMMA * dt * diffusion / dx, bc)
        stiff = _fv.sdirk2(m, w, solver, (1 - _fv.GAMMA) * dt * diffusion / dx, bc)
        assert stiff[10] < 0
        safe = _fv.first_order_imex_step(m, a, dt, w, _fv.Tridiagonal(w, dt * diffusion / dx, bc), bc)
        assert (safe >= 0).all()
        for out in (stiff, safe):
            assert abs(out @ w - 1.0) < 1e-13


def test_bad_scheme_is_refused(backend: str) -> None:
    with pytest.raises(ValueError, match="scheme must be one of 'muscl2', 'upwind1'"):
        fv_forward(np.zeros((3, 11)), np.ones(11), dx=0.1, sigma=0.1, T=1, scheme="weno", backend=backend)


def test_fv_is_thread_count_independent() -> None:
    code = """
        import hashlib, numpy as np
        from mfg_ensemble.kernels import fv_forward
        for bc in ("reflect", "periodic"):
            x = np.linspace(0, 1, 401)
            u = np.tile(-5 * np.cos(6 * x), (11, 1))
            m, _ = fv_forward(u, np.exp(-(x - 0.4) ** 2 / 0.01), dx=x[1], sigma=0.3, T=1.0, bc=bc)
            print(hashlib.sha256(m.tobytes()).hexdigest())
    """
    assert run_python(code, {"RAYON_NUM_THREADS": "1"}) == run_python(code, {"RAYON_NUM_THREADS": "2"})

"""Bad input gets a clear error that names the argument, from both backends; the raw
extension refuses bad input with ValueError, never a panic."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from mfg_ensemble import _rust_core
from mfg_ensemble.kernels import evolve_particles, kde, smoothness_indicators, weno5_derivatives

U = np.sin(np.linspace(0, 3, 20))
X = np.linspace(-0.5, 0.5, 10)
G = np.linspace(-1, 1, 11)
NAN_U = np.r_[U[:4], np.nan, U[5:]]


def em(**over: Any) -> Callable[..., Any]:
    args: dict[str, Any] = dict(x=X, drift=-X, dt=0.01, sigma=0.2, lo=-1.0, hi=1.0, seed=1, step=0)
    args.update(over)
    return lambda backend: evolve_particles(backend=backend, **args)


def kd(**over: Any) -> Callable[..., Any]:
    args: dict[str, Any] = dict(particles=X, grid=G, bandwidth=0.1)
    args.update(over)
    return lambda backend: kde(backend=backend, **args)


def wd(u: Any = U, dx: Any = 0.1, **kw: Any) -> Callable[..., Any]:
    return lambda backend: weno5_derivatives(u, dx, backend=backend, **kw)


CASES: list[tuple[str, Callable[..., Any], type[Exception], str]] = [
    # WENO / smoothness indicators
    ("weno u 2-D", wd(u=np.ones((4, 8))), ValueError, r"u must be 1-dimensional"),
    ("weno u complex", wd(u=U + 0j), TypeError, r"u must be a real float64 array"),
    ("weno u strings", wd(u=["a"] * 8), TypeError, r"u must be a real"),
    ("weno too short", wd(u=U[:5]), ValueError, r"u needs at least 6 points"),
    ("weno dx zero", wd(dx=0.0), ValueError, r"dx must be finite and > 0"),
    ("weno dx negative", wd(dx=-1.0), ValueError, r"dx must be finite and > 0"),
    ("weno dx nan", wd(dx=float("nan")), ValueError, r"dx must be finite"),
    ("weno dx string", wd(dx="0.1"), TypeError, r"dx must be a real number"),
    ("weno eps zero", wd(eps=0.0), ValueError, r"eps must be finite and > 0"),
    ("weno nan in u", wd(u=NAN_U), ValueError, r"u contains NaN or inf \(first at index 4"),
    ("weno inf in u", wd(u=np.r_[np.inf, U]), ValueError, r"u contains NaN or inf \(first at index 0"),
    ("weno bad bc", wd(bc="wall"), ValueError, r"bc must be one of 'periodic', 'reflect'"),
    ("weno bad variant", wd(variant="weno7"), ValueError, r"variant must be one of 'js', 'z'"),
    ("beta too short", lambda b: smoothness_indicators(U[:4], backend=b), ValueError, r"u needs at least 5"),
    ("beta nan", lambda b: smoothness_indicators(NAN_U, backend=b), ValueError, r"u contains NaN"),
    # KDE
    ("kde empty", kd(particles=[]), ValueError, r"particles must not be empty"),
    ("kde particles 2-D", kd(particles=np.ones((2, 2))), ValueError, r"particles must be 1-dimensional"),
    ("kde grid bool", kd(grid=G > 0), TypeError, r"grid must be a real float64 array"),
    ("kde grid short", kd(grid=[0.0]), ValueError, r"grid needs at least 2 points"),
    ("kde grid not increasing", kd(grid=G[::-1]), ValueError, r"grid must be strictly increasing"),
    ("kde grid nan", kd(grid=np.r_[G[:3], np.nan, G[4:]]), ValueError, r"grid contains NaN or inf \(first at index 3"),
    ("kde bandwidth zero", kd(bandwidth=0.0), ValueError, r"bandwidth must be finite and > 0"),
    ("kde bandwidth negative", kd(bandwidth=-0.1), ValueError, r"bandwidth must be finite and > 0"),
    ("kde bandwidth inf", kd(bandwidth=np.inf), ValueError, r"bandwidth must be finite"),
    ("kde bandwidth rule", kd(bandwidth="wide"), ValueError, r"bandwidth must be one of 'scott', 'silverman'"),
    (
        "kde rule one particle",
        kd(particles=[0.1], bandwidth="scott"),
        ValueError,
        r"bandwidth='scott' needs at least 2 distinct",
    ),
    ("kde rule nan particle", kd(particles=[0.1, np.nan], bandwidth="scott"), ValueError, r"particles contains NaN"),
    (
        "kde nan particle",
        kd(particles=np.r_[X, np.nan]),
        ValueError,
        r"particles contains NaN or inf \(first at index 10",
    ),
    ("kde particle outside", kd(particles=[0.0, 1.5]), ValueError, r"particles must lie in \[grid\[0\], grid\[-1\]\]"),
    ("kde binned outside", kd(particles=[0.0, 1.5], bc="none", method="binned"), ValueError, r"particles must lie in"),
    (
        "kde binned non-uniform",
        kd(grid=[-1.0, 0.0, 0.1, 1.0], method="binned"),
        ValueError,
        r"grid must be uniformly spaced",
    ),
    ("kde bad method", kd(method="fft"), ValueError, r"method must be one of 'exact', 'binned'"),
    ("kde bad bc", kd(bc="wall"), ValueError, r"bc must be one of 'reflect', 'periodic', 'none'"),
    (
        "kde periodic non-uniform",
        kd(grid=[-1.0, 0.0, 0.1, 1.0], bc="periodic"),
        ValueError,
        r"grid must be uniformly spaced for bc='periodic'",
    ),
    ("kde tiny bandwidth", kd(particles=[0.05], bandwidth=1e-5), ValueError, r"bandwidth .* too small for this grid"),
    # Particles
    ("em x 2-D", em(x=np.zeros((2, 2))), ValueError, r"x must be 1-dimensional"),
    ("em x object", em(x=np.array([None, 1.0])), TypeError, r"x must be a real float64 array"),
    ("em drift length", em(drift=X[:3]), ValueError, r"drift must have one value per particle"),
    ("em drift complex", em(drift=1j), TypeError, r"drift must be a real number"),
    ("em dt zero", em(dt=0.0), ValueError, r"dt must be finite and > 0"),
    ("em sigma negative", em(sigma=-0.1), ValueError, r"sigma must be finite and >= 0"),
    ("em lo >= hi", em(lo=1.0, hi=1.0), ValueError, r"lo and hi must be finite with lo < hi"),
    ("em hi inf", em(hi=np.inf), ValueError, r"lo and hi must be finite"),
    ("em x outside", em(x=np.r_[X, 2.0], drift=0.0), ValueError, r"x must lie in \[lo, hi\]"),
    ("em x nan", em(x=np.r_[X, np.nan], drift=0.0), ValueError, r"x contains NaN or inf \(first at index 10"),
    ("em drift inf", em(drift=np.r_[-X[:-1], np.inf]), ValueError, r"drift contains NaN or inf \(first at index 9"),
    ("em seed negative", em(seed=-1), ValueError, r"seed must be in \[0, 2\*\*64 - 1\]"),
    ("em seed too big", em(seed=2**64), ValueError, r"seed must be in"),
    ("em seed float", em(seed=1.5), TypeError, r"seed must be an integer"),
    ("em step negative", em(step=-3), ValueError, r"step must be in"),
    ("em bad bc", em(bc="none"), ValueError, r"bc must be one of 'reflect', 'periodic'"),
]


@pytest.mark.parametrize("backend", ["rust", "numpy"])
@pytest.mark.parametrize("name,call,exc,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_a_clear_message(
    name: str, call: Callable[..., Any], exc: type[Exception], message: str, backend: str
) -> None:
    with pytest.raises(exc, match=message):
        call(backend)


def test_bad_backend_name() -> None:
    with pytest.raises(ValueError, match="backend must be None, 'rust' or 'numpy'"):
        weno5_derivatives(U, 0.1, backend="cuda")


# The extension's own checks, for callers who use it directly: ValueError, never a panic.
RAW_CASES: list[tuple[str, Callable[[], Any], str]] = [
    ("weno short", lambda: _rust_core.weno5_derivatives(U[:3], 0.1), r"at least 6 points"),
    ("weno dx", lambda: _rust_core.weno5_derivatives(U, -0.1), r"dx must be finite and > 0"),
    ("weno nan", lambda: _rust_core.weno5_derivatives(NAN_U, 0.1), r"u contains NaN"),
    ("weno bc", lambda: _rust_core.weno5_derivatives(U, 0.1, "open"), r"bc must be one of"),
    ("beta short", lambda: _rust_core.smoothness_indicators(U[:2]), r"at least 5 points"),
    ("kde empty", lambda: _rust_core.kde(np.empty(0), G, 0.1), r"particles must not be empty"),
    ("kde grid", lambda: _rust_core.kde(X, G[:1], 0.1), r"grid needs at least 2"),
    ("kde h", lambda: _rust_core.kde(X, G, float("nan")), r"bandwidth must be finite"),
    ("kde method", lambda: _rust_core.kde(X, G, 0.1, "fft"), r"method must be one of"),
    (
        "em length",
        lambda: _rust_core.evolve_particles(X, X[:2], 0.1, 0.1, lo=-1, hi=1, seed=0, step=0),
        r"drift must have",
    ),
    ("em interval", lambda: _rust_core.evolve_particles(X, X, 0.1, 0.1, lo=1, hi=-1, seed=0, step=0), r"lo < hi"),
    ("em outside", lambda: _rust_core.evolve_particles(X + 5, X, 0.1, 0.1, lo=-1, hi=1, seed=0, step=0), r"x must lie"),
    ("em sigma", lambda: _rust_core.evolve_particles(X, X, 0.1, -1.0, lo=-1, hi=1, seed=0, step=0), r"sigma must be"),
]


@pytest.mark.parametrize("name,call,message", RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_extension_refuses_bad_input_with_value_error(name: str, call: Callable[[], Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_extension_accepts_non_contiguous_arrays() -> None:
    u = np.sin(np.linspace(0, 3, 41))
    a = _rust_core.weno5_derivatives(u[::2], 0.1)
    b = _rust_core.weno5_derivatives(np.ascontiguousarray(u[::2]), 0.1)
    np.testing.assert_array_equal(a[0], b[0])


def test_extension_refuses_wrong_dtype_with_type_error() -> None:
    with pytest.raises(TypeError, match=re.escape("u")):
        _rust_core.weno5_derivatives(np.arange(10), 0.1)

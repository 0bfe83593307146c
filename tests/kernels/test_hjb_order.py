"""The HJB march's order of accuracy, measured by grid refinement against an exact solution.

Cole–Hopf: with f = 0 and H(p) = p²/2, u = −σ² log w turns −∂t u − (σ²/2) ∂xx u + H(∂x u) = 0
into the backward heat equation ∂t w + (σ²/2) ∂xx w = 0. With w(T, x) = 2 + cos(kx), i.e. the
terminal cost g = −σ² log(2 + cos kx),

    u(t, x) = −σ² log(2 + exp(−σ²k²(T − t)/2) cos(kx))

exactly: k = 2π on the period [0, 1), k = π between the walls x = 0 and x = 1 (cos(πx) is even
about both walls, so the mirror ghost nodes are exact). The error is the largest over all
output times and nodes.
"""

from __future__ import annotations

import numpy as np
import pytest

from mfg_ensemble.kernels import hjb_backward

SIGMA, T, NT = 0.2, 1.0, 11


def exact(x: np.ndarray, t: np.ndarray, k: float) -> np.ndarray:
    decay = np.exp(-(SIGMA**2) * k**2 * (T - t) / 2.0)
    return -(SIGMA**2) * np.log(2.0 + decay[:, None] * np.cos(k * x)[None, :])


def cole_hopf_error(nx: int, bc: str, **kw) -> float:
    if bc == "periodic":
        x, dx, k = np.arange(nx) / nx, 1.0 / nx, 2.0 * np.pi
    else:
        x, dx, k = np.linspace(0.0, 1.0, nx), 1.0 / (nx - 1), np.pi
    t = np.linspace(0.0, T, NT)
    want = exact(x, t, k)
    u, _ = hjb_backward(np.zeros((NT, nx)), want[-1], dx=dx, sigma=SIGMA, T=T, bc=bc, **kw)
    return float(np.max(np.abs(u - want)))


def orders(errors: list[float]) -> np.ndarray:
    """The measured orders log2(e_h / e_{h/2}) of successive halvings of dx."""
    e = np.asarray(errors)
    return np.log2(e[:-1] / e[1:])


GRIDS = {"periodic": [40, 80, 160, 320], "reflect": [41, 81, 161, 321]}


@pytest.mark.parametrize("bc", ["periodic", "reflect"])
def test_hjb_is_third_order_or_better_on_cole_hopf(bc: str) -> None:
    errors = [cole_hopf_error(nx, bc) for nx in GRIDS[bc]]
    measured = orders(errors)
    print(bc, "errors", errors, "orders", measured)
    assert (measured >= 3.0).all(), (errors, measured)

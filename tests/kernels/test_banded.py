"""The NumPy reference of the five-point stencil solves (``rust_core/src/banded.rs`` has the
same checks as unit tests): the solution of A x = r against a dense solve of the matrix the
stencil with its ghost nodes defines."""

from __future__ import annotations

import numpy as np
import pytest

from mfg_ensemble.kernels.reference.banded import StencilSolver


def dense(n: int, w: list[float], bc: str) -> np.ndarray:
    a = np.zeros((n, n))
    for i in range(n):
        for k in range(5):
            node = i + k - 2
            if bc == "reflect":
                j = -node if node < 0 else (2 * (n - 1) - node if node > n - 1 else node)
            else:
                j = node % n
            a[i, j] += w[k]
    return a


@pytest.mark.parametrize("bc", ["reflect", "periodic"])
@pytest.mark.parametrize("n", [6, 7, 13, 200])
def test_stencil_solve_matches_a_dense_solve(bc: str, n: int) -> None:
    c = 0.7
    w = [c, -16 * c, 1 + 30 * c, -16 * c, c]
    r = np.sin(np.arange(n) * 1.7) + 0.3
    want = np.linalg.solve(dense(n, w, bc), r)
    np.testing.assert_allclose(StencilSolver(n, w, bc).solve(r), want, rtol=0, atol=1e-12)


def test_too_few_nodes_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least 6 nodes"):
        StencilSolver(5, [0, 0, 1, 0, 0], "reflect")

"""Linear solves with the matrices of an implicit five-point stencil: the NumPy reference of
``rust_core/src/banded.rs`` (the same algorithm, loop for loop).

A five-point stencil (w₋₂, w₋₁, w₀, w₁, w₂) on n ≥ 6 nodes, (Ax)_i = Σ_k w_k x_{i+k}, with the
ghost nodes of the boundary folded into the matrix:

- "reflect" (mirror about the end nodes, x_{−k} = x_k, x_{n−1+k} = x_{n−1−k}): A is
  pentadiagonal. It is factored A = LU without pivoting (L unit lower with the multipliers
  l₂, l₁ on its sub-diagonals −2, −1, U upper with u₀, u₁, u₂ on diagonals 0, +1, +2) and
  solved by forward and back substitution, O(n). No pivoting is safe for the matrices of the
  HJB march, I − c Δ₄ with c ≥ 0: diagonal scaling by the trapezoid weights makes them
  symmetric positive definite, so every leading minor is positive.
- "periodic" (wrapped ghosts): A = B + P C Pᵀ with B the band of A (factored as above; the
  Toeplitz band of I − c Δ₄ is symmetric positive definite), P the columns 0, 1, n − 2, n − 1
  of the identity and C the 4 × 4 block of the wrapped corner entries. Sherman–Morrison–
  Woodbury: with Z = B⁻¹P (four band solves, once per matrix) and y = B⁻¹r,

      A⁻¹r = y − Z (I + C PᵀZ)⁻¹ C Pᵀy,

  the 4 × 4 system by Gaussian elimination with partial pivoting.
"""

from __future__ import annotations

import numpy as np

from mfg_ensemble.kernels.checks import FloatArray


class Penta:
    """The LU factors of the pentadiagonal matrix with diagonals ``m2, m1, d, p1, p2`` (row i
    holds them in columns i − 2 … i + 2; entries outside the matrix are ignored), and the
    reciprocals ``inv0`` of the pivots u0, by which the back substitution multiplies."""

    def __init__(self, m2, m1, d, p1, p2) -> None:
        n = len(d)
        l2, l1, u0, u1, u2 = ([0.0] * n for _ in range(5))
        for i in range(n):
            b = float(m1[i]) if i >= 1 else 0.0
            c = float(d[i])
            if i >= 2:
                l2[i] = float(m2[i]) / u0[i - 2]
                b -= l2[i] * u1[i - 2]
                c -= l2[i] * u2[i - 2]
            e = float(p1[i]) if i + 1 < n else 0.0
            if i >= 1:
                l1[i] = b / u0[i - 1]
                c -= l1[i] * u1[i - 1]
                e -= l1[i] * u2[i - 1]
            u0[i], u1[i] = c, e
            u2[i] = float(p2[i]) if i + 2 < n else 0.0
        self.l2, self.l1, self.u0, self.u1, self.u2 = l2, l1, u0, u1, u2
        self.inv0 = [1.0 / c for c in u0]

    def solve(self, r: FloatArray) -> FloatArray:
        """A⁻¹r."""
        x = [float(v) for v in r]
        n = len(x)
        l2, l1, inv0, u1, u2 = self.l2, self.l1, self.inv0, self.u1, self.u2
        for i in range(1, n):
            y = x[i] - l1[i] * x[i - 1]
            if i >= 2:
                y -= l2[i] * x[i - 2]
            x[i] = y
        for i in range(n - 1, -1, -1):
            y = x[i]
            if i + 1 < n:
                y -= u1[i] * x[i + 1]
            if i + 2 < n:
                y -= u2[i] * x[i + 2]
            x[i] = y * inv0[i]
        return np.array(x)


def _small_factor(a: list[list[float]]) -> tuple[list[list[float]], list[int]]:
    a = [row[:] for row in a]
    perm = [0, 1, 2, 3]
    for k in range(4):
        p = k
        for r in range(k + 1, 4):
            if abs(a[r][k]) > abs(a[p][k]):
                p = r
        a[k], a[p] = a[p], a[k]
        perm[k], perm[p] = perm[p], perm[k]
        for r in range(k + 1, 4):
            lr = a[r][k] / a[k][k]
            a[r][k] = lr
            for c in range(k + 1, 4):
                a[r][c] -= lr * a[k][c]
    return a, perm


def _small_solve(lu: list[list[float]], perm: list[int], b: list[float]) -> list[float]:
    y = [0.0] * 4
    for r in range(4):
        s = b[perm[r]]
        for c in range(r):
            s -= lu[r][c] * y[c]
        y[r] = s
    for r in range(3, -1, -1):
        s = y[r]
        for c in range(r + 1, 4):
            s -= lu[r][c] * y[c]
        y[r] = s / lu[r][r]
    return y


class StencilSolver:
    """Solves A x = r for the five-point stencil ``w`` on ``n`` nodes with the ghosts of ``bc``."""

    def __init__(self, n: int, w, bc: str) -> None:
        if n < 6:
            raise ValueError("a five-point stencil solve needs at least 6 nodes")
        diag = [[0.0] * n for _ in range(5)]
        corner = [[0.0] * 4 for _ in range(4)]
        idx = [0, 1, n - 2, n - 1]
        last = n - 1
        for i in range(n):
            for k in range(5):
                node = i + k - 2
                if bc == "reflect" and node < 0:
                    j = -node
                elif bc == "reflect" and node > last:
                    j = 2 * last - node
                else:
                    j = node % n
                offset = j - i
                if abs(offset) <= 2:
                    diag[offset + 2][i] += float(w[k])
                else:
                    corner[idx.index(i)][idx.index(j)] += float(w[k])
        self.band = Penta(*diag)
        self.cyclic = None
        if bc == "periodic":
            z = []
            for b in range(4):
                col = np.zeros(n)
                col[idx[b]] = 1.0
                z.append(self.band.solve(col))
            m = [
                [(1.0 if a == b else 0.0) + sum(corner[a][c] * float(z[b][idx[c]]) for c in range(4)) for b in range(4)]
                for a in range(4)
            ]
            self.cyclic = (idx, corner, z, *_small_factor(m))

    def solve(self, r: FloatArray) -> FloatArray:
        """A⁻¹r."""
        x = self.band.solve(r)
        if self.cyclic is not None:
            idx, corner, z, lu, perm = self.cyclic
            t = [0.0] * 4
            for a in range(4):
                for c in range(4):
                    t[a] += corner[a][c] * float(x[idx[c]])
            s = _small_solve(lu, perm, t)
            for b in range(4):
                x -= z[b] * s[b]
        return x


class PentaBatch:
    """:class:`Penta` for a batch of b matrices of the same size n: the diagonals have shape
    (b, n) (row i of matrix k holds ``m2[k, i]`` … ``p2[k, i]`` in columns i − 2 … i + 2; entries
    outside the matrix are ignored). The same operations as :class:`Penta` (and Rust's
    ``Penta``) element by element, vectorised over the batch: the 2-D HJB's line solves."""

    def __init__(self, m2, m1, d, p1, p2) -> None:
        b, n = d.shape
        l2, l1, u0, u1, u2 = (np.zeros((n, b)) for _ in range(5))
        zero = np.zeros(b)
        for i in range(n):
            bb = m1[:, i].copy() if i >= 1 else zero.copy()
            c = d[:, i].copy()
            if i >= 2:
                l2[i] = m2[:, i] / u0[i - 2]
                bb -= l2[i] * u1[i - 2]
                c -= l2[i] * u2[i - 2]
            e = p1[:, i].copy() if i + 1 < n else zero.copy()
            if i >= 1:
                l1[i] = bb / u0[i - 1]
                c -= l1[i] * u1[i - 1]
                e -= l1[i] * u2[i - 1]
            u0[i], u1[i] = c, e
            u2[i] = p2[:, i] if i + 2 < n else zero
        self.l2, self.l1, self.u0, self.u1, self.u2 = l2, l1, u0, u1, u2
        self.inv0 = 1.0 / u0

    def solve(self, r: FloatArray) -> FloatArray:
        """A⁻¹r for every matrix of the batch; ``r`` has shape (b, n)."""
        x = np.array(r, dtype=float).T.copy()  # (n, b)
        n = x.shape[0]
        l2, l1, inv0, u1, u2 = self.l2, self.l1, self.inv0, self.u1, self.u2
        for i in range(1, n):
            y = x[i] - l1[i] * x[i - 1]
            if i >= 2:
                y -= l2[i] * x[i - 2]
            x[i] = y
        for i in range(n - 1, -1, -1):
            y = x[i].copy()
            if i + 1 < n:
                y -= u1[i] * x[i + 1]
            if i + 2 < n:
                y -= u2[i] * x[i + 2]
            x[i] = y * inv0[i]
        return x.T.copy()


class CyclicPentaBatch:
    """A batch of cyclic pentadiagonal matrices (n ≥ 6): row i holds ``m2[k, i]`` … ``p2[k, i]``
    in the columns (i − 2 … i + 2) mod n. Solved as :class:`StencilSolver` does for "periodic":
    the band B by :class:`PentaBatch`, the wrapped entries as the 4 × 4 corner block C of the
    rows and columns 0, 1, n − 2, n − 1, and A⁻¹r = y − Z (I + C PᵀZ)⁻¹ C Pᵀy (Z = B⁻¹P,
    y = B⁻¹r; the 4 × 4 systems by the same elimination with partial pivoting)."""

    def __init__(self, m2, m1, d, p1, p2) -> None:
        b, n = d.shape
        if n < 6:
            raise ValueError("a cyclic five-point solve needs at least 6 nodes")
        self.band = PentaBatch(m2, m1, d, p1, p2)
        idx = [0, 1, n - 2, n - 1]
        corner = np.zeros((b, 4, 4))
        diags = (m2, m1, d, p1, p2)
        for a, i in enumerate(idx):
            for k in range(5):
                node = i + k - 2
                if 0 <= node < n:
                    continue
                corner[:, a, idx.index(node % n)] += diags[k][:, i]
        z = []
        for c in range(4):
            col = np.zeros((b, n))
            col[:, idx[c]] = 1.0
            z.append(self.band.solve(col))
        self.idx, self.corner, self.z = idx, corner, z
        self.small = []
        for k in range(b):
            m = [
                [
                    (1.0 if a == c else 0.0) + sum(corner[k, a, q] * float(z[c][k, idx[q]]) for q in range(4))
                    for c in range(4)
                ]
                for a in range(4)
            ]
            self.small.append(_small_factor(m))

    def solve(self, r: FloatArray) -> FloatArray:
        """A⁻¹r for every matrix of the batch; ``r`` has shape (b, n)."""
        x = self.band.solve(r)
        idx, corner, z = self.idx, self.corner, self.z
        for k in range(x.shape[0]):
            t = [0.0] * 4
            for a in range(4):
                for c in range(4):
                    t[a] += corner[k, a, c] * float(x[k, idx[c]])
            s = _small_solve(*self.small[k], t)
            for c in range(4):
                x[k] -= z[c][k] * s[c]
        return x

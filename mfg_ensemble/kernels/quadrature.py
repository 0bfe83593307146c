"""Quadrature on the solver's grids: the weights w with ∫ φ dx ≈ Σᵢ wᵢ φᵢ.

* ``bc = "reflect"``: nx nodes lo + i·dx from lo to hi, the trapezoid rule — dx inside, dx/2
  at the two end nodes. These are also the widths of the finite-volume cells (half cells at
  the walls), so the FP scheme conserves exactly this mass.
* ``bc = "periodic"``: one period of nx nodes (hi, which is lo, excluded), dx at every node.

The solver normalises m0 with these weights and the finite-volume scheme conserves the same
sum, so ``Σ w m`` is 1 to rounding for every solve. This is the one implementation, used by
the problem, the NumPy FV reference, ``ds.mfg`` and the report.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from mfg_ensemble.kernels.checks import FloatArray


def quadrature_weights(n: ArrayLike, dx: ArrayLike, bc: ArrayLike, size: int | None = None) -> FloatArray:
    """The weights of ``n`` uniform nodes ``dx`` apart under ``bc`` ("reflect" or "periodic").

    ``n``, ``dx`` and ``bc`` may be arrays (one grid each, broadcast together): the result
    then has their shape plus a last axis of length ``size`` (default: the largest n), the
    weights of each grid followed by zeros (the NaN padding of a store weighs nothing).
    """
    n_, dx_ = np.asarray(n, dtype=np.int64), np.asarray(dx, dtype=np.float64)
    reflect = np.asarray(bc) != "periodic"
    size = int(n_.max()) if size is None else int(size)
    i = np.arange(size)
    n_, dx_, reflect = n_[..., None], dx_[..., None], reflect[..., None]
    w = np.where(i < n_, dx_, 0.0)
    ends = (i == 0) | (i == n_ - 1)
    return np.where(reflect & ends, 0.5 * w, w)

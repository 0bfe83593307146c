"""Fixed-point iteration of the MFG coupling: damped Picard, optionally Anderson-accelerated.

The MFG solve is a fixed point m = G(m) of the map G: m ↦ FP(HJB(m)) on density histories
(flattened (nt, nx) arrays). With the residual r_k = G(m_k) − m_k:

* damped Picard:  m_{k+1} = m_k + β r_k                         (β = damping ∈ (0, 1])
* Anderson (type II, depth p; Walker & Ni 2011): with ΔR, ΔM the last p differences of the
  residuals and iterates, γ = argmin ‖r_k − ΔR γ‖² + λ‖ΔR‖²_F ‖γ‖² (Tikhonov, λ = 1e-10 by
  default), m_{k+1} = m_k + β r_k − (ΔM + β ΔR) γ.

An Anderson step is refused (and the history cleared) when it is not finite or makes the
density negative beyond rounding; the damped Picard step is taken instead.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from mfg_ensemble.kernels.checks import FloatArray


@dataclass
class Anderson:
    """Anderson mixing with history depth ``depth`` (0 = plain damped Picard)."""

    depth: int
    damping: float
    regularisation: float = 1e-10
    _m_prev: FloatArray | None = None
    _r_prev: FloatArray | None = None
    _dm: deque = field(default_factory=deque)
    _dr: deque = field(default_factory=deque)

    def step(self, m: FloatArray, g: FloatArray) -> FloatArray:
        """The next iterate from the current one ``m`` and its image ``g`` = G(m)."""
        r = g - m
        picard = m + self.damping * r
        if self.depth == 0:
            return picard
        if self._m_prev is not None:
            self._dm.append(m - self._m_prev)
            self._dr.append(r - self._r_prev)
            while len(self._dm) > self.depth:
                self._dm.popleft()
                self._dr.popleft()
        self._m_prev, self._r_prev = m, r
        if not self._dm:
            return picard
        dm = np.stack(self._dm, axis=1)
        dr = np.stack(self._dr, axis=1)
        lam = self.regularisation * float(np.sum(dr * dr))
        gamma = np.linalg.solve(dr.T @ dr + lam * np.eye(dr.shape[1]), dr.T @ r)
        candidate = picard - (dm + self.damping * dr) @ gamma
        scale = float(np.max(np.abs(g)))
        if not np.isfinite(candidate).all() or candidate.min() < -1e-12 * scale:
            self._dm.clear()
            self._dr.clear()
            return picard
        return candidate

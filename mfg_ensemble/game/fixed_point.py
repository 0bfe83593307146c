"""Fixed-point iteration of the MFG coupling: damped Picard, optionally Anderson-accelerated,
and the safeguarded adaptive variant that is the default (:class:`Safeguarded`).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mfg_ensemble.kernels.checks import FloatArray


@dataclass
class Anderson:
    """Anderson mixing with history depth ``depth`` (0 = plain damped Picard).

    The history is kept as vectors with the Gram matrix ΔRᵀΔR updated as they come and go
    (depth dot products per step, no stacking of the (n, depth) matrices): the step costs
    O(depth·n) in a few NumPy calls per vector, none through BLAS (see ``_dot``)."""

    depth: int
    damping: float
    regularisation: float = 1e-10
    _m_prev: FloatArray | None = None
    _r_prev: FloatArray | None = None
    _dm: deque = field(default_factory=deque)
    _dr: deque = field(default_factory=deque)
    _gram: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))

    def reset(self) -> None:
        """Forget the history (the next step is a damped Picard step)."""
        self._m_prev = self._r_prev = None
        self._clear()

    def _clear(self) -> None:
        self._dm.clear()
        self._dr.clear()
        self._gram = np.zeros((0, 0))

    def _push(self, dm: FloatArray, dr: FloatArray) -> None:
        """Append a difference pair, dropping the oldest beyond ``depth``; keep the Gram matrix."""
        if len(self._dr) == self.depth:
            self._dm.popleft()
            self._dr.popleft()
            self._gram = self._gram[1:, 1:]
        row = np.array([_dot(old, dr) for old in self._dr] + [_dot(dr, dr)])
        k = row.size
        gram = np.empty((k, k))
        gram[: k - 1, : k - 1] = self._gram
        gram[k - 1, :] = gram[:, k - 1] = row
        self._gram = gram
        self._dm.append(dm)
        self._dr.append(dr)

    def step(self, m: FloatArray, g: FloatArray) -> FloatArray:
        """The next iterate from the current one ``m`` and its image ``g`` = G(m)."""
        r = g - m
        picard = m + self.damping * r
        if self.depth == 0:
            return picard
        if self._m_prev is not None:
            self._push(m - self._m_prev, r - self._r_prev)
        self._m_prev, self._r_prev = m, r
        if not self._dm:
            return picard
        lam = self.regularisation * float(np.trace(self._gram))
        rhs = np.array([_dot(dr, r) for dr in self._dr])
        gamma = np.linalg.solve(self._gram + lam * np.eye(rhs.size), rhs)
        candidate = picard.copy()
        for c, dm, dr in zip(gamma, self._dm, self._dr, strict=True):
            candidate -= c * (dm + self.damping * dr)
        scale = float(np.max(np.abs(g)))
        if not np.isfinite(candidate).all() or candidate.min() < -1e-12 * scale:
            self._clear()
            return picard
        return candidate


def _dot(a: FloatArray, b: FloatArray) -> float:
    """aᵀb by einsum's own loop, not BLAS (whose threads spin against the Rust kernels on a
    loaded machine: see :func:`l2`)."""
    return float(np.einsum("i,i->", a, b))


def l2(*parts: FloatArray) -> float:
    """The 2-norm of the arrays ``parts`` taken together, by a NumPy reduction, not BLAS:
    ``np.linalg.norm`` calls the BLAS dot, whose threads (OpenBLAS, 2 by default) cost ≈ 3 ms a
    call on a loaded 2-core machine and spin against the Rust kernels — two thirds of a
    converged FV solve of crowd_log at nx = 201, nt = 101."""
    return float(np.sqrt(sum(np.square(p).sum() for p in parts)))


def relative_change(new: FloatArray, old: FloatArray) -> float:
    """‖new − old‖/‖new‖ (‖new − old‖ when new = 0): the solver's res_u and res_m."""
    norm = l2(new)
    return l2(new - old) / (norm if norm > 0 else 1.0)


def not_halved(residuals: Sequence[float] | FloatArray, window: int) -> bool:
    """Whether the best of the last ``window`` residuals is not half the best before them (a
    NaN counts as not halved); False while there are no more than ``window``. The stall test
    of the adaptive mixing and of Newton–Krylov."""
    if len(residuals) <= window:
        return False
    res = np.asarray(residuals, dtype=np.float64)
    before, now = res[:-window].min(), res[-window:].min()  # NumPy's min propagates NaN
    return not now <= 0.5 * before


@dataclass
class Safeguarded:
    """Anderson mixing with residual-based backtracking and adaptive damping (``method =
    "adaptive"``, the default of :func:`~mfg_ensemble.game.solver.solve`).

    Every step is judged by the residual norm ‖r_k‖ = ‖G(m_k) − m_k‖ it leads to, against the
    smallest met so far, ‖r_best‖:

    * ‖r_k‖ ≤ ‖r_best‖: m_k becomes the best iterate and the next is the Anderson step of
      :class:`Anderson` (depth ``depth``, damping β) from it; β grows by ``grow`` (up to 1)
      when ‖r_k‖ < ½‖r_best‖;
    * ‖r_k‖ > ‖r_best‖ (the step overshot): back to the best iterate, the history is cleared,
      β is halved (down to ``min_damping``) and the next iterate is the damped Picard step
      m_best + β r_best. Once β is at ``min_damping`` a step is no longer refused (m_k becomes
      the reference): the iteration would otherwise retry the same step for ever.

    So an over-relaxed iteration (β too large for the coupling, where plain damped Picard
    oscillates at a residual near 1) shrinks its own step, and a well-conditioned one runs at
    β = 1 with the full acceleration. Each step costs one evaluation of G.
    """

    depth: int
    damping: float
    min_damping: float = 1.0 / 64
    grow: float = 1.5
    regularisation: float = 1e-10
    restarts: int = 0
    """Backtracks so far."""
    merit: Callable[[FloatArray], float] | None = None
    """The norm of a residual that judges a step (None: the Euclidean norm)."""
    _inner: Anderson | None = None
    _best: tuple[float, FloatArray, FloatArray] | None = None

    def __post_init__(self) -> None:
        self._inner = Anderson(depth=self.depth, damping=self.damping, regularisation=self.regularisation)

    def forget_best(self) -> None:
        """G has changed (a march's sub-step floors moved): residuals met before are no longer
        comparable, so the next step is judged against none (and becomes the best)."""
        self._best = None

    def step(self, m: FloatArray, g: FloatArray) -> FloatArray:
        """The next iterate from the current one ``m`` and its image ``g`` = G(m)."""
        inner = self._inner
        assert inner is not None
        norm = float(self.merit(g - m) if self.merit is not None else np.sqrt(np.square(g - m).sum()))
        if self._best is not None and not norm <= self._best[0] and inner.damping > self.min_damping:
            self.restarts += 1
            self.damping = inner.damping = max(0.5 * inner.damping, self.min_damping)
            inner.reset()
            _, m_best, g_best = self._best
            return m_best + inner.damping * (g_best - m_best)
        if self._best is not None and norm < 0.5 * self._best[0]:
            self.damping = inner.damping = min(1.0, self.grow * inner.damping)
        self._best = (norm, m, g)
        return inner.step(m, g)

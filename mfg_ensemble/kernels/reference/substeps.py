"""Sub-stepping of an output interval, shared by the NumPy references of the time marches
(HJB backward, FP forward; the twin of ``rust_core/src/substeps.rs``).

Every march takes, in each output interval j of length Δt = T/(nt − 1), k_j equal sub-steps
of length Δt/k_j (they add up to Δt), with k_j = max(min_substeps[j], k_cfl_j): a floor given by
the caller and the count its stability limit asks for. The marches return the k_j, so a
fixed-point iteration can pass them in again as floors and make the march a fixed map.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mfg_ensemble.errors import Diverged

MAX_SUBSTEPS_PER_INTERVAL = 1e6
MAX_SUBSTEPS = 1_000_000
"""The same bound as an integer: the largest accepted ``min_substeps`` value."""

IntArray = NDArray[np.int64]


def substeps(dt_out: float, dt_max: float, where: str, min_k: int = 1) -> tuple[int, float]:
    """k = max(min_k, ⌈dt_out/dt_max⌉, 1) equal sub-steps of length dt_out/k, which add up to
    dt_out; ``Diverged`` when the step limit asks for more than 10⁶ of them (or is NaN)."""
    ratio = dt_out / dt_max if dt_max != 0 else math.inf
    if not ratio <= MAX_SUBSTEPS_PER_INTERVAL:
        raise Diverged(f"{where}: the CFL sub-step collapsed")
    k = max(math.ceil(ratio), 1, int(min_k))
    return k, dt_out / k


def step_limit(numerator: float, denominator: float) -> float:
    """numerator/denominator as the Rust kernels compute it: +inf for a zero denominator (no
    gradient and no diffusion: no limit), NaN propagated."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(numerator) / np.float64(denominator))


def floors(min_substeps: ArrayLike | None, intervals: int) -> IntArray:
    """The per-interval sub-step floors of a march over ``intervals`` output intervals:
    ``min_substeps`` checked (one integer per interval, each in [1, 10⁶]) as int64, or all ones
    for ``None``. ``ValueError`` naming min_substeps otherwise."""
    if min_substeps is None:
        return np.ones(intervals, dtype=np.int64)
    arr = np.asarray(min_substeps)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"min_substeps must be None or an array of integers, got dtype {arr.dtype}")
    if arr.shape != (intervals,):
        raise ValueError(
            f"min_substeps must have nt - 1 = {intervals} values (one per output interval), got shape {arr.shape}"
        )
    bad = (arr < 1) | (arr > MAX_SUBSTEPS)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"min_substeps must be integers in [1, {MAX_SUBSTEPS}], min_substeps[{i}] = {arr[i]}")
    return arr.astype(np.int64)

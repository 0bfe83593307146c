"""Sub-stepping of an output interval, shared by the NumPy references of the time sweeps
(the twin of ``rust_core/src/sweep.rs``)."""

from __future__ import annotations

import math

MAX_SUBSTEPS_PER_INTERVAL = 1e6


class Diverged(FloatingPointError):
    """A time sweep blew up (non-finite values, or a CFL step that collapsed)."""


def substeps(dt_out: float, dt_max: float, where: str) -> tuple[int, float]:
    """k = ⌈dt_out/dt_max⌉ ≥ 1 equal sub-steps of length dt_out/k, which add up to dt_out;
    ``Diverged`` when the step limit asks for more than 10⁶ of them (or is NaN)."""
    ratio = dt_out / dt_max if dt_max != 0 else math.inf
    if not ratio <= MAX_SUBSTEPS_PER_INTERVAL:
        raise Diverged(f"{where}: the CFL sub-step collapsed")
    k = max(math.ceil(ratio), 1)
    return k, dt_out / k

"""Argument checks shared by the public kernels and their NumPy references.

Every message names the argument, so a user can tell which of several arrays was wrong.
Messages of value checks match the Rust side's (``rust_core/src/error.rs``).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
UINT64_MAX = 2**64 - 1


def float_array(name: str, value: ArrayLike, ndim: int = 1) -> FloatArray:
    """``value`` as a C-contiguous float64 array of ``ndim`` dimensions.

    Real numeric input (float32, integers) is converted; complex, boolean, object and string
    data is refused with a ``TypeError``; the wrong number of dimensions with a ``ValueError``.
    """
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real float64 array, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float64)


def real(name: str, value: object) -> float:
    """``value`` as a Python float; ``TypeError`` unless it is a real number."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def positive(name: str, value: object) -> float:
    v = real(name, value)
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be finite and > 0, got {v}")
    return v


def non_negative(name: str, value: object) -> float:
    v = real(name, value)
    if not (np.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {v}")
    return v


def uint64(name: str, value: object) -> int:
    """A non-negative integer that fits in 64 bits (seeds, step counters)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    v = int(value)
    if not 0 <= v <= UINT64_MAX:
        raise ValueError(f"{name} must be in [0, 2**64 - 1], got {v}")
    return v


def choice(name: str, value: object, allowed: Sequence[str]) -> str:
    if value not in allowed:
        names = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be one of {names}, got {value!r}")
    return str(value)


def min_length(name: str, arr: FloatArray, n: int, what: str) -> None:
    if arr.shape[0] < n:
        raise ValueError(f"{name} needs at least {n} points for {what}, got {arr.shape[0]}")


def interval(lo: object, hi: object) -> tuple[float, float]:
    a, b = real("lo", lo), real("hi", hi)
    if not (np.isfinite(a) and np.isfinite(b) and a < b):
        raise ValueError(f"lo and hi must be finite with lo < hi, got lo={a}, hi={b}")
    return a, b


def check_finite(name: str, arr: FloatArray) -> None:
    """``ValueError`` naming ``name`` and the first NaN/inf, as the Rust kernels do."""
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name} contains NaN or inf (first at index {i}: {arr[i]})")


def check_inside(name: str, x: FloatArray, lo: float, hi: float, interval: str) -> None:
    """``ValueError`` unless every value of ``x`` lies in [lo, hi] (``interval`` names it)."""
    outside = (x < lo) | (x > hi)
    if outside.any():
        i = int(np.argmax(outside))
        raise ValueError(f"{name} must lie in {interval} = [{lo}, {hi}], {name}[{i}] = {x[i]}")

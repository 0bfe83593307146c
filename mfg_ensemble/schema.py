"""The one description of a result and of a store: dims, variables, units, long names, attrs.

A single solve (:func:`mfg_ensemble.solve`) returns, and a sweep store holds per member:

* ``u``, ``m`` over (t, x) — in a store over (axes…, t, x), or (axes…, t_index, x_index)
  when an axis changes the grid; the coordinates ``t`` and ``x`` are then per member,
  padded with NaN;
* ``residual``, ``residual_u``, ``residual_m`` over ``iteration`` (NaN after a member's last
  iteration in a store);
* ``converged``, ``iterations``, ``wall_time`` (attrs of a single solve, variables over the
  axes in a store) and, in a store only, ``status`` (0 pending, 1 done, 2 failed: the
  commit marker of a member).

Attributes: every problem field as ``problem.<field>`` (families as ``kind(k=v, ...)``), every
solver option as ``solver.<option>``, package versions as ``version.<package>``; a single
solve adds ``converged``, ``reason``, ``iterations``, ``wall_time`` and ``backend``; a store
adds the sweep's fingerprint, source, text, member count and axes (``mfg_ensemble.*``) and
the workers' settings (``run.*``).

Stores written before this module existed have the same layout and names; a single solve's
problem attrs were unprefixed then (``bc``), which :func:`problem_attr` still reads.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import xarray as xr

from mfg_ensemble.kernels import backend_info

T, X, ITERATION = "t", "x", "iteration"
Y = "y"
"""The second space dim of a 2-D game (fields over (t, y, x))."""
T_INDEX, X_INDEX, Y_INDEX = "t_index", "x_index", "y_index"
"""Dims of the time and space nodes when the grid varies along a sweep axis."""
NODES = "nodes"
"""The node kinds of a 2-D game (y, x): 0 free, 1 obstacle, 2 exit (a coordinate)."""
EXITED = "exited"
"""The mass that has left a 2-D room through its exits by time t."""

PENDING, DONE, FAILED = 0, 1, 2
"""Member status codes in a store."""

CONVENTIONS = "CF-1.10"
"""The CF version of the attributes: units UDUNITS parses ("1": dimensionless — the model's
time, space and cost are nondimensional, so no CF standard_name applies to them), ``axis`` on
the time and space coordinates, flag variables for the status codes, and ``history``."""

COORDS: dict[str, dict[str, Any]] = {
    T: {"units": "1", "long_name": "time", "axis": "T"},
    X: {"units": "1", "long_name": "position", "axis": "X"},
    Y: {"units": "1", "long_name": "position along y", "axis": "Y"},
    NODES: {
        "long_name": "node kind",
        "units": "1",
        "flag_values": [0, 1, 2],
        "flag_meanings": "free obstacle exit",
    },
    ITERATION: {"units": "1", "long_name": "Picard iteration"},
}
FIELDS: dict[str, dict[str, Any]] = {
    "u": {"units": "1", "long_name": "value function u(t, x)"},
    "m": {"units": "1", "long_name": "density of players m(t, x)"},
}
"""Variables over (t, x), or (t, y, x) in 2-D."""
PATHS: dict[str, dict[str, Any]] = {
    EXITED: {"units": "1", "long_name": "mass that has left through the exits"},
}
"""Variables over t (2-D games)."""
HISTORY: dict[str, dict[str, Any]] = {
    "residual": {"units": "1", "long_name": "max of the relative L2 residuals"},
    "residual_u": {"units": "1", "long_name": "relative L2 change of u"},
    "residual_m": {"units": "1", "long_name": "relative L2 residual G(m) - m"},
}
"""Variables over the iterations."""
MEMBER: dict[str, dict[str, Any]] = {
    "status": {
        "long_name": "member status",
        "units": "1",
        "flag_values": [PENDING, DONE, FAILED],
        "flag_meanings": "pending done failed",
    },
    "converged": {
        "long_name": "fixed point reached (1) or not (0)",
        "units": "1",
        "flag_values": [0, 1],
        "flag_meanings": "not_converged converged",
    },
    "iterations": {"units": "1", "long_name": "Picard iterations"},
    "wall_time": {"units": "s", "long_name": "wall time of the solve"},
}
"""One value per member (variables over the axes of a store)."""
DIGEST = "digest"
"""The array ``members/digest`` of a store: each member's SHA-256 of the values it wrote
(axes…, 32 bytes; zeros: none), beside the logs and out of the dataset."""
DIGEST_ATTRS = {"long_name": "SHA-256 of the member's values as written (zeros: none)", "units": "1"}

PROBLEM, SOLVER, VERSION, RUN = "problem.", "solver.", "version.", "run."
"""Prefixes of the attribute names."""
FINGERPRINT = "mfg_ensemble.fingerprint"
SWEEP_SOURCE = "mfg_ensemble.sweep_source"
SWEEP_TEXT = "mfg_ensemble.sweep_text"
MEMBERS = "mfg_ensemble.members"
AXES = "mfg_ensemble.axes"
LOG_GROUP = "members"
"""The group whose subgroups ``members/<index>`` hold each member's log in their attrs."""
RESERVED = frozenset({*COORDS, *FIELDS, *HISTORY, *MEMBER, *PATHS, T_INDEX, X_INDEX, Y_INDEX, LOG_GROUP})
"""Names a sweep's axes may not take: the store's own variables, dims and groups."""


def attrs(name: str) -> dict[str, Any]:
    """The attrs (units, long_name, ...) of the variable or coordinate ``name`` (a copy)."""
    for table in (FIELDS, HISTORY, MEMBER, COORDS, PATHS, {DIGEST: DIGEST_ATTRS}):
        if name in table:
            return dict(table[name])
    raise KeyError(f"{name!r} is not a variable of the mfg_ensemble schema")


def field_attrs(name: str, ndim: int = 1) -> dict[str, Any]:
    """The attrs of the field ``name`` (u or m) of a game in ``ndim`` space dimensions."""
    out = attrs(name)
    if ndim == 2:
        out["long_name"] = out["long_name"].replace("(t, x)", "(t, y, x)")
    return out


def grid_dims(varies_grid: bool, ndim: int = 1) -> tuple[str, ...]:
    """The time and space dims: (t, x), or (t_index, x_index) when an axis changes the grid;
    (t, y, x) or (t_index, y_index, x_index) in 2-D."""
    if ndim == 2:
        return (T_INDEX, Y_INDEX, X_INDEX) if varies_grid else (T, Y, X)
    return (T_INDEX, X_INDEX) if varies_grid else (T, X)


def prefixed(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` as netCDF/Zarr-safe attrs named ``<prefix><key>`` (non-scalars as their repr)."""
    return {f"{prefix}{k}": (v if isinstance(v, (bool, int, float, str)) else repr(v)) for k, v in values.items()}


def problem_attr(attributes: dict[str, Any], name: str, default: Any = None) -> Any:
    """The problem field ``name`` from a result's or a store's attrs (also unprefixed, as a
    single solve wrote it before the schema was shared)."""
    return attributes.get(PROBLEM + name, attributes.get(name, default))


def versions(packages: tuple[str, ...] = ("mfg_ensemble", "numpy", "xarray")) -> dict[str, str]:
    """``version.<package>`` attrs of ``packages`` and of the Rust extension, for provenance."""
    out = {}
    for name in packages:
        try:
            out[VERSION + name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[VERSION + name] = "unknown"
    out[VERSION + "rust_core"] = str(backend_info()["extension_version"])
    return out


def label(da: xr.DataArray | Any, default: str | None = None, units: bool = True) -> str:
    """``long_name [units]`` of a variable from its attrs (``units=False``, or dimensionless
    units "1": the long name)."""
    attributes = getattr(da, "attrs", {})
    text = str(attributes.get("long_name", default if default is not None else getattr(da, "name", "")))
    unit = attributes.get("units")
    return f"{text} [{unit}]" if units and unit not in (None, "", "1") else text
